//! # ember-ops-cuda
//!
//! Ember's CUDA backend, built on cudarc with the CUDA libraries loaded at run time, so it compiles
//! and its host logic is tested on machines without CUDA.
//!
//! - [`kernels`]: CUDA C generated from the op table (one kernel per elementwise op and dtype, from
//!   each row's CUDA expression) after a shared prelude;
//! - [`nvrtc`]: compiling those sources to CUBIN at run time, cached on disk;
//! - [`launch`]: the by-value arguments that describe strided operands, and grid sizes.
//!
//! The tests compile every kernel with NVRTC for sm_90 when the library is present, and run the
//! same sources on the CPU as C++ under an emulation header, comparing with the CPU backend.
#![warn(missing_docs)]

pub mod kernels;
pub mod launch;
pub mod nvrtc;
