//! Recurrent layers: RNN, LSTM, GRU (multi-layer, bidirectional, batch_first, initial states) and
//! their cells, with PyTorch's parameter names (`weight_ih_l0`, `bias_hh_l1_reverse`, ...).

use super::linear::uniform_param;
use crate::{functional, Module, Slot, SlotMut, Traverse};
use ember_autograd::{Error, Result, Tensor};

use ember_autograd::{OpBackward, OpDescriptor};

/// `nn.RNN`, `nn.GRU` (and `nn.LSTM`, whose per-direction kernel is `ember_autograd`'s
/// `lstm_sequence` descriptor).
pub const RNN: OpDescriptor = OpDescriptor {
    name: "rnn",
    forward: "Rnn::forward_with_state",
    conformance: &["gru", "rnn_tanh", "rnn_relu"],
    shape_rule: "output [T, B, D * H] (batch_first: [B, T, D * H]); h_n [D * layers, B, H]",
    backward: OpBackward::Composed,
};

/// `nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`.
pub const RNN_CELL: OpDescriptor = OpDescriptor {
    name: "rnn_cell",
    forward: "RnnCell::step",
    conformance: &["rnn_tanh_cell", "rnn_relu_cell", "lstm_cell", "gru_cell"],
    shape_rule: "h' [B, H] (and c' [B, H] for LSTM) from x [B, I] and h [B, H]",
    backward: OpBackward::Composed,
};

/// Which recurrence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RnnMode {
    /// `h = tanh(W x + U h + b)`.
    RnnTanh,
    /// `h = relu(W x + U h + b)`.
    RnnRelu,
    /// Long short-term memory (gates i, f, g, o).
    Lstm,
    /// Gated recurrent unit (gates r, z, n).
    Gru,
}

impl RnnMode {
    fn gates(self) -> usize {
        match self {
            RnnMode::RnnTanh | RnnMode::RnnRelu => 1,
            RnnMode::Lstm => 4,
            RnnMode::Gru => 3,
        }
    }
}

/// One step of a cell: input projection `gi = x W_ihᵀ + b_ih` already computed; returns (h, c).
fn cell_step(
    mode: RnnMode,
    gi: &Tensor,
    h: &Tensor,
    c: Option<&Tensor>,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
) -> Result<(Tensor, Option<Tensor>)> {
    let gh = h.linear(w_hh, b_hh)?;
    match mode {
        RnnMode::RnnTanh => Ok((gi.add(&gh)?.tanh()?, None)),
        RnnMode::RnnRelu => Ok((gi.add(&gh)?.relu()?, None)),
        RnnMode::Lstm => {
            let g = gi.add(&gh)?.chunk(4, -1)?;
            let (i, f, gg, o) = (g[0].sigmoid()?, g[1].sigmoid()?, g[2].tanh()?, g[3].sigmoid()?);
            let c = c.ok_or_else(|| Error::invalid("lstm", "missing cell state"))?;
            let c2 = f.mul(c)?.add(&i.mul(&gg)?)?;
            Ok((o.mul(&c2.tanh()?)?, Some(c2)))
        }
        RnnMode::Gru => {
            let a = gi.chunk(3, -1)?;
            let b = gh.chunk(3, -1)?;
            let r = a[0].add(&b[0])?.sigmoid()?;
            let z = a[1].add(&b[1])?.sigmoid()?;
            let n = a[2].add(&r.mul(&b[2])?)?.tanh()?;
            // h' = (1 - z) n + z h = n + z (h - n)
            Ok((n.add(&z.mul(&h.sub(&n)?)?)?, None))
        }
    }
}

/// A multi-layer recurrent network (`nn.RNN`, `nn.LSTM`, `nn.GRU`).
pub struct Rnn {
    /// The recurrence.
    pub mode: RnnMode,
    /// Features per input step.
    pub input_size: usize,
    /// Features of the hidden state.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Inputs are `[batch, seq, feature]` instead of `[seq, batch, feature]`.
    pub batch_first: bool,
    /// Two directions per layer.
    pub bidirectional: bool,
    /// Dropout between layers (training only).
    pub dropout: f64,
    /// Training flag.
    pub training: bool,
    /// Parameters in PyTorch's order and names.
    pub params: Vec<(String, Tensor)>,
    has_bias: bool,
}

/// `nn.LSTM`.
pub type Lstm = Rnn;

/// Options of a recurrent layer (PyTorch's constructor arguments beyond the sizes).
#[derive(Clone, Copy, Debug)]
pub struct RnnOptions {
    /// Stacked layers (1).
    pub num_layers: usize,
    /// Biases (true).
    pub bias: bool,
    /// `[batch, seq, feature]` layout (false).
    pub batch_first: bool,
    /// Dropout between layers (0).
    pub dropout: f64,
    /// Both directions (false).
    pub bidirectional: bool,
}

impl Default for RnnOptions {
    fn default() -> Self {
        RnnOptions { num_layers: 1, bias: true, batch_first: false, dropout: 0.0, bidirectional: false }
    }
}

impl Rnn {
    /// A recurrent layer with PyTorch's init U(±1/√hidden) for every parameter.
    pub fn new(mode: RnnMode, input_size: usize, hidden_size: usize, o: RnnOptions) -> Result<Self> {
        if hidden_size == 0 || o.num_layers == 0 {
            return Err(Error::invalid("Rnn", "hidden_size and num_layers must be positive"));
        }
        let bound = 1.0 / (hidden_size as f64).sqrt();
        let g = mode.gates() * hidden_size;
        let dirs = if o.bidirectional { 2 } else { 1 };
        let mut params = vec![];
        for layer in 0..o.num_layers {
            let in_l = if layer == 0 { input_size } else { hidden_size * dirs };
            for d in 0..dirs {
                let sfx = if d == 1 { "_reverse" } else { "" };
                params.push((format!("weight_ih_l{layer}{sfx}"), uniform_param(&[g, in_l], bound)?));
                params.push((format!("weight_hh_l{layer}{sfx}"), uniform_param(&[g, hidden_size], bound)?));
                if o.bias {
                    params.push((format!("bias_ih_l{layer}{sfx}"), uniform_param(&[g], bound)?));
                    params.push((format!("bias_hh_l{layer}{sfx}"), uniform_param(&[g], bound)?));
                }
            }
        }
        Ok(Rnn {
            mode,
            input_size,
            hidden_size,
            num_layers: o.num_layers,
            batch_first: o.batch_first,
            bidirectional: o.bidirectional,
            dropout: o.dropout,
            training: true,
            params,
            has_bias: o.bias,
        })
    }

    /// `nn.LSTM(input_size, hidden_size, ...)`.
    pub fn lstm(input_size: usize, hidden_size: usize, o: RnnOptions) -> Result<Self> {
        Self::new(RnnMode::Lstm, input_size, hidden_size, o)
    }

    /// `nn.GRU(input_size, hidden_size, ...)`.
    pub fn gru(input_size: usize, hidden_size: usize, o: RnnOptions) -> Result<Self> {
        Self::new(RnnMode::Gru, input_size, hidden_size, o)
    }

    /// The parameter under PyTorch's name.
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, t)| t)
    }

    fn layer_params(&self, layer: usize, dir: usize) -> Result<(&Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>)> {
        let sfx = if dir == 1 { "_reverse" } else { "" };
        let get = |n: &str| {
            self.param(&format!("{n}_l{layer}{sfx}"))
                .ok_or_else(|| Error::invalid("Rnn", format!("missing parameter {n}_l{layer}{sfx}")))
        };
        let (bi, bh) = if self.has_bias { (Some(get("bias_ih")?), Some(get("bias_hh")?)) } else { (None, None) };
        Ok((get("weight_ih")?, get("weight_hh")?, bi, bh))
    }

    /// Runs the sequence from the initial states `h0` (and `c0` for LSTM), zeros when `None`, each
    /// `[layers · directions, batch, hidden]`. Returns `(output, h_n, c_n)`; `c_n` only for LSTM.
    /// Unbatched inputs (`[seq, feature]`) give unbatched results.
    pub fn forward_with_state(
        &self,
        input: &Tensor,
        h0: Option<&Tensor>,
        c0: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let op = "Rnn";
        let unbatched = input.ndim() == 2;
        if !(input.ndim() == 3 || unbatched) || input.shape()[input.ndim() - 1] != self.input_size {
            return Err(Error::shape(
                op,
                format!(
                    "input {:?} must be [seq, batch, {}] (or batch_first / unbatched)",
                    input.shape(),
                    self.input_size
                ),
            ));
        }
        let x = if unbatched {
            input.unsqueeze(1)?
        } else if self.batch_first {
            input.transpose(0, 1)?
        } else {
            input.clone()
        };
        let (t_len, batch) = (x.shape()[0], x.shape()[1]);
        let dirs = if self.bidirectional { 2 } else { 1 };
        let state_shape = [self.num_layers * dirs, batch, self.hidden_size];
        let prep = |s: Option<&Tensor>| -> Result<Tensor> {
            match s {
                Some(s) => {
                    let s = if unbatched { s.unsqueeze(1)? } else { s.clone() };
                    if s.shape() != state_shape {
                        return Err(Error::shape(
                            op,
                            format!("initial state {:?}, expected {state_shape:?}", s.shape()),
                        ));
                    }
                    Ok(s)
                }
                None => Tensor::zeros_with(state_shape, x.dtype(), x.device()),
            }
        };
        let h0 = prep(h0)?;
        let c0 = if self.mode == RnnMode::Lstm { Some(prep(c0)?) } else { None };
        let mut layer_in = x;
        let (mut hn, mut cn) = (vec![], vec![]);
        for layer in 0..self.num_layers {
            let mut outs = vec![];
            for dir in 0..dirs {
                let (w_ih, w_hh, b_ih, b_hh) = self.layer_params(layer, dir)?;
                let idx = (layer * dirs + dir) as isize;
                let mut h = h0.select(0, idx)?;
                let mut c = c0.as_ref().map(|c| c.select(0, idx)).transpose()?;
                let gi_all = layer_in.linear(w_ih, b_ih)?;
                if let (RnnMode::Lstm, Some(c0), true) = (self.mode, c.as_ref(), t_len > 0) {
                    // the whole direction as one fused node
                    let y = gi_all.lstm_sequence(&h, c0, w_hh, b_hh, dir == 1)?;
                    let last = if dir == 0 { t_len as isize - 1 } else { 0 };
                    let (hs, cs) = (y.select(0, 0)?, y.select(0, 1)?);
                    hn.push(hs.select(0, last)?);
                    cn.push(cs.select(0, last)?);
                    outs.push(hs);
                    continue;
                }
                let mut steps = vec![None; t_len];
                for s in 0..t_len {
                    let t = if dir == 0 { s } else { t_len - 1 - s };
                    let (h2, c2) = cell_step(self.mode, &gi_all.select(0, t as isize)?, &h, c.as_ref(), w_hh, b_hh)?;
                    h = h2;
                    c = c2;
                    steps[t] = Some(h.clone());
                }
                let steps: Vec<Tensor> = steps.into_iter().map(|s| s.expect("every step ran")).collect();
                outs.push(if t_len == 0 {
                    Tensor::zeros_with([0, batch, self.hidden_size], layer_in.dtype(), layer_in.device())?
                } else {
                    Tensor::stack(&steps, 0)?
                });
                hn.push(h);
                if let Some(c) = c {
                    cn.push(c);
                }
            }
            layer_in = if dirs == 2 { Tensor::cat(&outs, -1)? } else { outs.pop().expect("one direction") };
            if layer + 1 < self.num_layers && self.dropout > 0.0 {
                layer_in = functional::dropout(&layer_in, self.dropout, self.training)?;
            }
        }
        let mut out = layer_in;
        let mut h_n = Tensor::stack(&hn, 0)?;
        let mut c_n = if cn.is_empty() { None } else { Some(Tensor::stack(&cn, 0)?) };
        if unbatched {
            out = out.squeeze_dim(1)?;
            h_n = h_n.squeeze_dim(1)?;
            c_n = c_n.map(|c| c.squeeze_dim(1)).transpose()?;
        } else if self.batch_first {
            out = out.transpose(0, 1)?;
        }
        Ok((out, h_n, c_n))
    }
}

impl Traverse for Rnn {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        for (k, t) in &self.params {
            v(Slot::Param(k, t));
        }
        v(Slot::Training(self.training));
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        for (k, t) in self.params.iter_mut() {
            v(SlotMut::Param(k.as_str(), t));
        }
        v(SlotMut::Training(&mut self.training));
    }
}

impl Module for Rnn {
    /// The output sequence, from zero initial states.
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_state(input, None, None)?.0)
    }
}

/// One step of a recurrence (`nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`).
#[derive(crate::Module)]
pub struct RnnCell {
    /// `[gates · hidden, input]`.
    pub weight_ih: Tensor,
    /// `[gates · hidden, hidden]`.
    pub weight_hh: Tensor,
    /// `[gates · hidden]`.
    pub bias_ih: Option<Tensor>,
    /// `[gates · hidden]`.
    pub bias_hh: Option<Tensor>,
    /// The recurrence.
    #[module(skip)]
    pub mode: RnnMode,
}

impl RnnCell {
    /// A cell with PyTorch's init.
    pub fn new(mode: RnnMode, input_size: usize, hidden_size: usize, bias: bool) -> Result<Self> {
        let bound = 1.0 / (hidden_size.max(1) as f64).sqrt();
        let g = mode.gates() * hidden_size;
        Ok(RnnCell {
            weight_ih: uniform_param(&[g, input_size], bound)?,
            weight_hh: uniform_param(&[g, hidden_size], bound)?,
            bias_ih: if bias { Some(uniform_param(&[g], bound)?) } else { None },
            bias_hh: if bias { Some(uniform_param(&[g], bound)?) } else { None },
            mode,
        })
    }

    /// One step from state `h` (and `c` for LSTM cells); returns the new `(h, c)`.
    pub fn step(&self, x: &Tensor, h: &Tensor, c: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let gi = x.linear(&self.weight_ih, self.bias_ih.as_ref())?;
        cell_step(self.mode, &gi, h, c, &self.weight_hh, self.bias_hh.as_ref())
    }
}

impl Module for RnnCell {
    /// One step from a zero state; returns `h`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = self.weight_hh.shape()[1];
        let mut shape = x.shape()[..x.ndim() - 1].to_vec();
        shape.push(hidden);
        let h = Tensor::zeros_with(&shape, x.dtype(), x.device())?;
        let c = if self.mode == RnnMode::Lstm { Some(h.clone()) } else { None };
        Ok(self.step(x, &h, c.as_ref())?.0)
    }
}
