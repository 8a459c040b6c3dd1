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

/// `x` is dense `[N, C, *input]`; returns dense `[N, C * K, L]`.
pub(crate) fn im2col<T: Copy + Send + Sync + Default>(x: &[T], g: &WindowGeometry, out_sp: &[usize], pad: T) -> Vec<T> {
    let plane: usize = g.input.iter().product();
    let l: usize = out_sp.iter().product();
    let k = g.kernel_numel();
    let mut out = vec![T::default(); g.batch * g.channels * k * l];
    if out.is_empty() {
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
pub(crate) fn col2im<T: Copy + Send + Sync + Default + std::ops::Add<Output = T>>(
    cols: &[T],
    g: &WindowGeometry,
    out_sp: &[usize],
) -> Vec<T> {
    let plane: usize = g.input.iter().product();
    let l: usize = out_sp.iter().product();
    let k = g.kernel_numel();
    let mut out = vec![T::default(); g.batch * g.channels * plane];
    if out.is_empty() || l == 0 {
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
