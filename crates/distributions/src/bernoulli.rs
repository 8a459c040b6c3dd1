//! The Bernoulli distribution.

use crate::{extended, not_available, Distribution};
use ember_autograd::{Result, RngOp, Tensor};
use std::any::Any;

/// `Bernoulli(probs)` or `Bernoulli(logits)` on `{0, 1}` (`torch.distributions.Bernoulli`).
#[derive(Clone, Debug)]
pub struct Bernoulli {
    /// Probability of 1.
    pub probs: Tensor,
    /// Log-odds of 1.
    pub logits: Tensor,
}

impl Bernoulli {
    /// From probabilities in `[0, 1]` (logits are `log(p / (1 - p))`, clamped as PyTorch does).
    pub fn from_probs(probs: &Tensor) -> Result<Self> {
        let eps = if probs.dtype() == ember_autograd::DType::F64 { f64::EPSILON } else { f32::EPSILON as f64 };
        let p = probs.clamp(Some(eps), Some(1.0 - eps))?;
        Ok(Bernoulli { probs: probs.clone(), logits: p.log()? - (1.0 - &p).log()? })
    }
    /// From log-odds.
    pub fn from_logits(logits: &Tensor) -> Result<Self> {
        Ok(Bernoulli { probs: logits.sigmoid()?, logits: logits.clone() })
    }
}

impl Distribution for Bernoulli {
    fn batch_shape(&self) -> Vec<usize> {
        self.probs.shape().to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
    fn rsample(&self, _: &[usize]) -> Result<Tensor> {
        Err(not_available("Bernoulli", "rsample (a discrete distribution has no reparameterised samples)"))
    }
    fn has_rsample(&self) -> bool {
        false
    }
    fn rsample_or_draw(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, self.probs.shape(), &[]);
        let u = Tensor::random_with(
            &shape,
            RngOp::Uniform { low: 0.0, high: 1.0 },
            self.probs.dtype(),
            self.probs.device(),
        )?;
        u.lt(&self.probs)?.to_dtype(self.probs.dtype())
    }
    /// `x·logits − softplus(logits)`: minus binary cross-entropy with logits.
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        Ok(value.mul(&self.logits)? - self.logits.softplus(1.0, 20.0)?)
    }
    fn entropy(&self) -> Result<Tensor> {
        Ok(self.logits.softplus(1.0, 20.0)? - &self.probs * &self.logits)
    }
    fn mean(&self) -> Result<Tensor> {
        Ok(self.probs.clone())
    }
    fn variance(&self) -> Result<Tensor> {
        Ok(&self.probs * (1.0 - &self.probs))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
