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
            // compared natively (an i64 above 2^53 is not rounded through f64); `x != x` is NaN
            #[allow(clippy::eq_op)]
            let better = |x: T, best: T| x != x || (best == best && if max { x >= best } else { x <= best });
            let pairs = per_line(l, dim, n, |s, st, o: &mut [(T, i64)]| {
                let mut best = (T::default(), -1i64);
                for (i, o) in o.iter_mut().enumerate() {
                    let x = v[s + i * st];
                    if i == 0 || better(x, best.0) {
                        best = (x, i as i64);
                    }
                    *o = best;
                }
            });
            let idx: Vec<i64> = pairs.iter().map(|p| p.1).collect();
            let vals: Vec<T> = pairs.iter().map(|p| p.0).collect();
            (HostData::from_vec(vals), Some(HostData::I64(idx)))
        }
    }
}
