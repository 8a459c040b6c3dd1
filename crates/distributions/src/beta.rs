//! The beta distribution.

use crate::gamma::standard_gamma;
use crate::{broadcast_all, extended, Distribution};
use ember_autograd::{Result, Tensor};
use std::any::Any;

/// `Beta(concentration1, concentration0)` on `(0, 1)` (`torch.distributions.Beta`).
#[derive(Clone, Debug)]
pub struct Beta {
    /// α, the exponent of `x`.
    pub concentration1: Tensor,
    /// β, the exponent of `1 − x`.
    pub concentration0: Tensor,
}

/// `log B(a, b) = lgamma(a) + lgamma(b) − lgamma(a + b)`.
pub(crate) fn log_beta(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.lgamma()? + b.lgamma()? - (a + b).lgamma()?)
}

impl Beta {
    /// A beta with the two concentrations (broadcast together).
    pub fn new(concentration1: &Tensor, concentration0: &Tensor) -> Result<Self> {
        let [concentration1, concentration0]: [Tensor; 2] =
            broadcast_all("Beta", &[concentration1, concentration0])?.try_into().expect("two");
        Ok(Beta { concentration1, concentration0 })
    }
}

impl Distribution for Beta {
    fn batch_shape(&self) -> Vec<usize> {
        self.concentration1.shape().to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
    /// `X / (X + Y)` with `X ~ Gamma(α, 1)`, `Y ~ Gamma(β, 1)`, differentiable in both.
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, self.concentration1.shape(), &[]);
        let x = standard_gamma(&self.concentration1.broadcast_to(&shape)?)?;
        let y = standard_gamma(&self.concentration0.broadcast_to(&shape)?)?;
        Ok(&x / (&x + y))
    }
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        let (a, b) = (&self.concentration1, &self.concentration0);
        Ok(value.log()?.mul(&(a - 1.0))? + value.neg()?.log1p()?.mul(&(b - 1.0))? - log_beta(a, b)?)
    }
    fn entropy(&self) -> Result<Tensor> {
        let (a, b) = (&self.concentration1, &self.concentration0);
        let s = a + b;
        Ok(log_beta(a, b)? - (a - 1.0) * a.digamma()? - (b - 1.0) * b.digamma()? + (&s - 2.0) * s.digamma()?)
    }
    fn mean(&self) -> Result<Tensor> {
        Ok(&self.concentration1 / (&self.concentration1 + &self.concentration0))
    }
    fn variance(&self) -> Result<Tensor> {
        let (a, b) = (&self.concentration1, &self.concentration0);
        let s = a + b;
        Ok(a * b / (s.square()? * (s + 1.0)))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
