//! Fused host loops for the hot optimizers (SGD, Adam/AdamW) on dense f32 CPU tensors: one pass
//! over memory per parameter instead of a temporary tensor per arithmetic op. Same arithmetic as
//! the generic tensor path, element by element; anything else falls back to it.

use crate::algorithms::{AdamOptions, SgdOptions};
use crate::optimizer::ParamState;
use ember_autograd::{DType, Device, Result, Tensor};

/// Whether the tensors are dense f32 CPU tensors of equal size with pairwise distinct storages.
fn eligible(ts: &[&Tensor]) -> bool {
    let n = ts[0].numel();
    ts.iter().all(|t| t.dtype() == DType::F32 && t.device() == Device::Cpu && t.is_contiguous() && t.numel() == n)
        && ts.iter().enumerate().all(|(i, a)| ts[i + 1..].iter().all(|b| !a.shares_storage(b)))
}

/// SGD with momentum/dampening/nesterov/weight decay in one loop.
pub(crate) fn sgd(o: &SgdOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
    if !eligible(&[p, grad]) {
        return Ok(false);
    }
    let (lr, wd, mom, damp, nest, max) =
        (o.lr as f32, o.weight_decay as f32, o.momentum as f32, o.dampening as f32, o.nesterov, o.maximize);
    if mom == 0.0 {
        grad.with_slice(|g: &[f32]| {
            p.with_slice_mut(|w: &mut [f32]| {
                for (w, &g) in w.iter_mut().zip(g) {
                    let g = if max { -g } else { g } + wd * *w;
                    *w -= lr * g;
                }
            })
        })??;
        st.step += 1;
        return Ok(true);
    }
    let first = st.buffer("momentum_buffer").is_none();
    let buf = st.buffer_or("momentum_buffer", || p.detach().zeros_like())?;
    if !eligible(&[p, grad, &buf]) {
        return Ok(false);
    }
    grad.with_slice(|g: &[f32]| {
        p.with_slice_mut(|w: &mut [f32]| {
            buf.with_slice_mut(|b: &mut [f32]| {
                for ((w, &g), b) in w.iter_mut().zip(g).zip(b.iter_mut()) {
                    let g = if max { -g } else { g } + wd * *w;
                    *b = if first { g } else { *b * mom + (1.0 - damp) * g };
                    let d = if nest { g + mom * *b } else { *b };
                    *w -= lr * d;
                }
            })
        })
    })???;
    st.step += 1;
    Ok(true)
}

/// Adam / AdamW (with AMSGrad) in one loop.
pub(crate) fn adam(o: &AdamOptions, decoupled: bool, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
    if o.amsgrad || !eligible(&[p, grad]) {
        return Ok(false);
    }
    let m = st.buffer_or("exp_avg", || p.detach().zeros_like())?;
    let v = st.buffer_or("exp_avg_sq", || p.detach().zeros_like())?;
    if !eligible(&[p, grad, &m, &v]) {
        return Ok(false);
    }
    st.step += 1;
    let t = st.step as f64;
    let (b1, b2) = o.betas;
    let step_size = (o.lr / (1.0 - b1.powf(t))) as f32;
    let bc2_sqrt = (1.0 - b2.powf(t)).sqrt() as f32;
    let decay = if decoupled { (1.0 - o.lr * o.weight_decay) as f32 } else { 1.0 };
    let l2 = if decoupled { 0.0 } else { o.weight_decay as f32 };
    let (b1, b2, eps, max) = (b1 as f32, b2 as f32, o.eps as f32, o.maximize);
    grad.with_slice(|g: &[f32]| {
        p.with_slice_mut(|w: &mut [f32]| {
            m.with_slice_mut(|m: &mut [f32]| {
                v.with_slice_mut(|v: &mut [f32]| {
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        *w *= decay;
                        let g = if max { -g } else { g } + l2 * *w;
                        *m += (g - *m) * (1.0 - b1);
                        *v = *v * b2 + g * g * (1.0 - b2);
                        let denom = v.sqrt() / bc2_sqrt + eps;
                        *w -= step_size * (*m / denom);
                    }
                })
            })
        })
    })????;
    Ok(true)
}
