//! Helpers over host buffers shared by the kernels' dispatch: wrapping results, checking views,
//! locking one or more buffers, converting elements, and computing f16/bf16 through f32.

use crate::buffer::CpuBuffer;
use crate::strided::{gather, map1};

use ember_storage::{Buffer, DType, DeviceBuffer, Element, Error, HostData, Layout, Result, View};
use half::{bf16, f16};

pub(crate) fn buf(d: HostData) -> Buffer {
    CpuBuffer::new(d).into_buffer()
}

pub(crate) fn checked<'a>(v: View<'a>, op: &str) -> Result<&'a CpuBuffer> {
    let b = CpuBuffer::of(v.0, op)?;
    v.1.check_fits(b.len(), op)?;
    Ok(b)
}

/// Runs `f` on the data of two buffers, locking a buffer shared by both only once.
pub(crate) fn with2<R>(a: &CpuBuffer, b: &CpuBuffer, f: impl FnOnce(&HostData, &HostData) -> R) -> R {
    let ga = a.read();
    if std::ptr::eq(a, b) {
        f(&ga, &ga)
    } else {
        let gb = b.read();
        f(&ga, &gb)
    }
}

pub(crate) fn with3<R>(
    a: &CpuBuffer,
    b: &CpuBuffer,
    c: &CpuBuffer,
    f: impl FnOnce(&HostData, &HostData, &HostData) -> R,
) -> R {
    with2(a, b, |da, db| {
        if std::ptr::eq(c, a) {
            f(da, db, da)
        } else if std::ptr::eq(c, b) {
            f(da, db, db)
        } else {
            let gc = c.read();
            f(da, db, &gc)
        }
    })
}

pub(crate) fn dense(l: &Layout) -> Layout {
    Layout::contiguous(l.shape())
}

pub(crate) fn to_f32<T: Element>(v: &[T], l: &Layout) -> Vec<f32> {
    gather(v, l, |x| x.to_f64() as f32)
}

/// Element conversion with PyTorch's semantics: integers convert exactly, floats round once.
#[inline(always)]
pub(crate) fn convert<T: Element, U: Element>(x: T) -> U {
    if T::DTYPE.is_float() || U::DTYPE.is_float() {
        U::from_f64(x.to_f64())
    } else {
        U::from_i64(x.to_i64())
    }
}

pub(crate) fn cast_to<T: Element + Sync>(v: &[T], l: &Layout, dtype: DType) -> HostData {
    match dtype {
        DType::Bool => HostData::Bool(map1(v, l, |x| x.to_f64() != 0.0)),
        DType::U8 => HostData::U8(map1(v, l, convert)),
        DType::I32 => HostData::I32(map1(v, l, convert)),
        DType::I64 => HostData::I64(map1(v, l, convert)),
        DType::F16 => HostData::F16(map1(v, l, convert)),
        DType::BF16 => HostData::BF16(map1(v, l, convert)),
        DType::F32 => HostData::F32(map1(v, l, convert)),
        DType::F64 => HostData::F64(map1(v, l, convert)),
    }
}

pub(crate) fn mismatch(op: &str, a: &HostData, b: &HostData) -> Error {
    Error::dtype(op, format!("backend got dtypes {} and {}; the caller must promote first", a.dtype(), b.dtype()))
}

#[inline(always)]
pub(crate) fn add_elem<T: Element>(a: T, b: T) -> T {
    if T::DTYPE.is_float() {
        T::from_f64(a.to_f64() + b.to_f64())
    } else {
        T::from_i64(a.to_i64().wrapping_add(b.to_i64()))
    }
}

/// The half types, computed through f32 and rounded once (with `half`'s own f32 conversions).
pub(crate) trait Half: Element {
    fn from_f32(x: f32) -> Self;
}
impl Half for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}
impl Half for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// Runs an f32 kernel on an f16/bf16 view: converts it to dense f32, applies `f` (to the data and
/// its dense layout), rounds the result once back to `H`. The one place the half types go through f32.
pub(crate) fn via_f32<H: Half>(v: &[H], l: &Layout, f: impl FnOnce(&[f32], &Layout) -> Vec<f32>) -> Vec<H> {
    f(&to_f32(v, l), &dense(l)).into_iter().map(H::from_f32).collect()
}

/// [`via_f32`] for kernels of two operands.
pub(crate) fn via_f32_2<H: Half>(
    a: &[H],
    la: &Layout,
    b: &[H],
    lb: &Layout,
    f: impl FnOnce(&[f32], &Layout, &[f32], &Layout) -> Vec<f32>,
) -> Vec<H> {
    f(&to_f32(a, la), &dense(la), &to_f32(b, lb), &dense(lb)).into_iter().map(H::from_f32).collect()
}
