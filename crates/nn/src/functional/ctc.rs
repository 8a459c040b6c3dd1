//! Connectionist temporal classification loss (`torch.nn.functional.ctc_loss`).
//!
//! The per-sample negative log-likelihood comes from the forward (alpha) recursion over the target
//! with blanks interleaved, in log space and f64. Its backward is PyTorch's: with beta the backward
//! recursion, the gradient w.r.t. `log_probs[t, n, c]` is `exp(log_probs) - posterior occupancy of
//! c at t`, the gradient one gets as if `log_probs = log_softmax(logits)` and one differentiated
//! w.r.t. the logits; it is zero for `t >= input_length`.

use super::Reduction;
use ember_autograd::{apply, Context, Error, Function, Result, Tensor};

/// Options of [`ctc_loss`] beyond the tensors.
#[derive(Clone, Copy, Debug)]
pub struct CtcOptions {
    /// The blank class index (PyTorch's default 0).
    pub blank: usize,
    /// `Mean` divides each sample's loss by its target length, then averages over the batch.
    pub reduction: Reduction,
    /// Replaces infinite losses (no valid alignment) and their gradients by zero.
    pub zero_infinity: bool,
}

impl Default for CtcOptions {
    fn default() -> Self {
        CtcOptions { blank: 0, reduction: Reduction::Mean, zero_infinity: false }
    }
}

/// CTC loss of `log_probs` (`[T, N, C]`, log-softmax output) against `targets`: either padded
/// `[N, S]` or all targets concatenated (1-d), with `input_lengths` and `target_lengths` (`[N]`,
/// integers). Second-order gradients are not supported.
///
/// ```
/// use ember_autograd::Tensor;
/// use ember_nn::functional::{ctc_loss, CtcOptions};
/// let lp = Tensor::randn(&[5, 1, 3]).unwrap().log_softmax(-1).unwrap();
/// let targets = Tensor::from_vec(vec![1i64, 2], &[1, 2]).unwrap();
/// let lens = Tensor::from_vec(vec![5i64], &[1]).unwrap();
/// let tl = Tensor::from_vec(vec![2i64], &[1]).unwrap();
/// let loss = ctc_loss(&lp, &targets, &lens, &tl, CtcOptions::default()).unwrap();
/// assert!(loss.item().unwrap() > 0.0);
/// ```
pub fn ctc_loss(
    log_probs: &Tensor,
    targets: &Tensor,
    input_lengths: &Tensor,
    target_lengths: &Tensor,
    o: CtcOptions,
) -> Result<Tensor> {
    let op = "ctc_loss";
    if log_probs.ndim() != 3 || !log_probs.dtype().is_float() {
        return Err(Error::shape(
            op,
            format!("log_probs must be a floating [T, N, C] tensor, got {:?} {}", log_probs.shape(), log_probs.dtype()),
        ));
    }
    let (t_max, n, c) = (log_probs.shape()[0], log_probs.shape()[1], log_probs.shape()[2]);
    let lengths = |t: &Tensor, what: &str| -> Result<Vec<usize>> {
        if t.dtype().is_float() || t.numel() != n {
            return Err(Error::shape(op, format!("{what} must hold {n} integers, got {:?} {}", t.shape(), t.dtype())));
        }
        t.to_vec_f64()?.into_iter().map(|v| usize_in(v, what)).collect()
    };
    let input_lengths = lengths(input_lengths, "input_lengths")?;
    let target_lengths = lengths(target_lengths, "target_lengths")?;
    if let Some(&bad) = input_lengths.iter().find(|&&l| l > t_max) {
        return Err(Error::invalid(op, format!("input length {bad} exceeds the {t_max} time steps of log_probs")));
    }
    if o.blank >= c {
        return Err(Error::invalid(op, format!("blank {} is not one of the {c} classes", o.blank)));
    }
    let tv: Vec<usize> = targets.to_vec_f64()?.into_iter().map(|v| usize_in(v, "targets")).collect::<Result<_>>()?;
    let seqs: Vec<Vec<usize>> = match targets.ndim() {
        2 if targets.shape()[0] == n => {
            let s = targets.shape()[1];
            if let Some(&bad) = target_lengths.iter().find(|&&l| l > s) {
                return Err(Error::invalid(op, format!("target length {bad} exceeds the padded width {s}")));
            }
            (0..n).map(|i| tv[i * s..i * s + target_lengths[i]].to_vec()).collect()
        }
        1 => {
            let total: usize = target_lengths.iter().sum();
            if total != tv.len() {
                return Err(Error::shape(
                    op,
                    format!("concatenated targets hold {} labels, target_lengths sum to {total}", tv.len()),
                ));
            }
            let mut at = 0;
            target_lengths
                .iter()
                .map(|&l| {
                    at += l;
                    tv[at - l..at].to_vec()
                })
                .collect()
        }
        _ => {
            return Err(Error::shape(op, format!("targets must be [N, S] (N = {n}) or 1-d, got {:?}", targets.shape())))
        }
    };
    if let Some(bad) = seqs.iter().flatten().find(|&&l| l >= c || l == o.blank) {
        return Err(Error::invalid(op, format!("target label {bad} must be a class other than the blank {}", o.blank)));
    }
    let per_sample = apply(
        CtcFunction { targets: seqs, input_lengths, blank: o.blank, zero_infinity: o.zero_infinity },
        std::slice::from_ref(log_probs),
    )?;
    match o.reduction {
        Reduction::None => Ok(per_sample),
        Reduction::Sum => per_sample.sum(),
        Reduction::Mean => {
            let tl: Vec<f64> = target_lengths.iter().map(|&l| l.max(1) as f64).collect();
            let tl = Tensor::from_vec(tl, [n])?.to_dtype(per_sample.dtype())?.to(per_sample.device())?;
            per_sample.div(&tl)?.mean()
        }
        Reduction::BatchMean => Err(Error::invalid(op, "reduction 'batchmean' is only for kl_div")),
    }
}

fn usize_in(v: f64, what: &str) -> Result<usize> {
    if v < 0.0 || v.fract() != 0.0 {
        return Err(Error::invalid("ctc_loss", format!("{what} must be non-negative integers, got {v}")));
    }
    Ok(v as usize)
}

/// log(e^a + e^b), exact at -inf.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

struct CtcFunction {
    targets: Vec<Vec<usize>>,
    input_lengths: Vec<usize>,
    blank: usize,
    zero_infinity: bool,
}

/// One sample's log-probabilities `[T, C]` (row-major) and its label sequence with blanks around
/// and between the labels.
struct Sample<'a> {
    lp: &'a [f64],
    classes: usize,
    len: usize,
    ext: Vec<usize>,
}

impl Sample<'_> {
    fn at(&self, t: usize, s: usize) -> f64 {
        self.lp[t * self.classes + self.ext[s]]
    }
    /// May a path jump from position s-2 to s (skipping a blank between two different labels)?
    fn skip(&self, s: usize, blank: usize) -> bool {
        s >= 2 && self.ext[s] != blank && self.ext[s] != self.ext[s - 2]
    }
    /// log alpha[t][s]: all prefixes of paths that emit the first s+1 extended symbols by time t.
    fn alpha(&self, blank: usize) -> Vec<Vec<f64>> {
        let s_len = self.ext.len();
        let mut a = vec![vec![f64::NEG_INFINITY; s_len]; self.len];
        if self.len == 0 {
            return a;
        }
        a[0][0] = self.at(0, 0);
        if s_len > 1 {
            a[0][1] = self.at(0, 1);
        }
        for t in 1..self.len {
            for s in 0..s_len {
                let mut v = a[t - 1][s];
                if s >= 1 {
                    v = log_add(v, a[t - 1][s - 1]);
                }
                if self.skip(s, blank) {
                    v = log_add(v, a[t - 1][s - 2]);
                }
                a[t][s] = v + self.at(t, s);
            }
        }
        a
    }
    /// log beta[t][s]: all suffixes of paths from symbol s at time t to the end (emission at t included).
    fn beta(&self, blank: usize) -> Vec<Vec<f64>> {
        let s_len = self.ext.len();
        let mut b = vec![vec![f64::NEG_INFINITY; s_len]; self.len];
        if self.len == 0 {
            return b;
        }
        let last = self.len - 1;
        b[last][s_len - 1] = self.at(last, s_len - 1);
        if s_len > 1 {
            b[last][s_len - 2] = self.at(last, s_len - 2);
        }
        for t in (0..last).rev() {
            for s in 0..s_len {
                let mut v = b[t + 1][s];
                if s + 1 < s_len {
                    v = log_add(v, b[t + 1][s + 1]);
                }
                if s + 2 < s_len && self.skip(s + 2, blank) {
                    v = log_add(v, b[t + 1][s + 2]);
                }
                b[t][s] = v + self.at(t, s);
            }
        }
        b
    }
    fn nll(&self, alpha: &[Vec<f64>]) -> f64 {
        let s_len = self.ext.len();
        let Some(a) = alpha.last() else {
            // no time steps: only the empty target has an alignment
            return if s_len == 1 { 0.0 } else { f64::INFINITY };
        };
        let tail = if s_len > 1 { log_add(a[s_len - 1], a[s_len - 2]) } else { a[s_len - 1] };
        -tail
    }
}

impl CtcFunction {
    /// `[T, N, C]` log-probabilities as f64, split per sample into `[T, C]` rows.
    fn per_sample(&self, log_probs: &Tensor) -> Result<(Vec<Vec<f64>>, usize, usize)> {
        let (t_max, n, c) = (log_probs.shape()[0], log_probs.shape()[1], log_probs.shape()[2]);
        let v = log_probs.permute([1, 0, 2])?.contiguous()?.to_vec_f64()?;
        Ok(((0..n).map(|i| v[i * t_max * c..(i + 1) * t_max * c].to_vec()).collect(), t_max, c))
    }

    fn sample<'a>(&self, i: usize, lp: &'a [f64], classes: usize) -> Sample<'a> {
        let mut ext = vec![self.blank];
        for &l in &self.targets[i] {
            ext.push(l);
            ext.push(self.blank);
        }
        Sample { lp, classes, len: self.input_lengths[i], ext }
    }
}

impl Function for CtcFunction {
    fn forward(&self, ctx: &mut Context, inputs: &[Tensor]) -> Result<Tensor> {
        let lp = &inputs[0];
        ctx.save_for_backward(&[lp]);
        let (rows, _, c) = self.per_sample(lp)?;
        let losses: Vec<f64> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s = self.sample(i, r, c);
                let l = s.nll(&s.alpha(self.blank));
                if self.zero_infinity && l.is_infinite() {
                    0.0
                } else {
                    l
                }
            })
            .collect();
        Tensor::from_vec(losses, [rows.len()])?.to_dtype(lp.dtype())?.to(lp.device())
    }

    fn backward(&self, ctx: &Context, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let lp = &ctx.saved_tensors()[0];
        let (rows, t_max, c) = self.per_sample(lp)?;
        let n = rows.len();
        // [N, T, C] gradient for a unit upstream gradient per sample
        let mut g = vec![0.0; n * t_max * c];
        for (i, r) in rows.iter().enumerate() {
            let s = self.sample(i, r, c);
            let alpha = s.alpha(self.blank);
            let nll = s.nll(&alpha);
            if self.zero_infinity && nll.is_infinite() {
                continue;
            }
            let beta = s.beta(self.blank);
            let out = &mut g[i * t_max * c..(i + 1) * t_max * c];
            for t in 0..s.len {
                let mut occupancy = vec![f64::NEG_INFINITY; c];
                for k in 0..s.ext.len() {
                    occupancy[s.ext[k]] = log_add(occupancy[s.ext[k]], alpha[t][k] + beta[t][k]);
                }
                for (cls, occ) in occupancy.iter().enumerate() {
                    let l = r[t * c + cls];
                    out[t * c + cls] = l.exp() - (occ + nll - l).exp();
                }
            }
        }
        let g = Tensor::from_vec(g, [n, t_max, c])?.permute([1, 0, 2])?.to_dtype(lp.dtype())?.to(lp.device())?;
        let scale = grad_output.to_dtype(lp.dtype())?.reshape([1, n as isize, 1])?;
        Ok(vec![Some(g.mul(&scale)?)])
    }

    fn name(&self) -> &'static str {
        "ctc_loss"
    }
}
