//! MultiheadAttention and the Transformer layers (`nn.TransformerEncoderLayer`, ...), with
//! PyTorch's state_dict names.

use super::linear::Linear;
use super::{Dropout, LayerNorm, WithBias};
use crate::{functional, init, Module, ModuleExt};
use ember_autograd::{DType, Error, Result, Tensor};

use ember_autograd::{OpBackward, OpDescriptor};

/// `nn.MultiheadAttention`.
pub const MULTI_HEAD_ATTENTION: OpDescriptor = OpDescriptor {
    name: "multi_head_attention",
    forward: "MultiheadAttention::forward_attn",
    conformance: &["multi_head_attention"],
    shape_rule: "[L, N, E] (batch_first: [N, L, E]); weights [N, L, S] averaged over heads",
    backward: OpBackward::Composed,
};

/// `nn.TransformerEncoderLayer`.
pub const TRANSFORMER_ENCODER_LAYER: OpDescriptor = OpDescriptor {
    name: "transformer_encoder_layer",
    forward: "TransformerEncoderLayer::forward_masked",
    conformance: &["transformer_encoder_layer"],
    shape_rule: "the input's shape",
    backward: OpBackward::Composed,
};

/// A mask for attention, PyTorch's convention: boolean `true` = *do not attend*, or additive float.
#[derive(Clone, Copy)]
pub enum Mask<'a> {
    /// `true` where attention is blocked.
    Block(&'a Tensor),
    /// Added to the attention scores.
    Additive(&'a Tensor),
}

impl<'a> Mask<'a> {
    /// Boolean tensors block, floating ones add (what PyTorch infers from the dtype).
    pub fn from_tensor(t: &'a Tensor) -> Mask<'a> {
        if t.dtype() == DType::Bool {
            Mask::Block(t)
        } else {
            Mask::Additive(t)
        }
    }

    fn apply(self, scores: &Tensor) -> Result<Tensor> {
        match self {
            Mask::Block(m) => scores.masked_fill(m, f64::NEG_INFINITY),
            Mask::Additive(m) => scores.add(m),
        }
    }
}

/// Multi-head attention (`nn.MultiheadAttention`, same embedding size for query, key and value).
#[derive(crate::Module)]
pub struct MultiheadAttention {
    /// `[3E, E]`: query, key and value projections stacked.
    pub in_proj_weight: Tensor,
    /// `[3E]`.
    pub in_proj_bias: Option<Tensor>,
    /// The output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
    /// Dropout on the attention weights (training only).
    pub dropout: f64,
    /// `[batch, seq, feature]` inputs.
    pub batch_first: bool,
    /// Training flag.
    pub training: bool,
}

impl MultiheadAttention {
    /// `nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first)`.
    pub fn new(embed_dim: usize, num_heads: usize, dropout: f64, bias: bool, batch_first: bool) -> Result<Self> {
        if num_heads == 0 || !embed_dim.is_multiple_of(num_heads) {
            return Err(Error::invalid(
                "MultiheadAttention",
                format!("embed_dim {embed_dim} must be divisible by num_heads {num_heads}"),
            ));
        }
        let w = Tensor::zeros([3 * embed_dim, embed_dim])?;
        init::xavier_uniform_(&w, 1.0)?;
        let out_proj = Linear::new(embed_dim, embed_dim).bias(bias)?;
        if let Some(b) = &out_proj.bias {
            init::zeros_(b)?;
        }
        Ok(MultiheadAttention {
            in_proj_weight: w.requires_grad_(true)?,
            in_proj_bias: if bias { Some(Tensor::zeros([3 * embed_dim])?.requires_grad_(true)?) } else { None },
            out_proj,
            num_heads,
            dropout,
            batch_first,
            training: true,
        })
    }

    /// Attention of `query` over `key`/`value`. `key_padding_mask` is `[batch, S]`, `attn_mask`
    /// `[L, S]` or `[batch · heads, L, S]`. Returns the output and, with `need_weights`, the
    /// weights (averaged over heads with `average_attn_weights`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_attn(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<Mask<'_>>,
        need_weights: bool,
        attn_mask: Option<Mask<'_>>,
        average_attn_weights: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let op = "MultiheadAttention";
        let unbatched = query.ndim() == 2;
        let bf = |t: &Tensor| -> Result<Tensor> {
            if unbatched {
                t.unsqueeze(0)
            } else if self.batch_first {
                Ok(t.clone())
            } else {
                t.transpose(0, 1)
            }
        };
        let (q, k, v) = (bf(query)?, bf(key)?, bf(value)?);
        let e = self.in_proj_weight.shape()[1];
        if q.ndim() != 3 || q.shape()[2] != e || k.shape()[2] != e || v.shape()[2] != e {
            return Err(Error::shape(
                op,
                format!(
                    "query {:?}, key {:?}, value {:?} must end in embed_dim {e}",
                    query.shape(),
                    key.shape(),
                    value.shape()
                ),
            ));
        }
        let (b, l, s) = (q.shape()[0], q.shape()[1], k.shape()[1]);
        let h = self.num_heads;
        let d = e / h;
        let w = self.in_proj_weight.chunk(3, 0)?;
        let bias = self.in_proj_bias.as_ref().map(|b| b.chunk(3, 0)).transpose()?;
        let proj = |x: &Tensor, i: usize, len: usize| -> Result<Tensor> {
            x.linear(&w[i], bias.as_ref().map(|b| &b[i]))?
                .reshape([b as isize, len as isize, h as isize, d as isize])?
                .transpose(1, 2)
        };
        let (qh, kh, vh) = (proj(&q, 0, l)?, proj(&k, 1, s)?, proj(&v, 2, s)?);
        let mut scores = qh.matmul(&kh.transpose(-2, -1)?)?.mul(1.0 / (d as f64).sqrt())?;
        if let Some(m) = attn_mask {
            let t = match m {
                Mask::Block(t) | Mask::Additive(t) => t,
            };
            let shaped =
                if t.ndim() == 3 { t.reshape([b as isize, h as isize, l as isize, s as isize])? } else { t.clone() };
            scores = match m {
                Mask::Block(_) => Mask::Block(&shaped).apply(&scores)?,
                Mask::Additive(_) => Mask::Additive(&shaped).apply(&scores)?,
            };
        }
        if let Some(m) = key_padding_mask {
            let t = match m {
                Mask::Block(t) | Mask::Additive(t) => t,
            };
            let t = if unbatched { t.unsqueeze(0)? } else { t.clone() };
            let shaped = t.reshape([b as isize, 1, 1, s as isize])?;
            scores = match m {
                Mask::Block(_) => Mask::Block(&shaped).apply(&scores)?,
                Mask::Additive(_) => Mask::Additive(&shaped).apply(&scores)?,
            };
        }
        let weights = scores.softmax(-1)?;
        let dropped = functional::dropout(&weights, self.dropout, self.training && self.dropout > 0.0)?;
        let ctx = dropped.matmul(&vh)?.transpose(1, 2)?.reshape([b as isize, l as isize, e as isize])?;
        let mut out = self.out_proj.forward(&ctx)?;
        out = if unbatched {
            out.squeeze_dim(0)?
        } else if self.batch_first {
            out
        } else {
            out.transpose(0, 1)?
        };
        let weights = if need_weights {
            let w = if average_attn_weights { weights.mean_dim([1], false)? } else { weights };
            Some(if unbatched { w.squeeze_dim(0)? } else { w })
        } else {
            None
        };
        Ok((out, weights))
    }
}

impl Module for MultiheadAttention {
    /// Self-attention without masks.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_attn(x, x, x, None, false, None, true)?.0)
    }
}

/// Options of the Transformer layers (PyTorch's constructor arguments).
#[derive(Clone, Debug)]
pub struct TransformerOptions {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub nhead: usize,
    /// Feed-forward width (2048).
    pub dim_feedforward: usize,
    /// Dropout (0.1).
    pub dropout: f64,
    /// "relu" (default) or "gelu".
    pub activation: String,
    /// LayerNorm eps (1e-5).
    pub layer_norm_eps: f64,
    /// `[batch, seq, feature]` (false).
    pub batch_first: bool,
    /// Pre-norm instead of post-norm (false).
    pub norm_first: bool,
}

impl TransformerOptions {
    /// PyTorch's defaults for `d_model` and `nhead`.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerOptions {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: "relu".into(),
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
        }
    }
}

fn activate(name: &str, x: &Tensor) -> Result<Tensor> {
    match name {
        "relu" => x.relu(),
        "gelu" => x.gelu("none"),
        other => Err(Error::invalid("Transformer", format!("activation should be relu or gelu, not {other}"))),
    }
}

/// One encoder block: self-attention and a feed-forward network, each with residual and LayerNorm.
#[derive(crate::Module)]
pub struct TransformerEncoderLayer {
    /// Self-attention.
    pub self_attn: MultiheadAttention,
    /// Feed-forward in.
    pub linear1: Linear,
    /// Feed-forward dropout.
    pub dropout: Dropout,
    /// Feed-forward out.
    pub linear2: Linear,
    /// Norm after (or before) attention.
    pub norm1: LayerNorm,
    /// Norm after (or before) the feed-forward network.
    pub norm2: LayerNorm,
    /// Dropout on the attention branch.
    pub dropout1: Dropout,
    /// Dropout on the feed-forward branch.
    pub dropout2: Dropout,
    /// "relu" or "gelu".
    pub activation: String,
    /// Pre-norm.
    pub norm_first: bool,
}

impl TransformerEncoderLayer {
    /// `nn.TransformerEncoderLayer(...)`.
    pub fn new(o: &TransformerOptions) -> Result<Self> {
        activate(&o.activation, &Tensor::zeros([1])?)?;
        Ok(TransformerEncoderLayer {
            self_attn: MultiheadAttention::new(o.d_model, o.nhead, o.dropout, true, o.batch_first)?,
            linear1: Linear::new(o.d_model, o.dim_feedforward)?,
            dropout: Dropout::new(o.dropout),
            linear2: Linear::new(o.dim_feedforward, o.d_model)?,
            norm1: LayerNorm::with_options(&[o.d_model], o.layer_norm_eps, true)?,
            norm2: LayerNorm::with_options(&[o.d_model], o.layer_norm_eps, true)?,
            dropout1: Dropout::new(o.dropout),
            dropout2: Dropout::new(o.dropout),
            activation: o.activation.clone(),
            norm_first: o.norm_first,
        })
    }

    fn self_attention(&self, x: &Tensor, mask: Option<Mask<'_>>, pad: Option<Mask<'_>>) -> Result<Tensor> {
        let (y, _) = self.self_attn.forward_attn(x, x, x, pad, false, mask, true)?;
        self.dropout1.forward(&y)
    }

    fn feed_forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.dropout.forward(&activate(&self.activation, &self.linear1.forward(x)?)?)?;
        self.dropout2.forward(&self.linear2.forward(&h)?)
    }

    /// Applies the layer with an optional attention mask and key padding mask.
    pub fn forward_masked(
        &self,
        src: &Tensor,
        mask: Option<Mask<'_>>,
        key_padding: Option<Mask<'_>>,
    ) -> Result<Tensor> {
        if self.norm_first {
            let x = src.add(&self.self_attention(&self.norm1.forward(src)?, mask, key_padding)?)?;
            x.add(&self.feed_forward(&self.norm2.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&src.add(&self.self_attention(src, mask, key_padding)?)?)?;
            self.norm2.forward(&x.add(&self.feed_forward(&x)?)?)
        }
    }
}

impl Module for TransformerEncoderLayer {
    fn forward(&self, src: &Tensor) -> Result<Tensor> {
        self.forward_masked(src, None, None)
    }
}

/// One decoder block: self-attention, cross-attention over the memory, feed-forward.
#[derive(crate::Module)]
pub struct TransformerDecoderLayer {
    /// Self-attention.
    pub self_attn: MultiheadAttention,
    /// Cross-attention.
    pub multihead_attn: MultiheadAttention,
    /// Feed-forward in.
    pub linear1: Linear,
    /// Feed-forward dropout.
    pub dropout: Dropout,
    /// Feed-forward out.
    pub linear2: Linear,
    /// Norms of the three branches.
    pub norm1: LayerNorm,
    /// Second norm.
    pub norm2: LayerNorm,
    /// Third norm.
    pub norm3: LayerNorm,
    /// Branch dropouts.
    pub dropout1: Dropout,
    /// Second branch dropout.
    pub dropout2: Dropout,
    /// Third branch dropout.
    pub dropout3: Dropout,
    /// "relu" or "gelu".
    pub activation: String,
    /// Pre-norm.
    pub norm_first: bool,
}

impl TransformerDecoderLayer {
    /// `nn.TransformerDecoderLayer(...)`.
    pub fn new(o: &TransformerOptions) -> Result<Self> {
        activate(&o.activation, &Tensor::zeros([1])?)?;
        let ln = || LayerNorm::with_options(&[o.d_model], o.layer_norm_eps, true);
        Ok(TransformerDecoderLayer {
            self_attn: MultiheadAttention::new(o.d_model, o.nhead, o.dropout, true, o.batch_first)?,
            multihead_attn: MultiheadAttention::new(o.d_model, o.nhead, o.dropout, true, o.batch_first)?,
            linear1: Linear::new(o.d_model, o.dim_feedforward)?,
            dropout: Dropout::new(o.dropout),
            linear2: Linear::new(o.dim_feedforward, o.d_model)?,
            norm1: ln()?,
            norm2: ln()?,
            norm3: ln()?,
            dropout1: Dropout::new(o.dropout),
            dropout2: Dropout::new(o.dropout),
            dropout3: Dropout::new(o.dropout),
            activation: o.activation.clone(),
            norm_first: o.norm_first,
        })
    }

    /// Applies the layer to `tgt` attending over `memory`, with optional masks.
    pub fn forward_decode(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        tgt_mask: Option<Mask<'_>>,
        memory_mask: Option<Mask<'_>>,
    ) -> Result<Tensor> {
        let sa = |x: &Tensor| -> Result<Tensor> {
            self.dropout1.forward(&self.self_attn.forward_attn(x, x, x, None, false, tgt_mask, true)?.0)
        };
        let ca = |x: &Tensor| -> Result<Tensor> {
            self.dropout2
                .forward(&self.multihead_attn.forward_attn(x, memory, memory, None, false, memory_mask, true)?.0)
        };
        let ff = |x: &Tensor| -> Result<Tensor> {
            let h = self.dropout.forward(&activate(&self.activation, &self.linear1.forward(x)?)?)?;
            self.dropout3.forward(&self.linear2.forward(&h)?)
        };
        if self.norm_first {
            let x = tgt.add(&sa(&self.norm1.forward(tgt)?)?)?;
            let x = x.add(&ca(&self.norm2.forward(&x)?)?)?;
            x.add(&ff(&self.norm3.forward(&x)?)?)
        } else {
            let x = self.norm1.forward(&tgt.add(&sa(tgt)?)?)?;
            let x = self.norm2.forward(&x.add(&ca(&x)?)?)?;
            self.norm3.forward(&x.add(&ff(&x)?)?)
        }
    }
}

/// The optional LayerNorm after a stack of layers.
fn final_layer_norm(o: &TransformerOptions, on: bool) -> Result<Option<LayerNorm>> {
    on.then(|| LayerNorm::with_options(&[o.d_model], o.layer_norm_eps, true)).transpose()
}

fn apply_norm(norm: Option<&LayerNorm>, x: Tensor) -> Result<Tensor> {
    match norm {
        Some(n) => n.forward(&x),
        None => Ok(x),
    }
}

/// A stack of encoder layers with an optional final norm (`nn.TransformerEncoder`).
#[derive(crate::Module)]
pub struct TransformerEncoder {
    /// The layers (`layers.0.self_attn...`).
    pub layers: Vec<TransformerEncoderLayer>,
    /// Final norm.
    pub norm: Option<LayerNorm>,
}

impl TransformerEncoder {
    /// `num_layers` fresh layers built from `o`.
    pub fn new(o: &TransformerOptions, num_layers: usize, final_norm: bool) -> Result<Self> {
        Ok(TransformerEncoder {
            layers: (0..num_layers).map(|_| TransformerEncoderLayer::new(o)).collect::<Result<_>>()?,
            norm: final_layer_norm(o, final_norm)?,
        })
    }

    /// Applies every layer with the same masks.
    pub fn forward_masked(
        &self,
        src: &Tensor,
        mask: Option<Mask<'_>>,
        key_padding: Option<Mask<'_>>,
    ) -> Result<Tensor> {
        let mut x = src.clone();
        for l in &self.layers {
            x = l.forward_masked(&x, mask, key_padding)?;
        }
        apply_norm(self.norm.as_ref(), x)
    }
}

impl Module for TransformerEncoder {
    fn forward(&self, src: &Tensor) -> Result<Tensor> {
        self.forward_masked(src, None, None)
    }
}

/// A stack of decoder layers with an optional final norm (`nn.TransformerDecoder`).
#[derive(crate::Module)]
pub struct TransformerDecoder {
    /// The layers.
    pub layers: Vec<TransformerDecoderLayer>,
    /// Final norm.
    pub norm: Option<LayerNorm>,
}

impl TransformerDecoder {
    /// `num_layers` fresh layers built from `o`.
    pub fn new(o: &TransformerOptions, num_layers: usize, final_norm: bool) -> Result<Self> {
        Ok(TransformerDecoder {
            layers: (0..num_layers).map(|_| TransformerDecoderLayer::new(o)).collect::<Result<_>>()?,
            norm: final_layer_norm(o, final_norm)?,
        })
    }

    /// Applies every layer.
    pub fn forward_decode(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
        tgt_mask: Option<Mask<'_>>,
        memory_mask: Option<Mask<'_>>,
    ) -> Result<Tensor> {
        let mut x = tgt.clone();
        for l in &self.layers {
            x = l.forward_decode(&x, memory, tgt_mask, memory_mask)?;
        }
        apply_norm(self.norm.as_ref(), x)
    }
}

/// Encoder–decoder Transformer (`nn.Transformer`).
#[derive(crate::Module)]
pub struct Transformer {
    /// The encoder stack.
    pub encoder: TransformerEncoder,
    /// The decoder stack.
    pub decoder: TransformerDecoder,
}

impl Transformer {
    /// `nn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers, ...)`.
    pub fn new(o: &TransformerOptions, num_encoder_layers: usize, num_decoder_layers: usize) -> Result<Self> {
        Ok(Transformer {
            encoder: TransformerEncoder::new(o, num_encoder_layers, true)?,
            decoder: TransformerDecoder::new(o, num_decoder_layers, true)?,
        })
    }

    /// Encodes `src`, then decodes `tgt` over it.
    pub fn forward_seq2seq(&self, src: &Tensor, tgt: &Tensor, tgt_mask: Option<Mask<'_>>) -> Result<Tensor> {
        let memory = self.encoder.forward(src)?;
        self.decoder.forward_decode(tgt, &memory, tgt_mask, None)
    }

    /// A causal mask `[n, n]` for `tgt_mask` (additive: 0 on and below the diagonal, −inf above).
    pub fn generate_square_subsequent_mask(n: usize) -> Result<Tensor> {
        Tensor::full([n, n], f64::NEG_INFINITY)?.triu(1)
    }

    /// Number of parameters (a convenience mirroring `sum(p.numel() for p in m.parameters())`).
    pub fn size(&self) -> usize {
        self.num_parameters()
    }
}
