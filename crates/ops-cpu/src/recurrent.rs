//! One direction of an LSTM layer over a whole sequence, fused into one kernel each way.
//!
//! Per step, the forward multiplies the previous hidden state by the recurrent weight and runs the
//! cell's elementwise work (gate activations, new cell and hidden state); the backward runs the
//! cell's gradient and multiplies the gates' gradient by the recurrent weight. The hidden units are
//! split into parts, one per thread: a part's thread computes only its units' four gates (from its
//! own packed slice of the weight) and its units' states, so the threads of one step share nothing
//! but the previous step's hidden state (forward) or gates' gradient (backward). The threads stay
//! with the sequence for its whole length and meet at a spin barrier between steps
//! ([`run_staged`]) instead of handing each small step to the pool.
//!
//! Gate order within a row of `4H` is PyTorch's: input, forget, cell candidate, output.

use crate::matmul::{gemm_into, GemmElement, Operand};
use crate::real::Real;
use crate::scalar::sigmoid;
use crate::simd::vectorised;
use crate::staged::{run_staged, SharedBuf};
use crate::threading::{par_threshold, pool};
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

/// A multiple of `gemm`'s SIMD width (8 f32 or 4 f64 lanes with AVX2).
const UNIT_ALIGN: usize = 8;

/// The sizes and direction of one sequence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub(crate) steps: usize,
    pub(crate) batch: usize,
    pub(crate) hidden: usize,
    /// Steps run from the last time index to the first.
    pub(crate) reverse: bool,
}

impl Dims {
    /// The time index of the `s`-th step taken.
    fn time(&self, s: usize) -> usize {
        if self.reverse {
            self.steps - 1 - s
        } else {
            s
        }
    }

    /// The hidden units of part `p` of `parts`. Parts start at multiples of [`UNIT_ALIGN`], so
    /// every part but the last spans a whole number of SIMD vectors: `gemm` then multiplies by the
    /// weight's columns in place instead of packing them again at every step.
    fn units(&self, p: usize, parts: usize) -> Range<usize> {
        let cut = |p: usize| {
            if p >= parts {
                self.hidden
            } else {
                ((p * self.hidden / parts + UNIT_ALIGN / 2) / UNIT_ALIGN * UNIT_ALIGN).min(self.hidden)
            }
        };
        cut(p)..cut(p + 1)
    }

    /// Elements in one `[T, B, H]` plane of the states.
    fn plane(&self) -> usize {
        self.steps * self.batch * self.hidden
    }
}

/// How many parts (threads) each step splits into: one for steps too small to share, and never
/// more than the machine has cores: a part whose thread waits for a core stalls every step
/// (W10 on 2 cores with 3 pool threads: 34 ms against 17.5 ms).
pub(crate) fn part_count(d: Dims) -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = pool().current_num_threads().min(cores);
    let work = d.batch * 4 * d.hidden * d.hidden;
    if threads > 1 && d.hidden >= 2 && work >= par_threshold() {
        threads.min(d.hidden)
    } else {
        1
    }
}

/// A part's own scratch. Tasks of one part never run at once, so its lock is never contended.
fn own<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The four gates' pieces `[units]` of row `row` of a `[rows, 4H]` buffer, for writing.
///
/// # Safety
/// No other thread may touch these elements while the slices live.
#[allow(clippy::mut_from_ref)]
// SAFETY (contract): callers guarantee exclusive access to the four pieces.
unsafe fn gate_pieces<'a, T>(
    buf: &'a SharedBuf<'_, T>,
    row: usize,
    hidden: usize,
    units: &Range<usize>,
) -> [&'a mut [T]; 4] {
    // SAFETY: the four pieces are disjoint (gate g covers g*H + units); exclusivity is the caller's promise.
    // The offsets cannot wrap: they are below the buffer's length, which was allocated from the same
    // sizes (pool::take_n saturates, so an overflowing size fails to allocate instead), and
    // `piece_mut` checks its bounds with checked arithmetic.
    [0, 1, 2, 3].map(|g| unsafe { buf.piece_mut(row * 4 * hidden + g * hidden + units.start, units.len()) })
}

/// A forward part's scratch: its units' columns of `W_hhᵀ` packed `[H, 4u]`, and the step's gate
/// pre-activations `[B, 4u]`.
struct ForwardPart<T> {
    w: Vec<T>,
    pre: Vec<T>,
}

/// The forward over a sequence: `gi` `[T, B, 4H]` (input projections with both biases), `h0`,
/// `c0` `[B, H]`, `w_hh` `[4H, H]`, all dense. Returns the hidden and cell states of every step
/// `[2, T, B, H]` (time order) and the activated gates `[T, B, 4H]`.
pub(crate) fn sequence_forward<T: Real + GemmElement>(
    gi: &[T],
    h0: &[T],
    c0: &[T],
    w_hh: &[T],
    d: Dims,
    parts: usize,
) -> (Vec<T>, Vec<T>) {
    let (b, h, plane) = (d.batch, d.hidden, d.plane());
    // pooled: the tasks write every element (all units of every row of every step)
    let (mut y, mut gates): (Vec<T>, Vec<T>) = (crate::pool::take_n(&[2, plane]), crate::pool::take_n(&[plane, 4]));
    let scratch: Vec<Mutex<ForwardPart<T>>> = (0..parts)
        .map(|p| {
            let u = d.units(p, parts).len();
            Mutex::new(ForwardPart { w: vec![T::zero(); h * 4 * u], pre: vec![T::zero(); b * 4 * u] })
        })
        .collect();
    let (ys, gs) = (SharedBuf::new(&mut y), SharedBuf::new(&mut gates));
    run_staged(d.steps, parts, |s, p| {
        let units = d.units(p, parts);
        let u = units.len();
        if u == 0 {
            return;
        }
        let mut guard = own(&scratch[p]);
        let part = &mut *guard;
        if s == 0 {
            pack_gate_columns(w_hh, h, &units, &mut part.w);
        }
        let t = d.time(s);
        for r in 0..b {
            let row = &gi[(t * b + r) * 4 * h..][..4 * h];
            for g in 0..4 {
                part.pre[(4 * r + g) * u..][..u].copy_from_slice(&row[g * h + units.start..][..u]);
            }
        }
        let prev = (s > 0).then(|| d.time(s - 1));
        // SAFETY: the previous step was the previous stage, which has finished; this stage writes
        // only time t's states.
        let h_prev = match prev {
            None => h0,
            Some(tp) => unsafe { ys.piece(tp * b * h, b * h) },
        };
        let w = Operand { data: &part.w[..], rs: 4 * u, cs: 1 };
        gemm_into((b, h, 4 * u), &mut part.pre, Operand { data: h_prev, rs: h, cs: 1 }, w, true);
        let pre = &part.pre;
        vectorised(
            #[inline(always)]
            || {
                for r in 0..b {
                    let at = |row: usize| row * h + units.start;
                    // SAFETY: as for h_prev.
                    let c_prev = match prev {
                        None => &c0[at(r)..][..u],
                        Some(tp) => unsafe { ys.piece(plane + at(tp * b + r), u) },
                    };
                    let row = t * b + r;
                    // SAFETY: only this task writes this part's units of time t, and no task reads
                    // them before the next stage.
                    let (act, c, hh) = unsafe {
                        (gate_pieces(&gs, row, h, &units), ys.piece_mut(plane + at(row), u), ys.piece_mut(at(row), u))
                    };
                    forward_units(&pre[4 * r * u..][..4 * u], c_prev, act, c, hh);
                }
            },
        );
    });
    (y, gates)
}

/// Packs the columns of `W_hhᵀ` (rows of `w_hh` `[4H, H]`) of `units`' four gates into `out`
/// `[H, 4u]`: `out[k, g*u + j] = w_hh[g*H + units.start + j, k]`.
fn pack_gate_columns<T: Copy>(w_hh: &[T], hidden: usize, units: &Range<usize>, out: &mut [T]) {
    let u = units.len();
    for g in 0..4 {
        for (j, unit) in units.clone().enumerate() {
            let row = &w_hh[(g * hidden + unit) * hidden..][..hidden];
            for (k, &v) in row.iter().enumerate() {
                out[k * 4 * u + g * u + j] = v;
            }
        }
    }
}

/// A backward part's scratch: the gradients reaching its units' hidden state `[B, u]` and cell
/// state (`dc` read, `dc_next` written, swapped each step), and `[u]` zeros.
struct BackwardPart<T> {
    dh: Vec<T>,
    dc: Vec<T>,
    dc_next: Vec<T>,
    /// `[u]` zeros: the carried gradients of the first step.
    zeros: Vec<T>,
}

/// The backward over a sequence, from the forward's `gates` `[T, B, 4H]` and states `y`
/// `[2, T, B, H]`, `c0` `[B, H]`, `w_hh` `[4H, H]` and the gradient `gy` of `y`, all dense.
/// Returns the gradient of the gates' pre-activations `[T, B, 4H]`, of `h0` and of `c0`.
pub(crate) fn sequence_backward<T: Real + GemmElement>(
    gates: &[T],
    y: &[T],
    c0: &[T],
    w_hh: &[T],
    gy: &[T],
    d: Dims,
    parts: usize,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (b, h, plane) = (d.batch, d.hidden, d.plane());
    // pooled: the tasks write every element
    let (mut dpre, mut dh0, mut dc0): (Vec<T>, Vec<T>, Vec<T>) =
        (crate::pool::take_n(&[plane, 4]), crate::pool::take_n(&[b, h]), crate::pool::take_n(&[b, h]));
    let scratch: Vec<Mutex<BackwardPart<T>>> = (0..parts)
        .map(|p| {
            let u = d.units(p, parts).len();
            let zero = |n: usize| vec![T::zero(); n];
            Mutex::new(BackwardPart { dh: zero(b * u), dc: zero(b * u), dc_next: zero(b * u), zeros: zero(u) })
        })
        .collect();
    let (dps, dh0s, dc0s) = (SharedBuf::new(&mut dpre), SharedBuf::new(&mut dh0), SharedBuf::new(&mut dc0));
    // stage s < T: the forward's step T - 1 - s; stage T: the gradients of h0 and c0
    run_staged(d.steps + 1, parts, |s, p| {
        let units = d.units(p, parts);
        let u = units.len();
        if u == 0 {
            return;
        }
        let mut guard = own(&scratch[p]);
        let BackwardPart { dh, dc, dc_next, zeros } = &mut *guard;
        if s > 0 {
            // SAFETY: the previous step was the previous stage, which has finished; this stage
            // writes only time t's gradients.
            let dp = unsafe { dps.piece(d.time(d.steps - s) * b * 4 * h, b * 4 * h) };
            let w = Operand { data: &w_hh[units.start..], rs: h, cs: 1 };
            gemm_into((b, 4 * h, u), dh, Operand { data: dp, rs: 4 * h, cs: 1 }, w, false);
        }
        if s == d.steps {
            for r in 0..b {
                // SAFETY: only this task writes this part's units of dh0 and dc0.
                unsafe {
                    dh0s.piece_mut(r * h + units.start, u).copy_from_slice(&dh[r * u..][..u]);
                    dc0s.piece_mut(r * h + units.start, u).copy_from_slice(&dc[r * u..][..u]);
                }
            }
            return;
        }
        // backwards through the forward's steps
        let t = d.time(d.steps - 1 - s);
        // the time index of the step before t in the forward's order
        let before = match (d.reverse, t) {
            (false, 0) => None,
            (false, t) => Some(t - 1),
            (true, t) if t + 1 == d.steps => None,
            (true, t) => Some(t + 1),
        };
        let carry = s > 0;
        vectorised(
            #[inline(always)]
            || {
                for r in 0..b {
                    let row = t * b + r;
                    let at = |row: usize| row * h + units.start;
                    let act = [0, 1, 2, 3].map(|g| &gates[row * 4 * h + g * h + units.start..][..u]);
                    let c_prev = match before {
                        None => &c0[at(r)..][..u],
                        Some(tb) => &y[plane + at(tb * b + r)..][..u],
                    };
                    let (mine, next) = (r * u..(r + 1) * u, &mut dc_next[r * u..][..u]);
                    // the first step has no carried gradients: zeros stand in for them
                    let (dh_in, dc_in) =
                        if carry { (&dh[mine.clone()], &dc[mine]) } else { (&zeros[..u], &zeros[..u]) };
                    let dh = (&gy[at(row)..][..u], dh_in);
                    let dc = (&gy[plane + at(row)..][..u], dc_in);
                    // SAFETY: only this task writes this part's units of time t, and no task reads
                    // them before the next stage.
                    let d_act = unsafe { gate_pieces(&dps, row, h, &units) };
                    backward_units(act, &y[plane + at(row)..][..u], c_prev, dh, dc, d_act, next);
                }
            },
        );
        std::mem::swap(dc, dc_next);
    });
    (dpre, dh0, dc0)
}

/// One row of a part's forward step: from the pre-activations `pre` `[4u]` (gate-major) and the
/// previous cell state, the activated gates, the new cell state and the new hidden state.
#[inline(always)]
fn forward_units<T: Real>(pre: &[T], c_prev: &[T], act: [&mut [T]; 4], c: &mut [T], h: &mut [T]) {
    let u = c.len();
    let [ai, af, ag, ao] = act;
    let (ai, af, ag, ao, c_prev, h) =
        (&mut ai[..u], &mut af[..u], &mut ag[..u], &mut ao[..u], &c_prev[..u], &mut h[..u]);
    let (pi, pf, pg, po) = (&pre[..u], &pre[u..2 * u], &pre[2 * u..3 * u], &pre[3 * u..4 * u]);
    for k in 0..u {
        ai[k] = sigmoid(pi[k]);
        af[k] = sigmoid(pf[k]);
        ag[k] = pg[k].fast_tanh();
        ao[k] = sigmoid(po[k]);
    }
    for k in 0..u {
        let ck = af[k] * c_prev[k] + ai[k] * ag[k];
        c[k] = ck;
        h[k] = ao[k] * ck.fast_tanh();
    }
}

/// One row of a part's backward step: from the activated gates, the step's and the previous cell
/// state, and the gradients reaching the hidden and cell state (each the sum of two slices), the
/// gates' pre-activation gradients and the previous cell state's gradient.
#[inline(always)]
fn backward_units<T: Real>(
    act: [&[T]; 4],
    c: &[T],
    c_prev: &[T],
    dh: (&[T], &[T]),
    dc: (&[T], &[T]),
    d_act: [&mut [T]; 4],
    dc_prev: &mut [T],
) {
    let (u, one) = (c.len(), T::one());
    let [i, f, g, o] = act.map(|a| &a[..u]);
    let [di, df, dg, d_o] = d_act;
    let (di, df, dg, d_o, dc_prev, c_prev) =
        (&mut di[..u], &mut df[..u], &mut dg[..u], &mut d_o[..u], &mut dc_prev[..u], &c_prev[..u]);
    // every operand cut to `u` up front: no bounds checks in the loop, which then vectorises
    let (dh0, dh1, dc0, dc1) = (&dh.0[..u], &dh.1[..u], &dc.0[..u], &dc.1[..u]);
    for k in 0..u {
        let dhk = dh0[k] + dh1[k];
        let dck = dc0[k] + dc1[k];
        let tc = c[k].fast_tanh();
        let dct = dck + dhk * o[k] * (one - tc * tc);
        d_o[k] = dhk * tc * o[k] * (one - o[k]);
        di[k] = dct * g[k] * i[k] * (one - i[k]);
        df[k] = dct * c_prev[k] * f[k] * (one - f[k]);
        dg[k] = dct * i[k] * (one - g[k] * g[k]);
        dc_prev[k] = dct * f[k];
    }
}

/// The backend entry points: shape checks, dtype dispatch, dense copies of the operands.
pub(crate) mod entry {
    use super::{Dims, Real};
    use crate::host::buf;
    use crate::matmul::GemmElement;
    use crate::operands::{dense_operands, float_dtype, Dense};
    use ember_storage::{Buffer, DType, Error, HostData, HostElement, Result, View};

    fn expect(op: &str, name: &str, v: View, shape: &[usize]) -> Result<()> {
        if v.1.shape() != shape {
            return Err(Error::shape(op, format!("{name} should be {shape:?}, got {:?}", v.1.shape())));
        }
        Ok(())
    }

    /// The sequence's sizes from the `[T, B, 4H]` gates (or projections) and `[4H, H]` weight.
    fn dims(op: &str, gates: View, w_hh: View, reverse: bool) -> Result<Dims> {
        let &[steps, batch, four_h] = gates.1.shape() else {
            return Err(Error::shape(op, format!("gates should be [T, B, 4H], got {:?}", gates.1.shape())));
        };
        if four_h % 4 != 0 {
            return Err(Error::shape(op, format!("gates' last dim {four_h} is not 4 * hidden")));
        }
        let hidden = four_h / 4;
        expect(op, "w_hh", w_hh, &[four_h, hidden])?;
        Ok(Dims { steps, batch, hidden, reverse })
    }

    fn out<T: HostElement>(v: Vec<T>) -> Buffer {
        buf(HostData::from_vec(v))
    }

    pub(crate) fn lstm_sequence(gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)> {
        const OP: &str = "lstm_sequence";
        let d = dims(OP, gi, w_hh, reverse)?;
        expect(OP, "h0", h0, &[d.batch, d.hidden])?;
        expect(OP, "c0", c0, &[d.batch, d.hidden])?;
        fn go<T: Real + GemmElement + HostElement>(v: [View; 4], d: Dims) -> Result<(Buffer, Buffer)> {
            let ops = dense_operands::<T, 4>(OP, v)?;
            let [gi, h0, c0, w] = &ops;
            let (y, gates) = super::sequence_forward(gi, h0, c0, w, d, super::part_count(d));
            ops.into_iter().for_each(Dense::recycle);
            Ok((out(y), out(gates)))
        }
        match float_dtype(OP, gi)? {
            DType::F32 => go::<f32>([gi, h0, c0, w_hh], d),
            _ => go::<f64>([gi, h0, c0, w_hh], d),
        }
    }

    pub(crate) fn lstm_sequence_backward(
        gates: View,
        y: View,
        c0: View,
        w_hh: View,
        gy: View,
        reverse: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        const OP: &str = "lstm_sequence_backward";
        let d = dims(OP, gates, w_hh, reverse)?;
        expect(OP, "y", y, &[2, d.steps, d.batch, d.hidden])?;
        expect(OP, "gy", gy, &[2, d.steps, d.batch, d.hidden])?;
        expect(OP, "c0", c0, &[d.batch, d.hidden])?;
        fn go<T: Real + GemmElement + HostElement>(v: [View; 5], d: Dims) -> Result<(Buffer, Buffer, Buffer)> {
            let ops = dense_operands::<T, 5>(OP, v)?;
            let [a, y, c0, w, gy] = &ops;
            let (dpre, dh0, dc0) = super::sequence_backward(a, y, c0, w, gy, d, super::part_count(d));
            ops.into_iter().for_each(Dense::recycle);
            Ok((out(dpre), out(dh0), out(dc0)))
        }
        match float_dtype(OP, gates)? {
            DType::F32 => go::<f32>([gates, y, c0, w_hh, gy], d),
            _ => go::<f64>([gates, y, c0, w_hh, gy], d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 + 1) * 2654435761 + seed) % 1000) as f64 / 500.0 - 1.0).collect()
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// The LSTM equations written out plainly: the `[2, T, B, H]` states.
    fn reference(gi: &[f64], h0: &[f64], c0: &[f64], w: &[f64], d: Dims) -> Vec<f64> {
        let (b, h) = (d.batch, d.hidden);
        let mut y = vec![0.0; 2 * d.plane()];
        let (mut hp, mut cp) = (h0.to_vec(), c0.to_vec());
        for s in 0..d.steps {
            let t = d.time(s);
            let (mut hn, mut cn) = (vec![0.0; b * h], vec![0.0; b * h]);
            for r in 0..b {
                let pre = |g: usize, j: usize| {
                    let row = g * h + j;
                    gi[(t * b + r) * 4 * h + row] + (0..h).map(|k| hp[r * h + k] * w[row * h + k]).sum::<f64>()
                };
                for j in 0..h {
                    let c = sig(pre(1, j)) * cp[r * h + j] + sig(pre(0, j)) * pre(2, j).tanh();
                    cn[r * h + j] = c;
                    hn[r * h + j] = sig(pre(3, j)) * c.tanh();
                }
            }
            y[t * b * h..(t + 1) * b * h].copy_from_slice(&hn);
            y[d.plane() + t * b * h..][..b * h].copy_from_slice(&cn);
            (hp, cp) = (hn, cn);
        }
        y
    }

    /// The parts tile the hidden units in order, each starting at an aligned unit.
    #[test]
    fn parts_tile_the_hidden_units() {
        for hidden in 0..300 {
            for parts in 1..6 {
                let d = Dims { steps: 1, batch: 1, hidden, reverse: false };
                let mut next = 0;
                for p in 0..parts {
                    let u = d.units(p, parts);
                    assert_eq!(u.start, next, "hidden {hidden}, parts {parts}");
                    assert!(
                        u.start.is_multiple_of(UNIT_ALIGN) || u.is_empty(),
                        "hidden {hidden}, part {p} starts at {}",
                        u.start
                    );
                    next = u.end;
                }
                assert_eq!(next, hidden);
            }
        }
    }

    /// The fused sequence agrees with the equations, whatever the number of parts and the
    /// direction, forward and backward (the backward against central differences).
    #[test]
    fn sequence_matches_the_equations() {
        // hidden 20 splits into parts of 8 and 12 units (or 8, 8 and 4)
        for (steps, batch, hidden) in [(4, 3, 5), (3, 2, 20), (1, 2, 7), (0, 2, 3)] {
            for reverse in [false, true] {
                let d = Dims { steps, batch, hidden, reverse };
                let (gi, h0, c0) = (data(d.plane() * 4, 1), data(batch * hidden, 2), data(batch * hidden, 3));
                let w = data(16 * hidden * hidden / 4, 4);
                let want = reference(&gi, &h0, &c0, &w, d);
                // loss = sum(wy * y)
                let wy = data(2 * d.plane(), 5);
                let loss = |gi: &[f64], h0: &[f64], c0: &[f64], w: &[f64]| {
                    reference(gi, h0, c0, w, d).iter().zip(&wy).map(|(a, b)| a * b).sum::<f64>()
                };
                let eps = 1e-6;
                let fd = |k: usize, which: usize| {
                    let mut args = [gi.clone(), h0.clone(), c0.clone()];
                    args[which][k] += eps;
                    let up = loss(&args[0], &args[1], &args[2], &w);
                    args[which][k] -= 2.0 * eps;
                    (up - loss(&args[0], &args[1], &args[2], &w)) / (2.0 * eps)
                };
                for parts in [1, 2, 3] {
                    let (y, gates) = sequence_forward(&gi, &h0, &c0, &w, d, parts);
                    for (k, (a, b)) in y.iter().zip(&want).enumerate() {
                        assert!((a - b).abs() < 1e-12, "{d:?} parts {parts}: y[{k}] {a} vs {b}");
                    }
                    let (dpre, dh0, dc0) = sequence_backward(&gates, &y, &c0, &w, &wy, d, parts);
                    // the projections enter the pre-activations directly: d loss / d gi = dpre
                    for (k, &got) in dpre.iter().enumerate() {
                        assert!((got - fd(k, 0)).abs() < 1e-6, "{d:?} parts {parts}: dgi[{k}] {got} vs {}", fd(k, 0));
                    }
                    for k in 0..h0.len() {
                        assert!((dh0[k] - fd(k, 1)).abs() < 1e-6, "{d:?} parts {parts}: dh0[{k}]");
                        assert!((dc0[k] - fd(k, 2)).abs() < 1e-6, "{d:?} parts {parts}: dc0[{k}]");
                    }
                }
            }
        }
    }
}
