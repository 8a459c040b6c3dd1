//! Element types (`DType`), PyTorch's type promotion, and the `Element` trait tying Rust types to dtypes.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor.
///
/// ```
/// use ember_storage::DType;
/// assert_eq!(DType::promote(DType::I64, DType::F32), DType::F32);
/// assert_eq!(DType::promote(DType::F16, DType::BF16), DType::F32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// Boolean, stored one byte per element (0 or 1).
    Bool,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer (PyTorch's `long`, used for indices).
    I64,
    /// IEEE half precision.
    F16,
    /// Brain floating point.
    BF16,
    /// Single precision (the default floating dtype).
    F32,
    /// Double precision.
    F64,
}

/// The three kinds PyTorch's promotion distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DTypeKind {
    /// `bool`.
    Bool,
    /// Integral types.
    Int,
    /// Floating types.
    Float,
}

impl DType {
    /// Every dtype, for sweeps in tests.
    pub const ALL: [DType; 8] =
        [DType::Bool, DType::U8, DType::I32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 => 1,
            DType::F16 | DType::BF16 => 2,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    /// Bool, integer or floating.
    pub fn kind(self) -> DTypeKind {
        match self {
            DType::Bool => DTypeKind::Bool,
            DType::U8 | DType::I32 | DType::I64 => DTypeKind::Int,
            _ => DTypeKind::Float,
        }
    }

    /// True for f16, bf16, f32 and f64.
    pub fn is_float(self) -> bool {
        self.kind() == DTypeKind::Float
    }

    /// True for u8, i32 and i64.
    pub fn is_int(self) -> bool {
        self.kind() == DTypeKind::Int
    }

    /// The short name used in files and messages (`f32`, `i64`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Parses a short name (`f32`) or a PyTorch/safetensors name (`float32`, `F32`, `long`).
    pub fn from_name(name: &str) -> Option<DType> {
        Some(match name.to_ascii_lowercase().as_str() {
            "bool" => DType::Bool,
            "u8" | "uint8" => DType::U8,
            "i32" | "int32" | "int" => DType::I32,
            "i64" | "int64" | "long" => DType::I64,
            "f16" | "float16" | "half" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            "f32" | "float32" | "float" => DType::F32,
            "f64" | "float64" | "double" => DType::F64,
            _ => return None,
        })
    }

    /// PyTorch's promotion of two tensor dtypes (`torch.promote_types`).
    ///
    /// Bool < integers < floats; within integers the wider one wins; f16 with bf16 gives f32.
    pub fn promote(a: DType, b: DType) -> DType {
        use DType::*;
        if a == b {
            return a;
        }
        match (a.kind(), b.kind()) {
            (DTypeKind::Bool, _) => b,
            (_, DTypeKind::Bool) => a,
            (DTypeKind::Int, DTypeKind::Float) => b,
            (DTypeKind::Float, DTypeKind::Int) => a,
            (DTypeKind::Int, DTypeKind::Int) => a.max(b),
            (DTypeKind::Float, DTypeKind::Float) => match (a, b) {
                (F16, BF16) | (BF16, F16) => F32,
                _ => a.max(b),
            },
        }
    }

    /// The dtype of `tensor op scalar` where the scalar has `scalar_kind` (PyTorch's rule:
    /// a Python scalar only changes the result's kind, never its width).
    pub fn promote_with_scalar(self, scalar_kind: DTypeKind, default_float: DType) -> DType {
        if scalar_kind <= self.kind() {
            return self;
        }
        match scalar_kind {
            DTypeKind::Float => default_float,
            DTypeKind::Int => DType::I64,
            DTypeKind::Bool => self,
        }
    }

    /// The floating type an integer input is promoted to by ops such as `exp` or `mean`.
    pub fn to_float(self, default_float: DType) -> DType {
        if self.is_float() {
            self
        } else {
            default_float
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that can be stored in a tensor.
///
/// ```
/// use ember_storage::{DType, Element};
/// assert_eq!(<f32 as Element>::DTYPE, DType::F32);
/// assert_eq!(<i64 as Element>::from_f64(3.7), 3);
/// ```
pub trait Element: Copy + Send + Sync + PartialEq + PartialOrd + fmt::Debug + Default + 'static {
    /// The dtype this type stores as.
    const DTYPE: DType;
    /// Converts to f64 (exact for every type but i64 beyond 2^53).
    fn to_f64(self) -> f64;
    /// Converts from f64 with Rust's `as` semantics (saturating for integers).
    fn from_f64(v: f64) -> Self;
    /// Converts to i64 (truncating floats).
    fn to_i64(self) -> i64;
    /// Converts from i64 exactly where the type allows, else wrapping as PyTorch does.
    fn from_i64(v: i64) -> Self;
}

macro_rules! impl_element_num {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                self as i64
            }
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                v as $t
            }
        }
    };
}
impl_element_num!(f32, F32);
impl_element_num!(f64, F64);
impl_element_num!(i64, I64);
impl_element_num!(i32, I32);
impl_element_num!(u8, U8);

macro_rules! impl_element_half {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
            #[inline(always)]
            fn to_i64(self) -> i64 {
                <$t>::to_f64(self) as i64
            }
            #[inline(always)]
            fn from_i64(v: i64) -> Self {
                <$t>::from_f64(v as f64)
            }
        }
    };
}
impl_element_half!(f16, F16);
impl_element_half!(bf16, BF16);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
    #[inline(always)]
    fn from_i64(v: i64) -> Self {
        v != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_matches_pytorch_table() {
        use DType::*;
        assert_eq!(DType::promote(Bool, U8), U8);
        assert_eq!(DType::promote(U8, I32), I32);
        assert_eq!(DType::promote(I32, I64), I64);
        assert_eq!(DType::promote(I64, F16), F16);
        assert_eq!(DType::promote(F16, BF16), F32);
        assert_eq!(DType::promote(BF16, F64), F64);
        assert_eq!(DType::promote(F32, F64), F64);
        assert_eq!(DType::promote(Bool, Bool), Bool);
        for a in DType::ALL {
            for b in DType::ALL {
                assert_eq!(DType::promote(a, b), DType::promote(b, a), "{a} {b}");
            }
        }
    }

    #[test]
    fn scalar_promotion_keeps_width() {
        assert_eq!(DType::F16.promote_with_scalar(DTypeKind::Float, DType::F32), DType::F16);
        assert_eq!(DType::I32.promote_with_scalar(DTypeKind::Int, DType::F32), DType::I32);
        assert_eq!(DType::I32.promote_with_scalar(DTypeKind::Float, DType::F32), DType::F32);
        assert_eq!(DType::Bool.promote_with_scalar(DTypeKind::Int, DType::F32), DType::I64);
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
        assert_eq!(DType::from_name("nope"), None);
    }
}
