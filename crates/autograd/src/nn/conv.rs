//! Convolution (`F.conv1d/2d/3d`, N-d, groups, dilation, "same"), transposed convolution and
//! `unfold`/`fold` (im2col/col2im). Convolution is im2col + one batched matmul (groups broadcast as a
//! batch dim), or the backend's fused per-sample kernels (`conv_fused`).

use crate::Tensor;
use ember_storage::{DType, Device, Error, Result, WindowGeometry};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.conv1d/2d/3d`.
pub const CONV: OpDescriptor = OpDescriptor {
    name: "conv2d",
    forward: "Tensor::conv",
    conformance: &["conv1d", "conv2d", "conv3d"],
    shape_rule: "conv_output_shape: [N, C_out, (in + 2p - d(k - 1) - 1) / s + 1 per spatial dim]",
    backward: OpBackward::Node {
        formula: "2-d f32/f64 on a backend with fused kernels: grad_x = col2im(Wᵀ gy), grad_W = Σ gy colsᵀ per sample; otherwise composed from pad, im2col and matmul",
    },
};

/// `F.conv_transpose1d/2d/3d`.
pub const CONV_TRANSPOSE: OpDescriptor = OpDescriptor {
    name: "conv_transpose2d",
    forward: "Tensor::conv_transpose",
    conformance: &["conv_transpose1d", "conv_transpose2d"],
    shape_rule:
        "conv_transpose_output_shape: [N, C_out, (in - 1)s - 2p + d(k - 1) + output_padding + 1 per spatial dim]",
    backward: OpBackward::Composed,
};

/// `F.unfold` (im2col).
pub const UNFOLD: OpDescriptor = OpDescriptor {
    name: "unfold",
    forward: "Tensor::im2col",
    conformance: &["unfold"],
    shape_rule: "[N, C * prod(kernel), L], L = the number of window positions",
    backward: OpBackward::Node { formula: "col2im (fold) of the gradient" },
};

/// `F.fold` (col2im).
pub const FOLD: OpDescriptor = OpDescriptor {
    name: "fold",
    forward: "Tensor::col2im",
    conformance: &["fold"],
    shape_rule: "[N, C, *output_size] from [N, C * prod(kernel), L]",
    backward: OpBackward::Node { formula: "im2col (unfold) of the gradient" },
};

/// Padding of a convolution.
#[derive(Clone, Debug, PartialEq)]
pub enum ConvPadding {
    /// Explicit symmetric padding per spatial dim.
    Explicit(Vec<usize>),
    /// Output has the input's size (stride 1).
    Same,
    /// No padding.
    Valid,
}

/// Options of an N-d convolution, with PyTorch's defaults from [`ConvOptions::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvOptions {
    /// Stride per spatial dim.
    pub stride: Vec<usize>,
    /// Padding.
    pub padding: ConvPadding,
    /// Dilation per spatial dim.
    pub dilation: Vec<usize>,
    /// Groups.
    pub groups: usize,
    /// Extra size on one side of each output dim (transposed convolution only).
    pub output_padding: Vec<usize>,
}

impl ConvOptions {
    /// Stride 1, no padding, dilation 1, one group, for `d` spatial dims.
    pub fn new(d: usize) -> Self {
        ConvOptions {
            stride: vec![1; d],
            padding: ConvPadding::Explicit(vec![0; d]),
            dilation: vec![1; d],
            groups: 1,
            output_padding: vec![0; d],
        }
    }
}

/// Adds a per-channel bias `[C]` to `[N, C, ...]`.
fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => {
            let mut bs = vec![1isize; y.ndim()];
            bs[1] = -1;
            y.add(&b.reshape(&bs)?)
        }
        None => Ok(y),
    }
}

/// The window geometry of an `[N, C, ...]` input of shape `input` with `d` spatial dims: kernel,
/// stride, padding and dilation of `d` entries each (kernel, stride and dilation positive), and a
/// window that fits the padded input.
pub(crate) fn window_geometry(
    op: &str,
    input: &[usize],
    d: usize,
    kernel: &[usize],
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
) -> Result<WindowGeometry> {
    if input.len() != d + 2 {
        return Err(Error::shape(op, format!("expects a {}-d input [N, C, ...], got {input:?}", d + 2)));
    }
    let g = WindowGeometry {
        batch: input[0],
        channels: input[1],
        input: input[2..].to_vec(),
        kernel: kernel.to_vec(),
        stride: stride.to_vec(),
        padding: padding.to_vec(),
        dilation: dilation.to_vec(),
    };
    if [kernel, stride, padding, dilation].iter().any(|v| v.len() != d)
        || kernel.contains(&0)
        || stride.contains(&0)
        || dilation.contains(&0)
    {
        return Err(Error::invalid(op, format!("kernel {kernel:?}, stride {stride:?}, padding {padding:?}, dilation {dilation:?} must have {d} positive entries")));
    }
    if g.output().is_none() {
        return Err(Error::shape(
            op,
            format!("kernel {kernel:?} (dilation {dilation:?}) is larger than the padded input {input:?}"),
        ));
    }
    Ok(g)
}

impl Tensor {
    /// The validated window geometry of this `[N, C, ...]` tensor (see [`window_geometry`]).
    pub(super) fn geometry(
        &self,
        op: &str,
        d: usize,
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
    ) -> Result<WindowGeometry> {
        window_geometry(op, self.shape(), d, kernel, stride, padding, dilation)
    }

    /// Patches `[N, C * prod(kernel), L]` of an `[N, C, ...]` input (im2col; `F.unfold` in 2-d).
    pub fn im2col(
        &self,
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
        pad_value: f64,
    ) -> Result<Tensor> {
        let g = self.geometry("unfold", kernel.len(), kernel, stride, padding, dilation)?;
        let l: usize = g.output().expect("checked").iter().product();
        let buf = self.backend().im2col(self.v(), &g, pad_value)?;
        let out = self.same_backend(buf, &[g.batch, g.channels * g.kernel_numel(), l]);
        let (k, st, p, dl, inp) =
            (kernel.to_vec(), stride.to_vec(), padding.to_vec(), dilation.to_vec(), g.input.clone());
        Ok(crate::graph::record_free(out, "im2col", &[self], move |gr| {
            Ok(smallvec::smallvec![Some(gr.col2im(&inp, &k, &st, &p, &dl)?)])
        }))
    }

    /// The adjoint of [`Tensor::im2col`]: sums `[N, C * prod(kernel), L]` patches into `[N, C, *output_size]`
    /// (`F.fold` in 2-d).
    pub fn col2im(
        &self,
        output_size: &[usize],
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
    ) -> Result<Tensor> {
        let k = ember_storage::shape::numel(kernel);
        if self.ndim() != 3 || k == 0 || !self.shape()[1].is_multiple_of(k) {
            return Err(Error::shape("fold", format!("input {:?} must be [N, C * {k}, L]", self.shape())));
        }
        let g = WindowGeometry {
            batch: self.shape()[0],
            channels: self.shape()[1] / k,
            input: output_size.to_vec(),
            kernel: kernel.to_vec(),
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            dilation: dilation.to_vec(),
        };
        let l: Option<usize> = g.output().map(|o| o.iter().product());
        if l != Some(self.shape()[2]) {
            return Err(Error::shape(
                "fold",
                format!(
                    "{} blocks do not tile output {output_size:?} with kernel {kernel:?}, stride {stride:?}",
                    self.shape()[2]
                ),
            ));
        }
        let buf = self.backend().col2im(self.v(), &g)?;
        let mut shape = vec![g.batch, g.channels];
        shape.extend_from_slice(output_size);
        let out = self.same_backend(buf, &shape);
        let (k, st, p, dl) = (kernel.to_vec(), stride.to_vec(), padding.to_vec(), dilation.to_vec());
        Ok(crate::graph::record_free(out, "col2im", &[self], move |gr| {
            Ok(smallvec::smallvec![Some(gr.im2col(&k, &st, &p, &dl, 0.0)?)])
        }))
    }

    /// N-d convolution (`F.conv1d/2d/3d`): input `[N, C_in, ...]` (or unbatched `[C_in, ...]`),
    /// weight `[C_out, C_in / groups, ...]`; output shape by [`conv_output_shape`].
    pub fn conv(&self, weight: &Tensor, bias: Option<&Tensor>, opts: &ConvOptions) -> Result<Tensor> {
        if crate::autocast::is_autocast_enabled() {
            let mut ts = vec![self, weight];
            ts.extend(bias);
            // every device but CUDA follows PyTorch's CPU kernels (as autocast's CPU op lists do)
            let half_cpu =
                crate::autocast::autocast_dtype() == Some(DType::F16) && !matches!(self.device(), Device::Cuda(_));
            let y = crate::autocast::autocast_op("conv", &ts, |t| {
                match (half_cpu && opts.groups == 1 && t[0].ndim() == 4 && t[1].ndim() == 4, &opts.padding) {
                    (true, ConvPadding::Explicit(padding)) => {
                        let has_bias = t.len() == 3;
                        let f =
                            super::conv_half::HalfConvCpu { opts: opts.clone(), padding: padding.clone(), has_bias };
                        crate::function::apply(f, t)
                    }
                    _ => t[0].conv(&t[1], t.get(2), opts),
                }
            })?;
            if let Some(y) = y {
                return Ok(y);
            }
        }
        let d = weight.ndim().saturating_sub(2);
        if d > 0 && self.ndim() == d + 1 {
            return self.unsqueeze(0)?.conv(weight, bias, opts)?.squeeze_dim(0);
        }
        let plan = ConvPlan::new(self.shape(), weight.shape(), opts)?;
        let x = if plan.extra.iter().any(|&e| e > 0) {
            // odd "same" padding: the extra element goes on the right, as PyTorch does
            let pad: Vec<isize> = plan.extra.iter().rev().flat_map(|&e| [0, e as isize]).collect();
            self.pad(&pad, crate::PadMode::Constant, 0.0)?
        } else {
            self.clone()
        };
        let shape: Vec<isize> = plan.out_shape.iter().map(|&s| s as isize).collect();
        let (cin, cout, g) = (self.shape()[1], weight.shape()[0], opts.groups);
        if g == 1 && covers_input_once(&x.shape()[2..], &weight.shape()[2..], &plan.geom.padding, &opts.dilation) {
            // the window is the whole (unpadded) input: one product over the batch, no patches
            // (a DCGAN discriminator's last layer, 4x4 -> 1x1)
            let y = x.reshape([x.shape()[0] as isize, -1])?.matmul(&weight.reshape([cout as isize, -1])?.t()?)?;
            return add_channel_bias(y.reshape(&shape)?, bias);
        }
        if g == 1 {
            if let Some(y) = x.conv2d_fused(weight, &plan.geom)? {
                return add_channel_bias(y.reshape(&shape)?, bias);
            }
        }
        let kernel = &weight.shape()[2..];
        let cols = x.im2col(kernel, &opts.stride, &plan.geom.padding, &opts.dilation, 0.0)?;
        let (n, l) = (self.shape()[0], cols.shape()[2]);
        let ck = cin / g * ember_storage::shape::numel(kernel);
        let w = weight.reshape([g as isize, (cout / g) as isize, ck as isize])?;
        let c = cols.reshape([n as isize, g as isize, ck as isize, l as isize])?;
        let y = w.matmul(&c)?; // [N, g, cout/g, L]
        add_channel_bias(y.reshape(&shape)?, bias)
    }

    /// N-d transposed convolution (`F.conv_transpose1d/2d/3d`): input `[N, C_in, ...]` (or unbatched),
    /// weight `[C_in, C_out / groups, ...]`; output shape by [`conv_transpose_output_shape`].
    pub fn conv_transpose(&self, weight: &Tensor, bias: Option<&Tensor>, opts: &ConvOptions) -> Result<Tensor> {
        if crate::autocast::is_autocast_enabled() {
            let mut ts = vec![self, weight];
            ts.extend(bias);
            if let Some(y) =
                crate::autocast::autocast_op("conv_transpose", &ts, |t| t[0].conv_transpose(&t[1], t.get(2), opts))?
            {
                return Ok(y);
            }
        }
        let d = weight.ndim().saturating_sub(2);
        if d > 0 && self.ndim() == d + 1 {
            return self.unsqueeze(0)?.conv_transpose(weight, bias, opts)?.squeeze_dim(0);
        }
        let out_shape = conv_transpose_output_shape(self.shape(), weight.shape(), opts)?;
        let ConvPadding::Explicit(padding) = &opts.padding else { unreachable!("checked by the shape rule") };
        let (n, cin, g) = (self.shape()[0], self.shape()[1], opts.groups);
        let cout = out_shape[1];
        let kernel = &weight.shape()[2..];
        let kn = ember_storage::shape::numel(kernel);
        let l: usize = self.shape()[2..].iter().product();
        if g == 1 && covers_input_once(&out_shape[2..], kernel, padding, &opts.dilation) {
            // a 1x1 input spread over the whole kernel-sized output: one product over the batch
            // (a DCGAN generator's first layer)
            let y = self.reshape([n as isize, cin as isize])?.matmul(&weight.reshape([cin as isize, -1])?)?;
            let shape: Vec<isize> = out_shape.iter().map(|&s| s as isize).collect();
            return add_channel_bias(y.reshape(&shape)?, bias);
        }
        if let Some(y) = self.conv_transpose2d_fused(weight, opts, &out_shape)? {
            return add_channel_bias(y, bias);
        }
        // cols[n, g, cout/g*K, L] = W[g]ᵀ @ x[n, g]
        let w = weight.reshape([g as isize, (cin / g) as isize, (cout / g * kn) as isize])?.mt()?;
        let x = self.reshape([n as isize, g as isize, (cin / g) as isize, l as isize])?;
        let cols = w.matmul(&x)?.reshape([n as isize, (cout * kn) as isize, l as isize])?;
        let y = if (0..d).all(|i| opts.output_padding[i] < opts.stride[i]) {
            cols.col2im(&out_shape[2..], kernel, &opts.stride, padding, &opts.dilation)?
        } else {
            // output_padding >= stride (allowed below the dilation): the windows no longer tile the
            // output, so fold without padding into the full extent, then crop `padding` on the left
            // and take the output size, zeros where no window reaches
            let full: Vec<usize> = (0..d)
                .map(|i| (self.shape()[2 + i] - 1) * opts.stride[i] + opts.dilation[i] * (kernel[i] - 1) + 1)
                .collect();
            let mut y = cols.col2im(&full, kernel, &opts.stride, &vec![0; d], &opts.dilation)?;
            let mut right = vec![];
            for i in (0..d).rev() {
                right.extend([0isize, (padding[i] + out_shape[2 + i]).saturating_sub(full[i]) as isize]);
            }
            y = y.pad(&right, crate::PadMode::Constant, 0.0)?;
            for i in 0..d {
                y = y.narrow(2 + i as isize, padding[i] as isize, out_shape[2 + i])?;
            }
            y
        };
        add_channel_bias(y, bias)
    }
}

/// True when a window of `kernel` with this padding and dilation fits a `spatial` input exactly
/// once: every input element is in the one window, so the convolution is a plain product.
fn covers_input_once(spatial: &[usize], kernel: &[usize], padding: &[usize], dilation: &[usize]) -> bool {
    spatial == kernel && padding.iter().all(|&p| p == 0) && dilation.iter().zip(kernel).all(|(&d, &k)| d == 1 || k == 1)
}

/// A validated convolution: the symmetric padding and window geometry im2col uses, the extra
/// right padding of an odd "same" padding, and the output shape.
struct ConvPlan {
    geom: WindowGeometry,
    extra: Vec<usize>,
    out_shape: Vec<usize>,
}

impl ConvPlan {
    fn new(input: &[usize], weight: &[usize], opts: &ConvOptions) -> Result<ConvPlan> {
        let d = weight.len().saturating_sub(2);
        let op = ["conv", "conv1d", "conv2d", "conv3d"].get(d).copied().unwrap_or("conv");
        if d == 0 || input.len() != d + 2 {
            return Err(Error::shape(op, format!("input {input:?} and weight {weight:?} ranks do not fit")));
        }
        let (cin, cout, g) = (input[1], weight[0], opts.groups);
        if g > 0 && cout % g == 0 && weight[1] * g != cin {
            return Err(Error::shape(
                op,
                format!(
                    "weight {weight:?} with groups={g} expects input with {} channels, got {cin} (input {input:?})",
                    weight[1] * g
                ),
            ));
        }
        if g == 0 || cin % g != 0 || cout % g != 0 {
            return Err(Error::shape(op, format!("groups={g} does not fit input channels {cin}, weight {weight:?}")));
        }
        let kernel = &weight[2..];
        let (padding, extra) = match &opts.padding {
            ConvPadding::Explicit(p) => (p.clone(), vec![0; d]),
            ConvPadding::Valid => (vec![0; d], vec![0; d]),
            ConvPadding::Same => {
                if opts.stride.iter().any(|&s| s != 1) {
                    return Err(Error::invalid(op, "padding='same' needs stride 1"));
                }
                // total padding dilation*(k-1); an odd total puts the extra element on the right
                let totals: Vec<usize> =
                    opts.dilation.iter().zip(kernel).map(|(dl, k)| dl.saturating_mul(k.saturating_sub(1))).collect();
                (totals.iter().map(|t| t / 2).collect(), totals.iter().map(|t| t % 2).collect())
            }
        };
        let mut padded = input.to_vec();
        for (p, e) in padded[2..].iter_mut().zip(&extra) {
            *p += e;
        }
        let geom = window_geometry(op, &padded, d, kernel, &opts.stride, &padding, &opts.dilation)?;
        let mut out_shape = vec![input[0], cout];
        out_shape.extend(geom.output().expect("window_geometry checked the window fits"));
        Ok(ConvPlan { geom, extra, out_shape })
    }
}

/// Output shape of [`Tensor::conv`] for an input (batched `[N, C_in, ...]` or unbatched) and a
/// weight of these shapes: per spatial dim `(in + 2 * padding - dilation * (k - 1) - 1) / stride + 1`
/// (PyTorch's `Conv2d` formula; "same" keeps `in`), or the error the forward returns.
pub fn conv_output_shape(input: &[usize], weight: &[usize], opts: &ConvOptions) -> Result<Vec<usize>> {
    if weight.len() > 2 && input.len() == weight.len() - 1 {
        let mut s = conv_output_shape(&[&[1], input].concat(), weight, opts)?;
        s.remove(0);
        return Ok(s);
    }
    Ok(ConvPlan::new(input, weight, opts)?.out_shape)
}

/// Output shape of [`Tensor::conv_transpose`] for an input (batched or unbatched) and a weight of
/// these shapes: channels `weight[1] * groups`, per spatial dim
/// `(in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1` (PyTorch's
/// `ConvTranspose2d` formula), or the error the forward returns.
pub fn conv_transpose_output_shape(input: &[usize], weight: &[usize], opts: &ConvOptions) -> Result<Vec<usize>> {
    let op = "conv_transpose";
    let d = weight.len().saturating_sub(2);
    if d > 0 && input.len() == d + 1 {
        let mut s = conv_transpose_output_shape(&[&[1], input].concat(), weight, opts)?;
        s.remove(0);
        return Ok(s);
    }
    let ConvPadding::Explicit(padding) = &opts.padding else {
        return Err(Error::invalid(op, "padding must be explicit for transposed convolution"));
    };
    if d == 0 || input.len() != d + 2 {
        return Err(Error::shape(op, format!("input {input:?} and weight {weight:?} ranks do not fit")));
    }
    if weight[0] != input[1] {
        return Err(Error::shape(
            op,
            format!("weight {weight:?} expects input with {} channels, got {} (input {input:?})", weight[0], input[1]),
        ));
    }
    let (cin, g) = (input[1], opts.groups);
    if g == 0 || cin % g != 0 {
        return Err(Error::shape(op, format!("groups={g} does not divide input channels {cin}")));
    }
    let (stride, dilation, out_pad) = (&opts.stride, &opts.dilation, &opts.output_padding);
    if [stride, padding, dilation, out_pad].iter().any(|v| v.len() != d)
        || stride.contains(&0)
        || dilation.contains(&0)
        || weight[2..].contains(&0)
    {
        return Err(Error::invalid(
            op,
            format!("kernel {:?}, stride {stride:?}, padding {padding:?}, dilation {dilation:?}, output_padding {out_pad:?} must have {d} entries (kernel, stride and dilation positive)", &weight[2..]),
        ));
    }
    if (0..d).any(|i| out_pad[i] >= stride[i].max(dilation[i])) {
        return Err(Error::invalid(op, format!("output_padding {out_pad:?} must be smaller than stride or dilation")));
    }
    let mut shape = vec![input[0], weight[1] * g];
    for i in 0..d {
        let full = (input[2 + i] as i128 - 1) * stride[i] as i128
            + dilation[i] as i128 * (weight[2 + i] as i128 - 1)
            + out_pad[i] as i128
            + 1;
        let size = full - 2 * padding[i] as i128;
        if size <= 0 || input[2 + i] == 0 {
            return Err(Error::shape(
                op,
                format!("input {input:?} with weight {weight:?}, padding {padding:?} gives an empty output"),
            ));
        }
        shape.push(usize::try_from(size).map_err(|_| Error::shape(op, format!("output size {size} is too large")))?);
    }
    Ok(shape)
}
