//! The module abstraction: [`Traverse`] (what a module holds: parameters, buffers, children, the
//! training flag), [`Module`] (its forward) and [`ModuleExt`] (everything derived from traversal:
//! `parameters()`, `named_parameters()`, `state_dict()`, `train()`/`eval()`, `to()`, `zero_grad()`).

use ember_autograd::{DType, Device, Result, Tensor};

/// One thing a module holds, seen read-only.
pub enum Slot<'a> {
    /// A trainable tensor, under its attribute name (`weight`).
    Param(&'a str, &'a Tensor),
    /// A non-trainable tensor saved in the state_dict (`running_mean`).
    Buffer(&'a str, &'a Tensor),
    /// A submodule, under its attribute name (`conv1`, or `0` in a list).
    Child(&'a str, &'a dyn Traverse),
    /// The module's own training flag.
    Training(bool),
}

/// One thing a module holds, seen mutably (to move it to another device, or flip train/eval).
pub enum SlotMut<'a> {
    /// A trainable tensor.
    Param(&'a str, &'a mut Tensor),
    /// A buffer.
    Buffer(&'a str, &'a mut Tensor),
    /// A submodule.
    Child(&'a str, &'a mut dyn Traverse),
    /// The module's own training flag.
    Training(&'a mut bool),
}

/// What a module holds. Implemented by `#[derive(Module)]` for user structs, and by every layer.
pub trait Traverse: Send + Sync {
    /// Calls `v` once per parameter, buffer, child and training flag held directly by this module.
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>));
    /// Mutable counterpart of [`Traverse::visit`].
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>));
    /// This module as `Any`, so [`ModuleExt::apply_to`] can find the layers of one type.
    /// `#[derive(Module)]` provides it for structs without lifetime or type parameters; the
    /// default (`None`) makes a module invisible to `apply_to` but not to [`ModuleExt::apply`].
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// A layer or network: a function of one tensor that holds parameters (PyTorch's `nn.Module`).
/// Layers with several inputs (attention, recurrent layers with a state) have their own `forward_*`
/// methods besides this one.
pub trait Module: Traverse {
    /// Applies the module.
    fn forward(&self, input: &Tensor) -> Result<Tensor>;

    /// The module's type name without its path (`ConvNd<2>`, `Linear`, `Mlp`), as the profiler
    /// names a `Sequential`'s layers.
    fn layer_name(&self) -> &'static str {
        let full = std::any::type_name::<Self>();
        let base = full.split('<').next().unwrap_or(full);
        let start = base.rfind("::").map_or(0, |i| i + 2);
        &full[start..]
    }
}

impl<T: Traverse + ?Sized> Traverse for Box<T> {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        (**self).visit(v)
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        (**self).visit_mut(v)
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        (**self).as_any_mut()
    }
}

impl<T: Module + ?Sized> Module for Box<T> {
    fn forward(&self, input: &Tensor) -> Result<Tensor> {
        (**self).forward(input)
    }
    fn layer_name(&self) -> &'static str {
        (**self).layer_name()
    }
}

const INDEX_NAMES: [&str; 16] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15"];

/// The name of list item `i` as a `&'static str` (leaked once for indices past 15; lists are built
/// once per model, so this is bounded by the model's size).
pub(crate) fn index_name(i: usize) -> &'static str {
    if i < INDEX_NAMES.len() {
        return INDEX_NAMES[i];
    }
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    let mut m = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    m.entry(i).or_insert_with(|| Box::leak(i.to_string().into_boxed_str()))
}

impl<T: Traverse> Traverse for Vec<T> {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        for (i, m) in self.iter().enumerate() {
            v(Slot::Child(index_name(i), m));
        }
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        for (i, m) in self.iter_mut().enumerate() {
            v(SlotMut::Child(index_name(i), m));
        }
    }
}

impl<T: Traverse> Traverse for Option<T> {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        if let Some(m) = self {
            m.visit(v)
        }
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        if let Some(m) = self {
            m.visit_mut(v)
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn walk<'a>(m: &'a dyn Traverse, prefix: &str, f: &mut dyn FnMut(&str, Slot<'a>)) {
    m.visit(&mut |slot| match slot {
        Slot::Child(name, c) => walk(c, &join(prefix, name), f),
        other => f(prefix, other),
    });
}

/// Calls `f` on every module below `m`, children before their parent, then on `m`.
fn apply_rec(m: &mut dyn Traverse, f: &mut dyn FnMut(&mut dyn Traverse)) {
    m.visit_mut(&mut |s| {
        if let SlotMut::Child(_, c) = s {
            apply_rec(c, f)
        }
    });
    f(m);
}

fn walk_mut(m: &mut dyn Traverse, prefix: &str, f: &mut dyn FnMut(&str, SlotMut<'_>)) {
    m.visit_mut(&mut |slot| match slot {
        SlotMut::Child(name, c) => walk_mut(c, &join(prefix, name), f),
        other => f(prefix, other),
    });
}

/// What every module gets from traversal (blanket-implemented; PyTorch's `nn.Module` methods).
pub trait ModuleExt: Traverse {
    /// All parameters, depth first, in declaration order; a tensor that appears in several places
    /// (tied weights, `lm_head.weight = wte.weight`) is listed once, as in PyTorch, so an optimizer
    /// built from this list updates it once per step.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// All parameters with their dotted names (`layers.0.weight`); a tied tensor keeps the first
    /// name it is found under (PyTorch's `named_parameters(remove_duplicate=True)`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.named_parameters_with(true)
    }

    /// [`ModuleExt::named_parameters`] with PyTorch's `remove_duplicate` option: `false` lists a
    /// tied tensor under every name it has.
    fn named_parameters_with(&self, remove_duplicate: bool) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = vec![];
        walk(self.as_traverse(), "", &mut |p, s| {
            if let Slot::Param(n, t) = s {
                if !(remove_duplicate && out.iter().any(|(_, q)| q.is_same(t))) {
                    out.push((join(p, n), t.clone()));
                }
            }
        });
        out
    }

    /// All buffers with their dotted names.
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        walk(self.as_traverse(), "", &mut |p, s| {
            if let Slot::Buffer(n, t) = s {
                out.push((join(p, n), t.clone()));
            }
        });
        out
    }

    /// All buffers.
    fn buffers(&self) -> Vec<Tensor> {
        self.named_buffers().into_iter().map(|(_, t)| t).collect()
    }

    /// The direct children's names.
    fn children_names(&self) -> Vec<String> {
        let mut out = vec![];
        self.visit(&mut |s| {
            if let Slot::Child(n, _) = s {
                out.push(n.to_string());
            }
        });
        out
    }

    /// Parameters and buffers under PyTorch's state_dict keys, in PyTorch's order (per module:
    /// its own parameters, then its buffers, then its children). Tensors are detached aliases.
    fn state_dict(&self) -> Vec<(String, Tensor)> {
        state_dict_of(self.as_traverse())
    }

    /// Calls `f` on every submodule, children before parents, and last on this module (PyTorch's
    /// `Module.apply`). To act on the layers of one type use [`ModuleExt::apply_to`].
    fn apply(&mut self, f: &mut dyn FnMut(&mut dyn Traverse)) {
        apply_rec(self.as_traverse_mut(), f)
    }

    /// Calls `f` on every submodule of type `M`, in [`ModuleExt::apply`]'s order: what DCGAN's
    /// `weights_init` does by class name, with the type instead. The first error stops the walk.
    ///
    /// ```
    /// use ember_nn::{init, layers::{Conv2d, Linear, ReLU}, ModuleExt, Sequential};
    /// let mut net = Sequential::new().layer(Conv2d::new(1, 4, 3)?).layer(ReLU::default()).layer(Linear::new(4, 2)?);
    /// net.apply_to(|c: &mut Conv2d| init::normal_(&c.weight, 0.0, 0.02))?;
    /// # Ok::<(), ember_autograd::Error>(())
    /// ```
    fn apply_to<M: 'static>(&mut self, mut f: impl FnMut(&mut M) -> Result<()>) -> Result<()> {
        let mut first_err = None;
        self.apply(&mut |m| {
            if first_err.is_none() {
                if let Some(layer) = m.as_any_mut().and_then(|a| a.downcast_mut::<M>()) {
                    first_err = f(layer).err();
                }
            }
        });
        first_err.map_or(Ok(()), Err)
    }

    /// Number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|t| t.numel()).sum()
    }

    /// Whether the module is in training mode (the first training flag found; `true` if none).
    fn is_training(&self) -> bool {
        let mut mode = None;
        walk(self.as_traverse(), "", &mut |_, s| {
            if let Slot::Training(t) = s {
                mode.get_or_insert(t);
            }
        });
        mode.unwrap_or(true)
    }

    /// Training mode on this module and every descendant (dropout active, batch statistics):
    /// PyTorch's `train()`. [`ModuleExt::set_training`] sets either mode.
    fn train(&mut self) {
        self.set_training(true)
    }

    /// Sets training mode (`true`) or evaluation mode (`false`) everywhere (`train(mode)`).
    fn set_training(&mut self, on: bool) {
        walk_mut(self.as_traverse_mut(), "", &mut |_, s| {
            if let SlotMut::Training(t) = s {
                *t = on;
            }
        });
    }

    /// Evaluation mode (`train(False)`).
    fn eval(&mut self) {
        self.set_training(false)
    }

    /// Sets every parameter's gradient to `None`.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.set_grad(None);
        }
    }

    /// Moves parameters and buffers to `device` (parameters stay leaves that require grad).
    fn to_device(&mut self, device: Device) -> Result<()> {
        convert(self.as_traverse_mut(), &|t| t.to(device))
    }

    /// The module moved to `device`, for construction chains (`let model = Vae::new()?.to(device)?`,
    /// PyTorch's `model = VAE().to(device)`); [`ModuleExt::to_device`] moves one in place.
    fn to(mut self, device: Device) -> Result<Self>
    where
        Self: Sized,
    {
        self.to_device(device)?;
        Ok(self)
    }

    /// Casts floating parameters and buffers to `dtype` (integer buffers keep theirs).
    fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        convert(self.as_traverse_mut(), &|t| if t.dtype().is_float() { t.to_dtype(dtype) } else { Ok(t.clone()) })
    }

    #[doc(hidden)]
    fn as_traverse(&self) -> &dyn Traverse;
    #[doc(hidden)]
    fn as_traverse_mut(&mut self) -> &mut dyn Traverse;
}

/// Replaces every parameter and buffer by `f` of it. A tensor found in several slots (tied
/// weights) is converted once and the result put in each, so the tie survives `to_device`.
fn convert(m: &mut dyn Traverse, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
    let mut err = None;
    let mut done: Vec<(Tensor, Tensor)> = vec![];
    let mut once = |t: &Tensor, make: &dyn Fn(Tensor) -> Result<Tensor>| -> Result<Tensor> {
        if let Some((_, n)) = done.iter().find(|(old, _)| old.is_same(t)) {
            return Ok(n.clone());
        }
        let n = make(f(t)?)?;
        done.push((t.clone(), n.clone()));
        Ok(n)
    };
    walk_mut(m, "", &mut |_, s| {
        if err.is_some() {
            return;
        }
        let r = match s {
            SlotMut::Param(_, t) => once(t, &|n| n.detach().requires_grad_(true)).map(|n| *t = n),
            SlotMut::Buffer(_, t) => once(t, &|n| Ok(n.detach())).map(|n| *t = n),
            _ => Ok(()),
        };
        if let Err(e) = r {
            err = Some(e);
        }
    });
    err.map_or(Ok(()), Err)
}

impl<T: Traverse + Sized> ModuleExt for T {
    fn as_traverse(&self) -> &dyn Traverse {
        self
    }
    fn as_traverse_mut(&mut self) -> &mut dyn Traverse {
        self
    }
}

/// Parameters and buffers of `m` under their state_dict keys (detached aliases), in PyTorch's order.
pub fn state_dict_of(m: &dyn Traverse) -> Vec<(String, Tensor)> {
    let mut out = vec![];
    walk(m, "", &mut |p, s| match s {
        Slot::Param(n, t) | Slot::Buffer(n, t) => out.push((join(p, n), t.detach())),
        _ => {}
    });
    out
}

/// Visits every slot of `m` (depth first) with its dotted prefix: the building block for custom
/// traversals.
pub fn walk_module<'a>(m: &'a dyn Traverse, f: &mut dyn FnMut(&str, Slot<'a>)) {
    walk(m, "", f)
}

/// Mutable counterpart of [`walk_module`].
pub fn walk_module_mut(m: &mut dyn Traverse, f: &mut dyn FnMut(&str, SlotMut<'_>)) {
    walk_mut(m, "", f)
}
