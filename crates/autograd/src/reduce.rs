//! Reductions (sum, mean, prod, max/min, arg-reductions, var/std, norms, logsumexp, all/any, median,
//! kthvalue), scans (cumsum, cumprod, cummax, cummin), softmax and sorting.

use crate::creation::DEFAULT_FLOAT;
use crate::Tensor;
use ember_storage::shape::{normalize_dim, normalize_dims};
use ember_storage::{DType, Error, ReduceOp, Result, ScanOp};

fn reduce_name(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Prod => "prod",
        ReduceOp::Max => "amax",
        ReduceOp::Min => "amin",
        _ => "reduce",
    }
}

impl Tensor {
    /// Normalised dims; an empty list means every dim.
    fn rdims(&self, dims: &[isize], op: &str) -> Result<Vec<usize>> {
        if dims.is_empty() {
            return Ok((0..self.ndim()).collect());
        }
        if self.ndim() == 0 {
            normalize_dims(dims, 0, op)?;
            return Ok(vec![]);
        }
        normalize_dims(dims, self.ndim(), op)
    }

    /// Runs a backend reduction and drops the reduced dims unless `keepdim`.
    pub(crate) fn reduce_raw(&self, op: ReduceOp, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let buf = self.backend().reduce(op, self.v(), dims)?;
        let kept: Vec<usize> =
            self.shape().iter().enumerate().map(|(i, &s)| if dims.contains(&i) { 1 } else { s }).collect();
        let t = self.same_backend(buf, &kept);
        let t = if matches!(op, ReduceOp::Sum | ReduceOp::Prod | ReduceOp::Max | ReduceOp::Min) && t.dtype().is_float()
        {
            let (x, full) = (self.clone(), self.shape().to_vec());
            let y = t.detach();
            let dims_u = dims.to_vec();
            let dims_i: Vec<isize> = dims.iter().map(|&d| d as isize).collect();
            let y_saved = y.clone();
            let saved: &[&Tensor] = if op == ReduceOp::Sum { &[] } else { &[self, &y_saved] };
            crate::graph::record_saving(t, reduce_name(op), &[self], saved, move |g| {
                let ge = g.broadcast_to(&full)?;
                let y = if crate::graph::is_grad_enabled() { x.reduce_raw(op, &dims_u, true)? } else { y.clone() };
                Ok(smallvec::smallvec![Some(match op {
                    ReduceOp::Sum => ge,
                    ReduceOp::Prod => crate::product_grads::prod_backward(&x, &y, &ge, &dims_u)?,
                    _ => {
                        // ties share the gradient equally
                        let mask = x.eq(&y.broadcast_to(&full)?)?.to_dtype(g.dtype())?;
                        let count = mask.sum_dim(&dims_i, true)?;
                        ge.mul(&mask)?.div(&count.broadcast_to(&full)?)?
                    }
                })])
            })
        } else {
            t
        };
        if keepdim {
            return Ok(t);
        }
        let out: Vec<isize> =
            kept.iter().enumerate().filter(|(i, _)| !dims.contains(i)).map(|(_, &s)| s as isize).collect();
        t.reshape(&out)
    }

    fn nonempty(&self, dims: &[usize], op: &str) -> Result<()> {
        if dims.iter().any(|&d| self.shape()[d] == 0) || (dims.is_empty() && self.numel() == 0) {
            return Err(Error::invalid(
                op,
                format!("cannot reduce over an empty dim (shape {:?}) without an identity", self.shape()),
            ));
        }
        Ok(())
    }

    /// Sum of all elements (integers and bool sum to i64).
    pub fn sum(&self) -> Result<Tensor> {
        self.sum_dim(crate::SCALAR, false)
    }
    /// Sum over `dims` (empty: all).
    pub fn sum_dim(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = self.rdims(dims, "sum")?;
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DType::I64)? };
        x.reduce_raw(ReduceOp::Sum, &d, keepdim)
    }
    /// Mean of all elements (floating tensors).
    pub fn mean(&self) -> Result<Tensor> {
        self.mean_dim(crate::SCALAR, false)
    }
    /// Mean over `dims`.
    pub fn mean_dim(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        if !self.dtype().is_float() {
            return Err(Error::dtype("mean", format!("needs a floating dtype, got {}", self.dtype())));
        }
        let d = self.rdims(dims, "mean")?;
        let n: usize = d.iter().map(|&i| self.shape()[i]).product();
        self.sum_dim(dims, keepdim)?.div(n as f64)
    }
    /// Product of all elements.
    pub fn prod(&self) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("prod", &[self], |t| t[0].prod())? {
            return Ok(y);
        }
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DType::I64)? };
        x.reduce_raw(ReduceOp::Prod, &(0..self.ndim()).collect::<Vec<_>>(), false)
    }
    /// Product over one dim.
    pub fn prod_dim(&self, dim: impl crate::Dim, keepdim: bool) -> Result<Tensor> {
        let dim = dim.to_isize();
        if let Some(y) = crate::autocast::autocast_op("prod", &[self], |t| t[0].prod_dim(dim, keepdim))? {
            return Ok(y);
        }
        let d = self.rdims(&[dim], "prod")?;
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DType::I64)? };
        x.reduce_raw(ReduceOp::Prod, &d, keepdim)
    }
    /// Largest element (NaN propagates).
    pub fn max(&self) -> Result<Tensor> {
        self.amax(crate::SCALAR, false)
    }
    /// Smallest element.
    pub fn min(&self) -> Result<Tensor> {
        self.amin(crate::SCALAR, false)
    }
    /// Maximum over `dims`.
    pub fn amax(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = self.rdims(dims, "amax")?;
        self.nonempty(&d, "amax")?;
        self.reduce_raw(ReduceOp::Max, &d, keepdim)
    }
    /// Minimum over `dims`.
    pub fn amin(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = self.rdims(dims, "amin")?;
        self.nonempty(&d, "amin")?;
        self.reduce_raw(ReduceOp::Min, &d, keepdim)
    }
    /// Index of the maximum along `dim` (`None`: of the flattened tensor).
    pub fn argmax(&self, dim: Option<isize>, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(ReduceOp::ArgMax, dim, keepdim, "argmax")
    }
    /// Index of the minimum along `dim`.
    pub fn argmin(&self, dim: Option<isize>, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(ReduceOp::ArgMin, dim, keepdim, "argmin")
    }
    fn arg_reduce(&self, op: ReduceOp, dim: Option<isize>, keepdim: bool, name: &str) -> Result<Tensor> {
        match dim {
            None => {
                let flat = self.reshape([-1])?;
                flat.nonempty(&[0], name)?;
                let r = flat.reduce_raw(op, &[0], false)?;
                if keepdim {
                    r.reshape(vec![1; self.ndim()])
                } else {
                    Ok(r)
                }
            }
            Some(d) => {
                if self.ndim() == 0 {
                    normalize_dim(d, 0, name)?;
                    return self.reshape([1])?.reduce_raw(op, &[0], false);
                }
                let d = normalize_dim(d, self.ndim(), name)?;
                self.nonempty(&[d], name)?;
                self.reduce_raw(op, &[d], keepdim)
            }
        }
    }
    /// Max along `dim` with the index where it occurs.
    pub fn max_dim(&self, dim: impl crate::Dim, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let i = self.argmax(Some(dim), true)?;
        self.take_arg(i, dim, keepdim)
    }
    /// Min along `dim` with the index where it occurs.
    pub fn min_dim(&self, dim: impl crate::Dim, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let i = self.argmin(Some(dim), true)?;
        self.take_arg(i, dim, keepdim)
    }
    fn take_arg(&self, idx: Tensor, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        if self.ndim() == 0 {
            return Ok((self.clone(), idx.reshape(crate::SCALAR)?));
        }
        let v = self.gather(dim, &idx)?;
        if keepdim {
            Ok((v, idx))
        } else {
            Ok((v.squeeze_dim(dim)?, idx.squeeze_dim(dim)?))
        }
    }
    /// Variance over `dims` with `correction` (1 = unbiased, as `torch.var`'s default).
    pub fn var_dim(&self, dims: impl crate::Dims, correction: f64, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = self.rdims(dims, "var")?;
        let n: usize = d.iter().map(|&i| self.shape()[i]).product();
        let mean = self.mean_dim(dims, true)?;
        let dev = self.sub(&mean)?;
        dev.mul(&dev)?.sum_dim(dims, keepdim)?.div((n as f64 - correction).max(0.0))
    }
    /// Unbiased variance of all elements.
    pub fn var(&self) -> Result<Tensor> {
        self.var_dim(crate::SCALAR, 1.0, false)
    }
    /// Standard deviation over `dims`.
    pub fn std_dim(&self, dims: impl crate::Dims, correction: f64, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        self.var_dim(dims, correction, keepdim)?.sqrt()
    }
    /// Unbiased standard deviation of all elements.
    pub fn std(&self) -> Result<Tensor> {
        self.std_dim(crate::SCALAR, 1.0, false)
    }
    /// (variance, mean) over `dims`.
    pub fn var_mean(&self, dims: impl crate::Dims, correction: f64, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dims: &[isize] = &dims.to_isizes();
        Ok((self.var_dim(dims, correction, keepdim)?, self.mean_dim(dims, keepdim)?))
    }
    /// (std, mean) over `dims`.
    pub fn std_mean(&self, dims: impl crate::Dims, correction: f64, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dims: &[isize] = &dims.to_isizes();
        Ok((self.std_dim(dims, correction, keepdim)?, self.mean_dim(dims, keepdim)?))
    }
    /// The p-norm over `dims` (`torch.linalg.vector_norm`): p may be inf, -inf, 0 or any real.
    pub fn vector_norm(&self, p: f64, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let x = if self.dtype().is_float() { self.abs()? } else { self.to_dtype(DEFAULT_FLOAT)?.abs()? };
        if p == f64::INFINITY {
            x.amax(dims, keepdim)
        } else if p == f64::NEG_INFINITY {
            x.amin(dims, keepdim)
        } else if p == 0.0 {
            x.ne(0.0)?.to_dtype(x.dtype())?.sum_dim(dims, keepdim)
        } else if p == 1.0 {
            x.sum_dim(dims, keepdim)
        } else if p == 2.0 {
            x.mul(&x)?.sum_dim(dims, keepdim)?.sqrt()
        } else {
            x.pow(p)?.sum_dim(dims, keepdim)?.pow(1.0 / p)
        }
    }
    /// `torch.norm(input, p, dim, keepdim)` for vector norms.
    pub fn norm(&self, p: f64, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        self.vector_norm(p, dims, keepdim)
    }
    /// `log(sum(exp(x)))` over `dims`, computed stably.
    pub fn logsumexp(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        if let Some(y) = crate::autocast::autocast_op("logsumexp", &[self], |t| t[0].logsumexp(dims, keepdim))? {
            return Ok(y);
        }
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DEFAULT_FLOAT)? };
        let d = x.rdims(dims, "logsumexp")?;
        if d.iter().any(|&i| x.shape()[i] == 0) {
            // an empty sum of exponentials is 0, whose log is -inf (as PyTorch)
            return x.sum_dim(dims, keepdim)?.add(f64::NEG_INFINITY);
        }
        let m = x.amax(dims, true)?.detach_value()?;
        // an infinite max would give inf - inf = nan; shift by 0 there instead
        let m = Tensor::where_cond(&m.isinf()?, 0.0, &m)?;
        let s = x.sub(&m)?.exp()?.sum_dim(dims, true)?.log()?.add(&m)?;
        if keepdim {
            Ok(s)
        } else {
            let d = x.rdims(dims, "logsumexp")?;
            let out: Vec<isize> =
                s.shape().iter().enumerate().filter(|(i, _)| !d.contains(i)).map(|(_, &v)| v as isize).collect();
            s.reshape(&out)
        }
    }
    /// True when every element is nonzero.
    pub fn all(&self) -> Result<Tensor> {
        self.all_dim(crate::SCALAR, false)
    }
    /// `all` over dims.
    pub fn all_dim(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = self.rdims(dims, "all")?;
        self.reduce_raw(ReduceOp::All, &d, keepdim)
    }
    /// True when some element is nonzero.
    pub fn any(&self) -> Result<Tensor> {
        self.any_dim(crate::SCALAR, false)
    }
    /// `any` over dims.
    pub fn any_dim(&self, dims: impl crate::Dims, keepdim: bool) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        let d = self.rdims(dims, "any")?;
        self.reduce_raw(ReduceOp::Any, &d, keepdim)
    }
    /// Number of nonzero elements over `dims` (i64).
    pub fn count_nonzero(&self, dims: impl crate::Dims) -> Result<Tensor> {
        let dims: &[isize] = &dims.to_isizes();
        self.ne(0.0)?.sum_dim(dims, false)
    }
    /// Lower median of all elements.
    pub fn median(&self) -> Result<Tensor> {
        let flat = self.reshape([-1])?;
        flat.nonempty(&[0], "median")?;
        Ok(flat.median_dim(0, false)?.0)
    }
    /// Lower median along `dim`, with its index. A slice holding a NaN has median NaN, at the index
    /// of its first NaN (as PyTorch).
    pub fn median_dim(&self, dim: impl crate::Dim, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let d = self.rdims(&[dim], "median")?;
        let n = d.first().map(|&i| self.shape()[i]).unwrap_or(1);
        let (v, i) = self.kthvalue(n.div_ceil(2), dim, keepdim)?;
        if !self.dtype().is_float() || self.ndim() == 0 {
            return Ok((v, i));
        }
        let nan = self.isnan()?;
        if nan.any()?.item()? == 0.0 {
            return Ok((v, i));
        }
        let has = nan.any_dim([dim], keepdim)?;
        let first = nan.to_dtype(DType::I64)?.argmax(Some(dim), keepdim)?;
        Ok((Tensor::where_cond(&has, f64::NAN, &v)?, Tensor::where_cond(&has, &first, &i)?))
    }
    /// The k-th smallest (1-based) along `dim`, with its index.
    pub fn kthvalue(&self, k: usize, dim: impl crate::Dim, keepdim: bool) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let x = if self.ndim() == 0 { self.reshape([1])? } else { self.clone() };
        let d = normalize_dim(dim, x.ndim(), "kthvalue")?;
        let n = x.shape()[d];
        if k == 0 || k > n {
            return Err(Error::invalid("kthvalue", format!("k ({k}) out of range for dim of size {n}")));
        }
        let (v, i) = x.sort(d as isize, false)?;
        let (v, i) = (v.narrow(d as isize, (k - 1) as isize, 1)?, i.narrow(d as isize, (k - 1) as isize, 1)?);
        if keepdim && self.ndim() > 0 {
            Ok((v.contiguous()?, i.contiguous()?))
        } else {
            Ok((v.squeeze_dim(d as isize)?.contiguous()?, i.squeeze_dim(d as isize)?.contiguous()?))
        }
    }

    fn scan(&self, op: ScanOp, dim: isize) -> Result<(Tensor, Option<Tensor>)> {
        let x = if self.ndim() == 0 { self.reshape([1])? } else { self.clone() };
        let d = normalize_dim(dim, x.ndim(), "scan")?;
        let (v, i) = x.backend().scan(op, x.v(), d)?;
        let shape = self.shape().to_vec();
        let (v, i) = (x.same_backend(v, x.shape()), i.map(|i| x.same_backend(i, x.shape())));
        let v = if v.dtype().is_float() {
            let (xs, ys, is) = (x.clone(), v.detach(), i.clone());
            let di = d as isize;
            let y_saved = ys.clone();
            let saved: &[&Tensor] = if op == ScanOp::Cumsum { &[] } else { &[&x, &y_saved] };
            crate::graph::record_saving(v, "scan", &[&x], saved, move |g| {
                Ok(smallvec::smallvec![Some(match op {
                    ScanOp::Cumsum => g.flip([di])?.cumsum(di)?.flip([di])?,
                    ScanOp::Cumprod => {
                        let y = if crate::graph::is_grad_enabled() { xs.cumprod(di)? } else { ys.clone() };
                        crate::product_grads::cumprod_backward(&xs, &y, g, di)?
                    }
                    _ => g.zeros_like()?.scatter_add(di, is.as_ref().expect("indices"), g)?,
                })])
            })
        } else {
            v
        };
        let rs: Vec<isize> = shape.iter().map(|&s| s as isize).collect();
        Ok((
            v.reshape(&rs)?,
            match i {
                Some(i) => Some(i.reshape(&rs)?),
                None => None,
            },
        ))
    }
    /// Running sum along `dim` (integers accumulate in i64).
    pub fn cumsum(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        if let Some(y) = crate::autocast::autocast_op("cumsum", &[self], |t| t[0].cumsum(dim))? {
            return Ok(y);
        }
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DType::I64)? };
        Ok(x.scan(ScanOp::Cumsum, dim)?.0)
    }
    /// Running product along `dim`.
    pub fn cumprod(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DType::I64)? };
        Ok(x.scan(ScanOp::Cumprod, dim)?.0)
    }
    /// Running maximum along `dim` and where it was attained.
    pub fn cummax(&self, dim: impl crate::Dim) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let (v, i) = self.scan(ScanOp::Cummax, dim)?;
        Ok((v, i.expect("cummax returns indices")))
    }
    /// Running minimum along `dim` and where it was attained.
    pub fn cummin(&self, dim: impl crate::Dim) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let (v, i) = self.scan(ScanOp::Cummin, dim)?;
        Ok((v, i.expect("cummin returns indices")))
    }

    /// Sorts along `dim` (stable): values and i64 indices.
    pub fn sort(&self, dim: impl crate::Dim, descending: bool) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        if self.ndim() == 0 {
            return Ok((self.clone(), Tensor::zeros_with(crate::SCALAR, DType::I64, self.device())?));
        }
        let d = normalize_dim(dim, self.ndim(), "sort")?;
        let (v, i) = self.backend().sort(self.v(), d, descending, true)?;
        let (v, i) = (self.same_backend(v, self.shape()), self.same_backend(i, self.shape()));
        let idx = i.clone();
        let v = crate::graph::record(v, "sort", &[self], move |g| {
            Ok(smallvec::smallvec![Some(g.zeros_like()?.scatter_add(d as isize, &idx, g)?)])
        });
        Ok((v, i))
    }
    /// Indices that sort along `dim`.
    pub fn argsort(&self, dim: impl crate::Dim, descending: bool) -> Result<Tensor> {
        let dim = dim.to_isize();
        Ok(self.sort(dim, descending)?.1)
    }
    /// The `k` largest along the last dim, sorted, with their indices (PyTorch's `topk(k)`; see
    /// [`Tensor::topk_with`] for another dim or the smallest).
    pub fn topk(&self, k: usize) -> Result<(Tensor, Tensor)> {
        self.topk_with(k, -1, true)
    }

    /// The `k` largest (or smallest) along `dim`, sorted, with their indices.
    pub fn topk_with(&self, k: usize, dim: impl crate::Dim, largest: bool) -> Result<(Tensor, Tensor)> {
        let dim = dim.to_isize();
        let d = if self.ndim() == 0 { 0 } else { normalize_dim(dim, self.ndim(), "topk")? };
        let n = self.shape().get(d).copied().unwrap_or(1);
        if k > n {
            return Err(Error::invalid("topk", format!("k ({k}) is larger than the dim's size {n}")));
        }
        let (v, i) = self.sort(d as isize, largest)?;
        if self.ndim() == 0 {
            return Ok((v, i));
        }
        Ok((v.narrow(d as isize, 0, k)?.contiguous()?, i.narrow(d as isize, 0, k)?.contiguous()?))
    }

    /// Softmax along `dim` (integer inputs become f32), one fused backend kernel.
    pub fn softmax(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        if let Some(y) = crate::autocast::autocast_op("softmax", &[self], |t| t[0].softmax(dim))? {
            return Ok(y);
        }
        self.softmax_impl(dim, false)
    }
    /// Log-softmax along `dim`, one fused backend kernel.
    pub fn log_softmax(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        if let Some(y) = crate::autocast::autocast_op("log_softmax", &[self], |t| t[0].log_softmax(dim))? {
            return Ok(y);
        }
        self.softmax_impl(dim, true)
    }
    fn softmax_impl(&self, dim: isize, log: bool) -> Result<Tensor> {
        let x = if self.dtype().is_float() { self.clone() } else { self.to_dtype(DEFAULT_FLOAT)? };
        let x = if x.ndim() == 0 { x.reshape([1])? } else { x };
        let d = normalize_dim(dim, x.ndim(), if log { "log_softmax" } else { "softmax" })?;
        let buf = x.backend().softmax(x.v(), d, log)?;
        let out = x.same_backend(buf, x.shape());
        let (xs, ys) = (x.clone(), out.detach());
        let di = d as isize;
        let y_saved = ys.clone();
        let saved = [&x, &y_saved];
        let out =
            crate::graph::record_saving(out, if log { "log_softmax" } else { "softmax" }, &[&x], &saved, move |g| {
                let y = if crate::graph::is_grad_enabled() { xs.softmax_impl(di, log)? } else { ys.clone() };
                Ok(smallvec::smallvec![Some(if log {
                    g.sub(&y.exp()?.mul(&g.sum_dim([di], true)?)?)?
                } else {
                    y.mul(&g.sub(&g.mul(&y)?.sum_dim([di], true)?)?)?
                })])
            });
        out.reshape(self.shape().iter().map(|&s| s as isize).collect::<Vec<_>>())
    }
    /// Softmin along `dim`.
    pub fn softmin(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        self.neg()?.softmax(dim)
    }

    /// f16/bf16 compute in f32 (as PyTorch's CPU kernels do); returns the tensor and the dtype to return to.
    pub(crate) fn upcast_low_precision(&self) -> Result<(Tensor, DType)> {
        match self.dtype() {
            DType::F16 | DType::BF16 => Ok((self.to_dtype(DType::F32)?, self.dtype())),
            d => Ok((self.clone(), d)),
        }
    }

    /// The same values without any graph history, as a `Result` for chaining.
    pub fn detach_value(&self) -> Result<Tensor> {
        Ok(self.detach())
    }
}
