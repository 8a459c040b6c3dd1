//! `Layout`: shape, strides and start offset into a buffer. Every view is a new layout over the same buffer.

use crate::shape::{checked_numel, contiguous_strides, normalize_dim, numel, MAX_ELEMENTS};
use crate::{Error, Result};
use smallvec::SmallVec;

/// Sizes or strides, inline up to 6 dims (most tensors), so a new layout rarely allocates.
pub type Dims = SmallVec<[usize; 6]>;

/// How a tensor's elements sit in its buffer: element `idx` is at `offset + sum(idx[d] * strides[d])`.
///
/// Views (`permute`, `narrow`, `expand`, ...) only compute a new `Layout`; no data moves.
///
/// Every element count, span and offset is computed with arithmetic that cannot wrap: a layout whose
/// numbers overflow has a `numel`/`span_end` of `usize::MAX` and fails [`Layout::check_fits`] for any
/// real buffer. Every fallible constructor and view also checks [`Layout::validate`]: element count,
/// strides, offset and span all at most [`MAX_ELEMENTS`], so that kernels can turn any index of a
/// fitting layout into a pointer offset (index x element size <= `isize::MAX`) without overflow.
///
/// ```
/// use ember_storage::Layout;
/// let l = Layout::contiguous(&[2, 3]);
/// let t = l.transpose(0, 1).unwrap();
/// assert_eq!(t.shape(), &[3, 2]);
/// assert_eq!(t.strides(), &[1, 3]);
/// assert!(!t.is_contiguous());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Dims,
    strides: Dims,
    offset: usize,
}

impl Layout {
    /// A row-major layout starting at element 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: Dims::from_slice(shape), strides: contiguous_strides(shape), offset: 0 }
    }

    /// A layout with explicit strides and offset. Use [`Layout::check_fits`] before reading a buffer through it.
    pub fn strided(shape: &[usize], strides: &[usize], offset: usize) -> Result<Self> {
        if shape.len() != strides.len() {
            return Err(Error::invalid(
                "as_strided",
                format!("shape {shape:?} and strides {strides:?} have different lengths"),
            ));
        }
        Layout { shape: Dims::from_slice(shape), strides: Dims::from_slice(strides), offset }.validate("as_strided")
    }

    /// Checks the invariants every layout handed to a kernel must hold: element count, every stride,
    /// the offset and the span (one past the last reachable index) at most [`MAX_ELEMENTS`].
    /// Returns the layout, so views can end with `.validate(op)`.
    pub fn validate(self, op: &str) -> Result<Self> {
        checked_numel(&self.shape, op)?;
        if let Some(s) = self.strides.iter().chain([&self.offset]).find(|&&s| s > MAX_ELEMENTS) {
            return Err(Error::invalid(
                op,
                format!("stride or offset {s} of shape {:?} exceeds the largest allowed ({MAX_ELEMENTS})", self.shape),
            ));
        }
        match self.checked_span_end() {
            Some(end) if end <= MAX_ELEMENTS => Ok(self),
            _ => Err(Error::invalid(
                op,
                format!(
                    "layout (shape {:?}, strides {:?}, offset {}) reaches past the largest allowed index ({MAX_ELEMENTS})",
                    self.shape, self.strides, self.offset
                ),
            )),
        }
    }

    /// One past the largest index this layout can touch, `None` when that overflows `usize`.
    fn checked_span_end(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        let mut end = self.offset.checked_add(1)?;
        for (&n, &s) in self.shape.iter().zip(&self.strides) {
            end = end.checked_add((n - 1).checked_mul(s)?)?;
        }
        Some(end)
    }

    /// The sizes.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The strides, in elements.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// The index of the first element in the buffer.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// Rank.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// One past the largest buffer index this layout can touch (0 when it has no elements);
    /// `usize::MAX` when that overflows, which no buffer fits.
    pub fn span_end(&self) -> usize {
        self.checked_span_end().unwrap_or(usize::MAX)
    }

    /// Checks that every element lies inside a buffer of `len` elements, with arithmetic that cannot
    /// wrap, and that the layout holds [`Layout::validate`]'s bounds. Kernels rely on this before
    /// reading through raw pointers.
    pub fn check_fits(&self, len: usize, op: &str) -> Result<()> {
        if self.numel() > MAX_ELEMENTS
            || self.offset > MAX_ELEMENTS
            || self.strides.iter().chain(&self.shape).any(|&s| s > MAX_ELEMENTS)
        {
            return Err(Error::invalid(
                op,
                format!(
                    "layout (shape {:?}, strides {:?}, offset {}) exceeds the largest allowed size, stride or offset ({MAX_ELEMENTS})",
                    self.shape, self.strides, self.offset
                ),
            ));
        }
        // an empty view may not point past the end either: kernels slice the buffer from the offset
        if self.span_end() > len || self.offset > len {
            return Err(Error::invalid(
                op,
                format!(
                    "layout (shape {:?}, strides {:?}, offset {}) reaches element {} of a buffer of {len}",
                    self.shape,
                    self.strides,
                    self.offset,
                    self.span_end().saturating_sub(1)
                ),
            ));
        }
        Ok(())
    }

    /// True when the elements are row-major and dense (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for i in (0..self.shape.len()).rev() {
            if self.shape[i] != 1 && self.strides[i] != expected {
                return false;
            }
            expected = match expected.checked_mul(self.shape[i]) {
                Some(e) => e,
                None => return false,
            };
        }
        true
    }

    /// `Some((start, end))` when the elements are one dense row-major run of the buffer.
    pub fn contiguous_range(&self) -> Option<(usize, usize)> {
        if self.is_contiguous() {
            Some((self.offset, self.offset.checked_add(self.numel())?))
        } else {
            None
        }
    }

    /// A view with a new shape, where the strides allow it (PyTorch's `view`); `None` when a copy is needed.
    pub fn reshape(&self, new_shape: &[usize]) -> Option<Layout> {
        if numel(new_shape) != self.numel() || self.numel() > MAX_ELEMENTS {
            return None;
        }
        if self.is_contiguous() {
            return Some(Layout {
                shape: Dims::from_slice(new_shape),
                strides: contiguous_strides(new_shape),
                offset: self.offset,
            });
        }
        if self.numel() == 0 {
            return Some(Layout::contiguous(new_shape).with_offset(self.offset));
        }
        // Walk old dims from the right, cutting them into chunks that are dense among themselves;
        // each chunk must be covered exactly by a run of new dims.
        let (os, ost) = (&self.shape, &self.strides);
        let mut new_strides: Dims = smallvec::smallvec![0usize; new_shape.len()];
        let mut view_d = new_shape.len() as isize - 1;
        let mut chunk_base = *ost.last()?;
        let (mut tensor_numel, mut view_numel) = (1usize, 1usize);
        for td in (0..os.len()).rev() {
            tensor_numel *= os[td];
            let chunk_ends = td == 0 || (os[td - 1] != 1 && ost[td - 1] != tensor_numel * chunk_base);
            if chunk_ends {
                while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1) {
                    new_strides[view_d as usize] = view_numel * chunk_base;
                    view_numel *= new_shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if td > 0 {
                    chunk_base = ost[td - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        if view_d != -1 {
            return None;
        }
        Some(Layout { shape: Dims::from_slice(new_shape), strides: new_strides, offset: self.offset })
    }

    fn with_offset(mut self, offset: usize) -> Layout {
        self.offset = offset;
        self
    }

    /// Reorders the dims: `dims[i]` is the old dim that becomes dim `i`.
    pub fn permute(&self, dims: &[usize]) -> Result<Layout> {
        let n = self.ndim();
        let mut seen = vec![false; n];
        if dims.len() != n || dims.iter().any(|&d| d >= n || std::mem::replace(&mut seen[d], true)) {
            return Err(Error::invalid(
                "permute",
                format!("dims {dims:?} are not a permutation of the {n} dims of shape {:?}", self.shape),
            ));
        }
        Ok(Layout {
            shape: dims.iter().map(|&d| self.shape[d]).collect(),
            strides: dims.iter().map(|&d| self.strides[d]).collect(),
            offset: self.offset,
        })
    }

    /// Swaps two dims.
    pub fn transpose(&self, a: usize, b: usize) -> Result<Layout> {
        let n = self.ndim();
        if n == 0 && a == 0 && b == 0 {
            return Ok(self.clone());
        }
        if a >= n || b >= n {
            return Err(Error::invalid(
                "transpose",
                format!("dims {a} and {b} out of range for shape {:?}", self.shape),
            ));
        }
        let mut l = self.clone();
        l.shape.swap(a, b);
        l.strides.swap(a, b);
        Ok(l)
    }

    /// The elements `start..start+len` along `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Layout> {
        let end = start.saturating_add(len);
        self.slice(dim, start, end, 1).and_then(|l| {
            if end > self.shape[dim] {
                Err(Error::invalid(
                    "narrow",
                    format!("start {start} + length {len} exceeds size {} of dim {dim}", self.shape[dim]),
                ))
            } else {
                Ok(l)
            }
        })
    }

    /// The elements `start, start+step, ... < end` along `dim` (bounds already clamped by the caller).
    pub fn slice(&self, dim: usize, start: usize, end: usize, step: usize) -> Result<Layout> {
        if dim >= self.ndim() {
            return Err(Error::invalid("slice", format!("dim {dim} out of range for shape {:?}", self.shape)));
        }
        if step == 0 {
            return Err(Error::invalid("slice", "step must be positive, got 0"));
        }
        let size = self.shape[dim];
        let end = end.min(size);
        let start = start.min(end);
        let len = (end - start).div_ceil(step);
        let mut l = self.clone();
        if len > 0 {
            l.offset += start * self.strides[dim];
        }
        l.shape[dim] = len;
        if len > 1 {
            // the stride of a dim with at most one element is never used: keep it, as PyTorch
            // multiplies it but never reads through it
            l.strides[dim] = l.strides[dim].saturating_mul(step);
        }
        l.validate("slice")
    }

    /// Removes `dim` by fixing it at `index`.
    pub fn select(&self, dim: usize, index: usize) -> Result<Layout> {
        if dim >= self.ndim() || index >= self.shape[dim] {
            return Err(Error::invalid(
                "select",
                format!("index {index} of dim {dim} is out of range for shape {:?}", self.shape),
            ));
        }
        let mut l = self.clone();
        l.offset += index * self.strides[dim];
        l.shape.remove(dim);
        l.strides.remove(dim);
        Ok(l)
    }

    /// Broadcasts to `shape` without copying (size-1 and missing leading dims get stride 0).
    pub fn expand(&self, shape: &[usize]) -> Result<Layout> {
        let n = shape.len();
        if n < self.ndim() {
            return Err(Error::shape(
                "expand",
                format!("cannot expand shape {:?} to {shape:?}: the target has fewer dims", self.shape),
            ));
        }
        let lead = n - self.ndim();
        let mut strides: Dims = smallvec::smallvec![0; n];
        for i in 0..n {
            if i < lead {
                continue;
            }
            let (own, st) = (self.shape[i - lead], self.strides[i - lead]);
            if own == shape[i] {
                strides[i] = st;
            } else if own == 1 {
                strides[i] = 0;
            } else {
                return Err(Error::shape(
                    "expand",
                    format!("cannot expand shape {:?} to {shape:?} (dim {i}: {own} is not 1)", self.shape),
                ));
            }
        }
        Layout { shape: Dims::from_slice(shape), strides, offset: self.offset }.validate("expand")
    }

    /// Inserts a size-1 dim at `dim` (0..=ndim).
    pub fn unsqueeze(&self, dim: usize) -> Result<Layout> {
        if dim > self.ndim() {
            return Err(Error::invalid("unsqueeze", format!("dim {dim} out of range for shape {:?}", self.shape)));
        }
        let mut l = self.clone();
        let st = if dim < self.ndim() { self.strides[dim].saturating_mul(self.shape[dim]) } else { 1 };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, st.min(MAX_ELEMENTS));
        Ok(l)
    }

    /// Removes `dim` if its size is 1 (otherwise returns the layout unchanged, as PyTorch does).
    pub fn squeeze(&self, dim: usize) -> Result<Layout> {
        if dim >= self.ndim().max(1) {
            return Err(Error::invalid("squeeze", format!("dim {dim} out of range for shape {:?}", self.shape)));
        }
        let mut l = self.clone();
        if self.ndim() > 0 && self.shape[dim] == 1 {
            l.shape.remove(dim);
            l.strides.remove(dim);
        }
        Ok(l)
    }

    /// The diagonal of dims `d1`, `d2` shifted by `offset`, appended as the last dim.
    pub fn diagonal(&self, offset: isize, d1: usize, d2: usize) -> Result<Layout> {
        let n = self.ndim();
        if d1 >= n || d2 >= n || d1 == d2 {
            return Err(Error::invalid(
                "diagonal",
                format!("dims {d1} and {d2} must be distinct dims of shape {:?}", self.shape),
            ));
        }
        let (s1, s2) = (self.shape[d1], self.shape[d2]);
        let o = offset.unsigned_abs();
        let (len, start) = if offset >= 0 {
            let len = s1.min(s2.saturating_sub(o));
            (len, if len > 0 { o * self.strides[d2] } else { 0 })
        } else {
            let len = s1.saturating_sub(o).min(s2);
            (len, if len > 0 { o * self.strides[d1] } else { 0 })
        };
        let mut shape = Dims::new();
        let mut strides = Dims::new();
        for i in 0..n {
            if i != d1 && i != d2 {
                shape.push(self.shape[i]);
                strides.push(self.strides[i]);
            }
        }
        shape.push(len);
        strides.push(self.strides[d1].saturating_add(self.strides[d2]));
        Layout { shape, strides, offset: self.offset + start }.validate("diagonal")
    }

    /// Sliding windows of `size` every `step` along `dim`; the window becomes a new last dim (`Tensor.unfold`).
    pub fn unfold(&self, dim: usize, size: usize, step: usize) -> Result<Layout> {
        let n = self.ndim();
        let d = if n == 0 { 0 } else { dim };
        let dsize = if n == 0 { 1 } else { self.shape.get(d).copied().unwrap_or(0) };
        if (n > 0 && dim >= n) || step == 0 || size > dsize {
            return Err(Error::invalid(
                "unfold",
                format!(
                    "size {size} step {step} on dim {dim} do not fit shape {:?} (need size <= dim size, step > 0)",
                    self.shape
                ),
            ));
        }
        let mut l = self.clone();
        let dstride = if n == 0 { 1 } else { self.strides[d] };
        if n > 0 {
            l.shape[d] = (dsize - size) / step + 1;
            if l.shape[d] > 1 {
                l.strides[d] = dstride.saturating_mul(step);
            }
        }
        l.shape.push(size);
        l.strides.push(dstride);
        l.validate("unfold")
    }

    /// Dims of size 1 dropped, e.g. to compare layouts for equivalence.
    pub fn squeeze_all(&self) -> Layout {
        let (shape, strides) =
            self.shape.iter().zip(&self.strides).filter(|(&n, _)| n != 1).map(|(&a, &b)| (a, b)).unzip();
        Layout { shape, strides, offset: self.offset }
    }

    /// Normalises a signed dim against this layout's rank.
    pub fn dim(&self, dim: isize, op: &str) -> Result<usize> {
        normalize_dim(dim, self.ndim(), op)
    }

    /// Buffer index of the element at `index` (one coordinate per dim).
    pub fn index_of(&self, index: &[usize]) -> usize {
        self.offset + index.iter().zip(&self.strides).map(|(i, s)| i * s).sum::<usize>()
    }
}

/// Visits the buffer index of every element of `layout` in row-major order, one innermost run at a time:
/// `f(start, stride, len)` covers indices `start, start+stride, ...` (`len` of them).
pub fn for_each_run(layout: &Layout, mut f: impl FnMut(usize, usize, usize)) {
    let n = layout.ndim();
    if layout.numel() == 0 {
        return;
    }
    if n == 0 {
        f(layout.offset(), 1, 1);
        return;
    }
    if let Some((s, e)) = layout.contiguous_range() {
        f(s, 1, e - s);
        return;
    }
    let shape = layout.shape();
    let strides = layout.strides();
    let inner = shape[n - 1];
    let inner_stride = strides[n - 1];
    let mut idx = vec![0usize; n - 1];
    let mut base = layout.offset();
    loop {
        f(base, inner_stride, inner);
        // odometer over the outer dims
        let mut d = n - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            base += strides[d];
            if idx[d] < shape[d] {
                break;
            }
            base -= strides[d] * shape[d];
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indices(l: &Layout) -> Vec<usize> {
        let mut v = vec![];
        for_each_run(l, |s, st, n| v.extend((0..n).map(|i| s + i * st)));
        v
    }

    #[test]
    fn views_compute_expected_indices() {
        let l = Layout::contiguous(&[2, 3]);
        assert_eq!(indices(&l.transpose(0, 1).unwrap()), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(indices(&l.narrow(1, 1, 2).unwrap()), vec![1, 2, 4, 5]);
        assert_eq!(indices(&l.slice(1, 0, 3, 2).unwrap()), vec![0, 2, 3, 5]);
        assert_eq!(indices(&l.select(0, 1).unwrap()), vec![3, 4, 5]);
        let sq = Layout::contiguous(&[3, 3]);
        assert_eq!(indices(&sq.diagonal(0, 0, 1).unwrap()), vec![0, 4, 8]);
        assert_eq!(indices(&sq.diagonal(1, 0, 1).unwrap()), vec![1, 5]);
        assert_eq!(indices(&sq.diagonal(-1, 0, 1).unwrap()), vec![3, 7]);
        let v = Layout::contiguous(&[5]);
        assert_eq!(indices(&v.unfold(0, 2, 2).unwrap()), vec![0, 1, 2, 3]);
        let e = Layout::contiguous(&[3, 1]).expand(&[2, 3, 2]).unwrap();
        assert_eq!(indices(&e), vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn reshape_views_where_possible() {
        let l = Layout::contiguous(&[4, 6]);
        assert_eq!(l.reshape(&[2, 2, 6]).unwrap().strides(), &[12, 6, 1]);
        let t = l.transpose(0, 1).unwrap(); // [6,4] strides [1,6]
        assert!(t.reshape(&[24]).is_none());
        assert_eq!(t.reshape(&[6, 2, 2]).unwrap().strides(), &[1, 12, 6]);
        let n = l.narrow(1, 0, 3).unwrap(); // [4,3] strides [6,1]
        assert!(n.reshape(&[12]).is_none());
        assert_eq!(n.reshape(&[2, 2, 3]).unwrap().strides(), &[12, 6, 1]);
        assert_eq!(n.reshape(&[4, 1, 3]).unwrap().shape(), &[4, 1, 3]);
    }

    #[test]
    fn bad_views_are_errors() {
        let l = Layout::contiguous(&[2, 3]);
        assert!(l.permute(&[0, 0]).is_err());
        assert!(l.slice(0, 0, 2, 0).is_err());
        assert!(l.expand(&[3, 3]).is_err());
        assert!(l.narrow(1, 2, 2).is_err());
        assert!(l.unfold(1, 4, 1).is_err());
        assert!(l.check_fits(5, "x").is_err());
        assert!(l.check_fits(6, "x").is_ok());
    }
}
