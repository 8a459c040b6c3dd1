//! The normal distribution.

use crate::{broadcast_all, extended, Distribution};
use ember_autograd::{Result, RngOp, Tensor};
use std::any::Any;

/// `Normal(loc, scale)` (`torch.distributions.Normal`).
#[derive(Clone, Debug)]
pub struct Normal {
    /// Mean, broadcast to the batch shape.
    pub loc: Tensor,
    /// Standard deviation, broadcast to the batch shape.
    pub scale: Tensor,
}

impl Normal {
    /// A normal with mean `loc` and standard deviation `scale` (broadcast together).
    pub fn new(loc: &Tensor, scale: &Tensor) -> Result<Self> {
        let [loc, scale]: [Tensor; 2] = broadcast_all("Normal", &[loc, scale])?.try_into().expect("two");
        Ok(Normal { loc, scale })
    }
}

impl Distribution for Normal {
    fn batch_shape(&self) -> Vec<usize> {
        self.loc.shape().to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, self.loc.shape(), &[]);
        let eps =
            Tensor::random_with(&shape, RngOp::Normal { mean: 0.0, std: 1.0 }, self.loc.dtype(), self.loc.device())?;
        Ok(&self.loc + eps * &self.scale)
    }
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        let z = value.sub(&self.loc)? / &self.scale;
        Ok(-0.5 * z.square()? - self.scale.log()? - 0.5 * (2.0 * std::f64::consts::PI).ln())
    }
    fn entropy(&self) -> Result<Tensor> {
        Ok(self.scale.log()? + 0.5 + 0.5 * (2.0 * std::f64::consts::PI).ln())
    }
    fn mean(&self) -> Result<Tensor> {
        Ok(self.loc.clone())
    }
    fn variance(&self) -> Result<Tensor> {
        self.scale.square()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
