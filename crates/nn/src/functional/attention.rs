//! Scaled dot-product attention.

use ember_autograd::{DType, Error, Result, Tensor};

use ember_autograd::{OpBackward, OpDescriptor};

/// `F.scaled_dot_product_attention`.
pub const SCALED_DOT_PRODUCT_ATTENTION: OpDescriptor = OpDescriptor {
    name: "scaled_dot_product_attention",
    forward: "functional::scaled_dot_product_attention",
    conformance: &["scaled_dot_product_attention"],
    shape_rule: "[..., L, E_v] from query [..., L, E], key [..., S, E], value [..., S, E_v]; weights [..., L, S]",
    backward: OpBackward::Composed,
};

/// An attention mask: boolean (`true` = attend, as in `F.scaled_dot_product_attention`) or additive.
#[derive(Clone, Copy)]
pub enum AttnMask<'a> {
    /// `true` where attention is allowed.
    Allow(&'a Tensor),
    /// Added to the scores (use `-inf` to block).
    Additive(&'a Tensor),
}

/// `F.scaled_dot_product_attention`: `softmax(q kᵀ · scale + mask) v` over `[..., L, E]` queries
/// and `[..., S, E]` keys/values, with an optional causal mask (top-left aligned) and dropout on
/// the weights; the output only, as PyTorch (see [`scaled_dot_product_attention_with_weights`]
/// for the weights too).
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<AttnMask<'_>>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    Ok(scaled_dot_product_attention_with_weights(q, k, v, mask, dropout_p, is_causal, scale)?.0)
}

/// [`scaled_dot_product_attention`] returning the output and the attention weights.
pub fn scaled_dot_product_attention_with_weights(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<AttnMask<'_>>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<(Tensor, Tensor)> {
    let low = ember_autograd::autocast_dtype();
    let ys = ember_autograd::autocast_op_multi("scaled_dot_product_attention", &[q, k, v], |t| {
        let (o, w) = match low {
            // PyTorch's CPU kernel for bf16/f16 (flash attention) rounds the unnormalised
            // probabilities to the low dtype before multiplying by the values
            Some(d) if dropout_p == 0.0 => {
                attention_rounding_probabilities(&t[0], &t[1], &t[2], mask, is_causal, scale, d)?
            }
            _ => scaled_dot_product_attention_with_weights(&t[0], &t[1], &t[2], mask, dropout_p, is_causal, scale)?,
        };
        Ok(vec![o, w])
    })?;
    if let Some(mut ys) = ys {
        let w = ys.pop().expect("two results");
        return Ok((ys.pop().expect("two results"), w));
    }
    if q.ndim() < 2 || k.ndim() < 2 || v.ndim() < 2 || q.shape()[q.ndim() - 1] != k.shape()[k.ndim() - 1] {
        return Err(Error::shape(
            "scaled_dot_product_attention",
            format!("query {:?}, key {:?}, value {:?} do not fit", q.shape(), k.shape(), v.shape()),
        ));
    }
    let e = q.shape()[q.ndim() - 1];
    let scale = scale.unwrap_or(1.0 / (e as f64).sqrt());
    let mut scores = q.matmul(&k.transpose(-2, -1)?)?.mul(scale)?;
    let (l, s) = (q.shape()[q.ndim() - 2], k.shape()[k.ndim() - 2]);
    if is_causal {
        let allow = Tensor::ones_with([l, s], DType::Bool, q.device())?.tril(0)?;
        scores = scores.masked_fill(&allow.logical_not()?, f64::NEG_INFINITY)?;
    }
    match mask {
        Some(AttnMask::Allow(m)) => scores = scores.masked_fill(&m.logical_not()?, f64::NEG_INFINITY)?,
        Some(AttnMask::Additive(m)) => scores = scores.add(m)?,
        None => {}
    }
    let w = scores.softmax(-1)?;
    let w_used = super::dropout(&w, dropout_p, dropout_p > 0.0)?;
    Ok((w_used.matmul(v)?, w))
}

/// Attention as PyTorch's CPU flash-attention kernel computes it for bf16/f16 inputs (here given
/// as f32 holding low-precision values): f32 scores, `p = exp(s - max)` in f32, summed in f32 and
/// rounded to `low` before the product with the values; the output is that product times the
/// reciprocal of the sum. Its backward is the kernel's too (see [`LowPrecisionAttention`]). Returns
/// the output and the (f32) attention weights.
fn attention_rounding_probabilities(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<AttnMask<'_>>,
    is_causal: bool,
    scale: Option<f64>,
    low: DType,
) -> Result<(Tensor, Tensor)> {
    let e = q.shape()[q.ndim() - 1];
    let scale = scale.unwrap_or(1.0 / (e as f64).sqrt());
    let weights = scores(q, k, mask, is_causal, scale)?.softmax(-1)?;
    let out = match mask {
        None => {
            ember_autograd::apply(LowPrecisionAttention { scale, is_causal, low }, &[q.clone(), k.clone(), v.clone()])?
        }
        // with a mask: the forward's roundings, the backward composed
        Some(_) => {
            let s = scores(q, k, mask, is_causal, scale)?;
            let p = s.sub(&s.amax([-1], true)?.detach())?.exp()?;
            let sum = p.sum_dim([-1], true)?;
            p.to_dtype(low)?.to_dtype(p.dtype())?.matmul(v)?.mul(&sum.reciprocal()?)?
        }
    };
    Ok((out, weights))
}

/// `q kᵀ · scale` with the causal and given masks applied.
fn scores(q: &Tensor, k: &Tensor, mask: Option<AttnMask<'_>>, is_causal: bool, scale: f64) -> Result<Tensor> {
    let mut s = q.matmul(&k.transpose(-2, -1)?)?.mul(scale)?;
    let (l, n) = (q.shape()[q.ndim() - 2], k.shape()[k.ndim() - 2]);
    if is_causal {
        let allow = Tensor::ones_with([l, n], DType::Bool, q.device())?.tril(0)?;
        s = s.masked_fill(&allow.logical_not()?, f64::NEG_INFINITY)?;
    }
    match mask {
        Some(AttnMask::Allow(m)) => s = s.masked_fill(&m.logical_not()?, f64::NEG_INFINITY)?,
        Some(AttnMask::Additive(m)) => s = s.add(m)?,
        None => {}
    }
    Ok(s)
}

/// Unmasked (optionally causal) attention with PyTorch's CPU flash-attention roundings for a low
/// dtype: forward as [`attention_rounding_probabilities`]; backward from the probabilities `a`
/// recomputed in f32: `grad_v = round(a)ᵀ g`, `grad_s = a ∘ (g vᵀ − rowsum(g ∘ round(out)))`
/// rounded to the low dtype, `grad_q = scale · grad_s k`, `grad_k = scale · grad_sᵀ q`.
struct LowPrecisionAttention {
    scale: f64,
    is_causal: bool,
    low: DType,
}

impl LowPrecisionAttention {
    fn round(&self, t: &Tensor) -> Result<Tensor> {
        t.to_dtype(self.low)?.to_dtype(t.dtype())
    }
}

impl ember_autograd::Function for LowPrecisionAttention {
    fn forward(&self, ctx: &mut ember_autograd::Context, x: &[Tensor]) -> Result<Tensor> {
        let (q, k, v) = (&x[0], &x[1], &x[2]);
        let s = scores(q, k, None, self.is_causal, self.scale)?;
        let p = s.sub(&s.amax([-1], true)?)?.exp()?;
        let sum = p.sum_dim([-1], true)?;
        let out = self.round(&p)?.matmul(v)?.mul(&sum.reciprocal()?)?;
        ctx.save_for_backward(&[q, k, v, &out]);
        Ok(out)
    }

    fn backward(&self, ctx: &ember_autograd::Context, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [q, k, v, out] = ctx.saved_tensors() else { unreachable!("four tensors saved") };
        let a = scores(q, k, None, self.is_causal, self.scale)?.softmax(-1)?;
        let grad_v = self.round(&a)?.transpose(-2, -1)?.matmul(g)?;
        let dsum = g.mul(&self.round(out)?)?.sum_dim([-1], true)?;
        let grad_s = self.round(&a.mul(&g.matmul(&v.transpose(-2, -1)?)?.sub(&dsum)?)?)?;
        let grad_q = grad_s.matmul(k)?.mul(self.scale)?;
        let grad_k = grad_s.transpose(-2, -1)?.matmul(q)?.mul(self.scale)?;
        Ok(vec![Some(grad_q), Some(grad_k), Some(grad_v)])
    }

    fn name(&self) -> &'static str {
        "scaled_dot_product_attention"
    }
}
