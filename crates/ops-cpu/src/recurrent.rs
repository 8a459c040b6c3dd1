//! The LSTM cell's elementwise work fused into one pass each way: gate activations, the new cell
//! and hidden state forward; the gates' pre-activation gradients and the carried cell gradient
//! backward. Rows (batch entries) are independent and run in parallel when the step is large.
//!
//! Gate order within a row of `4H` is PyTorch's: input, forget, cell candidate, output.

use crate::elementwise::{sigmoid, Real};
use crate::simd::vectorised;
use crate::threading::{par_threshold, pool};
use rayon::prelude::*;

/// One forward step: `pre = gh + gi` (`[rows, 4H]`), `c_prev` `[rows, H]`. Returns the activated
/// gates `[rows, 4H]`, the new cell state and the new hidden state (`[rows, H]` each).
pub(crate) fn cell_forward<T: Real>(gh: &[T], gi: &[T], c_prev: &[T], hidden: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
    let n = hidden.max(1);
    let rows = c_prev.len() / n;
    let (mut act, mut c, mut h): (Vec<T>, Vec<T>, Vec<T>) =
        (crate::pool::take(rows * 4 * n), crate::pool::take(rows * n), crate::pool::take(rows * n));
    // rows [r0, r0 + count) of every operand, as one vectorised block
    let block = |r0: usize, act: &mut [T], c: &mut [T], h: &mut [T]| {
        let (w, k) = (4 * n, act.len() / (4 * n));
        let (gh, gi, cp) = (&gh[r0 * w..(r0 + k) * w], &gi[r0 * w..(r0 + k) * w], &c_prev[r0 * n..(r0 + k) * n]);
        vectorised(
            #[inline(always)]
            || forward_rows(gh, gi, cp, act, c, h, n),
        )
    };
    match split_rows(rows, 4 * n) {
        None => block(0, &mut act, &mut c, &mut h),
        Some(per) => pool().install(|| {
            act.par_chunks_mut(per * 4 * n)
                .zip(c.par_chunks_mut(per * n))
                .zip(h.par_chunks_mut(per * n))
                .enumerate()
                .for_each(|(j, ((a, cc), hh))| block(j * per, a, cc, hh))
        }),
    }
    (act, c, h)
}

/// The gradients of one step: from the activated gates `act` `[rows, 4H]`, the step's cell state
/// `c` and the previous one `c_prev` (`[rows, H]`), and the gradients reaching the hidden state
/// (`dh + dh2`) and the cell state (`dc + dc2`). Returns the gradient of the gates'
/// pre-activations `[rows, 4H]` and of `c_prev`.
pub(crate) fn cell_backward<T: Real>(
    act: &[T],
    c: &[T],
    c_prev: &[T],
    dh: (&[T], Option<&[T]>),
    dc: (&[T], Option<&[T]>),
    hidden: usize,
) -> (Vec<T>, Vec<T>) {
    let n = hidden.max(1);
    let rows = c.len() / n;
    let (mut dpre, mut dc_prev): (Vec<T>, Vec<T>) = (crate::pool::take(rows * 4 * n), crate::pool::take(rows * n));
    let block = |r0: usize, dpre: &mut [T], dcp: &mut [T]| {
        let k = dcp.len() / n;
        let (lo, hi) = (r0 * n, (r0 + k) * n);
        let (a, cc, cp) = (&act[4 * lo..4 * hi], &c[lo..hi], &c_prev[lo..hi]);
        let (dh, dc) = ((&dh.0[lo..hi], dh.1.map(|s| &s[lo..hi])), (&dc.0[lo..hi], dc.1.map(|s| &s[lo..hi])));
        vectorised(
            #[inline(always)]
            || backward_rows(a, cc, cp, dh, dc, dpre, dcp, n),
        )
    };
    match split_rows(rows, 4 * n) {
        None => block(0, &mut dpre, &mut dc_prev),
        Some(per) => pool().install(|| {
            dpre.par_chunks_mut(per * 4 * n)
                .zip(dc_prev.par_chunks_mut(per * n))
                .enumerate()
                .for_each(|(j, (d, dcp))| block(j * per, d, dcp))
        }),
    }
    (dpre, dc_prev)
}

/// Rows per thread when a step is large enough to split, else `None`.
fn split_rows(rows: usize, width: usize) -> Option<usize> {
    let threads = pool().current_num_threads();
    (rows * width >= par_threshold() && rows > 1 && threads > 1).then(|| rows.div_ceil(threads))
}

#[inline(always)]
fn forward_rows<T: Real>(gh: &[T], gi: &[T], c_prev: &[T], act: &mut [T], c: &mut [T], h: &mut [T], n: usize) {
    for r in 0..c.len() / n {
        let (w, rn) = (r * 4 * n..(r + 1) * 4 * n, r * n..(r + 1) * n);
        forward_row(&gh[w.clone()], &gi[w.clone()], &c_prev[rn.clone()], &mut act[w], &mut c[rn.clone()], &mut h[rn]);
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_rows<T: Real>(
    act: &[T],
    c: &[T],
    c_prev: &[T],
    dh: (&[T], Option<&[T]>),
    dc: (&[T], Option<&[T]>),
    dpre: &mut [T],
    dc_prev: &mut [T],
    n: usize,
) {
    for r in 0..c.len() / n {
        let (w, rn) = (r * 4 * n..(r + 1) * 4 * n, r * n..(r + 1) * n);
        let (lo, hi) = (rn.start, rn.end);
        backward_row(
            &act[w.clone()],
            &c[lo..hi],
            &c_prev[lo..hi],
            (&dh.0[lo..hi], dh.1.map(|s| &s[lo..hi])),
            (&dc.0[lo..hi], dc.1.map(|s| &s[lo..hi])),
            &mut dpre[w],
            &mut dc_prev[rn.clone()],
        );
    }
}

#[inline(always)]
fn forward_row<T: Real>(gh: &[T], gi: &[T], c_prev: &[T], act: &mut [T], c: &mut [T], h: &mut [T]) {
    let n = c_prev.len();
    let (sig_a, rest) = act.split_at_mut(2 * n);
    let (tanh_g, sig_o) = rest.split_at_mut(n);
    for k in 0..2 * n {
        sig_a[k] = sigmoid(gh[k] + gi[k]);
    }
    for k in 0..n {
        tanh_g[k] = (gh[2 * n + k] + gi[2 * n + k]).fast_tanh();
        sig_o[k] = sigmoid(gh[3 * n + k] + gi[3 * n + k]);
    }
    let (i, f) = sig_a.split_at(n);
    for k in 0..n {
        let ck = f[k] * c_prev[k] + i[k] * tanh_g[k];
        c[k] = ck;
        h[k] = sig_o[k] * ck.fast_tanh();
    }
}

#[inline(always)]
fn backward_row<T: Real>(
    act: &[T],
    c: &[T],
    c_prev: &[T],
    dh: (&[T], Option<&[T]>),
    dc: (&[T], Option<&[T]>),
    dpre: &mut [T],
    dc_prev: &mut [T],
) {
    let n = c.len();
    let one = T::one();
    let (i, rest) = act.split_at(n);
    let (f, rest) = rest.split_at(n);
    let (g, o) = rest.split_at(n);
    let (di, rest) = dpre.split_at_mut(n);
    let (df, rest) = rest.split_at_mut(n);
    let (dg, d_o) = rest.split_at_mut(n);
    for k in 0..n {
        let dhk = dh.0[k] + dh.1.map_or(T::zero(), |s| s[k]);
        let dck = dc.0[k] + dc.1.map_or(T::zero(), |s| s[k]);
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
    use super::Real;
    use crate::buf;
    use crate::operands::{dense_copy, float_dtype};
    use ember_storage::{Buffer, DType, Error, HostData, HostElement, Result, View};

    /// The `[rows, width]` sizes of a 2-d view.
    fn matrix(op: &str, name: &str, v: View) -> Result<(usize, usize)> {
        match v.1.shape() {
            &[r, w] => Ok((r, w)),
            s => Err(Error::shape(op, format!("{name} should be 2-d, got {s:?}"))),
        }
    }

    fn expect(op: &str, name: &str, v: View, shape: [usize; 2]) -> Result<()> {
        if v.1.shape() != shape {
            return Err(Error::shape(op, format!("{name} should be {shape:?}, got {:?}", v.1.shape())));
        }
        Ok(())
    }

    fn give<T: Send + 'static>(vs: impl IntoIterator<Item = Vec<T>>) {
        vs.into_iter().for_each(crate::pool::give);
    }

    pub(crate) fn lstm_cell(gh: View, gi: View, c_prev: View) -> Result<(Buffer, Buffer, Buffer)> {
        const OP: &str = "lstm_cell";
        let (rows, hidden) = matrix(OP, "c_prev", c_prev)?;
        expect(OP, "gh", gh, [rows, 4 * hidden])?;
        expect(OP, "gi", gi, [rows, 4 * hidden])?;
        fn go<T: Real + HostElement>(
            gh: View,
            gi: View,
            c_prev: View,
            hidden: usize,
        ) -> Result<(Buffer, Buffer, Buffer)> {
            let (a, b, c) = (dense_copy::<T>(OP, gh)?, dense_copy::<T>(OP, gi)?, dense_copy::<T>(OP, c_prev)?);
            let (act, cn, h) = super::cell_forward(&a, &b, &c, hidden);
            give([a, b, c]);
            Ok((buf(HostData::from_vec(act)), buf(HostData::from_vec(cn)), buf(HostData::from_vec(h))))
        }
        match float_dtype(OP, gh)? {
            DType::F32 => go::<f32>(gh, gi, c_prev, hidden),
            _ => go::<f64>(gh, gi, c_prev, hidden),
        }
    }

    pub(crate) fn lstm_cell_backward(
        act: View,
        c: View,
        c_prev: View,
        dh: (View, Option<View>),
        dc: (View, Option<View>),
    ) -> Result<(Buffer, Buffer)> {
        const OP: &str = "lstm_cell_backward";
        let (rows, hidden) = matrix(OP, "c", c)?;
        expect(OP, "gates", act, [rows, 4 * hidden])?;
        for (name, v) in [("c_prev", Some(c_prev)), ("dh", Some(dh.0)), ("dh", dh.1), ("dc", Some(dc.0)), ("dc", dc.1)]
        {
            if let Some(v) = v {
                expect(OP, name, v, [rows, hidden])?;
            }
        }
        fn go<T: Real + HostElement>(
            act: View,
            c: View,
            c_prev: View,
            dh: (View, Option<View>),
            dc: (View, Option<View>),
            hidden: usize,
        ) -> Result<(Buffer, Buffer)> {
            let (a, cc, cp) = (dense_copy::<T>(OP, act)?, dense_copy::<T>(OP, c)?, dense_copy::<T>(OP, c_prev)?);
            let (dh0, dc0) = (dense_copy::<T>(OP, dh.0)?, dense_copy::<T>(OP, dc.0)?);
            let dh1 = dh.1.map(|v| dense_copy::<T>(OP, v)).transpose()?;
            let dc1 = dc.1.map(|v| dense_copy::<T>(OP, v)).transpose()?;
            let (dpre, dcp) =
                super::cell_backward(&a, &cc, &cp, (&dh0, dh1.as_deref()), (&dc0, dc1.as_deref()), hidden);
            give([a, cc, cp, dh0, dc0]);
            give(dh1.into_iter().chain(dc1));
            Ok((buf(HostData::from_vec(dpre)), buf(HostData::from_vec(dcp))))
        }
        match float_dtype(OP, c)? {
            DType::F32 => go::<f32>(act, c, c_prev, dh, dc, hidden),
            _ => go::<f64>(act, c, c_prev, dh, dc, hidden),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 + 1) * 2654435761 + seed) % 1000) as f64 / 250.0 - 2.0).collect()
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// The fused step agrees with the LSTM equations written out in f64, forward and backward
    /// (the backward against central differences of the forward).
    #[test]
    fn cell_matches_the_equations() {
        let (rows, n) = (3, 5);
        let (gh, gi, cp) = (data(rows * 4 * n, 1), data(rows * 4 * n, 2), data(rows * n, 3));
        let (act, c, h) = cell_forward(&gh, &gi, &cp, n);
        let step = |gh: &[f64], cp: &[f64]| -> (Vec<f64>, Vec<f64>) {
            let (mut cs, mut hs) = (vec![], vec![]);
            for r in 0..rows {
                let p = |gate: usize, k: usize| gh[r * 4 * n + gate * n + k] + gi[r * 4 * n + gate * n + k];
                for k in 0..n {
                    let ck = sig(p(1, k)) * cp[r * n + k] + sig(p(0, k)) * p(2, k).tanh();
                    cs.push(ck);
                    hs.push(sig(p(3, k)) * ck.tanh());
                }
            }
            (cs, hs)
        };
        let (ce, he) = step(&gh, &cp);
        for k in 0..rows * n {
            assert!((c[k] - ce[k]).abs() < 1e-12 && (h[k] - he[k]).abs() < 1e-12, "{k}");
        }
        // loss = sum(wh * h) + sum(wc * c)
        let (wh, wc) = (data(rows * n, 4), data(rows * n, 5));
        let loss = |gh: &[f64], cp: &[f64]| {
            let (c, h) = step(gh, cp);
            (0..rows * n).map(|k| wh[k] * h[k] + wc[k] * c[k]).sum::<f64>()
        };
        // split each upstream gradient into two addends to exercise both inputs
        let half: Vec<f64> = wh.iter().map(|v| v / 2.0).collect();
        let (dpre, dcp) = cell_backward(&act, &c, &cp, (&half, Some(&half)), (&wc, None), n);
        let eps = 1e-6;
        for k in 0..rows * 4 * n {
            let (mut a, mut b) = (gh.clone(), gh.clone());
            a[k] += eps;
            b[k] -= eps;
            let fd = (loss(&a, &cp) - loss(&b, &cp)) / (2.0 * eps);
            assert!((dpre[k] - fd).abs() < 1e-6, "gate {k}: {} vs {fd}", dpre[k]);
        }
        for k in 0..rows * n {
            let (mut a, mut b) = (cp.clone(), cp.clone());
            a[k] += eps;
            b[k] -= eps;
            let fd = (loss(&gh, &a) - loss(&gh, &b)) / (2.0 * eps);
            assert!((dcp[k] - fd).abs() < 1e-6, "c_prev {k}: {} vs {fd}", dcp[k]);
        }
    }
}
