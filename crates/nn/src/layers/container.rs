//! Sequential, ModuleList, ModuleDict.

use crate::module::index_name;
use crate::{Module, Slot, SlotMut, Traverse};
use ember_autograd::{Error, Result, Tensor};

/// Modules applied in order (`nn.Sequential`); state_dict keys are `0.weight`, `1.bias`, ...
///
/// ```
/// use ember_nn::{layers::*, Module, ModuleExt, Sequential};
/// let net = Sequential::new()
///     .layer(Linear::new(4, 8).unwrap())
///     .layer(ReLU::default())
///     .layer(Linear::new(8, 2).unwrap());
/// let keys: Vec<String> = net.state_dict().into_iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// ```
#[derive(Default)]
pub struct Sequential {
    /// The layers.
    pub layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential { layers: vec![] }
    }
    /// Appends a layer (builder style).
    pub fn layer(mut self, m: impl Module + 'static) -> Self {
        self.layers.push(Box::new(m));
        self
    }
    /// Appends a layer.
    pub fn push(&mut self, m: impl Module + 'static) {
        self.layers.push(Box::new(m));
    }
    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Traverse for Sequential {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        for (i, m) in self.layers.iter().enumerate() {
            v(Slot::Child(index_name(i), m.as_ref()));
        }
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        for (i, m) in self.layers.iter_mut().enumerate() {
            v(SlotMut::Child(index_name(i), m.as_mut()));
        }
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let profiling = ember_autograd::profiler::is_active();
        for (i, m) in self.layers.iter().enumerate() {
            h = if profiling {
                // one profiler range per layer, named by position and type (`2.Conv2d`)
                ember_autograd::profiler::record_function(&format!("{i}.{}", m.layer_name()), || m.forward(&h))?
            } else {
                m.forward(&h)?
            };
        }
        Ok(h)
    }
}

/// A list of modules, indexed like a Vec (`nn.ModuleList`); keys `0.weight`, ...
#[derive(Default)]
pub struct ModuleList {
    /// The modules.
    pub modules: Vec<Box<dyn Module>>,
}

impl ModuleList {
    /// An empty list.
    pub fn new() -> Self {
        ModuleList { modules: vec![] }
    }
    /// Appends a module.
    pub fn push(&mut self, m: impl Module + 'static) {
        self.modules.push(Box::new(m));
    }
    /// The module at `i`.
    pub fn get(&self, i: usize) -> Option<&dyn Module> {
        self.modules.get(i).map(|m| m.as_ref())
    }
    /// Number of modules.
    pub fn len(&self) -> usize {
        self.modules.len()
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }
}

impl Traverse for ModuleList {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        for (i, m) in self.modules.iter().enumerate() {
            v(Slot::Child(index_name(i), m.as_ref()));
        }
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        for (i, m) in self.modules.iter_mut().enumerate() {
            v(SlotMut::Child(index_name(i), m.as_mut()));
        }
    }
}

/// Named modules in insertion order (`nn.ModuleDict`); keys `<name>.weight`.
#[derive(Default)]
pub struct ModuleDict {
    /// The entries.
    pub entries: Vec<(String, Box<dyn Module>)>,
}

impl ModuleDict {
    /// An empty dict.
    pub fn new() -> Self {
        ModuleDict { entries: vec![] }
    }
    /// Inserts (or replaces) a module under `name` (names may not contain '.').
    pub fn insert(&mut self, name: &str, m: impl Module + 'static) -> Result<()> {
        if name.is_empty() || name.contains('.') {
            return Err(Error::invalid("ModuleDict", format!("module name {name:?} must be non-empty without '.'")));
        }
        match self.entries.iter_mut().find(|(k, _)| k == name) {
            Some(e) => e.1 = Box::new(m),
            None => self.entries.push((name.to_string(), Box::new(m))),
        }
        Ok(())
    }
    /// The module under `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Module> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, m)| m.as_ref())
    }
}

impl Traverse for ModuleDict {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        for (k, m) in &self.entries {
            v(Slot::Child(k, m.as_ref()));
        }
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        for (k, m) in self.entries.iter_mut() {
            v(SlotMut::Child(k, m.as_mut()));
        }
    }
}
