//! Operand access shared by the fused kernels' entry points (batch norm, LSTM cell, convolution):
//! the floating dtypes they cover, typed slices of host data, dense copies of views.

use crate::buffer::CpuBuffer;
use crate::host::checked;
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

/// A dense operand: the view's own elements when it is contiguous (its buffer's read lock held),
/// else a dense copy.
pub(crate) enum Dense<'a, T> {
    Borrowed(std::sync::RwLockReadGuard<'a, HostData>, std::ops::Range<usize>),
    Copied(Vec<T>),
}

impl<T: HostElement> std::ops::Deref for Dense<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            // the dtype was checked when the operand was made (see `dense_operands`)
            Dense::Borrowed(data, range) => T::slice(data).map_or(&[], |s| &s[range.clone()]),
            Dense::Copied(v) => v,
        }
    }
}

impl<T: Send + 'static> Dense<'_, T> {
    /// Returns a copy's storage to the buffer pool.
    pub(crate) fn recycle(self) {
        if let Dense::Copied(v) = self {
            crate::pool::give(v);
        }
    }
}

/// The views as dense operands of one dtype `T`: contiguous views whose buffer no other operand
/// shares are read in place (a read lock each, never two on one buffer), the rest are copied.
/// Saves fused kernels a copy of their large operands.
pub(crate) fn dense_operands<'a, T, const N: usize>(op: &str, views: [View<'a>; N]) -> Result<[Dense<'a, T>; N]>
where
    T: HostElement + Copy + Send + Sync + Default + 'static,
{
    let bufs: Vec<&CpuBuffer> = views.iter().map(|&v| checked(v, op)).collect::<Result<_>>()?;
    let shared = |i: usize| (0..N).any(|j| j != i && std::ptr::eq(bufs[i], bufs[j]));
    let mut out = Vec::with_capacity(N);
    for (i, v) in views.into_iter().enumerate() {
        if v.1.is_contiguous() && !shared(i) {
            let data = bufs[i].read();
            typed::<T>(op, &data)?;
            let start = v.1.offset();
            out.push(Dense::Borrowed(data, start..start + v.1.numel()));
        } else {
            out.push(Dense::Copied(dense_copy::<T>(op, v)?));
        }
    }
    Ok(out.try_into().unwrap_or_else(|_| unreachable!("one operand per view")))
}
