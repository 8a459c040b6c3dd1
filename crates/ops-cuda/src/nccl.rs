//! NCCL collectives on Ember's CUDA buffers (feature `nccl`), through cudarc's NCCL bindings with
//! the library loaded at run time (`libnccl.so.2`): a machine without NCCL builds, and creating a
//! communicator there is a clear error. Every call is enqueued on the backend's stream, so it is
//! ordered with the kernels before and after it, like any op.
//!
//! The process-group layer above (`ember-distributed`'s `NcclGroup`) passes whole, dense buffers it
//! allocated itself (a copy of the user's tensor), so the calls here take a buffer and an element
//! count from its start.

use crate::backend::CudaBackend;
use cudarc::driver::DevicePtr;
use cudarc::nccl::{result, sys};
use ember_storage::{Buffer, DType, Error, Result};
use std::sync::{Arc, Mutex};

/// How NCCL combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NcclOp {
    /// Sum (logical or for bool).
    Sum,
    /// Product (logical and for bool).
    Prod,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Mean over ranks (floating dtypes).
    Avg,
}

/// Whether the NCCL library can be loaded.
pub fn nccl_present() -> bool {
    // SAFETY: only probes whether the shared library loads; no NCCL function is called.
    unsafe { sys::is_culib_present() }
}

fn require_nccl(op: &str) -> Result<()> {
    if nccl_present() {
        Ok(())
    } else {
        Err(Error::backend(
            op,
            "the NCCL library (libnccl.so.2) was not found: install NCCL (e.g. the nvidia-nccl-cu13 wheel or the distribution's libnccl2) and put it on LD_LIBRARY_PATH",
        ))
    }
}

fn nccl_err(op: &'static str) -> impl Fn(result::NcclError) -> Error {
    move |e| Error::backend(op, format!("NCCL: {e:?}"))
}

/// A new unique id: rank 0 makes it and every rank passes it to [`NcclComm::new`].
pub fn unique_id() -> Result<[u8; 128]> {
    require_nccl("nccl unique id")?;
    let id = result::get_uniqueid().map_err(nccl_err("nccl unique id"))?;
    Ok(id.internal.map(|c| c as u8))
}

fn nccl_type(dtype: DType) -> sys::ncclDataType_t {
    use sys::ncclDataType_t as T;
    match dtype {
        DType::Bool | DType::U8 => T::ncclUint8,
        DType::I32 => T::ncclInt32,
        DType::I64 => T::ncclInt64,
        DType::F16 => T::ncclFloat16,
        DType::BF16 => T::ncclBfloat16,
        DType::F32 => T::ncclFloat32,
        DType::F64 => T::ncclFloat64,
    }
}

fn nccl_op(op: NcclOp, dtype: DType) -> sys::ncclRedOp_t {
    use sys::ncclRedOp_t as R;
    match (op, dtype == DType::Bool) {
        (NcclOp::Sum | NcclOp::Max, true) => R::ncclMax,
        (NcclOp::Prod | NcclOp::Min | NcclOp::Avg, true) => R::ncclMin,
        (NcclOp::Sum, false) => R::ncclSum,
        (NcclOp::Prod, false) => R::ncclProd,
        (NcclOp::Max, false) => R::ncclMax,
        (NcclOp::Min, false) => R::ncclMin,
        (NcclOp::Avg, false) => R::ncclAvg,
    }
}

/// One rank's NCCL communicator on one GPU.
pub struct NcclComm {
    comm: sys::ncclComm_t,
    backend: Arc<CudaBackend>,
    rank: usize,
    size: usize,
    /// NCCL calls on one communicator must not run concurrently.
    lock: Mutex<()>,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls do not overlap; every
// call takes `lock`. The handle is only destroyed in `drop`, which has exclusive access.
unsafe impl Send for NcclComm {}
// SAFETY: as above; shared access goes through `lock`.
unsafe impl Sync for NcclComm {}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: `comm` was initialised by `new` and is not used after this.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

impl NcclComm {
    /// Joins communicator `id` as `rank` of `size` on `backend`'s GPU (collective: every rank calls
    /// it with the same id).
    pub fn new(backend: Arc<CudaBackend>, rank: usize, size: usize, id: [u8; 128]) -> Result<NcclComm> {
        require_nccl("NcclComm::new")?;
        if rank >= size {
            return Err(Error::invalid("NcclComm::new", format!("rank {rank} outside a group of {size}")));
        }
        backend.bind_to_thread()?;
        let id = sys::ncclUniqueId { internal: id.map(|b| b as ::core::ffi::c_char) };
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: `comm` is written by NCCL on success (checked before assume_init); the device
        // is current on this thread.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), size as i32, id, rank as i32)
                .map_err(nccl_err("NcclComm::new"))?;
            comm.assume_init()
        };
        Ok(NcclComm { comm, backend, rank, size, lock: Mutex::new(()) })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the communicator.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The GPU's backend.
    pub fn backend(&self) -> &Arc<CudaBackend> {
        &self.backend
    }

    fn stream(&self) -> sys::cudaStream_t {
        self.backend.stream.cu_stream() as sys::cudaStream_t
    }

    /// Checks that `buf` is this GPU's, of `dtype`, with at least `count` elements.
    fn checked<'a>(&self, buf: &'a Buffer, dtype: DType, count: usize, op: &str) -> Result<&'a crate::CudaBuffer> {
        let b = self.backend.buffer(buf, op)?;
        if b.dtype != dtype || b.len < count {
            return Err(Error::invalid(op, format!("buffer of {} {} used for {count} {dtype}", b.len, b.dtype)));
        }
        Ok(b)
    }

    /// `op` over the ranks of the first `count` elements of `buf`, in place.
    pub fn all_reduce(&self, buf: &Buffer, dtype: DType, count: usize, op: NcclOp) -> Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let b = self.checked(buf, dtype, count, "nccl all_reduce")?;
        let (ptr, _sync) = b.data.device_ptr(&self.backend.stream);
        // SAFETY: `ptr` addresses at least `count` elements of `dtype` on this communicator's GPU
        // (checked), alive until the stream has run the call (`_sync` records it); in-place
        // all-reduce reads and writes the same range.
        unsafe {
            result::all_reduce(
                ptr as *const _,
                ptr as *mut _,
                count,
                nccl_type(dtype),
                nccl_op(op, dtype),
                self.comm,
                self.stream(),
            )
        }
        .map(|_| ())
        .map_err(nccl_err("nccl all_reduce"))
    }

    /// Rank `root`'s first `count` elements of `buf` into every rank's `buf`.
    pub fn broadcast(&self, buf: &Buffer, dtype: DType, count: usize, root: usize) -> Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let b = self.checked(buf, dtype, count, "nccl broadcast")?;
        let (ptr, _sync) = b.data.device_ptr(&self.backend.stream);
        // SAFETY: as in `all_reduce`; the root reads the range, the others write it.
        unsafe {
            result::broadcast(
                ptr as *const _,
                ptr as *mut _,
                count,
                nccl_type(dtype),
                root as i32,
                self.comm,
                self.stream(),
            )
        }
        .map(|_| ())
        .map_err(nccl_err("nccl broadcast"))
    }

    /// Every rank's first `count` elements of `src`, in rank order, into `dst` (`count * size`).
    pub fn all_gather(&self, src: &Buffer, dst: &Buffer, dtype: DType, count: usize) -> Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.checked(src, dtype, count, "nccl all_gather")?;
        let d = self.checked(dst, dtype, count * self.size, "nccl all_gather")?;
        let (sp, _rs) = s.data.device_ptr(&self.backend.stream);
        let (dp, _rd) = d.data.device_ptr(&self.backend.stream);
        // SAFETY: `src` holds `count` and `dst` `count * size` elements of `dtype` on this GPU
        // (checked); distinct allocations; alive until the stream has run the call.
        unsafe { result::all_gather(sp as *const _, dp as *mut _, count, nccl_type(dtype), self.comm, self.stream()) }
            .map(|_| ())
            .map_err(nccl_err("nccl all_gather"))
    }

    /// Rank `i` receives `op` over the ranks' `i`-th block of `count` elements of `src` (which
    /// holds `count * size`), in `dst`.
    pub fn reduce_scatter(&self, src: &Buffer, dst: &Buffer, dtype: DType, count: usize, op: NcclOp) -> Result<()> {
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = self.checked(src, dtype, count * self.size, "nccl reduce_scatter")?;
        let d = self.checked(dst, dtype, count, "nccl reduce_scatter")?;
        let (sp, _rs) = s.data.device_ptr(&self.backend.stream);
        let (dp, _rd) = d.data.device_ptr(&self.backend.stream);
        // SAFETY: sizes checked as documented; distinct allocations alive until the stream runs it.
        unsafe {
            result::reduce_scatter(
                sp as *const _,
                dp as *mut _,
                count,
                nccl_type(dtype),
                nccl_op(op, dtype),
                self.comm,
                self.stream(),
            )
        }
        .map(|_| ())
        .map_err(nccl_err("nccl reduce_scatter"))
    }
}
