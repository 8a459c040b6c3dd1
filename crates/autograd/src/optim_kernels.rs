//! Fused optimizer steps for `ember-optim`: one call into the parameter's backend
//! ([`ember_storage::FusedKernels::sgd_step`] / `adam_step`) when it offers fused kernels and the
//! tensors fit, so a CUDA or third-party backend can provide them as the CPU backend does.

use crate::Tensor;
use ember_storage::{AdamStep, DType, Error, Result, SgdStep};

/// Dense tensors of one floating dtype (f32 or f64), device and size, with pairwise distinct storages.
fn eligible(ts: &[&Tensor]) -> bool {
    let (n, dt, dev) = (ts[0].numel(), ts[0].dtype(), ts[0].device());
    matches!(dt, DType::F32 | DType::F64)
        && ts.iter().all(|t| t.dtype() == dt && t.device() == dev && t.is_contiguous() && t.numel() == n)
        && ts.iter().enumerate().all(|(i, a)| ts[i + 1..].iter().all(|b| !a.shares_storage(b)))
}

/// True when the first tensor's backend offers fused kernels and the tensors fit them (dense, one
/// floating dtype f32/f64, one device and size, distinct storages): an optimizer checks this before
/// it creates state buffers for the fused path.
pub fn can_fuse(ts: &[&Tensor]) -> bool {
    !ts.is_empty() && ts[0].fused().is_some() && eligible(ts)
}

fn check_grad_mode(param: &Tensor, op: &str) -> Result<()> {
    if param.requires_grad() && crate::is_grad_enabled() {
        return Err(Error::autograd(format!(
            "{op}: a parameter that requires grad is updated in place; run the step under no_grad"
        )));
    }
    Ok(())
}

/// One SGD step in place by the backend's fused kernel. Returns `Ok(false)`, changing nothing, when
/// the backend has no fused kernels or the tensors do not fit (the caller then takes the composed path).
pub fn fused_sgd_step(param: &Tensor, grad: &Tensor, momentum_buffer: Option<&Tensor>, s: &SgdStep) -> Result<bool> {
    let mut ts = vec![param, grad];
    ts.extend(momentum_buffer);
    let Some(fused) = param.fused() else { return Ok(false) };
    if !eligible(&ts) {
        return Ok(false);
    }
    check_grad_mode(param, "sgd_step")?;
    fused.sgd_step(param.v(), grad.v(), momentum_buffer.map(|b| b.v()), s)?;
    param.bump_version();
    if let Some(b) = momentum_buffer {
        b.bump_version();
    }
    Ok(true)
}

/// One Adam/AdamW step in place by the backend's fused kernel; `Ok(false)` as [`fused_sgd_step`].
pub fn fused_adam_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    s: &AdamStep,
) -> Result<bool> {
    let Some(fused) = param.fused() else { return Ok(false) };
    if !eligible(&[param, grad, exp_avg, exp_avg_sq]) {
        return Ok(false);
    }
    check_grad_mode(param, "adam_step")?;
    fused.adam_step(param.v(), grad.v(), exp_avg.v(), exp_avg_sq.v(), s)?;
    for t in [param, exp_avg, exp_avg_sq] {
        t.bump_version();
    }
    Ok(true)
}
