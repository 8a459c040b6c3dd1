//! The hot optimizers' (SGD, Adam/AdamW) fused steps, one pass over memory per parameter instead of
//! a temporary tensor per arithmetic op, run by the parameter's backend
//! ([`ember_autograd::optim_kernels`]) when it offers fused kernels. Same arithmetic as the generic
//! tensor path, element by element, in the parameter's dtype; anything else falls back to it.

use crate::algorithms::{AdamOptions, SgdOptions};
use crate::optimizer::ParamState;
use ember_autograd::optim_kernels::{can_fuse, fused_adam_step, fused_sgd_step};
use ember_autograd::{AdamStep, Result, SgdStep, Tensor};

/// SGD with momentum/dampening/nesterov/weight decay in one pass; `Ok(false)` when not fused.
pub(crate) fn sgd(o: &SgdOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
    let mut s = SgdStep {
        lr: o.lr,
        weight_decay: o.weight_decay,
        momentum: o.momentum,
        dampening: o.dampening,
        nesterov: o.nesterov,
        maximize: o.maximize,
        first: false,
    };
    if !can_fuse(&[p, grad]) {
        return Ok(false);
    }
    if o.momentum == 0.0 {
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

/// Adam / AdamW (without AMSGrad) in one pass; `Ok(false)` when not fused.
pub(crate) fn adam(o: &AdamOptions, decoupled: bool, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
    if o.amsgrad || !can_fuse(&[p, grad]) {
        return Ok(false);
    }
    let m = st.buffer_or("exp_avg", || p.detach().zeros_like())?;
    let v = st.buffer_or("exp_avg_sq", || p.detach().zeros_like())?;
    let s = AdamStep {
        lr: o.lr,
        betas: o.betas,
        eps: o.eps,
        weight_decay: o.weight_decay,
        decoupled,
        maximize: o.maximize,
        step: st.step + 1,
    };
    if !fused_adam_step(p, grad, &m, &v, &s)? {
        return Ok(false);
    }
    st.step += 1;
    Ok(true)
}
