//! Elementwise kernels: the scalar definition of every unary and binary op, for floats and integers.
//!
//! Each op is one closure in a `match`, so every (op, dtype) pair compiles to its own inlined loop.
//! f16/bf16 are computed in f32 by the caller (see `lib.rs`).

use crate::special;
use crate::strided::{map1, map2};
use ember_storage::{BinaryOp, Element, Error, Layout, Result, UnaryOp};
use num_traits::Float;

/// Float types with the special functions the op set needs.
pub(crate) trait Real: Float + Element + Send + Sync + Default + 'static {
    fn erf(self) -> Self;
    fn erfc(self) -> Self;
    fn erfinv(self) -> Self;
    fn lgamma(self) -> Self;
    fn digamma(self) -> Self;
    fn trigamma(self) -> Self;
    /// exp, vectorisable where the type allows.
    fn fast_exp(self) -> Self {
        self.exp()
    }
    /// tanh, vectorisable where the type allows.
    fn fast_tanh(self) -> Self {
        self.tanh()
    }
    /// `o[i] = exp(x[i] - m)`, returning the sum of `o` (one pass where the type allows).
    fn exp_shift_sum(o: &mut [Self], x: &[Self], m: Self) -> f64 {
        crate::simd::map_slice(o, x, |v| (v - m).fast_exp());
        Self::sum_slice(o)
    }
    /// Sum of a contiguous slice in f64, vectorised where the type allows.
    fn sum_slice(x: &[Self]) -> f64 {
        let mut lanes = [0f64; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for k in 0..8 {
                lanes[k] += Element::to_f64(c[k]);
            }
        }
        lanes.iter().sum::<f64>() + it.remainder().iter().map(|&v| Element::to_f64(v)).sum::<f64>()
    }
    fn c(v: f64) -> Self {
        <Self as Element>::from_f64(v)
    }
}

impl Real for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn erfc(self) -> Self {
        libm::erfc(self)
    }
    fn erfinv(self) -> Self {
        special::erfinv(self)
    }
    fn lgamma(self) -> Self {
        libm::lgamma(self)
    }
    fn digamma(self) -> Self {
        special::digamma(self)
    }
    fn trigamma(self) -> Self {
        special::trigamma(self)
    }
}

impl Real for f32 {
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn erfc(self) -> Self {
        libm::erfcf(self)
    }
    fn erfinv(self) -> Self {
        special::erfinv(self as f64) as f32
    }
    fn lgamma(self) -> Self {
        libm::lgammaf(self)
    }
    fn digamma(self) -> Self {
        special::digamma(self as f64) as f32
    }
    fn trigamma(self) -> Self {
        special::trigamma(self as f64) as f32
    }
    fn fast_exp(self) -> Self {
        crate::simd::exp_f32(self)
    }
    fn sum_slice(x: &[Self]) -> f64 {
        crate::simd::sum_f32(x)
    }
    fn exp_shift_sum(o: &mut [Self], x: &[Self], m: Self) -> f64 {
        crate::simd::exp_shift_sum_f32(o, x, m)
    }
    fn fast_tanh(self) -> Self {
        crate::simd::tanh_f32(self)
    }
}

/// The logistic function, computed from `exp(-|x|)` so it neither overflows nor loses precision.
#[inline(always)]
pub(crate) fn sigmoid<T: Real>(x: T) -> T {
    let e = (-x.abs()).fast_exp();
    let pos = T::one() / (T::one() + e);
    if x >= T::zero() {
        pos
    } else {
        e * pos
    }
}

#[inline(always)]
fn sign<T: Real>(x: T) -> T {
    if x > T::zero() {
        T::one()
    } else if x < T::zero() {
        -T::one()
    } else if x.is_nan() {
        x
    } else {
        T::zero()
    }
}

/// Applies a non-predicate unary op to a float view.
pub(crate) fn unary_float<T: Real>(op: UnaryOp, x: &[T], l: &Layout) -> Vec<T> {
    use UnaryOp::*;
    let half = T::c(0.5);
    match op {
        Neg => map1(x, l, |a| -a),
        Abs => map1(x, l, |a| a.abs()),
        Sign => map1(x, l, sign),
        Square => map1(x, l, |a| a * a),
        Exp => map1(x, l, |a| a.fast_exp()),
        Exp2 => map1(x, l, |a| a.exp2()),
        Expm1 => map1(x, l, |a| a.exp_m1()),
        Log => map1(x, l, |a| a.ln()),
        Log2 => map1(x, l, |a| a.log2()),
        Log10 => map1(x, l, |a| a.log10()),
        Log1p => map1(x, l, |a| a.ln_1p()),
        Sqrt => map1(x, l, |a| a.sqrt()),
        Rsqrt => map1(x, l, |a| a.sqrt().recip()),
        Reciprocal => map1(x, l, |a| a.recip()),
        Sin => map1(x, l, |a| a.sin()),
        Cos => map1(x, l, |a| a.cos()),
        Tan => map1(x, l, |a| a.tan()),
        Asin => map1(x, l, |a| a.asin()),
        Acos => map1(x, l, |a| a.acos()),
        Atan => map1(x, l, |a| a.atan()),
        Sinh => map1(x, l, |a| a.sinh()),
        Cosh => map1(x, l, |a| a.cosh()),
        Tanh => map1(x, l, |a| a.fast_tanh()),
        Asinh => map1(x, l, |a| a.asinh()),
        Acosh => map1(x, l, |a| a.acosh()),
        Atanh => map1(x, l, |a| a.atanh()),
        Sigmoid => map1(x, l, sigmoid),
        Relu => map1(x, l, |a| if a > T::zero() || a.is_nan() { a } else { T::zero() }),
        Silu => map1(x, l, |a| a * sigmoid(a)),
        Gelu => map1(x, l, |a| half * a * (T::one() + (a * T::c(std::f64::consts::FRAC_1_SQRT_2)).erf())),
        GeluTanh => map1(x, l, |a| {
            let k = T::c((2.0 / std::f64::consts::PI).sqrt());
            half * a * (T::one() + (k * (a + T::c(0.044715) * a * a * a)).tanh())
        }),
        Erf => map1(x, l, |a| a.erf()),
        Erfc => map1(x, l, |a| a.erfc()),
        Erfinv => map1(x, l, |a| a.erfinv()),
        Lgamma => map1(x, l, |a| a.lgamma()),
        Digamma => map1(x, l, |a| a.digamma()),
        Trigamma => map1(x, l, |a| a.trigamma()),
        Floor => map1(x, l, |a| a.floor()),
        Ceil => map1(x, l, |a| a.ceil()),
        Round => map1(x, l, |a| T::c(Element::to_f64(a).round_ties_even())),
        Trunc => map1(x, l, |a| a.trunc()),
        Frac => map1(x, l, |a| a - a.trunc()),
        IsNan | IsInf | IsFinite | LogicalNot => unreachable!("predicates go through unary_predicate"),
    }
}

/// Applies a predicate (isnan, isinf, isfinite, logical_not) to any view, through f64.
pub(crate) fn unary_predicate<T: Element + Sync>(op: UnaryOp, x: &[T], l: &Layout) -> Vec<bool> {
    match op {
        UnaryOp::IsNan => map1(x, l, |a| a.to_f64().is_nan()),
        UnaryOp::IsInf => map1(x, l, |a| a.to_f64().is_infinite()),
        UnaryOp::IsFinite => map1(x, l, |a| a.to_f64().is_finite()),
        _ => map1(x, l, |a| a.to_f64() == 0.0),
    }
}

/// Applies an integer-closed unary op through i64 (wrapping like PyTorch's integer arithmetic).
pub(crate) fn unary_int<T: Element + Sync>(op: UnaryOp, x: &[T], l: &Layout) -> Result<Vec<T>> {
    use UnaryOp::*;
    Ok(match op {
        Neg => map1(x, l, |a| T::from_i64(a.to_i64().wrapping_neg())),
        Abs => map1(x, l, |a| T::from_i64(a.to_i64().wrapping_abs())),
        Sign => map1(x, l, |a| T::from_i64(a.to_i64().signum())),
        Square => map1(x, l, |a| T::from_i64(a.to_i64().wrapping_mul(a.to_i64()))),
        Relu => map1(x, l, |a| T::from_i64(a.to_i64().max(0))),
        Floor | Ceil | Round | Trunc => map1(x, l, |a| a),
        _ => return Err(Error::dtype(op.name(), format!("not defined for integer dtype {}", T::DTYPE))),
    })
}

/// Python's modulo (result has the divisor's sign).
#[inline(always)]
fn py_rem<T: Real>(a: T, b: T) -> T {
    let r = a % b;
    if r != T::zero() && ((r < T::zero()) != (b < T::zero())) {
        r + b
    } else {
        r
    }
}

/// Applies a non-predicate binary op to two float views of one shape.
pub(crate) fn binary_float<T: Real>(op: BinaryOp, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    use BinaryOp::*;
    match op {
        Add => map2(a, la, b, lb, |x, y| x + y),
        Sub => map2(a, la, b, lb, |x, y| x - y),
        Mul => map2(a, la, b, lb, |x, y| x * y),
        Div => map2(a, la, b, lb, |x, y| x / y),
        Pow => map2(a, la, b, lb, |x, y| x.powf(y)),
        Maximum => map2(a, la, b, lb, |x, y| if x.is_nan() || y.is_nan() { T::nan() } else { x.max(y) }),
        Minimum => map2(a, la, b, lb, |x, y| if x.is_nan() || y.is_nan() { T::nan() } else { x.min(y) }),
        Fmax => map2(a, la, b, lb, |x, y| x.max(y)),
        Fmin => map2(a, la, b, lb, |x, y| x.min(y)),
        Atan2 => map2(a, la, b, lb, |x, y| x.atan2(y)),
        Remainder => map2(a, la, b, lb, py_rem),
        Fmod => map2(a, la, b, lb, |x, y| x % y),
        Copysign => map2(a, la, b, lb, |x, y| x.abs() * if y.is_sign_negative() { -T::one() } else { T::one() }),
        Hypot => map2(a, la, b, lb, |x, y| x.hypot(y)),
        FloorDivide => map2(a, la, b, lb, |x, y| (x / y).floor()),
        ThresholdBackward => map2(a, la, b, lb, |x, y| if y <= T::zero() { T::zero() } else { x }),
        _ => unreachable!("predicates go through binary_predicate"),
    }
}

/// Applies a comparison or logical op to two views of one dtype, through f64 (integers) or natively.
pub(crate) fn binary_predicate<T: Element + Sync>(
    op: BinaryOp,
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
) -> Vec<bool> {
    use BinaryOp::*;
    let nz = |x: T| x.to_f64() != 0.0;
    match op {
        Eq => map2(a, la, b, lb, |x, y| x == y),
        Ne => map2(a, la, b, lb, |x, y| x != y),
        Lt => map2(a, la, b, lb, |x, y| x < y),
        Le => map2(a, la, b, lb, |x, y| x <= y),
        Gt => map2(a, la, b, lb, |x, y| x > y),
        Ge => map2(a, la, b, lb, |x, y| x >= y),
        LogicalAnd => map2(a, la, b, lb, |x, y| nz(x) && nz(y)),
        LogicalOr => map2(a, la, b, lb, |x, y| nz(x) || nz(y)),
        LogicalXor => map2(a, la, b, lb, |x, y| nz(x) != nz(y)),
        _ => unreachable!("only predicates"),
    }
}

/// Applies a binary op to two integer (or bool) views through i64, wrapping like PyTorch.
pub(crate) fn binary_int<T: Element + Sync>(
    op: BinaryOp,
    a: &[T],
    la: &Layout,
    b: &[T],
    lb: &Layout,
) -> Result<Vec<T>> {
    use BinaryOp::*;
    let needs_nonzero = matches!(op, Remainder | Fmod | FloorDivide);
    if needs_nonzero && map2(b, lb, b, lb, |y, _| y.to_i64() == 0).into_iter().any(|z| z) {
        return Err(Error::invalid(op.name(), "integer division by zero"));
    }
    let f = |g: fn(i64, i64) -> i64| map2(a, la, b, lb, move |x: T, y: T| T::from_i64(g(x.to_i64(), y.to_i64())));
    Ok(match op {
        Add => f(|x, y| x.wrapping_add(y)),
        Sub => f(|x, y| x.wrapping_sub(y)),
        Mul => f(|x, y| x.wrapping_mul(y)),
        Pow => f(|x, y| {
            if y < 0 {
                match x {
                    1 => 1,
                    -1 => {
                        if y % 2 == 0 {
                            1
                        } else {
                            -1
                        }
                    }
                    _ => 0,
                }
            } else {
                x.wrapping_pow(y.min(u32::MAX as i64) as u32)
            }
        }),
        Maximum | Fmax => f(|x, y| x.max(y)),
        ThresholdBackward => f(|x, y| if y <= 0 { 0 } else { x }),
        Minimum | Fmin => f(|x, y| x.min(y)),
        // wrapping: i64::MIN by -1 gives i64::MIN and 0 as in PyTorch, instead of an overflow panic
        Remainder => f(|x, y| x.wrapping_rem_euclid(y) + if y < 0 && x.wrapping_rem_euclid(y) != 0 { y } else { 0 }),
        Fmod => f(|x, y| x.wrapping_rem(y)),
        FloorDivide => {
            f(|x, y| x.wrapping_div_euclid(y).wrapping_sub(if y < 0 && x.wrapping_rem_euclid(y) != 0 { 1 } else { 0 }))
        }
        Div | Atan2 | Copysign | Hypot => {
            return Err(Error::dtype(op.name(), format!("needs floating inputs, got {}", T::DTYPE)))
        }
        _ => unreachable!("predicates go through binary_predicate"),
    })
}
