//! Reinterpreting batch dims as event dims.

use crate::Distribution;
use ember_autograd::{Error, Result, Tensor};
use std::any::Any;

/// `Independent(base, n)`: the last `n` batch dims of `base` become event dims, so `log_prob`
/// and `entropy` sum over them (`torch.distributions.Independent`).
pub struct Independent {
    /// The distribution reinterpreted.
    pub base: Box<dyn Distribution>,
    /// How many batch dims become event dims.
    pub reinterpreted_batch_ndims: usize,
}

impl Independent {
    /// Wraps `base`, moving its last `n` batch dims into the event.
    pub fn new(base: impl Distribution, n: usize) -> Result<Self> {
        let b = base.batch_shape().len();
        if n > b {
            return Err(Error::shape(
                "Independent",
                format!("cannot reinterpret {n} dims of a batch shape with {b}: {:?}", base.batch_shape()),
            ));
        }
        Ok(Independent { base: Box::new(base), reinterpreted_batch_ndims: n })
    }

    /// Sums the last `n` dims.
    pub(crate) fn sum_rightmost(&self, t: Tensor) -> Result<Tensor> {
        let n = self.reinterpreted_batch_ndims;
        if n == 0 {
            return Ok(t);
        }
        let dims: Vec<isize> = (1..=n).map(|i| -(i as isize)).collect();
        t.sum_dim(&dims, false)
    }
}

impl Distribution for Independent {
    fn batch_shape(&self) -> Vec<usize> {
        let b = self.base.batch_shape();
        b[..b.len() - self.reinterpreted_batch_ndims].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        let b = self.base.batch_shape();
        [&b[b.len() - self.reinterpreted_batch_ndims..], &self.base.event_shape()[..]].concat()
    }
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        self.base.rsample(sample_shape)
    }
    fn has_rsample(&self) -> bool {
        self.base.has_rsample()
    }
    fn rsample_or_draw(&self, sample_shape: &[usize]) -> Result<Tensor> {
        self.base.rsample_or_draw(sample_shape)
    }
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        self.sum_rightmost(self.base.log_prob(value)?)
    }
    fn entropy(&self) -> Result<Tensor> {
        self.sum_rightmost(self.base.entropy()?)
    }
    fn mean(&self) -> Result<Tensor> {
        self.base.mean()
    }
    fn variance(&self) -> Result<Tensor> {
        self.base.variance()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
