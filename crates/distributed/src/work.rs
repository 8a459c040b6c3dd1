//! [`Work`]: the handle an asynchronous collective returns (PyTorch's `Work` / `async_op=True`).

use ember_autograd::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A collective in flight. [`Work::wait`] blocks until it has finished and gives its result (for
/// in-place collectives, the tensor has been written when `wait` returns). Dropping a `Work` without
/// waiting is allowed: the collective still completes, but its result (and any error, such as a
/// timeout) is lost and an in-place tensor is not written.
#[must_use = "a collective's result is only written (and its errors seen) by wait()"]
pub struct Work<T = ()> {
    done: Arc<AtomicBool>,
    finish: Box<dyn FnOnce() -> Result<T> + Send>,
}

impl<T> Work<T> {
    /// A handle whose result is already known (world of one, or an error found before launch).
    pub fn ready(result: Result<T>) -> Work<T>
    where
        T: Send + 'static,
    {
        Work { done: Arc::new(AtomicBool::new(true)), finish: Box::new(move || result) }
    }

    /// A handle completed by someone else: `done` is set when the collective has finished, and
    /// `finish` blocks until then and produces the result.
    pub fn pending(done: Arc<AtomicBool>, finish: impl FnOnce() -> Result<T> + Send + 'static) -> Work<T> {
        Work { done, finish: Box::new(finish) }
    }

    /// Whether the collective has finished (`wait` will not block on the transport).
    pub fn is_completed(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Blocks until the collective has finished; returns its result or its error (a peer that
    /// never joined shows as a timeout naming the collective).
    pub fn wait(self) -> Result<T> {
        (self.finish)()
    }

    /// Maps the result when it arrives.
    pub fn map<U>(self, f: impl FnOnce(T) -> Result<U> + Send + 'static) -> Work<U>
    where
        T: 'static,
    {
        let finish = self.finish;
        Work { done: self.done, finish: Box::new(move || f(finish()?)) }
    }
}

impl<T> std::fmt::Debug for Work<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work").field("completed", &self.is_completed()).finish()
    }
}

#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
/// The error for a process group whose worker is gone (it panicked, or the group was dropped).
pub(crate) fn worker_gone(what: &str) -> Error {
    Error::backend(what, "the process group's communication thread has stopped (an earlier error broke the group)")
}
