//! # ember-ops-cuda
//!
//! Ember's CUDA backend, built on cudarc with the CUDA libraries loaded at run time, so it compiles
//! and its host logic is tested on machines without CUDA.
//!
//! - [`kernels`]: CUDA C generated from the op table (one kernel per elementwise op and dtype, from
//!   each row's CUDA expression) after a shared prelude;
//! - [`nvrtc`]: compiling those sources to CUBIN at run time, cached on disk;
//! - [`launch`]: the by-value arguments that describe strided operands, and grid sizes;
//! - [`CudaBackend`]: the `Backend` of one GPU ([`is_available`], [`device_count`]).
//!
//! The tests compile every kernel with NVRTC for sm_90 when the library is present, and run the
//! same sources on the CPU as C++ under an emulation header, comparing with the CPU backend.
#![warn(missing_docs)]

mod backend;
mod fused;
pub mod gemm;
mod host;
pub mod indexing;
pub mod kernels;
pub mod launch;
pub mod memory;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod nvrtc;
mod program;
pub mod staging;

pub use backend::{CudaBackend, CudaBuffer};

use ember_storage::{Error, Result};

/// Whether the CUDA driver library (`libcuda.so`) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to open the library by its candidate names; nothing is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

pub(crate) fn require_driver() -> Result<()> {
    if driver_present() {
        Ok(())
    } else {
        Err(Error::device(
            "cuda",
            "CUDA driver not found: libcuda.so could not be loaded (no NVIDIA driver on this machine, or it is \
             not on the library path)",
        ))
    }
}

/// The number of CUDA devices: 0 without a driver or when the driver reports an error.
pub fn device_count() -> usize {
    if !driver_present() {
        return 0;
    }
    // initialising the driver fails cleanly (an error code, no panic) when no device is present
    if cudarc::driver::result::init().is_err() {
        return 0;
    }
    cudarc::driver::CudaContext::device_count().map(|n| n.max(0) as usize).unwrap_or(0)
}

static ALLOW_TF32: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets f32 matrix products use TF32 tensor cores (10-bit mantissas inside the product, f32
/// accumulation): faster, less exact. Off by default, as PyTorch's
/// `torch.backends.cuda.matmul.allow_tf32`.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// Whether f32 matrix products may use TF32 (see [`set_allow_tf32`]).
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether at least one CUDA device can be used.
pub fn is_available() -> bool {
    device_count() > 0
}
