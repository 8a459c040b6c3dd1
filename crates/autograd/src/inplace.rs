//! In-place ops. Each writes through to every view of the storage and bumps its version counter.

use crate::elementwise::Rhs;
use crate::Tensor;
use ember_storage::{BinaryOp, Error, Result};

impl Tensor {
    /// Copies `src` (broadcast to this shape, converted to this dtype, moved to this device) into `self`.
    pub fn copy_(&self, src: &Tensor) -> Result<&Tensor> {
        if crate::graph::is_grad_enabled() && (self.requires_grad() || src.requires_grad()) {
            return Err(Error::unsupported(
                "in-place op",
                "autograd through in-place ops on tensors that require grad; run the update under no_grad (as optimizers do) or use the out-of-place op",
            ));
        }
        let s = src.to(self.device())?.to_dtype(self.dtype())?.broadcast_to(self.shape()).map_err(|_| {
            Error::shape("copy_", format!("source shape {:?} cannot be broadcast to {:?}", src.shape(), self.shape()))
        })?;
        self.backend().assign(self.v(), s.v())?;
        self.bump_version();
        Ok(self)
    }

    /// Fills with `value`.
    pub fn fill_(&self, value: f64) -> Result<&Tensor> {
        let s = self.scalar_like(ember_storage::Scalar::F(value), self.dtype())?;
        self.copy_(&s)
    }

    /// Fills with zeros.
    pub fn zero_(&self) -> Result<&Tensor> {
        self.fill_(0.0)
    }

    fn binary_(&self, op: BinaryOp, other: Rhs) -> Result<&Tensor> {
        let r = self.binary(op, other)?;
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
        self.copy_(&r)
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
        let r = self.clamp(min, max)?;
        self.copy_(&r)
    }
    /// `self += alpha * other` in place (the optimizer update).
    pub fn add_scaled_(&self, other: &Tensor, alpha: f64) -> Result<&Tensor> {
        let r = other.mul(alpha)?;
        self.add_(&r)
    }
    /// Writes `value` where `mask` is true.
    pub fn masked_fill_(&self, mask: &Tensor, value: f64) -> Result<&Tensor> {
        let r = self.masked_fill(mask, value)?;
        self.copy_(&r)
    }
}
