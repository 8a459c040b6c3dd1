//! Diagnostics: with `EMBER_LAZY_LOG=1` (or [`crate::set_log`]) every fusion group run is printed to
//! stderr with its steps, what triggered it and why chains feeding it were cut (PyTorch users know
//! `TORCH_LOGS="fusion"`); [`crate::stats`] counts groups, fused ops and materialised values.

use ember_storage::{ElementwiseProgram, Step};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// 0: not read yet, 1: off, 2: on.
static LOG: AtomicU8 = AtomicU8::new(0);
pub(crate) static GROUPS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static FUSED_OPS: AtomicUsize = AtomicUsize::new(0);
pub(crate) static MATERIALISED: AtomicUsize = AtomicUsize::new(0);
pub(crate) static EAGER_OPS: AtomicUsize = AtomicUsize::new(0);

/// Whether groups are logged.
pub(crate) fn enabled() -> bool {
    match LOG.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("EMBER_LAZY_LOG").is_ok_and(|v| !v.is_empty() && v != "0");
            LOG.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// Turns the group log on or off (overrides `EMBER_LAZY_LOG`).
pub fn set_log(on: bool) {
    LOG.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Counts (and logs) a group that ran.
pub(crate) fn group(p: &ElementwiseProgram, inputs: usize, cuts: &[String], why: &str) {
    let ops = p.steps.iter().filter(|s| !matches!(s, Step::Input(_))).count();
    GROUPS.fetch_add(1, Ordering::Relaxed);
    FUSED_OPS.fetch_add(ops, Ordering::Relaxed);
    MATERIALISED.fetch_add(p.outputs.len(), Ordering::Relaxed);
    if enabled() {
        eprintln!(
            "ember-lazy: group of {ops} ops, {inputs} inputs, {} outputs, needed by {why}: {}",
            p.outputs.len(),
            p.describe()
        );
        for c in cuts {
            eprintln!("ember-lazy:   cut: {c}");
        }
    }
}
