//! Indexing kernels: index_select, gather, scatter, scatter_add, index_add. Every index is bounds-checked.

use crate::lines::per_line;
use ember_storage::{Element, Error, IndexOp, Layout, Result};

/// Calls `f(multi_index)` for every element of `shape`, row-major.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn check_index(op: &str, i: i64, size: usize) -> Result<usize> {
    if i < 0 || i as usize >= size {
        return Err(Error::invalid(op, format!("index {i} is out of bounds for dimension with size {size}")));
    }
    Ok(i as usize)
}

fn at(l: &Layout, m: &[usize]) -> usize {
    l.index_of(m)
}

/// Reads an i64 index view densely.
fn indices(idx: &[i64], li: &Layout) -> Vec<i64> {
    crate::strided::gather(idx, li, |v| v)
}

/// Runs one indexing op; `add` merges a scattered value into the destination (ignored for plain writes).
pub(crate) fn index_op<T: Element + Sync>(
    op: IndexOp,
    x: &[T],
    lx: &Layout,
    idx: &[i64],
    li: &Layout,
    src: Option<(&[T], &Layout)>,
    add: impl Fn(T, T) -> T,
) -> Result<Vec<T>> {
    let name = op.name();
    let xs = lx.shape();
    let dim = op.dim();
    if dim >= xs.len()
        || (!matches!(op, IndexOp::IndexSelect { .. } | IndexOp::IndexAdd { .. }) && li.ndim() != xs.len())
    {
        return Err(Error::invalid(
            name,
            format!("dim {dim} and index shape {:?} do not fit input shape {xs:?}", li.shape()),
        ));
    }
    if let (Some((_, ls)), IndexOp::IndexAdd { .. }) = (src, op) {
        if ls.ndim() != xs.len() {
            return Err(Error::invalid(name, format!("src shape {:?} does not fit input shape {xs:?}", ls.shape())));
        }
    }
    match op {
        IndexOp::IndexSelect { dim } => {
            let ix = indices(idx, li);
            let size = xs.get(dim).copied().unwrap_or(1);
            for &i in &ix {
                check_index(name, i, size)?;
            }
            Ok(per_line(lx, dim, ix.len(), |s, st, o: &mut [T]| {
                for (o, &i) in o.iter_mut().zip(&ix) {
                    *o = x[s + i as usize * st];
                }
            }))
        }
        IndexOp::Gather { dim } if last_dim_rows(dim, xs, li, Some(lx)).is_some() => {
            let (rows, k, kx, x0, i0) = last_dim_rows(dim, xs, li, Some(lx)).expect("checked");
            let (xv, iv) = (&x[x0..], &idx[i0..]);
            let mut out = crate::pool::reserve(rows * k);
            for r in 0..rows {
                for &i in &iv[r * k..(r + 1) * k] {
                    out.push(xv[r * kx + check_index(name, i, kx)?]);
                }
            }
            Ok(out)
        }
        IndexOp::Scatter { dim } | IndexOp::ScatterAdd { dim }
            if src.is_some_and(|(_, ls)| ls.shape() == li.shape() && ls.contiguous_range().is_some())
                && last_dim_rows(dim, xs, li, None).is_some() =>
        {
            let (rows, k, kx, _, i0) = last_dim_rows(dim, xs, li, None).expect("checked");
            let (sv, ls) = src.expect("checked");
            let s0 = ls.contiguous_range().expect("checked").0;
            let (sv, iv) = (&sv[s0..], &idx[i0..]);
            let mut out = crate::strided::gather(x, lx, |v| v);
            let plain = matches!(op, IndexOp::Scatter { .. });
            for r in 0..rows {
                for j in 0..k {
                    let p = r * kx + check_index(name, iv[r * k + j], kx)?;
                    let v = sv[r * k + j];
                    out[p] = if plain { v } else { add(out[p], v) };
                }
            }
            Ok(out)
        }
        IndexOp::Gather { dim } => {
            let mut out = crate::pool::reserve(li.numel());
            redirect(name, li.shape(), dim, xs[dim], |m| idx[at(li, m)], |_, m2| out.push(x[at(lx, m2)]))?;
            Ok(out)
        }
        IndexOp::Scatter { dim } | IndexOp::ScatterAdd { dim } | IndexOp::IndexAdd { dim } => {
            let (sv, ls) = src.ok_or_else(|| Error::invalid(name, "needs a src tensor"))?;
            let mut out = crate::strided::gather(x, lx, |v| v);
            let lo = Layout::contiguous(xs);
            let mut write = |m: &[usize], m2: &[usize]| {
                let (p, v) = (at(&lo, m2), sv[at(ls, m)]);
                out[p] = if matches!(op, IndexOp::Scatter { .. }) { v } else { add(out[p], v) };
            };
            if let IndexOp::IndexAdd { .. } = op {
                // a 1-d index picks the destination row for each row of src
                let ix = indices(idx, li);
                redirect(name, ls.shape(), dim, xs[dim], |m| ix[m[dim]], &mut write)?;
            } else {
                redirect(name, li.shape(), dim, xs[dim], |m| idx[at(li, m)], &mut write)?;
            }
            Ok(out)
        }
    }
}

/// The fast path of gather/scatter along the last dim: when the index is contiguous, agrees with
/// the input in every other dim, and (for gather) the input is contiguous, returns
/// `(rows, index row length, input row length, input start, index start)`.
fn last_dim_rows(
    dim: usize,
    xs: &[usize],
    li: &Layout,
    lx: Option<&Layout>,
) -> Option<(usize, usize, usize, usize, usize)> {
    if dim + 1 != xs.len() || li.shape()[..dim] != xs[..dim] {
        return None;
    }
    let (i0, _) = li.contiguous_range()?;
    let x0 = match lx {
        Some(l) => l.contiguous_range()?.0,
        None => 0,
    };
    let k = li.shape()[dim];
    let rows = li.numel().checked_div(k).unwrap_or(0);
    Some((rows, k, xs[dim], x0, i0))
}

/// For every multi-index `m` of `shape` (row-major), looks up the position `target(m)` along `dim`,
/// checks it against `size`, and calls `f(m, m with that coordinate replaced)`. Stops at the first
/// out-of-range index.
fn redirect(
    name: &str,
    shape: &[usize],
    dim: usize,
    size: usize,
    target: impl Fn(&[usize]) -> i64,
    mut f: impl FnMut(&[usize], &[usize]),
) -> Result<()> {
    let mut m2 = vec![0; shape.len()];
    let mut err = None;
    for_each_index(shape, |m| {
        if err.is_some() {
            return;
        }
        match check_index(name, target(m), size) {
            Ok(j) => {
                m2.copy_from_slice(m);
                m2[dim] = j;
                f(m, &m2);
            }
            Err(e) => err = Some(e),
        }
    });
    err.map_or(Ok(()), Err)
}
