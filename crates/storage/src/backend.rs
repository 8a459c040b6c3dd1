//! The `Backend` trait: the op contract every device implements, small and object-safe, with ops as data.

use crate::ops::{BinaryOp, IndexOp, ReduceOp, RngKey, RngOp, ScanOp, UnaryOp, WindowGeometry};
use crate::{Buffer, DType, Device, FusedKernels, HostData, Layout, Result};
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
    /// Runs `f`, a sequence of many small ops on this backend (a recurrent loop), where the
    /// backend dispatches them most cheaply. The CPU backend runs it on one of its pool's threads,
    /// so each op's parallel part is handed to a thread that is already awake instead of the
    /// caller's thread sleeping and waking once per op. Thread-local state (such as grad mode)
    /// is the caller's to carry into `f`. The default just calls `f`.
    fn run_sequence(&self, f: &mut (dyn FnMut() + Send)) {
        f()
    }

    /// The backend's fused kernels (convolution, pooling, batch norm, LSTM, optimizer steps), or
    /// `None` when it has none: callers then compose the same results from the ops above. A backend
    /// that wraps another forwards this in one line (`self.inner.fused()`), so it keeps every fast path.
    fn fused(&self) -> Option<&dyn FusedKernels> {
        None
    }

    /// `numel` random values of a floating `dtype`.
    fn random(&self, op: RngOp, dtype: DType, numel: usize, key: RngKey) -> Result<Buffer>;
}
