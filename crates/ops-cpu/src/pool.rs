//! A cache of freed large buffers, reused by size: a fresh 64 MiB output would otherwise be
//! page-faulted in on every op (the cost that dominates PyTorch's W2/W3 "fresh output" figures).
//! Bounded by [`set_cache_limit`]; [`empty_cache`] returns the memory to the OS.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this are left to the system allocator (cheap, and already reused by it).
const MIN_BYTES: usize = 1 << 20;

static LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);

type Key = (TypeId, usize);

struct Cache {
    free: HashMap<Key, Vec<Box<dyn Any + Send>>>,
    bytes: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    let mut g = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Cache { free: HashMap::new(), bytes: 0 }))
}

/// A vector of `n` elements: a cached one (old contents, to be overwritten) or a new zeroed one.
pub(crate) fn take<U: Copy + Default + Send + 'static>(n: usize) -> Vec<U> {
    let bytes = n * std::mem::size_of::<U>();
    if bytes >= MIN_BYTES {
        let hit = with_cache(|c| {
            let v = c.free.get_mut(&(TypeId::of::<U>(), n))?.pop()?;
            c.bytes -= bytes;
            Some(v)
        });
        if let Some(v) = hit.and_then(|b| b.downcast::<Vec<U>>().ok()) {
            return *v;
        }
    }
    vec![U::default(); n]
}

/// Gives a vector back for reuse (dropped instead when small or when the cache is full).
pub(crate) fn give<U: Send + 'static>(v: Vec<U>) {
    let n = v.len();
    let bytes = n * std::mem::size_of::<U>();
    if bytes < MIN_BYTES || v.capacity() != n {
        return;
    }
    with_cache(move |c| {
        if c.bytes + bytes <= LIMIT.load(Ordering::Relaxed) {
            c.bytes += bytes;
            c.free.entry((TypeId::of::<U>(), n)).or_default().push(Box::new(v));
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
