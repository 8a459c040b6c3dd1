//! # ember-optim
//!
//! PyTorch's `torch.optim` for Ember: the [`Optimizer`] trait, SGD, Adam, AdamW, RMSprop, Adagrad,
//! Adadelta, Adamax, NAdam, RAdam, Rprop (updates follow PyTorch's formulas step by step; SGD and
//! Adam/AdamW have fused single-pass loops for f32 CPU parameters), [`lr_scheduler`]s,
//! gradient clipping and the [`GradScaler`] of mixed-precision training.
//!
//! ```
//! use ember_autograd::Tensor;
//! use ember_optim::{AdamOptions, AdamW, Optimizer};
//! let w = Tensor::from_vec(vec![1.0f32, -2.0], &[2])?.requires_grad_(true)?;
//! let mut opt = AdamW::adamw(vec![w.clone()], AdamOptions::adamw(0.1))?;
//! for _ in 0..100 {
//!     opt.zero_grad()?;
//!     w.mul(&w)?.sum()?.backward()?;   // minimise |w|²
//!     opt.step()?;
//! }
//! assert!(w.abs()?.max()?.item()? < 0.1);
//! # Ok::<(), ember_autograd::Error>(())
//! ```
#![warn(missing_docs)]

mod algorithms;
mod clip;
mod fused;
mod grad_scaler;
mod lbfgs;
pub mod lr_scheduler;
mod optimizer;

pub use algorithms::*;
pub use clip::{clip_grad_norm_, clip_grad_value_, clip_grads_by_norm};
pub use grad_scaler::{GradScaler, GradScalerOptions};
pub use lbfgs::{Lbfgs, LbfgsOptions, LineSearch};
pub use optimizer::{Algorithm, GroupOptions, Optim, Optimizer, ParamGroup, ParamState};
