//! [`GradScaler`]: PyTorch's `torch.amp.GradScaler`, the loss scaling that keeps f16 gradients from
//! underflowing. The loss is multiplied by a scale before backward; before the optimizer steps, the
//! gradients are divided by it again (`unscale_`), and a step whose gradients hold an inf or a NaN
//! is skipped while the scale backs off; after `growth_interval` clean steps in a row the scale
//! grows.
//!
//! ```
//! use ember_autograd::Tensor;
//! use ember_optim::{GradScaler, GradScalerOptions, Optimizer, Sgd, SgdOptions};
//! let w = Tensor::from_vec(vec![1.0f32, -2.0], &[2])?.requires_grad_(true)?;
//! let mut opt = Sgd::sgd(vec![w.clone()], SgdOptions::new(0.1))?;
//! let mut scaler = GradScaler::new(GradScalerOptions::default());
//! for _ in 0..3 {
//!     opt.zero_grad()?;
//!     let loss = w.mul(&w)?.sum()?;
//!     scaler.scale(&loss)?.backward()?;
//!     scaler.unscale_(&mut opt)?; // optional: clip the true gradients here
//!     scaler.step(&mut opt)?;
//!     scaler.update()?;
//! }
//! assert_eq!(scaler.get_scale(), 65536.0);
//! # Ok::<(), ember_autograd::Error>(())
//! ```
//!
//! The inf/NaN check of `unscale_` runs on the gradients' device and is read back once per step
//! (in `step`), not once per parameter. The scale is kept in f32 arithmetic, as PyTorch keeps it
//! in an f32 tensor, so its values match PyTorch's step for step.

use crate::Optimizer;
use ember_autograd::{no_grad, DType, Error, Result, Tensor};
use std::collections::HashMap;

/// The settings of a [`GradScaler`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradScalerOptions {
    /// The first scale (default 2^16).
    pub init_scale: f64,
    /// Multiplies the scale after `growth_interval` clean steps (default 2).
    pub growth_factor: f64,
    /// Multiplies the scale after a step with inf/NaN gradients (default 0.5).
    pub backoff_factor: f64,
    /// Clean steps in a row before the scale grows (default 2000).
    pub growth_interval: u64,
    /// When false, every method passes through: `scale` returns the loss, `step` just steps.
    pub enabled: bool,
}

impl Default for GradScalerOptions {
    fn default() -> Self {
        GradScalerOptions {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
        }
    }
}

/// Per optimizer, within one step: whether its gradients were unscaled, and the inf/NaN flag.
struct OptimizerState {
    found_inf: Tensor,
    stepped: bool,
}

/// Dynamic loss scaling for mixed-precision training (`torch.amp.GradScaler`).
pub struct GradScaler {
    options: GradScalerOptions,
    scale: f64,
    growth_tracker: u64,
    /// Keyed by the optimizer's address: the state of this step.
    per_optimizer: HashMap<usize, OptimizerState>,
}

fn f32_round(v: f64) -> f64 {
    v as f32 as f64
}

fn key(opt: &dyn Optimizer) -> usize {
    opt as *const dyn Optimizer as *const () as usize
}

impl GradScaler {
    /// A scaler with `options`.
    pub fn new(options: GradScalerOptions) -> GradScaler {
        GradScaler { options, scale: f32_round(options.init_scale), growth_tracker: 0, per_optimizer: HashMap::new() }
    }

    /// Whether the scaler is on.
    pub fn is_enabled(&self) -> bool {
        self.options.enabled
    }

    /// The current scale (1 when disabled).
    pub fn get_scale(&self) -> f64 {
        if self.options.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// `loss * scale`, to call `backward` on.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor> {
        if !self.options.enabled {
            return Ok(loss.clone());
        }
        loss.mul(self.scale)
    }

    /// Divides the gradients of `opt`'s parameters by the scale, in place, and records whether any
    /// is inf or NaN. Call it before clipping gradients; [`GradScaler::step`] calls it otherwise.
    /// Fails when called twice for one optimizer before [`GradScaler::update`], or after its step,
    /// and on f16 gradients (as PyTorch: keep f32 master parameters).
    pub fn unscale_(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        if !self.options.enabled {
            return Ok(());
        }
        let k = key(opt);
        if let Some(st) = self.per_optimizer.get(&k) {
            let what = if st.stepped { "step()" } else { "unscale_()" };
            return Err(Error::invalid(
                "GradScaler.unscale_",
                format!("{what} has already been called on this optimizer since the last update()"),
            ));
        }
        // PyTorch's inverse: the f64 reciprocal rounded to f32
        let inv = f32_round(1.0 / self.scale);
        let found = no_grad(|| -> Result<Option<Tensor>> {
            let mut found: Option<Tensor> = None;
            for p in opt.params() {
                let Some(g) = p.grad() else { continue };
                if g.dtype() == DType::F16 {
                    return Err(Error::invalid(
                        "GradScaler.unscale_",
                        "attempting to unscale f16 gradients: keep the parameters in f32 and autocast the forward",
                    ));
                }
                g.mul_(inv)?;
                let bad = g.isfinite()?.all()?.logical_not()?;
                found = Some(match found {
                    None => bad,
                    Some(f) => f.logical_or(&bad)?,
                });
            }
            Ok(found)
        })?;
        let found_inf = match found {
            Some(f) => f,
            None => Tensor::scalar(false),
        };
        self.per_optimizer.insert(k, OptimizerState { found_inf, stepped: false });
        Ok(())
    }

    /// Unscales `opt`'s gradients (unless [`GradScaler::unscale_`] already did) and steps it,
    /// unless a gradient is inf or NaN. Returns whether it stepped.
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> Result<bool> {
        if !self.options.enabled {
            opt.step()?;
            return Ok(true);
        }
        let k = key(opt);
        if self.per_optimizer.get(&k).is_some_and(|s| s.stepped) {
            return Err(Error::invalid("GradScaler.step", "step() has already been called since the last update()"));
        }
        if !self.per_optimizer.contains_key(&k) {
            self.unscale_(opt)?;
        }
        let st = self.per_optimizer.get_mut(&k).expect("unscaled above");
        st.stepped = true;
        // the one read back of the step: the flag of all the gradients
        let skip = st.found_inf.item()? != 0.0;
        if !skip {
            opt.step()?;
        }
        Ok(!skip)
    }

    /// Adjusts the scale after the step(s) of this iteration: backs off when any optimizer saw
    /// inf/NaN gradients, grows after `growth_interval` clean steps in a row. Fails when no
    /// optimizer was unscaled or stepped since the last update (as PyTorch).
    pub fn update(&mut self) -> Result<()> {
        if !self.options.enabled {
            return Ok(());
        }
        if self.per_optimizer.is_empty() {
            return Err(Error::invalid("GradScaler.update", "no inf checks were recorded prior to update()"));
        }
        let mut found = false;
        for st in self.per_optimizer.values() {
            found |= st.found_inf.item()? != 0.0;
        }
        self.per_optimizer.clear();
        if found {
            self.scale = f32_round(self.scale * f32_round(self.options.backoff_factor));
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.options.growth_interval {
                self.scale = f32_round(self.scale * f32_round(self.options.growth_factor));
                self.growth_tracker = 0;
            }
        }
        Ok(())
    }

    /// Sets the scale (PyTorch's `update(new_scale)`).
    pub fn set_scale(&mut self, scale: f64) -> Result<()> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid(
                "GradScaler.update",
                format!("the new scale must be finite and positive, got {scale}"),
            ));
        }
        self.scale = f32_round(scale);
        self.per_optimizer.clear();
        Ok(())
    }

    /// The scaler's state as named scalars (`scale`, `growth_factor`, `backoff_factor`,
    /// `growth_interval`, `_growth_tracker`: PyTorch's keys), for a checkpoint.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        vec![
            ("scale".into(), Tensor::scalar(self.scale)),
            ("growth_factor".into(), Tensor::scalar(self.options.growth_factor)),
            ("backoff_factor".into(), Tensor::scalar(self.options.backoff_factor)),
            ("growth_interval".into(), Tensor::scalar(self.options.growth_interval as i64)),
            ("_growth_tracker".into(), Tensor::scalar(self.growth_tracker as i64)),
        ]
    }

    /// Restores what [`GradScaler::state_dict`] returned.
    pub fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (k, t) in state {
            let v = t.item()?;
            match k.as_str() {
                "scale" => self.scale = f32_round(v),
                "growth_factor" => self.options.growth_factor = v,
                "backoff_factor" => self.options.backoff_factor = v,
                "growth_interval" => self.options.growth_interval = v as u64,
                "_growth_tracker" => self.growth_tracker = v as u64,
                other => return Err(Error::invalid("GradScaler.load_state_dict", format!("unexpected key {other:?}"))),
            }
        }
        Ok(())
    }
}
