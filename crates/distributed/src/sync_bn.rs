//! [`SyncBatchNorm`]: batch normalisation whose training statistics are those of the whole global
//! batch, every rank's shard together (PyTorch's `nn.SyncBatchNorm`), for data-parallel training
//! with small per-rank batches.
//!
//! In training, each rank sums its shard's values and squares per channel; one all-reduce (through
//! a differentiable all-reduce, whose backward all-reduces the gradients: PyTorch's SyncBN backward
//! reduces the same two sums) gives the global mean and biased variance; the running statistics get
//! the unbiased variance, as BatchNorm's. In evaluation it is the wrapped `BatchNorm`. The variance
//! is E[x²] - E[x]² over the global batch (PyTorch merges per-rank Welford statistics instead):
//! equal in exact arithmetic, less accurate for channels whose mean is large next to their spread.

use crate::group::{ProcessGroup, ReduceOp};
use ember_autograd::{apply, no_grad, Context, Error, Function, Result, Tensor};
use ember_nn::layers::BatchNorm;
use ember_nn::{Module, Slot, SlotMut, Traverse};
use std::sync::Arc;

/// A BatchNorm synchronised across the ranks of a group; state_dict keys are BatchNorm's.
pub struct SyncBatchNorm {
    /// The wrapped layer: its parameters, buffers and options.
    pub bn: BatchNorm,
    group: Arc<dyn ProcessGroup>,
}

impl SyncBatchNorm {
    /// Synchronises `bn` across `group` (PyTorch's `convert_sync_batchnorm`, one layer).
    pub fn new(bn: BatchNorm, group: Arc<dyn ProcessGroup>) -> SyncBatchNorm {
        SyncBatchNorm { bn, group }
    }
}

impl Traverse for SyncBatchNorm {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        self.bn.visit(v)
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        self.bn.visit_mut(v)
    }
}

/// Sum over ranks, differentiable: the gradient of an all-reduced sum is the all-reduced sum of the
/// gradients.
struct AllReduceSum(Arc<dyn ProcessGroup>);

impl Function for AllReduceSum {
    fn forward(&self, _ctx: &mut Context, inputs: &[Tensor]) -> Result<Tensor> {
        let t = inputs[0].deep_clone()?;
        self.0.all_reduce(&t, ReduceOp::Sum)?.wait()?;
        Ok(t)
    }
    fn backward(&self, _ctx: &Context, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let t = g.detach().deep_clone()?;
        self.0.all_reduce(&t, ReduceOp::Sum)?.wait()?;
        Ok(vec![Some(t)])
    }
    fn name(&self) -> &'static str {
        "all_reduce_sum"
    }
}

impl Module for SyncBatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bn = &self.bn;
        if !bn.training || self.group.world_size() == 1 {
            return bn.forward(x);
        }
        let shape = x.shape().to_vec();
        if shape.len() < 2 {
            return Err(Error::shape("SyncBatchNorm", format!("expected input of shape [N, C, ...], got {shape:?}")));
        }
        let c = shape[1];
        // per channel: [C, everything else]
        let per_channel = x.transpose(0, 1)?.reshape([c as isize, -1])?;
        let local_count = per_channel.shape()[1];
        let s1 = per_channel.sum_dim([1], false)?;
        let s2 = per_channel.mul(&per_channel)?.sum_dim([1], false)?;
        let count = Tensor::full_with([1], local_count as f64, x.dtype(), x.device())?;
        let global = apply(AllReduceSum(self.group.clone()), &[Tensor::cat(&[s1, s2, count], 0)?])?;
        let n = global.narrow(0, 2 * c as isize, 1)?;
        let mean = global.narrow(0, 0, c)?.div(&n)?;
        let var = global.narrow(0, c as isize, c)?.div(&n)?.sub(&mean.mul(&mean)?)?;
        let total = no_grad(|| n.item())?;
        if total < 2.0 {
            return Err(Error::invalid(
                "SyncBatchNorm",
                format!("expected more than 1 value per channel when training, got {total} over all ranks"),
            ));
        }
        let mut bshape = vec![1isize; shape.len()];
        bshape[1] = c as isize;
        let mut y = x.sub(&mean.reshape(&bshape)?)?.mul(&var.add(bn.eps)?.rsqrt()?.reshape(&bshape)?)?;
        if let Some(w) = &bn.weight {
            y = y.mul(&w.reshape(&bshape)?)?;
        }
        if let Some(b) = &bn.bias {
            y = y.add(&b.reshape(&bshape)?)?;
        }
        no_grad(|| -> Result<()> {
            if let (Some(rm), Some(rv)) = (&bn.running_mean, &bn.running_var) {
                let m = bn.momentum;
                rm.mul_(1.0 - m)?.add_(&mean.detach().mul(m)?)?;
                rv.mul_(1.0 - m)?.add_(&var.detach().mul(m * total / (total - 1.0))?)?;
            }
            if let Some(nb) = &bn.num_batches_tracked {
                nb.add_(1i64)?;
            }
            Ok(())
        })?;
        Ok(y)
    }
}
