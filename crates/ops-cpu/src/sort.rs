//! Stable sort along one dim, NaN last (first when descending), with i64 indices.

use crate::host::*;
use crate::index;

use crate::lines::{per_line, total_cmp_nan_max};
use ember_storage::{HostData, HostElement, IndexOp, Layout};

pub(crate) fn sort_typed<T: HostElement + Sync>(
    v: &[T],
    l: &Layout,
    dim: usize,
    descending: bool,
) -> (HostData, HostData) {
    let n = l.shape().get(dim).copied().unwrap_or(1);
    let idx = per_line(l, dim, n, |s, st, o: &mut [i64]| {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| {
            let c = total_cmp_nan_max(v[s + i * st].to_f64(), v[s + j * st].to_f64());
            if descending {
                c.reverse()
            } else {
                c
            }
        });
        for (o, i) in o.iter_mut().zip(order) {
            *o = i as i64;
        }
    });
    // values are the input gathered through the sorted order (one sort per line, not two)
    let vals = index::index_op(IndexOp::Gather { dim }, v, l, &idx, &Layout::contiguous(l.shape()), None, add_elem)
        .expect("sort indices are in range by construction");
    (HostData::from_vec(vals), HostData::I64(idx))
}
