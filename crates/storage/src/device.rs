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

/// The name of the lazy device over the CPU (`lazy:0`).
const LAZY_CPU: &str = "lazy";
/// The name of the lazy devices over CUDA devices (`lazy-cuda:N`).
const LAZY_CUDA: &str = "lazy-cuda";

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, `lazy` (= `lazy:0`, lazy over the CPU), `lazy-cuda`,
    /// `lazy-cuda:N`.
    pub fn parse(s: &str) -> Result<Device> {
        let unknown = || {
            Error::invalid("device", format!("unknown device {s:?} (expected cpu, cuda, cuda:N, lazy or lazy-cuda:N)"))
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            "lazy" | "lazy:0" => Ok(Device::Cpu.lazy()),
            "lazy-cuda" => Ok(Device::Cuda(0).lazy()),
            _ => {
                if let Some(n) = s.strip_prefix("lazy-cuda:") {
                    return n.parse().map(|i| Device::Cuda(i).lazy()).map_err(|_| unknown());
                }
                s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(unknown)
            }
        }
    }

    /// The lazy device over this one (DESIGN.md decision 13, crate `ember-lazy`): ops on its
    /// tensors are recorded and run as fused groups when a value is needed. `cpu` gives `lazy:0`,
    /// `cuda:N` gives `lazy-cuda:N`; a lazy device is its own lazy device.
    ///
    /// ```
    /// use ember_storage::Device;
    /// let d = Device::Cpu.lazy();
    /// assert!(d.is_lazy());
    /// assert_eq!(d.to_string(), "lazy:0");
    /// assert_eq!(d.eager(), Device::Cpu);
    /// ```
    pub fn lazy(self) -> Device {
        match self {
            Device::Cpu => Device::Custom(LAZY_CPU, 0),
            Device::Cuda(i) => Device::Custom(LAZY_CUDA, i),
            other => other,
        }
    }

    /// Whether this is a lazy device.
    pub fn is_lazy(self) -> bool {
        matches!(self, Device::Custom(LAZY_CPU | LAZY_CUDA, _))
    }

    /// The device a lazy device computes on (itself for an eager device).
    pub fn eager(self) -> Device {
        match self {
            Device::Custom(LAZY_CPU, _) => Device::Cpu,
            Device::Custom(LAZY_CUDA, i) => Device::Cuda(i),
            other => other,
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
