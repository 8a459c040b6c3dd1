//! The multivariate normal distribution.

use crate::{check_event, extended, Distribution};
use ember_autograd::{Error, Result, RngOp, Tensor};
use std::any::Any;

/// `MultivariateNormal(loc, covariance)` over vectors of the last dim, parameterised by the lower
/// Cholesky factor of the covariance (`torch.distributions.MultivariateNormal`).
#[derive(Clone, Debug)]
pub struct MultivariateNormal {
    /// Mean `[batch..., k]`.
    pub loc: Tensor,
    /// Lower-triangular `L` with `LLᵀ` the covariance, `[batch..., k, k]`.
    pub scale_tril: Tensor,
}

impl MultivariateNormal {
    /// From a mean and a symmetric positive-definite covariance (factored by Cholesky).
    pub fn from_covariance(loc: &Tensor, covariance: &Tensor) -> Result<Self> {
        Self::from_scale_tril(loc, &covariance.linalg_cholesky()?)
    }

    /// From a mean and the lower Cholesky factor of the covariance.
    pub fn from_scale_tril(loc: &Tensor, scale_tril: &Tensor) -> Result<Self> {
        let (nl, nt) = (loc.ndim(), scale_tril.ndim());
        if nl == 0
            || nt < 2
            || scale_tril.shape()[nt - 1] != loc.shape()[nl - 1]
            || scale_tril.shape()[nt - 2] != loc.shape()[nl - 1]
        {
            return Err(Error::shape(
                "MultivariateNormal",
                format!(
                    "loc {:?} needs a [.., k] shape and scale_tril {:?} a [.., k, k] one",
                    loc.shape(),
                    scale_tril.shape()
                ),
            ));
        }
        let k = loc.shape()[nl - 1];
        let batch = ember_storage::shape::broadcast_shapes(
            &loc.shape()[..nl - 1],
            &scale_tril.shape()[..nt - 2],
            "MultivariateNormal",
        )?
        .to_vec();
        let loc = loc.broadcast_to([&batch[..], &[k]].concat())?;
        let scale_tril = scale_tril.to_dtype(loc.dtype())?.broadcast_to([&batch[..], &[k, k]].concat())?;
        Ok(MultivariateNormal { loc, scale_tril })
    }

    fn k(&self) -> usize {
        self.loc.shape()[self.loc.ndim() - 1]
    }

    /// `Σ log diag(L)`: half the log-determinant of the covariance.
    pub(crate) fn half_log_det(&self) -> Result<Tensor> {
        self.scale_tril.diagonal(0, -2, -1)?.log()?.sum_dim(-1, false)
    }

    /// `L⁻¹ x` for `x` of shape `[batch..., k]` (broadcast against the batch).
    pub(crate) fn whiten(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.k();
        let shape = ember_storage::shape::broadcast_shapes(x.shape(), self.loc.shape(), "MultivariateNormal")?.to_vec();
        let l = self.scale_tril.broadcast_to([&shape[..shape.len() - 1], &[k, k]].concat())?.contiguous()?;
        l.linalg_solve(&x.broadcast_to(&shape)?.unsqueeze(-1)?.contiguous()?)?.squeeze_dim(-1)
    }
}

impl Distribution for MultivariateNormal {
    fn batch_shape(&self) -> Vec<usize> {
        self.loc.shape()[..self.loc.ndim() - 1].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![self.k()]
    }
    /// `loc + L ε`.
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, &self.batch_shape(), &[self.k()]);
        let eps =
            Tensor::random_with(&shape, RngOp::Normal { mean: 0.0, std: 1.0 }, self.loc.dtype(), self.loc.device())?;
        Ok(&self.loc + self.scale_tril.matmul(&eps.unsqueeze(-1)?)?.squeeze_dim(-1)?)
    }
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        check_event("MultivariateNormal", value, &[self.k()])?;
        let m = self.whiten(&value.sub(&self.loc)?)?.square()?.sum_dim(-1, false)?;
        let k = self.k() as f64;
        Ok(-0.5 * (k * (2.0 * std::f64::consts::PI).ln() + m) - self.half_log_det()?)
    }
    fn entropy(&self) -> Result<Tensor> {
        let k = self.k() as f64;
        Ok(0.5 * k * (1.0 + (2.0 * std::f64::consts::PI).ln()) + self.half_log_det()?)
    }
    fn mean(&self) -> Result<Tensor> {
        Ok(self.loc.clone())
    }
    /// The diagonal of the covariance: row sums of `L²`.
    fn variance(&self) -> Result<Tensor> {
        self.scale_tril.square()?.sum_dim(-1, false)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
