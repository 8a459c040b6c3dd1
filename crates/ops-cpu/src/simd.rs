//! Vectorisable math: exp and tanh for f32 written as plain arithmetic (so LLVM can vectorise the
//! loops they sit in), and loop drivers compiled a second time for AVX2+FMA, chosen at run time.

/// e^x for f32: range reduction to r in [-ln2/2, ln2/2], Cephes' minimax polynomial, and 2^n applied
/// as two exponent-field factors so results down to the subnormals need no branch. Within 2 ulp of
/// the exact result; inf, 0 and NaN behave as `f32::exp`. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-104.0, 88.72);
    let n = (xc * LOG2E + 0.5).floor();
    let r = xc - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 0.166_666_65) * r
        + 0.5;
    let p = p * z + r + 1.0;
    // n is an integer in [-150, 128]: adding 1.5 * 2^23 puts it in the low mantissa bits, a
    // bit-exact conversion that vectorises (a saturating `as i32` does not).
    let ni = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let y = p * f32::from_bits(((n1 + 127) << 23) as u32) * f32::from_bits(((n2 + 127) << 23) as u32);
    let y = if x > 88.72 { f32::INFINITY } else { y };
    let y = if x < -104.0 { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// tanh for f32 as a clamped rational approximation (as in Eigen); a few ulp from exact.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    let xc = x.clamp(-7.905_311, 7.905_311);
    let x2 = xc * xc;
    let p = ((((((-2.760_768_5e-16 * x2 + 2.000_188e-13) * x2 - 8.604_672e-11) * x2 + 5.122_297e-8) * x2
        + 1.485_722_4e-5)
        * x2
        + 6.372_619_3e-4)
        * x2
        + 4.893_524_6e-3)
        * xc;
    let q = ((1.198_258_4e-6 * x2 + 1.185_347_1e-4) * x2 + 2.268_434_6e-3) * x2 + 4.893_525e-3;
    if x.abs() < 4e-4 {
        x
    } else {
        p / q
    }
}

/// True when the CPU has AVX-512F/VL as well as AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

/// Runs `f` compiled for AVX-512 or AVX2/FMA when the CPU has them, so the loops inlined into it
/// vectorise with the widest registers available. `f` must be inlined for this to take effect:
/// pass a closure that calls `#[inline(always)]` functions.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F/VL, AVX2 and FMA (checked by has_avx512).
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `o[i] = f(a[i])` over slices, vectorised for the best instruction set the CPU has.
#[inline(always)]
pub(crate) fn map_slice<T: Copy, U>(o: &mut [U], a: &[T], f: impl Fn(T) -> U) {
    #[inline(always)]
    fn plain<T: Copy, U>(o: &mut [U], a: &[T], f: impl Fn(T) -> U) {
        for (o, &a) in o.iter_mut().zip(a) {
            *o = f(a);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512<T: Copy, U>(o: &mut [U], a: &[T], f: impl Fn(T) -> U) {
            plain(o, a, f)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Copy, U>(o: &mut [U], a: &[T], f: impl Fn(T) -> U) {
            plain(o, a, f)
        }
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F/VL, AVX2 and FMA (checked by has_avx512).
            unsafe { avx512(o, a, f) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { avx2(o, a, f) };
            return;
        }
    }
    plain(o, a, f)
}

/// `o[i] = f(a[i], b[i])` over slices, vectorised like [`map_slice`].
#[inline(always)]
pub(crate) fn zip_slice<A: Copy, B: Copy, U>(o: &mut [U], a: &[A], b: &[B], f: impl Fn(A, B) -> U) {
    #[inline(always)]
    fn plain<A: Copy, B: Copy, U>(o: &mut [U], a: &[A], b: &[B], f: impl Fn(A, B) -> U) {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<A: Copy, B: Copy, U>(o: &mut [U], a: &[A], b: &[B], f: impl Fn(A, B) -> U) {
            plain(o, a, b, f)
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { avx2(o, a, b, f) };
            return;
        }
    }
    plain(o, a, b, f)
}

/// `o[i] = f(a[i], b[i], c[i])` over slices, vectorised like [`zip_slice`].
#[inline(always)]
pub(crate) fn zip3_slice<A: Copy, B: Copy, C: Copy, U>(
    o: &mut [U],
    a: &[A],
    b: &[B],
    c: &[C],
    f: impl Fn(A, B, C) -> U,
) {
    #[inline(always)]
    fn plain<A: Copy, B: Copy, C: Copy, U>(o: &mut [U], a: &[A], b: &[B], c: &[C], f: impl Fn(A, B, C) -> U) {
        for (((o, &a), &b), &c) in o.iter_mut().zip(a).zip(b).zip(c) {
            *o = f(a, b, c);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<A: Copy, B: Copy, C: Copy, U>(o: &mut [U], a: &[A], b: &[B], c: &[C], f: impl Fn(A, B, C) -> U) {
            plain(o, a, b, c, f)
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { avx2(o, a, b, c, f) };
            return;
        }
    }
    plain(o, a, b, c, f)
}

/// Largest element of a non-empty slice, or NaN if it holds one; vectorised.
#[inline(always)]
pub(crate) fn max_slice<T: num_traits::Float>(x: &[T]) -> T {
    #[inline(always)]
    fn plain<T: num_traits::Float>(x: &[T]) -> T {
        let mut lanes = [T::neg_infinity(); 16];
        let mut nan = false;
        let mut it = x.chunks_exact(16);
        for c in &mut it {
            for k in 0..16 {
                lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
                nan |= c[k].is_nan();
            }
        }
        for &v in it.remainder() {
            lanes[0] = if v > lanes[0] { v } else { lanes[0] };
            nan |= v.is_nan();
        }
        if nan {
            return T::nan();
        }
        lanes.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m })
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: num_traits::Float>(x: &[T]) -> T {
            plain(x)
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { avx2(x) };
        }
    }
    plain(x)
}

/// `o[i] = exp(x[i] - m)` and the sum of the `o[i]` (in f64 per 1024-element block), in one pass.
#[inline(always)]
pub(crate) fn exp_shift_sum_f32(o: &mut [f32], x: &[f32], m: f32) -> f64 {
    #[inline(always)]
    fn plain(o: &mut [f32], x: &[f32], m: f32) -> f64 {
        let mut total = 0f64;
        for (ob, xb) in o.chunks_mut(1024).zip(x.chunks(1024)) {
            let mut lanes = [0f32; 16];
            let mut oc = ob.chunks_exact_mut(16);
            let mut xc = xb.chunks_exact(16);
            for (o16, x16) in (&mut oc).zip(&mut xc) {
                for k in 0..16 {
                    let e = exp_f32(x16[k] - m);
                    o16[k] = e;
                    lanes[k] += e;
                }
            }
            let mut tail = 0f64;
            for (o1, &x1) in oc.into_remainder().iter_mut().zip(xc.remainder()) {
                *o1 = exp_f32(x1 - m);
                tail += *o1 as f64;
            }
            total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail;
        }
        total
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
        fn avx512(o: &mut [f32], x: &[f32], m: f32) -> f64 {
            plain(o, x, m)
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2(o: &mut [f32], x: &[f32], m: f32) -> f64 {
            plain(o, x, m)
        }
        if has_avx512() {
            // SAFETY: the CPU supports AVX-512F/VL, AVX2 and FMA (checked by has_avx512).
            return unsafe { avx512(o, x, m) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { avx2(o, x, m) };
        }
    }
    plain(o, x, m)
}

/// `o[i] *= k`, vectorised.
#[inline(always)]
pub(crate) fn scale_slice<T: Copy + std::ops::Mul<Output = T>>(o: &mut [T], k: T) {
    #[inline(always)]
    fn plain<T: Copy + std::ops::Mul<Output = T>>(o: &mut [T], k: T) {
        for v in o.iter_mut() {
            *v = *v * k;
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2<T: Copy + std::ops::Mul<Output = T>>(o: &mut [T], k: T) {
            plain(o, k)
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { avx2(o, k) };
            return;
        }
    }
    plain(o, k)
}

/// Sum of an f32 slice in 32 f32 lanes per 1024-element block, blocks accumulated in f64.
#[inline(always)]
pub(crate) fn sum_f32(x: &[f32]) -> f64 {
    #[inline(always)]
    fn plain(x: &[f32]) -> f64 {
        let mut total = 0f64;
        for block in x.chunks(1024) {
            let mut lanes = [0f32; 32];
            let mut it = block.chunks_exact(32);
            for c in &mut it {
                for k in 0..32 {
                    lanes[k] += c[k];
                }
            }
            let tail: f64 = it.remainder().iter().map(|&v| v as f64).sum();
            total += lanes.iter().map(|&v| v as f64).sum::<f64>() + tail;
        }
        total
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn avx2(x: &[f32]) -> f64 {
            plain(x)
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            return unsafe { avx2(x) };
        }
    }
    plain(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_accurate_everywhere() {
        let mut x = -110.0f32;
        while x < 90.0 {
            let (got, want) = (exp_f32(x), (x as f64).exp() as f32);
            assert!(ulps(got, want) <= 2 || (want - got).abs() <= f32::MIN_POSITIVE, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn tanh_is_accurate_everywhere() {
        let mut x = -12.0f32;
        while x < 12.0 {
            let (got, want) = (tanh_f32(x), (x as f64).tanh() as f32);
            assert!((got - want).abs() <= 4.0 * f32::EPSILON * want.abs().max(1e-3), "tanh({x}) = {got}, want {want}");
            x += 0.00731;
        }
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(1e-6), 1e-6);
    }
}
