//! Allocation failure as an error, not an abort. Kernels allocate their outputs through
//! [`crate::pool::take`], deep inside code that returns plain vectors (and sometimes on pool
//! threads). When the allocator refuses, `take` unwinds with an [`AllocFailure`] payload (through
//! `resume_unwind`, so no panic message is printed), and every `Backend` method of the CPU backend
//! runs inside [`guarded`], which turns that payload into [`Error::OutOfMemory`] naming the op and
//! the bytes. Any other panic is passed on unchanged: it is a bug, not an input to report.

use ember_storage::{Error, Result};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// The unwinding payload of a refused allocation.
pub(crate) struct AllocFailure {
    bytes: usize,
}

/// Unwinds to the nearest [`guarded`] call with the size that could not be had.
pub(crate) fn alloc_failed(bytes: usize) -> ! {
    resume_unwind(Box::new(AllocFailure { bytes }))
}

/// Runs a backend method, turning a refused allocation inside it into an error naming `op`.
pub(crate) fn guarded<R>(op: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    // AssertUnwindSafe: after an AllocFailure nothing the closure touched is used again except
    // through locks that tolerate poisoning (buffers) or that were released before allocating (pool).
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => match payload.downcast::<AllocFailure>() {
            Ok(a) => Err(Error::out_of_memory(op, a.bytes)),
            Err(other) => resume_unwind(other),
        },
    }
}
