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
pub enum AttnMask<'a> {
    /// `true` where attention is allowed.
    Allow(&'a Tensor),
    /// Added to the scores (use `-inf` to block).
    Additive(&'a Tensor),
}

/// `softmax(q kᵀ · scale + mask) v` over `[..., L, E]` queries and `[..., S, E]` keys/values,
/// with an optional causal mask (top-left aligned) and dropout on the weights. Returns the output
/// and the attention weights.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<AttnMask<'_>>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<(Tensor, Tensor)> {
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
        let allow = Tensor::ones_with(&[l, s], DType::Bool, q.device())?.tril(0)?;
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
