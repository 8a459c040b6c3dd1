//! L-BFGS (`torch.optim.LBFGS`): a quasi-Newton method that re-evaluates the loss through a closure
//! several times per step, with fixed steps or a strong-Wolfe line search. The two-loop recursion
//! runs on the host in f64 over the flattened parameters, following PyTorch's algorithm step by step.

use crate::Optimizer;
use ember_autograd::{no_grad, Error, Result, Tensor};

/// Options of [`Lbfgs`] (PyTorch's defaults).
#[derive(Clone, Debug)]
pub struct LbfgsOptions {
    /// Step length (1).
    pub lr: f64,
    /// Iterations per `step` (20).
    pub max_iter: usize,
    /// Closure evaluations per `step` (default `max_iter · 5/4`).
    pub max_eval: Option<usize>,
    /// Stop when every gradient element is this small (1e-7).
    pub tolerance_grad: f64,
    /// Stop when the loss or the step changes less than this (1e-9).
    pub tolerance_change: f64,
    /// Curvature pairs kept (100).
    pub history_size: usize,
    /// `None` takes steps of `lr` (PyTorch's default); `Some(StrongWolfe)` searches along each
    /// direction for a step that satisfies the strong Wolfe conditions.
    pub line_search: Option<LineSearch>,
}

/// Line searches of [`Lbfgs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineSearch {
    /// Bracketing then cubic-interpolation zoom until sufficient decrease (c1 = 1e-4) and the
    /// strong curvature condition (c2 = 0.9) hold, at most 25 evaluations (PyTorch's "strong_wolfe").
    StrongWolfe,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            line_search: None,
        }
    }
}

/// L-BFGS over a set of parameters.
///
/// ```
/// use ember_autograd::Tensor;
/// use ember_optim::{Lbfgs, LbfgsOptions};
/// let w = Tensor::from_vec(vec![3.0f64, -2.0], &[2])?.requires_grad_(true)?;
/// let mut opt = Lbfgs::new(vec![w.clone()], LbfgsOptions::default())?;
/// let target = Tensor::from_vec(vec![1.0f64, 1.0], &[2])?;
/// for _ in 0..3 {
///     opt.step_with(&mut || {
///         w.set_grad(None);
///         let d = w.sub(&target)?;
///         let loss = d.mul(&d)?.sum()?;
///         loss.backward()?;
///         loss.item()
///     })?;
/// }
/// assert!(w.sub(&target)?.abs()?.max()?.item()? < 1e-6);
/// # Ok::<(), ember_autograd::Error>(())
/// ```
pub struct Lbfgs {
    params: Vec<Tensor>,
    /// The options.
    pub options: LbfgsOptions,
    n_iter: usize,
    d: Vec<f64>,
    t: f64,
    old_dirs: Vec<Vec<f64>>,
    old_stps: Vec<Vec<f64>>,
    ro: Vec<f64>,
    h_diag: f64,
    prev_flat_grad: Vec<f64>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

impl Lbfgs {
    /// L-BFGS over `params` (floating leaves).
    pub fn new(params: Vec<Tensor>, options: LbfgsOptions) -> Result<Self> {
        if params.iter().any(|p| !p.is_leaf() || !p.dtype().is_float()) {
            return Err(Error::invalid("LBFGS", "can only optimize floating leaf tensors"));
        }
        Ok(Lbfgs {
            params,
            options,
            n_iter: 0,
            d: vec![],
            t: 0.0,
            old_dirs: vec![],
            old_stps: vec![],
            ro: vec![],
            h_diag: 1.0,
            prev_flat_grad: vec![],
        })
    }

    fn flat_grad(&self) -> Result<Vec<f64>> {
        let mut out = vec![];
        for p in &self.params {
            match p.grad() {
                Some(g) => out.extend(g.to_vec_f64()?),
                None => out.extend(std::iter::repeat_n(0.0, p.numel())),
            }
        }
        Ok(out)
    }

    fn flat_params(&self) -> Result<Vec<f64>> {
        let mut out = vec![];
        for p in &self.params {
            out.extend(p.to_vec_f64()?);
        }
        Ok(out)
    }

    /// `params = x + t · d`.
    fn set_params(&self, x: &[f64], t: f64, d: &[f64]) -> Result<()> {
        no_grad(|| {
            let mut off = 0;
            for p in &self.params {
                let n = p.numel();
                let v: Vec<f64> = x[off..off + n].iter().zip(&d[off..off + n]).map(|(x, d)| x + t * d).collect();
                p.copy_(&Tensor::from_vec(v, p.shape())?)?;
                off += n;
            }
            Ok(())
        })
    }

    /// `params += t · d`.
    fn add_step(&self, t: f64, d: &[f64]) -> Result<()> {
        no_grad(|| {
            let mut off = 0;
            for p in &self.params {
                let n = p.numel();
                let delta = Tensor::from_vec(d[off..off + n].iter().map(|v| v * t).collect::<Vec<_>>(), p.shape())?;
                p.add_(&delta.to_dtype(p.dtype())?.to(p.device())?)?;
                off += n;
            }
            Ok(())
        })
    }

    /// One L-BFGS step: `closure` must zero the gradients, compute the loss, call `backward` and
    /// return the loss. Returns the loss of the first evaluation.
    pub fn step_with(&mut self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<f64> {
        let o = self.options.clone();
        let max_eval = o.max_eval.unwrap_or(o.max_iter * 5 / 4);
        let orig_loss = closure()?;
        let mut loss = orig_loss;
        let mut current_evals = 1;
        let mut flat_grad = self.flat_grad()?;
        if max_abs(&flat_grad) <= o.tolerance_grad {
            return Ok(orig_loss);
        }
        let mut n_iter = 0;
        while n_iter < o.max_iter {
            n_iter += 1;
            self.n_iter += 1;
            if self.n_iter == 1 {
                self.d = flat_grad.iter().map(|g| -g).collect();
                self.old_dirs.clear();
                self.old_stps.clear();
                self.ro.clear();
                self.h_diag = 1.0;
            } else {
                let y: Vec<f64> = flat_grad.iter().zip(&self.prev_flat_grad).map(|(a, b)| a - b).collect();
                let s: Vec<f64> = self.d.iter().map(|v| v * self.t).collect();
                let ys = dot(&y, &s);
                if ys > 1e-10 {
                    if self.old_dirs.len() == o.history_size {
                        self.old_dirs.remove(0);
                        self.old_stps.remove(0);
                        self.ro.remove(0);
                    }
                    self.h_diag = ys / dot(&y, &y);
                    self.old_dirs.push(y);
                    self.old_stps.push(s);
                    self.ro.push(1.0 / ys);
                }
                let k = self.old_dirs.len();
                let mut al = vec![0.0; k];
                let mut q: Vec<f64> = flat_grad.iter().map(|g| -g).collect();
                for i in (0..k).rev() {
                    al[i] = dot(&self.old_stps[i], &q) * self.ro[i];
                    for (qv, dv) in q.iter_mut().zip(&self.old_dirs[i]) {
                        *qv -= al[i] * dv;
                    }
                }
                let mut r: Vec<f64> = q.iter().map(|v| v * self.h_diag).collect();
                for (((y, s), ro), a) in self.old_dirs.iter().zip(&self.old_stps).zip(&self.ro).zip(&al) {
                    let be = dot(y, &r) * ro;
                    for (rv, sv) in r.iter_mut().zip(s) {
                        *rv += (a - be) * sv;
                    }
                }
                self.d = r;
            }
            self.prev_flat_grad = flat_grad.clone();
            let prev_loss = loss;
            self.t = if self.n_iter == 1 {
                (1.0f64).min(1.0 / flat_grad.iter().map(|g| g.abs()).sum::<f64>()) * o.lr
            } else {
                o.lr
            };
            let gtd = dot(&flat_grad, &self.d);
            if gtd > -o.tolerance_change {
                break;
            }
            let d = self.d.clone();
            let mut opt_cond = false;
            if o.line_search == Some(LineSearch::StrongWolfe) {
                let x = self.flat_params()?;
                let mut eval = |t: f64| -> Result<(f64, Vec<f64>)> {
                    self.set_params(&x, t, &d)?;
                    let f = closure()?;
                    Ok((f, self.flat_grad()?))
                };
                let found = strong_wolfe(&mut eval, self.t, &d, loss, &flat_grad, gtd, o.tolerance_change)?;
                self.t = found.t;
                self.set_params(&x, found.t, &d)?;
                loss = found.f;
                flat_grad = found.g;
                opt_cond = max_abs(&flat_grad) <= o.tolerance_grad;
                current_evals += found.evals;
            } else {
                self.add_step(self.t, &d)?;
                if n_iter != o.max_iter {
                    loss = closure()?;
                    flat_grad = self.flat_grad()?;
                    opt_cond = max_abs(&flat_grad) <= o.tolerance_grad;
                    current_evals += 1;
                }
            }
            if n_iter == o.max_iter || current_evals >= max_eval || opt_cond {
                break;
            }
            if max_abs(&self.d) * self.t.abs() <= o.tolerance_change || (loss - prev_loss).abs() < o.tolerance_change {
                break;
            }
        }
        Ok(orig_loss)
    }
}

/// The minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clamped to `bounds`
/// (default: between x1 and x2); the middle of the bounds when the cubic has no minimum.
fn cubic_minimum(x1: f64, f1: f64, g1: f64, x2: f64, f2: f64, g2: f64, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or((x1.min(x2), x1.max(x2)));
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_sq = d1 * d1 - g1 * g2;
    if d2_sq < 0.0 || !d2_sq.is_finite() {
        return (lo + hi) / 2.0;
    }
    let d2 = d2_sq.sqrt();
    let x = if x1 <= x2 {
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
    } else {
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
    };
    if x.is_nan() {
        return (lo + hi) / 2.0;
    }
    x.max(lo).min(hi)
}

/// A point of the line search: step, loss, gradient and directional derivative.
#[derive(Clone)]
struct Probe {
    t: f64,
    f: f64,
    g: Vec<f64>,
    gtd: f64,
}

/// What the line search settled on.
struct Found {
    t: f64,
    f: f64,
    g: Vec<f64>,
    evals: usize,
}

/// Strong-Wolfe line search along `d` from the current point (loss `f`, gradient `g`, slope
/// `gtd` < 0), starting at step `t`: bracket a step that satisfies both conditions, then zoom in
/// with safeguarded cubic interpolation (Nocedal & Wright, algorithms 3.5 and 3.6).
fn strong_wolfe(
    eval: &mut dyn FnMut(f64) -> Result<(f64, Vec<f64>)>,
    t: f64,
    d: &[f64],
    f: f64,
    g: &[f64],
    gtd: f64,
    tolerance_change: f64,
) -> Result<Found> {
    const C1: f64 = 1e-4;
    const C2: f64 = 0.9;
    const MAX_LS: usize = 25;
    let d_norm = max_abs(d);
    let mut probe = |t: f64| -> Result<Probe> {
        let (f, g) = eval(t)?;
        let gtd = dot(&g, d);
        Ok(Probe { t, f, g, gtd })
    };
    let start = Probe { t: 0.0, f, g: g.to_vec(), gtd };
    let mut new = probe(t)?;
    let mut evals = 1;
    let mut prev = start.clone();
    let mut iter = 0;
    let mut done = false;
    // bracketing: [low, high] once found; a single point when it already satisfies both conditions
    let mut bracket: Vec<Probe> = loop {
        if iter == MAX_LS {
            break vec![start.clone(), new.clone()];
        }
        if new.f > f + C1 * new.t * gtd || (iter > 1 && new.f >= prev.f) {
            break vec![prev.clone(), new.clone()];
        }
        if new.gtd.abs() <= -C2 * gtd {
            done = true;
            break vec![new.clone()];
        }
        if new.gtd >= 0.0 {
            break vec![prev.clone(), new.clone()];
        }
        // extrapolate beyond the current step
        let (min_step, max_step) = (new.t + 0.01 * (new.t - prev.t), new.t * 10.0);
        let next = cubic_minimum(prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd, Some((min_step, max_step)));
        prev = new;
        new = probe(next)?;
        evals += 1;
        iter += 1;
    };
    let order = |b: &[Probe]| if b.len() == 1 || b[0].f <= b[1].f { (0, b.len() - 1) } else { (1, 0) };
    let (mut low, mut high) = order(&bracket);
    let mut insufficient_progress = false;
    while !done && iter < MAX_LS {
        let (a, b) = (bracket[0].t, bracket[1].t);
        if (b - a).abs() * d_norm < tolerance_change {
            break;
        }
        let mut t = cubic_minimum(a, bracket[0].f, bracket[0].gtd, b, bracket[1].f, bracket[1].gtd, None);
        // keep away from the ends unless that made no progress last time
        let (lo, hi) = (a.min(b), a.max(b));
        let eps = 0.1 * (hi - lo);
        if (hi - t).min(t - lo) < eps {
            if insufficient_progress || t >= hi || t <= lo {
                t = if (t - hi).abs() < (t - lo).abs() { hi - eps } else { lo + eps };
                insufficient_progress = false;
            } else {
                insufficient_progress = true;
            }
        } else {
            insufficient_progress = false;
        }
        let p = probe(t)?;
        evals += 1;
        iter += 1;
        if p.f > f + C1 * p.t * gtd || p.f >= bracket[low].f {
            bracket[high] = p;
            (low, high) = order(&bracket);
        } else {
            if p.gtd.abs() <= -C2 * gtd {
                done = true;
            } else if p.gtd * (bracket[high].t - bracket[low].t) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = p;
        }
    }
    let best = bracket.swap_remove(low);
    Ok(Found { t: best.t, f: best.f, g: best.g, evals })
}

impl Optimizer for Lbfgs {
    /// L-BFGS re-evaluates the loss: use [`Lbfgs::step_with`].
    fn step(&mut self) -> Result<()> {
        Err(Error::invalid("LBFGS", "LBFGS needs a closure that re-evaluates the loss: call step_with(closure)"))
    }
    fn zero_grad_with(&mut self, set_to_none: bool) -> Result<()> {
        crate::optimizer::zero_grads(&self.params, set_to_none)
    }
    fn params(&self) -> Vec<Tensor> {
        self.params.clone()
    }
    fn num_groups(&self) -> usize {
        1
    }
    fn lr(&self, _g: usize) -> f64 {
        self.options.lr
    }
    fn set_lr(&mut self, _g: usize, lr: f64) {
        self.options.lr = lr
    }
    fn momentum(&self, _g: usize) -> Option<f64> {
        None
    }
    fn set_momentum(&mut self, _g: usize, _m: f64) {}
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        vec![("param_groups.0.lr".into(), Tensor::scalar(self.options.lr))]
    }
    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (k, t) in state {
            match k.as_str() {
                "param_groups.0.lr" => self.options.lr = t.item()?,
                _ => return Err(Error::invalid("load_state_dict", format!("unexpected LBFGS state key {k:?}"))),
            }
        }
        Ok(())
    }
}
