//! 2-d convolution fused per block of samples: each block's patch matrix is built, multiplied and
//! dropped while it is still in cache, instead of one `[N, C * K, L]` patch tensor for the whole
//! batch (160 MB for a 64-image 32-channel 5x5 layer) written to memory, read back by the product
//! and kept for the backward. The backward rebuilds each block's patches instead of keeping them.
//!
//! A block holds one sample when its output has many positions, and several when it has few (a
//! 7x7 or 1x1 output), side by side as the columns of one product: per-sample products of 49 or
//! 1 columns ran gemm at a fraction of its speed (a 128-channel 4x4 -> 1x1 layer 4.2 ms against
//! PyTorch's 0.7). Block sizes depend only on the shapes.
//!
//! Blocks run in parallel. The weight gradient is summed per fixed group of blocks, then over
//! the groups in order, so results do not depend on the thread count.

use crate::matmul::{gemm_into, GemmElement, Operand};
use crate::sample_patches::SamplePatches;
use crate::threading::pool;
use ember_storage::WindowGeometry;
use rayon::prelude::*;

/// Product columns (samples x output positions) a block of samples aims for.
const BLOCK_COLS: usize = 256;

/// Samples whose weight gradients one task sums before the groups are added together (at least;
/// a group is a whole number of blocks).
const GROUP: usize = 4;

/// Sizes of one convolution: channels in and out, patch length `C * K`, output positions `L`,
/// input plane size, and samples per block.
#[derive(Clone, Copy)]
struct Dims {
    cin: usize,
    cout: usize,
    ck: usize,
    l: usize,
    plane: usize,
    block: usize,
}

impl Dims {
    fn of(g: &WindowGeometry, cout: usize, out_sp: &[usize]) -> Dims {
        let (k, l): (usize, usize) = (g.kernel_numel(), out_sp.iter().product());
        // enough samples for BLOCK_COLS columns, but at least two blocks so both threads of a
        // small batch have work
        let block = BLOCK_COLS.div_ceil(l.max(1)).min(g.batch.div_ceil(2)).max(1);
        Dims { cin: g.channels, cout, ck: g.channels * k, l, plane: g.input.iter().product(), block }
    }

    /// Elements of one input sample.
    fn sample_x(&self) -> usize {
        self.cin * self.plane
    }

    /// Builds the patches of samples `n0..n0 + count` into `cols` `[C * K, count * L]`.
    fn patches<T: Copy + Default>(
        &self,
        x: &[T],
        n0: usize,
        count: usize,
        cols: &mut [T],
        g: &WindowGeometry,
        p: &SamplePatches,
    ) {
        let (sx, ld) = (self.sample_x(), count * self.l);
        for s in 0..count {
            let xs = &x[(n0 + s) * sx..(n0 + s + 1) * sx];
            p.im2col(xs, &mut cols[s * self.l..], ld, g, T::default());
        }
    }

    /// Copies `gy` of samples `n0..n0 + count` (`[count, OC, L]`) into `[OC, count * L]`.
    fn gather_gy<T: Copy>(&self, gy: &[T], n0: usize, count: usize, out: &mut [T]) {
        let (l, ld) = (self.l, count * self.l);
        for s in 0..count {
            let gs = &gy[(n0 + s) * self.cout * l..(n0 + s + 1) * self.cout * l];
            for (o, row) in gs.chunks(l).enumerate() {
                out[o * ld + s * l..o * ld + (s + 1) * l].copy_from_slice(row);
            }
        }
    }
}

/// `y[n] = w @ patches(x[n])`: `x` dense `[N, C, H, W]`, `w` dense `[OC, C * K]`; returns `[N, OC, L]`.
pub(crate) fn forward<T: GemmElement + Send + Sync + 'static>(
    x: &[T],
    w: &[T],
    cout: usize,
    g: &WindowGeometry,
    out_sp: &[usize],
) -> Vec<T> {
    let d = Dims::of(g, cout, out_sp);
    let rows = SamplePatches::new(g, out_sp);
    let mut y: Vec<T> = crate::pool::take_n(&[g.batch, d.cout, d.l]);
    if y.is_empty() {
        return y;
    }
    let block = |(b, yb): (usize, &mut [T])| {
        let (n0, count) = (b * d.block, yb.len() / (d.cout * d.l));
        let cols_n = count * d.l;
        let mut cols: Vec<T> = crate::pool::take_n(&[d.ck, cols_n]);
        d.patches(x, n0, count, &mut cols, g, &rows);
        let a = Operand { data: w, rs: d.ck, cs: 1 };
        let b = Operand { data: &cols, rs: cols_n, cs: 1 };
        if count == 1 {
            gemm_into((d.cout, d.ck, cols_n), yb, a, b, false);
        } else {
            // [OC, count * L], then each sample's [OC, L] into place
            let mut t: Vec<T> = crate::pool::take_n(&[d.cout, cols_n]);
            gemm_into((d.cout, d.ck, cols_n), &mut t, a, b, false);
            for (o, row) in t.chunks(cols_n).enumerate() {
                for (s, part) in row.chunks(d.l).enumerate() {
                    yb[s * d.cout * d.l + o * d.l..][..d.l].copy_from_slice(part);
                }
            }
            crate::pool::give(t);
        }
        crate::pool::give(cols);
    };
    pool().install(|| y.par_chunks_mut(d.block * d.cout * d.l).enumerate().for_each(block));
    y
}

/// Gradients of [`forward`] from `gy` `[N, OC, L]`: the input's `[N, C, H, W]` (when `need_x`)
/// and the weight's `[OC, C * K]` (when `need_w`). `x` is read only when `need_w`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: GemmElement + Send + Sync + crate::window::Accumulate + 'static>(
    x: &[T],
    w: &[T],
    cout: usize,
    gy: &[T],
    g: &WindowGeometry,
    out_sp: &[usize],
    (need_x, need_w): (bool, bool),
) -> (Option<Vec<T>>, Option<Vec<T>>) {
    let d = Dims::of(g, cout, out_sp);
    let rows = SamplePatches::new(g, out_sp);
    let per_group = GROUP.div_ceil(d.block) * d.block;
    let groups = g.batch.div_ceil(per_group);
    let sample_x = d.sample_x();
    let mut dx: Vec<T> = if need_x { crate::pool::take_n(&[g.batch, sample_x]) } else { vec![] };
    dx.fill(T::default());
    // per group of samples, its partial weight gradient transposed, `[C * K, OC]`
    let mut dw_parts: Vec<T> = if need_w { crate::pool::take_n(&[groups, d.cout, d.ck]) } else { vec![] };
    // one group of samples: its slice of dx and its partial weight gradient
    let group = |(gi, (dxg, dwg)): (usize, (&mut [T], &mut [T]))| {
        let first = gi * per_group;
        let in_group = per_group.min(g.batch - first);
        let mut cols: Vec<T> = crate::pool::take_n(&[d.ck, d.block * d.l]);
        let mut gyb: Vec<T> = crate::pool::take_n(&[d.cout, d.block * d.l]);
        for (bi, n0) in (first..first + in_group).step_by(d.block).enumerate() {
            let count = d.block.min(first + in_group - n0);
            let cols_n = count * d.l;
            // this block's gy as [OC, count * L] (in place when the block is one sample)
            let gy_block: &[T] = if count == 1 {
                &gy[n0 * d.cout * d.l..(n0 + 1) * d.cout * d.l]
            } else {
                d.gather_gy(gy, n0, count, &mut gyb);
                &gyb
            };
            if need_w {
                // dwᵀ += patches @ gyᵀ, the transposed form: gemm then repacks only gy and reads
                // the larger patch matrix in place ([64,784]@[784,800] at 90 GFLOP/s as
                // dw = gy @ patchesᵀ, 110 as dwᵀ)
                d.patches(x, n0, count, &mut cols, g, &rows);
                let a = Operand { data: &cols, rs: cols_n, cs: 1 };
                gemm_into((d.ck, cols_n, d.cout), dwg, a, Operand { data: gy_block, rs: 1, cs: cols_n }, bi > 0);
            }
            if need_x {
                // dx[n] = col2im(wᵀ @ gy[n])
                let a = Operand { data: w, rs: 1, cs: d.ck };
                gemm_into((d.ck, d.cout, cols_n), &mut cols, a, Operand { data: gy_block, rs: cols_n, cs: 1 }, false);
                for s in 0..count {
                    let at = (n0 - first + s) * sample_x;
                    rows.col2im(&cols[s * d.l..], cols_n, &mut dxg[at..at + sample_x], g);
                }
            }
        }
        crate::pool::give(gyb);
        crate::pool::give(cols);
    };
    pool().install(|| {
        let dx_chunks = dx.par_chunks_mut((per_group * sample_x).max(1));
        let dw_chunks = dw_parts.par_chunks_mut((d.cout * d.ck).max(1));
        match (need_x, need_w) {
            (true, true) => dx_chunks.zip(dw_chunks).enumerate().for_each(group),
            (true, false) => dx_chunks.enumerate().for_each(|(i, c)| group((i, (c, &mut [])))),
            (false, true) => dw_chunks.enumerate().for_each(|(i, c)| group((i, (&mut [], c)))),
            (false, false) => {}
        }
    });
    let dw = need_w.then(|| {
        let mut dw: Vec<T> = crate::pool::take_n(&[d.cout, d.ck]);
        if groups == 0 {
            dw.fill(T::default());
            return dw;
        }
        // the groups' transposed partial gradients `[C * K, OC]`, summed in group order into the
        // first, then transposed in tiles (written straight into `dw` with its row stride of
        // C * K elements, a power of two as often as not, every store missed L1: 14% of a
        // 32-channel 4x4 layer's backward)
        let (sum, rest) = dw_parts.split_at_mut(d.cout * d.ck);
        for part in rest.chunks(d.cout * d.ck) {
            for (a, &v) in sum.iter_mut().zip(part) {
                *a = a.accumulate(v);
            }
        }
        transpose_into(sum, d.ck, d.cout, &mut dw);
        crate::pool::give(dw_parts);
        dw
    });
    (need_x.then_some(dx), dw)
}

/// Writes the `[rows, cols]` matrix `src` transposed into `dst` `[cols, rows]`, in square tiles
/// whose rows of both stay in L1.
fn transpose_into<T: Copy>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// The backend entry points: shape checks, dtype dispatch, dense copies of strided views.
pub(crate) mod entry {
    use crate::host::{buf, checked, with2};
    use crate::operands::{dense_copy, float_dtype, typed};
    use crate::strided::with_dense;
    use ember_storage::{Buffer, DType, Error, HostData, HostElement, Result, View, WindowGeometry};

    /// Checks `x` `[N, C, H, W]` and `w` `[OC, C * K]` against a 2-d geometry; returns the output size.
    fn check(op: &str, x: View, w: View, g: &WindowGeometry) -> Result<Vec<usize>> {
        let out_sp = g.output().ok_or_else(|| Error::invalid(op, format!("window {g:?} does not fit")))?;
        let want_x = [g.batch, g.channels, g.input.first().copied().unwrap_or(0), g.input.get(1).copied().unwrap_or(0)];
        if g.input.len() != 2 || x.1.shape() != want_x {
            return Err(Error::shape(op, format!("input {:?} does not match the 2-d geometry {g:?}", x.1.shape())));
        }
        let ck = g.channels * g.kernel_numel();
        if w.1.ndim() != 2 || w.1.shape()[1] != ck {
            return Err(Error::shape(op, format!("weight {:?} should be [out_channels, {ck}]", w.1.shape())));
        }
        if x.0.dtype() != w.0.dtype() {
            return Err(Error::dtype(op, format!("input {} and weight {} differ", x.0.dtype(), w.0.dtype())));
        }
        Ok(out_sp)
    }

    pub(crate) fn conv2d(x: View, w: View, g: &WindowGeometry) -> Result<Buffer> {
        const OP: &str = "conv2d";
        let out_sp = check(OP, x, w, g)?;
        fn go<T: HostElement>(x: View, w: View, kernel: impl Fn(&[T], &[T], usize) -> Vec<T>) -> Result<Buffer> {
            let wd = dense_copy::<T>(OP, w)?;
            let bx = checked(x, OP)?;
            let data = bx.read();
            let xs = typed::<T>(OP, &data)?;
            Ok(buf(HostData::from_vec(with_dense(xs, x.1, |xd| kernel(xd, &wd, w.1.shape()[0])))))
        }
        let oc = w.1.shape()[0];
        match float_dtype(OP, x)? {
            DType::F32 if crate::winograd::applies(g, oc) => {
                go::<f32>(x, w, |xd, wd, oc| crate::winograd::forward(xd, wd, oc, g))
            }
            DType::F32 => go::<f32>(x, w, |xd, wd, oc| super::forward(xd, wd, oc, g, &out_sp)),
            _ => go::<f64>(x, w, |xd, wd, oc| super::forward(xd, wd, oc, g, &out_sp)),
        }
    }

    pub(crate) fn conv2d_backward(
        x: View,
        w: View,
        gy: View,
        g: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        const OP: &str = "conv2d_backward";
        let out_sp = check(OP, x, w, g)?;
        let want = [g.batch, w.1.shape()[0], out_sp.iter().product()];
        if gy.1.shape() != want {
            return Err(Error::shape(OP, format!("output gradient {:?} should be {want:?}", gy.1.shape())));
        }
        type Grads = (Option<Buffer>, Option<Buffer>);
        type Pair<T> = (Option<Vec<T>>, Option<Vec<T>>);
        fn go<T: HostElement>(
            x: View,
            w: View,
            gy: View,
            need: (bool, bool),
            kernel: impl Fn(&[T], &[T], usize, &[T]) -> Pair<T>,
        ) -> Result<Grads> {
            let wd = dense_copy::<T>(OP, w)?;
            let oc = w.1.shape()[0];
            let (dx, dw) = if need.1 {
                with2(checked(x, OP)?, checked(gy, OP)?, |dx, dg| -> Result<_> {
                    let (xs, gs) = (typed::<T>(OP, dx)?, typed::<T>(OP, dg)?);
                    Ok(with_dense(xs, x.1, |xd| with_dense(gs, gy.1, |gd| kernel(xd, &wd, oc, gd))))
                })?
            } else {
                // only the input's gradient: `x` is not read (a transposed convolution's forward
                // passes a broadcast placeholder for it)
                let bg = checked(gy, OP)?;
                let data = bg.read();
                let gs = typed::<T>(OP, &data)?;
                with_dense(gs, gy.1, |gd| kernel(&[], &wd, oc, gd))
            };
            Ok((dx.map(|v| buf(HostData::from_vec(v))), dw.map(|v| buf(HostData::from_vec(v)))))
        }
        let winograd = crate::winograd::applies(g, w.1.shape()[0]);
        match float_dtype(OP, x)? {
            DType::F32 if winograd => {
                go::<f32>(x, w, gy, need, |xd, wd, oc, gd| crate::winograd::backward(xd, wd, oc, gd, g, need))
            }
            DType::F32 => go::<f32>(x, w, gy, need, |xd, wd, oc, gd| super::backward(xd, wd, oc, gd, g, &out_sp, need)),
            _ => go::<f64>(x, w, gy, need, |xd, wd, oc, gd| super::backward(xd, wd, oc, gd, g, &out_sp, need)),
        }
    }
}
