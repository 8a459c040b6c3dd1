//! Pooling layers: max, average, adaptive average/max, and Upsample / PixelShuffle.

use crate::Module;
use ember_autograd::{InterpMode, PoolOptions, Result, Tensor};

/// Max pooling over `kernel.len()` spatial dims (`nn.MaxPool1d/2d`).
#[derive(crate::Module)]
pub struct MaxPool {
    /// Window, stride, padding, dilation, ceil_mode.
    pub options: PoolOptions,
}

/// `nn.MaxPool2d`.
pub type MaxPool2d = MaxPool;

impl MaxPool {
    /// Window `kernel`, stride = kernel.
    pub fn new(kernel: &[usize]) -> Self {
        MaxPool { options: PoolOptions::new(kernel) }
    }
    /// `nn.MaxPool2d(k)` (square window, stride k).
    pub fn square(k: usize) -> Self {
        Self::new(&[k, k])
    }
}

impl Module for MaxPool {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.max_pool_values(&self.options)
    }
}

/// Average pooling (`nn.AvgPool1d/2d`).
#[derive(crate::Module)]
pub struct AvgPool {
    /// Window, stride, padding, ceil_mode, count_include_pad, divisor_override.
    pub options: PoolOptions,
}

impl AvgPool {
    /// Window `kernel`, stride = kernel.
    pub fn new(kernel: &[usize]) -> Self {
        AvgPool { options: PoolOptions::new(kernel) }
    }
}

impl Module for AvgPool {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool(&self.options)
    }
}

/// Adaptive average pooling to a fixed output size (`nn.AdaptiveAvgPool1d/2d`).
#[derive(crate::Module)]
pub struct AdaptiveAvgPool {
    /// Output size per spatial dim.
    pub output_size: Vec<usize>,
}

impl AdaptiveAvgPool {
    /// Pools to `output_size`.
    pub fn new(output_size: &[usize]) -> Self {
        AdaptiveAvgPool { output_size: output_size.to_vec() }
    }
}

impl Module for AdaptiveAvgPool {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_avg_pool(&self.output_size)
    }
}

/// Adaptive 2-d max pooling (`nn.AdaptiveMaxPool2d`).
#[derive(crate::Module)]
pub struct AdaptiveMaxPool2d {
    /// Output size `[h, w]`.
    pub output_size: Vec<usize>,
}

impl AdaptiveMaxPool2d {
    /// Pools to `[h, w]`.
    pub fn new(h: usize, w: usize) -> Self {
        AdaptiveMaxPool2d { output_size: vec![h, w] }
    }
}

impl Module for AdaptiveMaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.adaptive_max_pool2d(&self.output_size)?.0)
    }
}

/// `nn.Upsample` by a scale factor or to a size.
#[derive(crate::Module)]
pub struct Upsample {
    /// Target size (or `None` to use `scale_factor`).
    pub size: Option<Vec<usize>>,
    /// Scale per spatial dim.
    pub scale_factor: Option<Vec<f64>>,
    /// Interpolation mode.
    pub mode: InterpMode,
    /// Align corners (linear modes).
    pub align_corners: bool,
}

impl Upsample {
    /// Upsamples by `scale` in every spatial dim of a `dims`-d input with `mode`.
    pub fn scale(scale: f64, dims: usize, mode: InterpMode) -> Self {
        Upsample { size: None, scale_factor: Some(vec![scale; dims]), mode, align_corners: false }
    }
}

impl Module for Upsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.interpolate(self.size.as_deref(), self.scale_factor.as_deref(), self.mode, self.align_corners)
    }
}

/// `nn.PixelShuffle(r)`.
#[derive(crate::Module)]
pub struct PixelShuffle {
    /// Upscale factor.
    pub upscale_factor: usize,
}

impl Module for PixelShuffle {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.pixel_shuffle(self.upscale_factor)
    }
}
