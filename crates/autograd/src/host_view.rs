//! Zero-copy access to the host memory of CPU tensors: plain slices, and `ndarray` views behind the
//! `ndarray` feature (the Rust side of PyTorch's NumPy bridge).

use crate::Tensor;
use ember_ops_cpu::CpuBuffer;
use ember_storage::{Error, HostElement, Result};

impl Tensor {
    /// Calls `f` with the tensor's elements as a slice, without copying, when the tensor is a dense
    /// CPU tensor of dtype `T` (the storage is read-locked for the duration of `f`).
    ///
    /// ```
    /// let t = ember_autograd::Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
    /// let total = t.with_slice(|s: &[f32]| s.iter().sum::<f32>()).unwrap();
    /// assert_eq!(total, 6.0);
    /// ```
    pub fn with_slice<T: HostElement, R>(&self, f: impl FnOnce(&[T]) -> R) -> Result<R> {
        let buf = CpuBuffer::of(&self.0.storage.buffer, "with_slice")?;
        let (start, end) = self.layout().contiguous_range().ok_or_else(|| {
            Error::invalid(
                "with_slice",
                format!("tensor with strides {:?} is not contiguous; call contiguous() first", self.strides()),
            )
        })?;
        let guard = buf.read();
        let all = T::slice(&guard).ok_or_else(|| {
            Error::dtype("with_slice", format!("tensor has dtype {}, asked for {}", self.dtype(), T::DTYPE))
        })?;
        Ok(f(&all[start..end]))
    }

    /// Calls `f` with the elements as a mutable slice (dense CPU tensors of dtype `T`), writing
    /// through to every view and bumping the version counter, like an in-place op. The storage is
    /// write-locked for the duration of `f`: do not touch this tensor's storage from inside `f`.
    /// Refused on a tensor that requires grad while grad mode is on (use `no_grad`).
    ///
    /// ```
    /// let t = ember_autograd::Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    /// t.with_slice_mut(|s: &mut [f32]| s[0] = 5.0).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), [5.0, 2.0]);
    /// ```
    pub fn with_slice_mut<T: HostElement, R>(&self, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        if self.requires_grad() && crate::is_grad_enabled() {
            return Err(Error::autograd(
                "with_slice_mut: a leaf tensor that requires grad is being written in place; wrap the write in no_grad",
            ));
        }
        let buf = CpuBuffer::of(&self.0.storage.buffer, "with_slice_mut")?;
        let (start, end) = self.layout().contiguous_range().ok_or_else(|| {
            Error::invalid(
                "with_slice_mut",
                format!("tensor with strides {:?} is not contiguous; call contiguous() first", self.strides()),
            )
        })?;
        let mut guard = buf.write();
        let dtype = self.dtype();
        let all = T::slice_mut(&mut guard).ok_or_else(|| {
            Error::dtype("with_slice_mut", format!("tensor has dtype {dtype}, asked for {}", T::DTYPE))
        })?;
        let r = f(&mut all[start..end]);
        drop(guard);
        self.bump_version();
        Ok(r)
    }
}

#[cfg(feature = "ndarray")]
mod nd {
    use super::*;
    use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

    impl Tensor {
        /// Takes ownership of an `ndarray` array; no copy when it is in standard (row-major) layout.
        pub fn from_ndarray<T: HostElement>(a: ArrayD<T>) -> Result<Tensor> {
            let shape = a.shape().to_vec();
            let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
            let (v, offset) = a.into_raw_vec_and_offset();
            if offset.unwrap_or(0) != 0 {
                return Err(Error::invalid("from_ndarray", "array data does not start at its allocation"));
            }
            Tensor::from_vec(v, &shape)
        }

        /// Calls `f` with an `ndarray` view of the tensor over its own strides (any view: transposed,
        /// sliced, broadcast), without copying. CPU tensors of dtype `T` only.
        pub fn with_ndarray<T: HostElement, R>(&self, f: impl FnOnce(ArrayViewD<'_, T>) -> R) -> Result<R> {
            let buf = CpuBuffer::of(&self.0.storage.buffer, "with_ndarray")?;
            let guard = buf.read();
            let all = T::slice(&guard).ok_or_else(|| {
                Error::dtype("with_ndarray", format!("tensor has dtype {}, asked for {}", self.dtype(), T::DTYPE))
            })?;
            let l = self.layout();
            l.check_fits(all.len(), "with_ndarray")?;
            let data = &all[l.offset()..];
            let shape = IxDyn(l.shape()).strides(IxDyn(l.strides()));
            let view =
                ArrayViewD::from_shape(shape, data).map_err(|e| Error::invalid("with_ndarray", e.to_string()))?;
            Ok(f(view))
        }

        /// A copy as an owned `ndarray` array.
        pub fn to_ndarray<T: HostElement>(&self) -> Result<ArrayD<T>> {
            let v = self.to_vec::<T>()?;
            ArrayD::from_shape_vec(IxDyn(self.shape()), v).map_err(|e| Error::invalid("to_ndarray", e.to_string()))
        }
    }

    #[cfg(test)]
    mod tests {
        use crate::Tensor;

        #[test]
        fn ndarray_round_trip_and_strided_views() {
            let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0])
                .unwrap();
            let t = Tensor::from_ndarray(a.clone()).unwrap();
            assert_eq!(t.shape(), &[2, 3]);
            let tt = t.t().unwrap();
            let sum_col0 = tt.with_ndarray(|v: ndarray::ArrayViewD<f64>| {
                assert_eq!(v.shape(), &[3, 2]);
                v[[0, 1]]
            });
            assert_eq!(sum_col0.unwrap(), 4.0);
            assert_eq!(t.to_ndarray::<f64>().unwrap(), a);
            let fortran = a.t().to_owned();
            assert_eq!(
                Tensor::from_ndarray(fortran).unwrap().to_vec::<f64>().unwrap(),
                vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
            );
        }
    }
}
