//! One sample's 2-d patch matrix for the fused convolution ([`crate::conv`]), built (im2col) and
//! folded back (col2im) in one of two ways chosen per geometry:
//!
//! - wide stride-1 output rows: row copies ([`Rows2d`]), one `memcpy` per kernel offset and row;
//! - short or strided output rows (small images, stride 2): a table of source indices per kernel
//!   offset, gathered from a copy of each channel's plane with its padding filled in, so the inner
//!   loop runs over all `L` output positions without bounds tests or branches. Row by row, a
//!   32-channel 14x14 stride-2 layer spent as long building patches as multiplying them.

use crate::window::{col2im_sample_2d, im2col_sample_2d, Accumulate, Rows2d};
use ember_storage::WindowGeometry;

/// Output rows at least this long with stride 1 are copied row by row.
const WIDE_ROW: usize = 16;

/// Largest index table (kernel positions x output positions) the gather path builds.
const MAX_TABLE: usize = 1 << 18;

/// The padded plane and, per kernel offset and output position, the index it reads.
pub(crate) struct Gather2d {
    /// Plane size with the padding: rows, columns.
    ph: usize,
    pw: usize,
    /// Padding on the top and left.
    top: usize,
    left: usize,
    /// `[K, L]` indices into the padded plane.
    idx: Vec<u32>,
}

impl Gather2d {
    fn new(g: &WindowGeometry, out_sp: &[usize]) -> Option<Self> {
        let (kh, kw, oh, ow) = (g.kernel[0], g.kernel[1], out_sp[0], out_sp[1]);
        let (top, left) = (g.padding[0], g.padding[1]);
        // rows and columns any window reaches, in padded coordinates
        let reach = |o: usize, s: usize, k: usize, d: usize| (o.max(1) - 1) * s + (k.max(1) - 1) * d + 1;
        let ph = (g.input[0] + 2 * top).max(reach(oh, g.stride[0], kh, g.dilation[0]));
        let pw = (g.input[1] + 2 * left).max(reach(ow, g.stride[1], kw, g.dilation[1]));
        if kh * kw * oh * ow > MAX_TABLE || ph.checked_mul(pw)? > u32::MAX as usize {
            return None;
        }
        let mut idx = Vec::with_capacity(kh * kw * oh * ow);
        for ki in 0..kh {
            for kj in 0..kw {
                for oy in 0..oh {
                    let row = (oy * g.stride[0] + ki * g.dilation[0]) * pw;
                    idx.extend((0..ow).map(|ox| (row + ox * g.stride[1] + kj * g.dilation[1]) as u32));
                }
            }
        }
        Some(Gather2d { ph, pw, top, left, idx })
    }

    /// Writes one channel's `[H, W]` plane into the interior of `padded` (whose border already
    /// holds the padding value).
    fn fill_interior<T: Copy>(&self, plane: &[T], w: usize, padded: &mut [T]) {
        for (y, row) in plane.chunks_exact(w).enumerate() {
            let at = (y + self.top) * self.pw + self.left;
            padded[at..at + w].copy_from_slice(row);
        }
    }
}

/// How one geometry's samples are turned into patches and back.
pub(crate) enum SamplePatches {
    /// Row copies.
    Rows(Rows2d),
    /// Index-table gathers.
    Gather(Gather2d),
}

impl SamplePatches {
    /// The method for a 2-d geometry and its output size.
    pub(crate) fn new(g: &WindowGeometry, out_sp: &[usize]) -> Self {
        if out_sp[1] < WIDE_ROW || g.stride[1] > 1 {
            if let Some(t) = Gather2d::new(g, out_sp) {
                return SamplePatches::Gather(t);
            }
        }
        SamplePatches::Rows(Rows2d::new(g, out_sp))
    }

    /// im2col of one sample: `xs` is its dense `[C, H, W]`; row `i` of the `C * K` rows of `L`
    /// values goes to `o[i * ld..]`.
    pub(crate) fn im2col<T: Copy>(&self, xs: &[T], o: &mut [T], ld: usize, g: &WindowGeometry, pad: T) {
        let t = match self {
            SamplePatches::Rows(r) => return im2col_sample_2d(xs, o, ld, g, r, pad),
            SamplePatches::Gather(t) => t,
        };
        let (h, w) = (g.input[0], g.input[1]);
        let (k, l) = (g.kernel_numel(), t.idx.len() / g.kernel_numel().max(1));
        if l == 0 {
            return;
        }
        let mut padded = vec![pad; t.ph * t.pw];
        for (c, plane) in xs.chunks_exact(h * w).take(g.channels).enumerate() {
            t.fill_interior(plane, w, &mut padded);
            for (kk, ix) in t.idx.chunks_exact(l).enumerate() {
                let dst = &mut o[(c * k + kk) * ld..][..l];
                for (d, &i) in dst.iter_mut().zip(ix) {
                    *d = padded[i as usize];
                }
            }
        }
    }

    /// The adjoint of [`SamplePatches::im2col`]: adds the `C * K` rows of `L` columns (row `i` at
    /// `cols[i * ld..]`) into one sample's `[C, H, W]` in `o`.
    pub(crate) fn col2im<T: Copy + Default + Accumulate>(
        &self,
        cols: &[T],
        ld: usize,
        o: &mut [T],
        g: &WindowGeometry,
    ) {
        let t = match self {
            SamplePatches::Rows(r) => return col2im_sample_2d(cols, ld, o, g, r),
            SamplePatches::Gather(t) => t,
        };
        let (h, w) = (g.input[0], g.input[1]);
        let (k, l) = (g.kernel_numel(), t.idx.len() / g.kernel_numel().max(1));
        if l == 0 {
            return;
        }
        let mut acc = vec![T::default(); t.ph * t.pw];
        for (c, plane) in o.chunks_exact_mut(h * w).take(g.channels).enumerate() {
            acc.fill(T::default());
            for (kk, ix) in t.idx.chunks_exact(l).enumerate() {
                let src = &cols[(c * k + kk) * ld..][..l];
                for (&v, &i) in src.iter().zip(ix) {
                    let a = &mut acc[i as usize];
                    *a = a.accumulate(v);
                }
            }
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                let at = (y + t.top) * t.pw + t.left;
                for (d, &v) in row.iter_mut().zip(&acc[at..at + w]) {
                    *d = d.accumulate(v);
                }
            }
        }
    }
}
