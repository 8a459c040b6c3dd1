//! Anomaly mode: when on, a NaN or inf produced by a backward formula is reported with the forward op
//! whose node produced it. Per thread: a backward pass uses the setting of the thread that starts it.

use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
}

/// Turns anomaly detection on or off for this thread (`torch.autograd.set_detect_anomaly`).
pub fn set_detect_anomaly(on: bool) {
    ENABLED.with(|e| e.set(on));
}

/// True when anomaly detection is on for this thread.
pub fn is_enabled() -> bool {
    ENABLED.with(|e| e.get())
}
