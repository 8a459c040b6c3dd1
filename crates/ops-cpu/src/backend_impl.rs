//! `impl Backend for CpuBackend`: each op family checks its views and dispatches on the dtype to
//! the kernels of its module.

use crate::host::*;
use crate::reduce::{convert_pooled, sum_run_f32, sum_run_f64, Reducer};
use crate::strided::{gather, map3, with_dense};
use crate::CpuBackend;
use crate::{pool, reduce, strided};

use crate::elementwise::{binary_float, binary_int, binary_predicate, unary_float, unary_int, unary_predicate};
use crate::lines::per_line;
use crate::oom::guarded;
use crate::reduce_ops::reduce_typed;
use crate::scan::scan_typed;
use crate::sort::sort_typed;
use crate::{index, matmul, rng, softmax, threading, window};
use ember_storage::{
    with_host_data, Backend, BinaryOp, Buffer, DType, Device, DeviceBuffer, Element, Error, FusedKernels, HostData,
    IndexOp, ReduceOp, Result, RngKey, RngOp, Scalar, ScanOp, UnaryOp, View, WindowGeometry,
};
use half::{bf16, f16};

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
                // into a cached buffer: a fresh large one would be page-faulted in on every download
                return Ok(with_host_data!(&*g, v => {
                    let mut out = crate::pool::take(v.len());
                    out.copy_from_slice(v);
                    HostData::from_vec(out)
                }));
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
                    HostData::F16(v) => HostData::F16(via_f32(v, l, |x, d| unary_float(op, x, d))),
                    HostData::BF16(v) => HostData::BF16(via_f32(v, l, |x, d| unary_float(op, x, d))),
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
                    (HostData::F16(x), HostData::F16(y)) => {
                        HostData::F16(via_f32_2(x, la, y, lb, |x, lx, y, ly| binary_float(op, x, lx, y, ly)))
                    }
                    (HostData::BF16(x), HostData::BF16(y)) => {
                        HostData::BF16(via_f32_2(x, la, y, lb, |x, lx, y, ly| binary_float(op, x, lx, y, ly)))
                    }
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
                    HostData::F16(via_f32(v, l, |f, d| per_line(d, dim, n, |s, st, o| softmax::line(f, s, st, o, log))))
                }
                HostData::BF16(v) => HostData::BF16(via_f32(v, l, |f, d| {
                    per_line(d, dim, n, |s, st, o| softmax::line(f, s, st, o, log))
                })),
                other => return Err(Error::dtype("softmax", format!("needs a floating dtype, got {}", other.dtype()))),
            }))
        })
    }

    fn matmul(&self, a: View, b: View) -> Result<Buffer> {
        guarded("matmul", || {
            let (ba, bb) = (checked(a, "matmul")?, checked(b, "matmul")?);
            let (la, lb) = (a.1, b.1);
            ember_storage::shape::check_matmul_shapes(la.shape(), lb.shape())?;
            with2(ba, bb, |da, db| {
                Ok(buf(match (da, db) {
                    (HostData::F32(x), HostData::F32(y)) => HostData::F32(matmul::matmul(x, la, y, lb)),
                    (HostData::F64(x), HostData::F64(y)) => HostData::F64(matmul::matmul(x, la, y, lb)),
                    (HostData::F16(x), HostData::F16(y)) => HostData::F16(matmul::matmul(x, la, y, lb)),
                    (HostData::BF16(x), HostData::BF16(y)) => HostData::BF16(via_f32_2(x, la, y, lb, matmul::matmul)),
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
                HostData::F16(v) => HostData::F16(via_f32(v, l, |f, _| window::col2im(f, geom, &out_sp))),
                HostData::BF16(v) => HostData::BF16(via_f32(v, l, |f, _| window::col2im(f, geom, &out_sp))),
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
