//! The hot optimizers' (SGD, Adam/AdamW) fused steps, one pass over memory per parameter instead of
//! a temporary tensor per arithmetic op, run by the parameter's backend
//! ([`ember_autograd::optim_kernels`]) when it offers fused kernels. Same arithmetic as the generic
//! tensor path, element by element, in the parameter's dtype; anything else falls back to it.

use crate::optimizer::ParamState;
use ember_autograd::optim_kernels::{can_fuse, fused_adam_step, fused_sgd_step};
use ember_autograd::{AdamStep, Result, SgdStep, Tensor};

/// SGD with momentum/dampening/nesterov/weight decay in one pass (`s.first` is set here from the
/// state); `Ok(false)` when not fused.
pub(crate) fn sgd(mut s: SgdStep, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
    if !can_fuse(&[p, grad]) {
        return Ok(false);
    }
    if s.momentum == 0.0 {
        if !fused_sgd_step(p, grad, None, &s)? {
            return Ok(false);
        }
        st.step += 1;
        return Ok(true);
    }
    s.first = st.buffer("momentum_buffer").is_none();
    let buf = st.buffer_or("momentum_buffer", || p.detach().zeros_like())?;
    if !fused_sgd_step(p, grad, Some(&buf), &s)? {
        return Ok(false);
    }
    st.step += 1;
    Ok(true)
}

/// Adam / AdamW (without AMSGrad) in one pass (`s.step` is set here from the state); `Ok(false)`
/// when not fused.
pub(crate) fn adam(mut s: AdamStep, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
    if !can_fuse(&[p, grad]) {
        return Ok(false);
    }
    let m = st.buffer_or("exp_avg", || p.detach().zeros_like())?;
    let v = st.buffer_or("exp_avg_sq", || p.detach().zeros_like())?;
    s.step = st.step + 1;
    if !fused_adam_step(p, grad, &m, &v, &s)? {
        return Ok(false);
    }
    st.step += 1;
    Ok(true)
}
