//! # ember-distributions
//!
//! PyTorch's `torch.distributions` for Ember, on which probabilistic programs (VAEs, policy
//! gradients, Pyro-style models) are built: a [`Distribution`] trait and [`Normal`],
//! [`Bernoulli`], [`Categorical`], [`Uniform`], [`Gamma`], [`Beta`], [`Dirichlet`],
//! [`MultivariateNormal`] and [`Independent`], with [`kl_divergence`] for the pairs of one family.
//!
//! Parameters broadcast against each other into the distribution's batch shape; `sample(&[n])`
//! returns `[n, batch..., event...]`. `rsample` is differentiable in the parameters (the
//! reparameterisation trick; Gamma, Beta and Dirichlet by implicit reparameterisation of the gamma
//! sampler); `sample` is detached. Discrete distributions have no `rsample` (an error says so).
//!
//! Decisions where PyTorch is silent or differs: arguments are not validated against supports
//! (PyTorch's `validate_args` is on by default; here a value outside the support gives what the
//! formula gives: `-inf` for Uniform, NaN or `-inf` elsewhere); Categorical's `mean` and
//! `variance` are NaN as in PyTorch; Gamma samples are drawn on the host with Marsaglia and Tsang's
//! method from a stream seeded by Ember's generator (so `manual_seed` makes them repeatable) and
//! moved to the parameters' device.

mod bernoulli;
mod beta;
mod categorical;
mod dirichlet;
mod gamma;
mod independent;
mod kl;
mod mvn;
mod normal;
mod uniform;

pub use bernoulli::Bernoulli;
pub use beta::Beta;
pub use categorical::Categorical;
pub use dirichlet::Dirichlet;
pub use gamma::{standard_gamma_grad, Gamma};
pub use independent::Independent;
pub use kl::kl_divergence;
pub use mvn::MultivariateNormal;
pub use normal::Normal;
pub use uniform::Uniform;

use ember_autograd::{Error, Result, Tensor};
use std::any::Any;

/// A probability distribution over tensors (`torch.distributions.Distribution`).
pub trait Distribution: Any {
    /// The shape of the independent parameter sets.
    fn batch_shape(&self) -> Vec<usize>;
    /// The shape of one draw (`[]` for scalar distributions, `[k]` for Dirichlet and MVN).
    fn event_shape(&self) -> Vec<usize>;
    /// A draw of shape `sample_shape ++ batch_shape ++ event_shape`, without a graph.
    fn sample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let s = ember_autograd::no_grad(|| self.rsample_or_draw(sample_shape))?;
        Ok(s.detach())
    }
    /// A reparameterised draw, differentiable in the parameters; an error for discrete families.
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor>;
    /// Whether [`Distribution::rsample`] is available.
    fn has_rsample(&self) -> bool {
        true
    }
    /// Log-density (or log-mass) of `value`, of shape `batch_shape` broadcast with the value's
    /// leading dims.
    fn log_prob(&self, value: &Tensor) -> Result<Tensor>;
    /// Entropy, of shape `batch_shape`.
    fn entropy(&self) -> Result<Tensor>;
    /// Mean.
    fn mean(&self) -> Result<Tensor>;
    /// Variance.
    fn variance(&self) -> Result<Tensor>;
    /// Standard deviation.
    fn stddev(&self) -> Result<Tensor> {
        self.variance()?.sqrt()
    }
    /// For [`kl_divergence`]'s dispatch on the concrete family.
    fn as_any(&self) -> &dyn Any;
    /// What `sample` draws with (rsample by default; discrete families override).
    #[doc(hidden)]
    fn rsample_or_draw(&self, sample_shape: &[usize]) -> Result<Tensor> {
        self.rsample(sample_shape)
    }
}

/// `sample_shape ++ batch ++ event`.
pub(crate) fn extended(sample_shape: &[usize], batch: &[usize], event: &[usize]) -> Vec<usize> {
    [sample_shape, batch, event].concat()
}

/// The parameters broadcast to one shape (PyTorch's `broadcast_all`), in a common floating dtype.
pub(crate) fn broadcast_all(op: &str, params: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut shape: Vec<usize> = vec![];
    for p in params {
        shape = ember_storage::shape::broadcast_shapes(&shape, p.shape(), op)?.to_vec();
    }
    let dtype = params.iter().map(|p| p.dtype()).fold(ember_autograd::DType::F32, |a, b| {
        if b.is_float() && (b.size_in_bytes() > a.size_in_bytes()) {
            b
        } else {
            a
        }
    });
    params.iter().map(|p| p.to_dtype(dtype)?.broadcast_to(&shape)).collect()
}

/// The error for an operation a family does not have.
pub(crate) fn not_available(family: &str, what: &str) -> Error {
    Error::unsupported(family, format!("{what} is not defined for {family}"))
}

/// `value` checked to end in `event` dims, for `log_prob`.
pub(crate) fn check_event(family: &str, value: &Tensor, event: &[usize]) -> Result<()> {
    let n = value.ndim();
    if n < event.len() || value.shape()[n - event.len()..] != *event {
        return Err(Error::shape(
            family,
            format!("log_prob: value of shape {:?} does not end in the event shape {event:?}", value.shape()),
        ));
    }
    Ok(())
}
