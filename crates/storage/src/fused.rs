//! Fused kernels: the fast paths a backend may offer beyond the op families of [`crate::Backend`]
//! (DESIGN.md decision 12). They are a capability, reached through [`crate::Backend::fused`]: a
//! backend without them returns `None` there and every layer above composes the same results from
//! the basic ops, so `Error::Unsupported` never doubles as a capability probe.

use crate::ops::WindowGeometry;
use crate::{Buffer, ElementwiseProgram, Error, Layout, Result, View};

/// The fused kernels of one backend. Every method is required: a backend offers the set or none.
/// Dtypes: the floating dtypes f32 and f64 (callers take the composed path for others).
pub trait FusedKernels: Send + Sync {
    /// Fused 2-d max pooling of a floating `[N, C, H, W]` view over `geom` (padding counts as -inf,
    /// NaN wins): the values `[N, C, oh, ow]` and, as i64, the flat index `h * W + w` of each
    /// maximum within its input plane (PyTorch's `max_pool2d_with_indices`). Callers without it
    /// compose max pooling from `im2col` and reductions.
    fn max_pool2d(&self, x: View, geom: &WindowGeometry) -> Result<(Buffer, Buffer)>;

    /// Batch norm's statistics of a floating `[N, C, *]` view: per channel (dim 1), the mean and the
    /// biased variance, each `[C]` in the view's dtype.
    fn batch_norm_stats(&self, x: View) -> Result<(Buffer, Buffer)>;

    /// Batch norm backward's reductions over `[N, C, *]` views `g` and `x` of one floating dtype:
    /// per channel, `sum(g)` and `sum(g * (x - mean[c]))`, with `mean` a `[C]` view.
    fn batch_norm_backward_reduce(&self, g: View, x: View, mean: View) -> Result<(Buffer, Buffer)>;

    /// A per-channel affine combination of `[N, C, *]` views: `x * a[c] + y * b[c] + k[c]`, or
    /// `x * a[c] + k[c]` without `(y, b)`; `a`, `b` and `k` are `[C]` views, all of one floating
    /// dtype. Batch norm's forward and backward both end with one.
    fn channel_affine(&self, x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer>;

    /// Layer norm over the last dim of a floating `[R, K]` view (RMS norm with `rms`: no centring,
    /// the mean square in place of the variance): per row `mean` (0 for RMS norm) and
    /// `rstd = 1 / sqrt(var + eps)` with the biased variance, and `y = ((x - mean) * rstd) * weight + bias`
    /// with the optional `[K]` views `weight` and `bias`. Returns `y` `[R, K]`, `mean` and `rstd`
    /// `[R]`, in the view's dtype. Callers without it compose the norm from reductions.
    fn layer_norm(
        &self,
        x: View,
        weight: Option<View>,
        bias: Option<View>,
        eps: f64,
        rms: bool,
    ) -> Result<(Buffer, Buffer, Buffer)>;

    /// The input's gradient of [`FusedKernels::layer_norm`] from the output's gradient `gy` `[R, K]`
    /// and the forward's `mean` and `rstd`: per row `rstd * (g - mean(g) - xhat * mean(g * xhat))`
    /// with `g = gy * weight` and `xhat = (x - mean) * rstd` (RMS norm: without the `mean(g)` term).
    /// The weight's and bias's gradients are sums the caller composes.
    fn layer_norm_backward(
        &self,
        gy: View,
        x: View,
        mean: View,
        rstd: View,
        weight: Option<View>,
        rms: bool,
    ) -> Result<Buffer>;

    /// 2-d convolution without groups, fused per sample (patches, product, no batch-wide patch
    /// tensor): `x` is `[N, C, H, W]` and the geometry's input, `w` is `[OC, C * kh * kw]`; returns
    /// `[N, OC, oh * ow]`. Callers without it
    /// compose convolution from [`crate::Backend::im2col`] and [`crate::Backend::matmul`].
    fn conv2d(&self, x: View, w: View, geom: &WindowGeometry) -> Result<Buffer>;

    /// The backward of [`FusedKernels::conv2d`] from the output's gradient `gy` `[N, OC, oh * ow]`:
    /// the input's gradient `[N, C, H, W]` when `need.0` and the weight's `[OC, C * kh * kw]`
    /// when `need.1`.
    fn conv2d_backward(
        &self,
        x: View,
        w: View,
        gy: View,
        geom: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)>;

    /// One direction of an LSTM layer over a whole sequence, fused: `gi` holds the input
    /// projections with both biases `[T, B, 4H]` (gate order input, forget, cell, output, as
    /// PyTorch), `h0` and `c0` the initial states `[B, H]`, `w_hh` the recurrent weight `[4H, H]`;
    /// with `reverse` the steps run from the last time index to the first. Returns the hidden and
    /// cell states of every step `[2, T, B, H]` (time order) and the activated gates
    /// `[T, B, 4H]`, in the operands' floating dtype. Callers without it compose
    /// the steps from products and elementwise ops.
    fn lstm_sequence(&self, gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)>;

    /// The backward of [`FusedKernels::lstm_sequence`]: from its `gates` and states `y`, `c0`, `w_hh`
    /// and the gradient `gy` of `y` `[2, T, B, H]`, the gradient of the gates' pre-activations
    /// `[T, B, 4H]` (which is also `gi`'s) and of `h0` and `c0`. The weights' gradients are
    /// products of these with the states, left to the caller.
    fn lstm_sequence_backward(
        &self,
        gates: View,
        y: View,
        c0: View,
        w_hh: View,
        gy: View,
        reverse: bool,
    ) -> Result<(Buffer, Buffer, Buffer)>;

    /// One SGD step in place (`torch.optim.SGD`), computed in the parameter's dtype: `param`,
    /// `grad` and `momentum_buffer` (present when `s.momentum != 0`) are contiguous views of one
    /// floating dtype and size, in distinct buffers.
    fn sgd_step(&self, param: View, grad: View, momentum_buffer: Option<View>, s: &SgdStep) -> Result<()>;

    /// One Adam or AdamW step in place (`torch.optim.Adam`/`AdamW` without AMSGrad), computed in
    /// the parameter's dtype, on contiguous views of one floating dtype and size in distinct buffers.
    fn adam_step(&self, param: View, grad: View, exp_avg: View, exp_avg_sq: View, s: &AdamStep) -> Result<()>;

    /// Runs a fused group of elementwise ops in one pass (the lazy backend's fusion groups,
    /// DESIGN.md decision 13): `inputs` are views of the program's dtype broadcast to its shape;
    /// the result is one dense row-major buffer per entry of `program.outputs`. Every element of
    /// every step is computed exactly as [`crate::Backend::unary`] / [`crate::Backend::binary`]
    /// compute it, so the result is bit-identical to running the steps one by one.
    fn elementwise(&self, program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>>;
}

/// The settings of one fused SGD step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor (0: plain SGD, no buffer).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Maximise instead of minimising.
    pub maximize: bool,
    /// The buffer is empty (first step): it is set to the gradient.
    pub first: bool,
}

/// The settings of one fused Adam/AdamW step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// The moments' decay rates.
    pub betas: (f64, f64),
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: L2 on the gradient (Adam) or decoupled (AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay.
    pub decoupled: bool,
    /// Maximise instead of minimising.
    pub maximize: bool,
    /// The step number, from 1 (for the bias corrections).
    pub step: u64,
}

/// `(R, K)` of layer norm's `[R, K]` input with its `[K]` weight and bias and `[R]` statistics
/// checked: the shape rule of [`FusedKernels::layer_norm`] and its backward, shared by every
/// backend.
pub fn layer_norm_rows(
    op: &str,
    x: &Layout,
    per_col: &[Option<&Layout>],
    per_row: &[&Layout],
) -> Result<(usize, usize)> {
    let sh = x.shape();
    if sh.len() != 2 {
        return Err(Error::shape(op, format!("expects [R, K] rows, got {sh:?}")));
    }
    for l in per_col.iter().flatten() {
        if l.shape() != [sh[1]] {
            return Err(Error::shape(op, format!("weight and bias should be [{}], got {:?}", sh[1], l.shape())));
        }
    }
    for l in per_row {
        if l.shape() != [sh[0]] {
            return Err(Error::shape(op, format!("per-row statistics should be [{}], got {:?}", sh[0], l.shape())));
        }
    }
    Ok((sh[0], sh[1]))
}
