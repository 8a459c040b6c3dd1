//! Integer arguments of any integer type: a dim ([`Dim`]) and a list of dims or sizes ([`Dims`]).
//!
//! PyTorch takes Python ints everywhere; Rust programs hold `usize` (from `shape()`), `i64` (from
//! index tensors) and `isize` (negative dims) side by side. Every op that takes a dim, a list of
//! dims or a shape accepts any of them, so a port needs no `as isize` casts:
//!
//! ```
//! use ember_autograd::Tensor;
//! let x = Tensor::zeros(&[2, 3, 4]).unwrap();
//! let [b, t, c] = x.dims3().unwrap(); // usize
//! let y = x.view(&[b, t * c]).unwrap(); // usize sizes
//! let z = y.view(&[-1, 4]).unwrap(); // i32 literals, -1 inferred
//! assert_eq!(z.sum_dim(1, false).unwrap().shape(), &[6]); // one dim, no slice needed
//! assert_eq!(x.sum_dim(&[-1, 0], true).unwrap().shape(), &[1, 3, 1]);
//! ```
//!
//! Negative values count from the end where PyTorch allows it (dims, `-1` in a shape); a negative
//! size where only sizes make sense (`zeros`) is an error naming the op.

use ember_storage::{Error, Result};
use smallvec::SmallVec;

/// One dim (or one signed integer argument) of any integer type; negative counts from the end.
pub trait Dim: Copy {
    /// The value as `isize` (values beyond `isize` saturate, so they fail the op's range check).
    fn to_isize(self) -> isize;
}

/// Several dims or sizes: a slice, array, `Vec` (or a reference to one) of any integer type, or a
/// single integer (`sum_dim(1, false)` is `sum_dim(&[1], false)`).
pub trait Dims {
    /// The values as `isize`.
    fn to_isizes(&self) -> SmallVec<[isize; 6]>;

    /// The values as sizes; a negative one is an error naming `op`.
    fn to_sizes(&self, op: &str) -> Result<SmallVec<[usize; 6]>> {
        let v = self.to_isizes();
        v.iter()
            .map(|&x| usize::try_from(x).map_err(|_| Error::invalid(op, format!("negative size {x} in shape {v:?}"))))
            .collect()
    }
}

macro_rules! int_args {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            #[inline]
            fn to_isize(self) -> isize {
                isize::try_from(self).unwrap_or(isize::MAX)
            }
        }
        impl Dims for $t {
            fn to_isizes(&self) -> SmallVec<[isize; 6]> {
                smallvec::smallvec![self.to_isize()]
            }
        }
        impl Dims for [$t] {
            fn to_isizes(&self) -> SmallVec<[isize; 6]> {
                self.iter().map(|&x| x.to_isize()).collect()
            }
        }
        impl<const N: usize> Dims for [$t; N] {
            fn to_isizes(&self) -> SmallVec<[isize; 6]> {
                self.iter().map(|&x| x.to_isize()).collect()
            }
        }
        impl Dims for Vec<$t> {
            fn to_isizes(&self) -> SmallVec<[isize; 6]> {
                self.iter().map(|&x| x.to_isize()).collect()
            }
        }
    )*};
}
int_args!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

impl<T: Dims + ?Sized> Dims for &T {
    fn to_isizes(&self) -> SmallVec<[isize; 6]> {
        (**self).to_isizes()
    }
}

impl Dims for SmallVec<[isize; 6]> {
    fn to_isizes(&self) -> SmallVec<[isize; 6]> {
        self.clone()
    }
}

impl Dims for SmallVec<[usize; 6]> {
    fn to_isizes(&self) -> SmallVec<[isize; 6]> {
        self.iter().map(|&x| x.to_isize()).collect()
    }
}

/// Tensors passed by value or by reference (`Tensor::cat(&[a, b])` or `Tensor::cat(&[&a, &b])`).
pub trait AsTensor {
    /// The tensor.
    fn as_tensor(&self) -> &crate::Tensor;
}

impl AsTensor for crate::Tensor {
    fn as_tensor(&self) -> &crate::Tensor {
        self
    }
}

impl AsTensor for &crate::Tensor {
    fn as_tensor(&self) -> &crate::Tensor {
        self
    }
}

/// The shape of a 0-dim tensor, and the empty list of dims (`x.reshape(SCALAR)`): a bare `&[]` has
/// no element type for [`Dims`] to go by.
pub const SCALAR: &[usize] = &[];
