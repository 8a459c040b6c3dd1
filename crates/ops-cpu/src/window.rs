//! im2col / col2im for N-d sliding windows: the building blocks of convolution, pooling, unfold and fold.

use crate::index::for_each_index;
use crate::threading::pool;
use ember_storage::WindowGeometry;
use rayon::prelude::*;

/// For kernel position `kk` and output position `p`, the flat input index, or `None` in the padding.
/// The sum col2im folds with: float addition, and wrapping addition for integers (as PyTorch's
/// integer arithmetic; a plain `+` would panic on overflow in debug builds).
pub(crate) trait Accumulate: Copy {
    /// `self + v`.
    fn accumulate(self, v: Self) -> Self;
}
impl Accumulate for f32 {
    fn accumulate(self, v: Self) -> Self {
        self + v
    }
}
impl Accumulate for f64 {
    fn accumulate(self, v: Self) -> Self {
        self + v
    }
}
impl Accumulate for i64 {
    fn accumulate(self, v: Self) -> Self {
        self.wrapping_add(v)
    }
}

#[inline]
fn source(g: &WindowGeometry, kk: &[usize], p: &[usize]) -> Option<usize> {
    let mut flat = 0usize;
    for d in 0..g.input.len() {
        let pos = (p[d] * g.stride[d] + kk[d] * g.dilation[d]) as isize - g.padding[d] as isize;
        if pos < 0 || pos as usize >= g.input[d] {
            return None;
        }
        flat = flat * g.input[d] + pos as usize;
    }
    Some(flat)
}

/// A 2-d window's tables: per kernel row `ki` and output row `oy` the input row (or `None` in the
/// padding), and per kernel column `kj` the output columns `[lo, hi)` whose input column is in
/// bounds with the input column of `lo`. Built once per call: computed per plane, their integer
/// divisions cost more than the copies of a small image (a 128-channel 4x4 -> 1x1 layer spent 80%
/// of its time there).
pub(crate) struct Rows2d {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    rows: Vec<Option<usize>>,
    cols: Vec<(usize, usize, usize)>,
}

impl Rows2d {
    /// The tables of a 2-d geometry and its output size.
    pub(crate) fn new(g: &WindowGeometry, out_sp: &[usize]) -> Self {
        let (h, w, oh, ow) = (g.input[0], g.input[1], out_sp[0], out_sp[1]);
        let mut rows = Vec::with_capacity(g.kernel[0] * oh);
        for ki in 0..g.kernel[0] {
            for oy in 0..oh {
                let y = (oy * g.stride[0] + ki * g.dilation[0]) as isize - g.padding[0] as isize;
                rows.push((y >= 0 && (y as usize) < h).then_some(y as usize));
            }
        }
        let cols = (0..g.kernel[1])
            .map(|kj| {
                let (s, off) = (g.stride[1] as isize, (kj * g.dilation[1]) as isize - g.padding[1] as isize);
                // ox*s + off >= 0  and  ox*s + off < w
                let lo = if off >= 0 { 0 } else { ((-off + s - 1) / s) as usize };
                let hi = if (w as isize) - off <= 0 { 0 } else { (((w as isize - off) + s - 1) / s) as usize };
                let (lo, hi) = (lo.min(ow), hi.min(ow).max(lo.min(ow)));
                // the input column of `lo` (0 when the range is empty, so callers' empty slices stay in bounds)
                (lo, hi, if hi > lo { (lo as isize * s + off) as usize } else { 0 })
            })
            .collect();
        Rows2d { h, w, oh, ow, rows, cols }
    }
    #[inline]
    fn src_row(&self, oy: usize, ki: usize) -> Option<usize> {
        self.rows[ki * self.oh + oy]
    }
    #[inline]
    fn col_range(&self, kj: usize) -> (usize, usize, usize) {
        self.cols[kj]
    }
}

/// 2-d im2col of one `[H, W]` plane into `K` rows of `L` values, row `i` at `o[i * ld..]`
/// (`ld >= L`; `ld = L` is a dense `[K, L]`): contiguous copies for stride 1.
fn im2col_plane_2d<T: Copy>(xp: &[T], o: &mut [T], ld: usize, g: &WindowGeometry, r: &Rows2d, pad: T) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let l = r.oh * r.ow;
    let sx = g.stride[1];
    for ki in 0..kh {
        for kj in 0..kw {
            let row = &mut o[(ki * kw + kj) * ld..(ki * kw + kj) * ld + l];
            let (lo, hi, x0) = r.col_range(kj);
            for oy in 0..r.oh {
                let dst = &mut row[oy * r.ow..(oy + 1) * r.ow];
                match r.src_row(oy, ki) {
                    None => dst.fill(pad),
                    Some(y) => {
                        dst[..lo].fill(pad);
                        dst[hi..].fill(pad);
                        let src = &xp[y * r.w..(y + 1) * r.w];
                        if sx == 1 && hi - lo >= 16 {
                            dst[lo..hi].copy_from_slice(&src[x0..x0 + (hi - lo)]);
                        } else if sx == 1 {
                            // short rows (small images): a plain loop, not a memmove call per row
                            for (d, &v) in dst[lo..hi].iter_mut().zip(&src[x0..]) {
                                *d = v;
                            }
                        } else {
                            for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                                *d = src[x0 + j * sx];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_plane_2d`] (rows of `cp` at multiples of `ld`).
fn col2im_plane_2d<T: Copy + Accumulate>(cp: &[T], ld: usize, o: &mut [T], g: &WindowGeometry, r: &Rows2d) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let l = r.oh * r.ow;
    let sx = g.stride[1];
    for ki in 0..kh {
        for kj in 0..kw {
            let row = &cp[(ki * kw + kj) * ld..(ki * kw + kj) * ld + l];
            let (lo, hi, x0) = r.col_range(kj);
            for oy in 0..r.oh {
                if let Some(y) = r.src_row(oy, ki) {
                    let src = &row[oy * r.ow + lo..oy * r.ow + hi];
                    let dst = &mut o[y * r.w..(y + 1) * r.w];
                    if sx == 1 {
                        // contiguous on both sides: a plain (vectorisable) row add
                        for (d, &v) in dst[x0..x0 + src.len()].iter_mut().zip(src) {
                            *d = d.accumulate(v);
                        }
                        continue;
                    }
                    for (j, &v) in src.iter().enumerate() {
                        let x = x0 + j * sx;
                        dst[x] = dst[x].accumulate(v);
                    }
                }
            }
        }
    }
}

/// 2-d im2col of one sample: `xs` is its dense `[C, H, W]`, `o` receives `C * K` rows of `L`
/// values, row `i` at `o[i * ld..]` (a dense `[C * K, L]` when `ld = L`).
pub(crate) fn im2col_sample_2d<T: Copy>(xs: &[T], o: &mut [T], ld: usize, g: &WindowGeometry, r: &Rows2d, pad: T) {
    let (plane, kld) = (r.h * r.w, g.kernel_numel() * ld);
    for c in 0..g.channels {
        im2col_plane_2d(&xs[c * plane..(c + 1) * plane], &mut o[c * kld..], ld, g, r, pad);
    }
}

/// The adjoint of [`im2col_sample_2d`]: adds `C * K` rows of `L` columns (row `i` at
/// `cols[i * ld..]`) into one sample's `[C, H, W]`.
pub(crate) fn col2im_sample_2d<T: Copy + Accumulate>(
    cols: &[T],
    ld: usize,
    o: &mut [T],
    g: &WindowGeometry,
    r: &Rows2d,
) {
    let (plane, kld) = (r.h * r.w, g.kernel_numel() * ld);
    for c in 0..g.channels {
        col2im_plane_2d(&cols[c * kld..], ld, &mut o[c * plane..(c + 1) * plane], g, r);
    }
}

/// `x` is dense `[N, C, *input]`; returns dense `[N, C * K, L]`.
pub(crate) fn im2col<T: Copy + Send + Sync + Default + 'static>(
    x: &[T],
    g: &WindowGeometry,
    out_sp: &[usize],
    pad: T,
) -> Vec<T> {
    let plane: usize = g.input.iter().product();
    let l: usize = out_sp.iter().product();
    let k = g.kernel_numel();
    let mut out: Vec<T> = crate::pool::take_n(&[g.batch, g.channels, k, l]);
    if out.is_empty() {
        return out;
    }
    if g.input.len() == 2 {
        // every element is written below (copied or padded), so a pooled buffer needs no clearing
        let r = Rows2d::new(g, out_sp);
        pool().install(|| {
            out.par_chunks_mut(k * l).enumerate().for_each(|(nc, o)| {
                im2col_plane_2d(&x[nc * plane..(nc + 1) * plane], o, l, g, &r, pad);
            })
        });
        return out;
    }
    pool().install(|| {
        out.par_chunks_mut(k * l).enumerate().for_each(|(nc, o)| {
            let xp = &x[nc * plane..(nc + 1) * plane];
            let mut row = 0;
            for_each_index(&g.kernel, |kk| {
                let dst = &mut o[row * l..(row + 1) * l];
                let mut j = 0;
                for_each_index(out_sp, |p| {
                    dst[j] = match source(g, kk, p) {
                        Some(s) => xp[s],
                        None => pad,
                    };
                    j += 1;
                });
                row += 1;
            });
        })
    });
    out
}

/// The adjoint of [`im2col`]: sums dense `[N, C * K, L]` columns into dense `[N, C, *input]`.
pub(crate) fn col2im<T: Copy + Send + Sync + Default + 'static + Accumulate>(
    cols: &[T],
    g: &WindowGeometry,
    out_sp: &[usize],
) -> Vec<T> {
    let plane: usize = g.input.iter().product();
    let l: usize = out_sp.iter().product();
    let k = g.kernel_numel();
    let mut out: Vec<T> = crate::pool::take_n(&[g.batch, g.channels, plane]);
    out.fill(T::default());
    if out.is_empty() || l == 0 {
        return out;
    }
    if g.input.len() == 2 {
        let r = Rows2d::new(g, out_sp);
        pool().install(|| {
            out.par_chunks_mut(plane).enumerate().for_each(|(nc, o)| {
                col2im_plane_2d(&cols[nc * k * l..(nc + 1) * k * l], l, o, g, &r);
            })
        });
        return out;
    }
    pool().install(|| {
        out.par_chunks_mut(plane).enumerate().for_each(|(nc, o)| {
            let cp = &cols[nc * k * l..(nc + 1) * k * l];
            let mut row = 0;
            for_each_index(&g.kernel, |kk| {
                let src = &cp[row * l..(row + 1) * l];
                let mut j = 0;
                for_each_index(out_sp, |p| {
                    if let Some(s) = source(g, kk, p) {
                        o[s] = o[s].accumulate(src[j]);
                    }
                    j += 1;
                });
                row += 1;
            });
        })
    });
    out
}

/// 2-d max pooling of a dense `[N, C, H, W]` input: values and flat in-plane argmax (first maximum
/// in window order; NaN wins, as in PyTorch). One pass, planes in parallel.
pub(crate) fn max_pool2d<T: Copy + Send + Sync + Default + PartialOrd + 'static>(
    x: &[T],
    g: &WindowGeometry,
    out_sp: &[usize],
    is_nan: impl Fn(T) -> bool + Sync,
) -> (Vec<T>, Vec<i64>) {
    let (h, w) = (g.input[0], g.input[1]);
    let (oh, ow) = (out_sp[0], out_sp[1]);
    let planes = g.batch * g.channels;
    let mut vals: Vec<T> = crate::pool::take_n(&[planes, oh, ow]);
    let mut idx: Vec<i64> = crate::pool::take_n(&[planes, oh, ow]);
    if vals.is_empty() {
        return (vals, idx);
    }
    let (k0, k1) = (g.kernel[0], g.kernel[1]);
    let (s0, s1, p0, p1, d0, d1) = (g.stride[0], g.stride[1], g.padding[0], g.padding[1], g.dilation[0], g.dilation[1]);
    // the window taps (kh or kw) that land inside the input for output position o along one dim
    let taps = |o: usize, s: usize, p: usize, d: usize, k: usize, n: usize| {
        let start = (o * s) as isize - p as isize;
        let lo = if start < 0 { ((-start) as usize).div_ceil(d) } else { 0 };
        let hi = if start + ((k - 1) * d) as isize >= n as isize {
            ((n as isize - 1 - start).max(-1) / d as isize + 1).max(0) as usize
        } else {
            k
        };
        (start, lo, hi.min(k))
    };
    let tiled = k0 == s0 && k1 == s1 && p0 == 0 && p1 == 0 && d0 == 1 && d1 == 1;
    let per_plane = |p: usize, vo: &mut [T], io: &mut [i64]| {
        let xp = &x[p * h * w..(p + 1) * h * w];
        if tiled && k0 == 2 && k1 == 2 {
            // the common 2x2 window: two input rows per output row, selects instead of branches
            // (which of four values wins is data-dependent, so branches mispredict half the time)
            for r in 0..oh {
                let (top, bottom) =
                    (&xp[2 * r * w..2 * r * w + 2 * ow], &xp[(2 * r + 1) * w..(2 * r + 1) * w + 2 * ow]);
                let (vrow, irow) = (&mut vo[r * ow..(r + 1) * ow], &mut io[r * ow..(r + 1) * ow]);
                let base = 2 * r * w;
                for c in 0..ow {
                    let cands = [top[2 * c], top[2 * c + 1], bottom[2 * c], bottom[2 * c + 1]];
                    let offs = [0, 1, w, w + 1];
                    let (mut best, mut at) = (cands[0], offs[0]);
                    for k in 1..4 {
                        let v = cands[k];
                        let take = (v > best) | is_nan(v);
                        best = if take { v } else { best };
                        at = if take { offs[k] } else { at };
                    }
                    vrow[c] = best;
                    irow[c] = (base + 2 * c + at) as i64;
                }
            }
            return;
        }
        if tiled {
            // windows side by side, all inside the input: no bounds to check
            for r in 0..oh {
                for c in 0..ow {
                    let corner = r * k0 * w + c * k1;
                    let (mut best, mut best_at) = (xp[corner], corner);
                    for kh in 0..k0 {
                        let row = corner + kh * w;
                        for (kw, &v) in xp[row..row + k1].iter().enumerate() {
                            if v > best || is_nan(v) {
                                (best, best_at) = (v, row + kw);
                            }
                        }
                    }
                    vo[r * ow + c] = best;
                    io[r * ow + c] = best_at as i64;
                }
            }
            return;
        }
        for r in 0..oh {
            let (hs, khl, khh) = taps(r, s0, p0, d0, k0, h);
            for c in 0..ow {
                let (ws, kwl, kwh) = taps(c, s1, p1, d1, k1, w);
                let (mut best, mut best_at, mut found) = (T::default(), 0usize, false);
                for kh in khl..khh {
                    let row = (hs + (kh * d0) as isize) as usize * w;
                    for kw in kwl..kwh {
                        let at = row + (ws + (kw * d1) as isize) as usize;
                        let v = xp[at];
                        // PyTorch's rule: a larger value or a NaN takes over
                        if !found || v > best || is_nan(v) {
                            (best, best_at, found) = (v, at, true);
                        }
                    }
                }
                vo[r * ow + c] = best;
                io[r * ow + c] = best_at as i64;
            }
        }
    };
    let plane_out = oh * ow;
    pool().install(|| {
        vals.par_chunks_mut(plane_out)
            .zip(idx.par_chunks_mut(plane_out))
            .enumerate()
            .for_each(|(p, (vo, io))| per_plane(p, vo, io))
    });
    (vals, idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Integer col2im wraps on overflow as PyTorch's integer sums do (it panicked in debug builds;
    /// found by the CUDA backend's emulation test, which feeds i64 extremes).
    #[test]
    fn integer_col2im_wraps_instead_of_panicking() {
        // one input element read by two windows (kernel 2, padding 1): 1-d and 2-d paths
        for (input, kernel) in [(vec![1], vec![2]), (vec![1, 1], vec![1, 2])] {
            let n = input.len();
            let g = WindowGeometry {
                batch: 1,
                channels: 1,
                input,
                kernel,
                stride: vec![1; n],
                padding: [vec![0; n - 1], vec![1]].concat(),
                dilation: vec![1; n],
            };
            let out_sp = g.output().unwrap();
            let cols = vec![i64::MAX; g.kernel_numel() * out_sp.iter().product::<usize>()];
            assert_eq!(col2im(&cols, &g, &out_sp), vec![i64::MAX.wrapping_add(i64::MAX)], "{g:?}");
        }
    }
}
