//! Batched strided matrix products through the `gemm` crate (transposed views need no copy).

use crate::staged::SharedBuf;
use crate::strided::row_start;
use crate::threading::pool;
use ember_storage::shape::MAX_ELEMENTS;
use ember_storage::{Element, Layout};

/// Splits `[batch..., r, c]` into the batch layout and the (row stride, col stride) of each matrix.
fn batch_of(l: &Layout) -> (Layout, isize, isize) {
    let n = l.ndim();
    let batch = Layout::strided(&l.shape()[..n - 2], &l.strides()[..n - 2], l.offset()).expect("same rank");
    (batch, l.strides()[n - 2] as isize, l.strides()[n - 1] as isize)
}

fn batch_offset(b: &Layout, i: usize) -> usize {
    if b.ndim() == 0 {
        return b.offset();
    }
    let last = b.ndim() - 1;
    let n = b.shape()[last];
    row_start(b, i / n) + (i % n) * b.strides()[last]
}

/// Multiply-adds from which a product (or a batch of them) runs on more than one thread.
const PAR_WORK: usize = 1 << 20;

/// Column blocks handed to threads start at multiples of this many elements (a cache line of
/// f32), so two threads never write one line of the output.
const COLUMN_ALIGN: usize = 16;

/// Single-threaded products split `b` into column blocks at most this wide.
const MAX_COLS: usize = 1024;

/// Column blocks of a product large enough for several threads are at least this wide.
const MIN_PAR_COLS: usize = 64;

/// A product large enough for several threads is cut into about this many column blocks.
const PAR_PARTS: usize = 8;

/// `cols` cut into equal, aligned blocks of at most about [`MAX_COLS`] columns (one block when
/// it is no wider).
fn column_parts(cols: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
    let len = cols.len();
    let per =
        if len > MAX_COLS { len.div_ceil(len.div_ceil(MAX_COLS)).next_multiple_of(COLUMN_ALIGN) } else { len.max(1) };
    split(cols, per)
}

/// `cols` in blocks of `per` (the last one shorter).
fn split(cols: std::ops::Range<usize>, per: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let end = cols.end;
    cols.step_by(per.max(1)).map(move |s| s..(s + per).min(end))
}

/// The column blocks of one `[m, k] @ [k, n]` product, each one gemm call. They depend on the
/// shape alone, never on the thread count: gemm blocks the sum over `k` differently for products
/// of at most 64 columns than for wider ones (512-element blocks against evenly split ones), so
/// a product cut per thread summed in a different order on 1 thread than on 2, and the main job's
/// losses differed from its second step. Threads share out these blocks; one thread runs them in
/// turn.
fn product_parts(m: usize, k: usize, n: usize) -> Vec<std::ops::Range<usize>> {
    if m * n * k >= PAR_WORK && n >= 2 * MIN_PAR_COLS {
        let per = n.div_ceil(PAR_PARTS).next_multiple_of(COLUMN_ALIGN).clamp(MIN_PAR_COLS, MAX_COLS);
        return split(0..n, per).collect();
    }
    column_parts(0..n).collect()
}

/// Types `gemm` multiplies natively.
pub(crate) trait GemmElement: Element + Default {
    fn one() -> Self;
}
impl GemmElement for f32 {
    fn one() -> Self {
        1.0
    }
}
impl GemmElement for f64 {
    fn one() -> Self {
        1.0
    }
}
impl GemmElement for half::f16 {
    fn one() -> Self {
        half::f16::ONE
    }
}

/// `a @ b` for `a: [..., m, k]`, `b: [..., k, n]` (equal batch dims, layouts checked against the slices).
pub(crate) fn matmul<T: GemmElement>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let (ba, a_rs, a_cs) = batch_of(la);
    let (bb, b_rs, b_cs) = batch_of(lb);
    let nd = la.ndim();
    let (m, k, n) = (la.shape()[nd - 2], la.shape()[nd - 1], lb.shape()[nd - 1]);
    let batches = ba.numel();
    // pooled: gemm overwrites every element (read_dst is false) unless k == 0
    let mut out: Vec<T> = crate::pool::take_n(&[batches, m, n]);
    if m == 0 || n == 0 || k == 0 {
        out.fill(T::default());
        return out;
    }
    let threads = pool().current_num_threads();
    // Below about a million multiply-adds, handing work to the pool (waking threads, waiting for
    // them) costs more than a second thread saves: measured on [64,120]@[120,84], 15-23 us on the
    // caller against 30-33 us on two threads; from [64,400]@[400,120] up two threads win.
    let work = m * n * k;
    let parts = product_parts(m, k, n);
    // Many batches: one single-threaded product per batch, batches spread over the threads.
    // Few large batches: their column blocks spread over the threads, each block single-threaded
    // (gemm's own threading measured up to 2x slower when `b` is column-major, as in every
    // `x @ w.T` of a linear layer: [64,3136]@[3136,128] 58 against 117 GFLOP/s, [20,800]@[800,200]
    // 29 against 69; on row-major `b` the two are level). A large product of one narrow block:
    // gemm's own threading, which splits rows and columns but never the sum, so its result is
    // the single-threaded one.
    let over_batches = threads > 1 && batches >= 2 * threads && work * batches >= PAR_WORK;
    let big = threads > 1 && !over_batches && work >= PAR_WORK;
    let column_blocks = big && parts.len() > 1;
    let par = if big && !column_blocks { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // The product of batch `i`, columns `cols`, as one gemm call into `dst` (row stride `ldd`).
    let narrow = |i: usize, cols: std::ops::Range<usize>, dst: *mut T, ldd: usize| {
        let (oa, ob) = (batch_offset(&ba, i), batch_offset(&bb, i) as isize + cols.start as isize * b_cs);
        // SAFETY: the caller checked that `la`/`lb` fit inside `a`/`b` (Layout::check_fits, whose
        // arithmetic cannot wrap and which bounds every stride by MAX_ELEMENTS = isize::MAX / 8, so
        // the isize strides above are exact and every byte offset fits isize), so every
        // element (oa + r*a_rs + c*a_cs for r < m, c < k) is in bounds, likewise for b's columns
        // `cols` (ob is the offset of column cols.start, which is in bounds as cols.end <= n); `dst`
        // points at an m x cols.len() block with row stride ldd and col stride 1 that no other
        // thread writes; gemm does not read dst when read_dst is false.
        unsafe {
            gemm::gemm(
                m,
                cols.len(),
                k,
                dst,
                1,
                ldd as isize,
                false,
                a.as_ptr().add(oa),
                a_cs,
                a_rs,
                b.as_ptr().offset(ob),
                b_cs,
                b_rs,
                T::default(),
                T::one(),
                false,
                false,
                false,
                par,
            );
        }
    };
    // The product of batch `i`, all its column blocks in turn, into `dst`.
    let one = |i: usize, dst: &mut [T]| {
        for part in &parts {
            // SAFETY: `part` lies inside 0..n, so its first column is inside the m x n `dst`.
            let at = unsafe { dst.as_mut_ptr().add(part.start) };
            narrow(i, part.clone(), at, n);
        }
    };
    if column_blocks {
        use rayon::prelude::*;
        for (i, dst) in out.chunks_mut(m * n).enumerate() {
            // the threads write disjoint column blocks of this output
            let dst = SharedBuf::new(dst);
            pool().install(|| parts.par_iter().for_each(|cols| narrow(i, cols.clone(), dst.ptr_at(cols.start), n)));
        }
    } else if over_batches {
        use rayon::prelude::*;
        pool().install(|| out.par_chunks_mut(m * n).enumerate().for_each(|(i, dst)| one(i, dst)));
    } else if big {
        pool().install(|| out.chunks_mut(m * n).enumerate().for_each(|(i, dst)| one(i, dst)));
    } else {
        // small products run on the caller's thread: handing them to the pool costs two context switches
        out.chunks_mut(m * n).enumerate().for_each(|(i, dst)| one(i, dst));
    }
    out
}

/// One operand of [`gemm_into`]: its elements and its (row, column) strides.
pub(crate) struct Operand<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

impl<T> Operand<'_, T> {
    /// True when every element of an `r x c` matrix read through the strides is in `data`.
    fn fits(&self, r: usize, c: usize) -> bool {
        // checked: a wrapped sum would pass for an operand far outside the slice
        r == 0
            || c == 0
            || ((r - 1).checked_mul(self.rs))
                .zip((c - 1).checked_mul(self.cs))
                .and_then(|(x, y)| x.checked_add(y))
                .is_some_and(|last| last < self.data.len() && self.rs.max(self.cs) <= MAX_ELEMENTS)
    }
}

/// `dst = a @ b`, or `dst += a @ b` with `accumulate`, for an `[m, k]` `a` and a `[k, n]` `b`
/// read through their strides, into a dense `[m, n]` `dst`; single-threaded, wide `b` in column
/// blocks of at most [`MAX_COLS`]. For kernels that run one product per thread themselves.
pub(crate) fn gemm_into<T: GemmElement>(
    (m, k, n): (usize, usize, usize),
    dst: &mut [T],
    a: Operand<T>,
    b: Operand<T>,
    accumulate: bool,
) {
    assert!(
        m.checked_mul(n).is_some_and(|mn| dst.len() >= mn) && a.fits(m, k) && b.fits(k, n),
        "gemm_into: operands do not fit their shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::default());
        }
        return;
    }
    for cols in column_parts(0..n) {
        // SAFETY: the assert above checked that a's m x k and b's k x n elements, read through
        // their strides, lie inside the slices, and that dst holds m x n dense elements; columns
        // `cols` of b start at cols.start * b.cs and of dst at cols.start, both inside. With
        // read_dst (accumulate) gemm computes dst = dst + a @ b; otherwise it does not read dst.
        unsafe {
            gemm::gemm(
                m,
                cols.len(),
                k,
                dst.as_mut_ptr().add(cols.start),
                1,
                n as isize,
                accumulate,
                a.data.as_ptr(),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(cols.start * b.cs),
                b.cs as isize,
                b.rs as isize,
                T::one(),
                T::one(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// Integer matrix product through i64 (no BLAS for integers; PyTorch does the same naive loop).
pub(crate) fn matmul_int<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
    let (ba, a_rs, a_cs) = batch_of(la);
    let (bb, b_rs, b_cs) = batch_of(lb);
    let nd = la.ndim();
    let (m, k, n) = (la.shape()[nd - 2], la.shape()[nd - 1], lb.shape()[nd - 1]);
    let mut out = crate::pool::reserve(ember_storage::shape::numel(&[ba.numel(), m, n]));
    for i in 0..ba.numel() {
        let (oa, ob) = (batch_offset(&ba, i), batch_offset(&bb, i));
        for r in 0..m {
            for c in 0..n {
                let mut acc = 0i64;
                for t in 0..k {
                    let x = a[oa + r * a_rs as usize + t * a_cs as usize].to_i64();
                    let y = b[ob + t * b_rs as usize + c * b_cs as usize].to_i64();
                    acc = acc.wrapping_add(x.wrapping_mul(y));
                }
                out.push(T::from_i64(acc));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Products split into column blocks (wide `b`, and threads over columns) agree with a plain
    /// triple loop, for row- and column-major `b` and sizes that do not divide evenly.
    #[test]
    fn column_blocks_match_the_definition() {
        for &(m, k, n) in &[(3, 5, 2100), (20, 200, 803), (7, 1, 4099), (64, 300, 61)] {
            let a: Vec<f64> = (0..m * k).map(|i| ((i * 7919) % 13) as f64 - 6.0).collect();
            let b: Vec<f64> = (0..k * n).map(|i| ((i * 104_729) % 11) as f64 - 5.0).collect();
            let la = Layout::contiguous(&[m, k]);
            for b_cols in [false, true] {
                // `b` read as [k, n], row-major or as the transpose of a row-major [n, k]
                let lb = if b_cols {
                    Layout::strided(&[k, n], &[1, k], 0).expect("valid")
                } else {
                    Layout::contiguous(&[k, n])
                };
                let at = |r: usize, c: usize| if b_cols { b[c * k + r] } else { b[r * n + c] };
                let got = matmul(&a, &la, &b, &lb);
                for r in 0..m {
                    for c in 0..n {
                        let want: f64 = (0..k).map(|t| a[r * k + t] * at(t, c)).sum();
                        assert_eq!(got[r * n + c], want, "[{m},{k}]@[{k},{n}] at ({r},{c})");
                    }
                }
            }
        }
    }
}
