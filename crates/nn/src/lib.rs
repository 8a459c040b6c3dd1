//! # ember-nn
//!
//! PyTorch's `torch.nn` for Ember: the [`Module`] trait and [`ModuleExt`] (parameters, state_dict
//! with PyTorch's keys, train/eval, device moves), `#[derive(Module)]` for user structs, the
//! [`layers`], [`functional`] losses and attention, [`init`] schemes and safetensors checkpoints.
//!
//! ```
//! use ember_autograd::Tensor;
//! use ember_nn::{layers::{Linear, ReLU}, Module, ModuleExt};
//!
//! #[derive(ember_nn::Module)]
//! struct Mlp {
//!     fc1: Linear,
//!     act: ReLU,
//!     fc2: Linear,
//! }
//!
//! impl Module for Mlp {
//!     fn forward(&self, x: &Tensor) -> ember_autograd::Result<Tensor> {
//!         self.fc2.forward(&self.act.forward(&self.fc1.forward(x)?)?)
//!     }
//! }
//!
//! let net = Mlp { fc1: Linear::new(4, 8)?, act: ReLU::default(), fc2: Linear::new(8, 2)? };
//! let keys: Vec<String> = net.state_dict().into_iter().map(|(k, _)| k).collect();
//! assert_eq!(keys, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
//! assert_eq!(net.forward(&Tensor::randn(&[3, 4])?)?.shape(), &[3, 2]);
//! # Ok::<(), ember_autograd::Error>(())
//! ```
#![warn(missing_docs)]

extern crate self as ember_nn;

pub mod functional;
pub mod init;
pub mod layers;
mod module;
mod state_dict;

pub use ember_nn_derive::Module;
pub use layers::Sequential;
pub use module::{state_dict_of, walk_module, walk_module_mut, Module, ModuleExt, Slot, SlotMut, Traverse};
pub use state_dict::{load, load_state_dict, save, LoadReport};

/// The descriptors of the non-elementwise ops this crate implements (attention, recurrent layers and
/// cells); `ember_autograd::NN_OPS` lists the kernels below them.
pub const OPS: &[ember_autograd::OpDescriptor] = &[
    functional::SCALED_DOT_PRODUCT_ATTENTION,
    layers::RNN,
    layers::RNN_CELL,
    layers::MULTI_HEAD_ATTENTION,
    layers::TRANSFORMER_ENCODER_LAYER,
];
