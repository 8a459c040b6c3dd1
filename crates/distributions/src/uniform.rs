//! The continuous uniform distribution.

use crate::{broadcast_all, extended, Distribution};
use ember_autograd::{Result, RngOp, Tensor};
use std::any::Any;

/// `Uniform(low, high)` on `[low, high)` (`torch.distributions.Uniform`).
#[derive(Clone, Debug)]
pub struct Uniform {
    /// Lower bound.
    pub low: Tensor,
    /// Upper bound.
    pub high: Tensor,
}

impl Uniform {
    /// Uniform on `[low, high)` (broadcast together).
    pub fn new(low: &Tensor, high: &Tensor) -> Result<Self> {
        let [low, high]: [Tensor; 2] = broadcast_all("Uniform", &[low, high])?.try_into().expect("two");
        Ok(Uniform { low, high })
    }
}

impl Distribution for Uniform {
    fn batch_shape(&self) -> Vec<usize> {
        self.low.shape().to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, self.low.shape(), &[]);
        let u =
            Tensor::random_with(&shape, RngOp::Uniform { low: 0.0, high: 1.0 }, self.low.dtype(), self.low.device())?;
        Ok(&self.low + u * (&self.high - &self.low))
    }
    /// `-log(high - low)` inside `[low, high)`, `-inf` outside.
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        let inside = value.ge(&self.low)?.logical_and(&value.lt(&self.high)?)?;
        let lp = -(&self.high - &self.low).log()?;
        lp.broadcast_to(ember_storage::shape::broadcast_shapes(lp.shape(), value.shape(), "Uniform")?.to_vec())?
            .masked_fill(&inside.logical_not()?, f64::NEG_INFINITY)
    }
    fn entropy(&self) -> Result<Tensor> {
        (&self.high - &self.low).log()
    }
    fn mean(&self) -> Result<Tensor> {
        Ok((&self.high + &self.low) * 0.5)
    }
    fn variance(&self) -> Result<Tensor> {
        Ok((&self.high - &self.low).square()? / 12.0)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
