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
            _ => Err(e),
        },
    }
}

#[cfg(feature = "cuda")]
fn register_cuda(ordinal: usize) -> Result<Arc<dyn Backend>> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(b) = backend_for(Device::Cuda(ordinal)) {
        return Ok(b);
    }
    let b: Arc<dyn Backend> = Arc::new(ember_ops_cuda::CudaBackend::new(ordinal)?);
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
