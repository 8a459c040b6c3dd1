//! # ember
//!
//! PyTorch's programming model in Rust. This facade re-exports the layers (`ember-storage`,
//! `ember-ops-cpu`, `ember-autograd`) and a [`prelude`].
//!
//! ```
//! use ember::prelude::*;
//! let x = Tensor::randn(&[4, 3]).unwrap();
//! let w = Tensor::ones(&[3, 2]).unwrap();
//! let y = x.matmul(&w).unwrap().relu().unwrap();
//! assert_eq!(y.shape(), &[4, 2]);
//! ```
#![warn(missing_docs)]

pub use ember_autograd::*;
pub use ember_data as data;
pub use ember_distributed as distributed;
pub use ember_distributions as distributions;
pub use ember_nn as nn;
pub use ember_ops_cpu as cpu;
pub use ember_optim as optim;
pub use ember_storage as storage;
pub use ember_storage::{Backend, Layout};

/// Coming from PyTorch: the rules, and PyTorch's common names mapped to Ember's.
#[doc = include_str!("coming_from_pytorch.md")]
pub mod coming_from_pytorch {}

/// The names most programs need: `use ember::prelude::*;` brings the tensor type and its
/// argument traits, the `tensor!`/`idx!` macros, grad-mode scopes, the module traits and the
/// builder traits of the layers (`Conv2d::new(3, 16, 4).stride(2).bias(false)`), the losses'
/// options, `init`, the optimizer trait with parameter groups, schedulers and the grad scaler.
pub mod prelude {
    pub use ember_autograd::{
        autocast, idx, manual_seed, no_grad, s, tensor, AsTensor, ConvOptions, ConvPadding, CudaDeviceExt, DType,
        Device, Dim, Dims, Error, PadMode, PoolOptions, Result, SliceItem, Tensor, ELLIPSIS, NEW_AXIS, SCALAR,
    };
    pub use ember_nn::functional::{ClassLossOptions, Reduction};
    pub use ember_nn::layers::{ConvBuilder, WithBias};
    pub use ember_nn::{functional as F, init, layers as nn_layers, Module, ModuleExt, Sequential};
    pub use ember_optim as optim;
    pub use ember_optim::{clip_grad_norm_, lr_scheduler, GradScaler, GradScalerOptions, Optimizer, ParamGroup};
}
