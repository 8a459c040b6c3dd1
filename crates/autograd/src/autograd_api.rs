//! The user-facing autograd API on `Tensor`, `grad()` for gradients of gradients, and `gradcheck`.

use crate::graph::{self, Sink};
use crate::Tensor;
use ember_storage::{DType, Error, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Tensor {
    /// True when gradients flow to this tensor.
    pub fn requires_grad(&self) -> bool {
        self.refresh_view_history();
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Marks a leaf as needing gradients (returns the same tensor, for chaining).
    ///
    /// ```
    /// use ember_autograd::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap().requires_grad_(true).unwrap();
    /// x.mul(&x).unwrap().sum().unwrap().backward().unwrap();
    /// assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0, 6.0]);
    /// ```
    pub fn requires_grad_(&self, on: bool) -> Result<Tensor> {
        if self.grad_fn().is_some() {
            return Err(Error::autograd("requires_grad_ can only change leaf tensors; use detach() for a new leaf"));
        }
        if on && !self.dtype().is_float() {
            return Err(Error::autograd(format!("only floating tensors can require gradients, got {}", self.dtype())));
        }
        self.0.requires_grad.store(on, Ordering::Relaxed);
        Ok(self.clone())
    }

    /// The accumulated gradient of a leaf (or of a non-leaf that called [`Tensor::retain_grad`]).
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the stored gradient (`None` clears it, as `zero_grad(set_to_none=True)`).
    pub fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = g;
    }

    /// True for tensors not produced by a recorded op.
    pub fn is_leaf(&self) -> bool {
        self.grad_fn().is_none()
    }

    /// The name of the op that produced this tensor (`"mul"`, `"matmul"`, ...), for debugging.
    pub fn grad_fn_name(&self) -> Option<&'static str> {
        self.grad_fn().map(|n| n.name())
    }

    /// The same values, sharing storage, cut from the graph.
    pub fn detach(&self) -> Tensor {
        self.with_layout(self.layout().clone())
    }

    /// Keeps the gradient of a non-leaf in `.grad()` after backward.
    pub fn retain_grad(&self) -> Result<()> {
        match &self.grad_fn() {
            Some(n) => {
                n.retained.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&self.0));
                Ok(())
            }
            None if self.requires_grad() => Ok(()),
            None => Err(Error::autograd("retain_grad on a tensor that does not require grad")),
        }
    }

    /// Registers a hook on this tensor's gradient: it sees the gradient and may return a replacement.
    pub fn register_hook(&self, hook: impl Fn(&Tensor) -> Option<Tensor> + Send + Sync + 'static) -> Result<()> {
        if !self.requires_grad() {
            return Err(Error::autograd("cannot register a hook on a tensor that does not require grad"));
        }
        match &self.grad_fn() {
            Some(n) => n.hooks.lock().unwrap_or_else(|e| e.into_inner()).push(std::sync::Arc::new(hook)),
            None => self.0.hooks.lock().unwrap_or_else(|e| e.into_inner()).push(std::sync::Arc::new(hook)),
        }
        Ok(())
    }

    /// Registers a hook on a leaf that runs after each `backward()` has accumulated into its
    /// `.grad()`; the hook gets the leaf (read `.grad()` there). This is where optimizers that step
    /// during backward, or gradient compression, plug in. Not run by [`grad`](crate::grad), which
    /// accumulates nothing.
    ///
    /// ```
    /// use ember_autograd::Tensor;
    /// use std::sync::{Arc, Mutex};
    /// let w = Tensor::ones(&[2]).unwrap().requires_grad_(true).unwrap();
    /// let seen = Arc::new(Mutex::new(vec![]));
    /// let s = seen.clone();
    /// w.register_post_accumulate_grad_hook(move |p| s.lock().unwrap().push(p.grad().unwrap().sum().unwrap().item().unwrap()))
    ///     .unwrap();
    /// w.mul(3.0).unwrap().sum().unwrap().backward().unwrap();
    /// assert_eq!(*seen.lock().unwrap(), vec![6.0]);
    /// ```
    pub fn register_post_accumulate_grad_hook(&self, hook: impl Fn(&Tensor) + Send + Sync + 'static) -> Result<()> {
        if !self.requires_grad() || !self.is_leaf() {
            return Err(Error::autograd(
                "post-accumulate-grad hooks can only be registered on leaves that require grad",
            ));
        }
        self.register_fallible_post_accumulate_grad_hook(move |p| {
            hook(p);
            Ok(())
        })
    }

    /// [`register_post_accumulate_grad_hook`](Tensor::register_post_accumulate_grad_hook) for a hook
    /// that can fail: its error ends the `backward()` call and is returned by it (DDP's gradient
    /// all-reduce reports a peer's timeout this way). Later hooks and leaves are not run.
    pub fn register_fallible_post_accumulate_grad_hook(
        &self,
        hook: impl Fn(&Tensor) -> Result<()> + Send + Sync + 'static,
    ) -> Result<()> {
        if !self.requires_grad() || !self.is_leaf() {
            return Err(Error::autograd(
                "post-accumulate-grad hooks can only be registered on leaves that require grad",
            ));
        }
        self.0.post_accumulate_hooks.lock().unwrap_or_else(|e| e.into_inner()).push(std::sync::Arc::new(hook));
        Ok(())
    }

    /// The leaves (tensors that require grad and were not computed by a recorded op) this tensor's
    /// graph reaches, each once, in the order a depth-first walk from `self` meets them; `[self]`
    /// for a leaf, `[]` for a tensor outside any graph. DDP's `find_unused_parameters` uses it to
    /// learn which parameters a forward used.
    pub fn graph_leaves(&self) -> Vec<Tensor> {
        use crate::graph::Edge;
        let Some(root) = self.grad_fn() else {
            return if self.requires_grad() { vec![self.clone()] } else { vec![] };
        };
        let mut seen_nodes = std::collections::HashSet::new();
        let mut seen_leaves = std::collections::HashSet::new();
        let mut leaves = vec![];
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if !seen_nodes.insert(std::sync::Arc::as_ptr(&n) as usize) {
                continue;
            }
            for e in n.edges.iter().flatten() {
                match e {
                    Edge::Node(c) => stack.push(c.clone()),
                    Edge::Leaf(l) => {
                        if seen_leaves.insert(std::sync::Arc::as_ptr(l) as usize) {
                            leaves.push(Tensor(l.clone()));
                        }
                    }
                }
            }
        }
        leaves
    }

    /// Backward from a scalar: accumulates d(self)/d(leaf) into every leaf's `.grad()`. Frees the graph.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::autograd(format!(
                "grad can be implicitly created only for scalar outputs, got shape {:?}",
                self.shape()
            )));
        }
        let one = self.ones_like()?;
        self.backward_opts(&one, false, false)
    }

    /// Backward with an explicit gradient of `self` (same shape).
    pub fn backward_with(&self, gradient: &Tensor) -> Result<()> {
        self.backward_opts(gradient, false, false)
    }

    /// Backward with every option: keep the graph for another backward, record the backward pass.
    pub fn backward_opts(&self, gradient: &Tensor, retain_graph: bool, create_graph: bool) -> Result<()> {
        graph::run(&[(self.clone(), gradient.clone())], Sink::Leaves, retain_graph || create_graph, create_graph)?;
        Ok(())
    }
}

/// `torch.autograd.grad`: gradients of `outputs` (weighted by `grad_outputs`, ones for scalars) with
/// respect to `inputs`, returned instead of accumulated. With `create_graph` the result is itself
/// differentiable (Hessian-vector products, gradient penalties). Inputs that receive no gradient are
/// an error unless `allow_unused` (then `None`).
pub fn grad(
    outputs: &[Tensor],
    inputs: &[Tensor],
    grad_outputs: Option<&[Tensor]>,
    retain_graph: bool,
    create_graph: bool,
    allow_unused: bool,
) -> Result<Vec<Option<Tensor>>> {
    let mut roots = vec![];
    for (i, o) in outputs.iter().enumerate() {
        let g = match grad_outputs {
            Some(gs) => gs.get(i).cloned().ok_or_else(|| Error::invalid("grad", "grad_outputs must match outputs"))?,
            None if o.numel() == 1 => o.ones_like()?,
            None => {
                return Err(Error::autograd(format!(
                    "grad can be implicitly created only for scalar outputs, got shape {:?}",
                    o.shape()
                )))
            }
        };
        roots.push((o.clone(), g));
    }
    for t in inputs {
        if !t.requires_grad() {
            return Err(Error::autograd("one of the inputs does not require grad"));
        }
    }
    let r = graph::run(&roots, Sink::Inputs(inputs), retain_graph || create_graph, create_graph)?;
    if !allow_unused && r.iter().any(|g| g.is_none()) {
        return Err(Error::autograd(
            "one of the differentiated tensors appears to not have been used in the graph; set allow_unused",
        ));
    }
    Ok(r)
}

/// Compares analytic gradients of `f` (summed with random weights) with central finite differences in
/// f64, for every input. Returns the largest relative error, or an error describing the first mismatch.
///
/// ```
/// use ember_autograd::{gradcheck, Tensor};
/// let x = Tensor::randn(&[3, 2]).unwrap().to_dtype(ember_storage::DType::F64).unwrap();
/// gradcheck(|xs| xs[0].tanh()?.mul(&xs[0]), &[x], 1e-6, 1e-5).unwrap();
/// ```
pub fn gradcheck(f: impl Fn(&[Tensor]) -> Result<Tensor>, inputs: &[Tensor], eps: f64, tol: f64) -> Result<f64> {
    let xs: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F64).map(|t| t.detach()).and_then(|t| t.requires_grad_(true)))
        .collect::<Result<_>>()?;
    let out = f(&xs)?;
    let w = Tensor::randn(out.shape())?.to_dtype(DType::F64)?.to(out.device())?;
    // probes run with recording on and leaf inputs, so `f` may itself differentiate (second order)
    let loss = |xs: &[Tensor]| -> Result<f64> { f(xs)?.mul(&w)?.sum()?.item() };
    let analytic = grad(&[out.mul(&w)?.sum()?], &xs, None, false, false, true)?;
    let mut worst = 0f64;
    for (i, x) in xs.iter().enumerate() {
        let base = x.to_vec::<f64>()?;
        let a = match &analytic[i] {
            Some(g) => g.to_vec_f64()?,
            None => vec![0.0; base.len()],
        };
        for k in 0..base.len() {
            let probe = |d: f64| -> Result<f64> {
                let mut v = base.clone();
                v[k] += d;
                let mut ys = xs.clone();
                ys[i] = Tensor::from_vec(v, x.shape())?.to(x.device())?.requires_grad_(true)?;
                loss(&ys)
            };
            let numeric = (probe(eps)? - probe(-eps)?) / (2.0 * eps);
            let err = (numeric - a[k]).abs() / (1.0 + numeric.abs());
            worst = worst.max(err);
            if err > tol || err.is_nan() {
                return Err(Error::autograd(format!(
                    "gradcheck: input {i} element {k}: analytic {} vs numeric {numeric}",
                    a[k]
                )));
            }
        }
    }
    Ok(worst)
}
