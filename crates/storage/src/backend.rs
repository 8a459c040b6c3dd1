//! The `Backend` trait: the op contract every device implements, small and object-safe, with ops as data.

use crate::ops::{BinaryOp, IndexOp, ReduceOp, RngKey, RngOp, ScanOp, UnaryOp, WindowGeometry};
use crate::{Buffer, DType, Device, HostData, Layout, Result};
use std::fmt::Debug;

/// A scalar argument (fill values, clamp bounds ...).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A floating value.
    F(f64),
    /// An integer value.
    I(i64),
    /// A boolean value.
    B(bool),
}

impl Scalar {
    /// As f64.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::F(v) => v,
            Scalar::I(v) => v as f64,
            Scalar::B(v) => v as u8 as f64,
        }
    }
}

/// A tensor argument as a backend sees it: a buffer and the layout to read it through.
pub type View<'a> = (&'a Buffer, &'a Layout);

/// The operations a device provides. Every method takes buffers with explicit layouts (any strides) and
/// returns a new dense row-major buffer, except [`Backend::assign`], the one in-place primitive.
///
/// Callers (the Tensor layer) validate shapes, broadcast layouts and promote dtypes first, so a backend
/// receives consistent arguments; it must still never read out of bounds (check indices it is given).
///
/// Because ops are enums, a wrapper backend (profiling, recording, checking) forwards each family with one
/// line; see the `counting_backend` test in `ember-tests`.
pub trait Backend: Send + Sync + Debug {
    /// The device this backend serves.
    fn device(&self) -> Device;

    /// Moves host data into a new buffer (host to device) (the CPU backend takes the vector without copying).
    fn upload(&self, data: HostData) -> Result<Buffer>;
    /// Reads the elements of a view, in row-major order of its layout, back to the host.
    fn download(&self, x: View) -> Result<HostData>;
    /// A new buffer of `numel` copies of `value`.
    fn full(&self, value: Scalar, dtype: DType, numel: usize) -> Result<Buffer>;
    /// A dense copy of a view, converted to `dtype` (a plain copy when it is the view's dtype).
    fn cast(&self, x: View, dtype: DType) -> Result<Buffer>;
    /// Writes `src` (same shape and dtype as `dst`'s layout) into `dst` in place.
    fn assign(&self, dst: View, src: View) -> Result<()>;

    /// Elementwise op of one input.
    fn unary(&self, op: UnaryOp, x: View) -> Result<Buffer>;
    /// Elementwise op of two inputs of one dtype with layouts of the same shape (already broadcast).
    fn binary(&self, op: BinaryOp, a: View, b: View) -> Result<Buffer>;
    /// `cond ? a : b` elementwise; all three views have one shape, `cond` is bool, `a` and `b` one dtype.
    fn where_cond(&self, cond: View, a: View, b: View) -> Result<Buffer>;

    /// Reduces over `dims`; the result has the input's shape with those dims set to 1.
    fn reduce(&self, op: ReduceOp, x: View, dims: &[usize]) -> Result<Buffer>;
    /// Cumulative op along `dim`; the second buffer holds i64 indices for `Cummax`/`Cummin`.
    fn scan(&self, op: ScanOp, x: View, dim: usize) -> Result<(Buffer, Option<Buffer>)>;
    /// Sorts along `dim`: values and i64 indices (stable when `stable`).
    fn sort(&self, x: View, dim: usize, descending: bool, stable: bool) -> Result<(Buffer, Buffer)>;

    /// Softmax along `dim` (log-softmax when `log`), fused into one kernel: max, exp-sum, scale.
    fn softmax(&self, x: View, dim: usize, log: bool) -> Result<Buffer>;

    /// Batched matrix product: `a` is `[..., m, k]`, `b` is `[..., k, n]` with equal batch dims (any strides).
    fn matmul(&self, a: View, b: View) -> Result<Buffer>;

    /// Indexing: `index` holds i64 positions; `src` is the scattered values for scatter-like ops.
    fn index(&self, op: IndexOp, x: View, index: View, src: Option<View>) -> Result<Buffer>;

    /// im2col: `x` is `[N, C, *input]`; the result is `[N, C * prod(kernel), prod(output)]`, with
    /// `pad_value` outside the input.
    fn im2col(&self, x: View, geom: &WindowGeometry, pad_value: f64) -> Result<Buffer>;
    /// col2im, the adjoint of `im2col`: sums `[N, C * prod(kernel), prod(output)]` back into `[N, C, *input]`.
    fn col2im(&self, cols: View, geom: &WindowGeometry) -> Result<Buffer>;
    /// Fused 2-d max pooling of a floating `[N, C, H, W]` view over `geom` (padding counts as -inf,
    /// NaN wins): the values `[N, C, oh, ow]` and, as i64, the flat index `h * W + w` of each
    /// maximum within its input plane (PyTorch's `max_pool2d_with_indices`). Optional: the default
    /// says it is not supported, and callers then compose max pooling from `im2col` and reductions.
    fn max_pool2d(&self, x: View, geom: &WindowGeometry) -> Result<(Buffer, Buffer)> {
        let _ = (x, geom);
        Err(crate::Error::unsupported("max_pool2d", "this backend has no fused max-pool kernel"))
    }

    /// Batch norm's statistics of a floating `[N, C, *]` view: per channel (dim 1), the mean and the
    /// biased variance, each `[C]` in the view's dtype. Optional, like the other fused kernels: the
    /// default says it is not supported, and callers then compose batch norm from reductions.
    fn batch_norm_stats(&self, x: View) -> Result<(Buffer, Buffer)> {
        let _ = x;
        Err(crate::Error::unsupported("batch_norm_stats", "this backend has no fused batch-norm kernels"))
    }

    /// Batch norm backward's reductions over `[N, C, *]` views `g` and `x` of one floating dtype:
    /// per channel, `sum(g)` and `sum(g * (x - mean[c]))`, with `mean` a `[C]` view. Optional.
    fn batch_norm_backward_reduce(&self, g: View, x: View, mean: View) -> Result<(Buffer, Buffer)> {
        let _ = (g, x, mean);
        Err(crate::Error::unsupported("batch_norm_backward_reduce", "this backend has no fused batch-norm kernels"))
    }

    /// A per-channel affine combination of `[N, C, *]` views: `x * a[c] + y * b[c] + k[c]`, or
    /// `x * a[c] + k[c]` without `(y, b)`; `a`, `b` and `k` are `[C]` views, all of one floating
    /// dtype. Batch norm's forward and backward both end with one. Optional.
    fn channel_affine(&self, x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer> {
        let _ = (x, a, y, k);
        Err(crate::Error::unsupported("channel_affine", "this backend has no fused batch-norm kernels"))
    }

    /// Runs `f`, a sequence of many small ops on this backend (a recurrent loop), where the
    /// backend dispatches them most cheaply. The CPU backend runs it on one of its pool's threads,
    /// so each op's parallel part is handed to a thread that is already awake instead of the
    /// caller's thread sleeping and waking once per op. Thread-local state (such as grad mode)
    /// is the caller's to carry into `f`. The default just calls `f`.
    fn run_sequence(&self, f: &mut (dyn FnMut() + Send)) {
        f()
    }

    /// 2-d convolution without groups, fused per sample (patches, product, no batch-wide patch
    /// tensor): `x` is `[N, C, H, W]` and the geometry's input, `w` is `[OC, C * kh * kw]`; returns
    /// `[N, OC, oh * ow]`. Optional: the default says it is not supported, and callers then
    /// compose convolution from [`Backend::im2col`] and [`Backend::matmul`].
    fn conv2d(&self, x: View, w: View, geom: &WindowGeometry) -> Result<Buffer> {
        let _ = (x, w, geom);
        Err(crate::Error::unsupported("conv2d", "this backend has no fused convolution kernels"))
    }

    /// The backward of [`Backend::conv2d`] from the output's gradient `gy` `[N, OC, oh * ow]`:
    /// the input's gradient `[N, C, H, W]` when `need.0` and the weight's `[OC, C * kh * kw]`
    /// when `need.1`. Optional, like `conv2d`.
    fn conv2d_backward(
        &self,
        x: View,
        w: View,
        gy: View,
        geom: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        let _ = (x, w, gy, geom, need);
        Err(crate::Error::unsupported("conv2d_backward", "this backend has no fused convolution kernels"))
    }

    /// One direction of an LSTM layer over a whole sequence, fused: `gi` holds the input
    /// projections with both biases `[T, B, 4H]` (gate order input, forget, cell, output, as
    /// PyTorch), `h0` and `c0` the initial states `[B, H]`, `w_hh` the recurrent weight `[4H, H]`;
    /// with `reverse` the steps run from the last time index to the first. Returns the hidden and
    /// cell states of every step `[2, T, B, H]` (time order) and the activated gates
    /// `[T, B, 4H]`, in the operands' floating dtype. Optional: the default says it is not
    /// supported, and callers then compose the steps from products and elementwise ops.
    fn lstm_sequence(&self, gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)> {
        let _ = (gi, h0, c0, w_hh, reverse);
        Err(crate::Error::unsupported("lstm_sequence", "this backend has no fused LSTM kernels"))
    }

    /// The backward of [`Backend::lstm_sequence`]: from its `gates` and states `y`, `c0`, `w_hh`
    /// and the gradient `gy` of `y` `[2, T, B, H]`, the gradient of the gates' pre-activations
    /// `[T, B, 4H]` (which is also `gi`'s) and of `h0` and `c0`. The weights' gradients are
    /// products of these with the states, left to the caller. Optional, like `lstm_sequence`.
    fn lstm_sequence_backward(
        &self,
        gates: View,
        y: View,
        c0: View,
        w_hh: View,
        gy: View,
        reverse: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        let _ = (gates, y, c0, w_hh, gy, reverse);
        Err(crate::Error::unsupported("lstm_sequence_backward", "this backend has no fused LSTM kernels"))
    }

    /// `numel` random values of a floating `dtype`.
    fn random(&self, op: RngOp, dtype: DType, numel: usize, key: RngKey) -> Result<Buffer>;
}
