//! Shape arithmetic shared by every layer: element counts, dim normalisation and NumPy broadcasting.

use crate::{Error, Result};

/// The most elements (and the largest element index, offset or stride) any tensor may have:
/// `isize::MAX / 8`, so that an element index times the widest element size (8 bytes) is a valid
/// pointer offset. Every layout Ember builds is checked against it with arithmetic that cannot wrap.
pub const MAX_ELEMENTS: usize = isize::MAX as usize / 8;

/// Number of elements of a shape (1 for a scalar's empty shape). Saturates at `usize::MAX` when the
/// product overflows, so that an overflowing shape never compares equal to a small buffer; use
/// [`checked_numel`] to reject such shapes with an error.
pub fn numel(shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n)).unwrap_or(usize::MAX)
}

/// Number of elements of `shape`, or an error naming `op` and the shape when the count exceeds
/// [`MAX_ELEMENTS`] or any single size does (even in an empty shape: sizes must stay valid `i64`s
/// for PyTorch-style signed shape arithmetic). PyTorch says "numel: integer multiplication overflow".
///
/// ```
/// use ember_storage::shape::checked_numel;
/// assert_eq!(checked_numel(&[2, 3], "zeros").unwrap(), 6);
/// assert!(checked_numel(&[4, 1 << 62], "zeros").is_err());
/// assert_eq!(checked_numel(&[1 << 40, 1 << 40, 0], "zeros").unwrap(), 0);
/// ```
pub fn checked_numel(shape: &[usize], op: &str) -> Result<usize> {
    let n = numel(shape);
    if n > MAX_ELEMENTS || shape.iter().any(|&d| d > MAX_ELEMENTS) {
        return Err(Error::invalid(
            op,
            format!("shape {shape:?} has more elements than any tensor can hold (at most {MAX_ELEMENTS})"),
        ));
    }
    Ok(n)
}

/// Row-major (C-contiguous) strides for `shape`. Saturating at [`MAX_ELEMENTS`]: the strides of a
/// non-empty shape that passes [`checked_numel`] are exact; those of an empty shape with huge
/// sizes (`[0, 2^48, 2^44]`, never read through) stay valid, and those of an overflowing shape never
/// wrap to small values.
pub fn contiguous_strides(shape: &[usize]) -> crate::Dims {
    let mut strides: crate::Dims = smallvec::smallvec![0; shape.len()];
    let mut acc = 1usize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(shape[i].max(1)).min(MAX_ELEMENTS);
    }
    strides
}

/// Turns a possibly negative `dim` into an index into a shape of rank `ndim`.
///
/// ```
/// assert_eq!(ember_storage::shape::normalize_dim(-1, 3, "sum").unwrap(), 2);
/// assert!(ember_storage::shape::normalize_dim(3, 3, "sum").is_err());
/// ```
pub fn normalize_dim(dim: isize, ndim: usize, op: &str) -> Result<usize> {
    let n = ndim as isize;
    // PyTorch lets a scalar (rank 0) be addressed as dim 0 or -1.
    let range = n.max(1);
    if dim < -range || dim >= range {
        return Err(Error::invalid(
            op,
            format!("dim {dim} is out of range for a tensor of rank {ndim} (expected in [{}, {}])", -range, range - 1),
        ));
    }
    Ok(if dim < 0 { (dim + range) as usize } else { dim as usize })
}

/// Normalises a list of dims and rejects repeats.
pub fn normalize_dims(dims: &[isize], ndim: usize, op: &str) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        let d = normalize_dim(d, ndim, op)?;
        if out.contains(&d) {
            return Err(Error::invalid(op, format!("dim {d} appears more than once in {dims:?}")));
        }
        out.push(d);
    }
    Ok(out)
}

/// The shape two shapes broadcast to under NumPy's rules.
///
/// ```
/// use ember_storage::shape::broadcast_shapes;
/// assert_eq!(broadcast_shapes(&[3, 1, 5], &[4, 1], "add").unwrap().as_slice(), &[3, 4, 5]);
/// assert!(broadcast_shapes(&[3], &[4], "add").is_err());
/// ```
pub fn broadcast_shapes(a: &[usize], b: &[usize], op: &str) -> Result<crate::Dims> {
    if a == b {
        return Ok(crate::Dims::from_slice(a));
    }
    let n = a.len().max(b.len());
    let mut out: crate::Dims = smallvec::smallvec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() { 1 } else { a[i - (n - a.len())] };
        let db = if i < n - b.len() { 1 } else { b[i - (n - b.len())] };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(
                op,
                format!("shapes {a:?} and {b:?} cannot be broadcast together (dim {i}: {da} vs {db})"),
            ));
        };
    }
    Ok(out)
}

/// Checks the operands a backend's `matmul` receives: `a` `[..., m, k]` and `b` `[..., k, n]` with
/// equal batch dims (the Tensor layer broadcasts first).
pub fn check_matmul_shapes(a: &[usize], b: &[usize]) -> Result<()> {
    let nd = a.len();
    if nd < 2 || b.len() != nd || a[..nd - 2] != b[..nd - 2] || a[nd - 1] != b[nd - 2] {
        return Err(Error::shape("matmul", format!("backend got shapes {a:?} and {b:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_of_shapes() {
        assert_eq!(contiguous_strides(&[2, 3, 4]).as_slice(), &[12, 4, 1]);
        assert!(contiguous_strides(&[]).is_empty());
        assert_eq!(numel(&[]), 1);
        assert_eq!(numel(&[2, 0]), 0);
        assert_eq!(numel(&[4, 1 << 62]), usize::MAX, "saturates instead of wrapping to 0");
        assert_eq!(numel(&[usize::MAX, usize::MAX, 0]), 0);
        assert!(checked_numel(&[1 << 31, 1 << 31, 1 << 2], "x").is_err());
        assert!(checked_numel(&[0, usize::MAX], "x").is_err());
        assert_eq!(checked_numel(&[0, 1 << 59], "x").unwrap(), 0);
        assert_eq!(contiguous_strides(&[4, 1 << 62, 1 << 62]).as_slice(), &[MAX_ELEMENTS, MAX_ELEMENTS, 1]);
        assert_eq!(contiguous_strides(&[0, 1 << 48, 1 << 44]).as_slice(), &[MAX_ELEMENTS, 1 << 44, 1]);
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shapes(&[], &[2, 3], "x").unwrap().as_slice(), &[2, 3]);
        assert_eq!(broadcast_shapes(&[0, 1], &[1, 3], "x").unwrap().as_slice(), &[0, 3]);
        let e = broadcast_shapes(&[2, 3], &[4, 3], "mul").unwrap_err();
        assert!(e.to_string().contains("mul") && e.to_string().contains("[2, 3]"));
    }
}
