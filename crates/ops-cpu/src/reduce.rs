//! Reductions over any set of dims. Work is split at fixed block boundaries and merged in order, so a
//! result never depends on the number of threads.

use crate::strided::row_start;
use crate::threading::{par_threshold, pool};
use ember_storage::{for_each_run, Layout};
use rayon::prelude::*;

/// Elements per block of a single long reduction (fixed, for thread-count-independent results).
const BLOCK: usize = 1 << 15;

/// Splits `l` into the kept dims (outer) and the reduced dims (inner).
fn split(l: &Layout, dims: &[usize]) -> (Layout, Layout) {
    let (mut ks, mut kst, mut rs, mut rst) = (vec![], vec![], vec![], vec![]);
    for d in 0..l.ndim() {
        if dims.contains(&d) {
            rs.push(l.shape()[d]);
            rst.push(l.strides()[d]);
        } else {
            ks.push(l.shape()[d]);
            kst.push(l.strides()[d]);
        }
    }
    let kept = Layout::strided(&ks, &kst, l.offset()).expect("same rank");
    let red = Layout::strided(&rs, &rst, 0).expect("same rank");
    (kept, red)
}

/// Buffer index of element `i` (row-major) of `l`.
fn index_of(l: &Layout, i: usize) -> usize {
    if l.ndim() == 0 {
        return l.offset();
    }
    let last = l.ndim() - 1;
    let n = l.shape()[last];
    row_start(l, i / n.max(1)) + (i % n.max(1)) * l.strides()[last]
}

/// A reduction: a starting accumulator, a fold over one strided run of elements, and an ordered merge.
pub(crate) struct Reducer<A, F, M> {
    pub init: A,
    pub fold: F,
    pub merge: M,
}

/// `f` of every element of `v`, in a pooled vector; `v` goes back to the pool.
pub(crate) fn convert_pooled<A: Copy + Send + 'static, U: Copy + Default + Send + 'static>(
    v: Vec<A>,
    f: impl Fn(A) -> U,
) -> Vec<U> {
    let mut out: Vec<U> = crate::pool::take(v.len());
    for (o, &a) in out.iter_mut().zip(&v) {
        *o = f(a);
    }
    crate::pool::give(v);
    out
}

impl<A, F, M> Reducer<A, F, M>
where
    A: Copy + Default + Send + Sync + 'static,
    M: Fn(A, A) -> A + Sync,
{
    /// Reduces `x` viewed through `l` over `dims`; one accumulator per kept element, row-major.
    pub fn run<T: Copy + Sync>(&self, x: &[T], l: &Layout, dims: &[usize]) -> Vec<A>
    where
        F: Fn(A, &[T], usize, usize, usize) -> A + Sync,
    {
        let (kept, red) = split(l, dims);
        let n_out = kept.numel();
        let n_red = red.numel();
        let per_output = |o: usize| {
            let base = index_of(&kept, o);
            let mut acc = self.init;
            for_each_run(&red, |s, st, n| acc = (self.fold)(acc, x, base + s, st, n));
            acc
        };
        if n_out == 1 && n_red >= 2 * BLOCK {
            // One long reduction: blocks of the row-major order, folded in parallel, merged in order.
            let base = kept.offset();
            let contiguous = red.contiguous_range().map(|(s, _)| s);
            let blocks: Vec<A> = pool().install(|| {
                (0..n_red.div_ceil(BLOCK))
                    .into_par_iter()
                    .map(|b| {
                        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(n_red));
                        if let Some(s) = contiguous {
                            (self.fold)(self.init, x, base + s + lo, 1, hi - lo)
                        } else {
                            let mut acc = self.init;
                            for i in lo..hi {
                                acc = (self.fold)(acc, x, base + index_of(&red, i), 1, 1);
                            }
                            acc
                        }
                    })
                    .collect()
            });
            return vec![blocks.into_iter().fold(self.init, |a, b| (self.merge)(a, b))];
        }
        // pooled: reductions feed training steps with the same shapes every step
        let mut out: Vec<A> = crate::pool::take(n_out);
        if n_out * n_red.max(1) >= par_threshold() && n_out > 1 {
            pool().install(|| out.par_iter_mut().enumerate().for_each(|(o, slot)| *slot = per_output(o)));
        } else {
            out.iter_mut().enumerate().for_each(|(o, slot)| *slot = per_output(o));
        }
        out
    }
}

/// Sums over the leading `dims` of a contiguous view (`dims` = `0..k`): the view as `rows x cols`
/// with `cols` the kept elements, summed row by row into f64 accumulators, column blocks in
/// parallel. The layout of weight and bias gradients of batched products (`[N, ...] -> [...]`),
/// which the general path would walk one strided column at a time. `None` when `l`/`dims` have
/// another shape.
pub(crate) fn leading_sum<T: Copy + Sync>(
    x: &[T],
    l: &Layout,
    dims: &[usize],
    to: impl Fn(T) -> f64 + Sync,
) -> Option<Vec<f64>> {
    let k = dims.len();
    if k == 0 || k >= l.ndim() || dims.iter().enumerate().any(|(i, &d)| d != i) {
        return None;
    }
    let (s, e) = l.contiguous_range()?;
    let cols: usize = l.shape()[k..].iter().product();
    let rows: usize = l.shape()[..k].iter().product();
    let x = &x[s..e];
    let mut out: Vec<f64> = crate::pool::take(cols);
    out.fill(0.0);
    const COLS: usize = 4096;
    let block = |(b, o): (usize, &mut [f64])| {
        let c0 = b * COLS;
        for r in 0..rows {
            let row = &x[r * cols + c0..r * cols + c0 + o.len()];
            for (acc, &v) in o.iter_mut().zip(row) {
                *acc += to(v);
            }
        }
    };
    if rows * cols >= par_threshold() && cols > COLS {
        pool().install(|| out.par_chunks_mut(COLS).enumerate().for_each(block));
    } else {
        out.chunks_mut(COLS).enumerate().for_each(block);
    }
    Some(out)
}

/// Sum of a strided run of floats in f64, with 8 independent f32 lanes on contiguous runs so it vectorises.
#[inline]
pub(crate) fn sum_run_f32(acc: f64, x: &[f32], s: usize, st: usize, n: usize) -> f64 {
    if st != 1 {
        return (0..n).fold(acc, |a, i| a + x[s + i * st] as f64);
    }
    acc + crate::simd::sum_f32(&x[s..s + n])
}

/// Sum of a strided run of f64, with independent lanes on contiguous runs.
#[inline]
pub(crate) fn sum_run_f64(acc: f64, x: &[f64], s: usize, st: usize, n: usize) -> f64 {
    if st != 1 {
        return (0..n).fold(acc, |a, i| a + x[s + i * st]);
    }
    let mut lanes = [0f64; 8];
    let mut it = x[s..s + n].chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            lanes[k] += c[k];
        }
    }
    acc + lanes.iter().sum::<f64>() + it.remainder().iter().sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leading-dims fast path agrees with the general reducer, in parallel and not, and declines
    /// views and dim sets it does not handle.
    #[test]
    fn leading_sums_match_the_general_path() {
        let shape = [3, 5, 4099];
        let x: Vec<f64> = (0..shape.iter().product::<usize>()).map(|i| ((i * 7919) % 1000) as f64 / 7.0).collect();
        let l = Layout::contiguous(&shape);
        let general = Reducer { init: 0f64, fold: sum_run_f64, merge: |a: f64, b: f64| a + b };
        for dims in [&[0usize][..], &[0, 1]] {
            let want = general.run(&x, &l, dims);
            for threshold in [1, usize::MAX] {
                crate::threading::set_par_threshold(threshold);
                let got = leading_sum(&x, &l, dims, |v| v).expect("leading dims");
                assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-9 * b.abs().max(1.0)));
            }
        }
        crate::threading::set_par_threshold(32 * 1024);
        assert!(leading_sum(&x, &l, &[1], |v| v).is_none());
        assert!(leading_sum(&x, &l.transpose(0, 2).unwrap(), &[0], |v| v).is_none());
    }
}
