//! Grad mode: whether ops record the graph on this thread (`no_grad`, `enable_grad`, guards).

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True when ops record the graph on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
#[derive(Debug)]
pub struct GradModeGuard(bool);

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Sets grad mode on this thread until the guard drops.
pub fn set_grad_enabled(enabled: bool) -> GradModeGuard {
    GradModeGuard(GRAD_ENABLED.with(|g| g.replace(enabled)))
}

/// Runs `f` without recording (`torch.no_grad()`).
///
/// ```
/// use ember_autograd::{no_grad, Tensor};
/// let w = Tensor::ones(&[2]).unwrap().requires_grad_(true).unwrap();
/// let y = no_grad(|| w.mul(2.0)).unwrap();
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = set_grad_enabled(false);
    f()
}

/// Runs `f` with recording on, even inside `no_grad` (`torch.enable_grad()`).
pub fn enable_grad<R>(f: impl FnOnce() -> R) -> R {
    let _g = set_grad_enabled(true);
    f()
}

/// Runs `f` in inference mode: no recording (as `no_grad`; Ember's tensors carry no extra autograd
/// cost to remove).
pub fn inference_mode<R>(f: impl FnOnce() -> R) -> R {
    no_grad(f)
}
