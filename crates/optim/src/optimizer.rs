//! The [`Optimizer`] trait and the generic machinery behind every algorithm: parameter groups with
//! per-group options, per-parameter state, `state_dict` / `load_state_dict`.

use ember_autograd::{no_grad, DType, Error, Result, Tensor};

/// What every optimizer offers (PyTorch's `torch.optim.Optimizer`).
pub trait Optimizer {
    /// One update of every parameter that has a gradient. Runs without recording a graph.
    fn step(&mut self) -> Result<()>;
    /// Clears the gradients: drops them (`set_to_none`, PyTorch's default) or fills them with 0.
    fn zero_grad_with(&mut self, set_to_none: bool) -> Result<()>;
    /// Clears the gradients as PyTorch's `zero_grad()` does: drops them (`set_to_none=True`).
    fn zero_grad(&mut self) -> Result<()> {
        self.zero_grad_with(true)
    }
    /// Number of parameter groups.
    fn num_groups(&self) -> usize;
    /// The learning rate of group `g`.
    fn lr(&self, g: usize) -> f64;
    /// Sets the learning rate of group `g` (what LR schedulers call).
    fn set_lr(&mut self, g: usize, lr: f64);
    /// The momentum-like coefficient of group `g` (`momentum`, or `beta1` of the Adam family), for
    /// schedulers that cycle it; `None` when the algorithm has none.
    fn momentum(&self, g: usize) -> Option<f64>;
    /// Sets the momentum-like coefficient (no-op when there is none).
    fn set_momentum(&mut self, g: usize, m: f64);
    /// Per-parameter state and group learning rates as named tensors (`state.3.exp_avg`,
    /// `state.3.step`, `param_groups.0.lr`), ready for a safetensors checkpoint. The tensors are
    /// snapshots, unaffected by later steps.
    fn state_dict(&self) -> Vec<(String, Tensor)>;
    /// Restores what [`Optimizer::state_dict`] returned, so training resumes exactly.
    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// Every parameter, group by group (what a [`crate::GradScaler`] unscales and clipping reads).
    fn params(&self) -> Vec<Tensor>;
}

/// Clears the gradients of `params`: drops them, or fills them with zeros.
pub(crate) fn zero_grads<'a>(params: impl IntoIterator<Item = &'a Tensor>, set_to_none: bool) -> Result<()> {
    for p in params {
        if set_to_none {
            p.set_grad(None);
        } else if let Some(g) = p.grad() {
            no_grad(|| g.zero_().map(|_| ()))?;
        }
    }
    Ok(())
}

/// Parameters that share options.
#[derive(Clone)]
pub struct ParamGroup<O> {
    /// The parameters (leaf tensors with `requires_grad`).
    pub params: Vec<Tensor>,
    /// The group's options.
    pub options: O,
}

/// Per-parameter state: the step count, scalars (such as NAdam's `mu_product`) and buffers.
#[derive(Clone, Debug, Default)]
pub struct ParamState {
    /// Number of updates applied.
    pub step: u64,
    /// Named scalars.
    pub scalars: Vec<(&'static str, f64)>,
    /// Named buffers (same shape as the parameter).
    pub buffers: Vec<(&'static str, Tensor)>,
}

impl ParamState {
    /// The buffer `name`.
    pub fn buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.iter().find(|(k, _)| *k == name).map(|(_, t)| t)
    }
    /// The buffer `name`, created with `init` on first use.
    pub fn buffer_or(&mut self, name: &'static str, init: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
        if let Some(t) = self.buffer(name) {
            return Ok(t.clone());
        }
        let t = init()?;
        self.buffers.push((name, t.clone()));
        Ok(t)
    }
    /// Replaces (or adds) the buffer `name`.
    pub fn set_buffer(&mut self, name: &'static str, t: Tensor) {
        match self.buffers.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = t,
            None => self.buffers.push((name, t)),
        }
    }
    /// The scalar `name`, or `default`.
    pub fn scalar(&self, name: &str, default: f64) -> f64 {
        self.scalars.iter().find(|(k, _)| *k == name).map_or(default, |(_, v)| *v)
    }
    /// Sets the scalar `name`.
    pub fn set_scalar(&mut self, name: &'static str, v: f64) {
        match self.scalars.iter_mut().find(|(k, _)| *k == name) {
            Some(e) => e.1 = v,
            None => self.scalars.push((name, v)),
        }
    }
}

/// The options every algorithm's group has.
pub trait GroupOptions: Clone + Send {
    /// Learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// Momentum-like coefficient, if any.
    fn momentum(&self) -> Option<f64> {
        None
    }
    /// Sets the momentum-like coefficient.
    fn set_momentum(&mut self, _m: f64) {}
    /// Checks the algorithm-specific settings (betas, eps, weight decay, ...) as PyTorch's
    /// constructors do; the message says which value is out of range.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// An update rule: how one parameter moves given its gradient, options and state.
pub trait Algorithm: Send {
    /// Per-group options.
    type Options: GroupOptions;
    /// The algorithm's name, for errors.
    const NAME: &'static str;
    /// Returns the parameter's new value (state buffers are updated in `st`). Called without grad
    /// recording; `grad` has the parameter's dtype and device.
    fn update(&self, o: &Self::Options, p: &Tensor, grad: &Tensor, st: &mut ParamState) -> Result<Tensor>;
    /// Optionally updates the parameter in place, faster (e.g. a fused host loop); returns false
    /// when it does not apply, and the generic [`Algorithm::update`] runs instead.
    fn update_fused(&self, _o: &Self::Options, _p: &Tensor, _grad: &Tensor, _st: &mut ParamState) -> Result<bool> {
        Ok(false)
    }
}

/// An optimizer built from an [`Algorithm`]: the type behind `Sgd`, `Adam`, `AdamW`, ...
pub struct Optim<A: Algorithm> {
    algo: A,
    groups: Vec<ParamGroup<A::Options>>,
    state: Vec<Vec<ParamState>>,
}

impl<A: Algorithm> Optim<A> {
    /// One group of `params` with `options`.
    pub fn new(algo: A, params: Vec<Tensor>, options: A::Options) -> Result<Self> {
        let mut o = Optim { algo, groups: vec![], state: vec![] };
        o.add_param_group(ParamGroup { params, options })?;
        Ok(o)
    }

    /// Adds a group (PyTorch's `add_param_group`); a parameter may belong to one group only.
    pub fn add_param_group(&mut self, g: ParamGroup<A::Options>) -> Result<()> {
        // PyTorch's checks: "Invalid learning rate", "Invalid momentum value"
        let lr = g.options.lr();
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(Error::invalid(A::NAME, format!("invalid learning rate: {lr} (must be finite and >= 0)")));
        }
        g.options.validate().map_err(|msg| Error::invalid(A::NAME, msg))?;
        if let Some(m) = g.options.momentum() {
            if !(m.is_finite() && m >= 0.0) {
                return Err(Error::invalid(A::NAME, format!("invalid momentum value: {m} (must be finite and >= 0)")));
            }
        }
        for (i, p) in g.params.iter().enumerate() {
            if !p.is_leaf() || !p.dtype().is_float() {
                return Err(Error::invalid(A::NAME, "can only optimize floating leaf tensors"));
            }
            // a tensor listed twice (tied weights collected by hand) would be updated twice per step
            if let Some(j) = g.params[..i].iter().position(|q| q.shares_storage(p) && q.layout() == p.layout()) {
                return Err(Error::invalid(
                    A::NAME,
                    format!(
                        "parameter {i} of the group is the same tensor as parameter {j} (shape {:?}); pass each \
                         parameter once (Module::parameters() drops tied duplicates)",
                        p.shape()
                    ),
                ));
            }
            if self.groups.iter().flat_map(|g| &g.params).any(|q| q.shares_storage(p) && q.layout() == p.layout()) {
                return Err(Error::invalid(A::NAME, "some parameters appear in more than one parameter group"));
            }
        }
        self.state.push(vec![ParamState::default(); g.params.len()]);
        self.groups.push(g);
        Ok(())
    }

    /// The parameter groups.
    pub fn param_groups(&self) -> &[ParamGroup<A::Options>] {
        &self.groups
    }

    /// Mutable access to the groups' options.
    pub fn options_mut(&mut self, g: usize) -> &mut A::Options {
        &mut self.groups[g].options
    }

    /// The state of parameter `i` of group `g`.
    pub fn param_state(&self, g: usize, i: usize) -> &ParamState {
        &self.state[g][i]
    }
}

impl<A: Algorithm> Optimizer for Optim<A> {
    fn step(&mut self) -> Result<()> {
        no_grad(|| {
            for (group, states) in self.groups.iter().zip(self.state.iter_mut()) {
                for (p, st) in group.params.iter().zip(states.iter_mut()) {
                    let Some(g) = p.grad() else { continue };
                    if g.shape() != p.shape() {
                        return Err(Error::shape(
                            A::NAME,
                            format!("gradient {:?} does not match parameter {:?}", g.shape(), p.shape()),
                        ));
                    }
                    let g = if g.dtype() != p.dtype() { g.to_dtype(p.dtype())? } else { g };
                    if !self.algo.update_fused(&group.options, p, &g, st)? {
                        let new = self.algo.update(&group.options, p, &g, st)?;
                        p.copy_(&new)?;
                    }
                }
            }
            Ok(())
        })
    }

    fn zero_grad_with(&mut self, set_to_none: bool) -> Result<()> {
        zero_grads(self.groups.iter().flat_map(|g| &g.params), set_to_none)
    }

    fn params(&self) -> Vec<Tensor> {
        self.groups.iter().flat_map(|g| g.params.iter().cloned()).collect()
    }

    fn num_groups(&self) -> usize {
        self.groups.len()
    }

    fn lr(&self, g: usize) -> f64 {
        self.groups[g].options.lr()
    }

    fn set_lr(&mut self, g: usize, lr: f64) {
        self.groups[g].options.set_lr(lr)
    }

    fn momentum(&self, g: usize) -> Option<f64> {
        self.groups[g].options.momentum()
    }

    fn set_momentum(&mut self, g: usize, m: f64) {
        self.groups[g].options.set_momentum(m)
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        let mut idx = 0;
        for (gi, (group, states)) in self.groups.iter().zip(&self.state).enumerate() {
            out.push((format!("param_groups.{gi}.lr"), Tensor::scalar(group.options.lr())));
            if let Some(m) = group.options.momentum() {
                out.push((format!("param_groups.{gi}.momentum"), Tensor::scalar(m)));
            }
            for st in states {
                if st.step > 0 || !st.buffers.is_empty() {
                    out.push((format!("state.{idx}.step"), Tensor::scalar(st.step as f64)));
                    for (k, v) in &st.scalars {
                        out.push((format!("state.{idx}.{k}"), Tensor::scalar(*v)));
                    }
                    for (k, t) in &st.buffers {
                        // a snapshot: the fused updates write the live buffers in place
                        let snap = t.detach().deep_clone().unwrap_or_else(|_| t.detach());
                        out.push((format!("state.{idx}.{k}"), snap));
                    }
                }
                idx += 1;
            }
        }
        out
    }

    fn load_state_dict(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        let total: usize = self.groups.iter().map(|g| g.params.len()).sum();
        let mut fresh: Vec<ParamState> = vec![ParamState::default(); total];
        let mut lrs = vec![None; self.groups.len()];
        let mut moms = vec![None; self.groups.len()];
        for (k, t) in state {
            let parts: Vec<&str> = k.splitn(3, '.').collect();
            let bad = || Error::invalid("load_state_dict", format!("unexpected optimizer state key {k:?}"));
            if parts.len() != 3 {
                return Err(bad());
            }
            let i: usize = parts[1].parse().map_err(|_| bad())?;
            match parts[0] {
                "param_groups" => {
                    let v = t.item()?;
                    match (parts[2], i < lrs.len()) {
                        ("lr", true) => lrs[i] = Some(v),
                        ("momentum", true) => moms[i] = Some(v),
                        _ => return Err(bad()),
                    }
                }
                "state" => {
                    let st = fresh.get_mut(i).ok_or_else(bad)?;
                    if parts[2] == "step" {
                        st.step = checked_step(t.item()?).ok_or_else(|| {
                            Error::invalid(
                                "load_state_dict",
                                format!("{k}: step {} is not a count in 0..2^31", t.item().unwrap_or(f64::NAN)),
                            )
                        })?;
                        continue;
                    }
                    let name = state_name(parts[2]).ok_or_else(bad)?;
                    if t.ndim() == 0 && t.dtype() == DType::F64 && is_scalar_state(name) {
                        st.set_scalar(name, t.item()?);
                    } else {
                        st.set_buffer(name, t.clone());
                    }
                }
                _ => return Err(bad()),
            }
        }
        // move buffers to each parameter's device and dtype
        let mut idx = 0;
        for (gi, group) in self.groups.iter_mut().enumerate() {
            if let Some(lr) = lrs[gi] {
                group.options.set_lr(lr);
            }
            if let Some(m) = moms[gi] {
                group.options.set_momentum(m);
            }
            for (pi, p) in group.params.iter().enumerate() {
                let st = &mut fresh[idx];
                for (_, b) in st.buffers.iter_mut() {
                    if b.shape() != p.shape() {
                        return Err(Error::shape(
                            "load_state_dict",
                            format!("state buffer {:?} does not match parameter {idx} {:?}", b.shape(), p.shape()),
                        ));
                    }
                    *b = b.to(p.device())?.to_dtype(p.dtype())?;
                }
                self.state[gi][pi] = st.clone();
                idx += 1;
            }
        }
        Ok(())
    }
}

/// The names of per-parameter state the built-in algorithms keep. Loading maps a key onto one of
/// these instead of leaking a new `&'static str` per load (which grew memory on every load).
const STATE_NAMES: &[&str] = &[
    "acc_delta",
    "exp_avg",
    "exp_avg_sq",
    "exp_inf",
    "grad_avg",
    "max_exp_avg_sq",
    "momentum_buffer",
    "mu_product",
    "prev",
    "square_avg",
    "step_size",
    "sum",
];

fn state_name(name: &str) -> Option<&'static str> {
    STATE_NAMES.iter().copied().find(|&n| n == name)
}

/// A loaded step count: a whole number in `0..2^31` (bias corrections take it as an `i32`
/// exponent; a larger count wrapped negative and gave NaN).
fn checked_step(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < (1u64 << 31) as f64).then_some(v as u64)
}

fn is_scalar_state(name: &str) -> bool {
    matches!(name, "mu_product")
}
