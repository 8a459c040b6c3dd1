//! [`NcclGroup`]: collectives on CUDA tensors through NCCL (feature `nccl`; NCCL is loaded at run
//! time, so this builds everywhere and fails with a clear error where NCCL or a GPU is missing).
//!
//! Each collective works on a dense copy of the tensor made on the GPU, run on the device's stream
//! (ordered with the kernels around it), and written back with `copy_` (so views and version
//! counters behave as for any in-place op). The returned [`Work`] is complete as far as the host is
//! concerned: the GPU runs it in stream order, as PyTorch's NCCL work does.
//!
//! - `NcclGroup::world_of_one(device)`: one rank, one GPU (checked on a lent GPU).
//! - `NcclGroup::from_group(&group, device)` (with an MPI group, `mpirun` with one GPU per rank):
//!   rank 0 makes NCCL's unique id and the group broadcasts it. Untested until a machine with
//!   several GPUs is available.
//! - `all_gather` pads uneven first dimensions to the largest (NCCL gathers equal blocks);
//!   `reduce_scatter` needs inputs of one shape.
//! - Not built: timeouts (a dead peer blocks the stream; PyTorch's watchdog aborts the
//!   communicator), bool reductions other than or/and.

use crate::group::{check_root, check_scatter_inputs, ProcessGroup, ReduceOp};
use crate::work::Work;
use ember_autograd::{no_grad, DType, Device, Error, Result, Tensor};
use ember_ops_cuda::nccl::{unique_id, NcclComm, NcclOp};

/// A process group over NCCL: one GPU per rank.
pub struct NcclGroup {
    comm: NcclComm,
    device: usize,
}

fn require_gpu() -> Result<()> {
    if ember_autograd::cuda::is_available() {
        Ok(())
    } else {
        Err(Error::device("NcclGroup", "no usable CUDA device (NCCL needs one GPU per rank)"))
    }
}

fn nccl_op(op: ReduceOp) -> NcclOp {
    match op {
        ReduceOp::Sum => NcclOp::Sum,
        ReduceOp::Avg => NcclOp::Avg,
        ReduceOp::Product => NcclOp::Prod,
        ReduceOp::Max => NcclOp::Max,
        ReduceOp::Min => NcclOp::Min,
    }
}

impl NcclGroup {
    /// A group of one rank on GPU `device`.
    pub fn world_of_one(device: usize) -> Result<NcclGroup> {
        require_gpu()?;
        NcclGroup::join(0, 1, unique_id()?, device)
    }

    /// The NCCL group of the processes of `group` (an `MpiGroup` of feature `mpi`, say), each on
    /// its GPU `device`: rank 0's unique id is broadcast through `group`.
    pub fn from_group(group: &dyn ProcessGroup, device: usize) -> Result<NcclGroup> {
        require_gpu()?;
        let id = if group.rank() == 0 { unique_id()? } else { [0u8; 128] };
        let t = Tensor::from_vec(id.to_vec(), [128])?;
        group.broadcast(&t, 0)?.wait()?;
        let bytes: Vec<u8> = t.to_vec()?;
        let mut id = [0u8; 128];
        id.copy_from_slice(&bytes);
        NcclGroup::join(group.rank(), group.world_size(), id, device)
    }

    fn join(rank: usize, size: usize, id: [u8; 128], device: usize) -> Result<NcclGroup> {
        let backend = ember_autograd::cuda::backend_of(device)?;
        Ok(NcclGroup { comm: NcclComm::new(backend, rank, size, id)?, device })
    }

    /// A dense copy of `t` on this group's GPU, or an error naming the collective.
    fn staged(&self, what: &str, t: &Tensor) -> Result<Tensor> {
        if t.device() != Device::Cuda(self.device) {
            return Err(Error::device(
                what,
                format!("NcclGroup on cuda:{} got a tensor on {}", self.device, t.device()),
            ));
        }
        no_grad(|| t.detach().deep_clone())
    }
}

impl ProcessGroup for NcclGroup {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world_size(&self) -> usize {
        self.comm.size()
    }
    fn name(&self) -> &str {
        "nccl"
    }

    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Work> {
        op.check("all_reduce", tensor.dtype())?;
        let work = self.staged("all_reduce", tensor)?;
        self.comm.all_reduce(work.buffer(), work.dtype(), work.numel(), nccl_op(op))?;
        no_grad(|| tensor.copy_(&work).map(|_| ()))?;
        Ok(Work::ready(Ok(())))
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Work> {
        check_root("broadcast", root, self.world_size())?;
        let work = self.staged("broadcast", tensor)?;
        self.comm.broadcast(work.buffer(), work.dtype(), work.numel(), root)?;
        no_grad(|| tensor.copy_(&work).map(|_| ()))?;
        Ok(Work::ready(Ok(())))
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Work<Vec<Tensor>>> {
        let world = self.world_size();
        let dev = Device::Cuda(self.device);
        let shape = tensor.shape().to_vec();
        // first dimensions of every rank, then equal blocks padded to the largest
        let d0 = shape.first().copied().unwrap_or(1);
        let sizes = Tensor::from_vec(vec![d0 as i64], [1])?.to(dev)?;
        let all_sizes = Tensor::zeros_with([world], DType::I64, dev)?;
        self.comm.all_gather(sizes.buffer(), all_sizes.buffer(), DType::I64, 1)?;
        let d0s: Vec<usize> = all_sizes.to_vec::<i64>()?.into_iter().map(|d| d as usize).collect();
        let max = d0s.iter().copied().max().unwrap_or(0);
        let rest: usize = shape.iter().skip(1).product();
        let block = if shape.is_empty() { 1 } else { max * rest };
        let padded = Tensor::zeros_with([block.max(1)], tensor.dtype(), dev)?;
        let mine = self.staged("all_gather", tensor)?.reshape([-1])?;
        if mine.numel() > 0 {
            no_grad(|| padded.narrow(0, 0, mine.numel())?.copy_(&mine).map(|_| ()))?;
        }
        let out = Tensor::zeros_with([block.max(1) * world], tensor.dtype(), dev)?;
        self.comm.all_gather(padded.buffer(), out.buffer(), tensor.dtype(), block.max(1))?;
        let parts = d0s
            .iter()
            .enumerate()
            .map(|(r, &d)| {
                let mut s = shape.clone();
                if let Some(first) = s.first_mut() {
                    *first = d;
                }
                let n: usize = s.iter().product();
                let piece = out.narrow(0, (r * block.max(1)) as isize, n)?;
                let dims: Vec<isize> = s.iter().map(|&x| x as isize).collect();
                piece.reshape(&dims)?.deep_clone()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Work::ready(Ok(parts)))
    }

    fn reduce_scatter(&self, inputs: &[Tensor], op: ReduceOp) -> Result<Work<Tensor>> {
        let dtype = check_scatter_inputs("reduce_scatter", inputs, self.world_size())?;
        op.check("reduce_scatter", dtype)?;
        let shape = inputs[0].shape().to_vec();
        if let Some(t) = inputs.iter().find(|t| t.shape() != shape.as_slice()) {
            return Err(Error::shape(
                "reduce_scatter",
                format!("NCCL needs inputs of one shape, got {:?} and {:?}", shape, t.shape()),
            ));
        }
        let staged =
            inputs.iter().map(|t| self.staged("reduce_scatter", &t.reshape([-1])?)).collect::<Result<Vec<_>>>()?;
        let src = no_grad(|| Tensor::cat(&staged, 0))?;
        let n = inputs[0].numel();
        let dst = Tensor::zeros_with([n], dtype, Device::Cuda(self.device))?;
        self.comm.reduce_scatter(src.buffer(), dst.buffer(), dtype, n, nccl_op(op))?;
        let dims: Vec<isize> = shape.iter().map(|&x| x as isize).collect();
        Ok(Work::ready(dst.reshape(&dims)))
    }

    fn barrier(&self) -> Result<Work> {
        let t = Tensor::zeros_with([1], DType::F32, Device::Cuda(self.device))?;
        self.comm.all_reduce(t.buffer(), DType::F32, 1, NcclOp::Sum)?;
        self.comm.backend().synchronize()?;
        Ok(Work::ready(Ok(())))
    }
}
