//! Anomaly mode: when on, a NaN or inf produced by a backward formula is reported with the forward op
//! whose node produced it.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns anomaly detection on or off (process-wide, as `torch.autograd.set_detect_anomaly`).
pub fn set_detect_anomaly(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// True when anomaly detection is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}
