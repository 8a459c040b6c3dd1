//! Fused elementwise programs ([`FusedKernels::elementwise`](ember_storage::FusedKernels::elementwise)):
//! one pass over the output in tiles of [`TILE`] elements. Each tile is taken through every step of
//! the program while it is in L1/L2 with the same vectorised per-element code as the eager kernels
//! (`unary_slice`/`binary_slice`, expanded from the op table's `cpu` column), so the result is
//! bit-identical to running the steps one by one, whatever the tile size or thread count.
//!
//! Scratch tiles are reused once a step's value is dead (a register allocation over the steps), so
//! a chain of ten ops touches a few tiles, not ten. Inputs are read in place when contiguous, filled
//! once per thread when they are a broadcast scalar, and gathered per tile otherwise.

use crate::buffer::CpuBuffer;
use crate::elementwise::{binary_slice, unary_slice};
use crate::host::{buf, checked};
use crate::pool::take;
use crate::real::Real;
use crate::rows::Rows;
use crate::threading::{par_threshold, pool};
use ember_storage::{Buffer, DType, ElementwiseProgram, Error, HostData, Layout, Result, Step, View};
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

/// Where each step's tile lives: an input read in place, or a scratch slot.
#[derive(Clone, Copy)]
enum Slot {
    InPlace(usize),
    Scratch(usize),
}

/// Assigns scratch slots to steps, reusing a slot once the last reader of its value has run.
fn allocate<T>(steps: &[Step], srcs: &[Source<'_, T>]) -> (Vec<Slot>, usize) {
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
    // scalar inputs keep their slot for the whole pass (filled once per thread)
    let mut pinned = vec![false; steps.len()];
    for (k, s) in steps.iter().enumerate() {
        if let Step::Input(i) = *s {
            if let Source::Dense(_) = srcs[i] {
                slots.push(Slot::InPlace(i));
                continue;
            }
            pinned[k] = matches!(srcs[i], Source::Scalar(_));
        }
        // a scalar's slot is filled before the pass, so it never takes a slot another step wrote
        let slot = match free.pop() {
            Some(f) if !pinned[k] => f,
            reused => {
                free.extend(reused);
                count += 1;
                count - 1
            }
        };
        slots.push(Slot::Scratch(slot));
        // operands whose last reader is this step free their slots after it
        let operands = match *s {
            Step::Input(_) => [None, None],
            Step::Unary(_, a) => [Some(a), None],
            Step::Binary(_, a, b) => [Some(a), if b != a { Some(b) } else { None }],
        };
        for j in operands.into_iter().flatten() {
            if last_use[j] == k && !pinned[j] {
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
    unsafe fn range(&self, j: usize, start: usize, len: usize) -> &mut [T] {
        // SAFETY: the caller guarantees the range is in bounds and not aliased.
        unsafe { std::slice::from_raw_parts_mut(self.0[j].add(start), len) }
    }
}

fn run_typed<T: Real>(p: &ElementwiseProgram, srcs: &[Source<'_, T>]) -> Vec<Vec<T>> {
    let n = p.numel();
    let mut outs: Vec<Vec<T>> = p.outputs.iter().map(|_| take(n)).collect();
    if n == 0 {
        return outs;
    }
    let (slots, count) = allocate(&p.steps, srcs);
    let ptrs = Outputs(outs.iter_mut().map(|o| o.as_mut_ptr()).collect());
    let init = || {
        let mut scratch = vec![vec![T::default(); TILE.min(n)]; count];
        for (k, s) in p.steps.iter().enumerate() {
            if let (Step::Input(i), Slot::Scratch(slot)) = (*s, slots[k]) {
                if let Source::Scalar(v) = srcs[i] {
                    scratch[slot].fill(v);
                }
            }
        }
        scratch
    };
    let tile = |scratch: &mut Vec<Vec<T>>, t: usize| {
        let (start, end) = (t * TILE, ((t + 1) * TILE).min(n));
        let len = end - start;
        for (k, s) in p.steps.iter().enumerate() {
            let Slot::Scratch(dst) = slots[k] else { continue };
            match *s {
                Step::Input(i) => {
                    if let Source::Strided(data, rows) = &srcs[i] {
                        gather_range(data, rows, start, &mut scratch[dst][..len]);
                    }
                }
                Step::Unary(op, a) => {
                    let mut o = std::mem::take(&mut scratch[dst]);
                    unary_slice(op, value(&slots, srcs, scratch, a, start, len), &mut o[..len]);
                    scratch[dst] = o;
                }
                Step::Binary(op, a, b) => {
                    let mut o = std::mem::take(&mut scratch[dst]);
                    let (va, vb) =
                        (value(&slots, srcs, scratch, a, start, len), value(&slots, srcs, scratch, b, start, len));
                    binary_slice(op, va, vb, &mut o[..len]);
                    scratch[dst] = o;
                }
            }
            for (j, &out_step) in p.outputs.iter().enumerate() {
                if out_step == k {
                    let v = value(&slots, srcs, scratch, k, start, len);
                    // SAFETY: output `j` has `n` elements and this tile writes only `[start, end)`,
                    // which no other tile writes (see `Outputs`).
                    let o = unsafe { ptrs.range(j, start, len) };
                    o.copy_from_slice(v);
                }
            }
        }
        // an output that is an input read in place is copied too
        for (j, &out_step) in p.outputs.iter().enumerate() {
            if let Slot::InPlace(_) = slots[out_step] {
                let v = value(&slots, srcs, scratch, out_step, start, len);
                // SAFETY: as above, this tile's own range of output `j`.
                let o = unsafe { ptrs.range(j, start, len) };
                o.copy_from_slice(v);
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

/// The tile `[start, start + len)` of step `k`'s value.
fn value<'a, T: Copy>(
    slots: &[Slot],
    srcs: &'a [Source<'a, T>],
    scratch: &'a [Vec<T>],
    k: usize,
    start: usize,
    len: usize,
) -> &'a [T] {
    match slots[k] {
        Slot::InPlace(i) => match &srcs[i] {
            Source::Dense(d) => &d[start..start + len],
            _ => unreachable!("only dense inputs are read in place"),
        },
        Slot::Scratch(s) => &scratch[s][..len],
    }
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
        for (j, slot) in out[o..o + take].iter_mut().enumerate() {
            *slot = data[b + (skip + j) * st];
        }
        o += take;
        skip = 0;
    });
}
