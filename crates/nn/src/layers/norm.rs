//! BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm.

use super::linear::const_param;
use crate::Module;
use ember_autograd::{no_grad, DType, Result, Tensor};

/// Batch normalisation over `[N, C, ...]` (`nn.BatchNorm1d/2d/3d`): batch statistics in training
/// (updating the running ones with `momentum`), running statistics in eval mode.
#[derive(crate::Module)]
pub struct BatchNorm {
    /// `[C]`, init 1.
    pub weight: Option<Tensor>,
    /// `[C]`, init 0.
    pub bias: Option<Tensor>,
    /// `[C]`, init 0.
    #[module(buffer)]
    pub running_mean: Option<Tensor>,
    /// `[C]`, init 1.
    #[module(buffer)]
    pub running_var: Option<Tensor>,
    /// Number of training batches seen (i64 scalar).
    #[module(buffer)]
    pub num_batches_tracked: Option<Tensor>,
    /// Running-average factor (PyTorch's default 0.1).
    pub momentum: f64,
    /// Added to the variance.
    pub eps: f64,
    /// Training flag.
    pub training: bool,
}

/// `nn.BatchNorm2d`.
pub type BatchNorm2d = BatchNorm;
/// `nn.BatchNorm1d`.
pub type BatchNorm1d = BatchNorm;

impl BatchNorm {
    /// `nn.BatchNorm2d(num_features)` with eps 1e-5, momentum 0.1, affine, running stats.
    pub fn new(num_features: usize) -> Result<Self> {
        Self::with_options(num_features, 1e-5, 0.1, true, true)
    }

    /// All of PyTorch's options.
    pub fn with_options(c: usize, eps: f64, momentum: f64, affine: bool, track_running_stats: bool) -> Result<Self> {
        Ok(BatchNorm {
            weight: if affine { Some(const_param(&[c], 1.0)?) } else { None },
            bias: if affine { Some(const_param(&[c], 0.0)?) } else { None },
            running_mean: if track_running_stats { Some(Tensor::zeros([c])?) } else { None },
            running_var: if track_running_stats { Some(Tensor::ones([c])?) } else { None },
            num_batches_tracked: if track_running_stats {
                Some(Tensor::zeros_with(ember_autograd::SCALAR, DType::I64, ember_autograd::Device::Cpu)?)
            } else {
                None
            },
            momentum,
            eps,
            training: true,
        })
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let use_batch = self.training || self.running_mean.is_none();
        if self.training {
            if let Some(n) = &self.num_batches_tracked {
                // a scalar, not a CPU tensor: the counter lives on the module's device
                no_grad(|| n.add_(1i64).map(|_| ()))?;
            }
        }
        x.batch_norm(
            self.running_mean.as_ref(),
            self.running_var.as_ref(),
            self.weight.as_ref(),
            self.bias.as_ref(),
            use_batch,
            self.momentum,
            self.eps,
        )
    }
}

/// Layer normalisation over the trailing `normalized_shape` dims (`nn.LayerNorm`).
#[derive(crate::Module)]
pub struct LayerNorm {
    /// Elementwise scale, init 1.
    pub weight: Option<Tensor>,
    /// Elementwise shift, init 0.
    pub bias: Option<Tensor>,
    /// The normalised trailing shape.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// `nn.LayerNorm(normalized_shape)` with eps 1e-5 and an affine transform (a weight and a bias;
    /// `.bias(false)` ([`super::WithBias`]) keeps only the weight, as `bias=False`). The shape is one
    /// size or several, of any integer type.
    pub fn new(normalized_shape: impl ember_autograd::Dims) -> Result<Self> {
        Self::with_options(&normalized_shape.to_sizes("LayerNorm")?, 1e-5, true)
    }
    /// With explicit eps and elementwise_affine.
    pub fn with_options(normalized_shape: &[usize], eps: f64, affine: bool) -> Result<Self> {
        Ok(LayerNorm {
            weight: if affine { Some(const_param(normalized_shape, 1.0)?) } else { None },
            bias: if affine { Some(const_param(normalized_shape, 0.0)?) } else { None },
            normalized_shape: normalized_shape.to_vec(),
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.layer_norm(&self.normalized_shape, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// Root-mean-square normalisation (`nn.RMSNorm`).
#[derive(crate::Module)]
pub struct RmsNorm {
    /// Elementwise scale, init 1.
    pub weight: Option<Tensor>,
    /// The normalised trailing shape.
    pub normalized_shape: Vec<usize>,
    /// Added to the mean square (`None`: the dtype's machine epsilon, as PyTorch).
    pub eps: Option<f64>,
}

impl RmsNorm {
    /// `nn.RMSNorm(normalized_shape)`.
    pub fn new(normalized_shape: &[usize]) -> Result<Self> {
        Ok(RmsNorm {
            weight: Some(const_param(normalized_shape, 1.0)?),
            normalized_shape: normalized_shape.to_vec(),
            eps: None,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.rms_norm(&self.normalized_shape, self.weight.as_ref(), self.eps)
    }
}

/// Group normalisation (`nn.GroupNorm`).
#[derive(crate::Module)]
pub struct GroupNorm {
    /// Per-channel scale, init 1.
    pub weight: Option<Tensor>,
    /// Per-channel shift, init 0.
    pub bias: Option<Tensor>,
    /// Number of groups.
    pub num_groups: usize,
    /// Added to the variance.
    pub eps: f64,
}

impl GroupNorm {
    /// `nn.GroupNorm(num_groups, num_channels)`.
    pub fn new(num_groups: usize, num_channels: usize) -> Result<Self> {
        Ok(GroupNorm {
            weight: Some(const_param(&[num_channels], 1.0)?),
            bias: Some(const_param(&[num_channels], 0.0)?),
            num_groups,
            eps: 1e-5,
        })
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.group_norm(self.num_groups, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

/// Instance normalisation (`nn.InstanceNorm2d`; PyTorch's defaults: no affine, no running stats).
#[derive(crate::Module)]
pub struct InstanceNorm {
    /// Per-channel scale (only with `affine`).
    pub weight: Option<Tensor>,
    /// Per-channel shift (only with `affine`).
    pub bias: Option<Tensor>,
    /// Added to the variance.
    pub eps: f64,
}

impl InstanceNorm {
    /// `nn.InstanceNorm2d(num_features, affine=...)`.
    pub fn new(num_features: usize, affine: bool) -> Result<Self> {
        Ok(InstanceNorm {
            weight: if affine { Some(const_param(&[num_features], 1.0)?) } else { None },
            bias: if affine { Some(const_param(&[num_features], 0.0)?) } else { None },
            eps: 1e-5,
        })
    }
}

impl Module for InstanceNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.instance_norm(self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}
