//! Operand access shared by the fused kernels' entry points (batch norm, LSTM cell, convolution):
//! the floating dtypes they cover, typed slices of host data, dense copies of views.

use crate::checked;
use crate::strided::gather;
use ember_storage::{DType, Error, HostData, HostElement, Result, View};

/// The view's dtype when a fused kernel covers it (f32, f64); otherwise "not supported", so the
/// caller composes the op instead.
pub(crate) fn float_dtype(op: &str, v: View) -> Result<DType> {
    match v.0.dtype() {
        d @ (DType::F32 | DType::F64) => Ok(d),
        d => Err(Error::unsupported(op, format!("fused kernel for {d}"))),
    }
}

/// The elements of `d` as `T`, or a dtype error naming `op`.
pub(crate) fn typed<'a, T: HostElement>(op: &str, d: &'a HostData) -> Result<&'a [T]> {
    T::slice(d).ok_or_else(|| Error::dtype(op, format!("operands should share one dtype, got {}", d.dtype())))
}

/// A dense (pooled) copy of a view's elements, taking its buffer's lock alone, so several
/// operands may share one buffer.
pub(crate) fn dense_copy<T: HostElement + Copy + Send + Sync + Default + 'static>(op: &str, v: View) -> Result<Vec<T>> {
    let b = checked(v, op)?;
    let data = b.read();
    Ok(gather(typed::<T>(op, &data)?, v.1, |t| t))
}
