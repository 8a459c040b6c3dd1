//! Scalar helpers that the op table's CPU closures call (`scalar::sigmoid(a)`, ...).

use crate::real::Real;
use ember_storage::Element;

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
pub(crate) fn sign<T: Real>(x: T) -> T {
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

/// Python's modulo (the result has the divisor's sign).
#[inline(always)]
pub(crate) fn py_rem<T: Real>(a: T, b: T) -> T {
    let r = a % b;
    if r != T::zero() && ((r < T::zero()) != (b < T::zero())) {
        r + b
    } else {
        r
    }
}

/// A value's truth in logical ops: non-zero (NaN included) is true.
#[inline(always)]
pub(crate) fn truthy<T: Element>(x: T) -> bool {
    x.to_f64() != 0.0
}
