//! In-place ops. Each writes through to every view of the storage and bumps its version counter.

use crate::elementwise::Rhs;
use crate::rebase;
use crate::Tensor;
use ember_storage::{BinaryOp, Error, Result};

impl Tensor {
    /// Copies `src` (broadcast to this shape, converted to this dtype, moved to this device) into `self`.
    ///
    /// Like every in-place op here, it works under autograd: gradients flow to `src` and, for the
    /// elements not overwritten, to `self`'s previous history, also when `self` is a view.
    /// ```
    /// use ember_autograd::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap().requires_grad_(true).unwrap();
    /// let y = x.mul(2.0).unwrap();
    /// y.narrow(0, 0, 1).unwrap().mul_(&x.narrow(0, 2, 1).unwrap()).unwrap(); // y[0] *= x[2]
    /// y.sum().unwrap().backward().unwrap();
    /// assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![6.0, 2.0, 4.0]);
    /// ```
    pub fn copy_(&self, src: &Tensor) -> Result<&Tensor> {
        self.write_(src, "copy_")
    }

    /// Writes `value` (broadcast, converted, moved as needed) into `self`, rewriting autograd history
    /// when either takes part in it.
    fn write_(&self, value: &Tensor, op: &'static str) -> Result<&Tensor> {
        let v = value.to(self.device())?.to_dtype(self.dtype())?.broadcast_to(self.shape()).map_err(|_| {
            Error::shape(op, format!("source shape {:?} cannot be broadcast to {:?}", value.shape(), self.shape()))
        })?;
        let track = rebase::participates(self, v.requires_grad());
        if track {
            rebase::check_writable(self, op)?;
        }
        self.backend().assign(self.v(), v.v())?;
        if track {
            rebase::rebase(self, &v, op)?;
        }
        self.bump_version();
        Ok(self)
    }

    /// What an in-place op computes its new value from: `self`, or a copy of it when autograd must
    /// keep the old value for the op's backward (the write would otherwise invalidate it).
    fn update_source(&self, other_requires_grad: bool, saves_inputs: bool) -> Result<Tensor> {
        if saves_inputs && rebase::participates(self, other_requires_grad) {
            self.deep_clone()
        } else {
            Ok(self.clone())
        }
    }

    /// Fills with `value`.
    pub fn fill_(&self, value: f64) -> Result<&Tensor> {
        let s = self.scalar_like(ember_storage::Scalar::F(value), self.dtype())?;
        self.write_(&s, "fill_")
    }

    /// Fills with zeros.
    pub fn zero_(&self) -> Result<&Tensor> {
        self.fill_(0.0)
    }

    fn binary_(&self, op: BinaryOp, other: Rhs) -> Result<&Tensor> {
        let other_rg = matches!(other, Rhs::T(t) if t.requires_grad());
        let src = self.update_source(other_rg, !matches!(op, BinaryOp::Add | BinaryOp::Sub))?;
        let r = src.binary(op, other)?;
        if r.shape() != self.shape() {
            return Err(Error::shape(
                op.name(),
                format!("in-place result shape {:?} does not match the destination {:?}", r.shape(), self.shape()),
            ));
        }
        if r.dtype().is_float() && !self.dtype().is_float() {
            return Err(Error::dtype(
                op.name(),
                format!("result type {} can't be cast to the destination {}", r.dtype(), self.dtype()),
            ));
        }
        self.write_(&r, inplace_name(op))
    }

    /// `self += other` in place.
    pub fn add_<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<&Tensor> {
        self.binary_(BinaryOp::Add, other.into())
    }
    /// `self -= other` in place.
    pub fn sub_<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<&Tensor> {
        self.binary_(BinaryOp::Sub, other.into())
    }
    /// `self *= other` in place.
    pub fn mul_<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<&Tensor> {
        self.binary_(BinaryOp::Mul, other.into())
    }
    /// `self /= other` in place (floating tensors).
    pub fn div_<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<&Tensor> {
        self.binary_(BinaryOp::Div, other.into())
    }
    /// `self **= other` in place.
    pub fn pow_<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<&Tensor> {
        self.binary_(BinaryOp::Pow, other.into())
    }
    /// Clamps in place.
    pub fn clamp_(&self, min: Option<f64>, max: Option<f64>) -> Result<&Tensor> {
        let r = self.update_source(false, true)?.clamp(min, max)?;
        self.write_(&r, "clamp_")
    }
    /// `self += alpha * other` in place (the optimizer update).
    pub fn add_scaled_(&self, other: &Tensor, alpha: f64) -> Result<&Tensor> {
        let r = other.mul(alpha)?;
        self.add_(&r)
    }
    /// Writes `value` where `mask` is true.
    pub fn masked_fill_(&self, mask: &Tensor, value: f64) -> Result<&Tensor> {
        let r = self.masked_fill(mask, value)?;
        self.write_(&r, "masked_fill_")
    }
}

/// The name of a binary op's in-place form, for errors and `grad_fn_name`.
fn inplace_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add_",
        BinaryOp::Sub => "sub_",
        BinaryOp::Mul => "mul_",
        BinaryOp::Div => "div_",
        BinaryOp::Pow => "pow_",
        _ => "in-place op",
    }
}
