//! L-BFGS (`torch.optim.LBFGS` without line search): a quasi-Newton method that re-evaluates
//! the loss through a closure several times per step. The two-loop recursion runs on the host in
//! f64 over the flattened parameters, following PyTorch's algorithm step by step.

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
/// assert!(w.sub(&target)?.abs()?.amax(&[], false)?.item()? < 1e-6);
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
            self.add_step(self.t, &d)?;
            let mut opt_cond = false;
            if n_iter != o.max_iter {
                loss = closure()?;
                flat_grad = self.flat_grad()?;
                opt_cond = max_abs(&flat_grad) <= o.tolerance_grad;
                current_evals += 1;
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

impl Optimizer for Lbfgs {
    /// L-BFGS re-evaluates the loss: use [`Lbfgs::step_with`].
    fn step(&mut self) -> Result<()> {
        Err(Error::invalid("LBFGS", "LBFGS needs a closure that re-evaluates the loss: call step_with(closure)"))
    }
    fn zero_grad(&mut self, set_to_none: bool) -> Result<()> {
        crate::optimizer::zero_grads(&self.params, set_to_none)
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
