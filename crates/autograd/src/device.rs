//! Backend lookup for the Tensor layer: the CPU backend is registered on first use, and with the
//! `cuda` feature each CUDA device's backend on its first use.

use ember_ops_cpu::CpuBackend;
use ember_storage::{backend_for, register_backend, Backend, Device, Result};
use std::sync::{Arc, Once};

/// The backend serving `device` (registering the CPU backend the first time, and a CUDA device's
/// when it is first asked for).
pub fn backend(device: Device) -> Result<Arc<dyn Backend>> {
    static CPU: Once = Once::new();
    CPU.call_once(|| register_backend(Device::Cpu, CpuBackend::shared()));
    match backend_for(device) {
        Ok(b) => Ok(b),
        Err(e) => match device {
            Device::Cuda(i) => register_cuda(i),
            d if d.is_lazy() => register_lazy(d),
            _ => Err(e),
        },
    }
}

/// Registers the lazy backend of a lazy device over its eager device's backend (ember-lazy).
fn register_lazy(device: Device) -> Result<Arc<dyn Backend>> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(b) = backend_for(device) {
        return Ok(b);
    }
    let b: Arc<dyn Backend> = Arc::new(ember_lazy::LazyBackend::new(backend(device.eager())?));
    register_backend(device, b.clone());
    Ok(b)
}

#[cfg(feature = "cuda")]
fn register_cuda(ordinal: usize) -> Result<Arc<dyn Backend>> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(b) = backend_for(Device::Cuda(ordinal)) {
        return Ok(b);
    }
    let typed = Arc::new(ember_ops_cuda::CudaBackend::new(ordinal)?);
    cuda::REGISTERED.lock().unwrap_or_else(|e| e.into_inner()).push(typed.clone());
    let b: Arc<dyn Backend> = typed;
    register_backend(Device::Cuda(ordinal), b.clone());
    Ok(b)
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(ordinal: usize) -> Result<Arc<dyn Backend>> {
    Err(ember_storage::Error::device(
        "to",
        format!(
            "cuda:{ordinal}: Ember was built without CUDA support (enable the `cuda` feature of the `ember` crate)"
        ),
    ))
}

/// CUDA queries: whether a device can be used, how many there are.
pub mod cuda {
    /// The number of usable CUDA devices (0 without the `cuda` feature, a driver or a GPU).
    pub fn device_count() -> usize {
        #[cfg(feature = "cuda")]
        {
            ember_ops_cuda::device_count()
        }
        #[cfg(not(feature = "cuda"))]
        {
            0
        }
    }

    /// Whether at least one CUDA device can be used (`torch.cuda.is_available()`).
    pub fn is_available() -> bool {
        device_count() > 0
    }

    /// GPU `ordinal`'s backend, created on first use (for crates that call CUDA libraries on
    /// Ember's buffers, such as NCCL).
    #[cfg(feature = "cuda")]
    pub fn backend_of(ordinal: usize) -> ember_storage::Result<std::sync::Arc<ember_ops_cuda::CudaBackend>> {
        super::backend(ember_storage::Device::Cuda(ordinal))?;
        let all = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().find(|b| b.ordinal() == ordinal).cloned().ok_or_else(|| {
            ember_storage::Error::device("cuda", format!("cuda:{ordinal} is registered by another backend"))
        })
    }

    /// The CUDA backends created so far (a device's on its first use).
    #[cfg(feature = "cuda")]
    pub(super) static REGISTERED: std::sync::Mutex<Vec<std::sync::Arc<ember_ops_cuda::CudaBackend>>> =
        std::sync::Mutex::new(Vec::new());

    /// Evaluates `$body` with `$b` bound to GPU `$device`'s backend when it has been used, else
    /// `$default` (always `$default` without the `cuda` feature).
    macro_rules! on_device {
        ($device:expr, $default:expr, |$b:ident| $body:expr) => {{
            #[cfg(feature = "cuda")]
            {
                use ember_storage::Backend as _;
                let all = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
                match all.iter().find(|b| b.device() == ember_storage::Device::Cuda($device)) {
                    Some($b) => $body,
                    None => $default,
                }
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = $device;
                $default
            }
        }};
    }

    /// Bytes held by tensors on GPU `device` (`torch.cuda.memory_allocated`); 0 for a device not
    /// used yet (or without the `cuda` feature).
    pub fn memory_allocated(device: usize) -> usize {
        on_device!(device, 0, |b| b.memory_allocated())
    }

    /// The most bytes held at once on GPU `device` since the start or the last reset
    /// (`torch.cuda.max_memory_allocated`).
    pub fn max_memory_allocated(device: usize) -> usize {
        on_device!(device, 0, |b| b.max_memory_allocated())
    }

    /// Restarts peak tracking on GPU `device` (`torch.cuda.reset_peak_memory_stats`).
    pub fn reset_peak_memory_stats(device: usize) {
        on_device!(device, (), |b| b.reset_peak_memory_stats())
    }

    /// Bytes GPU `device`'s memory pool has reserved: live tensors plus cached free blocks
    /// (`torch.cuda.memory_reserved`).
    pub fn memory_reserved(device: usize) -> ember_storage::Result<usize> {
        on_device!(device, Ok(0), |b| b.memory_reserved())
    }

    /// Lets f32 matrix products on GPUs use TF32 tensor cores (off by default, as PyTorch's
    /// `torch.backends.cuda.matmul.allow_tf32`); without the `cuda` feature it does nothing.
    pub fn set_allow_tf32(allow: bool) {
        #[cfg(feature = "cuda")]
        ember_ops_cuda::set_allow_tf32(allow);
        #[cfg(not(feature = "cuda"))]
        let _ = allow;
    }

    /// Waits for the ops queued on GPU `device` (`torch.cuda.synchronize`); nothing to wait for on
    /// a device not used yet.
    pub fn synchronize(device: usize) -> ember_storage::Result<()> {
        on_device!(device, Ok(()), |b| b.synchronize())
    }

    /// Returns the cached free blocks of every GPU used so far to the driver (`torch.cuda.empty_cache`).
    pub fn empty_cache() -> ember_storage::Result<()> {
        #[cfg(feature = "cuda")]
        for b in REGISTERED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            b.empty_cache()?;
        }
        Ok(())
    }
}

/// `Device::cuda_if_available()`: the first GPU when one can be used, else the CPU.
pub trait CudaDeviceExt {
    /// `Device::Cuda(0)` when [`cuda::is_available`], else `Device::Cpu`.
    fn cuda_if_available() -> Device;
}

impl CudaDeviceExt for Device {
    fn cuda_if_available() -> Device {
        if cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_cuda_is_a_clear_error_and_the_cpu_is_chosen() {
        if cuda::is_available() {
            assert!(backend(Device::Cuda(0)).is_ok());
            return;
        }
        assert_eq!(Device::cuda_if_available(), Device::Cpu);
        let e = backend(Device::Cuda(0)).unwrap_err().to_string();
        assert!(e.contains("cuda"), "{e}");
        assert!(
            e.contains("CUDA driver not found") || e.contains("without CUDA support") || e.contains("devices"),
            "{e}"
        );
    }
}
