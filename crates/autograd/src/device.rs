//! Backend lookup for the Tensor layer: the CPU backend is registered on first use.

use ember_ops_cpu::CpuBackend;
use ember_storage::{backend_for, register_backend, Backend, Device, Result};
use std::sync::{Arc, Once};

/// The backend serving `device` (registering the CPU backend the first time).
pub fn backend(device: Device) -> Result<Arc<dyn Backend>> {
    static CPU: Once = Once::new();
    CPU.call_once(|| register_backend(Device::Cpu, CpuBackend::shared()));
    backend_for(device)
}
