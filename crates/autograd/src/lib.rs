//! # ember-autograd
//!
//! [`Tensor`], Ember's user-facing n-d array: PyTorch's op API (creation, elementwise with broadcasting
//! and type promotion, reductions, indexing and slicing, shape ops, linear algebra, the kernels behind
//! `nn.functional`), in-place ops with version counters, and interop (safetensors, `.npy`).
//! Every fallible op returns `Result<Tensor, Error>` whose message names the op and the shapes.
//!
//! Autograd is define-by-run: every op records its backward (written in Tensor ops, so gradients of
//! gradients work) as the program runs, so the graph may differ at every step.
//!
//! The seed's example, an RNN cell built from `mm`, add and `tanh`:
//!
//! ```
//! use ember_autograd::Tensor;
//! let (x, h) = (Tensor::randn(&[1, 10]).unwrap(), Tensor::randn(&[1, 20]).unwrap());
//! let w_h = Tensor::randn(&[20, 20]).unwrap().requires_grad_(true).unwrap();
//! let w_x = Tensor::randn(&[20, 10]).unwrap().requires_grad_(true).unwrap();
//! let i2h = w_x.mm(&x.t().unwrap()).unwrap();
//! let h2h = w_h.mm(&h.t().unwrap()).unwrap();
//! let next_h = i2h.add(&h2h).unwrap().tanh().unwrap();
//! next_h.backward_with(&next_h.ones_like().unwrap()).unwrap();
//! assert_eq!(w_h.grad().unwrap().shape(), &[20, 20]);
//! ```
//!
//! ```
//! use ember_autograd::Tensor;
//! let x = Tensor::arange(6).unwrap().reshape(&[2, 3]).unwrap().to_dtype(ember_storage::DType::F32).unwrap();
//! let y = x.softmax(-1).unwrap().sum_dim(&[-1], false).unwrap();
//! assert!(y.to_vec::<f32>().unwrap().iter().all(|v| (v - 1.0).abs() < 1e-6));
//! ```
#![warn(missing_docs)]

mod anomaly;
mod args;
pub mod autocast;
mod autograd_api;
mod composite;
mod creation;
mod derivatives;
mod device;
mod display;
mod elementwise;
mod function;
mod graph;
mod host_view;
mod index;
mod inplace;
pub mod io;
mod linalg;
mod linalg_decomp;
mod literal;
mod nn;
pub mod optim_kernels;
mod pickle;
mod product_grads;
pub mod profiler;
mod random;
mod rebase;
mod reduce;
mod shape_ops;
mod tensor;
mod torch_file;

pub use anomaly::set_detect_anomaly;
pub use args::{AsTensor, Dim, Dims, SCALAR};
pub use autocast::{
    autocast, autocast_cache_len, autocast_disabled, autocast_dtype, autocast_op, autocast_op_multi,
    is_autocast_enabled,
};
pub use autograd_api::{grad, gradcheck};
pub use creation::DEFAULT_FLOAT;
pub use device::{backend, cuda, CudaDeviceExt};
pub use elementwise::{result_type, Rhs};
pub use function::{apply, checkpoint, Context, Function};
pub use graph::{enable_grad, inference_mode, is_grad_enabled, live_nodes, no_grad, set_grad_enabled, GradModeGuard};
pub use index::{s, SliceItem, ELLIPSIS, NEW_AXIS};
pub use literal::TensorLiteral;
pub use nn::{
    conv_output_shape, conv_transpose_output_shape, pool_output_shape, ConvOptions, ConvPadding, InterpMode,
    OpBackward, OpDescriptor, PoolOptions, OPS as NN_OPS,
};
pub use random::{initial_seed, manual_seed};
pub use shape_ops::PadMode;
pub use tensor::Tensor;

/// Lazy evaluation and fusion (crate `ember-lazy`, DESIGN.md decision 13): tensors on a lazy
/// device (`Device::Cpu.lazy()`, `Device::parse("lazy")`) record their elementwise ops and run
/// them as fused groups when a value is read; results are bit-identical to eager.
///
/// ```
/// use ember_autograd::{lazy, Device, Tensor};
/// let dev = Device::Cpu.lazy();
/// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap().to(dev).unwrap();
/// let y = x.mul(&x).unwrap().add(1.0).unwrap().tanh().unwrap(); // recorded, not run
/// let eager = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
/// let e = eager.mul(&eager).unwrap().add(1.0).unwrap().tanh().unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), e.to_vec::<f32>().unwrap()); // one fused pass, same bits
/// lazy::sync().unwrap();
/// ```
pub mod lazy {
    pub use ember_lazy::schedule::{MAX_DEPTH, MAX_STEPS};
    pub use ember_lazy::{set_log, stats, sync, LazyStats};
}

pub use ember_storage::{
    alloc, AdamStep, BinaryOp, DType, Device, Domain, Error, OpClass, Result, RngOp, Saves, SgdStep, UnaryOp,
};
