//! The CPU backend's thread pool and the size above which kernels go parallel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};

static THRESHOLD: AtomicUsize = AtomicUsize::new(32 * 1024);
static POOL: OnceLock<RwLock<std::sync::Arc<rayon::ThreadPool>>> = OnceLock::new();

fn build(threads: usize) -> std::sync::Arc<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("ember-cpu-{i}"));
    if threads > 0 {
        b = b.num_threads(threads);
    }
    std::sync::Arc::new(b.build().expect("ember: could not start the CPU thread pool"))
}

/// The pool kernels run on (all cores unless [`set_num_threads`] said otherwise).
pub fn pool() -> std::sync::Arc<rayon::ThreadPool> {
    let lock = POOL.get_or_init(|| {
        let n = std::env::var("EMBER_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        RwLock::new(build(n))
    });
    lock.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Sets the number of CPU threads (0 = all cores), like `torch.set_num_threads`.
/// Results do not depend on it: reductions split work at fixed block boundaries.
pub fn set_num_threads(n: usize) {
    let lock = POOL.get_or_init(|| RwLock::new(build(n)));
    *lock.write().unwrap_or_else(|e| e.into_inner()) = build(n);
}

/// The number of threads kernels use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Element count above which elementwise kernels split work across threads.
pub fn par_threshold() -> usize {
    THRESHOLD.load(Ordering::Relaxed)
}

/// Changes the parallel threshold (tests use a small one to exercise the parallel paths).
pub fn set_par_threshold(n: usize) {
    THRESHOLD.store(n.max(1), Ordering::Relaxed);
}
