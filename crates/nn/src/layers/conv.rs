//! Conv1d/2d/3d and ConvTranspose1d/2d/3d.

use super::linear::uniform_param;
use crate::Module;
use ember_autograd::{ConvOptions, ConvPadding, Dims, Error, Result, Tensor};

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

/// Expands a per-dim option given as one integer or `D` integers (`3` or `[3, 3]` for a 2-d conv).
fn per_dim(op: &str, what: &str, d: usize, v: impl Dims) -> Result<Vec<usize>> {
    let v = v.to_sizes(op)?;
    match v.len() {
        1 => Ok(vec![v[0]; d]),
        n if n == d => Ok(v.to_vec()),
        n => Err(Error::invalid(op, format!("{what} needs 1 or {d} values, got {n}: {v:?}"))),
    }
}

/// The checks and parameters shared by both families: a kernel of `d` sizes, groups dividing both
/// channel counts, then `conv_params` with the grouped weight lead `[lead0, lead1 / groups]`.
fn checked_params(
    op: &str,
    d: usize,
    lead: [usize; 2],
    kernel: &[usize],
    options: &ConvOptions,
    (in_channels, out_channels): (usize, usize),
    bias: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    if kernel.len() != d {
        return Err(Error::invalid(op, format!("kernel_size needs {d} values, got {kernel:?}")));
    }
    let g = check_groups(op, options, in_channels, out_channels)?;
    conv_params([lead[0], lead[1] / g], kernel, out_channels, bias)
}

/// A `D`-d convolution (`nn.Conv1d`/`Conv2d`/`Conv3d`), weight `[out, in / groups, k...]`, default
/// init U(±1/√fan_in). PyTorch's keyword arguments chain on the constructor's result (see
/// [`ConvBuilder`] and [`WithBias`](super::WithBias)):
///
/// ```
/// use ember_nn::layers::{Conv2d, ConvBuilder, WithBias};
/// let conv = Conv2d::new(3, 16, 4).stride(2).padding(1).bias(false)?;
/// assert_eq!(conv.weight.shape(), &[16, 3, 4, 4]);
/// assert!(conv.bias.is_none());
/// # Ok::<(), ember_autograd::Error>(())
/// ```
#[derive(crate::Module)]
pub struct ConvNd<const D: usize> {
    /// `[out_channels, in_channels / groups, kernel...]`.
    pub weight: Tensor,
    /// `[out_channels]`.
    pub bias: Option<Tensor>,
    /// Stride, padding, dilation, groups.
    pub options: ConvOptions,
}

/// `nn.Conv1d`.
pub type Conv1d = ConvNd<1>;
/// `nn.Conv2d`.
pub type Conv2d = ConvNd<2>;
/// `nn.Conv3d`.
pub type Conv3d = ConvNd<3>;

impl<const D: usize> ConvNd<D> {
    /// `nn.ConvNd(in, out, kernel_size)`: stride 1, no padding, one group, a bias; the kernel is one
    /// size for every dim (`3`) or one per dim (`[3, 5]`).
    pub fn new(in_channels: usize, out_channels: usize, kernel: impl Dims) -> Result<Self> {
        let kernel = per_dim(&format!("Conv{D}d"), "kernel_size", D, kernel)?;
        Self::with_options(in_channels, out_channels, &kernel, ConvOptions::new(D), true)
    }

    /// A convolution with explicit options (`padding`, `stride`, `dilation`, `groups`) and bias flag.
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        options: ConvOptions,
        bias: bool,
    ) -> Result<Self> {
        let lead = [out_channels, in_channels];
        let (weight, bias) =
            checked_params(&format!("Conv{D}d"), D, lead, kernel, &options, (in_channels, out_channels), bias)?;
        Ok(ConvNd { weight, bias, options })
    }

    /// `nn.Conv2d(in, out, k, stride, padding)` with a square kernel.
    pub fn square(in_channels: usize, out_channels: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        Self::new(in_channels, out_channels, k).stride(stride).padding(padding)
    }
}

impl<const D: usize> Module for ConvNd<D> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input_channels(&format!("Conv{D}d"), x, D, self.weight.shape()[1] * self.options.groups)?;
        x.conv(&self.weight, self.bias.as_ref(), &self.options)
    }
}

/// The channel check PyTorch makes before a convolution: `[N, C, spatial...]` (or unbatched
/// `[C, spatial...]`) with the layer's input channel count, named in the error.
fn check_input_channels(layer: &str, x: &Tensor, d: usize, in_channels: usize) -> Result<()> {
    let channel_dim = match x.ndim() {
        n if n == d + 2 => 1,
        n if n == d + 1 => 0,
        n => {
            return Err(Error::shape(
                layer,
                format!(
                    "expected a {}-d (batched) or {}-d (unbatched) input, got shape {:?} ({n} dims)",
                    d + 2,
                    d + 1,
                    x.shape()
                ),
            ))
        }
    };
    let c = x.shape()[channel_dim];
    if c != in_channels {
        return Err(Error::shape(
            layer,
            format!("expected input with {in_channels} channels, got {c} (input shape {:?})", x.shape()),
        ));
    }
    Ok(())
}

/// A `D`-d transposed convolution (`nn.ConvTranspose1d/2d/3d`), weight `[in, out / groups, k...]`;
/// options chain as for [`ConvNd`] (`ConvTranspose2d::new(64, 32, 4).stride(2).padding(1).bias(false)?`).
#[derive(crate::Module)]
pub struct ConvTransposeNd<const D: usize> {
    /// `[in_channels, out_channels / groups, kernel...]`.
    pub weight: Tensor,
    /// `[out_channels]`.
    pub bias: Option<Tensor>,
    /// Stride, padding, output_padding, dilation, groups.
    pub options: ConvOptions,
}

/// `nn.ConvTranspose1d`.
pub type ConvTranspose1d = ConvTransposeNd<1>;
/// `nn.ConvTranspose2d`.
pub type ConvTranspose2d = ConvTransposeNd<2>;
/// `nn.ConvTranspose3d`.
pub type ConvTranspose3d = ConvTransposeNd<3>;

impl<const D: usize> ConvTransposeNd<D> {
    /// `nn.ConvTransposeNd(in, out, kernel_size)`: stride 1, no padding, one group, a bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel: impl Dims) -> Result<Self> {
        let kernel = per_dim(&format!("ConvTranspose{D}d"), "kernel_size", D, kernel)?;
        Self::with_options(in_channels, out_channels, &kernel, ConvOptions::new(D), true)
    }

    /// A transposed convolution with explicit options.
    pub fn with_options(
        in_channels: usize,
        out_channels: usize,
        kernel: &[usize],
        options: ConvOptions,
        bias: bool,
    ) -> Result<Self> {
        let (weight, bias) = checked_params(
            &format!("ConvTranspose{D}d"),
            D,
            [in_channels, out_channels],
            kernel,
            &options,
            (in_channels, out_channels),
            bias,
        )?;
        Ok(ConvTransposeNd { weight, bias, options })
    }
}

impl<const D: usize> Module for ConvTransposeNd<D> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input_channels(&format!("ConvTranspose{D}d"), x, D, self.weight.shape()[0])?;
        x.conv_transpose(&self.weight, self.bias.as_ref(), &self.options)
    }
}

/// PyTorch's convolution keyword arguments, chained on a constructor's `Result`
/// (`Conv2d::new(1, 32, 3).stride(2).padding(1)?`): each takes one value for every spatial dim or
/// one per dim. `groups` draws the weight again in its grouped shape; an invalid value makes the
/// result an error naming the layer.
pub trait ConvBuilder: Sized {
    /// `stride=`.
    fn stride(self, stride: impl Dims) -> Self;
    /// `padding=` (explicit, symmetric).
    fn padding(self, padding: impl Dims) -> Self;
    /// `padding="same"` (stride 1).
    fn padding_same(self) -> Self;
    /// `dilation=`.
    fn dilation(self, dilation: impl Dims) -> Self;
    /// `output_padding=` (transposed convolutions; an error for plain ones).
    fn output_padding(self, output_padding: impl Dims) -> Self;
    /// `groups=`.
    fn groups(self, groups: usize) -> Self;
}

/// What the builder needs from a convolution layer.
trait ConvLayer: Sized {
    const NAME: &'static str;
    const D: usize;
    const TRANSPOSED: bool;
    fn options_mut(&mut self) -> &mut ConvOptions;
    /// The layer again with the same channels and kernel but `groups` groups (new weights).
    fn regroup(self, groups: usize) -> Result<Self>;
}

impl<const D: usize> ConvLayer for ConvNd<D> {
    const NAME: &'static str = "Conv";
    const D: usize = D;
    const TRANSPOSED: bool = false;
    fn options_mut(&mut self) -> &mut ConvOptions {
        &mut self.options
    }
    fn regroup(self, groups: usize) -> Result<Self> {
        let s = self.weight.shape();
        let (out, inp) = (s[0], s[1] * self.options.groups);
        let o = ConvOptions { groups, ..self.options };
        Self::with_options(inp, out, &s[2..], o, self.bias.is_some())
    }
}

impl<const D: usize> ConvLayer for ConvTransposeNd<D> {
    const NAME: &'static str = "ConvTranspose";
    const D: usize = D;
    const TRANSPOSED: bool = true;
    fn options_mut(&mut self) -> &mut ConvOptions {
        &mut self.options
    }
    fn regroup(self, groups: usize) -> Result<Self> {
        let s = self.weight.shape();
        let (inp, out) = (s[0], s[1] * self.options.groups);
        let o = ConvOptions { groups, ..self.options };
        Self::with_options(inp, out, &s[2..], o, self.bias.is_some())
    }
}

/// Sets one per-dim option of a layer in a `Result`, keeping the first error.
fn set_per_dim<L: ConvLayer>(
    r: Result<L>,
    what: &str,
    v: impl Dims,
    set: impl FnOnce(&mut ConvOptions, Vec<usize>),
) -> Result<L> {
    let mut layer = r?;
    let v = per_dim(L::NAME, what, L::D, v)?;
    set(layer.options_mut(), v);
    Ok(layer)
}

impl<L: ConvLayer> ConvBuilder for Result<L> {
    fn stride(self, stride: impl Dims) -> Self {
        set_per_dim(self, "stride", stride, |o, v| o.stride = v)
    }
    fn padding(self, padding: impl Dims) -> Self {
        set_per_dim(self, "padding", padding, |o, v| o.padding = ConvPadding::Explicit(v))
    }
    fn padding_same(self) -> Self {
        self.map(|mut l| {
            l.options_mut().padding = ConvPadding::Same;
            l
        })
    }
    fn dilation(self, dilation: impl Dims) -> Self {
        set_per_dim(self, "dilation", dilation, |o, v| o.dilation = v)
    }
    fn output_padding(self, output_padding: impl Dims) -> Self {
        if !L::TRANSPOSED {
            return Err(Error::invalid(L::NAME, "output_padding is only for transposed convolutions"));
        }
        set_per_dim(self, "output_padding", output_padding, |o, v| o.output_padding = v)
    }
    fn groups(self, groups: usize) -> Self {
        self?.regroup(groups)
    }
}
