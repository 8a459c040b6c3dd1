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
            let c = total_cmp_nan_max(v[s + i * st], v[s + j * st]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan_typed;
    use ember_storage::ScanOp;

    /// i64 keys above 2^53 that differ by less than an f64 ulp order correctly (they were compared
    /// through f64, so they tied and kept their input order), in sort and in cummin.
    #[test]
    fn large_i64_keys_are_compared_exactly() {
        let (a, b) = ((1i64 << 53) + 1, 1i64 << 53);
        let l = Layout::contiguous(&[2]);
        let (vals, idx) = sort_typed(&[a, b], &l, 0, false);
        assert_eq!((vals, idx), (HostData::I64(vec![b, a]), HostData::I64(vec![1, 0])));
        // cummin keeps the smaller b (the f64 compare saw a tie and moved to a, the last extreme)
        let (vals, idx) = scan_typed(ScanOp::Cummin, &[b, a], &l, 0);
        assert_eq!((vals, idx), (HostData::I64(vec![b, b]), Some(HostData::I64(vec![0, 0]))));
    }
}
