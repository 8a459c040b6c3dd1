//! Evaluation of pending buffers: a pending value and the pending values it reads are planned into
//! one fusion group (an [`ElementwiseProgram`]) and run by the inner backend in one pass.
//!
//! # Grouping rules
//! Starting from the value that is needed, the planner walks back through its pending inputs. A
//! pending input joins the group when it has the group's dtype and shape and is read through the
//! identity layout (so element `i` of the consumer reads element `i` of the input); otherwise the
//! chain is *cut*: the input is evaluated first as a group of its own, and read as a group input
//! through its layout (a broadcast, transpose, slice or reshape). Groups hold at most
//! [`MAX_STEPS`] steps.
//!
//! # What is materialised
//! The needed value, and every member of the group that someone else still holds (a tensor the
//! user keeps, a value autograd saved for backward, a pending op outside the group): each is
//! computed once and kept. Members held by no one but the group stay in cache-sized tiles and are
//! never written to memory. Values no one needs are never computed.
//!
//! # When evaluation happens
//! When a value is read (download, `item`, `Display`, a comparison used for control flow), when it
//! is the input of an op that is not fused (reductions, matrix products, indexing, casts,
//! convolutions ...), before an in-place write to a buffer that pending values read
//! (`copy_`, optimizer steps: those pending values are evaluated first, so they see the old
//! contents), when a chain grows past [`MAX_DEPTH`] pending ops, and on [`crate::sync`].

use crate::buffer::{LazyBuffer, NodeOp, PENDING};
use crate::log;
use ember_storage::{Buffer, DType, DeviceBuffer, ElementwiseProgram, Layout, Result, Step, View};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most steps in one group.
pub const MAX_STEPS: usize = 256;
/// Longest chain of pending ops before its inputs are evaluated at record time.
pub const MAX_DEPTH: usize = 64;

/// One evaluation at a time: planning reads the graph's reference counts, which must not change
/// under it, and a value must not be computed twice by racing threads.
static EVAL: Mutex<()> = Mutex::new(());

fn eval_lock() -> MutexGuard<'static, ()> {
    EVAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A buffer's identity (the address of its allocation).
fn key(b: &Buffer) -> usize {
    Arc::as_ptr(b) as *const () as usize
}

/// The inner buffer of `b`, evaluating it first when it is pending; `why` names the reader.
pub(crate) fn ready(b: &Buffer, why: &str) -> Result<Buffer> {
    let lb = LazyBuffer::of(b, why)?;
    if let Some(r) = lb.ready() {
        return Ok(r);
    }
    let _one = eval_lock();
    force_locked(b, why)
}

/// Evaluates every pending buffer that is still alive.
pub(crate) fn sync_all() -> Result<()> {
    let _one = eval_lock();
    let live = PENDING.lock().unwrap_or_else(|e| e.into_inner()).live();
    for w in live {
        // values read by a newer one were computed (or freed) with its group
        if let Some(b) = w.upgrade() {
            force_locked(&b, "sync")?;
        }
    }
    Ok(())
}

/// Evaluates every pending buffer that reads `target` (an inner buffer about to be written in place).
pub(crate) fn before_write(target: &Buffer, why: &str) -> Result<()> {
    let _one = eval_lock();
    let live = PENDING.lock().unwrap_or_else(|e| e.into_inner()).live();
    let mut memo = HashMap::new();
    for w in live {
        let Some(b) = w.upgrade() else { continue };
        if reads(&b, key(target), &mut memo) {
            force_locked(&b, why)?;
        }
    }
    Ok(())
}

/// Whether lazy buffer `b` is, or reads (through pending ops), the inner buffer `target`.
fn reads(b: &Buffer, target: usize, memo: &mut HashMap<usize, bool>) -> bool {
    if let Some(&r) = memo.get(&key(b)) {
        return r;
    }
    let Some(lb) = b.as_any().downcast_ref::<LazyBuffer>() else { return false };
    let r = match lb.node() {
        None => lb.ready().is_some_and(|r| key(&r) == target),
        Some(n) => n.inputs.iter().any(|(ib, _)| reads(ib, target, memo)),
    };
    memo.insert(key(b), r);
    r
}

/// Evaluates pending `b` (the caller holds the evaluation lock).
fn force_locked(b: &Buffer, why: &str) -> Result<Buffer> {
    let lb = LazyBuffer::of(b, why)?;
    let Some(node) = lb.node() else {
        return Ok(lb.ready().expect("not pending, so ready"));
    };
    let mut plan = Planner::new(lb.dtype(), node.shape.clone());
    let root = plan.visit(b, &node)?;
    // outputs: the needed value, and members someone outside the group still holds
    let mut outputs = vec![root];
    let mut out_bufs = vec![b.clone()];
    for (m, k) in &plan.members {
        if *k == root {
            continue;
        }
        let internal = plan.internal.get(&key(m)).copied().unwrap_or(0);
        // one reference is `plan.members`' own
        if Arc::strong_count(m) > internal + 1 {
            outputs.push(*k);
            out_bufs.push(m.clone());
        }
    }
    let program = ElementwiseProgram { dtype: plan.dtype, shape: plan.shape.clone(), steps: plan.steps, outputs };
    let views: Vec<View> = plan.inputs.iter().map(|(b, l)| (b, l)).collect();
    let inner = node.backend.clone();
    let results = match inner.fused() {
        Some(f) => f.elementwise(&program, &views)?,
        None => program.run_stepwise(&*inner, &views)?,
    };
    log::group(&program, views.len(), &plan.cuts, why);
    drop(views);
    drop(node);
    let root_buf = results[0].clone();
    for (ob, r) in out_bufs.iter().zip(results) {
        LazyBuffer::of(ob, why)?.set_ready(r);
    }
    Ok(root_buf)
}

/// Builds one group's program by walking back from the needed value.
struct Planner {
    dtype: DType,
    shape: Vec<usize>,
    steps: Vec<Step>,
    /// Group inputs: inner buffers and the layouts they are read through.
    inputs: Vec<(Buffer, Layout)>,
    /// The step reading each input.
    input_steps: Vec<usize>,
    /// Pending buffers computed in the group, with their steps.
    members: Vec<(Buffer, usize)>,
    member_step: HashMap<usize, usize>,
    /// References to each member from the group's own nodes.
    internal: HashMap<usize, usize>,
    /// Why chains were cut, for the log.
    cuts: Vec<String>,
}

impl Planner {
    fn new(dtype: DType, shape: Vec<usize>) -> Planner {
        Planner {
            dtype,
            shape,
            steps: vec![],
            inputs: vec![],
            input_steps: vec![],
            members: vec![],
            member_step: HashMap::new(),
            internal: HashMap::new(),
            cuts: vec![],
        }
    }

    /// Adds pending `b` (whose node is `node`) and the members it reads; returns its step.
    fn visit(&mut self, b: &Buffer, node: &crate::buffer::Node) -> Result<usize> {
        let mut operands = [0usize; 2];
        for (j, (ib, il)) in node.inputs.iter().enumerate() {
            operands[j] = self.operand(ib, il, node.op)?;
        }
        self.steps.push(match node.op {
            NodeOp::Unary(op) => Step::Unary(op, operands[0]),
            NodeOp::Binary(op) => Step::Binary(op, operands[0], operands[1]),
        });
        let k = self.steps.len() - 1;
        self.members.push((b.clone(), k));
        self.member_step.insert(key(b), k);
        Ok(k)
    }

    /// The step holding input `ib` read through `il` by an op `consumer`.
    fn operand(&mut self, ib: &Buffer, il: &Layout, consumer: NodeOp) -> Result<usize> {
        let lb = LazyBuffer::of(ib, consumer.name())?;
        if let Some(n) = lb.node() {
            match self.blocker(lb, &n, il) {
                None => {
                    *self.internal.entry(key(ib)).or_default() += 1;
                    if let Some(&k) = self.member_step.get(&key(ib)) {
                        return Ok(k);
                    }
                    return self.visit(ib, &n);
                }
                Some(reason) => {
                    if log::enabled() {
                        self.cuts.push(format!("{} <- {}: {reason}", consumer.name(), n.op.name()));
                    }
                    force_locked(ib, "a cut chain")?;
                }
            }
        }
        let r = lb.ready().expect("evaluated above");
        if let Some(i) = self.inputs.iter().position(|(b, l)| key(b) == key(&r) && l == il) {
            return Ok(self.input_steps[i]);
        }
        self.inputs.push((r, il.clone()));
        self.steps.push(Step::Input(self.inputs.len() - 1));
        self.input_steps.push(self.steps.len() - 1);
        Ok(self.steps.len() - 1)
    }

    /// Why pending `lb` cannot join the group when read through `il` (`None`: it can).
    fn blocker(&self, lb: &LazyBuffer, n: &crate::buffer::Node, il: &Layout) -> Option<&'static str> {
        if lb.dtype() != self.dtype {
            return Some("another dtype");
        }
        if n.shape != self.shape || il.shape() != self.shape.as_slice() || il.offset() != 0 || !il.is_contiguous() {
            return Some("read through a view (broadcast, transpose, slice or reshape)");
        }
        if self.steps.len() + n.depth >= MAX_STEPS {
            return Some("the group is full");
        }
        None
    }
}
