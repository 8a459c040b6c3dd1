//! Distributed data-parallel training for Ember on the engines clusters already run: MPI for CPU
//! processes, NCCL for GPUs (PyTorch's `torch.distributed` and `DistributedDataParallel`).
//!
//! - [`ProcessGroup`]: the collectives (`all_reduce`, `broadcast`, `all_gather`, `reduce_scatter`,
//!   `barrier`) on tensors, asynchronous ([`Work`]), object safe. Implementations: `MpiGroup`
//!   (cargo feature `mpi`), `NcclGroup` (CUDA tensors, feature `nccl`), and [`WorldOfOne`] (one
//!   process, no launcher).
//! - [`init_process_group`]: PyTorch's entry point, by engine name.
//!
//! MPI is a cargo feature because rsmpi links the system's MPI library at build time: a machine
//! without MPI builds and tests everything else. Install with
//! `apt-get install libopenmpi-dev openmpi-bin libclang-dev` (rsmpi's build generates bindings
//! with libclang), build with `--features mpi`, launch with `mpirun -n 2 <program>`.

mod ddp;
mod group;
// shared by the engines; without one built, only its unit tests use it
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
mod host;
#[cfg(feature = "mpi")]
mod mpi_group;
#[cfg(feature = "nccl")]
mod nccl_group;
mod sync_bn;
mod work;

pub use ddp::{DdpOptions, DistributedDataParallel};
pub use group::{ProcessGroup, ReduceOp, WorldOfOne};
#[cfg(feature = "mpi")]
pub use mpi_group::{timeout_from_env, MpiGroup, DEFAULT_TIMEOUT};
#[cfg(feature = "nccl")]
pub use nccl_group::NcclGroup;
pub use sync_bn::SyncBatchNorm;
pub use work::Work;

use ember_autograd::{Error, Result};
use std::sync::Arc;

/// Whether this build has the MPI engine (cargo feature `mpi`).
pub const HAS_MPI: bool = cfg!(feature = "mpi");

/// Whether this build has the NCCL engine (cargo feature `nccl`, on with the facade's `cuda`).
pub const HAS_NCCL: bool = cfg!(feature = "nccl");

/// PyTorch's `init_process_group(backend)`: `"mpi"` joins the processes the launcher started
/// (`mpirun`, `srun`); `"local"` is a world of one. An engine this build lacks is a clear error.
pub fn init_process_group(engine: &str) -> Result<Arc<dyn ProcessGroup>> {
    match engine {
        "local" => Ok(Arc::new(WorldOfOne)),
        #[cfg(feature = "mpi")]
        "mpi" => Ok(Arc::new(MpiGroup::init()?)),
        #[cfg(not(feature = "mpi"))]
        "mpi" => Err(Error::unsupported(
            "init_process_group",
            "this build has no MPI support: install MPI (apt-get install libopenmpi-dev openmpi-bin libclang-dev) and build with --features mpi",
        )),
        other => Err(Error::invalid(
            "init_process_group",
            format!("unknown engine {other:?}; expected \"mpi\" or \"local\" (NCCL is not built yet)"),
        )),
    }
}
