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
