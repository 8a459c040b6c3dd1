//! Ops that work line by line along one dim: arg-reductions, scans and sort.

use crate::strided::line_starts;
use crate::threading::{par_threshold, pool};
use ember_storage::Layout;
use rayon::prelude::*;

/// Calls `f(line_index, start, stride)` for every line along `dim` and collects `len` outputs per line,
/// written in the row-major order of the input's shape (the dim's position kept).
pub(crate) fn per_line<U: Copy + Send + Default + 'static>(
    l: &Layout,
    dim: usize,
    out_len: usize,
    f: impl Fn(usize, usize, &mut [U]) + Sync,
) -> Vec<U> {
    if out_len == 0 {
        // no output elements: do not enumerate the (possibly astronomically many) empty lines
        return Vec::new();
    }
    let starts = line_starts(l, dim);
    let stride = l.strides().get(dim).copied().unwrap_or(1);
    let mut lines: Vec<U> = crate::pool::take_n(&[starts.len(), out_len]);
    if lines.is_empty() {
        // another dim is 0: the output is empty (and the shape products below could overflow)
        return lines;
    }
    if lines.len() >= par_threshold() {
        pool().install(|| lines.par_chunks_mut(out_len).zip(starts.par_iter()).for_each(|(o, &s)| f(s, stride, o)));
    } else {
        lines.chunks_mut(out_len).zip(&starts).for_each(|(o, &s)| f(s, stride, o));
    }
    // lines are [outer..., inner..., out_len]; move out_len back to position `dim`.
    let shape = l.shape();
    let outer: usize = shape[..dim].iter().product();
    let inner: usize = shape.get(dim + 1..).map(|s| s.iter().product()).unwrap_or(1);
    if inner == 1 {
        return lines;
    }
    let mut out: Vec<U> = crate::pool::take(lines.len());
    for o in 0..outer {
        for i in 0..inner {
            let src = (o * inner + i) * out_len;
            for k in 0..out_len {
                out[(o * out_len + k) * inner + i] = lines[src + k];
            }
        }
    }
    crate::pool::give(lines);
    out
}

/// Total order used by sort: NaN above every number (PyTorch's convention), values compared in
/// their own type (an i64 above 2^53 is not rounded through f64). `a != a` is NaN.
#[inline]
#[allow(clippy::eq_op)]
pub(crate) fn total_cmp_nan_max<T: PartialOrd>(a: T, b: T) -> std::cmp::Ordering {
    match (a != a, b != b) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).expect("not NaN"),
    }
}
