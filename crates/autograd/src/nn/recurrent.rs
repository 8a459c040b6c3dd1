//! One direction of an LSTM layer over a whole sequence as a single graph node.
//!
//! Composed from tensor ops, a 35-step LSTM records ~15 nodes per step, and its backward computes
//! the recurrent weight's gradient as one small product per step. Here the backend runs the whole
//! sequence as one kernel each way ([`ember_storage::Backend::lstm_sequence`]: per step a product
//! and the fused cell work), and the backward computes the weight gradient as a single product
//! over all steps (as cuDNN and oneDNN do).
//!
//! Backends without the fused kernels, and backward passes that record a graph (`create_graph`),
//! compose the same maths from tensor ops, so results and higher-order gradients stay available
//! everywhere.

use crate::graph::{is_grad_enabled, no_grad, record_saving, Grads};
use crate::Tensor;
use ember_storage::{DType, Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// One direction of an LSTM layer over a sequence (what `nn.LSTM` runs per layer and direction).
pub const LSTM_SEQUENCE: OpDescriptor = OpDescriptor {
    name: "lstm",
    forward: "Tensor::lstm_sequence",
    conformance: &["lstm"],
    shape_rule: "hidden states [T, B, H] and the last h, c [B, H], from input gates [T, B, 4H]",
    backward: OpBackward::Node {
        formula: "backpropagation through time: the gate gradients of all steps, then the recurrent weight gradient as one product over all steps; composed when a graph is recorded",
    },
};

/// The per-step tensors of a forward pass, in time order.
struct Steps {
    /// Hidden states `[B, H]`.
    h: Vec<Tensor>,
    /// Cell states `[B, H]`.
    c: Vec<Tensor>,
    /// Activated gates `[B, 4H]` (input, forget, cell, output).
    gates: Vec<Tensor>,
}

/// Time index of the `s`-th step taken.
fn time(s: usize, len: usize, reverse: bool) -> usize {
    if reverse {
        len - 1 - s
    } else {
        s
    }
}

impl Tensor {
    /// Runs one direction of an LSTM layer over a sequence: `self` holds the input projections
    /// `x W_ihᵀ + b_ih` as `[T, B, 4H]` (gate order input, forget, cell, output, as PyTorch),
    /// `h0` and `c0` the initial states `[B, H]`, `w_hh` the recurrent weight `[4H, H]` and
    /// `b_hh` its bias `[4H]`. With `reverse` the steps run from the last time index to the first.
    ///
    /// Returns `[2, T, B, H]`: the hidden states (index 0) and cell states (index 1) of every
    /// step, in time order. Differentiable in every input.
    ///
    /// ```
    /// use ember_autograd::Tensor;
    /// let (t, b, h) = (5, 2, 3);
    /// let gi = Tensor::randn(&[t, b, 4 * h]).unwrap();
    /// let (h0, c0) = (Tensor::zeros(&[b, h]).unwrap(), Tensor::zeros(&[b, h]).unwrap());
    /// let w_hh = Tensor::randn(&[4 * h, h]).unwrap();
    /// let y = gi.lstm_sequence(&h0, &c0, &w_hh, None, false).unwrap();
    /// assert_eq!(y.shape(), &[2, t, b, h]);
    /// ```
    pub fn lstm_sequence(
        &self,
        h0: &Tensor,
        c0: &Tensor,
        w_hh: &Tensor,
        b_hh: Option<&Tensor>,
        reverse: bool,
    ) -> Result<Tensor> {
        check_shapes(self, h0, c0, w_hh, b_hh)?;
        let fused =
            if self.shape()[0] == 0 { None } else { no_grad(|| forward_fused(self, h0, c0, w_hh, b_hh, reverse))? };
        let Some((out, gates)) = fused else {
            // no fused kernels here: the composed ops record their own graph
            let steps = steps_composed(&with_bias(self, b_hh)?, h0, c0, w_hh, reverse)?;
            return pack(&steps, self, h0);
        };
        let mut inputs = vec![self, h0, c0, w_hh];
        inputs.extend(b_hh);
        if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
            return Ok(out);
        }
        let y = out.detach();
        // the inputs stay attached to their graphs: a recorded backward recomputes from them
        let saved = Saved {
            gi: self.clone(),
            h0: h0.clone(),
            c0: c0.clone(),
            w_hh: w_hh.clone(),
            b_hh: b_hh.cloned(),
            y: y.clone(),
            gates,
            reverse,
        };
        let mut keep = vec![self, h0, c0, w_hh, &y];
        keep.extend(b_hh);
        Ok(record_saving(out, "LstmSequence", &inputs, &keep, move |g| saved.backward(g)))
    }
}

/// `gi + b_hh`, or `gi` without a bias.
fn with_bias(gi: &Tensor, b_hh: Option<&Tensor>) -> Result<Tensor> {
    match b_hh {
        Some(b) => gi.add(b),
        None => Ok(gi.clone()),
    }
}

fn check_shapes(gi: &Tensor, h0: &Tensor, c0: &Tensor, w_hh: &Tensor, b_hh: Option<&Tensor>) -> Result<()> {
    const OP: &str = "lstm_sequence";
    let bad = |what: String| Err(Error::shape(OP, what));
    let &[_, batch, four_h] = gi.shape() else {
        return bad(format!("input projections should be [T, B, 4H], got {:?}", gi.shape()));
    };
    let hidden = four_h / 4;
    if four_h % 4 != 0 {
        return bad(format!("input projections' last dim {four_h} is not 4 * hidden"));
    }
    for (name, t) in [("h0", h0), ("c0", c0)] {
        if t.shape() != [batch, hidden] {
            return bad(format!("{name} should be [{batch}, {hidden}], got {:?}", t.shape()));
        }
    }
    if w_hh.shape() != [four_h, hidden] {
        return bad(format!("w_hh should be [{four_h}, {hidden}], got {:?}", w_hh.shape()));
    }
    if let Some(b) = b_hh {
        if b.shape() != [four_h] {
            return bad(format!("b_hh should be [{four_h}], got {:?}", b.shape()));
        }
    }
    Ok(())
}

/// Stacks the steps' hidden and cell states into `[2, T, B, H]`.
fn pack(steps: &Steps, gi: &Tensor, h0: &Tensor) -> Result<Tensor> {
    let (t, b, h) = (gi.shape()[0], h0.shape()[0], h0.shape()[1]);
    if t == 0 {
        return Tensor::zeros_with([2, 0, b, h], gi.dtype(), gi.device());
    }
    let all: Vec<Tensor> = steps.h.iter().chain(&steps.c).cloned().collect();
    Tensor::stack(&all, 0)?.reshape([2, t as isize, b as isize, h as isize])
}

/// The forward by the backend's fused sequence kernel: the output `[2, T, B, H]` and the
/// activated gates `[T, B, 4H]`, or `None` when the backend has no kernel for these operands.
fn forward_fused(
    gi: &Tensor,
    h0: &Tensor,
    c0: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    reverse: bool,
) -> Result<Option<(Tensor, Tensor)>> {
    let gib = with_bias(gi, b_hh)?;
    let Some(fused) = gib.fused().filter(|_| matches!(gib.dtype(), DType::F32 | DType::F64)) else {
        return Ok(None);
    };
    let (y, gates) = fused.lstm_sequence(gib.v(), h0.v(), c0.v(), w_hh.v(), reverse)?;
    let (t, b, h) = (gi.shape()[0], h0.shape()[0], h0.shape()[1]);
    Ok(Some((gib.same_backend(y, &[2, t, b, h]), gib.same_backend(gates, &[t, b, 4 * h]))))
}

/// The forward composed from tensor ops (recorded when grad mode is on).
fn steps_composed(gib: &Tensor, h0: &Tensor, c0: &Tensor, w_hh: &Tensor, reverse: bool) -> Result<Steps> {
    let len = gib.shape()[0];
    let (mut h, mut c) = (h0.clone(), c0.clone());
    let mut steps = Steps { h: vec![h0.clone(); len], c: vec![c0.clone(); len], gates: vec![c0.clone(); len] };
    for s in 0..len {
        let t = time(s, len, reverse);
        let pre = gib.select(0, t as isize)?.add(&h.matmul(&w_hh.t()?)?)?;
        let g = pre.chunk(4, -1)?;
        let (i, f, gg, o) = (g[0].sigmoid()?, g[1].sigmoid()?, g[2].tanh()?, g[3].sigmoid()?);
        c = f.mul(&c)?.add(&i.mul(&gg)?)?;
        h = o.mul(&c.tanh()?)?;
        steps.gates[t] = Tensor::cat(&[i, f, gg, o], -1)?;
        steps.c[t] = c.clone();
        steps.h[t] = h.clone();
    }
    Ok(steps)
}

/// What the fused forward keeps for its backward: the inputs (attached to their graphs), and the
/// detached output and gates.
struct Saved {
    gi: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    b_hh: Option<Tensor>,
    /// The op's output `[2, T, B, H]`.
    y: Tensor,
    /// Activated gates `[T, B, 4H]`.
    gates: Tensor,
    reverse: bool,
}

impl Saved {
    /// Gradients of `(gi, h0, c0, w_hh, b_hh)` from the output's gradient `g` `[2, T, B, H]`.
    fn backward(&self, g: &Tensor) -> Result<Grads> {
        let len = self.gi.shape()[0];
        let (d_pre, dh0, dc0, h_prev) = if is_grad_enabled() {
            self.backward_composed(&g.select(0, 0)?, &g.select(0, 1)?)?
        } else {
            self.backward_fused(g)?
        };
        let (b, h) = (self.h0.shape()[0] as isize, self.h0.shape()[1] as isize);
        let rows = len as isize * b;
        let flat = d_pre.reshape([rows, 4 * h])?;
        let dw = flat.t()?.matmul(&h_prev.reshape([rows, h])?)?;
        let mut grads: Grads = smallvec::smallvec![Some(d_pre.clone()), Some(dh0), Some(dc0), Some(dw)];
        if self.b_hh.is_some() {
            grads.push(Some(flat.sum_dim([0], false)?));
        }
        Ok(grads)
    }

    /// The hidden state each step read, `[T, B, H]` in time order: `h0` then the outputs shifted
    /// by one step (the other way round for a reversed direction).
    fn previous_hidden(&self, hs: &Tensor) -> Result<Tensor> {
        let len = hs.shape()[0];
        let h0 = self.h0.unsqueeze(0)?;
        if len == 1 {
            return Ok(h0);
        }
        if self.reverse {
            Tensor::cat(&[hs.narrow(0, 1, len - 1)?, h0], 0)
        } else {
            Tensor::cat(&[h0, hs.narrow(0, 0, len - 1)?], 0)
        }
    }

    /// Backward by the backend's fused sequence kernel from the output's gradient `g`:
    /// `(d_pre [T, B, 4H], dh0, dc0, h_prev)`.
    fn backward_fused(&self, g: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let (b, h) = (self.h0.shape()[0], self.h0.shape()[1]);
        let (d_pre, dh0, dc0) = self.gates.fused_for("lstm backward")?.lstm_sequence_backward(
            self.gates.v(),
            self.y.v(),
            self.c0.v(),
            self.w_hh.v(),
            g.v(),
            self.reverse,
        )?;
        let like = &self.gates;
        let d_pre = like.same_backend(d_pre, self.gates.shape());
        let (dh0, dc0) = (like.same_backend(dh0, &[b, h]), like.same_backend(dc0, &[b, h]));
        Ok((d_pre, dh0, dc0, self.previous_hidden(&self.y.select(0, 0)?)?))
    }

    /// Backward composed from tensor ops on a recomputed, recorded forward, so the gradients are
    /// themselves differentiable (`create_graph`).
    fn backward_composed(&self, gh_out: &Tensor, gc_out: &Tensor) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let len = self.gi.shape()[0];
        let gib = with_bias(&self.gi, self.b_hh.as_ref())?;
        let steps = steps_composed(&gib, &self.h0, &self.c0, &self.w_hh, self.reverse)?;
        let mut d_pre = vec![self.c0.clone(); len];
        let (mut dh, mut dc): (Option<Tensor>, Option<Tensor>) = (None, None);
        for s in (0..len).rev() {
            let t = time(s, len, self.reverse);
            let c_prev = if s == 0 { self.c0.clone() } else { steps.c[time(s - 1, len, self.reverse)].clone() };
            let plus = |a: Tensor, b: &Option<Tensor>| match b {
                Some(b) => a.add(b),
                None => Ok(a),
            };
            let dh_t = plus(gh_out.select(0, t as isize)?, &dh)?;
            let dc_in = plus(gc_out.select(0, t as isize)?, &dc)?;
            let gates = steps.gates[t].chunk(4, -1)?;
            let (i, f, g, o) = (&gates[0], &gates[1], &gates[2], &gates[3]);
            let tc = steps.c[t].tanh()?;
            let one_minus = |x: &Tensor| x.neg()?.add(1.0);
            let dct = dc_in.add(&dh_t.mul(o)?.mul(&one_minus(&tc.mul(&tc)?)?)?)?;
            let d_o = dh_t.mul(&tc)?.mul(o)?.mul(&one_minus(o)?)?;
            let di = dct.mul(g)?.mul(i)?.mul(&one_minus(i)?)?;
            let df = dct.mul(&c_prev)?.mul(f)?.mul(&one_minus(f)?)?;
            let dg = dct.mul(i)?.mul(&one_minus(&g.mul(g)?)?)?;
            let dp = Tensor::cat(&[di, df, dg, d_o], -1)?;
            dh = Some(dp.matmul(&self.w_hh)?);
            dc = Some(dct.mul(f)?);
            d_pre[t] = dp;
        }
        let d_pre = Tensor::stack(&d_pre, 0)?;
        let hs = Tensor::stack(&steps.h, 0)?;
        let done = |t: Option<Tensor>| t.expect("the sequence has at least one step");
        Ok((d_pre, done(dh), done(dc), self.previous_hidden(&hs)?))
    }
}
