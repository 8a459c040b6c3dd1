//! `Device` and the process-wide registry that maps each device to its `Arc<dyn Backend>`.

use crate::{Backend, Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// Where a tensor's memory lives.
///
/// ```
/// use ember_storage::Device;
/// assert_eq!(Device::parse("cuda:1").unwrap(), Device::Cuda(1));
/// assert_eq!(Device::Cpu.to_string(), "cpu");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// Host memory, computed by the CPU backend.
    Cpu,
    /// An NVIDIA GPU by ordinal.
    Cuda(usize),
    /// A third-party backend: its name and ordinal.
    Custom(&'static str, usize),
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`.
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(|| {
                Error::invalid("device", format!("unknown device {s:?} (expected cpu, cuda or cuda:N)"))
            }),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
            Device::Custom(name, i) => write!(f, "{name}:{i}"),
        }
    }
}

type Registry = RwLock<HashMap<Device, Arc<dyn Backend>>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| RwLock::new(HashMap::new()))
}

/// Registers (or replaces) the backend that serves `device`.
pub fn register_backend(device: Device, backend: Arc<dyn Backend>) {
    registry().write().unwrap_or_else(|e| e.into_inner()).insert(device, backend);
}

/// The backend registered for `device`, or a clear error naming the device.
pub fn backend_for(device: Device) -> Result<Arc<dyn Backend>> {
    registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&device)
        .cloned()
        .ok_or_else(|| Error::device("to", format!("no backend is registered for device {device}")))
}

/// Every device with a registered backend.
pub fn registered_devices() -> Vec<Device> {
    registry().read().unwrap_or_else(|e| e.into_inner()).keys().copied().collect()
}
