//! Fused optimizer steps (SGD, Adam/AdamW) in place: one pass over memory per parameter instead of a
//! temporary tensor per arithmetic op, in the parameter's dtype (f32 or f64), with the same
//! arithmetic as the composed tensor path, element by element.

use crate::buffer::CpuBuffer;
use crate::real::Real;
use ember_storage::{AdamStep, Error, HostData, Result, SgdStep, View};

/// The contiguous element range of a view, or an error naming the op.
fn range(v: View, op: &str) -> Result<(usize, usize)> {
    v.1.contiguous_range().ok_or_else(|| Error::invalid(op, "fused optimizer steps take contiguous tensors"))
}

/// The buffers of `views`, checked to be CPU buffers, pairwise distinct, of one size.
fn buffers<'a>(views: &[View<'a>], op: &str) -> Result<Vec<(&'a CpuBuffer, (usize, usize))>> {
    let mut out: Vec<(&CpuBuffer, (usize, usize))> = vec![];
    for v in views {
        let b = CpuBuffer::of(v.0, op)?;
        let r = range(*v, op)?;
        if out.iter().any(|(o, _)| std::ptr::eq(*o, b)) {
            return Err(Error::invalid(op, "fused optimizer steps take tensors with distinct storages"));
        }
        if let Some((_, (s, e))) = out.first() {
            if e - s != r.1 - r.0 {
                return Err(Error::shape(op, format!("tensors of {} and {} elements", e - s, r.1 - r.0)));
            }
        }
        out.push((b, r));
    }
    Ok(out)
}

/// Borrows `&mut [T]` (or `&[T]`) of one dtype from a guard, or reports the dtype.
macro_rules! slices {
    ($op:expr, $t:ident, $($g:ident [$r:expr]),*) => {
        ($(match &mut *$g {
            HostData::$t(v) => &mut v[$r.0..$r.1],
            other => return Err(Error::dtype($op, format!("expected {}, got {}", stringify!($t), other.dtype()))),
        },)*)
    };
}

fn sgd_loop<T: Real>(w: &mut [T], g: &[T], b: Option<&mut [T]>, s: &SgdStep) {
    let (lr, wd, mom, damp) = (T::c(s.lr), T::c(s.weight_decay), T::c(s.momentum), T::c(s.dampening));
    let grad = |w: T, g: T| if s.maximize { -g } else { g } + wd * w;
    match b {
        None => {
            for (w, &g) in w.iter_mut().zip(g) {
                let g = grad(*w, g);
                *w = *w - lr * g;
            }
        }
        Some(b) => {
            for ((w, &g), b) in w.iter_mut().zip(g).zip(b.iter_mut()) {
                let g = grad(*w, g);
                *b = if s.first { g } else { *b * mom + (T::one() - damp) * g };
                let d = if s.nesterov { g + mom * *b } else { *b };
                *w = *w - lr * d;
            }
        }
    }
}

fn adam_loop<T: Real>(w: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: &AdamStep) {
    let t = s.step as f64;
    let (b1, b2) = s.betas;
    let step_size = T::c(s.lr / (1.0 - b1.powf(t)));
    let bc2_sqrt = T::c((1.0 - b2.powf(t)).sqrt());
    let decay = if s.decoupled { T::c(1.0 - s.lr * s.weight_decay) } else { T::one() };
    let l2 = if s.decoupled { T::zero() } else { T::c(s.weight_decay) };
    let (b1, b2, eps) = (T::c(b1), T::c(b2), T::c(s.eps));
    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *w = *w * decay;
        let g = if s.maximize { -g } else { g } + l2 * *w;
        *m = *m + (g - *m) * (T::one() - b1);
        *v = *v * b2 + g * g * (T::one() - b2);
        let denom = v.sqrt() / bc2_sqrt + eps;
        *w = *w - step_size * (*m / denom);
    }
}

/// The CPU backend's fused SGD step.
pub(crate) fn sgd(param: View, grad: View, buf: Option<View>, s: &SgdStep) -> Result<()> {
    let op = "sgd_step";
    let mut views = vec![param, grad];
    views.extend(buf);
    let bs = buffers(&views, op)?;
    let (mut gw, gg) = (bs[0].0.write(), bs[1].0.read());
    let mut gb = bs.get(2).map(|(b, _)| b.write());
    let (rw, rg) = (bs[0].1, bs[1].1);
    macro_rules! run {
        ($t:ident) => {{
            let (w,) = slices!(op, $t, gw[rw]);
            let g = match &*gg {
                HostData::$t(v) => &v[rg.0..rg.1],
                other => return Err(Error::dtype(op, format!("gradient of dtype {}", other.dtype()))),
            };
            let b = match gb.as_mut() {
                Some(gb) => {
                    let gb: &mut HostData = &mut *gb;
                    let rb = bs[2].1;
                    let (b,) = slices!(op, $t, gb[rb]);
                    Some(b)
                }
                None => None,
            };
            sgd_loop(w, g, b, s);
        }};
    }
    match gw.dtype() {
        ember_storage::DType::F32 => run!(F32),
        ember_storage::DType::F64 => run!(F64),
        other => return Err(Error::dtype(op, format!("fused steps take f32 or f64, got {other}"))),
    }
    Ok(())
}

/// The CPU backend's fused Adam/AdamW step.
pub(crate) fn adam(param: View, grad: View, exp_avg: View, exp_avg_sq: View, s: &AdamStep) -> Result<()> {
    let op = "adam_step";
    let bs = buffers(&[param, grad, exp_avg, exp_avg_sq], op)?;
    let (mut gw, gg, mut gm, mut gv) = (bs[0].0.write(), bs[1].0.read(), bs[2].0.write(), bs[3].0.write());
    let (rw, rg, rm, rv) = (bs[0].1, bs[1].1, bs[2].1, bs[3].1);
    macro_rules! run {
        ($t:ident) => {{
            let (w, m, v) = slices!(op, $t, gw[rw], gm[rm], gv[rv]);
            let g = match &*gg {
                HostData::$t(x) => &x[rg.0..rg.1],
                other => return Err(Error::dtype(op, format!("gradient of dtype {}", other.dtype()))),
            };
            adam_loop(w, g, m, v, s);
        }};
    }
    match gw.dtype() {
        ember_storage::DType::F32 => run!(F32),
        ember_storage::DType::F64 => run!(F64),
        other => return Err(Error::dtype(op, format!("fused steps take f32 or f64, got {other}"))),
    }
    Ok(())
}
