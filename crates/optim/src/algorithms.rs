//! The update rules, following PyTorch's single-tensor implementations step by step (so
//! trajectories match PyTorch's to rounding).

use crate::optimizer::{Algorithm, GroupOptions, Optim, ParamState};
use ember_autograd::{Result, Tensor};

fn zeros(p: &Tensor) -> impl FnOnce() -> Result<Tensor> + '_ {
    move || p.detach().zeros_like()
}

/// Adam's moment updates, stored in `st`: `exp_avg ← lerp(exp_avg, g, 1 − β1)` and
/// `exp_avg_sq ← β2·exp_avg_sq + (1 − β2)·g²`; returns both.
fn adam_moments(st: &mut ParamState, p: &Tensor, g: &Tensor, b1: f64, b2: f64) -> Result<(Tensor, Tensor)> {
    let m = st.buffer_or("exp_avg", zeros(p))?;
    let m = m.add(&g.sub(&m)?.mul(1.0 - b1)?)?;
    let v = st.buffer_or("exp_avg_sq", zeros(p))?.mul(b2)?.add(&g.mul(g)?.mul(1.0 - b2)?)?;
    st.set_buffer("exp_avg", m.clone());
    st.set_buffer("exp_avg_sq", v.clone());
    Ok((m, v))
}

fn signed(g: &Tensor, maximize: bool) -> Result<Tensor> {
    if maximize {
        g.neg()
    } else {
        Ok(g.clone())
    }
}

fn with_decay(g: Tensor, p: &Tensor, wd: f64) -> Result<Tensor> {
    if wd != 0.0 {
        g.add(&p.mul(wd)?)
    } else {
        Ok(g)
    }
}

/// `GroupOptions` for an options struct with an `lr` field and, optionally, the field that
/// schedulers cycle as "momentum" (`momentum`, or `betas.0` for the Adam family).
macro_rules! lr_options {
    ($t:ty, validate: $check:path) => {
        impl GroupOptions for $t {
            fn lr(&self) -> f64 {
                self.lr
            }
            fn set_lr(&mut self, lr: f64) {
                self.lr = lr
            }
            fn validate(&self) -> std::result::Result<(), String> {
                $check(self)
            }
        }
    };
    ($t:ty) => {
        impl GroupOptions for $t {
            fn lr(&self) -> f64 {
                self.lr
            }
            fn set_lr(&mut self, lr: f64) {
                self.lr = lr
            }
        }
    };
    ($t:ty, validate: $check:path, momentum: $($field:tt)+) => {
        impl GroupOptions for $t {
            fn validate(&self) -> std::result::Result<(), String> {
                $check(self)
            }
            fn lr(&self) -> f64 {
                self.lr
            }
            fn set_lr(&mut self, lr: f64) {
                self.lr = lr
            }
            fn momentum(&self) -> Option<f64> {
                Some(self.$($field)+)
            }
            fn set_momentum(&mut self, m: f64) {
                self.$($field)+ = m
            }
        }
    };
}

/// A weight decay must be finite and non-negative ("Invalid weight_decay value").
fn check_decay(wd: f64) -> std::result::Result<(), String> {
    if wd.is_finite() && wd >= 0.0 {
        Ok(())
    } else {
        Err(format!("invalid weight_decay value: {wd} (must be finite and >= 0)"))
    }
}

fn check_sgd(o: &SgdOptions) -> std::result::Result<(), String> {
    check_decay(o.weight_decay)?;
    if o.nesterov && (o.momentum <= 0.0 || o.dampening != 0.0) {
        return Err("Nesterov momentum requires a momentum and zero dampening".into());
    }
    Ok(())
}

/// The settings every Adam-family option set shares: betas in [0, 1), eps and weight decay >= 0.
trait AdamLike {
    fn betas_eps_decay(&self) -> ((f64, f64), f64, f64);
}

macro_rules! adam_like {
    ($($t:ty),*) => {$(
        impl AdamLike for $t {
            fn betas_eps_decay(&self) -> ((f64, f64), f64, f64) {
                (self.betas, self.eps, self.weight_decay)
            }
        }
    )*};
}
adam_like!(AdamOptions, AdamaxOptions, NAdamOptions);

fn check_betas_eps(o: &impl AdamLike) -> std::result::Result<(), String> {
    let ((b1, b2), eps, wd) = o.betas_eps_decay();
    for (i, b) in [b1, b2].into_iter().enumerate() {
        if !(0.0..1.0).contains(&b) {
            return Err(format!("invalid beta parameter at index {i}: {b} (must be in [0, 1))"));
        }
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("invalid epsilon value: {eps} (must be finite and >= 0)"));
    }
    check_decay(wd)
}

fn check_rmsprop(o: &RmsPropOptions) -> std::result::Result<(), String> {
    if !(o.alpha.is_finite() && o.alpha >= 0.0) {
        return Err(format!("invalid alpha value: {}", o.alpha));
    }
    if !(o.eps.is_finite() && o.eps >= 0.0) {
        return Err(format!("invalid epsilon value: {}", o.eps));
    }
    check_decay(o.weight_decay)
}

fn check_adagrad(o: &AdagradOptions) -> std::result::Result<(), String> {
    for (name, v) in
        [("lr_decay", o.lr_decay), ("initial_accumulator_value", o.initial_accumulator_value), ("epsilon", o.eps)]
    {
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("invalid {name} value: {v} (must be finite and >= 0)"));
        }
    }
    check_decay(o.weight_decay)
}

fn check_adadelta(o: &AdadeltaOptions) -> std::result::Result<(), String> {
    if !(0.0..=1.0).contains(&o.rho) {
        return Err(format!("invalid rho value: {} (must be in [0, 1])", o.rho));
    }
    if !(o.eps.is_finite() && o.eps >= 0.0) {
        return Err(format!("invalid epsilon value: {}", o.eps));
    }
    check_decay(o.weight_decay)
}

fn check_rprop(o: &RpropOptions) -> std::result::Result<(), String> {
    let (minus, plus) = o.etas;
    if !(0.0 < minus && minus < 1.0 && 1.0 < plus && plus.is_finite()) {
        return Err(format!("invalid eta values: ({minus}, {plus}) (need 0 < etaminus < 1 < etaplus)"));
    }
    let (lo, hi) = o.step_sizes;
    if !(lo >= 0.0 && lo <= hi && hi.is_finite()) {
        return Err(format!("invalid step sizes: ({lo}, {hi}) (need 0 <= min <= max, finite)"));
    }
    Ok(())
}

// ---------------------------------------------------------------- SGD

/// Options of [`Sgd`] (PyTorch's defaults apart from `lr`, which PyTorch requires).
#[derive(Clone, Debug)]
pub struct SgdOptions {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0).
    pub momentum: f64,
    /// Dampening of the momentum (0).
    pub dampening: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Nesterov momentum (false).
    pub nesterov: bool,
    /// Maximize the objective (false).
    pub maximize: bool,
}

impl SgdOptions {
    /// Plain SGD with `lr`.
    pub fn new(lr: f64) -> Self {
        SgdOptions { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false, maximize: false }
    }
    /// With momentum.
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
}

lr_options!(SgdOptions, validate: check_sgd, momentum: momentum);

/// Stochastic gradient descent with momentum, dampening, Nesterov, weight decay.
pub struct SgdAlgo;

impl Algorithm for SgdAlgo {
    type Options = SgdOptions;
    const NAME: &'static str = "SGD";
    fn update(&self, o: &SgdOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let mut g = with_decay(signed(grad, o.maximize)?, p, o.weight_decay)?;
        if o.momentum != 0.0 {
            let buf = match st.buffer("momentum_buffer") {
                None => g.clone(),
                Some(b) => b.mul(o.momentum)?.add(&g.mul(1.0 - o.dampening)?)?,
            };
            st.set_buffer("momentum_buffer", buf.clone());
            g = if o.nesterov { g.add(&buf.mul(o.momentum)?)? } else { buf };
        }
        st.step += 1;
        p.sub(&g.mul(o.lr)?)
    }
    fn update_fused(&self, o: &SgdOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
        let s = ember_autograd::SgdStep {
            lr: o.lr,
            weight_decay: o.weight_decay,
            momentum: o.momentum,
            dampening: o.dampening,
            nesterov: o.nesterov,
            maximize: o.maximize,
            first: false,
        };
        crate::fused::sgd(s, p, grad, st)
    }
}

/// `torch.optim.SGD`.
pub type Sgd = Optim<SgdAlgo>;

impl Sgd {
    /// SGD over `params` with `options`.
    pub fn sgd(params: Vec<Tensor>, options: SgdOptions) -> Result<Self> {
        Optim::new(SgdAlgo, params, options)
    }
}

// ---------------------------------------------------------------- Adam / AdamW

/// Options of [`Adam`] and [`AdamW`].
#[derive(Clone, Debug)]
pub struct AdamOptions {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// Averaging coefficients of the gradient and its square ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Denominator term (1e-8).
    pub eps: f64,
    /// Weight decay: an L2 penalty for Adam, decoupled for AdamW (Adam 0, AdamW 0.01).
    pub weight_decay: f64,
    /// The AMSGrad variant (false).
    pub amsgrad: bool,
    /// Maximize the objective (false).
    pub maximize: bool,
}

impl AdamOptions {
    /// Adam's defaults with `lr`.
    pub fn adam(lr: f64) -> Self {
        AdamOptions { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false, maximize: false }
    }
    /// AdamW's defaults with `lr` (weight decay 0.01).
    pub fn adamw(lr: f64) -> Self {
        AdamOptions { weight_decay: 0.01, ..Self::adam(lr) }
    }
}

lr_options!(AdamOptions, validate: check_betas_eps, momentum: betas.0);

/// Adam; with `decoupled` the weight decay is AdamW's (`p ← p·(1 − lr·wd)` before the update).
pub struct AdamAlgo {
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
}

impl Algorithm for AdamAlgo {
    type Options = AdamOptions;
    const NAME: &'static str = "Adam";
    fn update(&self, o: &AdamOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let (b1, b2) = o.betas;
        let mut p = p.clone();
        let mut g = signed(grad, o.maximize)?;
        if o.weight_decay != 0.0 {
            if self.decoupled {
                p = p.mul(1.0 - o.lr * o.weight_decay)?;
            } else {
                g = g.add(&p.mul(o.weight_decay)?)?;
            }
        }
        st.step += 1;
        let (m, v) = adam_moments(st, &p, &g, b1, b2)?;
        let t = st.step as f64;
        let bc1 = 1.0 - b1.powf(t);
        let bc2_sqrt = (1.0 - b2.powf(t)).sqrt();
        let second = if o.amsgrad {
            let mx = st.buffer_or("max_exp_avg_sq", zeros(&p))?.maximum(&v)?;
            st.set_buffer("max_exp_avg_sq", mx.clone());
            mx
        } else {
            v
        };
        let denom = second.sqrt()?.div(bc2_sqrt)?.add(o.eps)?;
        p.sub(&m.div(&denom)?.mul(o.lr / bc1)?)
    }
    fn update_fused(&self, o: &AdamOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<bool> {
        if o.amsgrad {
            return Ok(false);
        }
        let s = ember_autograd::AdamStep {
            lr: o.lr,
            betas: o.betas,
            eps: o.eps,
            weight_decay: o.weight_decay,
            decoupled: self.decoupled,
            maximize: o.maximize,
            step: 0,
        };
        crate::fused::adam(s, p, grad, st)
    }
}

/// `torch.optim.Adam`.
pub type Adam = Optim<AdamAlgo>;
/// `torch.optim.AdamW` (same type as [`Adam`], built with decoupled weight decay).
pub type AdamW = Optim<AdamAlgo>;

impl Optim<AdamAlgo> {
    /// Adam over `params`.
    pub fn adam(params: Vec<Tensor>, options: AdamOptions) -> Result<Self> {
        Optim::new(AdamAlgo { decoupled: false }, params, options)
    }
    /// AdamW over `params`.
    pub fn adamw(params: Vec<Tensor>, options: AdamOptions) -> Result<Self> {
        Optim::new(AdamAlgo { decoupled: true }, params, options)
    }
}

// ---------------------------------------------------------------- RMSprop

/// Options of [`RmsProp`].
#[derive(Clone, Debug)]
pub struct RmsPropOptions {
    /// Learning rate (0.01).
    pub lr: f64,
    /// Smoothing constant (0.99).
    pub alpha: f64,
    /// Denominator term (1e-8).
    pub eps: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Momentum (0).
    pub momentum: f64,
    /// Normalise by the variance estimate instead of the second moment (false).
    pub centered: bool,
    /// Maximize (false).
    pub maximize: bool,
}

impl Default for RmsPropOptions {
    fn default() -> Self {
        RmsPropOptions {
            lr: 0.01,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            maximize: false,
        }
    }
}

lr_options!(RmsPropOptions, validate: check_rmsprop, momentum: momentum);

/// RMSprop.
pub struct RmsPropAlgo;

impl Algorithm for RmsPropAlgo {
    type Options = RmsPropOptions;
    const NAME: &'static str = "RMSprop";
    fn update(&self, o: &RmsPropOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let g = with_decay(signed(grad, o.maximize)?, p, o.weight_decay)?;
        st.step += 1;
        let sq = st.buffer_or("square_avg", zeros(p))?.mul(o.alpha)?.add(&g.mul(&g)?.mul(1.0 - o.alpha)?)?;
        st.set_buffer("square_avg", sq.clone());
        let avg = if o.centered {
            let ga = st.buffer_or("grad_avg", zeros(p))?;
            let ga = ga.add(&g.sub(&ga)?.mul(1.0 - o.alpha)?)?;
            st.set_buffer("grad_avg", ga.clone());
            sq.sub(&ga.mul(&ga)?)?.sqrt()?
        } else {
            sq.sqrt()?
        }
        .add(o.eps)?;
        if o.momentum > 0.0 {
            let buf = st.buffer_or("momentum_buffer", zeros(p))?.mul(o.momentum)?.add(&g.div(&avg)?)?;
            st.set_buffer("momentum_buffer", buf.clone());
            p.sub(&buf.mul(o.lr)?)
        } else {
            p.sub(&g.div(&avg)?.mul(o.lr)?)
        }
    }
}

/// `torch.optim.RMSprop`.
pub type RmsProp = Optim<RmsPropAlgo>;

// ---------------------------------------------------------------- Adagrad

/// Options of [`Adagrad`].
#[derive(Clone, Debug)]
pub struct AdagradOptions {
    /// Learning rate (0.01).
    pub lr: f64,
    /// Learning-rate decay per step (0).
    pub lr_decay: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Starting value of the accumulated squares (0).
    pub initial_accumulator_value: f64,
    /// Denominator term (1e-10).
    pub eps: f64,
    /// Maximize (false).
    pub maximize: bool,
}

impl Default for AdagradOptions {
    fn default() -> Self {
        AdagradOptions {
            lr: 0.01,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            maximize: false,
        }
    }
}

lr_options!(AdagradOptions, validate: check_adagrad);

/// Adagrad.
pub struct AdagradAlgo;

impl Algorithm for AdagradAlgo {
    type Options = AdagradOptions;
    const NAME: &'static str = "Adagrad";
    fn update(&self, o: &AdagradOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let g = with_decay(signed(grad, o.maximize)?, p, o.weight_decay)?;
        st.step += 1;
        let clr = o.lr / (1.0 + (st.step - 1) as f64 * o.lr_decay);
        let sum = st.buffer_or("sum", || p.detach().full_like(o.initial_accumulator_value))?.add(&g.mul(&g)?)?;
        st.set_buffer("sum", sum.clone());
        p.sub(&g.div(&sum.sqrt()?.add(o.eps)?)?.mul(clr)?)
    }
}

/// `torch.optim.Adagrad`.
pub type Adagrad = Optim<AdagradAlgo>;

// ---------------------------------------------------------------- Adadelta

/// Options of [`Adadelta`].
#[derive(Clone, Debug)]
pub struct AdadeltaOptions {
    /// Scale of the update (1.0).
    pub lr: f64,
    /// Averaging coefficient (0.9).
    pub rho: f64,
    /// Numerical term (1e-6).
    pub eps: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Maximize (false).
    pub maximize: bool,
}

impl Default for AdadeltaOptions {
    fn default() -> Self {
        AdadeltaOptions { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0, maximize: false }
    }
}

lr_options!(AdadeltaOptions, validate: check_adadelta);

/// Adadelta.
pub struct AdadeltaAlgo;

impl Algorithm for AdadeltaAlgo {
    type Options = AdadeltaOptions;
    const NAME: &'static str = "Adadelta";
    fn update(&self, o: &AdadeltaOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let g = with_decay(signed(grad, o.maximize)?, p, o.weight_decay)?;
        st.step += 1;
        let sq = st.buffer_or("square_avg", zeros(p))?.mul(o.rho)?.add(&g.mul(&g)?.mul(1.0 - o.rho)?)?;
        let acc = st.buffer_or("acc_delta", zeros(p))?;
        let std = sq.add(o.eps)?.sqrt()?;
        let delta = acc.add(o.eps)?.sqrt()?.div(&std)?.mul(&g)?;
        let acc = acc.mul(o.rho)?.add(&delta.mul(&delta)?.mul(1.0 - o.rho)?)?;
        st.set_buffer("square_avg", sq);
        st.set_buffer("acc_delta", acc);
        p.sub(&delta.mul(o.lr)?)
    }
}

/// `torch.optim.Adadelta`.
pub type Adadelta = Optim<AdadeltaAlgo>;

// ---------------------------------------------------------------- Adamax

/// Options of [`Adamax`].
#[derive(Clone, Debug)]
pub struct AdamaxOptions {
    /// Learning rate (2e-3).
    pub lr: f64,
    /// Coefficients ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Numerical term (1e-8).
    pub eps: f64,
    /// L2 penalty (0).
    pub weight_decay: f64,
    /// Maximize (false).
    pub maximize: bool,
}

impl Default for AdamaxOptions {
    fn default() -> Self {
        AdamaxOptions { lr: 2e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, maximize: false }
    }
}

lr_options!(AdamaxOptions, validate: check_betas_eps, momentum: betas.0);

/// Adamax (Adam with the infinity norm).
pub struct AdamaxAlgo;

impl Algorithm for AdamaxAlgo {
    type Options = AdamaxOptions;
    const NAME: &'static str = "Adamax";
    fn update(&self, o: &AdamaxOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let g = with_decay(signed(grad, o.maximize)?, p, o.weight_decay)?;
        st.step += 1;
        let m = st.buffer_or("exp_avg", zeros(p))?;
        let m = m.add(&g.sub(&m)?.mul(1.0 - o.betas.0)?)?;
        let u = st.buffer_or("exp_inf", zeros(p))?.mul(o.betas.1)?.maximum(&g.abs()?.add(o.eps)?)?;
        st.set_buffer("exp_avg", m.clone());
        st.set_buffer("exp_inf", u.clone());
        let clr = o.lr / (1.0 - o.betas.0.powf(st.step as f64));
        p.sub(&m.div(&u)?.mul(clr)?)
    }
}

/// `torch.optim.Adamax`.
pub type Adamax = Optim<AdamaxAlgo>;

// ---------------------------------------------------------------- NAdam / RAdam

/// Options of [`NAdam`] and [`RAdam`].
#[derive(Clone, Debug)]
pub struct NAdamOptions {
    /// Learning rate (NAdam 2e-3, RAdam 1e-3).
    pub lr: f64,
    /// Coefficients ((0.9, 0.999)).
    pub betas: (f64, f64),
    /// Numerical term (1e-8).
    pub eps: f64,
    /// Weight decay (0).
    pub weight_decay: f64,
    /// NAdam's momentum decay (4e-3).
    pub momentum_decay: f64,
    /// AdamW-style weight decay (false).
    pub decoupled_weight_decay: bool,
    /// Maximize (false).
    pub maximize: bool,
}

impl NAdamOptions {
    /// NAdam's defaults.
    pub fn nadam() -> Self {
        NAdamOptions {
            lr: 2e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
            maximize: false,
        }
    }
    /// RAdam's defaults.
    pub fn radam() -> Self {
        NAdamOptions { lr: 1e-3, ..Self::nadam() }
    }
}

lr_options!(NAdamOptions, validate: check_betas_eps, momentum: betas.0);

fn decay_nadam(o: &NAdamOptions, p: &Tensor, g: Tensor) -> Result<(Tensor, Tensor)> {
    if o.weight_decay == 0.0 {
        Ok((p.clone(), g))
    } else if o.decoupled_weight_decay {
        Ok((p.mul(1.0 - o.lr * o.weight_decay)?, g))
    } else {
        let g = g.add(&p.mul(o.weight_decay)?)?;
        Ok((p.clone(), g))
    }
}

/// NAdam (Adam with Nesterov momentum).
pub struct NAdamAlgo;

impl Algorithm for NAdamAlgo {
    type Options = NAdamOptions;
    const NAME: &'static str = "NAdam";
    fn update(&self, o: &NAdamOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let (p, g) = decay_nadam(o, p, signed(grad, o.maximize)?)?;
        let (b1, b2) = o.betas;
        st.step += 1;
        let t = st.step as f64;
        let bc2 = 1.0 - b2.powf(t);
        let mu = b1 * (1.0 - 0.5 * 0.96f64.powf(t * o.momentum_decay));
        let mu_next = b1 * (1.0 - 0.5 * 0.96f64.powf((t + 1.0) * o.momentum_decay));
        let mu_product = st.scalar("mu_product", 1.0) * mu;
        st.set_scalar("mu_product", mu_product);
        let (m, v) = adam_moments(st, &p, &g, b1, b2)?;
        let denom = v.div(bc2)?.sqrt()?.add(o.eps)?;
        let mu_product_next = mu_product * mu_next;
        let p = p.add(&g.div(&denom)?.mul(-o.lr * (1.0 - mu) / (1.0 - mu_product))?)?;
        p.add(&m.div(&denom)?.mul(-o.lr * mu_next / (1.0 - mu_product_next))?)
    }
}

/// `torch.optim.NAdam`.
pub type NAdam = Optim<NAdamAlgo>;

/// RAdam (rectified Adam).
pub struct RAdamAlgo;

impl Algorithm for RAdamAlgo {
    type Options = NAdamOptions;
    const NAME: &'static str = "RAdam";
    fn update(&self, o: &NAdamOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let (p, g) = decay_nadam(o, p, signed(grad, o.maximize)?)?;
        let (b1, b2) = o.betas;
        st.step += 1;
        let t = st.step as f64;
        let (m, v) = adam_moments(st, &p, &g, b1, b2)?;
        let bc1 = 1.0 - b1.powf(t);
        let bc2 = 1.0 - b2.powf(t);
        let corrected = m.div(bc1)?;
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho_t = rho_inf - 2.0 * t * b2.powf(t) / bc2;
        if rho_t > 5.0 {
            let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)).sqrt();
            let adaptive = v.sqrt()?.add(o.eps)?.reciprocal()?.mul(bc2.sqrt())?;
            p.sub(&corrected.mul(o.lr)?.mul(&adaptive)?.mul(rect)?)
        } else {
            p.sub(&corrected.mul(o.lr)?)
        }
    }
}

/// `torch.optim.RAdam`.
pub type RAdam = Optim<RAdamAlgo>;

// ---------------------------------------------------------------- Rprop

/// Options of [`Rprop`].
#[derive(Clone, Debug)]
pub struct RpropOptions {
    /// Initial step size (0.01).
    pub lr: f64,
    /// Step-size factors on sign change / agreement ((0.5, 1.2)).
    pub etas: (f64, f64),
    /// Bounds of the step size ((1e-6, 50)).
    pub step_sizes: (f64, f64),
    /// Maximize (false).
    pub maximize: bool,
}

impl Default for RpropOptions {
    fn default() -> Self {
        RpropOptions { lr: 0.01, etas: (0.5, 1.2), step_sizes: (1e-6, 50.0), maximize: false }
    }
}

lr_options!(RpropOptions, validate: check_rprop);

/// Resilient backpropagation: per-element step sizes adapted from gradient signs.
pub struct RpropAlgo;

impl Algorithm for RpropAlgo {
    type Options = RpropOptions;
    const NAME: &'static str = "Rprop";
    fn update(&self, o: &RpropOptions, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor> {
        let g = signed(grad, o.maximize)?;
        st.step += 1;
        let prev = st.buffer_or("prev", zeros(p))?;
        let step_size = st.buffer_or("step_size", || p.detach().full_like(o.lr))?;
        let s = g.mul(&prev)?.sign()?;
        let like = |v: f64| step_size.full_like(v);
        let factor = Tensor::where_cond(
            &s.gt(0.0)?,
            &like(o.etas.1)?,
            &Tensor::where_cond(&s.lt(0.0)?, &like(o.etas.0)?, &like(1.0)?)?,
        )?;
        let step_size = step_size.mul(&factor)?.clamp(Some(o.step_sizes.0), Some(o.step_sizes.1))?;
        let g = Tensor::where_cond(&s.lt(0.0)?, &g.zeros_like()?, &g)?;
        st.set_buffer("prev", g.clone());
        st.set_buffer("step_size", step_size.clone());
        p.sub(&g.sign()?.mul(&step_size)?)
    }
}

/// `torch.optim.Rprop`.
pub type Rprop = Optim<RpropAlgo>;
