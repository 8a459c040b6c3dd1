//! Opaque, backend-owned buffers and `HostData`, the typed host-side vectors that cross into and out of them.

use crate::{DType, Device, Element, Error, Result};
use half::{bf16, f16};
use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

/// Memory owned by a backend: host memory, a device pointer, a remote handle ...
///
/// Ember's upper layers never look inside; a backend downcasts its own buffers with [`DeviceBuffer::as_any`].
/// Buffers are shared by every view of a tensor, so a backend that supports in-place ops gives them
/// interior mutability.
pub trait DeviceBuffer: Any + Send + Sync + Debug {
    /// The element type.
    fn dtype(&self) -> DType;
    /// Number of elements.
    fn len(&self) -> usize;
    /// True when the buffer holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Where the memory lives.
    fn device(&self) -> Device;
    /// For the owning backend to downcast.
    fn as_any(&self) -> &dyn Any;
}

/// A shared handle to a backend buffer.
pub type Buffer = Arc<dyn DeviceBuffer>;

/// A typed vector in host memory, the currency of `Backend::upload` / `Backend::download`.
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// bool elements.
    Bool(Vec<bool>),
    /// u8 elements.
    U8(Vec<u8>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f32 elements.
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of a `HostData`, whatever its type.
#[macro_export]
macro_rules! with_host_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::HostData::Bool($v) => $body,
            $crate::HostData::U8($v) => $body,
            $crate::HostData::I32($v) => $body,
            $crate::HostData::I64($v) => $body,
            $crate::HostData::F16($v) => $body,
            $crate::HostData::BF16($v) => $body,
            $crate::HostData::F32($v) => $body,
            $crate::HostData::F64($v) => $body,
        }
    };
}

impl HostData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::Bool(_) => DType::Bool,
            HostData::U8(_) => DType::U8,
            HostData::I32(_) => DType::I32,
            HostData::I64(_) => DType::I64,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::F32(_) => DType::F32,
            HostData::F64(_) => DType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_host_data!(self, v => v.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A vector of `n` copies of `value` (converted from f64) of the given dtype.
    pub fn filled(dtype: DType, n: usize, value: f64) -> HostData {
        match dtype {
            DType::Bool => HostData::Bool(vec![value != 0.0; n]),
            DType::U8 => HostData::U8(vec![value as u8; n]),
            DType::I32 => HostData::I32(vec![value as i32; n]),
            DType::I64 => HostData::I64(vec![value as i64; n]),
            DType::F16 => HostData::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => HostData::BF16(vec![bf16::from_f64(value); n]),
            DType::F32 => HostData::F32(vec![value as f32; n]),
            DType::F64 => HostData::F64(vec![value; n]),
        }
    }

    /// Converts every element through f64 into `dtype` (exact for i64 within 2^53).
    pub fn from_f64s(dtype: DType, vals: &[f64]) -> HostData {
        match dtype {
            DType::Bool => HostData::Bool(vals.iter().map(|&x| x != 0.0).collect()),
            DType::U8 => HostData::U8(vals.iter().map(|&x| x as u8).collect()),
            DType::I32 => HostData::I32(vals.iter().map(|&x| x as i32).collect()),
            DType::I64 => HostData::I64(vals.iter().map(|&x| x as i64).collect()),
            DType::F16 => HostData::F16(vals.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => HostData::BF16(vals.iter().map(|&x| bf16::from_f64(x)).collect()),
            DType::F32 => HostData::F32(vals.iter().map(|&x| x as f32).collect()),
            DType::F64 => HostData::F64(vals.to_vec()),
        }
    }

    /// Every element as f64.
    pub fn to_f64s(&self) -> Vec<f64> {
        with_host_data!(self, v => v.iter().map(|x| Element::to_f64(*x)).collect())
    }

    /// Every element as i64 (floats truncate).
    pub fn to_i64s(&self) -> Vec<i64> {
        with_host_data!(self, v => v.iter().map(|x| Element::to_i64(*x)).collect())
    }

    /// Wraps a typed vector.
    pub fn from_vec<T: HostElement>(v: Vec<T>) -> HostData {
        T::wrap(v)
    }

    /// The typed vector, if the dtype is `T`'s.
    pub fn into_vec<T: HostElement>(self) -> Result<Vec<T>> {
        let d = self.dtype();
        T::unwrap(self).ok_or_else(|| Error::dtype("to_vec", format!("tensor has dtype {d}, asked for {}", T::DTYPE)))
    }

    /// Little-endian bytes of the elements (bool as one byte 0/1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            HostData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            HostData::U8(v) => v.clone(),
            HostData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::BF16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            HostData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Parses little-endian bytes; rejects a length that is not a multiple of the element size and
    /// bool bytes other than 0 and 1.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8], what: &str) -> Result<HostData> {
        let sz = dtype.size_in_bytes();
        if !bytes.len().is_multiple_of(sz) {
            return Err(Error::format(
                what,
                format!("{} bytes is not a whole number of {dtype} elements", bytes.len()),
            ));
        }
        fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N).map(|c| f(c.try_into().expect("chunk size"))).collect()
        }
        Ok(match dtype {
            DType::Bool => {
                if let Some(bad) = bytes.iter().find(|&&b| b > 1) {
                    return Err(Error::format(what, format!("bool element has byte value {bad} (expected 0 or 1)")));
                }
                HostData::Bool(bytes.iter().map(|&b| b == 1).collect())
            }
            DType::U8 => HostData::U8(bytes.to_vec()),
            DType::I32 => HostData::I32(chunks(bytes, i32::from_le_bytes)),
            DType::I64 => HostData::I64(chunks(bytes, i64::from_le_bytes)),
            DType::F16 => HostData::F16(chunks(bytes, f16::from_le_bytes)),
            DType::BF16 => HostData::BF16(chunks(bytes, bf16::from_le_bytes)),
            DType::F32 => HostData::F32(chunks(bytes, f32::from_le_bytes)),
            DType::F64 => HostData::F64(chunks(bytes, f64::from_le_bytes)),
        })
    }
}

/// An [`Element`] that has a `HostData` variant.
pub trait HostElement: Element {
    /// Puts a vector into its variant.
    fn wrap(v: Vec<Self>) -> HostData;
    /// Takes the vector out if the variant matches.
    fn unwrap(d: HostData) -> Option<Vec<Self>>;
    /// Borrows the vector if the variant matches.
    fn slice(d: &HostData) -> Option<&[Self]>;
    /// Borrows the vector mutably if the variant matches.
    fn slice_mut(d: &mut HostData) -> Option<&mut [Self]>;
}

macro_rules! impl_host_element {
    ($t:ty, $v:ident) => {
        impl HostElement for $t {
            fn wrap(v: Vec<Self>) -> HostData {
                HostData::$v(v)
            }
            fn unwrap(d: HostData) -> Option<Vec<Self>> {
                match d {
                    HostData::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice(d: &HostData) -> Option<&[Self]> {
                match d {
                    HostData::$v(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut HostData) -> Option<&mut [Self]> {
                match d {
                    HostData::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_host_element!(bool, Bool);
impl_host_element!(u8, U8);
impl_host_element!(i32, I32);
impl_host_element!(i64, I64);
impl_host_element!(f16, F16);
impl_host_element!(bf16, BF16);
impl_host_element!(f32, F32);
impl_host_element!(f64, F64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_reject_bad_input() {
        let d = HostData::F32(vec![1.0, -2.5]);
        assert_eq!(HostData::from_le_bytes(DType::F32, &d.to_le_bytes(), "t").unwrap(), d);
        assert!(HostData::from_le_bytes(DType::F32, &[0, 0, 0], "t").is_err());
        assert!(HostData::from_le_bytes(DType::Bool, &[0, 2], "t").is_err());
    }
}
