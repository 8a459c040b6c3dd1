//! # ember-ops-cpu
//!
//! `CpuBackend`, Ember's [`Backend`] for host memory: strided kernels with contiguous fast paths,
//! rayon parallelism above a size threshold ([`set_num_threads`]), matrix products through the `gemm`
//! crate (batched, any strides, so transposed views need no copy), im2col/col2im for convolution and
//! pooling, and a counter-based Philox generator whose numbers do not depend on the thread count.
//!
//! f16 and bf16 are computed in f32 and rounded once; f32 sums accumulate in f64.
//!
//! ```
//! use ember_ops_cpu::CpuBackend;
//! use ember_storage::{Backend, BinaryOp, HostData, Layout};
//! let cpu = CpuBackend::new();
//! let a = cpu.upload(HostData::F32(vec![1.0, 2.0, 3.0])).unwrap();
//! let l = Layout::contiguous(&[3]);
//! let s = cpu.binary(BinaryOp::Add, (&a, &l), (&a, &l)).unwrap();
//! assert_eq!(cpu.download((&s, &l)).unwrap(), HostData::F32(vec![2.0, 4.0, 6.0]));
//! ```
#![warn(missing_docs)]

mod buffer;
mod conv;
mod elementwise;
mod index;
mod lines;
mod matmul;
mod norm;
mod oom;
mod operands;
mod optim_step;
pub mod pool;
mod real;
mod recurrent;
mod reduce;
pub mod rng;
mod rows;
mod scalar;
pub mod simd;
mod softmax;
pub mod special;
mod staged;
mod strided;
mod threading;

pub use buffer::CpuBuffer;
pub use threading::{num_threads, set_num_threads, set_par_threshold};

use elementwise::{binary_float, binary_int, binary_predicate, unary_float, unary_int, unary_predicate};
use ember_storage::{
    with_host_data, AdamStep, Backend, BinaryOp, Buffer, DType, Device, DeviceBuffer, Element, Error, FusedKernels,
    HostData, HostElement, IndexOp, Layout, ReduceOp, Result, RngKey, RngOp, Scalar, ScanOp, SgdStep, UnaryOp, View,
    WindowGeometry,
};
use half::{bf16, f16};
use lines::{per_line, total_cmp_nan_max};
use oom::guarded;
use reduce::{convert_pooled, sum_run_f32, sum_run_f64, Reducer};
use std::sync::{Arc, OnceLock};
use strided::{gather, map1, map3, with_dense};

/// The CPU backend. Stateless: its thread pool is process-wide.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend.
    pub fn new() -> Self {
        CpuBackend
    }

    /// The shared instance, as registered for `Device::Cpu`.
    pub fn shared() -> Arc<dyn Backend> {
        static ONE: OnceLock<Arc<dyn Backend>> = OnceLock::new();
        ONE.get_or_init(|| Arc::new(CpuBackend)).clone()
    }
}

fn buf(d: HostData) -> Buffer {
    CpuBuffer::new(d).into_buffer()
}

fn checked<'a>(v: View<'a>, op: &str) -> Result<&'a CpuBuffer> {
    let b = CpuBuffer::of(v.0, op)?;
    v.1.check_fits(b.len(), op)?;
    Ok(b)
}

/// Runs `f` on the data of two buffers, locking a buffer shared by both only once.
fn with2<R>(a: &CpuBuffer, b: &CpuBuffer, f: impl FnOnce(&HostData, &HostData) -> R) -> R {
    let ga = a.read();
    if std::ptr::eq(a, b) {
        f(&ga, &ga)
    } else {
        let gb = b.read();
        f(&ga, &gb)
    }
}

fn with3<R>(a: &CpuBuffer, b: &CpuBuffer, c: &CpuBuffer, f: impl FnOnce(&HostData, &HostData, &HostData) -> R) -> R {
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

fn dense(l: &Layout) -> Layout {
    Layout::contiguous(l.shape())
}

fn to_f32<T: Element>(v: &[T], l: &Layout) -> Vec<f32> {
    gather(v, l, |x| x.to_f64() as f32)
}

/// Element conversion with PyTorch's semantics: integers convert exactly, floats round once.
#[inline(always)]
fn convert<T: Element, U: Element>(x: T) -> U {
    if T::DTYPE.is_float() || U::DTYPE.is_float() {
        U::from_f64(x.to_f64())
    } else {
        U::from_i64(x.to_i64())
    }
}

fn cast_to<T: Element + Sync>(v: &[T], l: &Layout, dtype: DType) -> HostData {
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

fn mismatch(op: &str, a: &HostData, b: &HostData) -> Error {
    Error::dtype(op, format!("backend got dtypes {} and {}; the caller must promote first", a.dtype(), b.dtype()))
}

#[inline(always)]
fn add_elem<T: Element>(a: T, b: T) -> T {
    if T::DTYPE.is_float() {
        T::from_f64(a.to_f64() + b.to_f64())
    } else {
        T::from_i64(a.to_i64().wrapping_add(b.to_i64()))
    }
}

fn reduce_typed<T: HostElement + Sync>(op: ReduceOp, v: &[T], l: &Layout, dims: &[usize]) -> Result<HostData> {
    let float = T::DTYPE.is_float();
    let fold_f = |f: fn(f64, f64) -> f64, init: f64| Reducer {
        init,
        fold: move |acc: f64, x: &[T], s: usize, st: usize, n: usize| {
            (0..n).fold(acc, |a, i| f(a, x[s + i * st].to_f64()))
        },
        merge: f,
    };
    let fold_i = |f: fn(i64, i64) -> i64, init: i64| Reducer {
        init,
        fold: move |acc: i64, x: &[T], s: usize, st: usize, n: usize| {
            (0..n).fold(acc, |a, i| f(a, x[s + i * st].to_i64()))
        },
        merge: f,
    };
    let from_f = |r: Vec<f64>| HostData::from_vec::<T>(convert_pooled(r, T::from_f64));
    let from_i = |r: Vec<i64>| HostData::from_vec::<T>(convert_pooled(r, T::from_i64));
    fn nan_max(a: f64, b: f64) -> f64 {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    }
    fn nan_min(a: f64, b: f64) -> f64 {
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.min(b)
        }
    }
    Ok(match op {
        ReduceOp::Sum if float => from_f(fold_f(|a, b| a + b, 0.0).run(v, l, dims)),
        ReduceOp::Sum => from_i(fold_i(|a, b| a.wrapping_add(b), 0).run(v, l, dims)),
        ReduceOp::Prod if float => from_f(fold_f(|a, b| a * b, 1.0).run(v, l, dims)),
        ReduceOp::Prod => from_i(fold_i(|a, b| a.wrapping_mul(b), 1).run(v, l, dims)),
        ReduceOp::Max if float => from_f(fold_f(nan_max, f64::NEG_INFINITY).run(v, l, dims)),
        ReduceOp::Max => from_i(fold_i(|a, b| a.max(b), i64::MIN).run(v, l, dims)),
        ReduceOp::Min if float => from_f(fold_f(nan_min, f64::INFINITY).run(v, l, dims)),
        ReduceOp::Min => from_i(fold_i(|a, b| a.min(b), i64::MAX).run(v, l, dims)),
        ReduceOp::All | ReduceOp::Any => {
            let all = op == ReduceOp::All;
            let r = Reducer {
                init: all,
                fold: move |acc: bool, x: &[T], s: usize, st: usize, n: usize| {
                    (0..n).fold(acc, |a, i| {
                        if all {
                            a && x[s + i * st].to_f64() != 0.0
                        } else {
                            a || x[s + i * st].to_f64() != 0.0
                        }
                    })
                },
                merge: move |a: bool, b: bool| if all { a && b } else { a || b },
            };
            HostData::Bool(r.run(v, l, dims))
        }
        ReduceOp::ArgMax | ReduceOp::ArgMin => {
            let [dim] = dims else {
                return Err(Error::invalid("argmax", format!("reduces exactly one dim, got {dims:?}")));
            };
            let max = op == ReduceOp::ArgMax;
            let n = l.shape()[*dim];
            HostData::I64(per_line(l, *dim, 1, |s, st, o: &mut [i64]| {
                // the first NaN wins for both argmax and argmin (NaN propagates, as PyTorch); else the
                // first occurrence of the extreme value
                let mut best = 0usize;
                let mut b = if n > 0 { v[s].to_f64() } else { 0.0 };
                if !b.is_nan() {
                    for i in 1..n {
                        let x = v[s + i * st].to_f64();
                        if x.is_nan() {
                            best = i;
                            break;
                        }
                        if (max && x > b) || (!max && x < b) {
                            best = i;
                            b = x;
                        }
                    }
                }
                o[0] = best as i64;
            }))
        }
    })
}

fn scan_typed<T: HostElement + Sync>(op: ScanOp, v: &[T], l: &Layout, dim: usize) -> (HostData, Option<HostData>) {
    let n = l.shape().get(dim).copied().unwrap_or(1);
    let float = T::DTYPE.is_float();
    match op {
        ScanOp::Cumsum | ScanOp::Cumprod => {
            let sum = op == ScanOp::Cumsum;
            let out = per_line(l, dim, n, |s, st, o: &mut [T]| {
                if float {
                    let mut acc = if sum { 0.0 } else { 1.0 };
                    for (i, o) in o.iter_mut().enumerate() {
                        let x = v[s + i * st].to_f64();
                        acc = if sum { acc + x } else { acc * x };
                        *o = T::from_f64(acc);
                    }
                } else {
                    let mut acc: i64 = if sum { 0 } else { 1 };
                    for (i, o) in o.iter_mut().enumerate() {
                        let x = v[s + i * st].to_i64();
                        acc = if sum { acc.wrapping_add(x) } else { acc.wrapping_mul(x) };
                        *o = T::from_i64(acc);
                    }
                }
            });
            (HostData::from_vec(out), None)
        }
        ScanOp::Cummax | ScanOp::Cummin => {
            let max = op == ScanOp::Cummax;
            let pairs = per_line(l, dim, n, |s, st, o: &mut [(f64, i64)]| {
                let mut best = (0.0f64, -1i64);
                for (i, o) in o.iter_mut().enumerate() {
                    let x = v[s + i * st].to_f64();
                    let better =
                        i == 0 || x.is_nan() || (!best.0.is_nan() && if max { x >= best.0 } else { x <= best.0 });
                    if better {
                        best = (x, i as i64);
                    }
                    *o = best;
                }
            });
            let idx: Vec<i64> = pairs.iter().map(|p| p.1).collect();
            // values re-read exactly from the input through the indices
            let vals = per_line(l, dim, n, |s, st, o: &mut [T]| {
                let mut best = 0usize;
                for (i, o) in o.iter_mut().enumerate() {
                    let x = v[s + i * st].to_f64();
                    let b = v[s + best * st].to_f64();
                    if i == 0 || x.is_nan() || (!b.is_nan() && if max { x >= b } else { x <= b }) {
                        best = i;
                    }
                    *o = v[s + best * st];
                }
            });
            (HostData::from_vec(vals), Some(HostData::I64(idx)))
        }
    }
}

fn sort_typed<T: HostElement + Sync>(v: &[T], l: &Layout, dim: usize, descending: bool) -> (HostData, HostData) {
    let n = l.shape().get(dim).copied().unwrap_or(1);
    let idx = per_line(l, dim, n, |s, st, o: &mut [i64]| {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| {
            let c = total_cmp_nan_max(v[s + i * st].to_f64(), v[s + j * st].to_f64());
            if descending {
                c.reverse()
            } else {
                c
            }
        });
        for (o, i) in o.iter_mut().zip(order) {
            *o = i as i64;
        }
    });
    // values are the input gathered through the sorted order (one sort per line, not two)
    let vals = index::index_op(IndexOp::Gather { dim }, v, l, &idx, &Layout::contiguous(l.shape()), None, add_elem)
        .expect("sort indices are in range by construction");
    (HostData::from_vec(vals), HostData::I64(idx))
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn upload(&self, data: HostData) -> Result<Buffer> {
        Ok(buf(data))
    }

    fn download(&self, x: View) -> Result<HostData> {
        guarded("download", || {
            let b = checked(x, "download")?;
            let g = b.read();
            if x.1.contiguous_range() == Some((0, g.len())) {
                return Ok(g.clone());
            }
            Ok(with_host_data!(&*g, v => HostData::from_vec(gather(v, x.1, |a| a))))
        })
    }

    fn full(&self, value: Scalar, dtype: DType, numel: usize) -> Result<Buffer> {
        guarded("full", || {
            // pooled: a fresh large buffer would be page-faulted in (zeros for scatter_add targets,
            // gradients of broadcasts, ... are made every training step)
            fn filled<T: Copy + Default + Send + 'static>(n: usize, v: T) -> Vec<T> {
                let mut out = pool::take(n);
                out.fill(v);
                out
            }
            let f = value.as_f64();
            Ok(buf(match (value, dtype) {
                (Scalar::I(i), DType::I64) => HostData::I64(filled(numel, i)),
                (Scalar::I(i), DType::I32) => HostData::I32(filled(numel, i as i32)),
                (Scalar::I(i), DType::U8) => HostData::U8(filled(numel, i as u8)),
                (Scalar::I(i), DType::Bool) => HostData::Bool(filled(numel, i != 0)),
                (_, DType::F32) => HostData::F32(filled(numel, f as f32)),
                (_, DType::F64) => HostData::F64(filled(numel, f)),
                (_, DType::F16) => HostData::F16(filled(numel, f16::from_f64(f))),
                (_, DType::BF16) => HostData::BF16(filled(numel, bf16::from_f64(f))),
                _ => HostData::filled(dtype, numel, f),
            }))
        })
    }

    fn cast(&self, x: View, dtype: DType) -> Result<Buffer> {
        guarded("to_dtype", || {
            let b = checked(x, "to_dtype")?;
            let g = b.read();
            Ok(buf(with_host_data!(&*g, v => cast_to(v, x.1, dtype))))
        })
    }

    fn assign(&self, dst: View, src: View) -> Result<()> {
        guarded("copy_", || {
            let (d, s) = (checked(dst, "copy_")?, checked(src, "copy_")?);
            if dst.1.shape() != src.1.shape() || d.dtype() != s.dtype() {
                return Err(Error::shape(
                    "copy_",
                    format!(
                        "destination {:?} {} and source {:?} {} differ",
                        dst.1.shape(),
                        d.dtype(),
                        src.1.shape(),
                        s.dtype()
                    ),
                ));
            }
            if std::ptr::eq(d, s) {
                let tmp = self.cast(src, s.dtype())?;
                return self.assign(dst, (&tmp, &dense(src.1)));
            }
            let mut gd = d.write();
            let gs = s.read();
            macro_rules! arm {
                ($($v:ident),*) => {
                    match (&mut *gd, &*gs) {
                        $((HostData::$v(a), HostData::$v(b)) => strided::assign(a, dst.1, b, src.1),)*
                        _ => unreachable!("dtypes checked above"),
                    }
                };
            }
            arm!(Bool, U8, I32, I64, F16, BF16, F32, F64);
            Ok(())
        })
    }

    fn unary(&self, op: UnaryOp, x: View) -> Result<Buffer> {
        guarded(op.name(), || {
            let b = checked(x, op.name())?;
            let g = b.read();
            let l = x.1;
            if op.is_predicate() {
                return Ok(buf(HostData::Bool(with_host_data!(&*g, v => unary_predicate(op, v, l)))));
            }
            let float_or_int = |v: &HostData| -> Result<HostData> {
                Ok(match v {
                    HostData::F32(v) => HostData::F32(unary_float(op, v, l)),
                    HostData::F64(v) => HostData::F64(unary_float(op, v, l)),
                    HostData::F16(v) => HostData::F16(
                        unary_float(op, &to_f32(v, l), &dense(l)).into_iter().map(f16::from_f32).collect(),
                    ),
                    HostData::BF16(v) => HostData::BF16(
                        unary_float(op, &to_f32(v, l), &dense(l)).into_iter().map(bf16::from_f32).collect(),
                    ),
                    HostData::I64(v) => HostData::I64(unary_int(op, v, l)?),
                    HostData::I32(v) => HostData::I32(unary_int(op, v, l)?),
                    HostData::U8(v) => HostData::U8(unary_int(op, v, l)?),
                    HostData::Bool(v) => HostData::Bool(unary_int(op, v, l)?),
                })
            };
            Ok(buf(float_or_int(&g)?))
        })
    }

    fn binary(&self, op: BinaryOp, a: View, b: View) -> Result<Buffer> {
        guarded(op.name(), || {
            let (ba, bb) = (checked(a, op.name())?, checked(b, op.name())?);
            if a.1.shape() != b.1.shape() {
                return Err(Error::shape(
                    op.name(),
                    format!("backend got shapes {:?} and {:?}", a.1.shape(), b.1.shape()),
                ));
            }
            let (la, lb) = (a.1, b.1);
            with2(ba, bb, |da, db| {
                if op.is_predicate() {
                    return Ok(buf(HostData::Bool(match (da, db) {
                        (HostData::F32(x), HostData::F32(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::F64(x), HostData::F64(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::F16(x), HostData::F16(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::BF16(x), HostData::BF16(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::I64(x), HostData::I64(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::I32(x), HostData::I32(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::U8(x), HostData::U8(y)) => binary_predicate(op, x, la, y, lb),
                        (HostData::Bool(x), HostData::Bool(y)) => binary_predicate(op, x, la, y, lb),
                        _ => return Err(mismatch(op.name(), da, db)),
                    })));
                }
                Ok(buf(match (da, db) {
                    (HostData::F32(x), HostData::F32(y)) => HostData::F32(binary_float(op, x, la, y, lb)),
                    (HostData::F64(x), HostData::F64(y)) => HostData::F64(binary_float(op, x, la, y, lb)),
                    (HostData::F16(x), HostData::F16(y)) => HostData::F16(
                        binary_float(op, &to_f32(x, la), &dense(la), &to_f32(y, lb), &dense(lb))
                            .into_iter()
                            .map(f16::from_f32)
                            .collect(),
                    ),
                    (HostData::BF16(x), HostData::BF16(y)) => HostData::BF16(
                        binary_float(op, &to_f32(x, la), &dense(la), &to_f32(y, lb), &dense(lb))
                            .into_iter()
                            .map(bf16::from_f32)
                            .collect(),
                    ),
                    (HostData::I64(x), HostData::I64(y)) => HostData::I64(binary_int(op, x, la, y, lb)?),
                    (HostData::I32(x), HostData::I32(y)) => HostData::I32(binary_int(op, x, la, y, lb)?),
                    (HostData::U8(x), HostData::U8(y)) => HostData::U8(binary_int(op, x, la, y, lb)?),
                    (HostData::Bool(x), HostData::Bool(y)) => HostData::Bool(binary_int(op, x, la, y, lb)?),
                    _ => return Err(mismatch(op.name(), da, db)),
                }))
            })
        })
    }

    fn where_cond(&self, cond: View, a: View, b: View) -> Result<Buffer> {
        guarded("where_cond", || {
            let (bc, ba, bb) = (checked(cond, "where")?, checked(a, "where")?, checked(b, "where")?);
            let (lc, la, lb) = (cond.1, a.1, b.1);
            if lc.shape() != la.shape() || la.shape() != lb.shape() {
                return Err(Error::shape(
                    "where",
                    format!("backend got shapes {:?}, {:?}, {:?}", lc.shape(), la.shape(), lb.shape()),
                ));
            }
            with3(bc, ba, bb, |dc, da, db| {
                let HostData::Bool(c) = dc else {
                    return Err(Error::dtype("where", format!("condition must be bool, got {}", dc.dtype())));
                };
                macro_rules! arm {
                ($($v:ident),*) => {
                    match (da, db) {
                        $((HostData::$v(x), HostData::$v(y)) => HostData::$v(map3(c, lc, x, la, y, lb, |c, x, y| if c { x } else { y })),)*
                        _ => return Err(mismatch("where", da, db)),
                    }
                };
            }
                Ok(buf(arm!(Bool, U8, I32, I64, F16, BF16, F32, F64)))
            })
        })
    }

    fn reduce(&self, op: ReduceOp, x: View, dims: &[usize]) -> Result<Buffer> {
        guarded("reduce", || {
            let b = checked(x, "reduce")?;
            if let Some(&d) = dims.iter().find(|&&d| d >= x.1.ndim()) {
                return Err(Error::invalid("reduce", format!("dim {d} out of range for shape {:?}", x.1.shape())));
            }
            let g = b.read();
            let l = x.1;
            // fast, vectorised sums for the common float cases
            if op == ReduceOp::Sum {
                match &*g {
                    HostData::F32(v) => {
                        if let Some(s) = reduce::leading_sum(v, l, dims, |x| x as f64) {
                            return Ok(buf(HostData::F32(convert_pooled(s, |s| s as f32))));
                        }
                        let r = Reducer { init: 0f64, fold: sum_run_f32, merge: |a: f64, b: f64| a + b };
                        return Ok(buf(HostData::F32(convert_pooled(r.run(v, l, dims), |s| s as f32))));
                    }
                    HostData::F64(v) => {
                        if let Some(s) = reduce::leading_sum(v, l, dims, |x| x) {
                            return Ok(buf(HostData::F64(s)));
                        }
                        let r = Reducer { init: 0f64, fold: sum_run_f64, merge: |a: f64, b: f64| a + b };
                        return Ok(buf(HostData::F64(r.run(v, l, dims))));
                    }
                    _ => {}
                }
            }
            Ok(buf(with_host_data!(&*g, v => reduce_typed(op, v, l, dims)?)))
        })
    }

    fn scan(&self, op: ScanOp, x: View, dim: usize) -> Result<(Buffer, Option<Buffer>)> {
        guarded("scan", || {
            let b = checked(x, "scan")?;
            if dim >= x.1.ndim().max(1) {
                return Err(Error::invalid("scan", format!("dim {dim} out of range for shape {:?}", x.1.shape())));
            }
            let g = b.read();
            let (v, i) = with_host_data!(&*g, v => scan_typed(op, v, x.1, dim));
            Ok((buf(v), i.map(buf)))
        })
    }

    fn sort(&self, x: View, dim: usize, descending: bool, _stable: bool) -> Result<(Buffer, Buffer)> {
        guarded("sort", || {
            let b = checked(x, "sort")?;
            if dim >= x.1.ndim().max(1) {
                return Err(Error::invalid("sort", format!("dim {dim} out of range for shape {:?}", x.1.shape())));
            }
            let g = b.read();
            // Rust's sort is stable, so every sort here is.
            let (v, i) = with_host_data!(&*g, v => sort_typed(v, x.1, dim, descending));
            Ok((buf(v), buf(i)))
        })
    }

    fn softmax(&self, x: View, dim: usize, log: bool) -> Result<Buffer> {
        guarded("softmax", || {
            let b = checked(x, "softmax")?;
            if dim >= x.1.ndim().max(1) {
                return Err(Error::invalid("softmax", format!("dim {dim} out of range for shape {:?}", x.1.shape())));
            }
            let g = b.read();
            let l = x.1;
            let n = l.shape().get(dim).copied().unwrap_or(1);
            Ok(buf(match &*g {
                HostData::F32(v) => HostData::F32(per_line(l, dim, n, |s, st, o| softmax::line(v, s, st, o, log))),
                HostData::F64(v) => HostData::F64(per_line(l, dim, n, |s, st, o| softmax::line(v, s, st, o, log))),
                HostData::F16(v) => {
                    let f = to_f32(v, l);
                    let r = per_line(&dense(l), dim, n, |s, st, o| softmax::line(&f, s, st, o, log));
                    HostData::F16(r.into_iter().map(f16::from_f32).collect())
                }
                HostData::BF16(v) => {
                    let f = to_f32(v, l);
                    let r = per_line(&dense(l), dim, n, |s, st, o| softmax::line(&f, s, st, o, log));
                    HostData::BF16(r.into_iter().map(bf16::from_f32).collect())
                }
                other => return Err(Error::dtype("softmax", format!("needs a floating dtype, got {}", other.dtype()))),
            }))
        })
    }

    fn matmul(&self, a: View, b: View) -> Result<Buffer> {
        guarded("matmul", || {
            let (ba, bb) = (checked(a, "matmul")?, checked(b, "matmul")?);
            let (la, lb) = (a.1, b.1);
            let nd = la.ndim();
            if nd < 2
                || lb.ndim() != nd
                || la.shape()[..nd - 2] != lb.shape()[..nd - 2]
                || la.shape()[nd - 1] != lb.shape()[nd - 2]
            {
                return Err(Error::shape(
                    "matmul",
                    format!("backend got shapes {:?} and {:?}", la.shape(), lb.shape()),
                ));
            }
            with2(ba, bb, |da, db| {
                Ok(buf(match (da, db) {
                    (HostData::F32(x), HostData::F32(y)) => HostData::F32(matmul::matmul(x, la, y, lb)),
                    (HostData::F64(x), HostData::F64(y)) => HostData::F64(matmul::matmul(x, la, y, lb)),
                    (HostData::F16(x), HostData::F16(y)) => HostData::F16(matmul::matmul(x, la, y, lb)),
                    (HostData::BF16(x), HostData::BF16(y)) => {
                        let r = matmul::matmul(&to_f32(x, la), &dense(la), &to_f32(y, lb), &dense(lb));
                        HostData::BF16(r.into_iter().map(bf16::from_f32).collect())
                    }
                    (HostData::I64(x), HostData::I64(y)) => HostData::I64(matmul::matmul_int(x, la, y, lb)),
                    (HostData::I32(x), HostData::I32(y)) => HostData::I32(matmul::matmul_int(x, la, y, lb)),
                    (HostData::U8(x), HostData::U8(y)) => HostData::U8(matmul::matmul_int(x, la, y, lb)),
                    _ => {
                        return Err(Error::dtype(
                            "matmul",
                            format!("not defined for {} and {}", da.dtype(), db.dtype()),
                        ))
                    }
                }))
            })
        })
    }

    fn index(&self, op: IndexOp, x: View, index: View, src: Option<View>) -> Result<Buffer> {
        guarded("index", || {
            let (bx, bi) = (checked(x, "index")?, checked(index, "index")?);
            let bs = match src {
                Some(s) => Some(checked(s, "index")?),
                None => None,
            };
            let gi = bi.read();
            let HostData::I64(iv) = &*gi else {
                return Err(Error::dtype("index", format!("indices must be i64, got {}", gi.dtype())));
            };
            let gx = bx.read();
            let gs = match bs {
                Some(s) if !std::ptr::eq(s, bx) => Some(s.read()),
                _ => None,
            };
            let sd: Option<&HostData> = match (bs, &gs) {
                (Some(_), Some(g)) => Some(g),
                (Some(_), None) => Some(&gx),
                _ => None,
            };
            macro_rules! arm {
            ($($v:ident),*) => {
                match &*gx {
                    $(HostData::$v(xv) => {
                        let s = match (sd, src) {
                            (Some(HostData::$v(sv)), Some(view)) => Some((sv.as_slice(), view.1)),
                            (None, _) => None,
                            (Some(other), _) => return Err(mismatch("index", &gx, other)),
                        };
                        HostData::$v(index::index_op(op, xv, x.1, iv, index.1, s, add_elem)?)
                    })*
                }
            };
        }
            Ok(buf(arm!(Bool, U8, I32, I64, F16, BF16, F32, F64)))
        })
    }

    fn im2col(&self, x: View, geom: &WindowGeometry, pad_value: f64) -> Result<Buffer> {
        guarded("im2col", || {
            let b = checked(x, "im2col")?;
            let out_sp =
                geom.output().ok_or_else(|| Error::invalid("im2col", format!("window {geom:?} does not fit")))?;
            let g = b.read();
            Ok(buf(with_host_data!(&*g, v => {
                HostData::from_vec(with_dense(v, x.1, |d| window::im2col(d, geom, &out_sp, Element::from_f64(pad_value))))
            })))
        })
    }

    fn col2im(&self, cols: View, geom: &WindowGeometry) -> Result<Buffer> {
        guarded("col2im", || {
            let b = checked(cols, "col2im")?;
            let out_sp =
                geom.output().ok_or_else(|| Error::invalid("col2im", format!("window {geom:?} does not fit")))?;
            let g = b.read();
            let l = cols.1;
            Ok(buf(match &*g {
                HostData::F32(v) => HostData::F32(with_dense(v, l, |d| window::col2im(d, geom, &out_sp))),
                HostData::F64(v) => HostData::F64(with_dense(v, l, |d| window::col2im(d, geom, &out_sp))),
                HostData::F16(v) => {
                    HostData::F16(window::col2im(&to_f32(v, l), geom, &out_sp).into_iter().map(f16::from_f32).collect())
                }
                HostData::BF16(v) => HostData::BF16(
                    window::col2im(&to_f32(v, l), geom, &out_sp).into_iter().map(bf16::from_f32).collect(),
                ),
                HostData::I64(v) => HostData::I64(with_dense(v, l, |d| window::col2im(d, geom, &out_sp))),
                other => return Err(Error::dtype("col2im", format!("not defined for {}", other.dtype()))),
            }))
        })
    }

    fn run_sequence(&self, f: &mut (dyn FnMut() + Send)) {
        threading::pool().install(f)
    }

    fn fused(&self) -> Option<&dyn FusedKernels> {
        Some(self)
    }

    fn random(&self, op: RngOp, dtype: DType, numel: usize, key: RngKey) -> Result<Buffer> {
        guarded("random", || {
            if !dtype.is_float() {
                return Err(Error::dtype("random", format!("needs a floating dtype, got {dtype}")));
            }
            Ok(buf(match dtype {
                DType::F32 => HostData::F32(rng::sample_as(op, numel, key, |v| v as f32)),
                DType::F64 => HostData::F64(rng::sample_as(op, numel, key, |v| v)),
                DType::F16 => HostData::F16(rng::sample_as(op, numel, key, f16::from_f64)),
                _ => HostData::BF16(rng::sample_as(op, numel, key, bf16::from_f64)),
            }))
        })
    }
}

/// The CPU backend's fused kernels: per-sample convolution, max pooling, batch norm and LSTM.
impl FusedKernels for CpuBackend {
    fn max_pool2d(&self, x: View, geom: &WindowGeometry) -> Result<(Buffer, Buffer)> {
        guarded("max_pool2d", || {
            let b = checked(x, "max_pool2d")?;
            if geom.input.len() != 2 || x.1.ndim() != 4 {
                return Err(Error::shape(
                    "max_pool2d",
                    format!("needs a 4-d input and a 2-d window, got {:?}", x.1.shape()),
                ));
            }
            let out_sp =
                geom.output().ok_or_else(|| Error::invalid("max_pool2d", format!("window {geom:?} does not fit")))?;
            let g = b.read();
            let (vals, idx) = match &*g {
                HostData::F32(v) => {
                    let (a, i) = with_dense(v, x.1, |d| window::max_pool2d(d, geom, &out_sp, |t: f32| t.is_nan()));
                    (HostData::F32(a), i)
                }
                HostData::F64(v) => {
                    let (a, i) = with_dense(v, x.1, |d| window::max_pool2d(d, geom, &out_sp, |t: f64| t.is_nan()));
                    (HostData::F64(a), i)
                }
                other => {
                    return Err(Error::dtype(
                        "max_pool2d",
                        format!("the fused kernel takes f32 or f64, got {}", other.dtype()),
                    ))
                }
            };
            Ok((buf(vals), buf(HostData::I64(idx))))
        })
    }

    fn batch_norm_stats(&self, x: View) -> Result<(Buffer, Buffer)> {
        guarded("batch_norm_stats", || norm::entry::batch_norm_stats(x))
    }

    fn batch_norm_backward_reduce(&self, g: View, x: View, mean: View) -> Result<(Buffer, Buffer)> {
        guarded("batch_norm_backward_reduce", || norm::entry::batch_norm_backward_reduce(g, x, mean))
    }

    fn channel_affine(&self, x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer> {
        guarded("channel_affine", || norm::entry::channel_affine(x, a, y, k))
    }

    fn conv2d(&self, x: View, w: View, geom: &WindowGeometry) -> Result<Buffer> {
        guarded("conv2d", || conv::entry::conv2d(x, w, geom))
    }

    fn conv2d_backward(
        &self,
        x: View,
        w: View,
        gy: View,
        geom: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        guarded("conv2d_backward", || conv::entry::conv2d_backward(x, w, gy, geom, need))
    }

    fn lstm_sequence(&self, gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)> {
        guarded("lstm_sequence", || recurrent::entry::lstm_sequence(gi, h0, c0, w_hh, reverse))
    }

    fn lstm_sequence_backward(
        &self,
        gates: View,
        y: View,
        c0: View,
        w_hh: View,
        gy: View,
        reverse: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        guarded("lstm_sequence_backward", || recurrent::entry::lstm_sequence_backward(gates, y, c0, w_hh, gy, reverse))
    }

    fn sgd_step(&self, param: View, grad: View, momentum_buffer: Option<View>, s: &SgdStep) -> Result<()> {
        guarded("sgd_step", || optim_step::sgd(param, grad, momentum_buffer, s))
    }

    fn adam_step(&self, param: View, grad: View, exp_avg: View, exp_avg_sq: View, s: &AdamStep) -> Result<()> {
        guarded("adam_step", || optim_step::adam(param, grad, exp_avg, exp_avg_sq, s))
    }
}

mod window;
