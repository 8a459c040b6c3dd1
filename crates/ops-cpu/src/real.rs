//! The float element types of the kernels (`f32`, `f64`) and the special functions they need.

use crate::special;
use ember_storage::Element;
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
