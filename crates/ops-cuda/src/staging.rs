//! Pinned (page-locked) host buffers for uploads: what PyTorch's `pin_memory=True` and
//! `to(device, non_blocking=True)` give a training loop, without asking the user. An upload of at
//! least [`PINNED_MIN`] bytes is copied into one of two pinned slots and handed to the DMA engine
//! asynchronously, so the host goes on (preparing the next batch) while the copy runs, and the copy
//! runs at the bus's full speed instead of through the driver's pageable bounce buffer. A slot is
//! rewritten only after its previous copy finished (an event per slot); the two slots alternate,
//! so one upload can be in flight while the next is being staged. Smaller uploads go directly
//! (their cost is the call, not the bandwidth); larger than [`PINNED_MAX`] ones too, so pinned memory
//! stays bounded (2 x 256 MiB at most, allocated on demand and grown in powers of two).

use cudarc::driver::{CudaContext, CudaEvent, CudaStream, PinnedHostSlice};
use ember_storage::{Error, Result};
use std::sync::{Arc, Mutex};

/// Uploads below this many bytes are copied directly.
pub const PINNED_MIN: usize = 64 << 10;
/// Uploads above this many bytes are copied directly.
pub const PINNED_MAX: usize = 256 << 20;

/// The size of the slot that stages `bytes` (`None`: not staged).
pub fn slot_size(bytes: usize) -> Option<usize> {
    (PINNED_MIN..=PINNED_MAX).contains(&bytes).then(|| bytes.next_power_of_two())
}

struct Slot {
    mem: PinnedHostSlice<u8>,
    done: CudaEvent,
}

/// Two pinned slots used in turn.
#[derive(Default)]
pub(crate) struct Staging {
    slots: [Mutex<Option<Slot>>; 2],
    next: Mutex<usize>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Staging { 2 pinned slots }")
    }
}

fn err(e: cudarc::driver::DriverError) -> Error {
    Error::backend("to", format!("CUDA: {e}"))
}

impl Staging {
    /// Queues the copy of `bytes` to device address `dst` (which holds at least that many bytes)
    /// through a pinned slot, returning `false` (and doing nothing) when `bytes` is not staged.
    pub(crate) fn upload(&self, ctx: &Arc<CudaContext>, stream: &CudaStream, bytes: &[u8], dst: u64) -> Result<bool> {
        let Some(size) = slot_size(bytes.len()) else { return Ok(false) };
        let index = {
            let mut next = self.next.lock().expect("staging index");
            let i = *next;
            *next = (i + 1) % self.slots.len();
            i
        };
        let mut guard = self.slots[index].lock().expect("staging slot");
        if !guard.as_ref().is_some_and(|s| s.mem.len() >= size) {
            if let Some(old) = guard.take() {
                old.done.synchronize().map_err(err)?;
            }
            // SAFETY: the bytes are uninitialised until written below; only the prefix written
            // is ever copied.
            let mem =
                unsafe { ctx.alloc_pinned_with_flags::<u8>(size, cudarc::driver::sys::CU_MEMHOSTALLOC_WRITECOMBINED) }
                    .map_err(err)?;
            let done = ctx.new_event(None).map_err(err)?;
            *guard = Some(Slot { mem, done });
        }
        let slot = guard.as_mut().expect("allocated above");
        // the slot's previous copy must have left it before it is rewritten
        slot.done.synchronize().map_err(err)?;
        let p = slot.mem.as_mut_ptr().map_err(err)?;
        // SAFETY: the slot holds at least `bytes.len()` bytes (slot_size rounds up), no copy reads
        // it any more (synchronised above), and the two regions are distinct allocations.
        let staged = unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            std::slice::from_raw_parts(p, bytes.len())
        };
        // SAFETY: `dst` holds at least `bytes.len()` bytes (the caller's promise); the source is
        // pinned memory that stays untouched until the event recorded next has completed.
        unsafe { cudarc::driver::result::memcpy_htod_async(dst, staged, stream.cu_stream()) }.map_err(err)?;
        slot.done.record(stream).map_err(err)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mid_sized_uploads_are_staged_in_power_of_two_slots() {
        assert_eq!(slot_size(PINNED_MIN - 1), None);
        assert_eq!(slot_size(PINNED_MIN), Some(PINNED_MIN));
        assert_eq!(slot_size(PINNED_MIN + 1), Some(2 * PINNED_MIN));
        assert_eq!(slot_size(3 << 20), Some(4 << 20));
        assert_eq!(slot_size(PINNED_MAX), Some(PINNED_MAX));
        assert_eq!(slot_size(PINNED_MAX + 1), None);
    }
}
