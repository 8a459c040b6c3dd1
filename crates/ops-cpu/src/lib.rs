//! # ember-ops-cpu
//!
//! `CpuBackend`, Ember's [`Backend`] for host memory: strided kernels with contiguous fast paths,
//! rayon parallelism above a size threshold ([`set_num_threads`]), matrix products through the `gemm`
//! crate (batched, any strides, so transposed views need no copy), im2col/col2im for convolution and
//! pooling, and a counter-based Philox generator whose numbers do not depend on the thread count.
//!
//! f16 and bf16 are computed in f32 and rounded once; f32 sums accumulate in f64.
//!
//! ```
//! use ember_ops_cpu::CpuBackend;
//! use ember_storage::{Backend, BinaryOp, HostData, Layout};
//! let cpu = CpuBackend::new();
//! let a = cpu.upload(HostData::F32(vec![1.0, 2.0, 3.0])).unwrap();
//! let l = Layout::contiguous(&[3]);
//! let s = cpu.binary(BinaryOp::Add, (&a, &l), (&a, &l)).unwrap();
//! assert_eq!(cpu.download((&s, &l)).unwrap(), HostData::F32(vec![2.0, 4.0, 6.0]));
//! ```
#![warn(missing_docs)]

mod backend_impl;
mod buffer;
mod conv;
mod elementwise;
mod fused;
mod host;
mod index;
mod layer_norm;
mod lines;
mod matmul;
mod norm;
mod oom;
mod operands;
mod optim_step;
mod pool;
mod program;
mod real;
mod recurrent;
mod reduce;
mod reduce_ops;
mod rng;
mod rows;
mod sample_patches;
mod scalar;
mod scan;
mod simd;
mod softmax;
mod sort;
mod special;
mod staged;
mod strided;
mod threading;
mod window;
mod winograd;

pub use buffer::CpuBuffer;
pub use pool::{cached_bytes, empty_cache, recycle_host, set_cache_limit, take_host};
pub use threading::{num_threads, set_num_threads, set_par_threshold};

use ember_storage::Backend;
use std::sync::{Arc, OnceLock};

/// The CPU backend. Stateless: its thread pool is process-wide.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend.
    pub fn new() -> Self {
        CpuBackend
    }

    /// The shared instance, as registered for `Device::Cpu`.
    pub fn shared() -> Arc<dyn Backend> {
        static ONE: OnceLock<Arc<dyn Backend>> = OnceLock::new();
        ONE.get_or_init(|| Arc::new(CpuBackend)).clone()
    }
}
