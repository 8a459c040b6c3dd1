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
    } else {
        // 0 for ±0 and for NaN, as PyTorch's sign
        T::zero()
    }
}

/// Python's floor division for floats, as PyTorch computes it (`c10::div_floor_floating`): from
/// `fmod`, so `inf // 1` is NaN and results round to the nearest integer quotient.
#[inline(always)]
pub(crate) fn floor_div<T: Real>(a: T, b: T) -> T {
    if b == T::zero() {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != T::zero() && (b < T::zero()) != (m < T::zero()) {
        div = div - T::one();
    }
    if div != T::zero() {
        let f = div.floor();
        if div - f > T::c(0.5) {
            f + T::one()
        } else {
            f
        }
    } else {
        if (a / b).is_sign_negative() {
            -T::zero()
        } else {
            T::zero()
        }
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
