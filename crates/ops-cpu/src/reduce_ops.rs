//! The `ReduceOp` kernels for one element type (sum, prod, max/min with NaN propagation,
//! arg-reductions, all/any) over a set of dims.

use crate::reduce::{convert_pooled, Reducer};

use crate::lines::per_line;
use ember_storage::{Error, HostData, HostElement, Layout, ReduceOp, Result};

pub(crate) fn reduce_typed<T: HostElement + Sync>(
    op: ReduceOp,
    v: &[T],
    l: &Layout,
    dims: &[usize],
) -> Result<HostData> {
    let float = T::DTYPE.is_float();
    let fold_f = |f: fn(f64, f64) -> f64, init: f64| Reducer {
        init,
        fold: move |acc: f64, x: &[T], s: usize, st: usize, n: usize| {
            (0..n).fold(acc, |a, i| f(a, x[s + i * st].to_f64()))
        },
        merge: f,
    };
    let fold_i = |f: fn(i64, i64) -> i64, init: i64| Reducer {
        init,
        fold: move |acc: i64, x: &[T], s: usize, st: usize, n: usize| {
            (0..n).fold(acc, |a, i| f(a, x[s + i * st].to_i64()))
        },
        merge: f,
    };
    let from_f = |r: Vec<f64>| HostData::from_vec::<T>(convert_pooled(r, T::from_f64));
    let from_i = |r: Vec<i64>| HostData::from_vec::<T>(convert_pooled(r, T::from_i64));
    fn nan_max(a: f64, b: f64) -> f64 {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    }
    fn nan_min(a: f64, b: f64) -> f64 {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.min(b)
        }
    }
    Ok(match op {
        ReduceOp::Sum if float => from_f(fold_f(|a, b| a + b, 0.0).run(v, l, dims)),
        ReduceOp::Sum => from_i(fold_i(|a, b| a.wrapping_add(b), 0).run(v, l, dims)),
        ReduceOp::Prod if float => from_f(fold_f(|a, b| a * b, 1.0).run(v, l, dims)),
        ReduceOp::Prod => from_i(fold_i(|a, b| a.wrapping_mul(b), 1).run(v, l, dims)),
        ReduceOp::Max if float => from_f(fold_f(nan_max, f64::NEG_INFINITY).run(v, l, dims)),
        ReduceOp::Max => from_i(fold_i(|a, b| a.max(b), i64::MIN).run(v, l, dims)),
        ReduceOp::Min if float => from_f(fold_f(nan_min, f64::INFINITY).run(v, l, dims)),
        ReduceOp::Min => from_i(fold_i(|a, b| a.min(b), i64::MAX).run(v, l, dims)),
        ReduceOp::All | ReduceOp::Any => {
            let all = op == ReduceOp::All;
            let r = Reducer {
                init: all,
                fold: move |acc: bool, x: &[T], s: usize, st: usize, n: usize| {
                    (0..n).fold(acc, |a, i| {
                        if all {
                            a && x[s + i * st].to_f64() != 0.0
                        } else {
                            a || x[s + i * st].to_f64() != 0.0
                        }
                    })
                },
                merge: move |a: bool, b: bool| if all { a && b } else { a || b },
            };
            HostData::Bool(r.run(v, l, dims))
        }
        ReduceOp::ArgMax | ReduceOp::ArgMin => {
            let [dim] = dims else {
                return Err(Error::invalid("argmax", format!("reduces exactly one dim, got {dims:?}")));
            };
            let max = op == ReduceOp::ArgMax;
            let n = l.shape()[*dim];
            HostData::I64(per_line(l, *dim, 1, |s, st, o: &mut [i64]| {
                // the first NaN wins for both argmax and argmin (NaN propagates, as PyTorch); else the
                // first occurrence of the extreme value
                let mut best = 0usize;
                let mut b = if n > 0 { v[s].to_f64() } else { 0.0 };
                if !b.is_nan() {
                    for i in 1..n {
                        let x = v[s + i * st].to_f64();
                        if x.is_nan() {
                            best = i;
                            break;
                        }
                        if (max && x > b) || (!max && x < b) {
                            best = i;
                            b = x;
                        }
                    }
                }
                o[0] = best as i64;
            }))
        }
    })
}
