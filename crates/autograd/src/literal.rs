//! Tensors from nested Rust literals: [`Tensor::new`] keeps the element type, the [`tensor!`]
//! macro follows `torch.tensor` (floats in the default float dtype, integers as i64).
//!
//! ```
//! use ember_autograd::{tensor, DType, Tensor};
//! let x = tensor!([[1.0, 2.0], [3.0, 4.0]]).unwrap();
//! assert_eq!((x.shape(), x.dtype()), (&[2, 2][..], DType::F32));
//! assert_eq!(x.to_vec2::<f32>().unwrap(), vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
//! let i = tensor!([1, 2, 3]).unwrap();
//! assert_eq!(i.dtype(), DType::I64);
//! let d = Tensor::new(&[0.5f64, 1.5]).unwrap(); // the Rust type decides: f64
//! assert_eq!(d.dtype(), DType::F64);
//! ```

use crate::Tensor;
use ember_storage::{Error, HostElement, Result};

/// A scalar or a (nested) array, slice or `Vec` of scalars, as taken by [`Tensor::new`].
pub trait TensorLiteral {
    /// The scalar type.
    type Elem: HostElement;
    /// Appends the shape below this level (`[]` for a scalar) and the elements in row-major order;
    /// an error when nested vectors are ragged.
    fn flatten_into(&self, shape: &mut Vec<usize>, out: &mut Vec<Self::Elem>) -> Result<()>;
}

macro_rules! scalar_literal {
    ($($t:ty),*) => {$(
        impl TensorLiteral for $t {
            type Elem = $t;
            fn flatten_into(&self, _shape: &mut Vec<usize>, out: &mut Vec<$t>) -> Result<()> {
                out.push(*self);
                Ok(())
            }
        }
    )*};
}
scalar_literal!(f64, f32, i64, i32, u8, bool, half::f16, half::bf16);

/// Flattens the items of one level, checking that every item has the first one's shape.
fn flatten_level<T: TensorLiteral>(items: &[T], shape: &mut Vec<usize>, out: &mut Vec<T::Elem>) -> Result<()> {
    shape.push(items.len());
    let below = shape.len();
    for (i, item) in items.iter().enumerate() {
        let mut sub = vec![];
        item.flatten_into(&mut sub, out)?;
        if i == 0 {
            shape.extend_from_slice(&sub);
        } else if sub[..] != shape[below..] {
            return Err(Error::shape(
                "tensor",
                format!("ragged nested sequence: item 0 has shape {:?}, item {i} has {sub:?}", &shape[below..]),
            ));
        }
    }
    Ok(())
}

impl<T: TensorLiteral, const N: usize> TensorLiteral for [T; N] {
    type Elem = T::Elem;
    fn flatten_into(&self, shape: &mut Vec<usize>, out: &mut Vec<T::Elem>) -> Result<()> {
        flatten_level(self, shape, out)
    }
}

impl<T: TensorLiteral> TensorLiteral for [T] {
    type Elem = T::Elem;
    fn flatten_into(&self, shape: &mut Vec<usize>, out: &mut Vec<T::Elem>) -> Result<()> {
        flatten_level(self, shape, out)
    }
}

impl<T: TensorLiteral> TensorLiteral for Vec<T> {
    type Elem = T::Elem;
    fn flatten_into(&self, shape: &mut Vec<usize>, out: &mut Vec<T::Elem>) -> Result<()> {
        flatten_level(self, shape, out)
    }
}

impl<T: TensorLiteral + ?Sized> TensorLiteral for &T {
    type Elem = T::Elem;
    fn flatten_into(&self, shape: &mut Vec<usize>, out: &mut Vec<T::Elem>) -> Result<()> {
        (**self).flatten_into(shape, out)
    }
}

impl Tensor {
    /// A CPU tensor from a scalar or nested arrays/slices/`Vec`s, in the element type of the Rust
    /// values (`Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]])`); ragged nesting is an error.
    pub fn new<L: TensorLiteral + ?Sized>(data: &L) -> Result<Tensor> {
        let (mut shape, mut out) = (vec![], vec![]);
        data.flatten_into(&mut shape, &mut out)?;
        Tensor::from_vec(out, &shape)
    }

    /// [`Tensor::new`] with `torch.tensor`'s dtypes: floats become the default float dtype
    /// ([`crate::DEFAULT_FLOAT`]), integers i64; what the [`tensor!`](crate::tensor) macro calls.
    pub fn from_literal<L: TensorLiteral + ?Sized>(data: &L) -> Result<Tensor> {
        let t = Tensor::new(data)?;
        match t.dtype() {
            d if d.is_float() => t.to_dtype(crate::DEFAULT_FLOAT),
            ember_storage::DType::Bool | ember_storage::DType::U8 => Ok(t),
            _ => t.to_dtype(ember_storage::DType::I64),
        }
    }
}

/// A CPU tensor from a nested literal, as `torch.tensor`: `tensor!([[1.0, 2.0], [3.0, 4.0]])` is
/// f32 (the default float dtype), `tensor!([1, 2])` i64, `tensor!(3.5)` a 0-dim tensor; ragged
/// nesting is an error. Returns `Result<Tensor>`. For another element type use [`Tensor::new`] or
/// `.to_dtype()`.
#[macro_export]
macro_rules! tensor {
    ($e:expr) => {
        $crate::Tensor::from_literal(&$e)
    };
}
