//! Gradient clipping (`torch.nn.utils.clip_grad_norm_` / `clip_grad_value_`).

use ember_autograd::{no_grad, Error, Result, Tensor};

/// Scales the gradients of `params` together so that their joint `norm_type`-norm is at most
/// `max_norm`; returns the norm before clipping (as a 0-dim tensor). `norm_type` may be infinite.
/// With `error_if_nonfinite`, a NaN/inf total norm is an error instead.
pub fn clip_grad_norm_(params: &[Tensor], max_norm: f64, norm_type: f64, error_if_nonfinite: bool) -> Result<Tensor> {
    let grads: Vec<Tensor> = params.iter().filter_map(|p| p.grad()).collect();
    clip_grads_by_norm(&grads, max_norm, norm_type, error_if_nonfinite)
}

/// [`clip_grad_norm_`] on the gradient tensors themselves.
pub fn clip_grads_by_norm(grads: &[Tensor], max_norm: f64, norm_type: f64, error_if_nonfinite: bool) -> Result<Tensor> {
    no_grad(|| {
        if grads.is_empty() {
            return Ok(Tensor::scalar(0.0f32));
        }
        let norms: Vec<Tensor> =
            grads.iter().map(|g| g.vector_norm(norm_type, ember_autograd::SCALAR, false)).collect::<Result<_>>()?;
        let stacked = Tensor::stack(&norms, 0)?;
        let total = if norm_type.is_infinite() {
            stacked.amax(ember_autograd::SCALAR, false)?
        } else {
            stacked.vector_norm(norm_type, ember_autograd::SCALAR, false)?
        };
        let t = total.item()?;
        if error_if_nonfinite && !t.is_finite() {
            return Err(Error::invalid(
                "clip_grad_norm_",
                format!("the total norm of order {norm_type} of the gradients is non-finite ({t})"),
            ));
        }
        let coef = (max_norm / (t + 1e-6)).min(1.0);
        for g in grads {
            g.mul_(coef)?;
        }
        Ok(total)
    })
}

/// Clamps every gradient element of `params` to `[-clip_value, clip_value]`.
pub fn clip_grad_value_(params: &[Tensor], clip_value: f64) -> Result<()> {
    no_grad(|| {
        for g in params.iter().filter_map(|p| p.grad()) {
            g.clamp_(Some(-clip_value), Some(clip_value))?;
        }
        Ok(())
    })
}
