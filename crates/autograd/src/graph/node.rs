//! Graph nodes: what one recorded op keeps for backward (closure, edges, saved versions, hooks),
//! dropped without recursion, and the `record*` functions every differentiable op calls.

use super::grad_mode::is_grad_enabled;
use crate::tensor::TensorImpl;
use crate::Tensor;
use ember_storage::Result;
use smallvec::SmallVec;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// The gradients a node's backward returns, one per input (`None`: no gradient flows there). Inline
/// for the usual one or two inputs, so a backward step allocates no vector.
pub(crate) type Grads = SmallVec<[Option<Tensor>; 2]>;

/// Shared (`Arc`), so the engine can call it without holding the node's lock: a backward runs
/// parallel kernels, and a pool thread that steals another backward's work must never find a lock
/// held across that work (the deadlock of two threads backpropagating through a shared node).
pub(super) type BackwardFn = Arc<dyn Fn(&Tensor) -> Result<Grads> + Send + Sync>;

/// Takes one fixed view of a tensor.
pub(crate) type ViewFn = Box<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// Where a view op's output lies in its input (narrow, slice, select): its backward is "zeros of the
/// input's shape with the gradient written into this region", which the engine can do in place
/// instead, adding straight into the input's summed gradient (see [`run`]).
pub(crate) struct Region {
    /// The input's shape.
    pub(crate) shape: ember_storage::Dims,
    /// The same view of a tensor of the input's shape.
    pub(crate) view: ViewFn,
}

/// A gradient hook: inspects the gradient, or returns a replacement.
pub(crate) type Hook = Arc<dyn Fn(&Tensor) -> Option<Tensor> + Send + Sync>;

/// A hook run on a leaf after backward accumulated into its `.grad` (it gets the leaf itself).
pub(crate) type PostAccumulateHook = Arc<dyn Fn(&Tensor) -> ember_storage::Result<()> + Send + Sync>;

/// Where the gradient of one input goes.
pub(crate) enum Edge {
    /// Into the node that produced the input.
    Node(Arc<Node>),
    /// Into a leaf's `.grad`.
    Leaf(Arc<TensorImpl>),
}

/// One recorded op: its backward closure (freed after backward unless the graph is retained), the
/// edges to its inputs, and the versions of the tensors it saved.
pub struct Node {
    pub(super) name: &'static str,
    pub(super) backward: Mutex<Option<BackwardFn>>,
    pub(crate) edges: SmallVec<[Option<Edge>; 2]>,
    /// The storages whose values backward reads, with their versions when recorded (weak: a storage
    /// nobody holds any more cannot change).
    pub(super) saved: SmallVec<[(std::sync::Weak<crate::tensor::Storage>, u64); 2]>,
    /// Hooks registered on the (non-leaf) tensor this node produced.
    pub(crate) hooks: Mutex<Vec<Hook>>,
    /// Tensors that asked to keep their gradient (`retain_grad`).
    pub(crate) retained: Mutex<Vec<std::sync::Weak<TensorImpl>>>,
    /// For views of one input: where the view lies in it.
    pub(super) region: Option<Region>,
}

impl Node {
    /// The op's name, e.g. `"mul"`.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}Backward>", self.name)
    }
}

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Number of graph nodes alive in the process (for leak checks: it returns to its old value once the
/// outputs of a step are dropped).
pub fn live_nodes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

thread_local! {
    static DROPPING: Cell<bool> = const { Cell::new(false) };
    static PENDING: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Node {
    /// Drops any graph, however deep, without recursion: a node dropped while another is being dropped
    /// parks its contents (edges, backward closure, saved tensors, hooks), and the outermost drop
    /// releases them one at a time.
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        let parts: Box<dyn std::any::Any> = Box::new((
            std::mem::take(&mut self.edges),
            self.backward.get_mut().unwrap_or_else(|e| e.into_inner()).take(),
            std::mem::take(&mut self.saved),
            std::mem::take(self.hooks.get_mut().unwrap_or_else(|e| e.into_inner())),
        ));
        if DROPPING.with(|d| d.get()) {
            PENDING.with(|p| p.borrow_mut().push(parts));
            return;
        }
        DROPPING.with(|d| d.set(true));
        drop(parts);
        while let Some(next) = PENDING.with(|p| p.borrow_mut().pop()) {
            drop(next);
        }
        DROPPING.with(|d| d.set(false));
    }
}

/// Where a gradient for `t` goes: its node, its `.grad` (leaves), or nowhere.
pub(crate) fn edge_of(t: &Tensor) -> Option<Edge> {
    if !t.requires_grad() {
        return None;
    }
    match t.grad_fn() {
        Some(n) => Some(Edge::Node(n)),
        None => Some(Edge::Leaf(t.0.clone())),
    }
}

/// A node with explicit edges (for history that is not one op's inputs, e.g. in-place rewrites).
pub(crate) fn new_node(
    name: &'static str,
    edges: Vec<Option<Edge>>,
    backward: impl Fn(&Tensor) -> Result<Grads> + Send + Sync + 'static,
) -> Arc<Node> {
    make_node(name, Arc::new(backward), edges.into(), SmallVec::new(), None)
}

/// A new node (counted in [`live_nodes`]).
fn make_node(
    name: &'static str,
    backward: BackwardFn,
    edges: SmallVec<[Option<Edge>; 2]>,
    saved: SmallVec<[(std::sync::Weak<crate::tensor::Storage>, u64); 2]>,
    region: Option<Region>,
) -> Arc<Node> {
    LIVE.fetch_add(1, Ordering::Relaxed);
    Arc::new(Node {
        name,
        backward: Mutex::new(Some(backward)),
        edges,
        saved,
        hooks: Mutex::new(Vec::new()),
        retained: Mutex::new(Vec::new()),
        region,
    })
}

/// Attaches a node to `out` when grad mode is on and some input requires a gradient.
/// `backward` maps the gradient of `out` to one optional gradient per input, in order. Backward
/// fails clearly if an input was modified in place in between (see [`record_free`] for ops whose
/// backward reads no input values).
pub(crate) fn record(
    out: Tensor,
    name: &'static str,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Grads> + Send + Sync + 'static,
) -> Tensor {
    record_saving(out, name, inputs, inputs, backward)
}

/// Like [`record`] for ops whose backward reads no input values (views, copies, casts, sums, ...),
/// so that modifying an input in place afterwards is fine.
pub(crate) fn record_free(
    out: Tensor,
    name: &'static str,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Grads> + Send + Sync + 'static,
) -> Tensor {
    record_saving(out, name, inputs, &[], backward)
}

/// Like [`record`], also remembering the versions of `saved` tensors so that backward fails clearly if
/// one of them was modified in place afterwards.
pub(crate) fn record_saving(
    out: Tensor,
    name: &'static str,
    inputs: &[&Tensor],
    saved: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Grads> + Send + Sync + 'static,
) -> Tensor {
    if !is_grad_enabled() || !inputs.iter().any(|t| t.requires_grad()) {
        return out;
    }
    let edges = inputs.iter().map(|t| edge_of(t)).collect();
    let saved = saved.iter().map(|t| (Arc::downgrade(&t.0.storage), t.version())).collect();
    attach(out, make_node(name, Arc::new(backward), edges, saved, None))
}

/// Records a view of `input` whose backward embeds the gradient into `region` of zeros (the engine
/// may instead add the gradient into that region of the input's gradient in place).
pub(crate) fn record_view(
    out: Tensor,
    name: &'static str,
    input: &Tensor,
    region: Region,
    backward: impl Fn(&Tensor) -> Result<Grads> + Send + Sync + 'static,
) -> Tensor {
    if !is_grad_enabled() || !input.requires_grad() {
        return out;
    }
    let edges = smallvec::smallvec![edge_of(input)];
    attach(out, make_node(name, Arc::new(backward), edges, SmallVec::new(), Some(region)))
}

/// Makes `node` the grad_fn of `out`.
fn attach(out: Tensor, node: Arc<Node>) -> Tensor {
    let mut out = out;
    if let Some(imp) = Arc::get_mut(&mut out.0) {
        *imp.grad_fn.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(node);
        imp.requires_grad.store(true, Ordering::Relaxed);
        return out;
    }
    let mut imp = TensorImpl::new(out.0.storage.clone(), out.0.layout.clone(), out.0.dtype);
    imp.view = out.0.view.as_ref().map(|v| crate::tensor::ViewInfo::of(&v.base));
    *imp.grad_fn.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(node);
    imp.requires_grad.store(true, Ordering::Relaxed);
    Tensor(Arc::new(imp))
}
