//! Layer norm and RMS norm over the last dim of dense `[R, K]` rows, one pass per row for the
//! statistics and one for the output, rows in parallel (the composed path makes five full passes
//! and four temporaries). Sums accumulate in f64 in a fixed order per row, so results do not depend
//! on the thread count; the output is computed in the dtype in the composed path's order,
//! `((x - mean) * rstd) * w + b`.

use crate::real::Real;
use crate::threading::{par_threshold, pool};
use ember_storage::Element;
use rayon::prelude::*;

/// `sum(f(i))` for `i < n` in 8 f64 lanes (so the loop vectorises), in a fixed order.
#[inline(always)]
fn sum8<T: Real>(n: usize, f: impl Fn(usize) -> T) -> f64 {
    let mut lanes = [0f64; 8];
    let full = n / 8 * 8;
    for c in (0..full).step_by(8) {
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane += Element::to_f64(f(c + l));
        }
    }
    let tail: f64 = (full..n).map(|i| Element::to_f64(f(i))).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Per row: `(mean, rstd)` with `rstd = 1 / sqrt(var + eps)`; RMS norm: mean 0 and the mean square
/// as the variance. Two passes for layer norm (the mean, then squared deviations from it).
fn row_stats<T: Real>(x: &[T], eps: f64, rms: bool) -> (T, T) {
    let k = x.len().max(1) as f64;
    let mean = if rms { 0.0 } else { sum8(x.len(), |i| x[i]) / k };
    let m = <T as Element>::from_f64(mean);
    let ss = sum8(x.len(), |i| (x[i] - m) * (x[i] - m));
    (m, <T as Element>::from_f64(1.0 / (ss / k + eps).sqrt()))
}

/// Runs `per_row(row, out_row)` over `[R, K]` output rows, in parallel when the data is large.
fn rows<T: Send>(out: &mut [T], k: usize, per_row: impl Fn(usize, &mut [T]) + Sync + Send) {
    let k = k.max(1);
    if out.len() >= par_threshold() && out.len() > k {
        pool().install(|| out.par_chunks_mut(k).enumerate().for_each(|(r, o)| per_row(r, o)));
    } else {
        out.chunks_mut(k).enumerate().for_each(|(r, o)| per_row(r, o));
    }
}

/// `(y [R, K], mean [R], rstd [R])` of dense `x` with optional `[K]` weight and bias.
pub(crate) fn forward<T: Real>(
    x: &[T],
    k: usize,
    w: Option<&[T]>,
    b: Option<&[T]>,
    eps: f64,
    rms: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let r = x.len().checked_div(k).unwrap_or(0);
    let mut stats = vec![(T::zero(), T::zero()); r];
    rows(&mut stats, 1, |i, s| s[0] = row_stats(&x[i * k..(i + 1) * k], eps, rms));
    let mut y: Vec<T> = crate::pool::take(x.len());
    rows(&mut y, k, |i, out| {
        let (m, rs) = stats[i];
        let xr = &x[i * k..(i + 1) * k];
        for (j, (o, &v)) in out.iter_mut().zip(xr).enumerate() {
            let mut t = (v - m) * rs;
            if let Some(w) = w {
                t = t * w[j];
            }
            if let Some(b) = b {
                t = t + b[j];
            }
            *o = t;
        }
    });
    let (mean, rstd) = stats.into_iter().unzip();
    (y, mean, rstd)
}

/// The input's gradient: per row `rstd * (g - mean(g) - xhat * mean(g * xhat))` with `g = gy * w`
/// and `xhat = (x - mean) * rstd` (RMS norm: without the `mean(g)` term).
pub(crate) fn backward<T: Real>(
    gy: &[T],
    x: &[T],
    mean: &[T],
    rstd: &[T],
    w: Option<&[T]>,
    k: usize,
    rms: bool,
) -> Vec<T> {
    let mut gx: Vec<T> = crate::pool::take(x.len());
    let kf = k.max(1) as f64;
    rows(&mut gx, k, |i, out| {
        let (xr, gr) = (&x[i * k..(i + 1) * k], &gy[i * k..(i + 1) * k]);
        let (m, rs) = (mean[i], rstd[i]);
        let g = |j: usize| match w {
            Some(w) => gr[j] * w[j],
            None => gr[j],
        };
        let sg = if rms { 0.0 } else { sum8(k, g) };
        let sgx = sum8(k, |j| g(j) * ((xr[j] - m) * rs));
        let a = <T as Element>::from_f64(if rms { 0.0 } else { sg / kf });
        let c = <T as Element>::from_f64(sgx / kf);
        for (j, (o, &v)) in out.iter_mut().zip(xr).enumerate() {
            *o = rs * (g(j) - a - (v - m) * rs * c);
        }
    });
    gx
}

/// The backend entry points: shape and dtype checks, dense operands.
pub(crate) mod entry {
    use super::Real;
    use crate::host::buf;
    use crate::operands::{dense_copy, dense_operands, float_dtype};
    use ember_storage::{Buffer, DType, Error, HostData, HostElement, Result, View};

    /// `K` of an `[R, K]` view, with the per-row and per-column operands' shapes checked.
    fn cols(op: &str, x: View, per_col: &[Option<View>], per_row: &[View]) -> Result<usize> {
        let cols: Vec<Option<&ember_storage::Layout>> = per_col.iter().map(|v| v.map(|v| v.1)).collect();
        let rows: Vec<&ember_storage::Layout> = per_row.iter().map(|v| v.1).collect();
        Ok(ember_storage::layer_norm_rows(op, x.1, &cols, &rows)?.1)
    }

    fn opt<T: HostElement + Copy + Send + Sync + Default + 'static>(
        op: &str,
        v: Option<View>,
    ) -> Result<Option<Vec<T>>> {
        v.map(|v| dense_copy::<T>(op, v)).transpose()
    }

    pub(crate) fn layer_norm(
        x: View,
        weight: Option<View>,
        bias: Option<View>,
        eps: f64,
        rms: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        const OP: &str = "layer_norm";
        let k = cols(OP, x, &[weight, bias], &[])?;
        fn go<T: Real + HostElement>(
            x: View,
            w: Option<View>,
            b: Option<View>,
            k: usize,
            eps: f64,
            rms: bool,
        ) -> Result<(Buffer, Buffer, Buffer)> {
            let (w, b) = (opt::<T>(OP, w)?, opt::<T>(OP, b)?);
            let [xd] = dense_operands::<T, 1>(OP, [x])?;
            let (y, m, r) = super::forward(&xd, k, w.as_deref(), b.as_deref(), eps, rms);
            xd.recycle();
            Ok((buf(HostData::from_vec(y)), buf(HostData::from_vec(m)), buf(HostData::from_vec(r))))
        }
        match float_dtype(OP, x)? {
            DType::F32 => go::<f32>(x, weight, bias, k, eps, rms),
            _ => go::<f64>(x, weight, bias, k, eps, rms),
        }
    }

    pub(crate) fn layer_norm_backward(
        gy: View,
        x: View,
        mean: View,
        rstd: View,
        weight: Option<View>,
        rms: bool,
    ) -> Result<Buffer> {
        const OP: &str = "layer_norm_backward";
        let k = cols(OP, x, &[weight], &[mean, rstd])?;
        if gy.1.shape() != x.1.shape() {
            return Err(Error::shape(OP, format!("gradient {:?} and input {:?} differ", gy.1.shape(), x.1.shape())));
        }
        fn go<T: Real + HostElement>(
            gy: View,
            x: View,
            mean: View,
            rstd: View,
            w: Option<View>,
            k: usize,
            rms: bool,
        ) -> Result<Buffer> {
            let (m, r, w) = (dense_copy::<T>(OP, mean)?, dense_copy::<T>(OP, rstd)?, opt::<T>(OP, w)?);
            let [gd, xd] = dense_operands::<T, 2>(OP, [gy, x])?;
            let gx = super::backward(&gd, &xd, &m, &r, w.as_deref(), k, rms);
            Ok(buf(HostData::from_vec(gx)))
        }
        match float_dtype(OP, x)? {
            DType::F32 => go::<f32>(gy, x, mean, rstd, weight, k, rms),
            _ => go::<f64>(gy, x, mean, rstd, weight, k, rms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f64> {
        (0..n).map(|i| (((i as u64 + 1) * 2654435761 + seed) % 1000) as f64 / 100.0 - 3.0).collect()
    }

    /// Forward and backward agree with the definitions (and the backward with finite differences
    /// of `sum(y * gy)`), for layer and RMS norm, with and without an affine weight.
    #[test]
    fn match_the_definitions_and_finite_differences() {
        let (r, k) = (3, 7);
        let (x, gy, w, b) = (data(r * k, 1), data(r * k, 5), data(k, 9), data(k, 11));
        for rms in [false, true] {
            for affine in [false, true] {
                let (wo, bo) = if affine { (Some(&w[..]), Some(&b[..])) } else { (None, None) };
                let bo = if rms { None } else { bo };
                let (y, mean, rstd) = forward(&x, k, wo, bo, 1e-5, rms);
                for i in 0..r {
                    let row = &x[i * k..(i + 1) * k];
                    let mu = if rms { 0.0 } else { row.iter().sum::<f64>() / k as f64 };
                    let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / k as f64;
                    assert!((mean[i] - mu).abs() < 1e-12 && (rstd[i] - 1.0 / (var + 1e-5).sqrt()).abs() < 1e-12);
                    for j in 0..k {
                        let want = (row[j] - mu) * rstd[i] * wo.map_or(1.0, |w| w[j]) + bo.map_or(0.0, |b| b[j]);
                        assert!((y[i * k + j] - want).abs() < 1e-12);
                    }
                }
                let gx = backward(&gy, &x, &mean, &rstd, wo, k, rms);
                let loss = |x: &[f64]| -> f64 {
                    let (y, _, _) = forward(x, k, wo, bo, 1e-5, rms);
                    y.iter().zip(&gy).map(|(a, b)| a * b).sum()
                };
                for q in 0..r * k {
                    let (mut hi, mut lo) = (x.clone(), x.clone());
                    hi[q] += 1e-6;
                    lo[q] -= 1e-6;
                    let fd = (loss(&hi) - loss(&lo)) / 2e-6;
                    assert!(
                        (gx[q] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                        "rms {rms} affine {affine} [{q}]: {} vs {fd}",
                        gx[q]
                    );
                }
            }
        }
    }
}
