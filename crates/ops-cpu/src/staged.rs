//! A team of pool threads that works through a grid of `stages × parts` tasks, stage by stage:
//! no task of stage `s` starts before every task of stage `s - 1` has finished. Recurrent kernels
//! use it to keep all threads on one sequence for its whole length, each thread taking a part of
//! every step and meeting the others at a spin barrier between steps, instead of handing each
//! small step to the pool (oneDNN runs RNNs the same way).
//!
//! Tasks are claimed in order from one counter, and a thread only ever waits for tasks that a
//! running thread has already claimed, so the team cannot deadlock however many pool threads
//! join it: a single thread simply does every task itself.

use crate::threading::pool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `task(stage, part)` for every stage in `0..stages` and part in `0..parts`, on up to
/// `parts` pool threads (the caller's included). Tasks of one stage may run concurrently; a
/// task's writes are visible to every task of later stages.
pub(crate) fn run_staged(stages: usize, parts: usize, task: impl Fn(usize, usize) + Sync) {
    let threads = pool().current_num_threads().min(parts);
    if threads <= 1 {
        (0..stages).for_each(|s| (0..parts).for_each(|p| task(s, p)));
        return;
    }
    let team = Team {
        total: stages * parts,
        parts,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
    };
    let work = || team.work(&task);
    pool().install(|| {
        rayon::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| work());
            }
            work();
        })
    });
}

/// The shared progress of one [`run_staged`] call.
struct Team {
    total: usize,
    parts: usize,
    /// The next task to claim (stage-major).
    next: AtomicUsize,
    /// Tasks finished.
    done: AtomicUsize,
    /// Set when a task panicked: the others stop instead of waiting for it.
    failed: AtomicBool,
}

impl Team {
    /// Claims and runs tasks until none are left.
    fn work(&self, task: &(impl Fn(usize, usize) + Sync)) {
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.total {
                return;
            }
            let stage = k / self.parts;
            if !self.wait_for(stage * self.parts) {
                return;
            }
            let flag = FlagOnPanic(&self.failed);
            task(stage, k % self.parts);
            std::mem::forget(flag);
            // Release: this task's writes happen before any later stage's task reads them
            self.done.fetch_add(1, Ordering::Release);
        }
    }

    /// Spins until `count` tasks have finished; false when a task panicked.
    fn wait_for(&self, count: usize) -> bool {
        let mut spins = 0u32;
        // Acquire: pairs with the Release in `work`, so earlier stages' writes are visible
        while self.done.load(Ordering::Acquire) < count {
            if self.failed.load(Ordering::Relaxed) {
                return false;
            }
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // the other thread lost its core: give it ours
                std::thread::yield_now();
            }
        }
        true
    }
}

/// Sets its flag when dropped, which only happens when the task it guards unwinds.
struct FlagOnPanic<'a>(&'a AtomicBool);

impl Drop for FlagOnPanic<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A buffer that the tasks of [`run_staged`] write in disjoint pieces while others read pieces
/// finished in earlier stages.
pub(crate) struct SharedBuf<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedBuf only hands out pieces through its unsafe methods, whose callers promise
// that no two threads touch one element at once with one of them writing (see `piece_mut`).
unsafe impl<T: Send> Send for SharedBuf<'_, T> {}
// SAFETY: as for Send; sharing `&SharedBuf` lets several threads read one element at once
// (pieces finished in earlier stages), which needs `T: Sync` as well as `T: Send` for the writes.
unsafe impl<T: Send + Sync> Sync for SharedBuf<'_, T> {}

impl<'a, T> SharedBuf<'a, T> {
    /// Shares `v` for as long as the returned value lives (it borrows `v` mutably).
    pub(crate) fn new(v: &'a mut [T]) -> SharedBuf<'a, T> {
        SharedBuf { ptr: v.as_mut_ptr(), len: v.len(), _borrow: std::marker::PhantomData }
    }

    /// A raw pointer to element `at` (at most the length), for kernels such as `gemm` that write
    /// strided blocks of the buffer themselves. Writing through it carries [`Self::piece_mut`]'s
    /// contract for every element written.
    pub(crate) fn ptr_at(&self, at: usize) -> *mut T {
        assert!(at <= self.len, "element {at} outside a buffer of {}", self.len);
        self.ptr.wrapping_add(at)
    }

    /// Elements `at..at + len` for writing.
    ///
    /// # Safety
    /// No other thread may read or write these elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    // SAFETY (contract): callers guarantee exclusive access to the piece; bounds are checked here.
    pub(crate) unsafe fn piece_mut(&self, at: usize, len: usize) -> &mut [T] {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.len),
            "piece {at}+{len} outside a buffer of {}",
            self.len
        );
        // SAFETY: in bounds (checked above) of the buffer borrowed in `new`, which outlives self;
        // exclusive access is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }

    /// Elements `at..at + len` for reading.
    ///
    /// # Safety
    /// No other thread may write these elements while the slice lives.
    // SAFETY (contract): callers guarantee no concurrent writer; bounds are checked here.
    pub(crate) unsafe fn piece(&self, at: usize, len: usize) -> &[T] {
        assert!(
            at.checked_add(len).is_some_and(|end| end <= self.len),
            "piece {at}+{len} outside a buffer of {}",
            self.len
        );
        // SAFETY: in bounds (checked above) of the buffer borrowed in `new`; the absence of
        // writers is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.add(at), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task runs once, and each stage sees all of the previous stage's writes.
    #[test]
    fn stages_run_in_order_and_see_earlier_writes() {
        for parts in [1, 2, 3, 5] {
            let stages = 200;
            let mut cells = vec![0usize; stages * parts];
            let shared = SharedBuf::new(&mut cells);
            let runs = AtomicUsize::new(0);
            run_staged(stages, parts, |s, p| {
                runs.fetch_add(1, Ordering::Relaxed);
                let prev = if s == 0 {
                    0
                } else {
                    // SAFETY: stage s - 1 has finished before any task of stage s starts, and
                    // only task (s, p) writes entry s * parts + p.
                    let earlier = unsafe { shared.piece((s - 1) * parts, parts) };
                    *earlier.iter().min().unwrap()
                };
                // SAFETY: as above.
                let cell = unsafe { shared.piece_mut(s * parts + p, 1) };
                cell[0] = prev + 1;
            });
            assert_eq!(runs.into_inner(), stages * parts);
            for (i, &v) in cells.iter().enumerate() {
                assert_eq!(v, i / parts + 1, "parts {parts}, task {i}: a stage ran before the previous one finished");
            }
        }
    }
}
