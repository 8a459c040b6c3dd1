//! Device memory accounting, as PyTorch's `torch.cuda.memory_allocated` and friends report it.
//!
//! Allocation itself is CUDA's stream-ordered pool (`cuMemAllocAsync` on the backend's one stream,
//! through cudarc): the backend sets the device pool's release threshold to "never", so freed
//! blocks stay cached in the pool and a training loop's steady state allocates from it without
//! calling into the driver's slow path, as PyTorch's caching allocator does; `empty_cache` trims the
//! pool back. [`MemoryStats`] counts the bytes of live Ember buffers (what the program holds, not
//! what the pool has reserved) and their peak.

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
