//! The backward engine: walks the graph from the roots in dependency order, sums gradients per
//! node, runs hooks and accumulates into leaves.

use super::grad_mode::is_grad_enabled;
use super::grad_mode::set_grad_enabled;
use super::node::{Edge, Grads, Hook, Node, Region};
use crate::tensor::TensorImpl;
use crate::Tensor;
use ember_storage::{Error, Result};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Hashing for pointer keys: they are already well spread, so a multiply is enough (SipHash costs
/// more than the rest of a tiny op's backward).
#[derive(Default, Clone, Copy)]
struct PtrHasher(u64);

impl std::hash::Hasher for PtrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

type PtrMap<V> = HashMap<usize, V, std::hash::BuildHasherDefault<PtrHasher>>;

/// The engine's state for one reachable node.
struct Slot {
    node: Arc<Node>,
    /// Consumers of this node's output whose backward has not run yet.
    pending: usize,
    /// The gradient of this node's output, summed over the consumers that ran.
    grad: Option<Tensor>,
    /// Whether `grad` is a buffer the engine allocated and nothing else holds, so it may be added to
    /// in place.
    owned: bool,
}

thread_local! {
    /// The number of nodes the last backward pass on this thread reached (training loops repeat
    /// one graph shape, so the next pass reserves that much up front).
    static GRAPH_SIZE_HINT: Cell<usize> = const { Cell::new(0) };
}

fn key(n: &Arc<Node>) -> usize {
    Arc::as_ptr(n) as usize
}

/// Adds the gradient `g` of a view to `region` of its input's gradient `slot`, in place, without
/// the zeros-sized gradient a view's backward builds: the first view allocates the input's
/// gradient, later ones add into it. Only for passes that do not build a graph.
fn accumulate_region(slot: &mut Slot, region: &Region, g: &Tensor) -> Result<()> {
    match &slot.grad {
        Some(old) if slot.owned => {
            (region.view)(old)?.add_(g)?;
        }
        old => {
            let z = Tensor::zeros_with(&region.shape, g.dtype(), g.device())?;
            if let Some(old) = old {
                z.add_(old)?;
            }
            (region.view)(&z)?.add_(g)?;
            slot.grad = Some(z);
            slot.owned = true;
        }
    }
    Ok(())
}

/// Adds a consumer's gradient `g` to a node's slot: in place when the slot holds an engine-owned
/// sum of the same shape and dtype (and no graph is built), otherwise out of place.
fn accumulate_slot(slot: &mut Slot, g: Tensor, create_graph: bool) -> Result<()> {
    match &slot.grad {
        Some(old) if slot.owned && !create_graph && old.shape() == g.shape() && old.dtype() == g.dtype() => {
            old.add_(&g)?;
        }
        _ => {
            // a sum is a fresh buffer; a first gradient may be shared
            slot.owned = slot.grad.is_some() && !create_graph;
            accumulate(&mut slot.grad, g)?;
        }
    }
    Ok(())
}

/// One consumer of the slot's node has run; the node is ready when none is left.
fn release(slot: &mut Slot, ready: &mut Vec<Arc<Node>>) {
    slot.pending -= 1;
    if slot.pending == 0 {
        ready.push(slot.node.clone());
    }
}

fn accumulate(slot: &mut Option<Tensor>, g: Tensor) -> Result<()> {
    *slot = Some(match slot.take() {
        Some(old) => old.add(&g)?,
        None => g,
    });
    Ok(())
}

/// Adds `g` to the gradient stored under `k`.
fn add_into(map: &mut PtrMap<Tensor>, k: usize, g: Tensor) -> Result<()> {
    match map.entry(k) {
        std::collections::hash_map::Entry::Occupied(mut e) => {
            let sum = e.get().add(&g)?;
            e.insert(sum);
        }
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(g);
        }
    }
    Ok(())
}

/// Adds `g` into a gradient slot that other threads may use at the same time (a leaf shared by two
/// graphs being backpropagated concurrently). The lock is never held across the addition, which
/// runs parallel kernels: the stored value is taken out, summed unlocked, and put back only into
/// an empty slot; whatever another thread stored meanwhile is taken and added too, so no
/// contribution is lost.
pub(crate) fn accumulate_shared(slot: &Mutex<Option<Tensor>>, mut g: Tensor) -> Result<()> {
    loop {
        let old = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        match old {
            Some(old) => g = old.add(&g)?,
            None => {
                let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                if s.is_none() {
                    *s = Some(g);
                    return Ok(());
                }
            }
        }
    }
}

/// A snapshot of a hook list, so hooks run without the list's lock held.
fn snapshot<T: ?Sized>(list: &Mutex<Vec<Arc<T>>>) -> Vec<Arc<T>> {
    list.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Runs gradient hooks in order; a replacement must keep the gradient's shape and dtype
/// (PyTorch: "hook has changed the size of value").
fn run_hooks(hooks: &Mutex<Vec<Hook>>, mut g: Tensor, owner: &str) -> Result<Tensor> {
    for h in snapshot(hooks).iter() {
        if let Some(r) = h(&g) {
            if r.shape() != g.shape() || r.dtype() != g.dtype() {
                return Err(Error::autograd(format!(
                    "a hook on {owner} returned a gradient of shape {:?} ({}) for a gradient of shape {:?} ({})",
                    r.shape(),
                    r.dtype(),
                    g.shape(),
                    g.dtype()
                )));
            }
            g = r;
        }
    }
    Ok(g)
}

/// A gradient on its way into a leaf must have the leaf's shape and dtype: a custom `Function` or
/// a hook that returns another would otherwise broadcast silently into `.grad`.
fn check_leaf_grad(layout: &ember_storage::Layout, dtype: ember_storage::DType, g: &Tensor) -> Result<()> {
    if g.shape() != layout.shape() || g.dtype() != dtype {
        return Err(Error::autograd(format!(
            "the gradient computed for a leaf of shape {:?} ({dtype}) has shape {:?} ({}); a custom Function's \
             backward or a hook returned a wrong gradient",
            layout.shape(),
            g.shape(),
            g.dtype()
        )));
    }
    Ok(())
}

/// What the engine does with gradients that reach leaves or requested inputs.
pub(crate) enum Sink<'a> {
    /// Accumulate into every leaf's `.grad` (`backward()`).
    Leaves,
    /// Return the gradients of these tensors (`autograd::grad`).
    Inputs(&'a [Tensor]),
}

/// Runs backward from `roots` (tensor, gradient) pairs, through the roots' backend's
/// [`run_sequence`](ember_storage::Backend::run_sequence) hook: a backward pass is a long
/// sequence of ops, and on the CPU each one's parallel part then goes to threads that are awake.
pub(crate) fn run(
    roots: &[(Tensor, Tensor)],
    sink: Sink,
    retain_graph: bool,
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    // the backward pass follows the forward's dtypes: autocast never applies to it
    let Some((first, _)) = roots.first() else {
        return crate::autocast::suspended(|| run_here(roots, sink, retain_graph, create_graph));
    };
    let backend = first.backend().clone();
    in_sequence(backend.as_ref(), || crate::autocast::suspended(|| run_here(roots, sink, retain_graph, create_graph)))
}

/// Runs `f` through `backend`'s `run_sequence` hook, carrying this thread's grad mode and anomaly
/// setting to the thread it runs on (and restoring that thread's own afterwards).
pub(crate) fn in_sequence<R: Send>(
    backend: &dyn ember_storage::Backend,
    f: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    let (mode, anomaly) = (is_grad_enabled(), crate::anomaly::is_enabled());
    let mut f = Some(f);
    let mut out = None;
    backend.run_sequence(&mut || {
        out = f.take().map(|f| {
            let _mode = set_grad_enabled(mode);
            let before = crate::anomaly::is_enabled();
            crate::anomaly::set_detect_anomaly(anomaly);
            let r = f();
            crate::anomaly::set_detect_anomaly(before);
            r
        })
    });
    out.unwrap_or_else(|| Err(Error::invalid("run_sequence", "the backend did not run the sequence")))
}

fn run_here(
    roots: &[(Tensor, Tensor)],
    sink: Sink,
    retain_graph: bool,
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    let _mode = set_grad_enabled(create_graph);
    let wanted: Vec<usize> = match &sink {
        Sink::Inputs(ts) => {
            ts.iter().map(|t| t.grad_fn().as_ref().map(key).unwrap_or(Arc::as_ptr(&t.0) as usize)).collect()
        }
        Sink::Leaves => vec![],
    };
    let mut captured: Vec<Option<Tensor>> = vec![None; wanted.len()];
    let capture = |k: usize, g: &Tensor, captured: &mut Vec<Option<Tensor>>| -> Result<()> {
        for (i, &w) in wanted.iter().enumerate() {
            if w == k {
                accumulate(&mut captured[i], g.clone())?;
            }
        }
        Ok(())
    };
    // Gradients reaching leaves are summed per leaf, then delivered once each (hooks see the total,
    // as PyTorch's AccumulateGrad does) as soon as the last node that feeds the leaf has run, so
    // post-accumulate hooks (DDP's bucketed all-reduce) overlap the rest of the pass.
    let mut leaves = LeafSums::default();
    // One slot per reachable node: the node, how many of its consumers have yet to run, and the
    // gradient summed so far (one hash lookup per edge in each phase).
    let mut slots: PtrMap<Slot> = PtrMap::default();
    slots.reserve(GRAPH_SIZE_HINT.with(|h| h.get()));
    let mut stack: Vec<Arc<Node>> = vec![];
    for (t, g) in roots {
        if !t.requires_grad() {
            return Err(Error::autograd("element 0 of tensors does not require grad and does not have a grad_fn"));
        }
        if g.shape() != t.shape() {
            return Err(Error::shape(
                "backward",
                format!("gradient shape {:?} does not match output shape {:?}", g.shape(), t.shape()),
            ));
        }
        if !g.dtype().is_float() {
            return Err(Error::dtype(
                "backward",
                format!("the gradient must be floating (the output is {}), got {}", t.dtype(), g.dtype()),
            ));
        }
        match &t.grad_fn() {
            Some(n) => {
                let slot = slots.entry(key(n)).or_insert_with(|| {
                    stack.push(n.clone());
                    Slot { node: n.clone(), pending: 0, grad: None, owned: false }
                });
                accumulate(&mut slot.grad, g.clone())?;
            }
            None => leaves.add(&t.0, g.clone())?,
        }
    }
    // dependency counts over the reachable graph (iterative DFS)
    while let Some(n) = stack.pop() {
        for e in n.edges.iter().flatten() {
            match e {
                Edge::Node(c) => {
                    slots
                        .entry(key(c))
                        .or_insert_with(|| {
                            stack.push(c.clone());
                            Slot { node: c.clone(), pending: 0, grad: None, owned: false }
                        })
                        .pending += 1
                }
                Edge::Leaf(l) => *leaves.feeders.entry(Arc::as_ptr(l) as usize).or_default() += 1,
            }
        }
    }
    GRAPH_SIZE_HINT.with(|h| h.set(slots.len()));
    let mut ready: Vec<Arc<Node>> = slots.values().filter(|s| s.pending == 0).map(|s| s.node.clone()).collect();
    while let Some(n) = ready.pop() {
        let k = key(&n);
        let grad = slots.get_mut(&k).and_then(|s| s.grad.take());
        let edges = &n.edges;
        let mut input_grads = Grads::new();
        if let Some(g) = grad {
            let g = run_hooks(&n.hooks, g, n.name)?;
            let retained: Vec<_> =
                n.retained.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(|w| w.upgrade()).collect();
            for t in retained {
                accumulate_shared(&t.grad, if create_graph { g.clone() } else { g.detach() })?;
            }
            capture(k, &g, &mut captured)?;
            for (storage, v) in &n.saved {
                let now = storage.upgrade().map(|s| s.version.load(Ordering::Acquire)).unwrap_or(*v);
                if now != *v {
                    return Err(Error::autograd(format!(
                        "one of the tensors saved by {}Backward was modified by an in-place operation (version {now} now, {v} when saved)",
                        n.name
                    )));
                }
            }
            // A view into an inner node, in a pass that builds no graph: add the gradient into the
            // input's gradient in place (the view's backward would build a zero-padded copy).
            if let (Some(region), false, [Some(Edge::Node(c))]) = (&n.region, create_graph, &n.edges[..]) {
                if !crate::anomaly::is_enabled() && n.backward.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    let slot = slots.get_mut(&key(c)).expect("reachable nodes have slots");
                    accumulate_region(slot, region, &g)?;
                    if !retain_graph {
                        *n.backward.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    }
                    release(slot, &mut ready);
                    continue;
                }
            }
            input_grads = {
                let bw = n.backward.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let f = bw.ok_or_else(|| {
                    Error::autograd(format!(
                        "trying to backward through the graph a second time ({}Backward's saved values were freed); pass retain_graph=true the first time",
                        n.name
                    ))
                })?;
                f(&g)?
            };
            if crate::anomaly::is_enabled() {
                for ig in input_grads.iter().flatten() {
                    if ig.isfinite()?.all()?.item()? == 0.0 {
                        return Err(Error::autograd(format!(
                            "anomaly: {}Backward produced a non-finite gradient (NaN or inf)",
                            n.name
                        )));
                    }
                }
            }
        }
        if !retain_graph {
            *n.backward.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        let mut input_grads = input_grads.into_iter();
        for e in edges.iter() {
            let ig = input_grads.next().flatten();
            match e {
                Some(Edge::Node(c)) => {
                    let slot = slots.get_mut(&key(c)).expect("reachable nodes have slots");
                    if let Some(ig) = ig {
                        accumulate_slot(slot, ig, create_graph)?;
                    }
                    release(slot, &mut ready);
                }
                Some(Edge::Leaf(l)) => {
                    if let Some(ig) = ig {
                        leaves.add(l, ig)?;
                    }
                    if leaves.fed(l) && matches!(sink, Sink::Leaves) {
                        leaves.deliver(l, create_graph)?;
                    }
                }
                None => {}
            }
        }
    }
    // leaves fed only by the roots, and every leaf of a pass that captures instead of accumulating
    for leaf in std::mem::take(&mut leaves.order) {
        let k = Arc::as_ptr(&leaf) as usize;
        match &sink {
            Sink::Leaves => leaves.deliver(&leaf, create_graph)?,
            Sink::Inputs(_) => {
                let Some(g) = leaves.sums.remove(&k) else { continue };
                let g = run_hooks(&leaf.hooks, g, "a leaf")?;
                capture(k, &g, &mut captured)?
            }
        }
    }
    Ok(captured)
}

/// Gradients on their way to leaves: summed per leaf, delivered when no node that feeds the leaf
/// is left to run.
#[derive(Default)]
struct LeafSums {
    /// Leaves in the order their first gradient arrived.
    order: Vec<Arc<TensorImpl>>,
    /// The gradient summed so far, per leaf not yet delivered.
    sums: PtrMap<Tensor>,
    /// Per leaf, how many edges from reachable nodes point at it and have not been followed yet.
    feeders: PtrMap<usize>,
}

impl LeafSums {
    fn add(&mut self, leaf: &Arc<TensorImpl>, g: Tensor) -> Result<()> {
        check_leaf_grad(&leaf.layout, leaf.dtype, &g)?;
        let k = Arc::as_ptr(leaf) as usize;
        if !self.sums.contains_key(&k) {
            self.order.push(leaf.clone());
        }
        add_into(&mut self.sums, k, g)
    }

    /// Counts one followed edge into `leaf`; true when it was the last.
    fn fed(&mut self, leaf: &Arc<TensorImpl>) -> bool {
        match self.feeders.get_mut(&(Arc::as_ptr(leaf) as usize)) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        }
    }

    /// Runs the leaf's hooks on its total, accumulates it into `.grad()` and runs the
    /// post-accumulate hooks (once per pass; a leaf with no gradient is skipped).
    fn deliver(&mut self, leaf: &Arc<TensorImpl>, create_graph: bool) -> Result<()> {
        let Some(g) = self.sums.remove(&(Arc::as_ptr(leaf) as usize)) else { return Ok(()) };
        let g = run_hooks(&leaf.hooks, g, "a leaf")?;
        let g = if create_graph { g } else { g.detach() };
        accumulate_shared(&leaf.grad, g)?;
        let hooks = snapshot(&leaf.post_accumulate_hooks);
        if !hooks.is_empty() {
            let t = Tensor(leaf.clone());
            for h in hooks.iter() {
                h(&t)?;
            }
        }
        Ok(())
    }
}
