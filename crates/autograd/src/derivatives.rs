//! Backward formulas of the elementwise primitives, one arm per op (PyTorch's `derivatives.yaml`).
//! Written with Tensor ops, so they are differentiable themselves.

use crate::Tensor;
use ember_storage::{BinaryOp, Error, Result, UnaryOp};
use std::f64::consts::{LN_10, LN_2, PI};

/// Sums a broadcast gradient back to `shape`.
pub(crate) fn sum_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let lead = g.ndim() - shape.len();
    let mut dims: Vec<isize> = (0..lead as isize).collect();
    for (i, &s) in shape.iter().enumerate() {
        if s == 1 && g.shape()[lead + i] != 1 {
            dims.push((lead + i) as isize);
        }
    }
    let r = if dims.is_empty() { g.clone() } else { g.sum_dim(&dims, true)? };
    r.reshape(&shape.iter().map(|&s| s as isize).collect::<Vec<_>>())
}

/// True when the backward of `op` reads its output (so modifying the output in place must make
/// backward fail rather than silently use the new values).
pub(crate) fn uses_output(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, Exp | Exp2 | Expm1 | Sqrt | Rsqrt | Reciprocal | Tan | Tanh | Sigmoid | Erfinv)
}

/// d(op(x))/dx * g, given the input `x` and the output `y`.
pub(crate) fn unary(op: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
    use UnaryOp::*;
    let zero = || g.zeros_like();
    Ok(Some(match op {
        Neg => g.neg()?,
        Abs => g.mul(&x.sign()?)?,
        Sign | Floor | Ceil | Round | Trunc => zero()?,
        Square => g.mul(&x.mul(2.0)?)?,
        Frac => g.clone(),
        Exp => g.mul(y)?,
        Exp2 => g.mul(&y.mul(LN_2)?)?,
        Expm1 => g.mul(&y.add(1.0)?)?,
        Log => g.div(x)?,
        Log2 => g.div(&x.mul(LN_2)?)?,
        Log10 => g.div(&x.mul(LN_10)?)?,
        Log1p => g.div(&x.add(1.0)?)?,
        Sqrt => g.div(&y.mul(2.0)?)?,
        Rsqrt => g.mul(&y.pow(3.0)?.mul(-0.5)?)?,
        Reciprocal => g.mul(&y.mul(y)?.neg()?)?,
        Sin => g.mul(&x.cos()?)?,
        Cos => g.mul(&x.sin()?.neg()?)?,
        Tan => g.mul(&y.mul(y)?.add(1.0)?)?,
        Asin => g.div(&x.mul(x)?.neg()?.add(1.0)?.sqrt()?)?,
        Acos => g.div(&x.mul(x)?.neg()?.add(1.0)?.sqrt()?)?.neg()?,
        Atan => g.div(&x.mul(x)?.add(1.0)?)?,
        Sinh => g.mul(&x.cosh()?)?,
        Cosh => g.mul(&x.sinh()?)?,
        Tanh => g.mul(&y.mul(y)?.neg()?.add(1.0)?)?,
        Asinh => g.div(&x.mul(x)?.add(1.0)?.sqrt()?)?,
        Acosh => g.div(&x.mul(x)?.sub(1.0)?.sqrt()?)?,
        Atanh => g.div(&x.mul(x)?.neg()?.add(1.0)?)?,
        Sigmoid => g.mul(&y.mul(&y.neg()?.add(1.0)?)?)?,
        Relu => g.binary(BinaryOp::ThresholdBackward, x)?,
        Silu => {
            let s = x.sigmoid()?;
            g.mul(&s.mul(&x.mul(&s.neg()?.add(1.0)?)?.add(1.0)?)?)?
        }
        Gelu => {
            let cdf = x.mul(std::f64::consts::FRAC_1_SQRT_2)?.erf()?.add(1.0)?.mul(0.5)?;
            let pdf = x.mul(x)?.mul(-0.5)?.exp()?.mul(1.0 / (2.0 * PI).sqrt())?;
            g.mul(&cdf.add(&x.mul(&pdf)?)?)?
        }
        GeluTanh => {
            let k = (2.0 / PI).sqrt();
            let x2 = x.mul(x)?;
            let t = x.add(&x2.mul(x)?.mul(0.044715)?)?.mul(k)?.tanh()?;
            let left = t.add(1.0)?.mul(0.5)?;
            let right =
                x.mul(0.5)?.mul(&t.mul(&t)?.neg()?.add(1.0)?)?.mul(&x2.mul(3.0 * 0.044715)?.add(1.0)?.mul(k)?)?;
            g.mul(&left.add(&right)?)?
        }
        Erf => g.mul(&x.mul(x)?.neg()?.exp()?.mul(2.0 / PI.sqrt())?)?,
        Erfc => g.mul(&x.mul(x)?.neg()?.exp()?.mul(-2.0 / PI.sqrt())?)?,
        Erfinv => g.mul(&y.mul(y)?.exp()?.mul(PI.sqrt() / 2.0)?)?,
        Lgamma => g.mul(&x.digamma()?)?,
        Digamma => g.mul(&x.trigamma()?)?,
        Trigamma => return Err(Error::unsupported("trigamma backward", "polygamma(2, x) is not implemented yet")),
        IsNan | IsInf | IsFinite | LogicalNot => return Ok(None),
    }))
}

/// (d/da, d/db) of `op(a, b)` times `g`, before summing back over broadcast dims.
pub(crate) fn binary(
    op: BinaryOp,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
    g: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    use BinaryOp::*;
    Ok(match op {
        Add => (Some(g.clone()), Some(g.clone())),
        Sub => (Some(g.clone()), Some(g.neg()?)),
        Mul => (Some(g.mul(b)?), Some(g.mul(a)?)),
        Div => (Some(g.div(b)?), Some(g.mul(&a.div(&b.mul(b)?)?)?.neg()?)),
        Pow => {
            let ga = g.mul(&b.mul(&a.pow(&b.sub(1.0)?)?)?)?;
            // d/db = out * log(a); PyTorch defines it as 0 where a == 0 and b >= 0
            let gb = g.mul(&out.mul(&a.log()?)?)?;
            let gb = Tensor::where_cond(&a.eq(0.0)?.logical_and(&b.ge(0.0)?)?, 0.0, &gb)?;
            (Some(ga), Some(gb))
        }
        Maximum | Minimum | Fmax | Fmin => {
            let first = if matches!(op, Maximum | Fmax) { a.gt(b)? } else { a.lt(b)? };
            let tie = a.eq(b)?;
            let dt = g.dtype();
            let wa = first.to_dtype(dt)?.add(&tie.to_dtype(dt)?.mul(0.5)?)?;
            let wb = wa.neg()?.add(1.0)?;
            (Some(g.mul(&wa)?), Some(g.mul(&wb)?))
        }
        Atan2 => {
            let d = a.mul(a)?.add(&b.mul(b)?)?;
            (Some(g.mul(b)?.div(&d)?), Some(g.mul(a)?.div(&d)?.neg()?))
        }
        Remainder => (Some(g.clone()), Some(g.mul(&a.div(b)?.floor()?)?.neg()?)),
        Fmod => (Some(g.clone()), Some(g.mul(&a.div(b)?.trunc()?)?.neg()?)),
        Copysign => {
            let s = Tensor::where_cond(&a.eq(0.0)?, 0.0, &out.div(a)?)?;
            (Some(g.mul(&s)?), Some(g.zeros_like()?))
        }
        Hypot => (Some(g.mul(a)?.div(out)?), Some(g.mul(b)?.div(out)?)),
        FloorDivide => (Some(g.zeros_like()?), Some(g.zeros_like()?)),
        ThresholdBackward => (Some(g.binary(ThresholdBackward, b)?), Some(g.zeros_like()?)),
        Eq | Ne | Lt | Le | Gt | Ge | LogicalAnd | LogicalOr | LogicalXor => (None, None),
    })
}
