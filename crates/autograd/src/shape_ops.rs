//! Shape ops: views (reshape, permute, transpose, narrow, slice, select, expand, squeeze, unsqueeze,
//! diagonal, unfold) and copies (cat, stack, flip, roll, repeat, tile, tril/triu, pad).

use crate::Tensor;
use ember_storage::shape::{normalize_dim, normalize_dims};
use ember_storage::{DType, Error, Result};

/// Padding modes of [`Tensor::pad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// Fill with a value.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Replicate,
    /// Wrap around.
    Circular,
}

impl PadMode {
    /// Parses PyTorch's mode names.
    pub fn parse(s: &str) -> Result<PadMode> {
        Ok(match s {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "replicate" => PadMode::Replicate,
            "circular" => PadMode::Circular,
            _ => return Err(Error::invalid("pad", format!("unknown mode {s:?}"))),
        })
    }
}

impl Tensor {
    /// A view of `self` through `layout`, recorded with `backward` (gradient of the view -> of `self`).
    pub(crate) fn view_op(
        &self,
        name: &'static str,
        layout: ember_storage::Layout,
        backward: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + 'static,
    ) -> Tensor {
        let out = self.view_with_layout(layout);
        crate::graph::record_free(out, name, &[self], move |g| Ok(smallvec::smallvec![Some(backward(g)?)]))
    }

    /// A view of a region of `self` through `layout`; `view` takes the same view of any tensor of
    /// `self`'s shape (backward writes the gradient into that region of zeros, or, in the engine,
    /// straight into `self`'s gradient).
    fn region_view_op(
        &self,
        name: &'static str,
        layout: ember_storage::Layout,
        view: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + Clone + 'static,
    ) -> Tensor {
        let out = self.view_with_layout(layout);
        if !(crate::graph::is_grad_enabled() && self.requires_grad()) {
            return out;
        }
        let shape: ember_storage::Dims = self.shape().into();
        let region = crate::graph::Region { shape: shape.clone(), view: Box::new(view.clone()) };
        crate::graph::record_view(out, name, self, region, move |g| {
            Ok(smallvec::smallvec![Some(Tensor::embed(g, &shape, view.clone())?)])
        })
    }

    /// A view with explicit sizes, strides and storage offset, in elements of the underlying storage
    /// (`torch.as_strided`). Gradients flow when `self` is dense row-major and the view's elements
    /// neither overlap nor leave `self`; otherwise a tensor that requires grad gives a clear error.
    ///
    /// ```
    /// use ember_autograd::Tensor;
    /// let x = Tensor::arange(6).unwrap();
    /// let diag = x.as_strided(&[2], &[4], 0).unwrap();
    /// assert_eq!(diag.to_vec::<i64>().unwrap(), vec![0, 4]);
    /// ```
    pub fn as_strided(&self, shape: &[usize], strides: &[usize], storage_offset: usize) -> Result<Tensor> {
        let layout = ember_storage::Layout::strided(shape, strides, storage_offset)?;
        layout.check_fits(self.0.storage.buffer.len(), "as_strided")?;
        if !(crate::graph::is_grad_enabled() && self.requires_grad()) {
            return Ok(self.view_with_layout(layout));
        }
        let rel = crate::rebase::relative_layout(self.layout(), &layout)
            .filter(crate::rebase::non_overlapping)
            .ok_or_else(|| {
                Error::unsupported(
                    "as_strided",
                    "gradients through a view of a non-contiguous tensor, or one whose elements overlap or lie outside the tensor",
                )
            })?;
        let shape0 = self.shape().to_vec();
        Ok(self.view_op("as_strided", layout, move |g| {
            let rel = rel.clone();
            Tensor::embed(g, &shape0, move |z| z.contiguous()?.as_strided(rel.shape(), rel.strides(), rel.offset()))
        }))
    }

    /// The gradient of a non-overlapping view: zeros of `shape` with `g` written where `view` points.
    /// Recorded, so that it is differentiable (its own backward is `view`).
    pub(crate) fn embed(
        g: &Tensor,
        shape: &[usize],
        view: impl Fn(&Tensor) -> Result<Tensor> + Send + Sync + Clone + 'static,
    ) -> Result<Tensor> {
        let z = Tensor::zeros_with(shape, g.dtype(), g.device())?;
        crate::graph::no_grad(|| -> Result<()> {
            view(&z)?.copy_(g)?;
            Ok(())
        })?;
        let z = z.detach();
        Ok(crate::graph::record_free(z, "embed", &[g], move |gg| {
            Ok(smallvec::smallvec![Some(view(gg)?.contiguous()?)])
        }))
    }

    fn shape_isize(&self) -> Vec<isize> {
        self.shape().iter().map(|&s| s as isize).collect()
    }

    /// A dim of this tensor; 0-dim tensors have none (PyTorch refuses these ops on scalars too).
    fn d(&self, dim: isize, op: &str) -> Result<usize> {
        if self.ndim() == 0 {
            return Err(Error::invalid(op, "cannot be applied to a 0-dim tensor"));
        }
        normalize_dim(dim, self.ndim(), op)
    }

    /// Resolves one `-1` in a requested shape.
    fn infer_shape(&self, shape: &[isize], op: &str) -> Result<Vec<usize>> {
        let n = self.numel();
        let mut known = 1usize;
        let mut infer = None;
        for (i, &s) in shape.iter().enumerate() {
            if s == -1 {
                if infer.replace(i).is_some() {
                    return Err(Error::invalid(op, format!("only one dim can be -1, got {shape:?}")));
                }
            } else if s < 0 {
                return Err(Error::invalid(op, format!("invalid size {s} in {shape:?}")));
            } else {
                // saturating: a 0 elsewhere in the shape still makes the count 0, and an
                // overflowing count fails the checked_numel below
                known = if known == 0 || s == 0 { 0 } else { known.saturating_mul(s as usize) };
            }
        }
        let mut out: Vec<usize> = shape.iter().map(|&s| s.max(0) as usize).collect();
        if let Some(i) = infer {
            if known == 0 || !n.is_multiple_of(known) {
                return Err(Error::shape(op, format!("shape {shape:?} is invalid for input of size {n}")));
            }
            out[i] = n / known;
        }
        if ember_storage::shape::checked_numel(&out, op)? != n {
            return Err(Error::shape(
                op,
                format!("shape {shape:?} is invalid for input of size {n} (shape {:?})", self.shape()),
            ));
        }
        Ok(out)
    }

    /// A tensor with a new shape (one dim may be -1): a view when the strides allow, else a copy.
    pub fn reshape(&self, shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[isize] = &shape.to_isizes();
        let shape = self.infer_shape(shape, "reshape")?;
        let orig = self.shape_isize();
        match self.layout().reshape(&shape) {
            Some(l) => Ok(self.view_op("reshape", l, move |g| g.reshape(&orig))),
            None => {
                let c = self.contiguous()?;
                Ok(c.view_op("reshape", ember_storage::Layout::contiguous(&shape), move |g| g.reshape(&orig)))
            }
        }
    }

    /// Like [`Tensor::reshape`] but never copies: an error when the strides do not allow a view.
    pub fn view(&self, shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[isize] = &shape.to_isizes();
        let shape = self.infer_shape(shape, "view")?;
        let l = self.layout().reshape(&shape).ok_or_else(|| {
            Error::shape(
                "view",
                format!("size {shape:?} is not compatible with strides {:?}; use reshape", self.strides()),
            )
        })?;
        let orig = self.shape_isize();
        Ok(self.view_op("view", l, move |g| g.reshape(&orig)))
    }

    /// Flattens dims `start..=end` into one.
    pub fn flatten(&self, start: impl crate::Dim, end: impl crate::Dim) -> Result<Tensor> {
        let start = start.to_isize();
        let end = end.to_isize();
        if self.ndim() == 0 {
            return self.reshape([1]);
        }
        let (s, e) = (self.d(start, "flatten")?, self.d(end, "flatten")?);
        if s > e {
            return Err(Error::invalid("flatten", format!("start_dim {start} comes after end_dim {end}")));
        }
        let sh = self.shape();
        let mut new: Vec<isize> = sh[..s].iter().map(|&x| x as isize).collect();
        new.push(ember_storage::shape::numel(&sh[s..=e]).min(isize::MAX as usize) as isize);
        new.extend(sh[e + 1..].iter().map(|&x| x as isize));
        self.reshape(&new)
    }

    /// Splits dim `dim` into `sizes` (`Tensor.unflatten`).
    pub fn unflatten(&self, dim: impl crate::Dim, sizes: impl crate::Dims) -> Result<Tensor> {
        let dim = dim.to_isize();
        let sizes: &[isize] = &sizes.to_isizes();
        let d = self.d(dim, "unflatten")?;
        let mut new: Vec<isize> = self.shape()[..d].iter().map(|&x| x as isize).collect();
        new.extend_from_slice(sizes);
        new.extend(self.shape()[d + 1..].iter().map(|&x| x as isize));
        self.reshape(&new)
    }

    /// Reorders dims.
    pub fn permute(&self, dims: impl crate::Dims) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = normalize_dims(dims, self.ndim(), "permute")?;
        let layout = self.layout().permute(&d)?; // validates that `d` is a permutation
        let mut inv = vec![0isize; d.len()];
        for (i, &x) in d.iter().enumerate() {
            inv[x] = i as isize;
        }
        Ok(self.view_op("permute", layout, move |g| g.permute(&inv)))
    }

    /// Swaps two dims.
    pub fn transpose(&self, a: impl crate::Dim, b: impl crate::Dim) -> Result<Tensor> {
        let a = a.to_isize();
        let b = b.to_isize();
        if self.ndim() == 0 {
            normalize_dim(a, 0, "transpose")?;
            normalize_dim(b, 0, "transpose")?;
            return Ok(self.clone());
        }
        let (a, b) = (self.d(a, "transpose")?, self.d(b, "transpose")?);
        Ok(self.view_op("transpose", self.layout().transpose(a, b)?, move |g| g.transpose(a as isize, b as isize)))
    }

    /// Transpose of a matrix (rank <= 2), as `Tensor.t()`.
    pub fn t(&self) -> Result<Tensor> {
        match self.ndim() {
            0 | 1 => Ok(self.clone()),
            2 => self.transpose(0, 1),
            n => Err(Error::shape("t", format!("expects a tensor with <= 2 dims, got {n}"))),
        }
    }

    /// Swaps the last two dims (`mT`).
    pub fn mt(&self) -> Result<Tensor> {
        self.transpose(-2, -1)
    }

    /// Moves dims `src` to positions `dst`.
    pub fn movedim(&self, src: impl crate::Dims, dst: impl crate::Dims) -> Result<Tensor> {
        let src: &[isize] = &src.to_isizes();
        let dst: &[isize] = &dst.to_isizes();
        let n = self.ndim();
        let (s, d) = (normalize_dims(src, n, "movedim")?, normalize_dims(dst, n, "movedim")?);
        if s.len() != d.len() {
            return Err(Error::invalid("movedim", "source and destination need the same number of dims"));
        }
        let mut perm = vec![usize::MAX; n];
        for (&a, &b) in s.iter().zip(&d) {
            perm[b] = a;
        }
        let mut rest = (0..n).filter(|x| !s.contains(x));
        for p in perm.iter_mut() {
            if *p == usize::MAX {
                *p = rest.next().expect("counts match");
            }
        }
        let layout = self.layout().permute(&perm)?;
        let mut inv = vec![0isize; n];
        for (i, &x) in perm.iter().enumerate() {
            inv[x] = i as isize;
        }
        Ok(self.view_op("movedim", layout, move |g| g.permute(&inv)))
    }

    /// `len` elements from `start` along `dim` (a view).
    pub fn narrow(&self, dim: impl crate::Dim, start: impl crate::Dim, len: usize) -> Result<Tensor> {
        let dim = dim.to_isize();
        let start = start.to_isize();
        let d = self.d(dim, "narrow")?;
        let size = self.shape()[d] as isize;
        let s = if start < 0 { start + size } else { start };
        if s < 0 || s > size {
            return Err(Error::invalid("narrow", format!("start {start} out of range for dim {dim} of size {size}")));
        }
        Ok(self
            .region_view_op("narrow", self.layout().narrow(d, s as usize, len)?, move |z| z.narrow(d as isize, s, len)))
    }

    /// Python-style slice `start:end:step` along `dim` (negative and out-of-range bounds as in Python).
    pub fn slice(&self, dim: impl crate::Dim, start: Option<isize>, end: Option<isize>, step: usize) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = self.d(dim, "slice")?;
        let n = self.shape()[d] as isize;
        let clamp = |v: isize| if v < 0 { (v + n).max(0) } else { v.min(n) } as usize;
        let (s, e) = (start.map(clamp).unwrap_or(0), end.map(clamp).unwrap_or(n as usize));
        let l = self.layout().slice(d, s, e.max(s), step)?;
        Ok(self
            .region_view_op("slice", l, move |z| z.slice(d as isize, Some(s as isize), Some(e.max(s) as isize), step)))
    }

    /// Removes `dim` by picking `index` (negative counts from the end).
    pub fn select(&self, dim: impl crate::Dim, index: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        let index = index.to_isize();
        let d = self.d(dim, "select")?;
        let n = self.shape()[d] as isize;
        let i = if index < 0 { index + n } else { index };
        if i < 0 || i >= n {
            return Err(Error::invalid("select", format!("index {index} out of range for dim {dim} of size {n}")));
        }
        Ok(self.region_view_op("select", self.layout().select(d, i as usize)?, move |z| z.select(d as isize, i)))
    }

    /// Broadcasts to `size` (-1 keeps a dim) without copying.
    pub fn expand(&self, size: impl crate::Dims) -> Result<Tensor> {
        let size: &[isize] = &size.to_isizes();
        let lead = size
            .len()
            .checked_sub(self.ndim())
            .ok_or_else(|| Error::shape("expand", format!("cannot expand shape {:?} to {size:?}", self.shape())))?;
        let shape: Vec<usize> = size
            .iter()
            .enumerate()
            .map(|(i, &s)| match s {
                -1 if i >= lead => Ok(self.shape()[i - lead]),
                s if s >= 0 => Ok(s as usize),
                _ => Err(Error::invalid(
                    "expand",
                    format!("size {s} at dim {i} of {size:?} is not allowed (-1 only keeps an existing dim)"),
                )),
            })
            .collect::<Result<_>>()?;
        self.broadcast_to(&shape)
    }

    /// Expands to `other`'s shape.
    pub fn expand_as(&self, other: &Tensor) -> Result<Tensor> {
        self.broadcast_to(other.shape())
    }

    /// Inserts a size-1 dim.
    pub fn unsqueeze(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = normalize_dim(dim, self.ndim() + 1, "unsqueeze")?;
        let orig = self.shape_isize();
        Ok(self.view_op("unsqueeze", self.layout().unsqueeze(d)?, move |g| g.reshape(&orig)))
    }

    /// Removes `dim` if it has size 1.
    pub fn squeeze_dim(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        if self.ndim() == 0 {
            normalize_dim(dim, 0, "squeeze")?;
            return Ok(self.clone());
        }
        let d = self.d(dim, "squeeze")?;
        let orig = self.shape_isize();
        Ok(self.view_op("squeeze", self.layout().squeeze(d)?, move |g| g.reshape(&orig)))
    }

    /// Removes the size-1 dims among `dims`.
    pub fn squeeze_dims(&self, dims: impl crate::Dims) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let mut d = normalize_dims(dims, self.ndim(), "squeeze")?;
        d.sort_unstable_by(|a, b| b.cmp(a));
        let mut l = self.layout().clone();
        for x in d {
            l = l.squeeze(x)?;
        }
        let orig = self.shape_isize();
        Ok(self.view_op("squeeze", l, move |g| g.reshape(&orig)))
    }

    /// Removes every size-1 dim.
    pub fn squeeze(&self) -> Result<Tensor> {
        let dims: Vec<isize> = (0..self.ndim()).filter(|&i| self.shape()[i] == 1).map(|i| i as isize).collect();
        self.squeeze_dims(&dims)
    }

    /// The diagonal of dims `d1`, `d2` (a view).
    pub fn diagonal(&self, offset: impl crate::Dim, d1: impl crate::Dim, d2: impl crate::Dim) -> Result<Tensor> {
        let offset = offset.to_isize();
        let d1 = d1.to_isize();
        let d2 = d2.to_isize();
        let (a, b) = (self.d(d1, "diagonal")?, self.d(d2, "diagonal")?);
        let shape = self.shape().to_vec();
        Ok(self.view_op("diagonal", self.layout().diagonal(offset, a, b)?, move |g| {
            Tensor::embed(g, &shape, move |z| z.diagonal(offset, a as isize, b as isize))
        }))
    }

    /// Sliding windows of `size` every `step` along `dim`, as a new last dim (a view).
    pub fn unfold(&self, dim: impl crate::Dim, size: usize, step: usize) -> Result<Tensor> {
        let dim = dim.to_isize();
        let d = self.d(dim, "unfold")?;
        let shape = self.shape().to_vec();
        let l = self.layout().unfold(d, size, step)?;
        let windows = l.shape()[d];
        Ok(self.view_op("unfold", l, move |g| {
            // window position k of window w came from element w * step + k: add each k's slice back
            let mut acc: Option<Tensor> = None;
            for k in 0..size {
                let gk = g.select(-1, k as isize)?;
                let end = k + step * (windows - 1) + 1;
                let part = Tensor::embed(&gk, &shape, move |z| {
                    z.slice(d as isize, Some(k as isize), Some(end as isize), step)
                })?;
                acc = Some(match acc {
                    None => part,
                    Some(a) => a.add(&part)?,
                });
            }
            acc.ok_or_else(|| Error::invalid("unfold", "window size 0"))
        }))
    }

    /// `torch.diag`: a 1-d input becomes a square matrix with it on diagonal `offset`; a 2-d input gives
    /// that diagonal.
    pub fn diag(&self, offset: impl crate::Dim) -> Result<Tensor> {
        let offset = offset.to_isize();
        match self.ndim() {
            1 => {
                let n = self.shape()[0] + offset.unsigned_abs();
                let src = self.clone();
                Tensor::embed(&src, &[n, n], move |z| z.diagonal(offset, 0, 1))
            }
            2 => self.diagonal(offset, 0, 1)?.contiguous(),
            n => Err(Error::shape("diag", format!("expects a 1-d or 2-d tensor, got {n} dims"))),
        }
    }

    /// Concatenates along `dim`.
    pub fn cat<T: crate::AsTensor>(tensors: &[T], dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        let tensors: Vec<&Tensor> = tensors.iter().map(|t| t.as_tensor()).collect();
        if crate::autocast::is_autocast_enabled() {
            let refs = tensors.clone();
            if let Some(y) = crate::autocast::autocast_op("cat", &refs, |t| Tensor::cat(t, dim))? {
                return Ok(y);
            }
        }
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "expects a non-empty list of tensors"))?;
        // PyTorch skips 1-d empty tensors in cat
        let parts: Vec<&Tensor> = tensors.iter().copied().filter(|t| !(t.ndim() == 1 && t.numel() == 0)).collect();
        let Some(reference) = parts.first() else { return Ok((*first).clone()) };
        let d = reference.d(dim, "cat")?;
        let mut dt = reference.dtype();
        let mut shape = reference.shape().to_vec();
        for t in &parts[1..] {
            if t.ndim() != shape.len() || t.shape().iter().enumerate().any(|(i, &s)| i != d && s != shape[i]) {
                return Err(Error::shape(
                    "cat",
                    format!("sizes must match except in dim {d}: {:?} vs {:?}", reference.shape(), t.shape()),
                ));
            }
            crate::tensor::same_device("cat", &[reference, t])?;
            shape[d] += t.shape()[d];
            dt = DType::promote(dt, t.dtype());
        }
        let out = Tensor::zeros_with(&shape, dt, reference.device())?;
        let mut at = 0;
        let mut sizes = vec![];
        crate::graph::no_grad(|| -> Result<()> {
            for t in &parts {
                let n = t.shape()[d];
                out.narrow(d as isize, at as isize, n)?.copy_(t)?;
                at += n;
                sizes.push(n);
            }
            Ok(())
        })?;
        let owned: Vec<Tensor> = parts.iter().map(|t| (*t).clone()).collect();
        let refs: Vec<&Tensor> = owned.iter().collect();
        Ok(crate::graph::record_free(out, "cat", &refs, move |g| {
            let mut at = 0isize;
            sizes
                .iter()
                .map(|&n| {
                    let piece = g.narrow(d as isize, at, n);
                    at += n as isize;
                    piece.map(Some)
                })
                .collect()
        }))
    }

    /// Stacks along a new dim.
    pub fn stack<T: crate::AsTensor>(tensors: &[T], dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        let tensors: Vec<&Tensor> = tensors.iter().map(|t| t.as_tensor()).collect();
        if crate::autocast::is_autocast_enabled() {
            let refs = tensors.clone();
            if let Some(y) = crate::autocast::autocast_op("stack", &refs, |t| Tensor::stack(t, dim))? {
                return Ok(y);
            }
        }
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "expects a non-empty list of tensors"))?;
        let d = normalize_dim(dim, first.ndim() + 1, "stack")?;
        for t in &tensors {
            if t.shape() != first.shape() {
                return Err(Error::shape(
                    "stack",
                    format!("all tensors need one shape, got {:?} and {:?}", first.shape(), t.shape()),
                ));
            }
        }
        let parts: Result<Vec<Tensor>> = tensors.iter().map(|t| t.unsqueeze(d as isize)).collect();
        Tensor::cat(&parts?, d as isize)
    }

    /// Splits into pieces of `size` along `dim` (the last may be smaller).
    pub fn split(&self, size: usize, dim: impl crate::Dim) -> Result<Vec<Tensor>> {
        let dim = dim.to_isize();
        let d = self.d(dim, "split")?;
        if size == 0 {
            return Err(Error::invalid("split", "split size must be positive"));
        }
        let n = self.shape()[d];
        (0..n.div_ceil(size).max(1))
            .map(|i| self.narrow(d as isize, (i * size) as isize, size.min(n - (i * size).min(n))))
            .collect()
    }

    /// Splits into pieces of the given sizes along `dim`.
    pub fn split_sizes(&self, sizes: &[usize], dim: impl crate::Dim) -> Result<Vec<Tensor>> {
        let dim = dim.to_isize();
        let d = self.d(dim, "split")?;
        if sizes.iter().sum::<usize>() != self.shape()[d] {
            return Err(Error::invalid(
                "split",
                format!("sizes {sizes:?} do not sum to {} (dim {d})", self.shape()[d]),
            ));
        }
        let mut at = 0;
        sizes
            .iter()
            .map(|&s| {
                let t = self.narrow(d as isize, at as isize, s);
                at += s;
                t
            })
            .collect()
    }

    /// Splits into `chunks` nearly equal pieces (PyTorch's rule: size ceil(n / chunks)).
    pub fn chunk(&self, chunks: usize, dim: impl crate::Dim) -> Result<Vec<Tensor>> {
        let dim = dim.to_isize();
        if chunks == 0 {
            return Err(Error::invalid("chunk", "chunks must be positive"));
        }
        let d = self.d(dim, "chunk")?;
        let size = self.shape()[d].div_ceil(chunks).max(1);
        self.split(size, dim)
    }

    /// [`Tensor::split`] into exactly `N` pieces, for destructuring:
    /// `let [q, k, v] = x.split_array(n_embd, 2)?;` (an error naming both counts otherwise).
    pub fn split_array<const N: usize>(&self, size: usize, dim: impl crate::Dim) -> Result<[Tensor; N]> {
        let parts = self.split(size, dim)?;
        let n = parts.len();
        parts.try_into().map_err(|_| {
            Error::invalid("split", format!("{n} pieces of size {size} from shape {:?}, not {N}", self.shape()))
        })
    }

    /// [`Tensor::chunk`] into exactly `N` pieces, for destructuring: `let [a, b] = x.chunk_array(-1)?;`.
    pub fn chunk_array<const N: usize>(&self, dim: impl crate::Dim) -> Result<[Tensor; N]> {
        let parts = self.chunk(N, dim)?;
        let n = parts.len();
        parts.try_into().map_err(|_| {
            Error::invalid("chunk", format!("{n} chunks from shape {:?}, not {N} (the dim is too short)", self.shape()))
        })
    }

    /// Removes `dim`, returning every slice along it.
    pub fn unbind(&self, dim: impl crate::Dim) -> Result<Vec<Tensor>> {
        let dim = dim.to_isize();
        let d = self.d(dim, "unbind")?;
        (0..self.shape()[d]).map(|i| self.select(d as isize, i as isize)).collect()
    }

    /// Reverses the order along `dims`.
    pub fn flip(&self, dims: impl crate::Dims) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let dims = normalize_dims(dims, self.ndim(), "flip")?;
        if self.ndim() == 0 {
            return Ok(self.clone());
        }
        let mut t = self.clone();
        for d in dims {
            let n = self.shape()[d] as i64;
            let idx = Tensor::from_vec((0..n).rev().collect::<Vec<i64>>(), [n as usize])?.to(self.device())?;
            t = t.index_select(d as isize, &idx)?;
        }
        Ok(t)
    }

    /// Rolls elements along `dims` by `shifts` (flattened when `dims` is empty).
    pub fn roll(&self, shifts: impl crate::Dims, dims: impl crate::Dims) -> Result<Tensor> {
        let shifts: &[isize] = &shifts.to_isizes();
        let dims: &[isize] = &dims.to_isizes();
        if dims.is_empty() {
            return self
                .flatten(0, -1)?
                .roll(shifts, [0])?
                .reshape(self.shape().iter().map(|&x| x as isize).collect::<Vec<_>>());
        }
        if shifts.len() != dims.len() {
            return Err(Error::invalid("roll", format!("shifts {shifts:?} and dims {dims:?} differ in length")));
        }
        let mut t = self.clone();
        for (&s, &dim) in shifts.iter().zip(dims) {
            let d = self.d(dim, "roll")?;
            let n = self.shape()[d] as i64;
            if n == 0 {
                continue;
            }
            let idx: Vec<i64> = (0..n).map(|i| (i - s as i64).rem_euclid(n)).collect();
            t = t.index_select(d as isize, &Tensor::from_vec(idx, [n as usize])?.to(self.device())?)?;
        }
        Ok(t)
    }

    /// Repeats the whole tensor `repeats[i]` times along each dim (`Tensor.repeat`).
    pub fn repeat(&self, repeats: &[usize]) -> Result<Tensor> {
        if repeats.len() < self.ndim() {
            return Err(Error::invalid("repeat", format!("needs at least {} repeats, got {repeats:?}", self.ndim())));
        }
        let lead = repeats.len() - self.ndim();
        let mut src_shape: Vec<usize> = vec![1; lead];
        src_shape.extend_from_slice(self.shape());
        // view as [1, s0, 1, s1, ...], expand to [r0, s0, r1, s1, ...], then merge pairs
        let mut inter = vec![];
        let mut expanded = vec![];
        for (i, &s) in src_shape.iter().enumerate() {
            inter.extend([1isize, s as isize]);
            expanded.extend([repeats[i], s]);
        }
        let out_shape: Vec<isize> = src_shape.iter().zip(repeats).map(|(&s, &r)| (s * r) as isize).collect();
        self.reshape(&inter)?.broadcast_to(&expanded)?.contiguous()?.reshape(&out_shape)
    }

    /// `torch.tile`: like `repeat`, but fewer reps than dims are padded with leading ones.
    pub fn tile(&self, reps: &[usize]) -> Result<Tensor> {
        let mut r = vec![1; self.ndim().saturating_sub(reps.len())];
        r.extend_from_slice(reps);
        self.repeat(&r)
    }

    /// Keeps the lower triangle (`j - i <= diagonal`) of the last two dims, zeroing the rest.
    pub fn tril(&self, diagonal: i64) -> Result<Tensor> {
        self.tri(diagonal, true)
    }

    /// Keeps the upper triangle (`j - i >= diagonal`).
    pub fn triu(&self, diagonal: i64) -> Result<Tensor> {
        self.tri(diagonal, false)
    }

    fn tri(&self, diagonal: i64, lower: bool) -> Result<Tensor> {
        if self.ndim() < 2 {
            return Err(Error::shape(
                if lower { "tril" } else { "triu" },
                format!("needs >= 2 dims, got {:?}", self.shape()),
            ));
        }
        let (r, c) = (self.shape()[self.ndim() - 2], self.shape()[self.ndim() - 1]);
        let mask: Vec<bool> = (0..r * c)
            .map(|k| {
                let (i, j) = ((k / c) as i64, (k % c) as i64);
                if lower {
                    j - i <= diagonal
                } else {
                    j - i >= diagonal
                }
            })
            .collect();
        let m = Tensor::from_vec(mask, [r, c])?.to(self.device())?;
        Tensor::where_cond(&m, self, &self.scalar_like(ember_storage::Scalar::F(0.0), self.dtype())?)
    }

    /// Pads the last dims: `pad` is (left, right) for the last dim, then the one before, ... as in
    /// `F.pad`. Negative pads crop (constant mode).
    pub fn pad(&self, pad: impl crate::Dims, mode: PadMode, value: f64) -> Result<Tensor> {
        let pad: &[isize] = &pad.to_isizes();
        if !pad.len().is_multiple_of(2) || pad.len() / 2 > self.ndim() {
            return Err(Error::invalid(
                "pad",
                format!("pad {pad:?} must have an even length <= 2 * rank ({})", self.ndim()),
            ));
        }
        let mut t = self.clone();
        for (k, p) in pad.chunks(2).enumerate() {
            let d = self.ndim() - 1 - k;
            t = t.pad_dim(d, p[0], p[1], mode, value)?;
        }
        Ok(t)
    }

    fn pad_dim(&self, d: usize, left: isize, right: isize, mode: PadMode, value: f64) -> Result<Tensor> {
        let n = self.shape()[d] as isize;
        if mode == PadMode::Constant {
            let new = n + left + right;
            if new < 0 {
                return Err(Error::invalid(
                    "pad",
                    format!("padding ({left}, {right}) leaves a negative size on dim {d}"),
                ));
            }
            let mut shape = self.shape().to_vec();
            shape[d] = new as usize;
            let out = Tensor::full_with(&shape, value, self.dtype(), self.device())?;
            // source range that survives, and where it lands
            let src_lo = (-left).max(0);
            let src_hi = (n + right.min(0)).max(src_lo);
            let dst_lo = left.max(0);
            if src_hi > src_lo {
                let len = (src_hi - src_lo) as usize;
                crate::graph::no_grad(|| {
                    out.narrow(d as isize, dst_lo, len)?.copy_(&self.narrow(d as isize, src_lo, len)?).map(|_| ())
                })?;
            }
            // the gradient of a constant pad is the opposite pad (crop where it padded, zeros where it cropped)
            return Ok(crate::graph::record_free(out, "constant_pad", &[self], move |g| {
                Ok(smallvec::smallvec![Some(g.pad_dim(d, -left, -right, PadMode::Constant, 0.0)?)])
            }));
        }
        if left < 0 || right < 0 {
            return Err(Error::invalid("pad", "negative padding is only supported in constant mode"));
        }
        if mode == PadMode::Reflect && (left >= n || right >= n) {
            return Err(Error::invalid("pad", format!("reflect padding ({left}, {right}) must be < the dim size {n}")));
        }
        if mode == PadMode::Circular && (left > n || right > n) {
            return Err(Error::invalid(
                "pad",
                format!("circular padding ({left}, {right}) must be <= the dim size {n}"),
            ));
        }
        let idx: Vec<i64> = (-left..n + right)
            .map(|i| match mode {
                PadMode::Reflect => {
                    let i = if i < 0 { -i } else { i };
                    if i >= n {
                        2 * (n - 1) - i
                    } else {
                        i
                    }
                }
                PadMode::Replicate => i.clamp(0, n - 1),
                _ => i.rem_euclid(n),
            } as i64)
            .collect();
        let len = idx.len();
        self.index_select(d as isize, &Tensor::from_vec(idx, [len])?.to(self.device())?)
    }
}
