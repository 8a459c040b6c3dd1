//! `bias=False` for the layers that have PyTorch's `bias` keyword, chained on the constructor's
//! `Result`: `Linear::new(8, 4).bias(false)?`, `LayerNorm::new(&[64]).bias(false)?`.

use super::{ConvNd, ConvTransposeNd, LayerNorm, Linear};
use ember_autograd::{Result, Tensor};

/// PyTorch's `bias=` keyword on a layer constructor's result. `bias(false)` drops the bias (the
/// weight keeps the values it was drawn with); `bias(true)` keeps the default.
pub trait WithBias: Sized {
    /// `bias=on`.
    fn bias(self, on: bool) -> Self;
}

/// Layers whose bias is an optional parameter.
trait HasBias {
    fn bias_slot(&mut self) -> &mut Option<Tensor>;
}

impl HasBias for Linear {
    fn bias_slot(&mut self) -> &mut Option<Tensor> {
        &mut self.bias
    }
}
impl HasBias for LayerNorm {
    fn bias_slot(&mut self) -> &mut Option<Tensor> {
        &mut self.bias
    }
}
impl<const D: usize> HasBias for ConvNd<D> {
    fn bias_slot(&mut self) -> &mut Option<Tensor> {
        &mut self.bias
    }
}
impl<const D: usize> HasBias for ConvTransposeNd<D> {
    fn bias_slot(&mut self) -> &mut Option<Tensor> {
        &mut self.bias
    }
}

impl<L: HasBias> WithBias for Result<L> {
    fn bias(self, on: bool) -> Self {
        self.map(|mut l| {
            if !on {
                *l.bias_slot() = None;
            }
            l
        })
    }
}
