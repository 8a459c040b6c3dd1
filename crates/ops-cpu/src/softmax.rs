//! Fused softmax / log-softmax over one line: max, then exp and sum, then scale (three passes, no
//! temporaries); contiguous lines take vectorised paths.

use crate::real::Real;

/// Writes softmax (or log-softmax) of the `o.len()` elements `x[s], x[s + st], ...` into `o`.
pub(crate) fn line<T: Real>(x: &[T], s: usize, st: usize, o: &mut [T], log: bool) {
    let n = o.len();
    if n == 0 {
        return;
    }
    let m = if st == 1 {
        crate::simd::max_slice(&x[s..s + n])
    } else {
        let mut m = T::neg_infinity();
        for i in 0..n {
            let v = x[s + i * st];
            if v.is_nan() {
                m = v;
                break;
            }
            if v > m {
                m = v;
            }
        }
        m
    };
    let sum = if st == 1 {
        T::exp_shift_sum(o, &x[s..s + n], m)
    } else {
        for (i, o) in o.iter_mut().enumerate() {
            *o = (x[s + i * st] - m).fast_exp();
        }
        T::sum_slice(o)
    };
    if log {
        let shift = m + T::c(sum.ln());
        for (i, o) in o.iter_mut().enumerate() {
            *o = x[s + i * st] - shift;
        }
    } else {
        let inv = T::c(1.0 / sum);
        crate::simd::scale_slice(o, inv);
    }
}
