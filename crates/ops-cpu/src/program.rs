//! Fused elementwise programs ([`FusedKernels::elementwise`](ember_storage::FusedKernels::elementwise)):
//! one pass over the output in tiles of [`TILE`] elements. Each tile is taken through every step of
//! the program while it is in L1/L2 with the same vectorised per-element code as the eager kernels
//! (`unary_slice`/`binary_slice`, expanded from the op table's `cpu` column), so the result is
//! bit-identical to running the steps one by one, whatever the tile size or thread count.
//!
//! Scratch tiles are reused once a step's value is dead (a register allocation over the steps), so
//! a chain of ten ops touches a few tiles, not ten. Inputs are read in place when contiguous, filled
//! as a single value when they are a broadcast scalar (an op with a scalar operand reads one
//! stream, not two), and gathered per tile otherwise.

use crate::buffer::CpuBuffer;
use crate::elementwise::{binary_slice, binary_slice_scalar_lhs, binary_slice_scalar_rhs, unary_slice};
use crate::host::{buf, checked};
use crate::pool::take;
use crate::real::Real;
use crate::rows::Rows;
use crate::threading::{par_threshold, pool};
use ember_storage::{
    BinaryOp, Buffer, DType, ElementwiseProgram, Error, HostData, Layout, Result, Step, UnaryOp, View,
};
use rayon::prelude::*;
use std::sync::RwLockReadGuard;

/// Elements per tile: a few live f32/f64 tiles stay within L1/L2.
const TILE: usize = 2048;

/// How a program input is read.
enum Source<'a, T> {
    /// Contiguous: the tile is a subslice, read in place.
    Dense(&'a [T]),
    /// Every element is the same value (a broadcast scalar): filled once per thread.
    Scalar(T),
    /// Any other view: gathered per tile, row by row.
    Strided(&'a [T], Rows<1>),
}

/// Runs `program` over `inputs` on the CPU.
pub(crate) fn run(program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>> {
    const OP: &str = "elementwise program";
    program.check(inputs.len())?;
    let mut bufs: Vec<&CpuBuffer> = vec![];
    for v in inputs {
        let b = checked(*v, OP)?;
        let dt = b.read().dtype();
        if dt != program.dtype || v.1.shape() != program.shape.as_slice() {
            return Err(Error::shape(
                OP,
                format!(
                    "input {:?} {dt} does not match the program's {:?} {}",
                    v.1.shape(),
                    program.shape,
                    program.dtype
                ),
            ));
        }
        if !bufs.iter().any(|&seen| std::ptr::eq(seen, b)) {
            bufs.push(b);
        }
    }
    // one read lock per distinct buffer, held for the whole pass
    let guards: Vec<RwLockReadGuard<'_, HostData>> = bufs.iter().map(|b| b.read()).collect();
    let data = |v: &View| -> &HostData {
        let b = CpuBuffer::of(v.0, OP).expect("checked above");
        let k = bufs.iter().position(|&seen| std::ptr::eq(seen, b)).expect("locked above");
        &guards[k]
    };
    Ok(match program.dtype {
        DType::F32 => {
            let srcs = inputs.iter().map(|v| source(as_f32(data(v)), v.1)).collect::<Vec<_>>();
            run_typed::<f32>(program, &srcs).into_iter().map(|o| buf(HostData::F32(o))).collect()
        }
        DType::F64 => {
            let srcs = inputs.iter().map(|v| source(as_f64(data(v)), v.1)).collect::<Vec<_>>();
            run_typed::<f64>(program, &srcs).into_iter().map(|o| buf(HostData::F64(o))).collect()
        }
        other => return Err(Error::dtype(OP, format!("programs are f32 or f64, got {other}"))),
    })
}

fn as_f32(d: &HostData) -> &[f32] {
    match d {
        HostData::F32(v) => v,
        _ => unreachable!("dtype checked"),
    }
}

fn as_f64(d: &HostData) -> &[f64] {
    match d {
        HostData::F64(v) => v,
        _ => unreachable!("dtype checked"),
    }
}

fn source<'a, T: Copy>(data: &'a [T], l: &'a Layout) -> Source<'a, T> {
    if let Some((s, e)) = l.contiguous_range() {
        return Source::Dense(&data[s..e]);
    }
    if l.numel() > 0 && l.strides().iter().zip(l.shape()).all(|(&st, &n)| st == 0 || n == 1) {
        return Source::Scalar(data[l.offset()]);
    }
    Source::Strided(data, Rows::new([l]))
}

/// Where each step's tile lives: an input read in place, a broadcast scalar (no tile at all), the
/// tile of an output (a value the program returns is computed straight into it), or a scratch slot.
#[derive(Clone, Copy)]
enum Slot<T> {
    InPlace(usize),
    Scalar(T),
    Output(usize),
    Scratch(usize),
}

/// Assigns scratch slots to steps, reusing a slot once the last reader of its value has run.
fn allocate<T: Copy>(steps: &[Step], outputs: &[usize], srcs: &[Source<'_, T>]) -> (Vec<Slot<T>>, usize) {
    let mut last_use = vec![0usize; steps.len()];
    for (k, s) in steps.iter().enumerate() {
        match *s {
            Step::Input(_) => {}
            Step::Unary(_, a) => last_use[a] = k,
            Step::Binary(_, a, b) => {
                last_use[a] = k;
                last_use[b] = k;
            }
        }
    }
    let mut slots = Vec::with_capacity(steps.len());
    let mut free: Vec<usize> = vec![];
    let mut count = 0;
    for (k, s) in steps.iter().enumerate() {
        if let Step::Input(i) = *s {
            match srcs[i] {
                Source::Dense(_) => {
                    slots.push(Slot::InPlace(i));
                    continue;
                }
                Source::Scalar(v) => {
                    slots.push(Slot::Scalar(v));
                    continue;
                }
                Source::Strided(..) => {}
            }
        } else if let Some(j) = outputs.iter().position(|&o| o == k) {
            slots.push(Slot::Output(j));
            continue;
        }
        let slot = free.pop().unwrap_or_else(|| {
            count += 1;
            count - 1
        });
        slots.push(Slot::Scratch(slot));
        // operands whose last reader is this step free their slots after it
        let operands = match *s {
            Step::Input(_) => [None, None],
            Step::Unary(_, a) => [Some(a), None],
            Step::Binary(_, a, b) => [Some(a), if b != a { Some(b) } else { None }],
        };
        for j in operands.into_iter().flatten() {
            if last_use[j] == k {
                if let Slot::Scratch(sj) = slots[j] {
                    if sj != slot {
                        free.push(sj);
                    }
                }
            }
        }
    }
    (slots, count)
}

/// Output pointers shared by the tiles.
struct Outputs<T>(Vec<*mut T>);
// SAFETY: every tile writes only its own disjoint range `[start, end)` of each output (see
// `run_typed`), and the vectors outlive the parallel loop, so sharing the pointers is sound.
unsafe impl<T: Send> Send for Outputs<T> {}
// SAFETY: as for `Send`: the ranges written through the pointers never overlap.
unsafe impl<T: Send> Sync for Outputs<T> {}

impl<T> Outputs<T> {
    /// `len` elements of output `j` from `start`.
    ///
    /// # Safety
    /// `[start, start + len)` must lie within output `j` and be written by no one else meanwhile.
    #[allow(clippy::mut_from_ref)]
    // SAFETY: an `unsafe fn`: callers uphold the contract above (each call site says how).
    unsafe fn range(&self, j: usize, start: usize, len: usize) -> &mut [T] {
        // SAFETY: the caller guarantees the range is in bounds and not aliased.
        unsafe { std::slice::from_raw_parts_mut(self.0[j].add(start), len) }
    }

    /// `len` elements of output `j` from `start`, to read.
    ///
    /// # Safety
    /// `[start, start + len)` must lie within output `j`, be initialised, and not be written meanwhile.
    // SAFETY: an `unsafe fn`: callers uphold the contract above (each call site says how).
    unsafe fn range_ref(&self, j: usize, start: usize, len: usize) -> &[T] {
        // SAFETY: the caller guarantees the range is in bounds and not written while borrowed.
        unsafe { std::slice::from_raw_parts(self.0[j].add(start), len) }
    }
}

fn run_typed<T: Real>(p: &ElementwiseProgram, srcs: &[Source<'_, T>]) -> Vec<Vec<T>> {
    let n = p.numel();
    let mut outs: Vec<Vec<T>> = p.outputs.iter().map(|_| take(n)).collect();
    if n == 0 {
        return outs;
    }
    let (slots, count) = allocate(&p.steps, &p.outputs, srcs);
    let ptrs = Outputs(outs.iter_mut().map(|o| o.as_mut_ptr()).collect());
    let init = || vec![vec![T::default(); TILE.min(n)]; count];
    let tile = |scratch: &mut Vec<Vec<T>>, t: usize| {
        let (start, end) = (t * TILE, ((t + 1) * TILE).min(n));
        let len = end - start;
        for (k, s) in p.steps.iter().enumerate() {
            let (mut tile_vec, into_output) = match slots[k] {
                Slot::Scratch(dst) => (std::mem::take(&mut scratch[dst]), None),
                Slot::Output(j) => (Vec::new(), Some(j)),
                Slot::InPlace(_) | Slot::Scalar(_) => continue,
            };
            let o: &mut [T] = match into_output {
                // SAFETY: output `j` has `n` elements and this tile alone writes `[start, end)`
                // (see `Outputs`); the step's operands are other steps, whose tiles are other
                // memory, so this is the only slice of the range alive while it is written.
                Some(j) => unsafe { ptrs.range(j, start, len) },
                None => &mut tile_vec[..len],
            };
            let at = |j: usize| value(&slots, srcs, scratch, &ptrs, j, start, len);
            match *s {
                Step::Input(i) => {
                    if let Source::Strided(data, rows) = &srcs[i] {
                        gather_range(data, rows, start, o);
                    }
                }
                Step::Unary(op, a) => match at(a) {
                    Value::Tile(x) => unary_slice(op, x, o),
                    Value::Scalar(x) => o.fill(scalar_unary(op, x)),
                },
                Step::Binary(op, a, b) => match (at(a), at(b)) {
                    (Value::Tile(x), Value::Tile(y)) => binary_slice(op, x, y, o),
                    (Value::Tile(x), Value::Scalar(y)) => binary_slice_scalar_rhs(op, x, y, o),
                    (Value::Scalar(x), Value::Tile(y)) => binary_slice_scalar_lhs(op, x, y, o),
                    (Value::Scalar(x), Value::Scalar(y)) => o.fill(scalar_binary(op, x, y)),
                },
            }
            if let Slot::Scratch(dst) = slots[k] {
                scratch[dst] = tile_vec;
            }
        }
        // outputs not computed in place: an input returned as it is, or a step listed twice
        for (j, &out_step) in p.outputs.iter().enumerate() {
            if matches!(slots[out_step], Slot::Output(first) if first == j) {
                continue;
            }
            let v = value(&slots, srcs, scratch, &ptrs, out_step, start, len);
            // SAFETY: output `j` has `n` elements and this tile writes only `[start, end)`, which
            // no other tile writes (see `Outputs`); `v` is another output's range or not an
            // output at all.
            let o = unsafe { ptrs.range(j, start, len) };
            match v {
                Value::Tile(v) => o.copy_from_slice(v),
                Value::Scalar(v) => o.fill(v),
            }
        }
    };
    let tiles = n.div_ceil(TILE);
    if n >= par_threshold() && tiles > 1 {
        pool().install(|| (0..tiles).into_par_iter().for_each_init(init, tile));
    } else {
        let mut scratch = init();
        for t in 0..tiles {
            tile(&mut scratch, t);
        }
    }
    drop(ptrs);
    outs
}

/// A step's value over one tile.
#[derive(Clone, Copy)]
enum Value<'a, T> {
    Tile(&'a [T]),
    /// The same value everywhere (a broadcast scalar input).
    Scalar(T),
}

/// The tile `[start, start + len)` of step `k`'s value.
fn value<'a, T: Copy>(
    slots: &[Slot<T>],
    srcs: &'a [Source<'a, T>],
    scratch: &'a [Vec<T>],
    outputs: &'a Outputs<T>,
    k: usize,
    start: usize,
    len: usize,
) -> Value<'a, T> {
    match slots[k] {
        Slot::InPlace(i) => match &srcs[i] {
            Source::Dense(d) => Value::Tile(&d[start..start + len]),
            _ => unreachable!("only dense inputs are read in place"),
        },
        Slot::Scalar(v) => Value::Scalar(v),
        // SAFETY: this tile computed step `k` into its own range of output `j` earlier in the
        // tile, and nothing writes that range while the value is read.
        Slot::Output(j) => Value::Tile(unsafe { outputs.range_ref(j, start, len) }),
        Slot::Scratch(s) => Value::Tile(&scratch[s][..len]),
    }
}

/// A unary op of the table on one value (the tile kernel on a one-element slice: the same bits).
fn scalar_unary<T: Real>(op: UnaryOp, x: T) -> T {
    let mut o = [x];
    unary_slice(op, &[x], &mut o);
    o[0]
}

/// A binary op of the table on two values, as [`scalar_unary`].
fn scalar_binary<T: Real>(op: BinaryOp, x: T, y: T) -> T {
    let mut o = [x];
    binary_slice(op, &[x], &[y], &mut o);
    o[0]
}

/// Copies the elements `[start, start + out.len())` (row-major order) of a strided view into `out`.
fn gather_range<T: Copy>(data: &[T], rows: &Rows<1>, start: usize, out: &mut [T]) {
    let (len, st) = (rows.len.max(1), rows.inner[0]);
    let first = start / len;
    let last = (start + out.len()).div_ceil(len);
    let mut o = 0;
    let mut skip = start - first * len;
    rows.for_rows(first, last - first, |[b]| {
        let take = (len - skip).min(out.len() - o);
        let dst = &mut out[o..o + take];
        match st {
            // a broadcast column (the same value along the row) and a dense row: no index arithmetic
            0 => dst.fill(data[b]),
            1 => dst.copy_from_slice(&data[b + skip..b + skip + take]),
            _ => {
                for (j, slot) in dst.iter_mut().enumerate() {
                    *slot = data[b + (skip + j) * st];
                }
            }
        }
        o += take;
        skip = 0;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threading::set_par_threshold;
    use crate::CpuBackend;
    use ember_storage::Backend;

    /// A program over several tiles, on both the serial and the parallel path, with every kind of
    /// input (dense, broadcast scalar on either side, transposed, broadcast row) and outputs that
    /// are intermediate, repeated or an input, gives the bits of running its steps one by one.
    #[test]
    fn matches_the_steps_run_one_by_one() {
        let be = CpuBackend::new();
        let (r, c) = (3, TILE + 37);
        let n = r * c;
        let vals: Vec<f32> = (0..n).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 311.0).collect();
        let x = be.upload(HostData::F32(vals.clone())).unwrap();
        let xt_data = be.upload(HostData::F32(vals)).unwrap();
        let s = be.upload(HostData::F32(vec![0.75])).unwrap();
        let row = be.upload(HostData::F32((0..c).map(|i| i as f32 / c as f32).collect())).unwrap();
        let shape = [r, c];
        let dense = Layout::contiguous(&shape);
        let scalar = Layout::contiguous(&[1, 1]).expand(&shape).unwrap();
        let row_l = Layout::contiguous(&[1, c]).expand(&shape).unwrap();
        let xt_l = Layout::contiguous(&[c, r]).transpose(0, 1).unwrap();
        let inputs: Vec<(&Buffer, &Layout)> = vec![(&x, &dense), (&s, &scalar), (&row, &row_l), (&xt_data, &xt_l)];
        let steps = vec![
            Step::Input(0),
            Step::Input(1),
            Step::Binary(BinaryOp::Mul, 0, 1), // x * s
            Step::Binary(BinaryOp::Sub, 1, 0), // s - x
            Step::Unary(UnaryOp::Tanh, 3),
            Step::Input(2),
            Step::Binary(BinaryOp::Add, 4, 5), // + row
            Step::Input(3),
            Step::Binary(BinaryOp::Mul, 6, 7), // * x^T
            Step::Unary(UnaryOp::Exp, 1),      // exp(s), a scalar step
            Step::Binary(BinaryOp::Div, 8, 9),
            Step::Binary(BinaryOp::Add, 10, 2),
        ];
        let program =
            ElementwiseProgram { dtype: DType::F32, shape: shape.to_vec(), steps, outputs: vec![11, 4, 4, 0, 9] };
        // the same steps, one eager op each
        let eager = program.run_stepwise(&be, &inputs).unwrap();
        let want: Vec<Vec<u32>> = eager
            .iter()
            .map(|b| match be.download((b, &dense)).unwrap() {
                HostData::F32(v) => v.iter().map(|v| v.to_bits()).collect(),
                _ => unreachable!(),
            })
            .collect();
        let before = par_threshold();
        for threshold in [usize::MAX, 1] {
            set_par_threshold(threshold);
            let got = run(&program, &inputs).unwrap();
            assert_eq!(got.len(), want.len());
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                let g = match be.download((g, &dense)).unwrap() {
                    HostData::F32(v) => v.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    _ => unreachable!(),
                };
                assert!(g == *w, "output {j} differs (parallel threshold {threshold})");
            }
        }
        set_par_threshold(before);
    }

    /// Inputs that do not fit the program are an error naming it, not a crash.
    #[test]
    fn rejects_inputs_of_another_shape() {
        let be = CpuBackend::new();
        let x = be.upload(HostData::F32(vec![1.0; 6])).unwrap();
        let l = Layout::contiguous(&[6]);
        let program = ElementwiseProgram {
            dtype: DType::F32,
            shape: vec![2, 3],
            steps: vec![Step::Input(0), Step::Unary(UnaryOp::Neg, 0)],
            outputs: vec![1],
        };
        let e = run(&program, &[(&x, &l)]).unwrap_err().to_string();
        assert!(e.contains("elementwise program"), "{e}");
    }
}
