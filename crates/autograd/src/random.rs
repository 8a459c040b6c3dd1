//! The global generator: a seed and a counter. Every random op takes a block of counter values, so a
//! seed fixes every number drawn afterwards, whatever the thread count.

use ember_storage::RngKey;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static STATE: Mutex<(u64, u64)> = Mutex::new((0x05ee_d0fe_3be7, 0));
static CALLS: AtomicU64 = AtomicU64::new(0);

/// Seeds every random op (`torch.manual_seed`).
///
/// ```
/// use ember_autograd::{manual_seed, Tensor};
/// manual_seed(3);
/// let a = Tensor::rand(&[4]).unwrap().to_vec::<f32>().unwrap();
/// manual_seed(3);
/// assert_eq!(a, Tensor::rand(&[4]).unwrap().to_vec::<f32>().unwrap());
/// ```
pub fn manual_seed(seed: u64) {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = (seed, 0);
}

/// The current seed.
pub fn initial_seed() -> u64 {
    STATE.lock().unwrap_or_else(|e| e.into_inner()).0
}

/// Reserves `n` counter values and returns where they start.
pub(crate) fn next_key(n: usize) -> RngKey {
    CALLS.fetch_add(1, Ordering::Relaxed);
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let key = RngKey { seed: s.0, offset: s.1 };
    s.1 = s.1.wrapping_add(n as u64);
    key
}
