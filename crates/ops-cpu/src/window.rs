//! im2col / col2im for N-d sliding windows: the building blocks of convolution, pooling, unfold and fold.

use crate::index::for_each_index;
use crate::threading::pool;
use ember_storage::WindowGeometry;
use rayon::prelude::*;

/// For kernel position `kk` and output position `p`, the flat input index, or `None` in the padding.
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

/// For a 2-d window: per kernel offset `(ki, kj)` and output row `oy`, the input row (or `None`
/// in the padding), and per output column the input column range that is in bounds.
struct Rows2d {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
}

impl Rows2d {
    fn new(g: &WindowGeometry, out_sp: &[usize]) -> Self {
        Rows2d { h: g.input[0], w: g.input[1], oh: out_sp[0], ow: out_sp[1] }
    }
    #[inline]
    fn src_row(&self, g: &WindowGeometry, oy: usize, ki: usize) -> Option<usize> {
        let y = (oy * g.stride[0] + ki * g.dilation[0]) as isize - g.padding[0] as isize;
        (y >= 0 && (y as usize) < self.h).then_some(y as usize)
    }
    /// Output columns `[lo, hi)` whose input column is in bounds, and the input column of `lo`.
    #[inline]
    fn col_range(&self, g: &WindowGeometry, kj: usize) -> (usize, usize, isize) {
        let (s, off) = (g.stride[1] as isize, (kj * g.dilation[1]) as isize - g.padding[1] as isize);
        // ox*s + off >= 0  and  ox*s + off < w
        let lo = if off >= 0 { 0 } else { ((-off + s - 1) / s) as usize };
        let hi = if (self.w as isize) - off <= 0 { 0 } else { (((self.w as isize - off) + s - 1) / s) as usize };
        let (lo, hi) = (lo.min(self.ow), hi.min(self.ow).max(lo.min(self.ow)));
        (lo, hi, lo as isize * s + off)
    }
}

/// 2-d im2col of one `[H, W]` plane into `[K, L]` rows: contiguous copies for stride 1.
fn im2col_plane_2d<T: Copy>(xp: &[T], o: &mut [T], g: &WindowGeometry, r: &Rows2d, pad: T) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let l = r.oh * r.ow;
    let sx = g.stride[1];
    for ki in 0..kh {
        for kj in 0..kw {
            let row = &mut o[(ki * kw + kj) * l..(ki * kw + kj + 1) * l];
            let (lo, hi, x0) = r.col_range(g, kj);
            for oy in 0..r.oh {
                let dst = &mut row[oy * r.ow..(oy + 1) * r.ow];
                match r.src_row(g, oy, ki) {
                    None => dst.fill(pad),
                    Some(y) => {
                        dst[..lo].fill(pad);
                        dst[hi..].fill(pad);
                        let src = &xp[y * r.w..(y + 1) * r.w];
                        if sx == 1 {
                            let x0 = x0 as usize;
                            dst[lo..hi].copy_from_slice(&src[x0..x0 + (hi - lo)]);
                        } else {
                            for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                                *d = src[x0 as usize + j * sx];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col_plane_2d`].
fn col2im_plane_2d<T: Copy + std::ops::Add<Output = T>>(cp: &[T], o: &mut [T], g: &WindowGeometry, r: &Rows2d) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let l = r.oh * r.ow;
    let sx = g.stride[1];
    for ki in 0..kh {
        for kj in 0..kw {
            let row = &cp[(ki * kw + kj) * l..(ki * kw + kj + 1) * l];
            let (lo, hi, x0) = r.col_range(g, kj);
            for oy in 0..r.oh {
                if let Some(y) = r.src_row(g, oy, ki) {
                    let src = &row[oy * r.ow + lo..oy * r.ow + hi];
                    let dst = &mut o[y * r.w..(y + 1) * r.w];
                    for (j, &v) in src.iter().enumerate() {
                        let x = x0 as usize + j * sx;
                        dst[x] = dst[x] + v;
                    }
                }
            }
        }
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
    let mut out: Vec<T> = crate::pool::take(g.batch * g.channels * k * l);
    if out.is_empty() {
        return out;
    }
    if g.input.len() == 2 {
        // every element is written below (copied or padded), so a pooled buffer needs no clearing
        let r = Rows2d::new(g, out_sp);
        pool().install(|| {
            out.par_chunks_mut(k * l).enumerate().for_each(|(nc, o)| {
                im2col_plane_2d(&x[nc * plane..(nc + 1) * plane], o, g, &r, pad);
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
pub(crate) fn col2im<T: Copy + Send + Sync + Default + 'static + std::ops::Add<Output = T>>(
    cols: &[T],
    g: &WindowGeometry,
    out_sp: &[usize],
) -> Vec<T> {
    let plane: usize = g.input.iter().product();
    let l: usize = out_sp.iter().product();
    let k = g.kernel_numel();
    let mut out: Vec<T> = crate::pool::take(g.batch * g.channels * plane);
    out.fill(T::default());
    if out.is_empty() || l == 0 {
        return out;
    }
    if g.input.len() == 2 {
        let r = Rows2d::new(g, out_sp);
        pool().install(|| {
            out.par_chunks_mut(plane).enumerate().for_each(|(nc, o)| {
                col2im_plane_2d(&cols[nc * k * l..(nc + 1) * k * l], o, g, &r);
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
                        o[s] = o[s] + src[j];
                    }
                    j += 1;
                });
                row += 1;
            });
        })
    });
    out
}
