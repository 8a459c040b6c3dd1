//! Learning-rate schedulers (`torch.optim.lr_scheduler`). Each computes the rate of step `t` in
//! closed form from the base rates, so the schedule is exact and a resumed run only needs `t`.
//!
//! ```
//! use ember_autograd::Tensor;
//! use ember_optim::{lr_scheduler, Optimizer, Sgd, SgdOptions};
//! let p = Tensor::zeros(&[2]).unwrap().requires_grad_(true).unwrap();
//! let mut opt = Sgd::sgd(vec![p], SgdOptions::new(0.1)).unwrap();
//! let mut sched = lr_scheduler::step_lr(&mut opt, 2, 0.5);
//! let mut lrs = vec![];
//! for _ in 0..5 {
//!     lrs.push(opt.lr(0));
//!     opt.step().unwrap();
//!     sched.step(&mut opt).unwrap();
//! }
//! assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025]);
//! ```

use crate::Optimizer;
use ember_autograd::{Error, Result};
use std::f64::consts::PI;

/// The rate (and optionally the momentum) at step `t` given a group's base rate.
pub type Rule = Box<dyn Fn(u64, f64) -> (f64, Option<f64>) + Send>;

/// A scheduler driven by a closed-form rule of the step count.
pub struct Scheduler {
    base_lrs: Vec<f64>,
    last_epoch: u64,
    rule: Rule,
    last_lrs: Vec<f64>,
    /// The last step the rule is defined for (OneCycle's `total_steps`); stepping past it is an error.
    limit: Option<u64>,
}

impl Scheduler {
    /// Wraps `rule`, taking the optimizer's current rates as the base rates, and applies step 0.
    pub fn new(opt: &mut dyn Optimizer, rule: Rule) -> Self {
        let base_lrs: Vec<f64> = (0..opt.num_groups()).map(|g| opt.lr(g)).collect();
        let mut s = Scheduler { last_lrs: base_lrs.clone(), base_lrs, last_epoch: 0, rule, limit: None };
        s.apply(opt);
        s
    }

    fn apply(&mut self, opt: &mut dyn Optimizer) {
        self.last_lrs.clear();
        for (g, &base) in self.base_lrs.iter().enumerate() {
            let (lr, m) = (self.rule)(self.last_epoch, base);
            opt.set_lr(g, lr);
            if let Some(m) = m {
                opt.set_momentum(g, m);
            }
            self.last_lrs.push(lr);
        }
    }

    /// Advances one step and sets the optimizer's rates. A schedule of fixed length (OneCycle)
    /// stepped past its end is an error, as in PyTorch ("Tried to step 11 times. The specified
    /// number of total steps is 10"), and stays where it was.
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if let Some(limit) = self.limit.filter(|&l| self.last_epoch >= l) {
            return Err(Error::invalid(
                "lr_scheduler",
                format!("tried to step {} times; the specified number of total steps is {limit}", self.last_epoch + 1),
            ));
        }
        self.last_epoch += 1;
        self.apply(opt);
        Ok(())
    }

    /// The rates set last (`get_last_lr()`).
    pub fn last_lr(&self) -> &[f64] {
        &self.last_lrs
    }

    /// The step count.
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// Jumps to step `t` (to resume a run) and sets the optimizer's rates.
    pub fn set_last_epoch(&mut self, opt: &mut dyn Optimizer, t: u64) {
        self.last_epoch = t;
        self.apply(opt);
    }

    /// The base rates.
    pub fn base_lrs(&self) -> &[f64] {
        &self.base_lrs
    }
}

fn lr_only(f: impl Fn(u64, f64) -> f64 + Send + 'static) -> Rule {
    Box::new(move |t, b| (f(t, b), None))
}

/// `StepLR`: multiply by `gamma` every `step_size` steps.
pub fn step_lr(opt: &mut dyn Optimizer, step_size: u64, gamma: f64) -> Scheduler {
    let step_size = step_size.max(1);
    Scheduler::new(opt, lr_only(move |t, b| b * gamma.powi((t / step_size) as i32)))
}

/// `MultiStepLR`: multiply by `gamma` at each milestone.
pub fn multi_step_lr(opt: &mut dyn Optimizer, milestones: &[u64], gamma: f64) -> Scheduler {
    let ms = milestones.to_vec();
    Scheduler::new(opt, lr_only(move |t, b| b * gamma.powi(ms.iter().filter(|&&m| m <= t).count() as i32)))
}

/// `ExponentialLR`: multiply by `gamma` every step.
pub fn exponential_lr(opt: &mut dyn Optimizer, gamma: f64) -> Scheduler {
    Scheduler::new(opt, lr_only(move |t, b| b * gamma.powi(t as i32)))
}

/// `CosineAnnealingLR`: half a cosine from the base rate to `eta_min` over `t_max` steps.
pub fn cosine_annealing_lr(opt: &mut dyn Optimizer, t_max: u64, eta_min: f64) -> Scheduler {
    let t_max = t_max.max(1) as f64;
    Scheduler::new(opt, lr_only(move |t, b| eta_min + (b - eta_min) * (1.0 + (PI * t as f64 / t_max).cos()) / 2.0))
}

/// `CosineAnnealingWarmRestarts`: cosine annealing restarted after `t_0`, `t_0·t_mult`, ... steps.
pub fn cosine_annealing_warm_restarts(opt: &mut dyn Optimizer, t_0: u64, t_mult: u64, eta_min: f64) -> Scheduler {
    let (t_0, t_mult) = (t_0.max(1), t_mult.max(1));
    Scheduler::new(
        opt,
        lr_only(move |t, b| {
            let (mut cur, mut len) = (t, t_0);
            // at most 64 rounds: the cycle length at least doubles each round when t_mult > 1,
            // and saturates instead of wrapping (a huge t_mult looped forever before)
            while cur >= len {
                cur -= len;
                if t_mult == 1 {
                    cur %= len;
                } else {
                    len = len.saturating_mul(t_mult);
                }
            }
            eta_min + (b - eta_min) * (1.0 + (PI * cur as f64 / len as f64).cos()) / 2.0
        }),
    )
}

/// `LinearLR`: the factor goes linearly from `start_factor` to `end_factor` over `total_iters`.
pub fn linear_lr(opt: &mut dyn Optimizer, start_factor: f64, end_factor: f64, total_iters: u64) -> Scheduler {
    let n = total_iters.max(1);
    Scheduler::new(
        opt,
        lr_only(move |t, b| b * (start_factor + (end_factor - start_factor) * t.min(n) as f64 / n as f64)),
    )
}

/// `PolynomialLR`: `(1 − t/total_iters)^power` until `total_iters`, then 0.
pub fn polynomial_lr(opt: &mut dyn Optimizer, total_iters: u64, power: f64) -> Scheduler {
    let n = total_iters.max(1);
    Scheduler::new(opt, lr_only(move |t, b| b * (1.0 - t.min(n) as f64 / n as f64).powf(power)))
}

/// `LambdaLR`: the base rate times `f(t)`.
pub fn lambda_lr(opt: &mut dyn Optimizer, f: impl Fn(u64) -> f64 + Send + 'static) -> Scheduler {
    Scheduler::new(opt, lr_only(move |t, b| b * f(t)))
}

/// Options of [`one_cycle_lr`], with PyTorch's defaults.
#[derive(Clone, Debug)]
pub struct OneCycleOptions {
    /// Peak rate.
    pub max_lr: f64,
    /// Steps in the cycle.
    pub total_steps: u64,
    /// Fraction of the cycle spent increasing (0.3).
    pub pct_start: f64,
    /// "cos" (default) or "linear".
    pub anneal_strategy: String,
    /// Cycle the momentum inversely to the rate (true).
    pub cycle_momentum: bool,
    /// Lowest momentum (0.85).
    pub base_momentum: f64,
    /// Highest momentum (0.95).
    pub max_momentum: f64,
    /// Initial rate = max_lr / div_factor (25).
    pub div_factor: f64,
    /// Final rate = initial / final_div_factor (1e4).
    pub final_div_factor: f64,
    /// Three phases (up, down to initial, down to final) instead of two (false).
    pub three_phase: bool,
}

impl OneCycleOptions {
    /// PyTorch's defaults for `max_lr` and `total_steps`.
    pub fn new(max_lr: f64, total_steps: u64) -> Self {
        OneCycleOptions {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal_strategy: "cos".into(),
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

/// `OneCycleLR`: warm up to `max_lr`, then anneal far below the start (Smith's 1cycle policy).
pub fn one_cycle_lr(opt: &mut dyn Optimizer, o: OneCycleOptions) -> Result<Scheduler> {
    if o.total_steps == 0 || !(0.0..=1.0).contains(&o.pct_start) {
        return Err(Error::invalid("OneCycleLR", "total_steps must be positive and pct_start in [0, 1]"));
    }
    let cos = match o.anneal_strategy.as_str() {
        "cos" => true,
        "linear" => false,
        s => return Err(Error::invalid("OneCycleLR", format!("anneal_strategy must be cos or linear, got {s}"))),
    };
    if o.cycle_momentum && (0..opt.num_groups()).any(|g| opt.momentum(g).is_none()) {
        return Err(Error::invalid("OneCycleLR", "optimizer has no momentum to cycle; set cycle_momentum false"));
    }
    let initial = o.max_lr / o.div_factor;
    let min_lr = initial / o.final_div_factor;
    let total = o.total_steps as f64;
    let up_end = o.pct_start * total - 1.0;
    // (end_step, lr start, lr end, momentum start, momentum end)
    let phases: Vec<(f64, f64, f64, f64, f64)> = if o.three_phase {
        vec![
            (up_end, initial, o.max_lr, o.max_momentum, o.base_momentum),
            (2.0 * o.pct_start * total - 2.0, o.max_lr, initial, o.base_momentum, o.max_momentum),
            (total - 1.0, initial, min_lr, o.max_momentum, o.max_momentum),
        ]
    } else {
        vec![
            (up_end, initial, o.max_lr, o.max_momentum, o.base_momentum),
            (total - 1.0, o.max_lr, min_lr, o.base_momentum, o.max_momentum),
        ]
    };
    let anneal = move |a: f64, b: f64, pct: f64| {
        if cos {
            b + (a - b) / 2.0 * ((PI * pct).cos() + 1.0)
        } else {
            (b - a) * pct + a
        }
    };
    let cycle_m = o.cycle_momentum;
    let total_steps = o.total_steps;
    let mut s = Scheduler::new(
        opt,
        Box::new(move |t, _base| {
            let t = t as f64;
            let mut start = 0.0;
            for (i, &(end, l0, l1, m0, m1)) in phases.iter().enumerate() {
                if t <= end || i == phases.len() - 1 {
                    let pct = (t - start) / (end - start);
                    return (anneal(l0, l1, pct), cycle_m.then(|| anneal(m0, m1, pct)));
                }
                start = end;
            }
            (min_lr, None)
        }),
    );
    s.limit = Some(total_steps);
    Ok(s)
}

/// Options of [`cyclic_lr`].
#[derive(Clone, Debug)]
pub struct CyclicOptions {
    /// Lower bound of the cycle (also set as the optimizer's rate).
    pub base_lr: f64,
    /// Upper bound.
    pub max_lr: f64,
    /// Steps going up (2000).
    pub step_size_up: u64,
    /// Steps going down (default: `step_size_up`).
    pub step_size_down: Option<u64>,
    /// "triangular", "triangular2" or "exp_range".
    pub mode: String,
    /// Decay per step in exp_range mode (1).
    pub gamma: f64,
}

/// `CyclicLR` (no momentum cycling).
pub fn cyclic_lr(opt: &mut dyn Optimizer, o: CyclicOptions) -> Result<Scheduler> {
    let mode = match o.mode.as_str() {
        "triangular" => 0,
        "triangular2" => 1,
        "exp_range" => 2,
        m => return Err(Error::invalid("CyclicLR", format!("unknown mode {m}"))),
    };
    for g in 0..opt.num_groups() {
        opt.set_lr(g, o.base_lr);
    }
    let up = o.step_size_up.max(1) as f64;
    let down = o.step_size_down.map_or(up, |d| d.max(1) as f64);
    let total = up + down;
    let ratio = up / total;
    let (base, max, gamma) = (o.base_lr, o.max_lr, o.gamma);
    Ok(Scheduler::new(
        opt,
        lr_only(move |t, _| {
            let t = t as f64;
            let cycle = (1.0 + t / total).floor();
            let x = 1.0 + t / total - cycle;
            let scale = if x <= ratio { x / ratio } else { (x - 1.0) / (ratio - 1.0) };
            let h = (max - base) * scale;
            let f = match mode {
                0 => 1.0,
                1 => 1.0 / 2f64.powf(cycle - 1.0),
                _ => gamma.powf(t),
            };
            base + h * f
        }),
    ))
}

/// `SequentialLR`: runs `schedulers[i]` from `milestones[i-1]` on, each restarted from its step 0.
pub struct SequentialLr {
    rules: Vec<Scheduler>,
    milestones: Vec<u64>,
    last_epoch: u64,
}

impl SequentialLr {
    /// Chains schedulers (built on the same optimizer, in order) at the milestones.
    pub fn new(opt: &mut dyn Optimizer, schedulers: Vec<Scheduler>, milestones: &[u64]) -> Result<Self> {
        if schedulers.is_empty() || milestones.len() + 1 != schedulers.len() {
            return Err(Error::invalid("SequentialLR", "expects one more scheduler than milestones"));
        }
        let mut s = SequentialLr { rules: schedulers, milestones: milestones.to_vec(), last_epoch: 0 };
        s.rules[0].set_last_epoch(opt, 0);
        Ok(s)
    }

    /// Advances one step.
    pub fn step(&mut self, opt: &mut dyn Optimizer) {
        self.last_epoch += 1;
        let idx = self.milestones.iter().filter(|&&m| m <= self.last_epoch).count();
        let start = if idx == 0 { 0 } else { self.milestones[idx - 1] };
        self.rules[idx].set_last_epoch(opt, self.last_epoch - start);
    }
}

/// `ReduceLROnPlateau`: divide the rate when a metric stops improving.
pub struct ReduceLrOnPlateau {
    /// "min" or "max".
    pub mode_max: bool,
    /// Multiplier on reduction (0.1).
    pub factor: f64,
    /// Bad steps tolerated (10).
    pub patience: u64,
    /// Improvement threshold (1e-4).
    pub threshold: f64,
    /// Relative (true, default) or absolute threshold.
    pub threshold_rel: bool,
    /// Steps to wait after a reduction (0).
    pub cooldown: u64,
    /// Lower bound per group (0).
    pub min_lr: f64,
    /// Smallest change applied (1e-8).
    pub eps: f64,
    best: f64,
    num_bad: u64,
    cooldown_counter: u64,
}

impl ReduceLrOnPlateau {
    /// PyTorch's defaults for mode "min" (`mode_max` false) or "max".
    pub fn new(mode_max: bool) -> Self {
        ReduceLrOnPlateau {
            mode_max,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_rel: true,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
            best: if mode_max { f64::NEG_INFINITY } else { f64::INFINITY },
            num_bad: 0,
            cooldown_counter: 0,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        match (self.mode_max, self.threshold_rel) {
            (false, true) => a < self.best * (1.0 - self.threshold),
            (false, false) => a < self.best - self.threshold,
            (true, true) => a > self.best * (self.threshold + 1.0),
            (true, false) => a > self.best + self.threshold,
        }
    }

    /// Records the metric of this step and reduces the rates when it has plateaued.
    pub fn step(&mut self, opt: &mut dyn Optimizer, metric: f64) {
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad = 0;
        } else {
            self.num_bad += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad = 0;
        }
        if self.num_bad > self.patience {
            for g in 0..opt.num_groups() {
                let old = opt.lr(g);
                let new = (old * self.factor).max(self.min_lr);
                if old - new > self.eps {
                    opt.set_lr(g, new);
                }
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad = 0;
        }
    }
}
