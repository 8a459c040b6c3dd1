//! # ember-lazy
//!
//! Lazy evaluation and kernel fusion for Ember (DESIGN.md decision 13): [`LazyBackend`] wraps any
//! backend and serves its *lazy device* (`Device::Cpu.lazy()`, shown as `lazy:0`; `cuda:N` gives
//! `lazy-cuda:N`). For the user it is one line — move the model and the data there:
//!
//! ```text
//! let dev = Device::Cpu.lazy();            // or Device::parse("lazy")
//! let model = model.to_device(&dev)?;      // parameters live on the lazy device
//! let y = model.forward(&x.to(dev)?)?;     // elementwise ops are recorded, not run
//! println!("{}", y.sum()?.item()?);        // reading a value runs what it needs, fused
//! ```
//!
//! Autograd, nn modules and optimizers work unchanged, since everything above the backend only
//! sees the `Backend` trait; backward's elementwise ops are recorded lazily too and fuse.
//!
//! ## What is fused
//! f32 and f64 arithmetic elementwise ops of the op table (unary and binary, broadcasting through
//! layouts) are recorded as pending buffers. When a value is needed, it and the pending values it
//! reads through the identity layout form one group ([`ElementwiseProgram`]), which the inner
//! backend runs in one pass ([`FusedKernels::elementwise`]: the CPU backend in cache-sized tiles
//! with the eager kernels' own vectorised loops, the CUDA backend as one kernel generated from the
//! op table's expressions; either way **results are bit-identical to eager**).
//! See [`schedule`] for the grouping rules, what is materialised and when evaluation happens.
//! Everything else (reductions, matrix products, indexing, casts, comparisons, convolutions,
//! integer and half-precision ops) evaluates its inputs and runs eagerly on the inner backend.
//!
//! ## Diagnostics
//! `EMBER_LAZY_LOG=1` prints every group run, what needed it and why chains were cut; [`stats`]
//! counts groups, fused ops and live buffers.
//!
//! [`ElementwiseProgram`]: ember_storage::ElementwiseProgram
//! [`FusedKernels::elementwise`]: ember_storage::FusedKernels::elementwise
#![warn(missing_docs)]

mod backend;
mod buffer;
mod fused;
mod log;
pub mod schedule;

pub use backend::LazyBackend;
pub use buffer::LazyBuffer;
pub use log::set_log;

use std::sync::atomic::Ordering;

/// Evaluates every pending value that is still alive (`torch.cuda.synchronize`'s role for the
/// lazy devices: afterwards nothing is pending).
pub fn sync() -> ember_storage::Result<()> {
    schedule::sync_all()
}

/// Counters of the lazy devices since the process started (live counts are current).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// Lazy buffers alive now (ready or pending).
    pub live_buffers: usize,
    /// Pending (not yet computed) buffers alive now.
    pub pending_buffers: usize,
    /// Fusion groups run.
    pub groups: usize,
    /// Elementwise ops run inside groups.
    pub fused_ops: usize,
    /// Values written to memory by groups (each group's result and the members still held).
    pub materialised: usize,
    /// Ops run eagerly on the inner backend (not fusible).
    pub eager_ops: usize,
}

/// The lazy devices' counters.
pub fn stats() -> LazyStats {
    let pending = buffer::PENDING.lock().unwrap_or_else(|e| e.into_inner()).live().len();
    LazyStats {
        live_buffers: buffer::LIVE.load(Ordering::Relaxed),
        pending_buffers: pending,
        groups: log::GROUPS.load(Ordering::Relaxed),
        fused_ops: log::FUSED_OPS.load(Ordering::Relaxed),
        materialised: log::MATERIALISED.load(Ordering::Relaxed),
        eager_ops: log::EAGER_OPS.load(Ordering::Relaxed),
    }
}
