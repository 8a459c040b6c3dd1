//! # ember-storage
//!
//! The bottom layer of Ember: what a tensor is made of and the contract every device implements.
//!
//! - [`DType`] with PyTorch's promotion, and [`Element`] tying Rust types to dtypes;
//! - [`Device`] and a registry of backends ([`register_backend`], [`backend_for`]);
//! - [`Layout`]: shape, strides and offset, with zero-copy views (reshape, permute, narrow, slice with
//!   step, expand, squeeze/unsqueeze, diagonal, unfold);
//! - [`Buffer`]: opaque, backend-owned memory;
//! - the [`Backend`] trait: op families as methods, ops as enums ([`UnaryOp`], [`BinaryOp`], ...);
//! - [`Error`], the one error type of every layer.
//!
//! Nothing here assumes host memory: a CUDA or remote backend implements [`Backend`] unchanged.
#![warn(missing_docs)]

pub mod alloc;
mod backend;
mod buffer;
mod device;
mod dtype;
mod error;
mod fused;
mod layout;
pub mod op_table;
pub mod ops;
mod program;
pub mod shape;

pub use backend::{Backend, Scalar, View};
pub use buffer::{Buffer, DeviceBuffer, HostData, HostElement};
pub use device::{backend_for, register_backend, registered_devices, Device};
pub use dtype::{DType, DTypeKind, Element};
pub use error::{Error, IoSource, Result};
pub use fused::{layer_norm_rows, AdamStep, FusedKernels, SgdStep};
pub use layout::{for_each_run, Dims, Layout};
pub use ops::{BinaryOp, Domain, IndexOp, OpClass, ReduceOp, RngKey, RngOp, Saves, ScanOp, UnaryOp, WindowGeometry};
pub use program::{ElementwiseProgram, Step};
