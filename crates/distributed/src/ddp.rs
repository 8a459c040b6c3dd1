//! [`DistributedDataParallel`]: PyTorch's DDP. Wraps any module; every rank runs the same model on
//! its own shard of each batch, and gradients are averaged across ranks during backward, so that
//! after `optimizer.step()` every rank holds the same parameters — those a single process would
//! have after a step on the whole batch.
//!
//! How it works (as PyTorch's reducer):
//! - At construction, parameters and buffers are broadcast from rank 0 (ranks start equal).
//! - Parameters are grouped into **buckets** of about `bucket_cap_mb` MiB (one dtype each; the
//!   first at most 1 MiB, so communication starts early), in the reverse of `parameters()` order,
//!   the order backward tends to produce their gradients.
//! - A post-accumulate-grad hook on each parameter marks it ready; when a bucket is complete its
//!   gradients are flattened and all-reduced (Avg) **asynchronously**, while backward goes on with
//!   the earlier layers. The hook of the last parameter waits for every bucket and writes the
//!   averaged gradients back, so when `backward()` returns, `.grad()` is synchronised. A failed
//!   all-reduce (a peer's timeout) is returned by `backward()`.
//! - [`no_sync`](DistributedDataParallel::no_sync): forwards run inside it do not synchronise their
//!   backward, so gradients accumulate locally; the first synchronised backward after it averages
//!   the accumulated sums.
//! - `find_unused_parameters`: the forward's graph is walked to find parameters it did not use;
//!   they count as ready with zero gradient, and parameters no rank used keep their `.grad()` as it
//!   was (PyTorch's behaviour). Without it, a parameter that gets no gradient leaves its bucket
//!   unreduced, and the next forward says so, naming the parameters.
//! - Buffers (BatchNorm's running statistics) are broadcast from rank 0 at every training forward
//!   (`broadcast_buffers`, on by default, as PyTorch); turn it off to keep them per rank.

use crate::group::{ProcessGroup, ReduceOp};
use crate::work::Work;
use ember_autograd::{is_grad_enabled, no_grad, DType, Error, Result, Tensor};
use ember_nn::{Module, ModuleExt, Slot, SlotMut, Traverse};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Options of [`DistributedDataParallel`] (PyTorch's keyword arguments, same defaults).
#[derive(Clone, Debug)]
pub struct DdpOptions {
    /// Bucket size in MiB (PyTorch: 25).
    pub bucket_cap_mb: f64,
    /// Walk each forward's graph to tolerate parameters that get no gradient (PyTorch: false).
    pub find_unused_parameters: bool,
    /// Broadcast buffers from rank 0 at every training forward (PyTorch: true).
    pub broadcast_buffers: bool,
    /// Start each bucket's all-reduce as soon as it is ready (true), or all of them after the
    /// whole backward pass (false; for measuring what the overlap buys).
    pub overlap: bool,
}

impl Default for DdpOptions {
    fn default() -> Self {
        DdpOptions { bucket_cap_mb: 25.0, find_unused_parameters: false, broadcast_buffers: true, overlap: true }
    }
}

impl DdpOptions {
    /// Sets `bucket_cap_mb`.
    pub fn bucket_cap_mb(mut self, mb: f64) -> Self {
        self.bucket_cap_mb = mb;
        self
    }
    /// Sets `find_unused_parameters`.
    pub fn find_unused_parameters(mut self, on: bool) -> Self {
        self.find_unused_parameters = on;
        self
    }
    /// Sets `broadcast_buffers`.
    pub fn broadcast_buffers(mut self, on: bool) -> Self {
        self.broadcast_buffers = on;
        self
    }
    /// Sets `overlap`.
    pub fn overlap(mut self, on: bool) -> Self {
        self.overlap = on;
        self
    }
}

/// One bucket: parameter indices (into the reducer's list) of one dtype.
struct Bucket {
    members: Vec<usize>,
}

/// Per-iteration state.
#[derive(Default)]
struct Round {
    /// A synchronised forward ran and its backward has not finished reducing.
    armed: bool,
    /// Per parameter: ready this round.
    ready: Vec<bool>,
    /// Per bucket: how many members are ready.
    ready_count: Vec<usize>,
    /// Per parameter: used by this rank's forward (all true without find_unused_parameters).
    used: Vec<bool>,
    /// Per bucket: the flat gradient being reduced and its handle.
    in_flight: Vec<Option<(Tensor, Work)>>,
    /// Buckets launched so far (always a prefix: they start in index order).
    launched: usize,
    /// Some hook of this round has run.
    fired: bool,
}

/// The shared part of a DDP: what the hooks need.
struct Reducer {
    group: Arc<dyn ProcessGroup>,
    params: Vec<Tensor>,
    names: Vec<String>,
    buckets: Vec<Bucket>,
    bucket_of: Vec<usize>,
    round: Mutex<Round>,
    sync: AtomicBool,
    options: DdpOptions,
}

/// PyTorch's `DistributedDataParallel`; see the module docs. Its state_dict is the wrapped
/// module's under `module.` (as PyTorch's); save [`module`](Self::module)'s for a checkpoint that
/// a single-process model loads.
pub struct DistributedDataParallel<M: Module> {
    module: M,
    reducer: Arc<Reducer>,
}

impl<M: Module> DistributedDataParallel<M> {
    /// Wraps `module` with the default options.
    pub fn new(module: M, group: Arc<dyn ProcessGroup>) -> Result<Self> {
        Self::with_options(module, group, DdpOptions::default())
    }

    /// Wraps `module`: broadcasts its parameters and buffers from rank 0, builds the buckets and
    /// registers the gradient hooks.
    pub fn with_options(module: M, group: Arc<dyn ProcessGroup>, options: DdpOptions) -> Result<Self> {
        if options.bucket_cap_mb.is_nan() || options.bucket_cap_mb <= 0.0 {
            return Err(Error::invalid("DistributedDataParallel", "bucket_cap_mb must be positive"));
        }
        // rank 0's values everywhere
        let state = module.state_dict();
        let works = state.iter().map(|(_, t)| group.broadcast(t, 0)).collect::<Result<Vec<_>>>()?;
        for w in works {
            w.wait()?;
        }
        let named: Vec<(String, Tensor)> =
            module.named_parameters().into_iter().filter(|(_, p)| p.requires_grad()).collect();
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let (buckets, bucket_of) = make_buckets(&params, options.bucket_cap_mb);
        let reducer = Arc::new(Reducer {
            group,
            params,
            names,
            buckets,
            bucket_of,
            round: Mutex::new(Round::default()),
            sync: AtomicBool::new(true),
            options,
        });
        for (i, p) in reducer.params.iter().enumerate() {
            let weak: Weak<Reducer> = Arc::downgrade(&reducer);
            p.register_fallible_post_accumulate_grad_hook(move |_| match weak.upgrade() {
                Some(r) => r.mark_ready(i),
                None => Ok(()),
            })?;
        }
        Ok(DistributedDataParallel { module, reducer })
    }

    /// The wrapped module (PyTorch's `ddp.module`).
    pub fn module(&self) -> &M {
        &self.module
    }

    /// The wrapped module, mutably.
    pub fn module_mut(&mut self) -> &mut M {
        &mut self.module
    }

    /// The process group.
    pub fn group(&self) -> &Arc<dyn ProcessGroup> {
        &self.reducer.group
    }

    /// How many buckets the parameters form.
    pub fn num_buckets(&self) -> usize {
        self.reducer.buckets.len()
    }

    /// Runs `f` with gradient synchronisation off: backward passes of forwards run inside `f`
    /// accumulate gradients locally (PyTorch's `with ddp.no_sync():`).
    pub fn no_sync<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.reducer.sync.swap(false, Ordering::AcqRel);
        let r = f();
        self.reducer.sync.store(before, Ordering::Release);
        r
    }

    /// Applies a forward of the wrapped module with DDP's bookkeeping around it (buffers from rank
    /// 0, the reduction armed for the coming backward, unused parameters found).
    pub fn forward_with(&self, f: impl FnOnce(&M) -> Result<Tensor>) -> Result<Tensor> {
        let training = self.module.is_training() && is_grad_enabled();
        if training && self.reducer.options.broadcast_buffers && self.reducer.group.world_size() > 1 {
            let buffers = self.module.buffers();
            let works = buffers.iter().map(|b| self.reducer.group.broadcast(b, 0)).collect::<Result<Vec<_>>>()?;
            for w in works {
                w.wait()?;
            }
        }
        let sync = training && self.reducer.sync.load(Ordering::Acquire);
        if sync {
            self.reducer.check_finished()?;
        }
        let out = f(&self.module)?;
        if sync {
            let used = if self.reducer.options.find_unused_parameters { Some(out.graph_leaves()) } else { None };
            self.reducer.arm(used.as_deref())?;
        }
        Ok(out)
    }
}

impl<M: Module> Traverse for DistributedDataParallel<M> {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        v(Slot::Child("module", &self.module));
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        v(SlotMut::Child("module", &mut self.module));
    }
}

impl<M: Module> Module for DistributedDataParallel<M> {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        self.forward_with(|m| m.forward(input))
    }
}

/// PyTorch's cap of the first bucket: small, so that the first all-reduce starts early.
const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// Buckets in reverse parameter order, a new one when the dtype changes or the cap is reached
/// (the first bucket's cap is at most 1 MiB, as PyTorch's).
fn make_buckets(params: &[Tensor], cap_mb: f64) -> (Vec<Bucket>, Vec<usize>) {
    let full = (cap_mb * 1024.0 * 1024.0) as usize;
    let mut buckets: Vec<Bucket> = vec![];
    let mut bucket_of = vec![0; params.len()];
    let (mut bytes, mut dtype): (usize, Option<DType>) = (0, None);
    for i in (0..params.len()).rev() {
        let p = &params[i];
        let size = p.numel() * p.dtype().size_in_bytes();
        let cap = if buckets.len() <= 1 { full.min(FIRST_BUCKET_BYTES) } else { full };
        if buckets.is_empty() || dtype != Some(p.dtype()) || (bytes > 0 && bytes + size > cap) {
            buckets.push(Bucket { members: vec![] });
            bytes = 0;
            dtype = Some(p.dtype());
        }
        bytes += size;
        bucket_of[i] = buckets.len() - 1;
        buckets.last_mut().expect("pushed").members.push(i);
    }
    (buckets, bucket_of)
}

impl Reducer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails when the previous synchronised backward left buckets unreduced.
    fn check_finished(&self) -> Result<()> {
        let round = self.lock();
        if !round.armed || !round.fired {
            return Ok(());
        }
        let missing: Vec<&str> =
            (0..self.params.len()).filter(|&i| !round.ready[i]).map(|i| self.names[i].as_str()).collect();
        Err(Error::invalid(
            "DistributedDataParallel",
            format!(
                "the previous iteration's gradient reduction did not finish: parameters {missing:?} got no gradient. \
                 If the forward does not use every parameter, pass DdpOptions::find_unused_parameters(true); \
                 make sure the loss depends on the forward's output on every rank"
            ),
        ))
    }

    /// Starts a round after a synchronised forward; `used` is the forward's graph leaves when
    /// unused parameters are looked for.
    fn arm(&self, used: Option<&[Tensor]>) -> Result<()> {
        let n = self.params.len();
        let used_flags: Vec<bool> = match used {
            None => vec![true; n],
            Some(leaves) => self.params.iter().map(|p| leaves.iter().any(|l| l.is_same(p))).collect(),
        };
        let mut round = self.lock();
        *round = Round {
            armed: true,
            ready: vec![false; n],
            ready_count: vec![0; self.buckets.len()],
            used: used_flags.clone(),
            in_flight: (0..self.buckets.len()).map(|_| None).collect(),
            launched: 0,
            fired: false,
        };
        // parameters the forward did not use are ready now (their gradient counts as zero)
        for (i, &u) in used_flags.iter().enumerate() {
            if !u {
                round.ready[i] = true;
                round.ready_count[self.bucket_of[i]] += 1;
            }
        }
        Ok(())
    }

    /// The hook: parameter `i`'s gradient for this pass is accumulated.
    fn mark_ready(&self, i: usize) -> Result<()> {
        let mut round = self.lock();
        if !round.armed || round.ready.get(i).copied().unwrap_or(true) {
            return Ok(());
        }
        round.ready[i] = true;
        round.ready_count[self.bucket_of[i]] += 1;
        round.fired = true;
        // Buckets are launched in index order on every rank (collectives must be called in one
        // order everywhere, and ranks that skip different parameters complete buckets in different
        // orders); with overlap off, all of them once every parameter is ready.
        let all_ready = round.ready.iter().all(|&r| r);
        while round.launched < self.buckets.len() {
            let b = round.launched;
            let complete = round.ready_count[b] == self.buckets[b].members.len();
            if !(all_ready || self.options.overlap && complete) {
                break;
            }
            self.launch(&mut round, b)?;
        }
        if round.launched == self.buckets.len() {
            self.finish(&mut round)?;
        }
        Ok(())
    }

    /// Flattens bucket `b`'s gradients (zeros for parameters without one) and starts its all-reduce.
    fn launch(&self, round: &mut Round, b: usize) -> Result<()> {
        let parts = self.buckets[b]
            .members
            .iter()
            .map(|&i| {
                let p = &self.params[i];
                match (round.used[i], p.grad()) {
                    (true, Some(g)) => g.reshape([-1]),
                    _ => Tensor::zeros_with([p.numel()], p.dtype(), p.device()),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let flat = no_grad(|| Tensor::cat(&parts, 0))?;
        let work = self.group.all_reduce(&flat, ReduceOp::Avg)?;
        round.in_flight[b] = Some((flat, work));
        round.launched += 1;
        Ok(())
    }

    /// Waits for every bucket and writes the averaged gradients back; ends the round.
    fn finish(&self, round: &mut Round) -> Result<()> {
        round.armed = false;
        // which parameters any rank used (only looked up when some rank may have skipped some)
        let used_anywhere: Vec<bool> = if self.options.find_unused_parameters {
            let local: Vec<u8> = round.used.iter().map(|&u| u as u8).collect();
            let t = Tensor::from_vec(local, [self.params.len()])?;
            self.group.all_reduce(&t, ReduceOp::Max)?.wait()?;
            t.to_vec::<u8>()?.into_iter().map(|u| u != 0).collect()
        } else {
            vec![true; self.params.len()]
        };
        for b in 0..self.buckets.len() {
            let Some((flat, work)) = round.in_flight[b].take() else { continue };
            work.wait()?;
            let members = &self.buckets[b].members;
            let sizes: Vec<usize> = members.iter().map(|&i| self.params[i].numel()).collect();
            for (&i, piece) in members.iter().zip(flat.split_sizes(&sizes, 0)?) {
                if used_anywhere[i] {
                    let p = &self.params[i];
                    p.set_grad(Some(piece.reshape(shape_isize(p))?.contiguous()?));
                }
            }
        }
        Ok(())
    }
}

fn shape_isize(p: &Tensor) -> Vec<isize> {
    p.shape().iter().map(|&d| d as isize).collect()
}
