//! The [`ProcessGroup`] trait (PyTorch's `torch.distributed` collectives on a group of processes),
//! [`ReduceOp`], and [`WorldOfOne`], the group of a single process.

use crate::work::Work;
use ember_autograd::{no_grad, DType, Error, Result, Tensor};

/// How [`ProcessGroup::all_reduce`] and [`ProcessGroup::reduce_scatter`] combine the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Elementwise sum (logical or for bool).
    Sum,
    /// Sum divided by the world size (floating dtypes only).
    Avg,
    /// Elementwise product (logical and for bool).
    Product,
    /// Elementwise maximum (logical or for bool).
    Max,
    /// Elementwise minimum (logical and for bool).
    Min,
}

impl ReduceOp {
    /// PyTorch's name of the op (`"sum"`, `"avg"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
            ReduceOp::Product => "product",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
        }
    }

    /// Checks that the op is defined for `dtype` (averages need a floating dtype).
    pub fn check(self, what: &str, dtype: DType) -> Result<()> {
        if self == ReduceOp::Avg && !dtype.is_float() {
            return Err(Error::dtype(
                what,
                format!("ReduceOp::Avg needs a floating dtype, got {dtype}; use Sum and divide yourself"),
            ));
        }
        Ok(())
    }
}

/// A group of processes that run collectives together: every rank calls the same collectives in the
/// same order, with tensors of the same dtype and shape (but for `all_gather`'s first dimension).
/// Object safe, like the tensor `Backend`: DDP and user code hold an `Arc<dyn ProcessGroup>`.
///
/// Collectives are asynchronous: each returns a [`Work`] to wait on, so communication overlaps
/// with computation (PyTorch's `async_op=True`; call `.wait()` at once for the blocking form).
/// In-place collectives (`all_reduce`, `broadcast`) write their tensor when `wait` returns.
pub trait ProcessGroup: Send + Sync {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes in the group.
    fn world_size(&self) -> usize;
    /// The engine's name (`"mpi"`, `"nccl"`, `"local"`).
    fn name(&self) -> &str;
    /// Combines `tensor` across ranks with `op` and writes the result into `tensor` on every rank.
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Work>;
    /// Copies rank `root`'s `tensor` into `tensor` on every other rank.
    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Work>;
    /// Every rank's `tensor`, in rank order. The first dimension may differ between ranks (uneven
    /// gathers); the other dimensions and the dtype must agree.
    fn all_gather(&self, tensor: &Tensor) -> Result<Work<Vec<Tensor>>>;
    /// Rank `i` receives `op` over the ranks' `inputs[i]`; `inputs` has `world_size()` tensors of one
    /// dtype, whose shapes agree across ranks position by position.
    fn reduce_scatter(&self, inputs: &[Tensor], op: ReduceOp) -> Result<Work<Tensor>>;
    /// Completes when every rank has reached it.
    fn barrier(&self) -> Result<Work>;
}

#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
/// Writes `values` (host data of `tensor`'s dtype and numel) into `tensor` in place.
pub(crate) fn write_into(tensor: &Tensor, values: ember_storage::HostData) -> Result<()> {
    // a dense CPU tensor: one copy straight into its memory, the host buffer back to the cache
    fn copy<T: ember_storage::HostElement>(t: &Tensor, v: &[T]) -> Result<()> {
        no_grad(|| t.with_slice_mut(|s: &mut [T]| s.copy_from_slice(v)))
    }
    let direct = tensor.device() == ember_autograd::Device::Cpu
        && tensor.is_contiguous()
        && values.dtype() == tensor.dtype()
        && values.len() == tensor.numel()
        && ember_storage::with_host_data!(&values, v => copy(tensor, v).is_ok());
    if direct {
        ember_ops_cpu::recycle_host(values);
        return Ok(());
    }
    let src = Tensor::from_host(values, tensor.shape(), tensor.device())?;
    no_grad(|| tensor.copy_(&src).map(|_| ()))
}

pub(crate) fn check_root(what: &str, root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(Error::invalid(what, format!("root rank {root} is outside the group of {world}")));
    }
    Ok(())
}

pub(crate) fn check_scatter_inputs(what: &str, inputs: &[Tensor], world: usize) -> Result<DType> {
    if inputs.len() != world {
        return Err(Error::invalid(what, format!("needs {world} inputs (one per rank), got {}", inputs.len())));
    }
    let dtype = inputs[0].dtype();
    if let Some(t) = inputs.iter().find(|t| t.dtype() != dtype) {
        return Err(Error::dtype(what, format!("inputs mix dtypes {dtype} and {}", t.dtype())));
    }
    Ok(dtype)
}

/// The group of one process: every collective is the identity (Avg and the rest of a single value
/// are that value). Lets DDP code run unchanged without a launcher, as PyTorch's world of 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorldOfOne;

impl ProcessGroup for WorldOfOne {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn name(&self) -> &str {
        "local"
    }
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Work> {
        op.check("all_reduce", tensor.dtype())?;
        Ok(Work::ready(Ok(())))
    }
    fn broadcast(&self, _tensor: &Tensor, root: usize) -> Result<Work> {
        check_root("broadcast", root, 1)?;
        Ok(Work::ready(Ok(())))
    }
    fn all_gather(&self, tensor: &Tensor) -> Result<Work<Vec<Tensor>>> {
        Ok(Work::ready(Ok(vec![tensor.detach().deep_clone()?])))
    }
    fn reduce_scatter(&self, inputs: &[Tensor], op: ReduceOp) -> Result<Work<Tensor>> {
        let dtype = check_scatter_inputs("reduce_scatter", inputs, 1)?;
        op.check("reduce_scatter", dtype)?;
        Ok(Work::ready(inputs[0].detach().deep_clone()))
    }
    fn barrier(&self) -> Result<Work> {
        Ok(Work::ready(Ok(())))
    }
}
