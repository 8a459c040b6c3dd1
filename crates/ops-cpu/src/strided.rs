//! Strided iteration: maps over one, two or three views into a fresh dense output, with contiguous fast
//! paths and rayon parallelism above a size threshold.

use crate::pool::take;
use crate::rows::Rows;
use crate::simd::{map_slice, zip3_slice, zip_slice};
use crate::threading::{par_threshold, pool};
use ember_storage::Layout;
use rayon::prelude::*;

/// Buffer index of the first element of row `row` (rows enumerate all dims but the last, row-major).
#[inline]
pub(crate) fn row_start(layout: &Layout, row: usize) -> usize {
    let shape = layout.shape();
    let strides = layout.strides();
    let mut rem = row;
    let mut off = layout.offset();
    for d in (0..shape.len().saturating_sub(1)).rev() {
        let n = shape[d];
        off += (rem % n) * strides[d];
        rem /= n;
    }
    off
}

fn all_zero_strides(l: &Layout) -> bool {
    l.strides().iter().zip(l.shape()).all(|(&s, &n)| s == 0 || n == 1)
}

/// Copies a view into a dense vector, converting each element with `f`.
pub(crate) fn gather<T: Copy + Sync, U: Copy + Send + Default + 'static>(
    src: &[T],
    l: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    map1(src, l, f)
}

/// Runs `f` on the elements of a view as one dense row-major slice: the view's own memory when it is
/// contiguous, else a pooled copy that goes back to the pool afterwards (a temporary dropped as a
/// plain `Vec` would leave the pool short, and the next op would page-fault in fresh memory).
pub(crate) fn with_dense<T: Copy + Send + Sync + Default + 'static, R>(
    src: &[T],
    l: &Layout,
    f: impl FnOnce(&[T]) -> R,
) -> R {
    if let Some((s, e)) = l.contiguous_range() {
        return f(&src[s..e]);
    }
    let tmp = map1(src, l, |a| a);
    let r = f(&tmp);
    crate::pool::give(tmp);
    r
}

/// `out[i] = f(x[i])` over a view.
pub(crate) fn map1<T: Copy + Sync, U: Copy + Send + Default + 'static>(
    x: &[T],
    lx: &Layout,
    f: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let n = lx.numel();
    let mut out: Vec<U> = take(n);
    if n == 0 {
        return out;
    }
    if let Some((s, e)) = lx.contiguous_range() {
        let src = &x[s..e];
        if n >= par_threshold() {
            let chunk = chunk_len(n);
            pool().install(|| {
                out.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(o, i)| map_slice(o, i, &f))
            });
        } else {
            map_slice(&mut out, src, &f);
        }
        return out;
    }
    let rows = Rows::new([lx]);
    let (len, st) = (rows.len, rows.inner[0]);
    let per = rows.rows_per_task();
    let body = |(t, o): (usize, &mut [U])| {
        let count = o.len() / len;
        if st > 1 {
            // a strided inner dim (a transposed view): blocks of rows walked column by column
            tiled_rows(&rows, t * per, count, o, |[b], j| f(x[b + j * st]));
            return;
        }
        let mut chunks = o.chunks_mut(len);
        rows.for_rows(t * per, count, |[b]| {
            let o = chunks.next().expect("one chunk per row");
            if st == 1 {
                map_slice(o, &x[b..b + len], &f);
            } else {
                for (j, o) in o.iter_mut().enumerate() {
                    *o = f(x[b + j * st]);
                }
            }
        });
    };
    if n >= par_threshold() {
        pool().install(|| out.par_chunks_mut(len * per).enumerate().for_each(body));
    } else {
        body((0, &mut out));
    }
    out
}

/// Rows per block of [`tiled_rows`]: 16 f32 values are one 64-byte cache line.
const TILE_ROWS: usize = 16;

/// Writes `count` output rows starting at row `first` as blocks of [`TILE_ROWS`] rows walked column
/// by column: `o[r * len + j] = at(base of row r, j)`. For views whose inner dim is strided and whose
/// rows start at neighbouring elements (a transposed matrix), consecutive reads of a column then share
/// cache lines and only a block's rows of the output are being written, instead of every read landing
/// on a new line (a 2^20-element transposed add took 91x the contiguous one walked row by row).
fn tiled_rows<const K: usize, U: Copy>(
    rows: &Rows<K>,
    first: usize,
    count: usize,
    o: &mut [U],
    at: impl Fn([usize; K], usize) -> U,
) {
    let len = rows.len;
    let mut bases = Vec::with_capacity(count);
    rows.for_rows(first, count, |b| bases.push(b));
    for (block, out) in bases.chunks(TILE_ROWS).zip(o.chunks_mut(TILE_ROWS * len)) {
        for j in 0..len {
            for (r, &b) in block.iter().enumerate() {
                out[r * len + j] = at(b, j);
            }
        }
    }
}

/// `out[i] = f(a[i], b[i])` over two views of one shape.
pub(crate) fn map2<A: Copy + Sync, B: Copy + Sync, U: Copy + Send + Default + 'static>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    f: impl Fn(A, B) -> U + Sync,
) -> Vec<U> {
    let n = la.numel();
    let mut out: Vec<U> = take(n);
    if n == 0 {
        return out;
    }
    let par = n >= par_threshold();
    let chunk = chunk_len(n);
    match (la.contiguous_range(), lb.contiguous_range()) {
        (Some((sa, ea)), Some((sb, eb))) => {
            let (a, b) = (&a[sa..ea], &b[sb..eb]);
            let body = |((o, a), b): ((&mut [U], &[A]), &[B])| zip_slice(o, a, b, &f);
            if par {
                pool().install(|| {
                    out.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).zip(b.par_chunks(chunk)).for_each(body)
                });
            } else {
                body(((&mut out, a), b));
            }
            return out;
        }
        (Some((sa, ea)), None) if all_zero_strides(lb) => {
            let (a, bv) = (&a[sa..ea], b[lb.offset()]);
            let body = |(o, a): (&mut [U], &[A])| map_slice(o, a, |a| f(a, bv));
            if par {
                pool().install(|| out.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).for_each(body));
            } else {
                body((&mut out, a));
            }
            return out;
        }
        (None, Some((sb, eb))) if all_zero_strides(la) => {
            let (av, b) = (a[la.offset()], &b[sb..eb]);
            let body = |(o, b): (&mut [U], &[B])| map_slice(o, b, |b| f(av, b));
            if par {
                pool().install(|| out.par_chunks_mut(chunk).zip(b.par_chunks(chunk)).for_each(body));
            } else {
                body((&mut out, b));
            }
            return out;
        }
        _ => {}
    }
    let rows = Rows::new([la, lb]);
    let (len, [sta, stb]) = (rows.len, rows.inner);
    let per = rows.rows_per_task();
    let body = |(t, o): (usize, &mut [U])| {
        let count = o.len() / len;
        if sta > 1 || stb > 1 {
            // a strided inner dim (a transposed view): blocks of rows walked column by column
            tiled_rows(&rows, t * per, count, o, |[ba, bb], j| f(a[ba + j * sta], b[bb + j * stb]));
            return;
        }
        let mut chunks = o.chunks_mut(len);
        rows.for_rows(t * per, count, |[ba, bb]| {
            let o = chunks.next().expect("one chunk per row");
            match (sta, stb) {
                (1, 1) => zip_slice(o, &a[ba..ba + len], &b[bb..bb + len], &f),
                (1, 0) => {
                    let bv = b[bb];
                    map_slice(o, &a[ba..ba + len], |x| f(x, bv))
                }
                (0, 1) => {
                    let av = a[ba];
                    map_slice(o, &b[bb..bb + len], |y| f(av, y))
                }
                _ => {
                    for (j, o) in o.iter_mut().enumerate() {
                        *o = f(a[ba + j * sta], b[bb + j * stb]);
                    }
                }
            }
        });
    };
    if par {
        pool().install(|| out.par_chunks_mut(len * per).enumerate().for_each(body));
    } else {
        body((0, &mut out));
    }
    out
}

/// `out[i] = f(a[i], b[i], c[i])` over three views of one shape, with a fast path when each is dense
/// or a broadcast value.
pub(crate) fn map3<A: Copy + Sync, B: Copy + Sync, C: Copy + Sync, U: Copy + Send + Default + 'static>(
    a: &[A],
    la: &Layout,
    b: &[B],
    lb: &Layout,
    c: &[C],
    lc: &Layout,
    f: impl Fn(A, B, C) -> U + Sync,
) -> Vec<U> {
    let n = la.numel();
    let mut out: Vec<U> = take(n);
    if n == 0 {
        return out;
    }
    if let (Some(da), Some(db), Some(dc)) = (Operand::of(a, la), Operand::of(b, lb), Operand::of(c, lc)) {
        // every operand dense or one broadcast value (torch.where's usual case, and its backward's
        // `where(c, g, 0)`): slices walked by the vectorised loops
        let body = |(i, o): (usize, &mut [U])| {
            let r = i * chunk_len(n)..i * chunk_len(n) + o.len();
            fill3(o, da.part(&r), db.part(&r), dc.part(&r), &f)
        };
        if n >= par_threshold() {
            pool().install(|| out.par_chunks_mut(chunk_len(n)).enumerate().for_each(body));
        } else {
            fill3(&mut out, da, db, dc, &f);
        }
        return out;
    }
    let rows = Rows::new([la, lb, lc]);
    let (len, [sta, stb, stc]) = (rows.len, rows.inner);
    let per = rows.rows_per_task();
    let body = |(t, o): (usize, &mut [U])| {
        let count = o.len() / len;
        let mut chunks = o.chunks_mut(len);
        rows.for_rows(t * per, count, |[ba, bb, bc]| {
            let o = chunks.next().expect("one chunk per row");
            if (sta, stb, stc) == (1, 1, 1) {
                zip3_slice(o, &a[ba..ba + len], &b[bb..bb + len], &c[bc..bc + len], &f);
                return;
            }
            for (j, o) in o.iter_mut().enumerate() {
                *o = f(a[ba + j * sta], b[bb + j * stb], c[bc + j * stc]);
            }
        });
    };
    if n >= par_threshold() {
        pool().install(|| out.par_chunks_mut(len * per).enumerate().for_each(body));
    } else {
        body((0, &mut out));
    }
    out
}

/// An operand of [`map3`]'s fast path: a dense run of memory, or one value broadcast everywhere.
#[derive(Clone, Copy)]
enum Operand<'a, T> {
    Dense(&'a [T]),
    Scalar(T),
}

impl<'a, T: Copy> Operand<'a, T> {
    /// The view as an operand, or `None` when it is neither contiguous nor a broadcast value.
    fn of(x: &'a [T], l: &Layout) -> Option<Self> {
        if let Some((s, e)) = l.contiguous_range() {
            Some(Operand::Dense(&x[s..e]))
        } else if all_zero_strides(l) {
            Some(Operand::Scalar(x[l.offset()]))
        } else {
            None
        }
    }

    /// The elements `r` of the operand.
    fn part(self, r: &std::ops::Range<usize>) -> Self {
        match self {
            Operand::Dense(x) => Operand::Dense(&x[r.clone()]),
            s => s,
        }
    }
}

/// `o[i] = f(a[i], b[i], c[i])` with each operand dense or a single value: one vectorised loop per mix.
fn fill3<A: Copy, B: Copy, C: Copy, U: Copy>(
    o: &mut [U],
    a: Operand<A>,
    b: Operand<B>,
    c: Operand<C>,
    f: &impl Fn(A, B, C) -> U,
) {
    use Operand::{Dense as D, Scalar as S};
    match (a, b, c) {
        (D(a), D(b), D(c)) => zip3_slice(o, a, b, c, f),
        (D(a), D(b), S(c)) => zip_slice(o, a, b, |a, b| f(a, b, c)),
        (D(a), S(b), D(c)) => zip_slice(o, a, c, |a, c| f(a, b, c)),
        (S(a), D(b), D(c)) => zip_slice(o, b, c, |b, c| f(a, b, c)),
        (D(a), S(b), S(c)) => map_slice(o, a, |a| f(a, b, c)),
        (S(a), D(b), S(c)) => map_slice(o, b, |b| f(a, b, c)),
        (S(a), S(b), D(c)) => map_slice(o, c, |c| f(a, b, c)),
        (S(a), S(b), S(c)) => o.fill(f(a, b, c)),
    }
}

/// Writes `src` (a view) into `dst` (a view of the same shape) element by element.
pub(crate) fn assign<T: Copy>(dst: &mut [T], ld: &Layout, src: &[T], ls: &Layout) {
    if let (Some((sd, ed)), Some((ss, es))) = (ld.contiguous_range(), ls.contiguous_range()) {
        dst[sd..ed].copy_from_slice(&src[ss..es]);
        return;
    }
    if ld.numel() == 0 {
        return;
    }
    let rows = Rows::new([ld, ls]);
    let (len, [std, sts]) = (rows.len, rows.inner);
    rows.for_rows(0, ld.numel() / len, |[bd, bs]| {
        if std == 1 && sts == 1 {
            dst[bd..bd + len].copy_from_slice(&src[bs..bs + len]);
        } else {
            for j in 0..len {
                dst[bd + j * std] = src[bs + j * sts];
            }
        }
    });
}

/// Buffer offsets of the start of every line along `dim` (the layout with `dim` removed, row-major).
pub(crate) fn line_starts(l: &Layout, dim: usize) -> Vec<usize> {
    let rest = l.select(dim, 0).unwrap_or_else(|_| l.clone());
    if l.shape().get(dim) == Some(&0) {
        // no lines have elements, but callers still need the count of (empty) lines
        let others: Vec<usize> = l.shape().iter().enumerate().filter(|&(d, _)| d != dim).map(|(_, &n)| n).collect();
        return crate::pool::fresh(ember_storage::shape::numel(&others));
    }
    let mut v = crate::pool::reserve(rest.numel());
    ember_storage::for_each_run(&rest, |s, st, n| v.extend((0..n).map(|i| s + i * st)));
    v
}

fn chunk_len(n: usize) -> usize {
    let threads = pool().current_num_threads().max(1);
    (n / (threads * 4)).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elements of a view in row-major order, one index at a time (the definition).
    fn naive(x: &[f64], l: &Layout) -> Vec<f64> {
        let mut out = vec![];
        crate::index::for_each_index(l.shape(), |m| out.push(x[l.index_of(m)]));
        out
    }

    /// The tiled walk of strided views gives the row-major elements: transposed matrices (row counts
    /// not a multiple of the block), permuted 3-d views, large enough to run in parallel tasks too.
    #[test]
    fn strided_views_map_to_their_row_major_elements() {
        let views = [
            Layout::contiguous(&[37, 53]).transpose(0, 1).unwrap(),
            Layout::contiguous(&[5, 7, 9]).permute(&[2, 0, 1]).unwrap(),
            Layout::contiguous(&[1024, 300]).transpose(0, 1).unwrap(),
            Layout::contiguous(&[40, 50]).transpose(0, 1).unwrap().narrow(0, 3, 40).unwrap(),
        ];
        for l in &views {
            let n = l.span_end();
            let (a, b): (Vec<f64>, Vec<f64>) =
                ((0..n).map(|i| i as f64).collect(), (0..n).map(|i| (i * 3) as f64).collect());
            let want: Vec<f64> = naive(&a, l).iter().zip(naive(&b, l)).map(|(x, y)| x - 2.0 * y).collect();
            assert_eq!(map2(&a, l, &b, l, |x, y| x - 2.0 * y), want, "{:?}", l.shape());
            // one operand strided, the other contiguous
            let d = Layout::contiguous(l.shape());
            let dense_b: Vec<f64> = naive(&b, l);
            assert_eq!(map2(&a, l, &dense_b, &d, |x, y| x - 2.0 * y), want, "{:?} with a dense operand", l.shape());
            assert_eq!(map1(&a, l, |x| x), naive(&a, l), "{:?}", l.shape());
        }
    }
}
