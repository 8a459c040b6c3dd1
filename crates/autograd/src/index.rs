//! Indexing: index_select, gather, scatter, scatter_add, index_add, masked ops, nonzero, take_along_dim,
//! one_hot, and basic slicing with [`SliceItem`] (`x[1:5:2, ..., -1]` is `x.i(&[s(1, 5, 2), ELLIPSIS, (-1).into()])`).

use crate::Tensor;
use ember_storage::shape::normalize_dim;
use ember_storage::{DType, Error, IndexOp, Result};
use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

/// One position of a basic-indexing expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SliceItem {
    /// An integer: selects and removes the dim (negative counts from the end).
    Index(isize),
    /// A Python slice `start:end:step` (`None` = open; step > 0).
    Slice(Option<isize>, Option<isize>, usize),
    /// `None` in Python: a new size-1 dim.
    NewAxis,
    /// `...`: as many full slices as needed.
    Ellipsis,
}

/// `...` for [`Tensor::i`].
pub const ELLIPSIS: SliceItem = SliceItem::Ellipsis;
/// `None` (new axis) for [`Tensor::i`].
pub const NEW_AXIS: SliceItem = SliceItem::NewAxis;

/// A slice `start:end:step` for [`Tensor::i`].
pub fn s(start: isize, end: isize, step: usize) -> SliceItem {
    SliceItem::Slice(Some(start), Some(end), step)
}

/// `From` impls for integers and every kind of range over one integer type, for all integer types
/// (so `idx![.., ..t]` works with `t: usize` from `shape()` as well as with literals).
macro_rules! slice_item_from {
    ($($t:ty),*) => {$(
        impl From<$t> for SliceItem {
            fn from(i: $t) -> Self {
                SliceItem::Index(crate::Dim::to_isize(i))
            }
        }
        impl From<Range<$t>> for SliceItem {
            fn from(r: Range<$t>) -> Self {
                SliceItem::Slice(Some(crate::Dim::to_isize(r.start)), Some(crate::Dim::to_isize(r.end)), 1)
            }
        }
        impl From<RangeInclusive<$t>> for SliceItem {
            fn from(r: RangeInclusive<$t>) -> Self {
                let end = crate::Dim::to_isize(*r.end());
                // `..=-1` reaches the end, as Python's `:` does
                let end = if end == -1 { None } else { Some(end.saturating_add(1)) };
                SliceItem::Slice(Some(crate::Dim::to_isize(*r.start())), end, 1)
            }
        }
        impl From<RangeFrom<$t>> for SliceItem {
            fn from(r: RangeFrom<$t>) -> Self {
                SliceItem::Slice(Some(crate::Dim::to_isize(r.start)), None, 1)
            }
        }
        impl From<RangeTo<$t>> for SliceItem {
            fn from(r: RangeTo<$t>) -> Self {
                SliceItem::Slice(None, Some(crate::Dim::to_isize(r.end)), 1)
            }
        }
        impl From<RangeToInclusive<$t>> for SliceItem {
            fn from(r: RangeToInclusive<$t>) -> Self {
                let end = crate::Dim::to_isize(r.end);
                SliceItem::Slice(None, if end == -1 { None } else { Some(end.saturating_add(1)) }, 1)
            }
        }
    )*};
}
slice_item_from!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
impl From<RangeFull> for SliceItem {
    fn from(_: RangeFull) -> Self {
        SliceItem::Slice(None, None, 1)
    }
}

/// Builds an array of `SliceItem`s for [`Tensor::i`]: `x.i(&idx![1..5, .., -1])`.
#[macro_export]
macro_rules! idx {
    ($($e:expr),* $(,)?) => { [$($crate::SliceItem::from($e)),*] };
}

impl Tensor {
    /// Basic indexing, as `x[...]` in PyTorch: integers, slices with step, new axes and one ellipsis.
    /// The result is a view.
    ///
    /// ```
    /// use ember_autograd::{idx, s, Tensor, ELLIPSIS};
    /// let x = Tensor::arange(24).unwrap().reshape(&[6, 4]).unwrap();
    /// let y = x.i(&[s(1, 5, 2), ELLIPSIS, (-1).into()]).unwrap(); // x[1:5:2, ..., -1]
    /// assert_eq!(y.to_vec::<i64>().unwrap(), vec![7, 15]);
    /// assert_eq!(x.i(&idx![.., 0..2]).unwrap().shape(), &[6, 2]);
    /// ```
    pub fn i(&self, items: &[SliceItem]) -> Result<Tensor> {
        let consumes = |it: &SliceItem| matches!(it, SliceItem::Index(_) | SliceItem::Slice(..));
        let used = items.iter().filter(|i| consumes(i)).count();
        let ellipses = items.iter().filter(|i| **i == SliceItem::Ellipsis).count();
        if ellipses > 1 || used > self.ndim() {
            return Err(Error::invalid(
                "getitem",
                format!("too many indices ({used}) for a tensor of rank {} or more than one ellipsis", self.ndim()),
            ));
        }
        let mut t = self.clone();
        let mut dim = 0isize;
        for it in items {
            match *it {
                SliceItem::Index(i) => t = t.select(dim, i)?,
                SliceItem::Slice(a, b, st) => {
                    t = t.slice(dim, a, b, st)?;
                    dim += 1;
                }
                SliceItem::NewAxis => {
                    t = t.unsqueeze(dim)?;
                    dim += 1;
                }
                SliceItem::Ellipsis => dim += (self.ndim() - used) as isize,
            }
        }
        Ok(t)
    }

    fn index_op(&self, op: IndexOp, index: &Tensor, src: Option<&Tensor>, out_shape: &[usize]) -> Result<Tensor> {
        crate::tensor::same_device("index", &[self, index])?;
        if index.dtype() != DType::I64 {
            return Err(Error::dtype("index", format!("indices must be i64, got {}", index.dtype())));
        }
        let src = match src {
            Some(s) => Some(s.to_dtype(self.dtype())?),
            None => None,
        };
        let buf = self.backend().index(op, self.v(), index.v(), src.as_ref().map(|s| s.v()))?;
        let out = self.same_backend(buf, out_shape);
        if !out.dtype().is_float() {
            return Ok(out);
        }
        let (idx, xshape) = (index.clone(), self.shape().to_vec());
        let inputs: Vec<&Tensor> = match &src {
            Some(s) => vec![self, s],
            None => vec![self],
        };
        Ok(crate::graph::record(out, "index", &inputs, move |g| {
            let zeros = || Tensor::zeros_with(&xshape, g.dtype(), g.device());
            Ok(match op {
                IndexOp::IndexSelect { dim } => {
                    smallvec::smallvec![Some(zeros()?.index_add(dim as isize, &idx, g, 1.0)?)]
                }
                IndexOp::Gather { dim } => smallvec::smallvec![Some(zeros()?.scatter_add(dim as isize, &idx, g)?)],
                IndexOp::Scatter { dim } => {
                    let z = Tensor::zeros_with(idx.shape(), g.dtype(), g.device())?;
                    smallvec::smallvec![Some(g.scatter(dim as isize, &idx, &z)?), Some(g.gather(dim as isize, &idx)?)]
                }
                IndexOp::ScatterAdd { dim } => {
                    smallvec::smallvec![Some(g.clone()), Some(g.gather(dim as isize, &idx)?)]
                }
                IndexOp::IndexAdd { dim } => {
                    smallvec::smallvec![Some(g.clone()), Some(g.index_select(dim as isize, &idx)?)]
                }
            })
        }))
    }

    /// Rows (along `dim`) picked by a 1-d i64 `index`.
    pub fn index_select(&self, dim: impl crate::Dim, index: &Tensor) -> Result<Tensor> {
        let dim = dim.to_isize();
        let x = if self.ndim() == 0 { self.reshape([1])? } else { self.clone() };
        let d = normalize_dim(dim, x.ndim(), "index_select")?;
        if index.ndim() > 1 {
            return Err(Error::shape("index_select", format!("index must be 1-d, got shape {:?}", index.shape())));
        }
        let mut shape = x.shape().to_vec();
        shape[d] = index.numel();
        let r = x.index_op(IndexOp::IndexSelect { dim: d }, index, None, &shape)?;
        if self.ndim() == 0 {
            r.reshape(crate::SCALAR)
        } else {
            Ok(r)
        }
    }

    fn check_gather_shapes(&self, op: &str, d: usize, index: &Tensor, src: Option<&Tensor>) -> Result<()> {
        if index.ndim() != self.ndim().max(1) && !(self.ndim() == 0 && index.ndim() == 0) {
            return Err(Error::shape(
                op,
                format!("index {:?} and input {:?} must have the same rank", index.shape(), self.shape()),
            ));
        }
        for (i, &s) in index.shape().iter().enumerate() {
            if i != d && s > self.shape().get(i).copied().unwrap_or(1) {
                return Err(Error::shape(
                    op,
                    format!("index {:?} is larger than input {:?} in dim {i}", index.shape(), self.shape()),
                ));
            }
            if let Some(src) = src {
                if s > src.shape().get(i).copied().unwrap_or(1) {
                    return Err(Error::shape(
                        op,
                        format!("index {:?} is larger than src {:?} in dim {i}", index.shape(), src.shape()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `out[i][j] = self[i][index[i][j]]` (for dim 1).
    pub fn gather(&self, dim: impl crate::Dim, index: &Tensor) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = normalize_dim(dim, self.ndim(), "gather")?;
        self.check_gather_shapes("gather", d, index, None)?;
        self.index_op(IndexOp::Gather { dim: d }, index, None, index.shape())
    }

    /// `torch.take_along_dim`: gather with broadcasting of the non-indexed dims.
    pub fn take_along_dim(&self, indices: &Tensor, dim: Option<isize>) -> Result<Tensor> {
        match dim {
            None => self.reshape([-1])?.gather(0, &indices.reshape([-1])?),
            Some(dim) => {
                let d = normalize_dim(dim, self.ndim(), "take_along_dim")?;
                let (mut a, mut b) = (self.shape().to_vec(), indices.shape().to_vec());
                a[d] = 1;
                b[d] = 1;
                let common = ember_storage::shape::broadcast_shapes(&a, &b, "take_along_dim")?;
                let (mut sa, mut sb) = (common.clone(), common);
                sa[d] = self.shape()[d];
                sb[d] = indices.shape()[d];
                self.broadcast_to(&sa)?.gather(dim, &indices.broadcast_to(&sb)?)
            }
        }
    }

    /// Copy of `self` with `src` values written at `index` along `dim`.
    pub fn scatter(&self, dim: impl crate::Dim, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = normalize_dim(dim, self.ndim(), "scatter")?;
        self.check_gather_shapes("scatter", d, index, Some(src))?;
        self.index_op(IndexOp::Scatter { dim: d }, index, Some(src), self.shape())
    }

    /// Copy of `self` with `value` written at `index` along `dim`.
    pub fn scatter_value(&self, dim: impl crate::Dim, index: &Tensor, value: f64) -> Result<Tensor> {
        let dim = dim.to_isize();
        let src = Tensor::full_with(index.shape(), value, self.dtype(), self.device())?;
        self.scatter(dim, index, &src)
    }

    /// Copy of `self` with `src` values added at `index` along `dim`.
    pub fn scatter_add(&self, dim: impl crate::Dim, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = normalize_dim(dim, self.ndim(), "scatter_add")?;
        self.check_gather_shapes("scatter_add", d, index, Some(src))?;
        self.index_op(IndexOp::ScatterAdd { dim: d }, index, Some(src), self.shape())
    }

    /// Copy of `self` with `alpha * src` slices added at the rows `index` along `dim`.
    pub fn index_add(&self, dim: impl crate::Dim, index: &Tensor, src: &Tensor, alpha: f64) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = normalize_dim(dim, self.ndim(), "index_add")?;
        let mut expect = self.shape().to_vec();
        if let Some(e) = expect.get_mut(d) {
            *e = index.numel();
        }
        if index.ndim() > 1 || src.shape() != expect.as_slice() {
            return Err(Error::shape(
                "index_add",
                format!(
                    "src {:?} must have shape {expect:?} for a 1-d index of {} entries",
                    src.shape(),
                    index.numel()
                ),
            ));
        }
        let src = if alpha == 1.0 { src.clone() } else { src.mul(alpha)? };
        self.index_op(IndexOp::IndexAdd { dim: d }, index, Some(&src), self.shape())
    }

    /// `value` where `mask` (bool, broadcastable) is true.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        if mask.dtype() != DType::Bool {
            return Err(Error::dtype("masked_fill", format!("mask must be bool, got {}", mask.dtype())));
        }
        let v = self.scalar_like(ember_storage::Scalar::F(value), self.dtype())?;
        let r = Tensor::where_cond(mask, &v, self)?;
        if r.shape() != self.shape() {
            return Err(Error::shape(
                "masked_fill",
                format!("mask {:?} does not broadcast to {:?}", mask.shape(), self.shape()),
            ));
        }
        Ok(r)
    }

    /// Indices of nonzero elements, `[count, ndim]` (i64).
    pub fn nonzero(&self) -> Result<Tensor> {
        let v = self.to_vec_f64()?;
        let nd = self.ndim();
        let strides = ember_storage::shape::contiguous_strides(self.shape());
        let mut out = vec![];
        for (k, x) in v.iter().enumerate() {
            if *x != 0.0 {
                let mut r = k;
                for &s in &strides {
                    out.push((r / s.max(1)) as i64);
                    r %= s.max(1);
                }
            }
        }
        let n = out.len().checked_div(nd).unwrap_or_else(|| v.first().is_some_and(|&x| x != 0.0) as usize);
        Tensor::from_vec(out, [n, nd])?.to(self.device())
    }

    /// The elements where `mask` is true, as a 1-d tensor.
    pub fn masked_select(&self, mask: &Tensor) -> Result<Tensor> {
        let shape = ember_storage::shape::broadcast_shapes(self.shape(), mask.shape(), "masked_select")?;
        let (x, m) = (self.broadcast_to(&shape)?.reshape([-1])?, mask.broadcast_to(&shape)?.reshape([-1])?);
        let idx = m.nonzero()?.reshape([-1])?;
        x.index_select(0, &idx)
    }

    /// One-hot encoding of i64 class indices (`num_classes` < 0: max + 1).
    pub fn one_hot(&self, num_classes: i64) -> Result<Tensor> {
        if self.dtype() != DType::I64 {
            return Err(Error::dtype("one_hot", format!("needs i64 class indices, got {}", self.dtype())));
        }
        let v = self.to_vec::<i64>()?;
        let n = if num_classes < 0 { v.iter().max().map(|m| m + 1).unwrap_or(0) } else { num_classes };
        if let Some(bad) = v.iter().find(|&&c| c < 0 || c >= n) {
            return Err(Error::invalid("one_hot", format!("class {bad} is out of range for {n} classes")));
        }
        let mut shape = self.shape().to_vec();
        shape.push(n as usize);
        let z = Tensor::zeros_with(&shape, DType::I64, self.device())?;
        let ones = Tensor::ones_with([self.numel(), 1], DType::I64, self.device())?;
        z.reshape([-1, n as isize])?
            .scatter(1, &self.reshape([-1, 1])?, &ones)?
            .reshape(shape.iter().map(|&x| x as isize).collect::<Vec<_>>())
    }

    /// Embedding lookup where rows at `padding_idx` get no gradient (`F.embedding(padding_idx=...)`).
    pub fn embedding_padded(&self, indices: &Tensor, padding_idx: Option<i64>) -> Result<Tensor> {
        let out = self.embedding(indices)?;
        let Some(p) = padding_idx else { return Ok(out) };
        let p = if p < 0 { p + self.shape()[0] as i64 } else { p };
        let pad = indices.eq(p)?.unsqueeze(-1)?;
        // same values; the padding rows come from a detached copy of the weight
        Tensor::where_cond(&pad, &self.detach().embedding(indices)?, &out)
    }

    /// Embedding lookup: rows of `self` (the weight, `[num, dim]`) at `indices` (any shape, i64).
    pub fn embedding(&self, indices: &Tensor) -> Result<Tensor> {
        if self.ndim() != 2 {
            return Err(Error::shape("embedding", format!("weight must be 2-d, got {:?}", self.shape())));
        }
        let mut shape: Vec<isize> = indices.shape().iter().map(|&x| x as isize).collect();
        shape.push(self.shape()[1] as isize);
        self.index_select(0, &indices.reshape([-1])?)?.reshape(&shape)
    }
}
