//! `LazyBackend`: the [`Backend`] of a lazy device. Floating (f32/f64) arithmetic elementwise ops
//! are recorded as pending buffers; every other op evaluates its inputs and runs on the inner
//! backend at once (its result is ready).

use crate::buffer::{LazyBuffer, Node, NodeOp, State, PENDING};
use crate::log::EAGER_OPS;
use crate::schedule::{before_write, ready, MAX_DEPTH};
use ember_storage::{
    Backend, BinaryOp, Buffer, DType, Device, DeviceBuffer, FusedKernels, HostData, IndexOp, Layout, ReduceOp, Result,
    RngKey, RngOp, Scalar, ScanOp, UnaryOp, View, WindowGeometry,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A lazy backend over `inner` (DESIGN.md decision 13). See the crate documentation.
#[derive(Debug)]
pub struct LazyBackend {
    inner: Arc<dyn Backend>,
    device: Device,
}

impl LazyBackend {
    /// A lazy backend computing on `inner`; it serves `inner.device().lazy()`.
    pub fn new(inner: Arc<dyn Backend>) -> LazyBackend {
        let device = inner.device().lazy();
        LazyBackend { inner, device }
    }

    /// The backend that computes.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// Wraps an inner buffer as a ready lazy buffer.
    pub(crate) fn wrap(&self, b: Buffer) -> Buffer {
        Arc::new(LazyBuffer::new(b.dtype(), b.len(), self.device, State::Ready(b)))
    }

    /// The inner view of a lazy view, evaluated.
    pub(crate) fn eager<'a>(&self, x: View<'a>, why: &str) -> Result<(Buffer, &'a Layout)> {
        Ok((ready(x.0, why)?, x.1))
    }

    /// Records `op` over `inputs` (lazy views of one floating dtype and shape) as a pending buffer.
    fn record(&self, op: NodeOp, dtype: DType, inputs: &[View]) -> Result<Buffer> {
        let shape = inputs[0].1.shape().to_vec();
        let mut depth = 1;
        for (b, _) in inputs {
            depth = depth.max(LazyBuffer::of(b, op.name())?.depth() + 1);
        }
        if depth > MAX_DEPTH {
            // a long chain no one reads: evaluate its inputs now, so groups and the graph stay bounded
            for (b, _) in inputs {
                ready(b, "a chain reaching the depth limit")?;
            }
            depth = 1;
        }
        let node = Node {
            op,
            inputs: inputs.iter().map(|(b, l)| ((*b).clone(), (*l).clone())).collect(),
            shape,
            depth,
            backend: self.inner.clone(),
        };
        let numel = inputs[0].1.numel();
        let b: Buffer = Arc::new(LazyBuffer::new(dtype, numel, self.device, State::Pending(Arc::new(node))));
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).push(&b);
        Ok(b)
    }

    /// Whether a view can be an operand of a recorded op: a lazy buffer of a floating dtype whose
    /// layout fits it (checked here, since the inner backend only sees it at evaluation).
    fn fusible(&self, x: View, op: &str) -> Result<Option<DType>> {
        let lb = LazyBuffer::of(x.0, op)?;
        x.1.check_fits(lb.len(), op)?;
        Ok(matches!(lb.dtype(), DType::F32 | DType::F64).then(|| lb.dtype()))
    }
}

impl Backend for LazyBackend {
    fn device(&self) -> Device {
        self.device
    }

    fn upload(&self, data: HostData) -> Result<Buffer> {
        Ok(self.wrap(self.inner.upload(data)?))
    }

    fn download(&self, x: View) -> Result<HostData> {
        let (b, l) = self.eager(x, "download")?;
        self.inner.download((&b, l))
    }

    fn full(&self, value: Scalar, dtype: DType, numel: usize) -> Result<Buffer> {
        Ok(self.wrap(self.inner.full(value, dtype, numel)?))
    }

    fn cast(&self, x: View, dtype: DType) -> Result<Buffer> {
        let (b, l) = self.eager(x, "to_dtype")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.cast((&b, l), dtype)?))
    }

    fn assign(&self, dst: View, src: View) -> Result<()> {
        let (s, sl) = self.eager(src, "copy_")?;
        let (d, dl) = self.eager(dst, "copy_")?;
        before_write(&d, "copy_")?;
        self.inner.assign((&d, dl), (&s, sl))
    }

    fn unary(&self, op: UnaryOp, x: View) -> Result<Buffer> {
        if !op.is_predicate() {
            if let Some(dt) = self.fusible(x, op.name())? {
                return self.record(NodeOp::Unary(op), dt, &[x]);
            }
        }
        let (b, l) = self.eager(x, op.name())?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.unary(op, (&b, l))?))
    }

    fn binary(&self, op: BinaryOp, a: View, b: View) -> Result<Buffer> {
        if !op.is_predicate() && a.1.shape() == b.1.shape() {
            let (da, db) = (self.fusible(a, op.name())?, self.fusible(b, op.name())?);
            if let (Some(x), Some(y)) = (da, db) {
                if x == y {
                    return self.record(NodeOp::Binary(op), x, &[a, b]);
                }
            }
        }
        let (ba, la) = self.eager(a, op.name())?;
        let (bb, lb) = self.eager(b, op.name())?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.binary(op, (&ba, la), (&bb, lb))?))
    }

    fn where_cond(&self, cond: View, a: View, b: View) -> Result<Buffer> {
        let (c, lc) = self.eager(cond, "where")?;
        let (x, lx) = self.eager(a, "where")?;
        let (y, ly) = self.eager(b, "where")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.where_cond((&c, lc), (&x, lx), (&y, ly))?))
    }

    fn reduce(&self, op: ReduceOp, x: View, dims: &[usize]) -> Result<Buffer> {
        let (b, l) = self.eager(x, "reduce")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.reduce(op, (&b, l), dims)?))
    }

    fn scan(&self, op: ScanOp, x: View, dim: usize) -> Result<(Buffer, Option<Buffer>)> {
        let (b, l) = self.eager(x, "scan")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (v, i) = self.inner.scan(op, (&b, l), dim)?;
        Ok((self.wrap(v), i.map(|i| self.wrap(i))))
    }

    fn sort(&self, x: View, dim: usize, descending: bool, stable: bool) -> Result<(Buffer, Buffer)> {
        let (b, l) = self.eager(x, "sort")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (v, i) = self.inner.sort((&b, l), dim, descending, stable)?;
        Ok((self.wrap(v), self.wrap(i)))
    }

    fn softmax(&self, x: View, dim: usize, log: bool) -> Result<Buffer> {
        let (b, l) = self.eager(x, "softmax")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.softmax((&b, l), dim, log)?))
    }

    fn matmul(&self, a: View, b: View) -> Result<Buffer> {
        let (x, lx) = self.eager(a, "matmul")?;
        let (y, ly) = self.eager(b, "matmul")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.matmul((&x, lx), (&y, ly))?))
    }

    fn index(&self, op: IndexOp, x: View, index: View, src: Option<View>) -> Result<Buffer> {
        let (b, l) = self.eager(x, "index")?;
        let (i, li) = self.eager(index, "index")?;
        let s = src.map(|s| self.eager(s, "index")).transpose()?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let out = self.inner.index(op, (&b, l), (&i, li), s.as_ref().map(|(b, l)| (b, *l)))?;
        Ok(self.wrap(out))
    }

    fn im2col(&self, x: View, geom: &WindowGeometry, pad_value: f64) -> Result<Buffer> {
        let (b, l) = self.eager(x, "im2col")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.im2col((&b, l), geom, pad_value)?))
    }

    fn col2im(&self, cols: View, geom: &WindowGeometry) -> Result<Buffer> {
        let (b, l) = self.eager(cols, "col2im")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.inner.col2im((&b, l), geom)?))
    }

    fn run_sequence(&self, f: &mut (dyn FnMut() + Send)) {
        self.inner.run_sequence(f)
    }

    fn fused(&self) -> Option<&dyn FusedKernels> {
        self.inner.fused().map(|_| self as &dyn FusedKernels)
    }

    fn random(&self, op: RngOp, dtype: DType, numel: usize, key: RngKey) -> Result<Buffer> {
        Ok(self.wrap(self.inner.random(op, dtype, numel, key)?))
    }
}
