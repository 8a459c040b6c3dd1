//! Host-side helpers shared by the engines: widening half precision for reductions, averaging,
//! concatenating and splitting flat host buffers, and the per-collective header that every rank
//! exchanges first so that mismatched calls fail with a clear error on every rank instead of hanging.

use crate::group::ReduceOp;
use ember_storage::{DType, Error, HostData, Result};

/// Half-precision data widened to f32 for a reduction (MPI has no f16/bf16 type); other dtypes as is.
/// Sums of f16/bf16 are thus accumulated in f32 and rounded once (more accurate than a reduction in
/// half precision; documented on `MpiGroup`).
pub(crate) fn widen(h: HostData) -> HostData {
    match h {
        HostData::F16(v) => HostData::F32(v.iter().map(|x| x.to_f32()).collect()),
        HostData::BF16(v) => HostData::F32(v.iter().map(|x| x.to_f32()).collect()),
        other => other,
    }
}

/// Rounds widened data back to `dtype`.
pub(crate) fn narrow(h: HostData, dtype: DType) -> HostData {
    match (h, dtype) {
        (HostData::F32(v), DType::F16) => HostData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
        (HostData::F32(v), DType::BF16) => HostData::BF16(v.iter().map(|&x| half::bf16::from_f32(x)).collect()),
        (other, _) => other,
    }
}

/// Divides every element by `n` (the Avg of a Sum); floating data only (checked by `ReduceOp::check`).
pub(crate) fn divide(h: &mut HostData, n: usize) {
    match h {
        HostData::F32(v) => v.iter_mut().for_each(|x| *x /= n as f32),
        HostData::F64(v) => v.iter_mut().for_each(|x| *x /= n as f64),
        HostData::F16(v) => v.iter_mut().for_each(|x| *x = half::f16::from_f32(x.to_f32() / n as f32)),
        HostData::BF16(v) => v.iter_mut().for_each(|x| *x = half::bf16::from_f32(x.to_f32() / n as f32)),
        _ => {}
    }
}

/// Concatenates host buffers of one dtype.
pub(crate) fn concat(dtype: DType, parts: Vec<HostData>) -> Result<HostData> {
    let mut out = HostData::filled(dtype, 0, 0.0);
    for p in parts {
        match (&mut out, p) {
            (HostData::Bool(o), HostData::Bool(p)) => o.extend(p),
            (HostData::U8(o), HostData::U8(p)) => o.extend(p),
            (HostData::I32(o), HostData::I32(p)) => o.extend(p),
            (HostData::I64(o), HostData::I64(p)) => o.extend(p),
            (HostData::F16(o), HostData::F16(p)) => o.extend(p),
            (HostData::BF16(o), HostData::BF16(p)) => o.extend(p),
            (HostData::F32(o), HostData::F32(p)) => o.extend(p),
            (HostData::F64(o), HostData::F64(p)) => o.extend(p),
            (_, p) => {
                return Err(Error::dtype("concat", format!("cannot join {} data to {dtype} data", p.dtype())));
            }
        }
    }
    Ok(out)
}

/// Splits a flat buffer into consecutive pieces of `counts` elements (their sum is its length).
pub(crate) fn split(h: HostData, counts: &[usize]) -> Vec<HostData> {
    fn cut<T: Clone>(v: Vec<T>, counts: &[usize], wrap: fn(Vec<T>) -> HostData) -> Vec<HostData> {
        let mut start = 0;
        counts
            .iter()
            .map(|&n| {
                let piece = v[start..start + n].to_vec();
                start += n;
                wrap(piece)
            })
            .collect()
    }
    match h {
        HostData::Bool(v) => cut(v, counts, HostData::Bool),
        HostData::U8(v) => cut(v, counts, HostData::U8),
        HostData::I32(v) => cut(v, counts, HostData::I32),
        HostData::I64(v) => cut(v, counts, HostData::I64),
        HostData::F16(v) => cut(v, counts, HostData::F16),
        HostData::BF16(v) => cut(v, counts, HostData::BF16),
        HostData::F32(v) => cut(v, counts, HostData::F32),
        HostData::F64(v) => cut(v, counts, HostData::F64),
    }
}

/// Which collective a header describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    AllReduce = 1,
    Broadcast = 2,
    AllGather = 3,
    ReduceScatter = 4,
    Barrier = 5,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::AllReduce => "all_reduce",
            Kind::Broadcast => "broadcast",
            Kind::AllGather => "all_gather",
            Kind::ReduceScatter => "reduce_scatter",
            Kind::Barrier => "barrier",
        }
    }
    fn from_code(c: i64) -> &'static str {
        [Kind::AllReduce, Kind::Broadcast, Kind::AllGather, Kind::ReduceScatter, Kind::Barrier]
            .into_iter()
            .find(|k| *k as i64 == c)
            .map(Kind::name)
            .unwrap_or("an unknown collective")
    }
}

const DTYPES: [DType; 8] =
    [DType::Bool, DType::U8, DType::I32, DType::I64, DType::F16, DType::BF16, DType::F32, DType::F64];
const OPS: [ReduceOp; 5] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Product, ReduceOp::Max, ReduceOp::Min];
/// Dimensions written out in a header; a longer shape's tail is folded into the last slot's hash.
const DIMS: usize = 6;
/// Header length in i64s: kind, dtype, op, root, ndim, numel, dims.
pub(crate) const HEADER_LEN: usize = 6 + DIMS;

/// What one rank says it is calling: compared across ranks before any data moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Header(pub(crate) [i64; HEADER_LEN]);

fn fnv(vals: impl IntoIterator<Item = usize>) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for v in vals {
        h = (h ^ v as u64).wrapping_mul(0x100000001b3);
    }
    (h >> 1) as i64
}

impl Header {
    pub(crate) fn new(kind: Kind, dtype: Option<DType>, op: Option<ReduceOp>, root: usize, shape: &[usize]) -> Header {
        let mut h = [0i64; HEADER_LEN];
        h[0] = kind as i64;
        h[1] = dtype.and_then(|d| DTYPES.iter().position(|&x| x == d)).map_or(-1, |i| i as i64);
        h[2] = op.and_then(|o| OPS.iter().position(|&x| x == o)).map_or(-1, |i| i as i64);
        h[3] = root as i64;
        h[4] = shape.len() as i64;
        h[5] = shape.iter().product::<usize>() as i64;
        for (i, &d) in shape.iter().take(DIMS).enumerate() {
            h[6 + i] = d as i64;
        }
        if shape.len() > DIMS {
            h[6 + DIMS - 1] = fnv(shape[DIMS - 1..].iter().copied());
        }
        Header(h)
    }

    /// A header for `reduce_scatter`: its shape slots carry a hash of every input's shape.
    pub(crate) fn scatter(dtype: DType, op: ReduceOp, shapes: &[Vec<usize>]) -> Header {
        let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        let mut h = Header::new(Kind::ReduceScatter, Some(dtype), Some(op), 0, &[total]);
        h.0[7] = fnv(shapes.iter().flat_map(|s| std::iter::once(usize::MAX).chain(s.iter().copied())));
        h
    }

    pub(crate) fn numel(&self) -> usize {
        self.0[5] as usize
    }

    pub(crate) fn dim0(&self) -> usize {
        self.0[6] as usize
    }

    fn describe(&self) -> String {
        let dtype = usize::try_from(self.0[1]).ok().and_then(|i| DTYPES.get(i)).map_or("-".into(), |d| d.to_string());
        let op = usize::try_from(self.0[2]).ok().and_then(|i| OPS.get(i)).map_or("", |o| o.name());
        let ndim = self.0[4] as usize;
        let dims: Vec<String> = self.0[6..6 + ndim.min(DIMS)].iter().map(|d| d.to_string()).collect();
        let more = if ndim > DIMS { ", ..." } else { "" };
        let mut s = format!("{} {dtype} [{}{more}]", Kind::from_code(self.0[0]), dims.join(", "));
        if !op.is_empty() {
            s += &format!(" op={op}");
        }
        if self.0[0] == Kind::Broadcast as i64 {
            s += &format!(" root={}", self.0[3]);
        }
        s
    }

    /// Checks that every rank's header agrees with this rank's; `all_gather` lets the first
    /// dimension (and so the element count) differ. The error is the same on every rank.
    pub(crate) fn check_all(what: &str, all: &[Header]) -> Result<()> {
        let first = &all[0];
        let uneven = first.0[0] == Kind::AllGather as i64;
        let agrees = |h: &Header| {
            if uneven {
                h.0[..5] == first.0[..5] && h.0[7..] == first.0[7..]
            } else {
                h == first
            }
        };
        if all.iter().all(agrees) {
            return Ok(());
        }
        let listed: Vec<String> = all.iter().enumerate().map(|(r, h)| format!("rank {r}: {}", h.describe())).collect();
        Err(Error::invalid(
            what,
            format!(
                "the ranks called different collectives or passed tensors that do not match ({})",
                listed.join("; ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_that_differ_name_every_rank() {
        let a = Header::new(Kind::AllReduce, Some(DType::F32), Some(ReduceOp::Sum), 0, &[3, 4]);
        let b = Header::new(Kind::AllReduce, Some(DType::F32), Some(ReduceOp::Sum), 0, &[4]);
        let e = Header::check_all("all_reduce", &[a.clone(), b]).unwrap_err().to_string();
        assert!(e.contains("rank 0: all_reduce f32 [3, 4] op=sum") && e.contains("rank 1: all_reduce f32 [4]"), "{e}");
        assert!(Header::check_all("all_reduce", &[a.clone(), a]).is_ok());
    }

    #[test]
    fn all_gather_headers_may_differ_in_the_first_dimension_only() {
        let a = Header::new(Kind::AllGather, Some(DType::I64), None, 0, &[2, 5]);
        let b = Header::new(Kind::AllGather, Some(DType::I64), None, 0, &[0, 5]);
        let c = Header::new(Kind::AllGather, Some(DType::I64), None, 0, &[2, 6]);
        assert!(Header::check_all("all_gather", &[a.clone(), b]).is_ok());
        assert!(Header::check_all("all_gather", &[a, c]).is_err());
    }

    #[test]
    fn long_shapes_are_told_apart_by_their_tail() {
        let a = Header::new(Kind::Broadcast, Some(DType::F64), None, 0, &[1, 1, 1, 1, 1, 1, 2, 3]);
        let b = Header::new(Kind::Broadcast, Some(DType::F64), None, 0, &[1, 1, 1, 1, 1, 1, 3, 2]);
        assert_ne!(a, b);
    }

    #[test]
    fn half_data_round_trips_through_f32_and_split_undoes_concat() {
        let h = HostData::F16(vec![half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]);
        assert_eq!(narrow(widen(h.clone()), DType::F16).to_f64s(), h.to_f64s());
        let joined =
            concat(DType::I32, vec![HostData::I32(vec![1, 2]), HostData::I32(vec![]), HostData::I32(vec![3])]).unwrap();
        let parts = split(joined, &[2, 0, 1]);
        assert_eq!(parts.iter().map(|p| p.to_i64s()).collect::<Vec<_>>(), vec![vec![1, 2], vec![], vec![3]]);
        let mut avg = HostData::F32(vec![3.0, 6.0]);
        divide(&mut avg, 3);
        assert_eq!(avg.to_f64s(), vec![1.0, 2.0]);
    }
}
