//! Conv1d/2d/3d and ConvTranspose1d/2d/3d.

use super::linear::uniform_param;
use crate::Module;
use ember_autograd::{ConvOptions, ConvPadding, Error, Result, Tensor};

/// The group count, checked to divide both channel counts.
fn check_groups(op: &str, options: &ConvOptions, in_channels: usize, out_channels: usize) -> Result<usize> {
    let g = options.groups;
    if g == 0 || !in_channels.is_multiple_of(g) || !out_channels.is_multiple_of(g) {
        return Err(Error::invalid(
            op,
            format!("groups={g} must divide in_channels={in_channels} and out_channels={out_channels}"),
        ));
    }
    Ok(g)
}

/// Weight `[lead..., kernel...]` and bias `[out_channels]` drawn from U(±1/√fan_in), where
/// fan_in is weight dim 1 times the kernel size (PyTorch's rule, transposed convs included).
fn conv_params(
    lead: [usize; 2],
    kernel: &[usize],
    out_channels: usize,
    bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut shape = lead.to_vec();
    shape.extend(kernel);
    let fan_in = lead[1] * kernel.iter().product::<usize>();
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    let b = if bias { Some(uniform_param(&[out_channels], bound)?) } else { None };
    Ok((uniform_param(&shape, bound)?, b))
}

/// An N-d convolution (`nn.Conv1d`/`Conv2d`/`Conv3d` by the kernel's length), weight
/// `[out, in / groups, k...]`, default init U(±1/√fan_in).
#[derive(crate::Module)]
pub struct Conv {
    /// `[out_channels, in_channels / groups, kernel...]`.
    pub weight: Tensor,
    /// `[out_channels]`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub options: ConvOptions,
}

/// `nn.Conv2d`.
pub type Conv2d = Conv;

impl Conv {
    /// A convolution with `kernel.len()` spatial dims, stride 1, no padding, one group.
    pub fn new(in_channels: usize, out_channels: usize, kernel: &[usize]) -> Result<Self> {
        Self::with_options(in_channels, out_channels, kernel, ConvOptions::new(kernel.len()), true)
    }

    /// A convolution with explicit options (`padding`, `stride`, `dilation`, `groups`) and bias flag.
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        options: ConvOptions,
        bias: bool,
    ) -> Result<Self> {
        let g = check_groups("Conv", &options, in_channels, out_channels)?;
        let (weight, bias) = conv_params([out_channels, in_channels / g], kernel, out_channels, bias)?;
        Ok(Conv { weight, bias, options })
    }

    /// `nn.Conv2d(in, out, k, stride, padding)` with a square kernel.
    pub fn conv2d(in_channels: usize, out_channels: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        let mut o = ConvOptions::new(2);
        o.stride = vec![stride; 2];
        o.padding = ConvPadding::Explicit(vec![padding; 2]);
        Self::with_options(in_channels, out_channels, &[k, k], o, true)
    }

    /// `nn.Conv1d(in, out, k, stride, padding)`.
    pub fn conv1d(in_channels: usize, out_channels: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        let mut o = ConvOptions::new(1);
        o.stride = vec![stride];
        o.padding = ConvPadding::Explicit(vec![padding]);
        Self::with_options(in_channels, out_channels, &[k], o, true)
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv(&self.weight, self.bias.as_ref(), &self.options)
    }
}

/// An N-d transposed convolution (`nn.ConvTranspose1d/2d/3d`), weight `[in, out / groups, k...]`.
#[derive(crate::Module)]
pub struct ConvTranspose {
    /// `[in_channels, out_channels / groups, kernel...]`.
    pub weight: Tensor,
    /// `[out_channels]`.
    pub bias: Option<Tensor>,
    /// Stride, padding, output_padding, dilation, groups.
    pub options: ConvOptions,
}

impl ConvTranspose {
    /// A transposed convolution with explicit options.
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        options: ConvOptions,
        bias: bool,
    ) -> Result<Self> {
        let g = check_groups("ConvTranspose", &options, in_channels, out_channels)?;
        let (weight, bias) = conv_params([in_channels, out_channels / g], kernel, out_channels, bias)?;
        Ok(ConvTranspose { weight, bias, options })
    }
}

impl Module for ConvTranspose {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv_transpose(&self.weight, self.bias.as_ref(), &self.options)
    }
}
