//! 2-d convolution (without groups) through the backend's per-sample fused kernels, as one graph
//! node: no batch-wide patch tensor is built forward or kept for backward. A transposed
//! convolution runs on the same kernels: its forward is the input gradient of the convolution it
//! transposes, its input gradient that convolution's forward, and its weight gradient that
//! convolution's weight gradient with the roles of input and output gradient swapped. Backends without the
//! kernels, and backward passes that record a graph (`create_graph`), use the composition of
//! `im2col` and `matmul` instead, so higher-order gradients stay available.

use super::conv::{ConvOptions, ConvPadding};
use crate::graph::{is_grad_enabled, record_saving, Grads};
use crate::Tensor;
use ember_storage::{DType, Result, Scalar, WindowGeometry};

impl Tensor {
    /// `[N, OC, L]` output of a 2-d convolution of `self` (`[N, C, H, W]`, already padded by
    /// anything beyond the geometry's symmetric padding) with `weight` `[OC, C, kh, kw]`, or `None`
    /// when the backend has no fused kernel for these operands.
    pub(crate) fn conv2d_fused(&self, weight: &Tensor, geom: &WindowGeometry) -> Result<Option<Tensor>> {
        if self.dtype() != weight.dtype() || self.device() != weight.device() || geom.input.len() != 2 {
            return Ok(None);
        }
        let (n, cout) = (self.shape()[0], weight.shape()[0]);
        let ck = geom.channels * geom.kernel_numel();
        let w2 = weight.reshape([cout as isize, ck as isize])?;
        let Some(fused) = self.fused().filter(|_| matches!(self.dtype(), DType::F32 | DType::F64)) else {
            return Ok(None);
        };
        let buf = fused.conv2d(self.v(), w2.v(), geom)?;
        let l: usize = geom.output().expect("the caller checked the geometry").iter().product();
        let y = self.same_backend(buf, &[n, cout, l]);
        let (x, w, g) = (self.clone(), weight.clone(), geom.clone());
        Ok(Some(record_saving(y, "conv2d", &[self, weight], &[self, weight], move |gy| {
            if is_grad_enabled() {
                composed_backward(&x, &w, &g, gy)
            } else {
                fused_backward(&x, &w, &g, gy)
            }
        })))
    }
}

impl Tensor {
    /// `[N, C_out, *out]` transposed 2-d convolution (one group, `output_padding < stride`) of
    /// `self` `[N, C_in, H, W]` with `weight` `[C_in, C_out, kh, kw]` through the fused kernels, or
    /// `None` when the backend has none for these operands.
    pub(crate) fn conv_transpose2d_fused(
        &self,
        weight: &Tensor,
        opts: &ConvOptions,
        out_shape: &[usize],
    ) -> Result<Option<Tensor>> {
        let ConvPadding::Explicit(padding) = &opts.padding else { return Ok(None) };
        if opts.groups != 1
            || self.ndim() != 4
            || weight.ndim() != 4
            || self.dtype() != weight.dtype()
            || self.device() != weight.device()
            || opts.output_padding.iter().zip(&opts.stride).any(|(op, s)| op >= s)
        {
            return Ok(None);
        }
        let Some(fused) = self.fused().filter(|_| matches!(self.dtype(), DType::F32 | DType::F64)) else {
            return Ok(None);
        };
        let (n, cin, cout) = (self.shape()[0], self.shape()[1], out_shape[1]);
        // the convolution this one transposes: from the output shape back to the input's
        let geom = WindowGeometry {
            batch: n,
            channels: cout,
            input: out_shape[2..].to_vec(),
            kernel: weight.shape()[2..].to_vec(),
            stride: opts.stride.clone(),
            padding: padding.clone(),
            dilation: opts.dilation.clone(),
        };
        if geom.output().as_deref() != Some(&self.shape()[2..]) {
            return Ok(None);
        }
        let w2 = weight.reshape([cin as isize, -1])?;
        let x3 = self.reshape([n as isize, cin as isize, -1])?;
        // that convolution's input is not read for an input gradient alone: a broadcast zero stands in
        let unread = self.scalar_like(Scalar::F(0.0), self.dtype())?.broadcast_to(out_shape)?;
        let (y, _) = fused.conv2d_backward(unread.v(), w2.v(), x3.v(), &geom, (true, false))?;
        let y = self.same_backend(y.expect("requested"), out_shape);
        let (x, w, o) = (self.clone(), weight.clone(), opts.clone());
        Ok(Some(record_saving(y, "conv_transpose2d", &[self, weight], &[self, weight], move |gy| {
            if is_grad_enabled() {
                transpose_composed_backward(&x, &w, &o, &geom, gy)
            } else {
                transpose_fused_backward(&x, &w, &geom, gy)
            }
        })))
    }
}

/// Gradients of a transposed convolution's `(x, weight)` by the fused kernels of the convolution
/// it transposes.
fn transpose_fused_backward(x: &Tensor, w: &Tensor, g: &WindowGeometry, gy: &Tensor) -> Result<Grads> {
    let fused = x.fused_for("conv_transpose2d backward")?;
    let (n, cin) = (x.shape()[0], x.shape()[1]);
    let w2 = w.reshape([cin as isize, -1])?;
    let dx = match x.requires_grad() {
        true => Some(x.same_backend(fused.conv2d(gy.v(), w2.v(), g)?, x.shape())),
        false => None,
    };
    let dw = match w.requires_grad() {
        true => {
            let x3 = x.reshape([n as isize, cin as isize, -1])?;
            let (_, dw) = fused.conv2d_backward(gy.v(), w2.v(), x3.v(), g, (false, true))?;
            Some(w.same_backend(dw.expect("requested"), w.shape()))
        }
        false => None,
    };
    Ok(smallvec::smallvec![dx, dw])
}

/// The same gradients composed from recorded ops (for `create_graph`).
fn transpose_composed_backward(
    x: &Tensor,
    w: &Tensor,
    o: &ConvOptions,
    g: &WindowGeometry,
    gy: &Tensor,
) -> Result<Grads> {
    let conv = ConvOptions {
        stride: o.stride.clone(),
        padding: ConvPadding::Explicit(g.padding.clone()),
        dilation: o.dilation.clone(),
        groups: 1,
        output_padding: vec![0; o.stride.len()],
    };
    let dx = gy.conv(w, None, &conv)?;
    let (n, cin) = (x.shape()[0], x.shape()[1]);
    let cols = gy.im2col(&g.kernel, &g.stride, &g.padding, &g.dilation, 0.0)?;
    let dw = x
        .reshape([n as isize, cin as isize, -1])?
        .matmul(&cols.mt()?)?
        .sum_dim([0], false)?
        .reshape(w.shape().iter().map(|&s| s as isize).collect::<Vec<_>>())?;
    Ok(smallvec::smallvec![Some(dx), Some(dw)])
}

/// Gradients of `(x, weight)` by the backend's fused backward.
fn fused_backward(x: &Tensor, w: &Tensor, g: &WindowGeometry, gy: &Tensor) -> Result<Grads> {
    let w2 = w.reshape([w.shape()[0] as isize, -1])?;
    let need = (x.requires_grad(), w.requires_grad());
    let (dx, dw) = x.fused_for("conv2d backward")?.conv2d_backward(x.v(), w2.v(), gy.v(), g, need)?;
    let dx = dx.map(|b| x.same_backend(b, x.shape()));
    let dw = dw.map(|b| w.same_backend(b, w.shape()));
    Ok(smallvec::smallvec![dx, dw])
}

/// The same gradients composed from recorded ops on the (attached) inputs.
fn composed_backward(x: &Tensor, w: &Tensor, g: &WindowGeometry, gy: &Tensor) -> Result<Grads> {
    let (k, st, p, dl) = (&g.kernel, &g.stride, &g.padding, &g.dilation);
    let w2 = w.reshape([w.shape()[0] as isize, -1])?;
    let cols = x.im2col(k, st, p, dl, 0.0)?;
    let dw = gy
        .matmul(&cols.mt()?)?
        .sum_dim([0], false)?
        .reshape(w.shape().iter().map(|&s| s as isize).collect::<Vec<_>>())?;
    let dx = w2.t()?.matmul(gy)?.col2im(&g.input, k, st, p, dl)?;
    Ok(smallvec::smallvec![Some(dx), Some(dw)])
}
