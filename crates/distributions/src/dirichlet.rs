//! The Dirichlet distribution.

use crate::gamma::standard_gamma;
use crate::{check_event, extended, Distribution};
use ember_autograd::{Error, Result, Tensor};
use std::any::Any;

/// `Dirichlet(concentration)` on the simplex, the last dim being the event
/// (`torch.distributions.Dirichlet`).
#[derive(Clone, Debug)]
pub struct Dirichlet {
    /// α, `[batch..., K]`.
    pub concentration: Tensor,
}

impl Dirichlet {
    /// A Dirichlet with concentrations `[batch..., K]`.
    pub fn new(concentration: &Tensor) -> Result<Self> {
        if concentration.ndim() == 0 {
            return Err(Error::shape("Dirichlet", "the concentration needs an event dim"));
        }
        Ok(Dirichlet { concentration: concentration.clone() })
    }
    fn k(&self) -> usize {
        self.concentration.shape()[self.concentration.ndim() - 1]
    }
}

impl Distribution for Dirichlet {
    fn batch_shape(&self) -> Vec<usize> {
        self.concentration.shape()[..self.concentration.ndim() - 1].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![self.k()]
    }
    /// Normalised gamma draws, differentiable in the concentration.
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, &self.batch_shape(), &[self.k()]);
        let g = standard_gamma(&self.concentration.broadcast_to(&shape)?)?;
        Ok(&g / g.sum_dim(-1, true)?)
    }
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        check_event("Dirichlet", value, &[self.k()])?;
        let a = &self.concentration;
        Ok(value.log()?.mul(&(a - 1.0))?.sum_dim(-1, false)? + a.sum_dim(-1, false)?.lgamma()?
            - a.lgamma()?.sum_dim(-1, false)?)
    }
    fn entropy(&self) -> Result<Tensor> {
        let a = &self.concentration;
        let a0 = a.sum_dim(-1, false)?;
        let k = self.k() as f64;
        Ok(a.lgamma()?.sum_dim(-1, false)?
            - a0.lgamma()?
            - (k - &a0) * a0.digamma()?
            - ((a - 1.0) * a.digamma()?).sum_dim(-1, false)?)
    }
    fn mean(&self) -> Result<Tensor> {
        Ok(&self.concentration / self.concentration.sum_dim(-1, true)?)
    }
    fn variance(&self) -> Result<Tensor> {
        let a = &self.concentration;
        let a0 = a.sum_dim(-1, true)?;
        Ok(a * (&a0 - a) / (a0.square()? * (a0 + 1.0)))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
