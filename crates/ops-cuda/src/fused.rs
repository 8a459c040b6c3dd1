//! The CUDA backend's fused kernels (`FusedKernels`, DESIGN.md decision 12), on f32 and f64:
//!
//! - max pooling, batch norm's statistics, backward reductions and per-channel affine step, layer
//!   and RMS norm and their input gradient, and the SGD and Adam/AdamW steps are single kernels ([`crate::kernels::fused`]);
//! - an LSTM sequence runs on the host as one cuBLAS product and one cell kernel per step (the
//!   composed path launches a dozen kernels per step and records them for autograd);
//! - convolution is im2col (or col2im) plus one strided-batched cuBLAS product with the weight
//!   broadcast over the batch; the weight's gradient sums the per-sample products. cuDNN is not
//!   used yet.

use crate::backend::{driver_err, CudaBackend, CudaBuffer};
use crate::kernels::fused::{fused_supported, FusedKernel, FUSED_BLOCK};
use crate::launch::{elementwise_args, raw_operand, window_arg, OperandArg};
use cudarc::cublas::sys as cublas_sys;
use cudarc::driver::{CudaFunction, DevicePtr, LaunchConfig, PushKernelArg};
use ember_storage::{
    AdamStep, Backend, Buffer, DType, ElementwiseProgram, Error, FusedKernels, Layout, ReduceOp, Result, SgdStep, View,
    WindowGeometry,
};
use std::sync::Arc;

impl CudaBackend {
    fn fused_fn(&self, k: FusedKernel, dtype: DType, op: &str) -> Result<CudaFunction> {
        if !fused_supported(dtype) {
            return Err(Error::dtype(op, format!("the fused kernel takes f32 or f64, got {dtype}")));
        }
        self.function("fused", || crate::kernels::fused::module_source().0, &k.name(dtype))
    }

    /// A checked floating view's buffer.
    fn float_operand<'a>(&self, x: View<'a>, op: &str) -> Result<&'a CudaBuffer> {
        self.check(x, op)?;
        let b = self.buffer(x.0, op)?;
        if !fused_supported(b.dtype) {
            return Err(Error::dtype(op, format!("the fused kernel takes f32 or f64, got {}", b.dtype)));
        }
        Ok(b)
    }

    /// The buffers of views that must share `dtype` (each checked).
    fn same_dtype<'a>(&self, views: &[View<'a>], dtype: DType, op: &str) -> Result<Vec<&'a CudaBuffer>> {
        views
            .iter()
            .map(|v| {
                self.check(*v, op)?;
                let b = self.buffer(v.0, op)?;
                if b.dtype != dtype {
                    return Err(Error::dtype(
                        op,
                        format!("operands should share one dtype: {} and {}", dtype, b.dtype),
                    ));
                }
                Ok(b)
            })
            .collect()
    }

    /// A launch of one block of [`FUSED_BLOCK`] threads per channel (grid-stride beyond the device's fill).
    fn per_channel_config(&self, channels: usize) -> LaunchConfig {
        let grid = channels.clamp(1, self.max_blocks as usize) as u32;
        LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (FUSED_BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// The device address of element `at` of `b`.
    fn address(&self, b: &CudaBuffer, at: usize) -> u64 {
        let (p, _sync) = b.data.device_ptr(&self.stream);
        p + (at * b.dtype.size_in_bytes()) as u64
    }

    /// One column-major cuBLAS product `C = op(A) op(B) + beta C` (`C` is `m x n`, leading dim
    /// `ldc`) on device addresses, in `dtype`'s compute type (TF32 for f32 only when allowed).
    #[allow(clippy::too_many_arguments)]
    fn gemm_at(
        &self,
        op: &str,
        dtype: DType,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (u64, usize),
        (b, ldb): (u64, usize),
        beta: f64,
        (c, ldc): (u64, usize),
    ) -> Result<()> {
        let (data_type, compute) = match dtype {
            DType::F64 => (cublas_sys::cudaDataType_t::CUDA_R_64F, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_64F),
            _ if crate::allow_tf32() => {
                (cublas_sys::cudaDataType_t::CUDA_R_32F, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32)
            }
            _ => (cublas_sys::cudaDataType_t::CUDA_R_32F, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
        };
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| Error::unsupported(op, format!("size {v} exceeds cuBLAS's 32-bit sizes")))
        };
        let trans = |t: bool| {
            if t {
                cublas_sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                cublas_sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (a64, b64, a32, b32) = (1f64, beta, 1f32, beta as f32);
        let (alpha, beta): (*const std::ffi::c_void, *const std::ffi::c_void) = if dtype == DType::F64 {
            ((&a64 as *const f64).cast(), (&b64 as *const f64).cast())
        } else {
            ((&a32 as *const f32).cast(), (&b32 as *const f32).cast())
        };
        let guard = self.blas()?;
        let blas = guard.as_ref().expect("blas() creates the handle");
        // SAFETY: the callers pass addresses inside live buffers of this device whose extents cover
        // the matrices described (sizes and leading dims checked by the callers' shape checks);
        // alpha and beta live until the call returns and match the compute type.
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *blas.handle(),
                trans(ta),
                trans(tb),
                int(m)?,
                int(n)?,
                int(k)?,
                alpha,
                a as *const std::ffi::c_void,
                data_type,
                int(lda)?,
                0,
                b as *const std::ffi::c_void,
                data_type,
                int(ldb)?,
                0,
                beta,
                c as *mut std::ffi::c_void,
                data_type,
                int(ldc)?,
                0,
                1,
                compute,
                cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::backend(op, format!("cuBLAS: {e:?}")))
    }

    /// The `[steps, batch, hidden]` of an LSTM sequence from its gates `[T, B, 4H]` and `w_hh`
    /// `[4H, H]`, with the other operands' shapes checked.
    fn lstm_dims(op: &str, gates: &Layout, w_hh: &Layout, states: &[&Layout]) -> Result<(usize, usize, usize)> {
        let (gs, ws) = (gates.shape(), w_hh.shape());
        if gs.len() != 3 || ws.len() != 2 || ws[0] != 4 * ws[1] || gs[2] != ws[0] {
            return Err(Error::shape(
                op,
                format!("gates {gs:?} and recurrent weight {ws:?} do not fit [T, B, 4H] and [4H, H]"),
            ));
        }
        let (t, b, h) = (gs[0], gs[1], ws[1]);
        for s in states {
            let ok = match s.ndim() {
                2 => s.shape() == [b, h],
                _ => s.shape() == [2, t, b, h] || s.shape() == [t, b, 4 * h],
            };
            if !ok {
                return Err(Error::shape(op, format!("operand {:?} does not fit T={t}, B={b}, H={h}", s.shape())));
            }
        }
        Ok((t, b, h))
    }
}

impl CudaBackend {
    /// `(R, K)` of an `[R, K]` view, with the `[K]` and `[R]` operands' shapes checked.
    fn rows_of(op: &str, x: &Layout, per_col: &[Option<View>], per_row: &[View]) -> Result<(usize, usize)> {
        let cols: Vec<Option<&Layout>> = per_col.iter().map(|v| v.map(|v| v.1)).collect();
        let rows: Vec<&Layout> = per_row.iter().map(|v| v.1).collect();
        ember_storage::layer_norm_rows(op, x, &cols, &rows)
    }
}

/// The time index of the `s`-th step of a sequence of `steps`.
fn time(s: usize, steps: usize, reverse: bool) -> usize {
    if reverse {
        steps - 1 - s
    } else {
        s
    }
}

fn i64_of(v: usize) -> i64 {
    v as i64
}

/// The CUDA backend's fused kernels.
impl FusedKernels for CudaBackend {
    fn max_pool2d(&self, x: View, geom: &WindowGeometry) -> Result<(Buffer, Buffer)> {
        const OP: &str = "max_pool2d";
        let src = self.float_operand(x, OP)?;
        if geom.input.len() != 2 || x.1.ndim() != 4 {
            return Err(Error::shape(OP, format!("needs a 4-d input and a 2-d window, got {:?}", x.1.shape())));
        }
        let expect = [geom.batch, geom.channels, geom.input[0], geom.input[1]];
        if x.1.shape() != expect {
            return Err(Error::shape(OP, format!("input {:?} does not match the window's {expect:?}", x.1.shape())));
        }
        let w = window_arg(OP, geom)?;
        let numel = (w.batch * w.channels * w.out_numel) as usize;
        let (vals, idx) = (self.alloc(src.dtype, numel, OP)?, self.alloc(DType::I64, numel, OP)?);
        if numel > 0 {
            let f = self.fused_fn(FusedKernel::MaxPool2d, src.dtype, OP)?;
            let ox = raw_operand(OP, x.1)?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&vals.data).arg(&idx.data).arg(&w).arg(&ox);
            // SAFETY: the input's shape is the window's, so every tap inside the input addresses an
            // element of the checked view; the kernel writes `numel` elements of each output.
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err(OP))?;
        }
        Ok((Arc::new(vals), Arc::new(idx)))
    }

    fn batch_norm_stats(&self, x: View) -> Result<(Buffer, Buffer)> {
        const OP: &str = "batch_norm_stats";
        let src = self.float_operand(x, OP)?;
        let sh = x.1.shape();
        if sh.len() < 2 {
            return Err(Error::shape(OP, format!("expects [N, C, ...], got {sh:?}")));
        }
        let (n, c, l) = (sh[0], sh[1], sh[2..].iter().product::<usize>());
        let (mean, var) = (self.alloc(src.dtype, c, OP)?, self.alloc(src.dtype, c, OP)?);
        if c > 0 {
            let f = self.fused_fn(FusedKernel::BatchNormStats, src.dtype, OP)?;
            let (s, o) = elementwise_args(OP, &[x.1])?;
            let (n, c, l) = (i64_of(n), i64_of(c), i64_of(l));
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&mean.data).arg(&var.data).arg(&s).arg(&o[0]).arg(&n).arg(&c).arg(&l);
            // SAFETY: reads the checked view's elements by their row-major index (below numel);
            // writes `c` elements of each output.
            unsafe { b.launch(self.per_channel_config(c as usize)) }.map_err(driver_err(OP))?;
        }
        Ok((Arc::new(mean), Arc::new(var)))
    }

    fn batch_norm_backward_reduce(&self, g: View, x: View, mean: View) -> Result<(Buffer, Buffer)> {
        const OP: &str = "batch_norm_backward_reduce";
        let xs = self.float_operand(x, OP)?;
        let bufs = self.same_dtype(&[g, mean], xs.dtype, OP)?;
        let sh = x.1.shape();
        if sh.len() < 2 || g.1.shape() != sh {
            return Err(Error::shape(
                OP,
                format!("gradient {:?} and input {sh:?} should be one [N, C, ...] shape", g.1.shape()),
            ));
        }
        let (n, c, l) = (sh[0], sh[1], sh[2..].iter().product::<usize>());
        if mean.1.shape() != [c] {
            return Err(Error::shape(OP, format!("per-channel operand should be [{c}], got {:?}", mean.1.shape())));
        }
        let (sg, sgx) = (self.alloc(xs.dtype, c, OP)?, self.alloc(xs.dtype, c, OP)?);
        if c > 0 {
            let f = self.fused_fn(FusedKernel::BatchNormBackwardReduce, xs.dtype, OP)?;
            let (s, o) = elementwise_args(OP, &[g.1, x.1])?;
            let (m_off, m_st) = (i64_of(mean.1.offset()), i64_of(mean.1.strides()[0]));
            let (n, c, l) = (i64_of(n), i64_of(c), i64_of(l));
            let mut b = self.stream.launch_builder(&f);
            b.arg(&bufs[0].data).arg(&xs.data).arg(&bufs[1].data).arg(&sg.data).arg(&sgx.data);
            b.arg(&s).arg(&o[0]).arg(&o[1]).arg(&m_off).arg(&m_st).arg(&n).arg(&c).arg(&l);
            // SAFETY: reads the checked views (g and x of one shape, mean of [c]); writes `c`
            // elements of each output.
            unsafe { b.launch(self.per_channel_config(c as usize)) }.map_err(driver_err(OP))?;
        }
        Ok((Arc::new(sg), Arc::new(sgx)))
    }

    fn channel_affine(&self, x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer> {
        const OP: &str = "channel_affine";
        let xs = self.float_operand(x, OP)?;
        let sh = x.1.shape();
        if sh.len() < 2 {
            return Err(Error::shape(OP, format!("expects [N, C, ...], got {sh:?}")));
        }
        let (c, l) = (sh[1], sh[2..].iter().product::<usize>());
        let mut views = vec![a, k];
        if let Some((yv, bv)) = y {
            if yv.1.shape() != sh {
                return Err(Error::shape(OP, format!("shapes {sh:?} and {:?} differ", yv.1.shape())));
            }
            views.extend([yv, bv]);
        }
        let bufs = self.same_dtype(&views, xs.dtype, OP)?;
        for v in [Some(a), Some(k), y.map(|p| p.1)].into_iter().flatten() {
            if v.1.shape() != [c] {
                return Err(Error::shape(OP, format!("per-channel operand should be [{c}], got {:?}", v.1.shape())));
            }
        }
        let out = self.alloc(xs.dtype, x.1.numel(), OP)?;
        if x.1.numel() > 0 {
            let f = self.fused_fn(FusedKernel::ChannelAffine, xs.dtype, OP)?;
            let layouts: Vec<&Layout> = match y {
                Some((yv, _)) => vec![x.1, yv.1],
                None => vec![x.1],
            };
            let (s, o) = elementwise_args(OP, &layouts)?;
            let oy: OperandArg = *o.last().expect("one operand at least");
            let per = |v: View| (i64_of(v.1.offset()), i64_of(v.1.strides()[0]));
            let ((a_off, a_st), (k_off, k_st)) = (per(a), per(k));
            let (ybuf, bbuf, (b_off, b_st), has_y) = match y {
                Some((_, bv)) => (bufs[2], bufs[3], per(bv), 1i32),
                None => (xs, bufs[0], (0, 0), 0i32),
            };
            let (c, l) = (i64_of(c), i64_of(l));
            let mut b = self.stream.launch_builder(&f);
            b.arg(&xs.data).arg(&ybuf.data).arg(&bufs[0].data).arg(&bbuf.data).arg(&bufs[1].data).arg(&out.data);
            b.arg(&s).arg(&o[0]).arg(&oy).arg(&a_off).arg(&a_st).arg(&b_off).arg(&b_st).arg(&k_off).arg(&k_st);
            b.arg(&has_y).arg(&c).arg(&l);
            // SAFETY: reads the checked views (x and y of one shape, the per-channel operands of
            // [c]; without y, its pointer is x's and is never read); writes numel elements of `out`.
            unsafe { b.launch(Self::config(x.1.numel(), self.max_blocks)) }.map_err(driver_err(OP))?;
        }
        Ok(Arc::new(out))
    }

    fn layer_norm(
        &self,
        x: View,
        weight: Option<View>,
        bias: Option<View>,
        eps: f64,
        rms: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        const OP: &str = "layer_norm";
        let xs = self.float_operand(x, OP)?;
        let (rows, k) = Self::rows_of(OP, x.1, &[weight, bias], &[])?;
        let per: Vec<View> = [weight, bias].into_iter().flatten().collect();
        let bufs = self.same_dtype(&per, xs.dtype, OP)?;
        let (y, mean, rstd) =
            (self.alloc(xs.dtype, rows * k, OP)?, self.alloc(xs.dtype, rows, OP)?, self.alloc(xs.dtype, rows, OP)?);
        if rows > 0 {
            let f = self.fused_fn(FusedKernel::LayerNorm, xs.dtype, OP)?;
            let (s, o) = elementwise_args(OP, &[x.1])?;
            let col = |v: Option<View>| v.map_or((0, 0), |v| (i64_of(v.1.offset()), i64_of(v.1.strides()[0])));
            let ((w_off, w_st), (b_off, b_st)) = (col(weight), col(bias));
            // absent operands are passed as x's pointer and never read (their flag is unset)
            let mut it = bufs.iter();
            let wb = weight.and_then(|_| it.next()).map_or(&xs.data, |b| &b.data);
            let bb = bias.and_then(|_| it.next()).map_or(&xs.data, |b| &b.data);
            let flags = i32::from(weight.is_some()) | (i32::from(bias.is_some()) << 1) | (i32::from(rms) << 2);
            let (r, kk) = (i64_of(rows), i64_of(k));
            let mut b = self.stream.launch_builder(&f);
            b.arg(&xs.data).arg(wb).arg(bb).arg(&y.data).arg(&mean.data).arg(&rstd.data).arg(&s).arg(&o[0]);
            b.arg(&w_off).arg(&w_st).arg(&b_off).arg(&b_st).arg(&flags).arg(&r).arg(&kk).arg(&eps);
            // SAFETY: reads the checked [R, K] view and [K] weight/bias views; writes R * K elements
            // of `y` and R of `mean` and `rstd`.
            unsafe { b.launch(self.per_channel_config(rows)) }.map_err(driver_err(OP))?;
        }
        Ok((Arc::new(y), Arc::new(mean), Arc::new(rstd)))
    }

    fn layer_norm_backward(
        &self,
        gy: View,
        x: View,
        mean: View,
        rstd: View,
        weight: Option<View>,
        rms: bool,
    ) -> Result<Buffer> {
        const OP: &str = "layer_norm_backward";
        let xs = self.float_operand(x, OP)?;
        let (rows, k) = Self::rows_of(OP, x.1, &[weight], &[mean, rstd])?;
        if gy.1.shape() != x.1.shape() {
            return Err(Error::shape(OP, format!("gradient {:?} and input {:?} differ", gy.1.shape(), x.1.shape())));
        }
        let mut views = vec![gy, mean, rstd];
        views.extend(weight);
        let bufs = self.same_dtype(&views, xs.dtype, OP)?;
        let gx = self.alloc(xs.dtype, rows * k, OP)?;
        if rows > 0 {
            let f = self.fused_fn(FusedKernel::LayerNormBackward, xs.dtype, OP)?;
            let (s, o) = elementwise_args(OP, &[gy.1, x.1])?;
            let per = |v: View| (i64_of(v.1.offset()), i64_of(v.1.strides()[0]));
            let ((m_off, m_st), (r_off, r_st)) = (per(mean), per(rstd));
            let (w_off, w_st) = weight.map_or((0, 0), per);
            let wb = bufs.get(3).map_or(&xs.data, |b| &b.data);
            let flags = i32::from(weight.is_some()) | (i32::from(rms) << 2);
            let (r, kk) = (i64_of(rows), i64_of(k));
            let mut b = self.stream.launch_builder(&f);
            b.arg(&bufs[0].data).arg(&xs.data).arg(&bufs[1].data).arg(&bufs[2].data).arg(wb).arg(&gx.data);
            b.arg(&s).arg(&o[0]).arg(&o[1]).arg(&m_off).arg(&m_st).arg(&r_off).arg(&r_st).arg(&w_off).arg(&w_st);
            b.arg(&flags).arg(&r).arg(&kk);
            // SAFETY: reads the checked views (gy and x of [R, K], mean and rstd of [R], weight of
            // [K] when flagged); writes R * K elements of `gx`.
            unsafe { b.launch(self.per_channel_config(rows)) }.map_err(driver_err(OP))?;
        }
        Ok(Arc::new(gx))
    }

    fn conv2d(&self, x: View, w: View, geom: &WindowGeometry) -> Result<Buffer> {
        const OP: &str = "conv2d";
        let xs = self.float_operand(x, OP)?;
        self.same_dtype(&[w], xs.dtype, OP)?;
        let ck = geom.channels * geom.kernel_numel();
        let (n, oc) = (geom.batch, w.1.shape().first().copied().unwrap_or(0));
        if w.1.shape() != [oc, ck] {
            return Err(Error::shape(OP, format!("weight {:?} should be [OC, {ck}]", w.1.shape())));
        }
        let l: usize =
            geom.output().ok_or_else(|| Error::invalid(OP, format!("window {geom:?} does not fit")))?.iter().product();
        let cols = self.im2col(x, geom, 0.0)?;
        let wb = w.1.unsqueeze(0)?.expand(&[n, oc, ck])?;
        self.matmul((w.0, &wb), (&cols, &Layout::contiguous(&[n, ck, l])))
    }

    fn conv2d_backward(
        &self,
        x: View,
        w: View,
        gy: View,
        geom: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        const OP: &str = "conv2d_backward";
        let xs = self.float_operand(x, OP)?;
        self.same_dtype(&[w, gy], xs.dtype, OP)?;
        let ck = geom.channels * geom.kernel_numel();
        let (n, oc) = (geom.batch, w.1.shape().first().copied().unwrap_or(0));
        let l: usize =
            geom.output().ok_or_else(|| Error::invalid(OP, format!("window {geom:?} does not fit")))?.iter().product();
        if w.1.shape() != [oc, ck] || gy.1.shape() != [n, oc, l] {
            return Err(Error::shape(
                OP,
                format!(
                    "weight {:?} and output gradient {:?} should be [OC, {ck}] and [{n}, OC, {l}]",
                    w.1.shape(),
                    gy.1.shape()
                ),
            ));
        }
        let gx = if need.0 {
            let wt = w.1.transpose(0, 1)?.unsqueeze(0)?.expand(&[n, ck, oc])?;
            let cols = self.matmul((w.0, &wt), gy)?;
            Some(self.col2im((&cols, &Layout::contiguous(&[n, ck, l])), geom)?)
        } else {
            None
        };
        let gw = if need.1 {
            let cols = self.im2col(x, geom, 0.0)?;
            let cols_t = Layout::contiguous(&[n, ck, l]).transpose(1, 2)?;
            let per_sample = self.matmul(gy, (&cols, &cols_t))?;
            Some(self.reduce(ReduceOp::Sum, (&per_sample, &Layout::contiguous(&[n, oc, ck])), &[0])?)
        } else {
            None
        };
        Ok((gx, gw))
    }

    fn lstm_sequence(&self, gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)> {
        const OP: &str = "lstm_sequence";
        let dtype = self.float_operand(gi, OP)?.dtype;
        self.same_dtype(&[h0, c0, w_hh], dtype, OP)?;
        let (steps, batch, hidden) = Self::lstm_dims(OP, gi.1, w_hh.1, &[h0.1, c0.1])?;
        // the gates start as the input projections; each step adds its product and activates them
        let gates = self.gather(gi, dtype, OP)?;
        let (h0, c0, w) = (self.gather(h0, dtype, OP)?, self.gather(c0, dtype, OP)?, self.gather(w_hh, dtype, OP)?);
        let plane = steps * batch * hidden;
        let y = self.alloc(dtype, 2 * plane, OP)?;
        if plane > 0 {
            let f = self.fused_fn(FusedKernel::LstmCell, dtype, OP)?;
            let (bh, row) = (batch * hidden, batch * 4 * hidden);
            for s in 0..steps {
                let t = time(s, steps, reverse);
                let prev = (s > 0).then(|| time(s - 1, steps, reverse));
                let h_prev = match prev {
                    None => self.address(&h0, 0),
                    Some(p) => self.address(&y, p * bh),
                };
                // gates[t] (column-major [4H, B]) += W_hh (row-major [4H, H], read transposed) · h_prevᵀ
                self.gemm_at(
                    OP,
                    dtype,
                    (true, false),
                    (4 * hidden, batch, hidden),
                    (self.address(&w, 0), hidden),
                    (h_prev, hidden),
                    1.0,
                    (self.address(&gates, t * row), 4 * hidden),
                )?;
                let (t, prev) = (i64_of(t), prev.map_or(-1, i64_of));
                let (b, h, pl) = (i64_of(batch), i64_of(hidden), i64_of(plane));
                let mut l = self.stream.launch_builder(&f);
                l.arg(&gates.data).arg(&c0.data).arg(&y.data).arg(&t).arg(&prev).arg(&b).arg(&h).arg(&pl);
                // SAFETY: the dense gates [T, B, 4H], c0 [B, H] and y [2, T, B, H] hold every row
                // the kernel addresses for t, prev < T; one thread per (row, unit) element.
                unsafe { l.launch(Self::config(bh, self.max_blocks)) }.map_err(driver_err(OP))?;
            }
        }
        Ok((Arc::new(y), Arc::new(gates)))
    }

    fn lstm_sequence_backward(
        &self,
        gates: View,
        y: View,
        c0: View,
        w_hh: View,
        gy: View,
        reverse: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        const OP: &str = "lstm_sequence_backward";
        let dtype = self.float_operand(gates, OP)?.dtype;
        self.same_dtype(&[y, c0, w_hh, gy], dtype, OP)?;
        let (steps, batch, hidden) = Self::lstm_dims(OP, gates.1, w_hh.1, &[y.1, c0.1, gy.1])?;
        if y.1.shape() != [2, steps, batch, hidden] || gy.1.shape() != y.1.shape() {
            return Err(Error::shape(
                OP,
                format!("states {:?} and their gradient {:?} should be [2, T, B, H]", y.1.shape(), gy.1.shape()),
            ));
        }
        let dense = |v: View| self.gather(v, dtype, OP);
        let (gates, y, c0, w, gy) = (dense(gates)?, dense(y)?, dense(c0)?, dense(w_hh)?, dense(gy)?);
        let plane = steps * batch * hidden;
        let dpre = self.alloc(dtype, 4 * plane, OP)?;
        let (bh, row) = (batch * hidden, batch * 4 * hidden);
        if plane == 0 {
            let zeros = || self.full(ember_storage::Scalar::F(0.0), dtype, bh);
            return Ok((Arc::new(dpre), zeros()?, zeros()?));
        }
        let (dh, dc) = (self.alloc(dtype, bh, OP)?, self.alloc(dtype, bh, OP)?);
        let f = self.fused_fn(FusedKernel::LstmCellBackward, dtype, OP)?;
        for s in 0..steps {
            // backwards through the forward's steps: its step `steps - 1 - s`
            let fwd = steps - 1 - s;
            let t = time(fwd, steps, reverse);
            let prev = (fwd > 0).then(|| time(fwd - 1, steps, reverse));
            let (ti, prev) = (i64_of(t), prev.map_or(-1, i64_of));
            let (b, h, pl, carry) = (i64_of(batch), i64_of(hidden), i64_of(plane), i32::from(s > 0));
            let mut l = self.stream.launch_builder(&f);
            l.arg(&gates.data).arg(&y.data).arg(&c0.data).arg(&gy.data).arg(&dpre.data).arg(&dh.data).arg(&dc.data);
            l.arg(&ti).arg(&prev).arg(&b).arg(&h).arg(&pl).arg(&carry);
            // SAFETY: dense operands of the checked shapes hold every row addressed for t, prev < T;
            // dh and dc ([B, H]) are read only with `carry`, after a step wrote them.
            unsafe { l.launch(Self::config(bh, self.max_blocks)) }.map_err(driver_err(OP))?;
            // the gradient carried to the step before: dh (column-major [H, B]) = W_hhᵀ · dpre[t]ᵀ
            self.gemm_at(
                OP,
                dtype,
                (false, false),
                (hidden, batch, 4 * hidden),
                (self.address(&w, 0), hidden),
                (self.address(&dpre, t * row), 4 * hidden),
                0.0,
                (self.address(&dh, 0), hidden),
            )?;
        }
        Ok((Arc::new(dpre), Arc::new(dh), Arc::new(dc)))
    }

    fn sgd_step(&self, param: View, grad: View, momentum_buffer: Option<View>, s: &SgdStep) -> Result<()> {
        const OP: &str = "sgd_step";
        let mut views = vec![param, grad];
        views.extend(momentum_buffer);
        let (bufs, starts, n) = self.step_operands(&views, OP)?;
        if n == 0 {
            return Ok(());
        }
        let f = self.fused_fn(FusedKernel::SgdStep, bufs[0].dtype, OP)?;
        let ptrs: Vec<u64> = bufs.iter().zip(&starts).map(|(b, &at)| self.address(b, at)).collect();
        let buf_ptr = ptrs.get(2).copied().unwrap_or(ptrs[0]);
        let flags = i32::from(s.maximize)
            | (i32::from(momentum_buffer.is_some()) << 1)
            | (i32::from(s.first) << 2)
            | (i32::from(s.nesterov) << 3);
        let n = i64_of(n);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&ptrs[0]).arg(&ptrs[1]).arg(&buf_ptr).arg(&n);
        b.arg(&s.lr).arg(&s.weight_decay).arg(&s.momentum).arg(&s.dampening).arg(&flags);
        // SAFETY: the views are checked, contiguous, of `n` elements each, in distinct buffers;
        // without a momentum buffer (flag unset) its pointer is the parameter's and is never used.
        unsafe { b.launch(Self::config(n as usize, self.max_blocks)) }.map_err(driver_err(OP))?;
        Ok(())
    }

    fn adam_step(&self, param: View, grad: View, exp_avg: View, exp_avg_sq: View, s: &AdamStep) -> Result<()> {
        const OP: &str = "adam_step";
        let (bufs, starts, n) = self.step_operands(&[param, grad, exp_avg, exp_avg_sq], OP)?;
        if n == 0 {
            return Ok(());
        }
        let f = self.fused_fn(FusedKernel::AdamStep, bufs[0].dtype, OP)?;
        let ptrs: Vec<u64> = bufs.iter().zip(&starts).map(|(b, &at)| self.address(b, at)).collect();
        // the host side of ops-cpu's adam_loop: bias corrections and decay factors in f64
        let t = s.step as f64;
        let (b1, b2) = s.betas;
        let step_size = s.lr / (1.0 - b1.powf(t));
        let bc2_sqrt = (1.0 - b2.powf(t)).sqrt();
        let decay = if s.decoupled { 1.0 - s.lr * s.weight_decay } else { 1.0 };
        let l2 = if s.decoupled { 0.0 } else { s.weight_decay };
        let (n, maximize) = (i64_of(n), i32::from(s.maximize));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&ptrs[0]).arg(&ptrs[1]).arg(&ptrs[2]).arg(&ptrs[3]).arg(&n);
        b.arg(&step_size).arg(&bc2_sqrt).arg(&decay).arg(&l2).arg(&b1).arg(&b2).arg(&s.eps).arg(&maximize);
        // SAFETY: the views are checked, contiguous, of `n` elements each, in distinct buffers.
        unsafe { b.launch(Self::config(n as usize, self.max_blocks)) }.map_err(driver_err(OP))?;
        Ok(())
    }

    fn elementwise(&self, program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>> {
        crate::program::run(self, program, inputs)
    }
}

impl CudaBackend {
    /// The buffers and first elements of an optimizer step's views: each checked, contiguous, of
    /// one floating dtype and size, in pairwise distinct buffers.
    fn step_operands<'a>(&self, views: &[View<'a>], op: &str) -> Result<(Vec<&'a CudaBuffer>, Vec<usize>, usize)> {
        let dtype = self.float_operand(views[0], op)?.dtype;
        let bufs = self.same_dtype(views, dtype, op)?;
        let mut starts = vec![];
        let n = views[0].1.numel();
        for (i, v) in views.iter().enumerate() {
            let (start, end) =
                v.1.contiguous_range()
                    .ok_or_else(|| Error::invalid(op, "fused optimizer steps take contiguous tensors"))?;
            if end - start != n {
                return Err(Error::shape(op, format!("tensors of {n} and {} elements", end - start)));
            }
            if bufs[..i].iter().any(|b| std::ptr::eq(*b, bufs[i])) {
                return Err(Error::invalid(op, "fused optimizer steps take tensors with distinct storages"));
            }
            starts.push(start);
        }
        Ok((bufs, starts, n))
    }
}
