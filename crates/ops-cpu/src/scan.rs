//! The `ScanOp` kernels (cumsum, cumprod, cummax, cummin) along one dim.

use crate::lines::per_line;
use ember_storage::{HostData, HostElement, Layout, ScanOp};

pub(crate) fn scan_typed<T: HostElement + Sync>(
    op: ScanOp,
    v: &[T],
    l: &Layout,
    dim: usize,
) -> (HostData, Option<HostData>) {
    let n = l.shape().get(dim).copied().unwrap_or(1);
    let float = T::DTYPE.is_float();
    match op {
        ScanOp::Cumsum | ScanOp::Cumprod => {
            let sum = op == ScanOp::Cumsum;
            let out = per_line(l, dim, n, |s, st, o: &mut [T]| {
                if float {
                    let mut acc = if sum { 0.0 } else { 1.0 };
                    for (i, o) in o.iter_mut().enumerate() {
                        let x = v[s + i * st].to_f64();
                        acc = if sum { acc + x } else { acc * x };
                        *o = T::from_f64(acc);
                    }
                } else {
                    let mut acc: i64 = if sum { 0 } else { 1 };
                    for (i, o) in o.iter_mut().enumerate() {
                        let x = v[s + i * st].to_i64();
                        acc = if sum { acc.wrapping_add(x) } else { acc.wrapping_mul(x) };
                        *o = T::from_i64(acc);
                    }
                }
            });
            (HostData::from_vec(out), None)
        }
        ScanOp::Cummax | ScanOp::Cummin => {
            let max = op == ScanOp::Cummax;
            let pairs = per_line(l, dim, n, |s, st, o: &mut [(f64, i64)]| {
                let mut best = (0.0f64, -1i64);
                for (i, o) in o.iter_mut().enumerate() {
                    let x = v[s + i * st].to_f64();
                    let better =
                        i == 0 || x.is_nan() || (!best.0.is_nan() && if max { x >= best.0 } else { x <= best.0 });
                    if better {
                        best = (x, i as i64);
                    }
                    *o = best;
                }
            });
            let idx: Vec<i64> = pairs.iter().map(|p| p.1).collect();
            // values re-read exactly from the input through the indices
            let vals = per_line(l, dim, n, |s, st, o: &mut [T]| {
                let mut best = 0usize;
                for (i, o) in o.iter_mut().enumerate() {
                    let x = v[s + i * st].to_f64();
                    let b = v[s + best * st].to_f64();
                    if i == 0 || x.is_nan() || (!b.is_nan() && if max { x >= b } else { x <= b }) {
                        best = i;
                    }
                    *o = v[s + best * st];
                }
            });
            (HostData::from_vec(vals), Some(HostData::I64(idx)))
        }
    }
}
