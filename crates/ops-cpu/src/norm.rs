//! Batch normalisation kernels over dense `[N, C, L]` data (channel dim 1, `L` the product of the
//! remaining dims): per-channel statistics, backward's per-channel reductions, and the per-channel
//! affine combination both directions end with. Channels run in parallel; within a channel the
//! order of the sums is fixed, so results do not depend on the thread count.

use crate::real::Real;
use crate::threading::{par_threshold, pool};
use ember_storage::Element;
use rayon::prelude::*;

/// `[N, C, L]` sizes of a dense `[N, C, *]` tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planes {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) l: usize,
}

impl Planes {
    /// The `[N, C, L]` reading of `shape` (at least 2 dims).
    pub(crate) fn of(shape: &[usize]) -> Planes {
        Planes { n: shape[0], c: shape[1], l: shape[2..].iter().product() }
    }
    fn numel(&self) -> usize {
        self.n * self.c * self.l
    }
    /// The `L` elements of sample `i`, channel `ch`.
    #[inline(always)]
    fn plane<'a, T>(&self, x: &'a [T], i: usize, ch: usize) -> &'a [T] {
        let at = (i * self.c + ch) * self.l;
        &x[at..at + self.l]
    }
}

const LANES: usize = 16;

/// `sum(f(a[i]))` in `LANES` independent accumulators of `T` (so it vectorises), returned in f64.
#[inline(always)]
fn sum_map<T: Real>(a: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut lanes = [T::zero(); LANES];
    let mut it = a.chunks_exact(LANES);
    for c in &mut it {
        for k in 0..LANES {
            lanes[k] = lanes[k] + f(c[k]);
        }
    }
    let tail: f64 = it.remainder().iter().map(|&v| Element::to_f64(f(v))).sum();
    lanes.iter().map(|&v| Element::to_f64(v)).sum::<f64>() + tail
}

/// `sum(f(a[i], b[i]))` like [`sum_map`].
#[inline(always)]
fn sum_zip<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    let mut lanes = [T::zero(); LANES];
    let (mut ia, mut ib) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for k in 0..LANES {
            lanes[k] = lanes[k] + f(ca[k], cb[k]);
        }
    }
    let tail: f64 = ia.remainder().iter().zip(ib.remainder()).map(|(&x, &y)| Element::to_f64(f(x, y))).sum();
    lanes.iter().map(|&v| Element::to_f64(v)).sum::<f64>() + tail
}

/// Runs `per_channel` for every channel (in parallel when the data is large) and collects the
/// pairs it returns into two `[C]` vectors.
fn per_channel<T: Real>(p: Planes, per_channel: impl Fn(usize) -> (f64, f64) + Sync) -> (Vec<T>, Vec<T>) {
    let run = |ch: usize| {
        let (a, b) = per_channel(ch);
        (<T as Element>::from_f64(a), <T as Element>::from_f64(b))
    };
    if p.numel() >= par_threshold() && p.c > 1 {
        pool().install(|| (0..p.c).into_par_iter().map(run).unzip())
    } else {
        (0..p.c).map(run).unzip()
    }
}

/// Per channel, the mean and the biased variance (two passes: the mean, then squared deviations
/// from it, so a large mean costs no precision).
pub(crate) fn stats<T: Real>(x: &[T], p: Planes) -> (Vec<T>, Vec<T>) {
    let count = (p.n * p.l).max(1) as f64;
    per_channel(p, |ch| {
        #[inline(always)]
        fn go<T: Real>(x: &[T], p: Planes, ch: usize, count: f64) -> (f64, f64) {
            let mean = (0..p.n).map(|i| sum_map(p.plane(x, i, ch), |v| v)).sum::<f64>() / count;
            let m = <T as Element>::from_f64(mean);
            let ss = (0..p.n).map(|i| sum_map(p.plane(x, i, ch), |v| (v - m) * (v - m))).sum::<f64>();
            (mean, ss / count)
        }
        crate::simd::vectorised(|| go(x, p, ch, count))
    })
}

/// Per channel, `sum(g)` and `sum(g * (x - mean[c]))`.
pub(crate) fn backward_reduce<T: Real>(g: &[T], x: &[T], mean: &[T], p: Planes) -> (Vec<T>, Vec<T>) {
    per_channel(p, |ch| {
        #[inline(always)]
        fn go<T: Real>(g: &[T], x: &[T], m: T, p: Planes, ch: usize) -> (f64, f64) {
            let sg = (0..p.n).map(|i| sum_map(p.plane(g, i, ch), |v| v)).sum::<f64>();
            let sgx = (0..p.n).map(|i| sum_zip(p.plane(g, i, ch), p.plane(x, i, ch), |gv, xv| gv * (xv - m))).sum();
            (sg, sgx)
        }
        crate::simd::vectorised(|| go(g, x, mean[ch], p, ch))
    })
}

/// `x * a[c] + y * b[c] + k[c]` (without `y`: `x * a[c] + k[c]`), samples in parallel.
pub(crate) fn affine<T: Real>(x: &[T], a: &[T], y: Option<(&[T], &[T])>, k: &[T], p: Planes) -> Vec<T> {
    let mut out: Vec<T> = crate::pool::take(p.numel());
    let sample = |(i, o): (usize, &mut [T])| {
        for ch in 0..p.c {
            let dst = &mut o[ch * p.l..(ch + 1) * p.l];
            let xs = p.plane(x, i, ch);
            let (ac, kc) = (a[ch], k[ch]);
            match y {
                None => crate::simd::map_slice(dst, xs, |v| v * ac + kc),
                Some((y, b)) => {
                    let bc = b[ch];
                    crate::simd::zip_slice(dst, xs, p.plane(y, i, ch), |v, w| v * ac + w * bc + kc)
                }
            }
        }
    };
    let row = (p.c * p.l).max(1);
    if p.numel() >= par_threshold() && p.n > 1 {
        pool().install(|| out.par_chunks_mut(row).enumerate().for_each(sample));
    } else {
        out.chunks_mut(row).enumerate().for_each(sample);
    }
    out
}

/// The backend entry points: dtype dispatch, locking, dense copies of strided views.
pub(crate) mod entry {
    use super::{affine, backward_reduce, stats, Planes, Real};
    use crate::host::{buf, checked, with2};
    use crate::operands::{float_dtype, typed};
    use crate::strided::{gather, with_dense};
    use ember_storage::{Buffer, DType, Error, HostData, HostElement, Result, View};

    fn check_nc(op: &str, v: View) -> Result<Planes> {
        if v.1.ndim() < 2 {
            return Err(Error::shape(op, format!("expects [N, C, ...], got {:?}", v.1.shape())));
        }
        Ok(Planes::of(v.1.shape()))
    }

    /// A small per-channel `[C]` view copied out (its lock is released before any other is taken).
    fn channel_operand<T: Real + HostElement>(op: &str, v: View, c: usize) -> Result<Vec<T>> {
        if v.1.shape() != [c] {
            return Err(Error::shape(op, format!("per-channel operand should be [{c}], got {:?}", v.1.shape())));
        }
        let b = checked(v, op)?;
        let data = b.read();
        let s = T::slice(&data)
            .ok_or_else(|| Error::dtype(op, format!("operands should share one dtype, got {}", data.dtype())))?;
        Ok(gather(s, v.1, |t| t))
    }

    fn same_shape(op: &str, a: View, b: View) -> Result<()> {
        if a.1.shape() != b.1.shape() {
            return Err(Error::shape(op, format!("shapes {:?} and {:?} differ", a.1.shape(), b.1.shape())));
        }
        Ok(())
    }

    pub(crate) fn batch_norm_stats(x: View) -> Result<(Buffer, Buffer)> {
        const OP: &str = "batch_norm_stats";
        let p = check_nc(OP, x)?;
        fn go<T: Real + HostElement>(x: View, p: Planes) -> Result<(Buffer, Buffer)> {
            let data = checked(x, OP)?.read();
            let (m, v) = with_dense(typed::<T>(OP, &data)?, x.1, |d| stats(d, p));
            Ok((buf(HostData::from_vec(m)), buf(HostData::from_vec(v))))
        }
        match float_dtype(OP, x)? {
            DType::F32 => go::<f32>(x, p),
            _ => go::<f64>(x, p),
        }
    }

    pub(crate) fn batch_norm_backward_reduce(g: View, x: View, mean: View) -> Result<(Buffer, Buffer)> {
        const OP: &str = "batch_norm_backward_reduce";
        let p = check_nc(OP, x)?;
        same_shape(OP, g, x)?;
        fn go<T: Real + HostElement>(g: View, x: View, mean: View, p: Planes) -> Result<(Buffer, Buffer)> {
            let m = channel_operand::<T>(OP, mean, p.c)?;
            let (bg, bx) = (checked(g, OP)?, checked(x, OP)?);
            let (s, sx) = with2(bg, bx, |dg, dx| -> Result<_> {
                let (gs, xs) = (typed::<T>(OP, dg)?, typed::<T>(OP, dx)?);
                Ok(with_dense(gs, g.1, |gd| with_dense(xs, x.1, |xd| backward_reduce(gd, xd, &m, p))))
            })?;
            Ok((buf(HostData::from_vec(s)), buf(HostData::from_vec(sx))))
        }
        match float_dtype(OP, x)? {
            DType::F32 => go::<f32>(g, x, mean, p),
            _ => go::<f64>(g, x, mean, p),
        }
    }

    pub(crate) fn channel_affine(x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer> {
        const OP: &str = "channel_affine";
        let p = check_nc(OP, x)?;
        if let Some((yv, _)) = y {
            same_shape(OP, x, yv)?;
        }
        fn go<T: Real + HostElement>(x: View, a: View, y: Option<(View, View)>, k: View, p: Planes) -> Result<Buffer> {
            let (a, k) = (channel_operand::<T>(OP, a, p.c)?, channel_operand::<T>(OP, k, p.c)?);
            let bx = checked(x, OP)?;
            let out = match y {
                None => {
                    let dx = bx.read();
                    with_dense(typed::<T>(OP, &dx)?, x.1, |xd| affine(xd, &a, None, &k, p))
                }
                Some((yv, b)) => {
                    let b = channel_operand::<T>(OP, b, p.c)?;
                    with2(bx, checked(yv, OP)?, |dx, dy| -> Result<_> {
                        let (xs, ys) = (typed::<T>(OP, dx)?, typed::<T>(OP, dy)?);
                        Ok(with_dense(xs, x.1, |xd| with_dense(ys, yv.1, |yd| affine(xd, &a, Some((yd, &b)), &k, p))))
                    })?
                }
            };
            Ok(buf(HostData::from_vec(out)))
        }
        match float_dtype(OP, x)? {
            DType::F32 => go::<f32>(x, a, y, k, p),
            _ => go::<f64>(x, a, y, k, p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 + 1) * 2654435761 + seed) % 1000) as f64 / 100.0 - 3.0).collect()
    }

    /// Statistics and reductions agree with their definitions, summed naively in f64.
    #[test]
    fn match_the_definitions() {
        let p = Planes { n: 3, c: 4, l: 37 };
        let (x, g) = (data(p.numel(), 1), data(p.numel(), 7));
        let at = |i: usize, ch: usize, j: usize| (i * p.c + ch) * p.l + j;
        let (mean, var) = stats(&x, p);
        let (sg, sgx) = backward_reduce(&g, &x, &mean, p);
        let m = (p.n * p.l) as f64;
        for ch in 0..p.c {
            let all = || (0..p.n).flat_map(move |i| (0..p.l).map(move |j| at(i, ch, j)));
            let mu = all().map(|k| x[k]).sum::<f64>() / m;
            let v = all().map(|k| (x[k] - mu).powi(2)).sum::<f64>() / m;
            assert!((mean[ch] - mu).abs() < 1e-12 && (var[ch] - v).abs() < 1e-12);
            assert!((sg[ch] - all().map(|k| g[k]).sum::<f64>()).abs() < 1e-9);
            assert!((sgx[ch] - all().map(|k| g[k] * (x[k] - mu)).sum::<f64>()).abs() < 1e-9);
        }
        let (a, b, k) = (vec![1.5, -2.0, 0.5, 3.0], vec![0.25, 1.0, -1.0, 2.0], vec![0.1, 0.2, 0.3, 0.4]);
        let one = affine(&x, &a, None, &k, p);
        let two = affine(&g, &a, Some((&x, &b)), &k, p);
        for i in 0..p.n {
            for ch in 0..p.c {
                for j in 0..p.l {
                    let q = at(i, ch, j);
                    assert_eq!(one[q], x[q] * a[ch] + k[ch]);
                    assert!((two[q] - (g[q] * a[ch] + x[q] * b[ch] + k[ch])).abs() < 1e-12);
                }
            }
        }
    }
}
