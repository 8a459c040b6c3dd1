//! `torch.nn.functional`: dropout, attention and the losses. The other nn kernels (conv, pools,
//! norms, activations, ...) are methods of `Tensor` in `ember-autograd`.

mod attention;
mod ctc;
mod loss;

pub use attention::{
    scaled_dot_product_attention, scaled_dot_product_attention_with_weights, AttnMask, SCALED_DOT_PRODUCT_ATTENTION,
};
pub use ctc::{ctc_loss, CtcOptions};
pub use loss::*;

use ember_autograd::{Error, Result, RngOp, Tensor};

/// Zeroes elements with probability `p` and scales the rest by `1/(1-p)` when `training`.
pub fn dropout(x: &Tensor, p: f64, training: bool) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("probability must be in [0, 1], got {p}")));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    if p == 1.0 {
        return x.mul(0.0);
    }
    if x.dtype().is_float() {
        // the scaled keep-mask in one pass (the same draws as `bernoulli` of a `1 - p` tensor)
        let keep = 1.0 - p;
        let op = RngOp::Bernoulli { p: keep, value: 1.0 / keep };
        return x.mul(&Tensor::random_with(x.shape(), op, x.dtype(), x.device())?);
    }
    let keep = x.detach().full_like(1.0 - p)?.bernoulli()?;
    x.mul(&keep.mul(1.0 / (1.0 - p))?)
}

/// Zeroes whole channels (dims 0..2 of a 4-d input, or dim 0 of a 3-d one) with probability `p`.
pub fn dropout_channels(x: &Tensor, p: f64, training: bool) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::invalid("dropout2d", format!("probability must be in [0, 1], got {p}")));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    if x.ndim() < 2 {
        return Err(Error::shape("dropout2d", format!("expects [N, C, ...] or [C, ...], got {:?}", x.shape())));
    }
    let batch_dims = if x.ndim() >= 4 { 2 } else { 1 };
    let mut mask_shape = x.shape()[..batch_dims].to_vec();
    mask_shape.extend(std::iter::repeat_n(1, x.ndim() - batch_dims));
    let keep = Tensor::full_with(&mask_shape, 1.0 - p, x.dtype(), x.device())?.bernoulli()?;
    x.mul(&keep.mul(if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 })?)
}
