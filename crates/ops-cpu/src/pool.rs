//! A cache of freed large buffers, reused by size: a fresh 64 MiB output would otherwise be
//! page-faulted in on every op (the cost that dominates PyTorch's W2/W3 "fresh output" figures).
//! Bounded by [`set_cache_limit`]: when full, the sizes used longest ago are evicted first, so that
//! a phase with other shapes (evaluation batches) does not lock the training shapes out of the
//! cache. [`empty_cache`] returns the memory to the OS.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this are left to the system allocator. From here up, `calloc` zeroes every
/// reused block (a visible memset in recurrent steps), so the cache pays for its lock.
const MIN_BYTES: usize = 1 << 15;

static LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);

/// (element type, element count, element size in bytes).
type Key = (TypeId, usize, usize);

struct Cache {
    free: HashMap<Key, Vec<Box<dyn Any + Send>>>,
    /// When each size was last taken or given (a tick of `clock`).
    last_use: HashMap<Key, u64>,
    clock: u64,
    bytes: usize,
}

impl Cache {
    fn touch(&mut self, key: Key) {
        self.clock += 1;
        self.last_use.insert(key, self.clock);
    }

    /// Drops cached buffers until `bytes` more fit under `limit`: first from the size with the most
    /// spare buffers (spares pile up where buffers arrive that were not taken from the cache), then
    /// from the size used longest ago.
    fn make_room(&mut self, bytes: usize, limit: usize) -> bool {
        while self.bytes + bytes > limit {
            let victim = self
                .free
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .max_by_key(|(k, v)| (v.len(), std::cmp::Reverse(self.last_use.get(*k).copied().unwrap_or(0))))
                .map(|(k, _)| *k);
            let Some(key) = victim else { return false };
            if let Some(v) = self.free.get_mut(&key) {
                v.pop();
                self.bytes -= key.1 * key.2;
            }
        }
        true
    }
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Cache { free: HashMap::new(), last_use: HashMap::new(), clock: 0, bytes: 0 }))
}

/// A vector of `n` elements: a cached one (old contents, to be overwritten) or a new zeroed one.
pub(crate) fn take<U: Copy + Default + Send + 'static>(n: usize) -> Vec<U> {
    let bytes = n.saturating_mul(std::mem::size_of::<U>());
    if bytes >= MIN_BYTES {
        let key = (TypeId::of::<U>(), n, std::mem::size_of::<U>());
        let hit = with_cache(|c| {
            c.touch(key);
            let v = c.free.get_mut(&key)?.pop()?;
            c.bytes -= bytes;
            Some(v)
        });
        if let Some(v) = hit.and_then(|b| b.downcast::<Vec<U>>().ok()) {
            return *v;
        }
    }
    fresh(n)
}

/// An empty vector with room for `n` elements, allocated fallibly (see [`fresh`]).
pub(crate) fn reserve<U>(n: usize) -> Vec<U> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        crate::oom::alloc_failed(n.saturating_mul(std::mem::size_of::<U>()));
    }
    v
}

/// A new zeroed vector, allocated fallibly: a refused allocation unwinds to the backend method's
/// [`crate::oom::guarded`] and becomes an out-of-memory error instead of aborting the process.
pub(crate) fn fresh<U: Copy + Default>(n: usize) -> Vec<U> {
    // Probe first, then allocate with `vec!`: for zero defaults that is `calloc`, whose fresh
    // pages arrive zeroed from the OS without a memset (a `resize` would touch every page).
    // Below PROBE_BYTES the probe is skipped: failing there means the process is out of memory
    // anyway, and the extra malloc/free would show in per-op overhead.
    if n.saturating_mul(std::mem::size_of::<U>()) >= PROBE_BYTES {
        drop(reserve::<U>(n));
    }
    vec![U::default(); n]
}

/// From this size up, [`fresh`] checks that the allocation can succeed before making it.
const PROBE_BYTES: usize = 1 << 20;

/// [`take`] for a product of sizes: the count saturates instead of wrapping, so an impossible
/// product becomes an out-of-memory error, never a short buffer that a kernel would overrun.
pub(crate) fn take_n<U: Copy + Default + Send + 'static>(sizes: &[usize]) -> Vec<U> {
    take(ember_storage::shape::numel(sizes))
}

/// Gives a vector back for reuse (dropped instead when small or when the cache is full).
pub(crate) fn give<U: Send + 'static>(v: Vec<U>) {
    let n = v.len();
    let bytes = n * std::mem::size_of::<U>();
    if bytes < MIN_BYTES || v.capacity() != n {
        return;
    }
    let key = (TypeId::of::<U>(), n, std::mem::size_of::<U>());
    with_cache(move |c| {
        c.touch(key);
        if c.make_room(bytes, LIMIT.load(Ordering::Relaxed)) {
            c.bytes += bytes;
            c.free.entry(key).or_default().push(Box::new(v));
        }
    });
}

/// Bytes currently held for reuse.
pub fn cached_bytes() -> usize {
    with_cache(|c| c.bytes)
}

/// Frees every cached buffer.
pub fn empty_cache() {
    with_cache(|c| {
        c.free.clear();
        c.last_use.clear();
        c.bytes = 0;
    });
}

/// Sets the most memory the cache may hold (default 1 GiB; 0 disables caching).
pub fn set_cache_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    if cached_bytes() > bytes {
        empty_cache();
    }
}

/// Host data of `n` elements of `dtype` from the cache (old contents, to be overwritten) or newly
/// zeroed: for code that fills large host buffers repeatedly (a collective's receive buffer), so
/// that their pages are not faulted in every time. Give it back with [`recycle_host`].
pub fn take_host(dtype: ember_storage::DType, n: usize) -> ember_storage::HostData {
    use ember_storage::{DType, HostData};
    match dtype {
        DType::Bool => HostData::Bool(take(n)),
        DType::U8 => HostData::U8(take(n)),
        DType::I32 => HostData::I32(take(n)),
        DType::I64 => HostData::I64(take(n)),
        DType::F16 => HostData::F16(take(n)),
        DType::BF16 => HostData::BF16(take(n)),
        DType::F32 => HostData::F32(take(n)),
        DType::F64 => HostData::F64(take(n)),
    }
}

/// Returns host data's memory to the cache (small buffers are just dropped).
pub fn recycle_host(h: ember_storage::HostData) {
    ember_storage::with_host_data!(h, v => give(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> Key {
        (TypeId::of::<f32>(), n, 4)
    }

    fn cache_with(entries: &[(usize, usize)]) -> Cache {
        let mut c = Cache { free: HashMap::new(), last_use: HashMap::new(), clock: 0, bytes: 0 };
        for &(n, count) in entries {
            for _ in 0..count {
                c.free.entry(key(n)).or_default().push(Box::new(vec![0f32; n]));
                c.bytes += n * 4;
            }
            c.touch(key(n));
        }
        c
    }

    #[test]
    fn a_full_cache_evicts_piled_up_spares_first() {
        // 5 spares of one size, 1 of another used longer ago: room is made from the pile
        let mut c = cache_with(&[(100, 1), (10, 5)]);
        assert_eq!(c.bytes, 600);
        assert!(c.make_room(80, 600));
        assert_eq!(c.free[&key(10)].len(), 3);
        assert_eq!(c.free[&key(100)].len(), 1);
        assert_eq!(c.bytes, 520);
    }

    #[test]
    fn ties_evict_the_size_used_longest_ago() {
        let mut c = cache_with(&[(10, 1), (20, 1)]);
        assert!(c.make_room(40, 120));
        assert!(c.free[&key(10)].is_empty(), "the older size goes first");
        assert_eq!(c.free[&key(20)].len(), 1);
        assert!(!c.make_room(1000, 100), "nothing left to evict");
    }
}
