//! `CpuBuffer`: host memory behind a lock, so that in-place ops on one view are seen by every other view.

use ember_storage::{Buffer, DType, Device, DeviceBuffer, Error, HostData, Result};
use std::any::Any;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A buffer of the CPU backend: a typed vector in host memory.
#[derive(Debug)]
pub struct CpuBuffer {
    dtype: DType,
    len: usize,
    data: RwLock<HostData>,
}

impl CpuBuffer {
    /// Wraps host data without copying.
    pub fn new(data: HostData) -> Self {
        CpuBuffer { dtype: data.dtype(), len: data.len(), data: RwLock::new(data) }
    }

    /// A shared buffer handle.
    pub fn into_buffer(self) -> Buffer {
        Arc::new(self)
    }

    /// Reads the elements (other readers may read at the same time).
    pub fn read(&self) -> RwLockReadGuard<'_, HostData> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the elements for an in-place update.
    pub fn write(&self) -> RwLockWriteGuard<'_, HostData> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The CPU buffer behind a `Buffer`, or an error naming the op when it belongs to another backend.
    pub fn of<'a>(buf: &'a Buffer, op: &str) -> Result<&'a CpuBuffer> {
        buf.as_any()
            .downcast_ref::<CpuBuffer>()
            .ok_or_else(|| Error::device(op, format!("the CPU backend was given a buffer on {}", buf.device())))
    }
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        let data =
            std::mem::replace(self.data.get_mut().unwrap_or_else(|e| e.into_inner()), HostData::Bool(Vec::new()));
        ember_storage::with_host_data!(data, v => crate::pool::give(v));
    }
}

impl DeviceBuffer for CpuBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
