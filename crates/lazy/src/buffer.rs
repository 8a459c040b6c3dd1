//! `LazyBuffer`: a buffer of the lazy backend, either ready (the inner backend's buffer) or pending
//! (an elementwise op over other lazy buffers, not computed yet).

use ember_storage::{Backend, BinaryOp, Buffer, DType, Device, DeviceBuffer, Error, Layout, Result, UnaryOp};
use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Lazy buffers alive now.
pub(crate) static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A recorded elementwise op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum NodeOp {
    Unary(UnaryOp),
    Binary(BinaryOp),
}

impl NodeOp {
    pub(crate) fn name(self) -> &'static str {
        match self {
            NodeOp::Unary(op) => op.name(),
            NodeOp::Binary(op) => op.name(),
        }
    }
}

/// A pending value: `op` over `inputs` (lazy buffers read through layouts of the node's shape).
#[derive(Debug)]
pub(crate) struct Node {
    pub op: NodeOp,
    pub inputs: Vec<(Buffer, Layout)>,
    pub shape: Vec<usize>,
    /// Longest chain of pending nodes ending here (bounds group size and recursion).
    pub depth: usize,
    /// The backend that computes it (the lazy backend's inner one).
    pub backend: Arc<dyn Backend>,
}

/// Ready or pending.
#[derive(Debug)]
pub(crate) enum State {
    Ready(Buffer),
    Pending(Arc<Node>),
}

/// A buffer of the lazy backend.
#[derive(Debug)]
pub struct LazyBuffer {
    dtype: DType,
    len: usize,
    device: Device,
    state: Mutex<State>,
}

impl LazyBuffer {
    pub(crate) fn new(dtype: DType, len: usize, device: Device, state: State) -> LazyBuffer {
        LIVE.fetch_add(1, Ordering::Relaxed);
        LazyBuffer { dtype, len, device, state: Mutex::new(state) }
    }

    /// The lazy buffer behind a `Buffer`, or an error naming the op.
    pub(crate) fn of<'a>(b: &'a Buffer, op: &str) -> Result<&'a LazyBuffer> {
        b.as_any()
            .downcast_ref::<LazyBuffer>()
            .ok_or_else(|| Error::device(op, format!("the lazy backend was given a buffer on {}", b.device())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The inner buffer when ready.
    pub(crate) fn ready(&self) -> Option<Buffer> {
        match &*self.lock() {
            State::Ready(b) => Some(b.clone()),
            State::Pending(_) => None,
        }
    }

    /// The node when pending.
    pub(crate) fn node(&self) -> Option<Arc<Node>> {
        match &*self.lock() {
            State::Ready(_) => None,
            State::Pending(n) => Some(n.clone()),
        }
    }

    /// Marks the buffer computed (dropping its node, and with it its hold on its inputs).
    pub(crate) fn set_ready(&self, b: Buffer) {
        let old = std::mem::replace(&mut *self.lock(), State::Ready(b));
        drop(old);
    }

    /// The pending depth (0 when ready).
    pub(crate) fn depth(&self) -> usize {
        match &*self.lock() {
            State::Ready(_) => 0,
            State::Pending(n) => n.depth,
        }
    }
}

impl Drop for LazyBuffer {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DeviceBuffer for LazyBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn device(&self) -> Device {
        self.device
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Every pending buffer recorded (weakly): what an in-place write must evaluate first.
pub(crate) struct PendingSet {
    list: Vec<Weak<dyn DeviceBuffer>>,
    pruned_at: usize,
}

pub(crate) static PENDING: Mutex<PendingSet> = Mutex::new(PendingSet { list: Vec::new(), pruned_at: 0 });

impl PendingSet {
    /// Adds a newly recorded buffer, dropping dead and computed entries now and then (amortised).
    pub(crate) fn push(&mut self, b: &Buffer) {
        self.list.push(Arc::downgrade(b));
        if self.list.len() > 2 * self.pruned_at + 64 {
            self.list.retain(|w| w.upgrade().is_some_and(|b| is_pending(&b)));
            self.pruned_at = self.list.len();
        }
    }

    /// The buffers still alive and pending, newest first, held weakly: a strong reference here
    /// would look to the planner like a user holding the value, and force it to be materialised.
    /// Newest first, so a value is planned before the older values it reads, which then join
    /// its group (and are written to memory only if someone else holds them).
    pub(crate) fn live(&mut self) -> Vec<Weak<dyn DeviceBuffer>> {
        self.list.retain(|w| w.upgrade().is_some_and(|b| is_pending(&b)));
        self.pruned_at = self.list.len();
        self.list.iter().rev().cloned().collect()
    }
}

pub(crate) fn is_pending(b: &Buffer) -> bool {
    b.as_any().downcast_ref::<LazyBuffer>().is_some_and(|l| l.ready().is_none())
}
