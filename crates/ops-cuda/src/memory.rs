//! Device memory: the pool settings (caching, trimming, reserved bytes) and accounting, as PyTorch's
//! `torch.cuda.memory_allocated` and friends report it.
//!
//! Allocation itself is CUDA's stream-ordered pool (`cuMemAllocAsync` on the backend's one stream,
//! through cudarc): the backend sets the device pool's release threshold to "never", so freed
//! blocks stay cached in the pool and a training loop's steady state allocates from it without
//! calling into the driver's slow path, as PyTorch's caching allocator does; `empty_cache` trims the
//! pool back. [`MemoryStats`] counts the bytes of live Ember buffers (what the program holds, not
//! what the pool has reserved) and their peak.

use crate::backend::driver_err;
use cudarc::driver::{sys, CudaContext};
use ember_storage::Result;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Live and peak bytes of one device's buffers.
#[derive(Debug, Default)]
pub struct MemoryStats {
    allocated: AtomicUsize,
    peak: AtomicUsize,
}

impl MemoryStats {
    /// Counts a new buffer of `bytes`.
    pub fn add(&self, bytes: usize) {
        let now = self.allocated.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a freed buffer of `bytes`.
    pub fn sub(&self, bytes: usize) {
        self.allocated.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes held by live buffers (`memory_allocated`).
    pub fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The most bytes held at once since the start or the last reset (`max_memory_allocated`).
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts peak tracking again from what is held now (`reset_peak_memory_stats`).
    pub fn reset_peak(&self) {
        self.peak.store(self.allocated(), Ordering::Relaxed);
    }
}

/// The device's default memory pool (the one `cuMemAllocAsync` draws from).
fn default_pool(ctx: &CudaContext) -> Result<sys::CUmemoryPool> {
    ctx.bind_to_thread().map_err(driver_err("cuda memory pool"))?;
    let mut pool = std::ptr::null_mut();
    // SAFETY: `ctx.cu_device()` is a valid device; the pool handle is written to `pool`.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .map_err(driver_err("cuda memory pool"))?;
    Ok(pool)
}

/// Sets the default pool's release threshold to "never", so freed blocks stay cached for reuse
/// (without it the pool returns memory to the driver at every synchronisation). Devices without
/// stream-ordered allocation (cudarc then allocates synchronously) are left as they are.
pub(crate) fn keep_freed_memory_cached(ctx: &CudaContext) -> Result<()> {
    if !ctx.has_async_alloc() {
        return Ok(());
    }
    let pool = default_pool(ctx)?;
    let mut threshold = u64::MAX;
    // SAFETY: `pool` is the device's default pool; the attribute is a u64 read from `threshold`.
    unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .result()
    .map_err(driver_err("cuda memory pool"))
}

/// Bytes the device's default pool has reserved from the driver (live buffers plus cached blocks).
pub(crate) fn pool_reserved_bytes(ctx: &CudaContext) -> Result<usize> {
    let pool = default_pool(ctx)?;
    let mut value = 0u64;
    // SAFETY: `pool` is the device's default pool; the attribute is a u64 written to `value`.
    unsafe {
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
            (&mut value as *mut u64).cast(),
        )
    }
    .result()
    .map_err(driver_err("memory_reserved"))?;
    Ok(value as usize)
}

/// Returns the default pool's cached free blocks to the driver.
pub(crate) fn trim_pool(ctx: &CudaContext) -> Result<()> {
    let pool = default_pool(ctx)?;
    // SAFETY: `pool` is the device's default pool; trimming only releases unused memory.
    unsafe { sys::cuMemPoolTrimTo(pool, 0) }.result().map_err(driver_err("empty_cache"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_bytes_and_the_peak_since_the_last_reset() {
        let s = MemoryStats::default();
        s.add(100);
        s.add(50);
        s.sub(100);
        assert_eq!((s.allocated(), s.peak()), (50, 150));
        s.reset_peak();
        assert_eq!(s.peak(), 50);
        s.add(20);
        s.sub(70);
        assert_eq!((s.allocated(), s.peak()), (0, 70));
    }

    #[test]
    fn counting_from_many_threads_loses_nothing() {
        let s = MemoryStats::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        s.add(8);
                        s.sub(8);
                    }
                });
            }
        });
        assert_eq!(s.allocated(), 0);
        assert!(s.peak() >= 8 && s.peak() <= 32, "{}", s.peak());
    }
}
