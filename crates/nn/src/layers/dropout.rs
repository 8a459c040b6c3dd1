//! Dropout and Dropout2d.

use crate::{functional, Module};
use ember_autograd::{Result, Tensor};

/// Zeroes each element with probability `p` in training and scales the rest by `1/(1-p)`
/// (`nn.Dropout`); the identity in eval mode.
#[derive(crate::Module)]
pub struct Dropout {
    /// Drop probability.
    pub p: f64,
    /// Training flag.
    pub training: bool,
}

impl Dropout {
    /// `nn.Dropout(p)`.
    pub fn new(p: f64) -> Self {
        Dropout { p, training: true }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        functional::dropout(x, self.p, self.training)
    }
}

/// Zeroes whole channels (`nn.Dropout2d`): input `[N, C, H, W]` or `[C, H, W]`.
#[derive(crate::Module)]
pub struct Dropout2d {
    /// Drop probability.
    pub p: f64,
    /// Training flag.
    pub training: bool,
}

impl Dropout2d {
    /// `nn.Dropout2d(p)`.
    pub fn new(p: f64) -> Self {
        Dropout2d { p, training: true }
    }
}

impl Module for Dropout2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        functional::dropout_channels(x, self.p, self.training)
    }
}
