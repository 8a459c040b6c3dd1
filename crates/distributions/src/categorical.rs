//! The categorical distribution.

use crate::{not_available, Distribution};
use ember_autograd::{DType, Error, Result, Tensor};
use std::any::Any;

/// `Categorical(logits)` or `Categorical(probs)` over `{0, …, K−1}`, the last dim indexing the
/// categories (`torch.distributions.Categorical`).
#[derive(Clone, Debug)]
pub struct Categorical {
    /// Normalised log-probabilities `[batch..., K]`.
    pub logits: Tensor,
    /// Probabilities `[batch..., K]`.
    pub probs: Tensor,
}

impl Categorical {
    /// From unnormalised log-probabilities.
    pub fn from_logits(logits: &Tensor) -> Result<Self> {
        if logits.ndim() == 0 {
            return Err(Error::shape("Categorical", "logits need a category dim"));
        }
        let logits = logits - logits.logsumexp(-1, true)?;
        Ok(Categorical { probs: logits.exp()?, logits })
    }
    /// From (unnormalised) probabilities.
    pub fn from_probs(probs: &Tensor) -> Result<Self> {
        if probs.ndim() == 0 {
            return Err(Error::shape("Categorical", "probs need a category dim"));
        }
        let probs = probs / probs.sum_dim(-1, true)?;
        Ok(Categorical { logits: probs.log()?, probs })
    }
    fn k(&self) -> usize {
        self.probs.shape()[self.probs.ndim() - 1]
    }
}

impl Distribution for Categorical {
    fn batch_shape(&self) -> Vec<usize> {
        self.probs.shape()[..self.probs.ndim() - 1].to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
    fn rsample(&self, _: &[usize]) -> Result<Tensor> {
        Err(not_available("Categorical", "rsample (a discrete distribution has no reparameterised samples)"))
    }
    fn has_rsample(&self) -> bool {
        false
    }
    /// i64 category indices of shape `sample_shape ++ batch_shape`.
    fn rsample_or_draw(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let n: usize = sample_shape.iter().product();
        let rows = self.probs.reshape([-1, self.k() as isize])?;
        let draws = rows.multinomial(n, true)?; // [B, n]
        let shape = [sample_shape, &self.batch_shape()].concat();
        draws.t()?.contiguous()?.reshape(&shape)
    }
    /// The log-probability of i64 category indices.
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        if !value.dtype().is_int() {
            return Err(Error::dtype(
                "Categorical",
                format!("log_prob needs integer categories, got {}", value.dtype()),
            ));
        }
        let batch = self.batch_shape();
        let shape = ember_storage::shape::broadcast_shapes(value.shape(), &batch, "Categorical")?.to_vec();
        let full = [&shape[..], &[self.k()]].concat();
        let idx = value.to_dtype(DType::I64)?.broadcast_to(&shape)?.unsqueeze(-1)?;
        self.logits.broadcast_to(&full)?.gather(-1, &idx.contiguous()?)?.squeeze_dim(-1)
    }
    /// `−Σ p log p`, with `0 log 0 = 0`.
    fn entropy(&self) -> Result<Tensor> {
        let min = if self.logits.dtype() == DType::F64 { f64::MIN } else { f32::MIN as f64 };
        Ok(-(&self.probs * self.logits.clamp_min(min)?).sum_dim(-1, false)?)
    }
    /// NaN, as in PyTorch (categories have no order).
    fn mean(&self) -> Result<Tensor> {
        Tensor::full_with(self.batch_shape(), f64::NAN, self.probs.dtype(), self.probs.device())
    }
    /// NaN, as in PyTorch.
    fn variance(&self) -> Result<Tensor> {
        self.mean()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
