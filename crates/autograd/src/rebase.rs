//! How in-place ops rewrite autograd history.
//!
//! An in-place op on a tensor that takes part in autograd computes its new value out of place
//! (recorded as usual), writes it into the tensor's memory, then *rebases* the tensor: its history
//! becomes the new value's. When the tensor is a view, its base is rebased instead: the base's
//! gradient flows to the new value inside the view's region and to the base's old history everywhere
//! else. Every view of that base regenerates its own history from the base's the next time autograd
//! looks at it ([`Tensor::refresh_view_history`]), so views taken before the write see it too.

use crate::graph::{edge_of, is_grad_enabled, new_node, no_grad, Edge, Node};
use crate::tensor::{lock, TensorImpl};
use crate::Tensor;
use ember_storage::{Error, Layout, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Tensor {
    /// The node that produced this tensor (`None` for leaves), brought up to date for views.
    pub(crate) fn grad_fn(&self) -> Option<Arc<Node>> {
        self.refresh_view_history();
        lock(&self.0.grad_fn).clone()
    }

    /// For a view whose base was rewritten by an in-place op since the view's history was last set:
    /// the view's history becomes "this region of the base's new history". Cheap when nothing was
    /// written (one atomic load).
    pub(crate) fn refresh_view_history(&self) {
        let Some(v) = &self.0.view else { return };
        let version = self.version();
        if v.version_seen.load(Ordering::Acquire) == version {
            return;
        }
        let base_fn = lock(&v.base.grad_fn).clone();
        let mut seen = lock(&v.base_fn_seen);
        let changed = match (&base_fn, &*seen) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (None, None) => false,
            _ => true,
        };
        if changed {
            if let Some(bf) = &base_fn {
                *lock(&self.0.grad_fn) = Some(view_node(&v.base, self.layout(), bf.clone()));
                self.0.requires_grad.store(true, Ordering::Relaxed);
            }
            *seen = base_fn;
        }
        v.version_seen.store(version, Ordering::Release);
    }
}

/// `view`'s layout relative to a dense copy of `base` (offsets counted from the base's first
/// element), or `None` when the base is not dense row-major.
pub(crate) fn relative_layout(base: &Layout, view: &Layout) -> Option<Layout> {
    if !base.is_contiguous() || view.offset() < base.offset() {
        return None;
    }
    let rel = Layout::strided(view.shape(), view.strides(), view.offset() - base.offset()).ok()?;
    (rel.span_end() <= base.numel()).then_some(rel)
}

/// True when no two elements of `layout` share a memory location (a sufficient test: each dim's
/// stride, in increasing order, clears everything the smaller dims span).
pub(crate) fn non_overlapping(layout: &Layout) -> bool {
    let mut dims: Vec<(usize, usize)> =
        layout.strides().iter().zip(layout.shape()).filter(|(_, &n)| n > 1).map(|(&s, &n)| (s, n)).collect();
    dims.sort_unstable();
    let mut span = 1;
    for (stride, n) in dims {
        if stride < span {
            return false;
        }
        span += stride * (n - 1);
    }
    true
}

fn non_contiguous_base(op: &str) -> Error {
    Error::unsupported(op, "autograd through in-place writes into a view of a non-contiguous base tensor")
}

/// The region `rel` of a dense tensor shaped like the base, as its own tensor (recorded).
fn region(g: &Tensor, rel: &Layout) -> Result<Tensor> {
    g.contiguous()?.as_strided(rel.shape(), rel.strides(), rel.offset())
}

/// The history of a view whose base was rebased: its gradient lands in its region of the base's.
fn view_node(base: &Arc<TensorImpl>, view: &Layout, base_fn: Arc<Node>) -> Arc<Node> {
    let base_shape = base.layout.shape().to_vec();
    let rel = relative_layout(&base.layout, view);
    new_node("as_strided", vec![Some(Edge::Node(base_fn))], move |g| {
        let rel = rel.clone().ok_or_else(|| non_contiguous_base("as_strided"))?;
        Ok(smallvec::smallvec![Some(Tensor::embed(g, &base_shape, move |z| region(z, &rel))?)])
    })
}

/// True when writing into `t` (with a new value that does or does not require grad) must rewrite
/// autograd history.
pub(crate) fn participates(t: &Tensor, value_requires_grad: bool) -> bool {
    is_grad_enabled()
        && (value_requires_grad
            || t.requires_grad()
            || t.0.view.as_ref().is_some_and(|v| v.base.requires_grad.load(Ordering::Relaxed)))
}

/// Refuses in-place writes autograd cannot follow, before any memory is touched: into a leaf that
/// requires grad (or a view of one), through a view of a non-contiguous base, or into memory that
/// several elements share.
pub(crate) fn check_writable(t: &Tensor, op: &str) -> Result<()> {
    let advice = "run it under no_grad (as optimizers do) or use the out-of-place op";
    if t.requires_grad() && t.is_leaf() {
        return Err(Error::autograd(format!(
            "{op}: a leaf tensor that requires grad is being modified by an in-place op; {advice}"
        )));
    }
    if let Some(v) = &t.0.view {
        if v.base.requires_grad.load(Ordering::Relaxed) && lock(&v.base.grad_fn).is_none() {
            return Err(Error::autograd(format!(
                "{op}: a view of a leaf tensor that requires grad is being modified by an in-place op; {advice}"
            )));
        }
        if relative_layout(&v.base.layout, t.layout()).is_none() {
            return Err(non_contiguous_base(op));
        }
    }
    if !non_overlapping(t.layout()) {
        return Err(Error::invalid(
            op,
            format!(
                "more than one element of the written-to tensor (shape {:?}, strides {:?}) refers to the same memory location; clone it first",
                t.shape(),
                t.strides()
            ),
        ));
    }
    Ok(())
}

/// Rewrites the history of `t` after an in-place op named `op` wrote `value` (same shape and dtype)
/// into it. Call after [`check_writable`] and before bumping the version.
pub(crate) fn rebase(t: &Tensor, value: &Tensor, op: &'static str) -> Result<()> {
    match &t.0.view {
        None => {
            let node = new_node(op, vec![edge_of(value)], |g| Ok(smallvec::smallvec![Some(g.clone())]));
            *lock(&t.0.grad_fn) = Some(node);
            t.0.requires_grad.store(true, Ordering::Relaxed);
        }
        Some(v) => {
            let base = Tensor(v.base.clone());
            let rel = relative_layout(&v.base.layout, t.layout()).ok_or_else(|| non_contiguous_base(op))?;
            // ones outside the written region, zeros inside: what of the base's gradient goes to its old history
            let outside = no_grad(|| -> Result<Tensor> {
                let m = Tensor::ones_with(base.shape(), base.dtype(), base.device())?;
                m.as_strided(rel.shape(), rel.strides(), rel.offset())?.fill_(0.0)?;
                Ok(m)
            })?;
            let node = new_node("copy_slices", vec![edge_of(&base), edge_of(value)], move |g| {
                Ok(smallvec::smallvec![Some(g.mul(&outside)?), Some(region(g, &rel)?.contiguous()?)])
            });
            *lock(&v.base.grad_fn) = Some(node);
            v.base.requires_grad.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}
