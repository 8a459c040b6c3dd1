//! Linear, Bilinear, Identity, Flatten, Unflatten.

use crate::{init, Module};
use ember_autograd::{Error, Result, Tensor};

/// A new trainable leaf of `shape` drawn from U(−bound, bound) (PyTorch's default layer init).
pub(crate) fn uniform_param(shape: &[usize], bound: f64) -> Result<Tensor> {
    let t = Tensor::zeros(shape)?;
    init::uniform_(&t, -bound, bound)?;
    t.requires_grad_(true)
}

/// A trainable leaf filled with `value`.
pub(crate) fn const_param(shape: &[usize], value: f64) -> Result<Tensor> {
    Tensor::full(shape, value)?.requires_grad_(true)
}

/// `y = x Wᵀ + b` (`nn.Linear`), weight `[out, in]`, default init U(±1/√in) for both.
#[derive(crate::Module)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// `nn.Linear(in_features, out_features)`, with a bias; `.bias(false)` ([`super::WithBias`])
    /// drops it.
    pub fn new(in_features: usize, out_features: usize) -> Result<Self> {
        let bound = 1.0 / (in_features.max(1) as f64).sqrt();
        Ok(Linear {
            weight: uniform_param(&[out_features, in_features], bound)?,
            bias: Some(uniform_param(&[out_features], bound)?),
        })
    }

    /// The number of input features the weight expects.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.in_features();
        if x.ndim() == 0 || x.shape()[x.ndim() - 1] != k {
            return Err(Error::shape(
                "Linear",
                format!("expected input with {k} features in the last dim, got shape {:?}", x.shape()),
            ));
        }
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// `y = x1ᵀ A x2 + b` (`nn.Bilinear`), weight `[out, in1, in2]`.
#[derive(crate::Module)]
pub struct Bilinear {
    /// `[out_features, in1_features, in2_features]`.
    pub weight: Tensor,
    /// `[out_features]`.
    pub bias: Option<Tensor>,
}

impl Bilinear {
    /// `nn.Bilinear(in1, in2, out, bias)`.
    pub fn new(in1: usize, in2: usize, out: usize, bias: bool) -> Result<Self> {
        let bound = 1.0 / (in1.max(1) as f64).sqrt();
        Ok(Bilinear {
            weight: uniform_param(&[out, in1, in2], bound)?,
            bias: if bias { Some(uniform_param(&[out], bound)?) } else { None },
        })
    }

    /// Applies the layer to two inputs.
    pub fn forward2(&self, x1: &Tensor, x2: &Tensor) -> Result<Tensor> {
        x1.bilinear(x2, &self.weight, self.bias.as_ref())
    }
}

/// Returns its input (`nn.Identity`).
#[derive(crate::Module, Default)]
pub struct Identity {}

impl Module for Identity {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}

/// Flattens dims `start_dim..=end_dim` (`nn.Flatten`, default 1..=-1).
#[derive(crate::Module)]
pub struct Flatten {
    /// First dim flattened.
    pub start_dim: isize,
    /// Last dim flattened.
    pub end_dim: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start_dim: 1, end_dim: -1 }
    }
}

impl Flatten {
    /// `nn.Flatten(start_dim, end_dim)`.
    pub fn new(start_dim: isize, end_dim: isize) -> Self {
        Flatten { start_dim, end_dim }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(self.start_dim, self.end_dim)
    }
}

/// Expands dim `dim` into `sizes` (`nn.Unflatten`).
#[derive(crate::Module)]
pub struct Unflatten {
    /// The dim to expand.
    pub dim: isize,
    /// Its new sizes.
    pub sizes: Vec<isize>,
}

impl Unflatten {
    /// `nn.Unflatten(dim, unflattened_size)`.
    pub fn new(dim: isize, sizes: &[isize]) -> Self {
        Unflatten { dim, sizes: sizes.to_vec() }
    }
}

impl Module for Unflatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let nd = x.ndim() as isize;
        let d = if self.dim < 0 { self.dim + nd } else { self.dim };
        if d < 0 || d >= nd {
            return Err(ember_autograd::Error::shape(
                "Unflatten",
                format!("dim {} out of range for shape {:?}", self.dim, x.shape()),
            ));
        }
        let d = d as usize;
        let mut shape: Vec<isize> = x.shape()[..d].iter().map(|&s| s as isize).collect();
        shape.extend(&self.sizes);
        shape.extend(x.shape()[d + 1..].iter().map(|&s| s as isize));
        x.reshape(&shape)
    }
}
