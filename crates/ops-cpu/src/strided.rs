//! Strided iteration: maps over one, two or three views into a fresh dense output, with contiguous fast
//! paths and rayon parallelism above a size threshold.

use crate::pool::take;
use crate::simd::{map_slice, zip_slice};
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

/// (row length, stride of the last dim) of a layout; a scalar is one row of one element.
#[inline]
fn inner(layout: &Layout) -> (usize, usize) {
    match layout.shape().last() {
        Some(&n) => (n, layout.strides()[layout.ndim() - 1]),
        None => (1, 1),
    }
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
    let (len, st) = inner(lx);
    let body = |(r, o): (usize, &mut [U])| {
        let base = row_start(lx, r);
        for (j, o) in o.iter_mut().enumerate() {
            *o = f(x[base + j * st]);
        }
    };
    if n >= par_threshold() && len > 0 {
        pool().install(|| out.par_chunks_mut(len).enumerate().for_each(body));
    } else if len > 0 {
        out.chunks_mut(len).enumerate().for_each(body);
    }
    out
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
    let (len, sta) = inner(la);
    let (_, stb) = inner(lb);
    let body = |(r, o): (usize, &mut [U])| {
        let (ba, bb) = (row_start(la, r), row_start(lb, r));
        for (j, o) in o.iter_mut().enumerate() {
            *o = f(a[ba + j * sta], b[bb + j * stb]);
        }
    };
    if par && len > 0 {
        pool().install(|| out.par_chunks_mut(len).enumerate().for_each(body));
    } else if len > 0 {
        out.chunks_mut(len).enumerate().for_each(body);
    }
    out
}

/// `out[i] = f(a[i], b[i], c[i])` over three views of one shape (general strided path only).
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
    let (len, sta) = inner(la);
    let (_, stb) = inner(lb);
    let (_, stc) = inner(lc);
    if n == 0 || len == 0 {
        return out;
    }
    let body = |(r, o): (usize, &mut [U])| {
        let (ba, bb, bc) = (row_start(la, r), row_start(lb, r), row_start(lc, r));
        for (j, o) in o.iter_mut().enumerate() {
            *o = f(a[ba + j * sta], b[bb + j * stb], c[bc + j * stc]);
        }
    };
    if n >= par_threshold() {
        pool().install(|| out.par_chunks_mut(len).enumerate().for_each(body));
    } else {
        out.chunks_mut(len).enumerate().for_each(body);
    }
    out
}

/// Writes `src` (a view) into `dst` (a view of the same shape) element by element.
pub(crate) fn assign<T: Copy>(dst: &mut [T], ld: &Layout, src: &[T], ls: &Layout) {
    if let (Some((sd, ed)), Some((ss, es))) = (ld.contiguous_range(), ls.contiguous_range()) {
        dst[sd..ed].copy_from_slice(&src[ss..es]);
        return;
    }
    let (len, std) = inner(ld);
    let (_, sts) = inner(ls);
    if len == 0 {
        return;
    }
    for r in 0..ld.numel() / len {
        let (bd, bs) = (row_start(ld, r), row_start(ls, r));
        for j in 0..len {
            dst[bd + j * std] = src[bs + j * sts];
        }
    }
}

/// Buffer offsets of the start of every line along `dim` (the layout with `dim` removed, row-major).
pub(crate) fn line_starts(l: &Layout, dim: usize) -> Vec<usize> {
    let rest = l.select(dim, 0).unwrap_or_else(|_| l.clone());
    let mut v = Vec::with_capacity(rest.numel());
    if l.shape().get(dim) == Some(&0) {
        // no lines have elements, but callers still need the count of (empty) lines
        let count: usize = l.shape().iter().enumerate().filter(|&(d, _)| d != dim).map(|(_, &n)| n).product();
        return vec![0; count];
    }
    ember_storage::for_each_run(&rest, |s, st, n| v.extend((0..n).map(|i| s + i * st)));
    v
}

fn chunk_len(n: usize) -> usize {
    let threads = pool().current_num_threads().max(1);
    (n / (threads * 4)).max(4096)
}
