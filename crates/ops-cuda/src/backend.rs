//! [`CudaBackend`]: Ember's `Backend` on one NVIDIA GPU through cudarc's driver API.
//!
//! One stream per device; kernels are generated from the op table ([`crate::kernels`]), compiled by
//! NVRTC for the device's architecture on first use (cached per process and on disk) and launched
//! with strided operands passed by value. Every read back to the host synchronises the stream; a
//! CUDA error becomes an `Error` naming the op.
//!
//! Every `Backend` op runs on the device: upload/download, fill, casts between all dtypes,
//! strided assignment, the elementwise op table (see [`crate::kernels::elementwise`] for which rows
//! run on integer dtypes), `where`, reductions, scans, a stable merge sort, softmax/log_softmax,
//! matmul (cuBLAS for floats, with TF32 only when [`crate::set_allow_tf32`] allows it; a kernel for
//! integers), the indexing ops (indices checked on the device, see [`crate::kernels::index`]),
//! im2col/col2im and the Philox RNG. `Backend::fused` offers every fused kernel (see `fused.rs`):
//! max pooling, batch norm, LSTM sequences, optimizer steps, and convolution as im2col + cuBLAS.

use crate::host::{from_bytes, to_bytes};
use crate::indexing::{self, IndexKernel};
use crate::kernels::{elementwise, index, matmul_int, movement, random, reduce, scan, sort, window};
use crate::launch::{
    elementwise_args, grid_for, matrix_batch, raw_operand, reduce_view, window_arg, OperandArg, ShapeArg, WindowArg,
    BLOCK,
};
use crate::memory::{self, MemoryStats};
use crate::nvrtc;
use crate::staging::Staging;
use cudarc::cublas::{sys as cublas_sys, CudaBlas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use ember_storage::{
    Backend, BinaryOp, Buffer, DType, Device, DeviceBuffer, Error, FusedKernels, HostData, IndexOp, Layout, ReduceOp,
    Result, RngKey, RngOp, Scalar, ScanOp, UnaryOp, View, WindowGeometry,
};
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

// SAFETY: both are #[repr(C)] structs of integers, laid out as the prelude's ember_shape and
// ember_operand, and passed to kernels by value.
unsafe impl DeviceRepr for ShapeArg {}
// SAFETY: as above.
unsafe impl DeviceRepr for OperandArg {}
// SAFETY: a #[repr(C)] struct of integers laid out as the window kernels' ember_window.
unsafe impl DeviceRepr for WindowArg {}

/// Device memory holding `len` elements of `dtype`.
#[derive(Debug)]
pub struct CudaBuffer {
    pub(crate) data: CudaSlice<u8>,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    ordinal: usize,
    stats: Arc<MemoryStats>,
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        // the slice returns its memory to the stream-ordered pool as it drops
        self.stats.sub(self.data.len());
    }
}

impl DeviceBuffer for CudaBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The CUDA backend of one device.
#[derive(Debug)]
pub struct CudaBackend {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    arch: String,
    pub(crate) max_blocks: u32,
    modules: Mutex<HashMap<String, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    blas: Mutex<Option<CudaBlas>>,
    stats: Arc<MemoryStats>,
    staging: Staging,
}

impl CudaBackend {
    /// Integer products (`U8`, `I32`, `I64`): one thread per output element, wrapping in 64 bits.
    fn matmul_int(&self, a: View, b: View) -> Result<Buffer> {
        let (x, y) = (self.buffer(a.0, "matmul")?, self.buffer(b.0, "matmul")?);
        let (la, lb) = (a.1, b.1);
        let nd = la.ndim();
        let (m, k, n) = (la.shape()[nd - 2], la.shape()[nd - 1], lb.shape()[nd - 1]);
        let (batch_a, a_rs, a_cs) = matrix_batch("matmul", la)?;
        let (batch_b, b_rs, b_cs) = matrix_batch("matmul", lb)?;
        let numel = batch_a.numel() * m * n;
        let out = self.alloc(x.dtype, numel, "matmul")?;
        if numel > 0 {
            let f =
                self.function("matmul_int", || matmul_int::module_source().0, &matmul_int::matmul_int_name(x.dtype))?;
            let (s, o) = elementwise_args("matmul", &[&batch_a, &batch_b])?;
            let (m, n, k) = (m as i64, n as i64, k as i64);
            let mut l = self.stream.launch_builder(&f);
            l.arg(&x.data).arg(&y.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&o[1]).arg(&m).arg(&n).arg(&k);
            l.arg(&a_rs).arg(&a_cs).arg(&b_rs).arg(&b_cs);
            // SAFETY: reads only elements of the checked views (batch offsets plus row/column
            // strides inside their shapes); writes the `numel` dense output elements.
            unsafe { l.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("matmul"))?;
        }
        Ok(Arc::new(out))
    }
}

pub(crate) fn driver_err(op: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::backend(op, format!("CUDA: {e}"))
}

impl CudaBackend {
    /// The backend of GPU `ordinal`: fails with a clear error when the CUDA driver or the device is
    /// missing (see [`crate::is_available`]).
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        crate::require_driver()?;
        let count = crate::device_count();
        if ordinal >= count {
            return Err(Error::device("cuda", format!("cuda:{ordinal} does not exist ({count} CUDA devices)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("cuda init"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver_err("cuda init"))?;
        let arch = format!("sm_{major}{minor}");
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver_err("cuda init"))?;
        let stream = ctx.default_stream();
        // SAFETY: every buffer of this backend is allocated, used and freed on its one stream, so
        // cudarc's per-buffer events (which order uses across streams) are not needed.
        unsafe { ctx.disable_event_tracking() };
        memory::keep_freed_memory_cached(&ctx)?;
        Ok(CudaBackend {
            ordinal,
            ctx,
            stream,
            arch,
            max_blocks: (sms.max(1) as u32) * 32,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
            stats: Arc::new(MemoryStats::default()),
            staging: Staging::default(),
        })
    }

    /// Bytes held by this device's live tensors (`torch.cuda.memory_allocated`).
    pub fn memory_allocated(&self) -> usize {
        self.stats.allocated()
    }

    /// The most bytes held at once since the start or the last reset (`torch.cuda.max_memory_allocated`).
    pub fn max_memory_allocated(&self) -> usize {
        self.stats.peak()
    }

    /// Restarts peak tracking from what is held now (`torch.cuda.reset_peak_memory_stats`).
    pub fn reset_peak_memory_stats(&self) {
        self.stats.reset_peak()
    }

    /// Bytes the device's memory pool has reserved from the driver (`torch.cuda.memory_reserved`):
    /// live tensors plus cached free blocks.
    pub fn memory_reserved(&self) -> Result<usize> {
        memory::pool_reserved_bytes(&self.ctx)
    }

    /// Returns the pool's cached free blocks to the driver (`torch.cuda.empty_cache`), after the
    /// stream's pending work.
    pub fn empty_cache(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("empty_cache"))?;
        memory::trim_pool(&self.ctx)
    }

    /// Waits for every op queued on the device (`torch.cuda.synchronize`): ops return as soon as
    /// their kernels are queued, so timing them needs this.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver_err("synchronize"))
    }

    /// The GPU's ordinal (`cuda:N`).
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// Makes this device current on the calling thread (libraries such as NCCL use the current
    /// device).
    pub fn bind_to_thread(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(driver_err("bind_to_thread"))
    }

    /// The device's architecture, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The kernel `name` of module `module` (compiled from `source()` on first use).
    pub(crate) fn function(&self, module: &str, source: impl FnOnce() -> String, name: &str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().expect("kernel cache").get(name) {
            return Ok(f.clone());
        }
        let m = {
            let mut modules = self.modules.lock().expect("module cache");
            match modules.get(module) {
                Some(m) => m.clone(),
                None => {
                    let cubin = nvrtc::compile_cached(&source(), module, &self.arch)?;
                    let m = self
                        .ctx
                        .load_module(cudarc::nvrtc::Ptx::from_binary(cubin.image))
                        .map_err(driver_err(module))?;
                    modules.insert(module.to_string(), m.clone());
                    m
                }
            }
        };
        let f = m.load_function(name).map_err(driver_err(name))?;
        self.functions.lock().expect("kernel cache").insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// The cuBLAS handle on this backend's stream, created on first use.
    pub(crate) fn blas(&self) -> Result<std::sync::MutexGuard<'_, Option<CudaBlas>>> {
        let mut guard = self.blas.lock().expect("cuBLAS handle");
        if guard.is_none() {
            // SAFETY: only tries to open the library by its candidate names.
            if !unsafe { cublas_sys::is_culib_present() } {
                return Err(Error::unsupported("matmul", "cuBLAS (libcublas.so) was not found on the library path"));
            }
            *guard = Some(
                CudaBlas::new(self.stream.clone()).map_err(|e| Error::backend("matmul", format!("cuBLAS: {e:?}")))?,
            );
        }
        Ok(guard)
    }

    fn elementwise_fn(&self, dtype: DType, name: &str) -> Result<CudaFunction> {
        let module = format!("elementwise_{}", crate::kernels::dtype::cuda_type(dtype).suffix);
        self.function(&module, || elementwise::module_source(dtype).0, name)
    }

    fn movement_fn(&self, name: &str) -> Result<CudaFunction> {
        self.function("movement", || movement::module_source().0, name)
    }

    pub(crate) fn buffer<'a>(&self, x: &'a Buffer, op: &str) -> Result<&'a CudaBuffer> {
        x.as_any()
            .downcast_ref::<CudaBuffer>()
            .filter(|b| b.ordinal == self.ordinal)
            .ok_or_else(|| Error::device(op, format!("expected a tensor on cuda:{}, got {}", self.ordinal, x.device())))
    }

    pub(crate) fn alloc(&self, dtype: DType, len: usize, op: &str) -> Result<CudaBuffer> {
        let bytes = len.checked_mul(dtype.size_in_bytes()).ok_or_else(|| Error::out_of_memory(op, usize::MAX))?;
        // SAFETY: u8 has no invalid bit patterns; every byte is written by the kernel that
        // produces the buffer before anything reads it.
        let data = unsafe { self.stream.alloc::<u8>(bytes.max(1).next_multiple_of(8)) }
            .map_err(|_| Error::out_of_memory(op, bytes))?;
        self.stats.add(data.len());
        Ok(CudaBuffer { data, dtype, len, ordinal: self.ordinal, stats: self.stats.clone() })
    }

    pub(crate) fn config(numel: usize, max_blocks: u32) -> LaunchConfig {
        LaunchConfig { grid_dim: (grid_for(numel, max_blocks), 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    pub(crate) fn check(&self, x: View, op: &str) -> Result<()> {
        let b = self.buffer(x.0, op)?;
        x.1.check_fits(b.len, op)
    }

    /// A dense copy of `x` in `dtype` (the cast kernel also gathers strided views).
    pub(crate) fn gather(&self, x: View, dtype: DType, op: &str) -> Result<CudaBuffer> {
        self.check(x, op)?;
        let src = self.buffer(x.0, op)?;
        let out = self.alloc(dtype, x.1.numel(), op)?;
        if x.1.numel() == 0 {
            return Ok(out);
        }
        let f = self.movement_fn(&movement::cast_name(src.dtype, dtype))?;
        let (s, o) = elementwise_args(op, &[x.1])?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&src.data).arg(&out.data).arg(&s).arg(&o[0]);
        // SAFETY: the kernel reads `src` only at the offsets `o` addresses, which check_fits
        // validated, and writes `numel` elements of `out`, which holds that many.
        unsafe { b.launch(Self::config(x.1.numel(), self.max_blocks)) }.map_err(driver_err(op))?;
        Ok(out)
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn upload(&self, data: HostData) -> Result<Buffer> {
        let (dtype, len) = (data.dtype(), data.len());
        let bytes = to_bytes(&data);
        let mut out = self.alloc(dtype, len, "to")?;
        if !bytes.is_empty() {
            // mid-sized uploads (a batch of data) go through pinned memory, asynchronously
            let staged = {
                let (dst, _sync) = out.data.device_ptr(&self.stream);
                self.staging.upload(&self.ctx, &self.stream, &bytes, dst)?
            };
            if !staged {
                self.stream.memcpy_htod(&bytes, &mut out.data).map_err(driver_err("to"))?;
            }
        }
        Ok(Arc::new(out))
    }

    fn download(&self, x: View) -> Result<HostData> {
        self.check(x, "to")?;
        let src = self.buffer(x.0, "to")?;
        let dtype = src.dtype;
        // a contiguous view is copied as it is; others are gathered to dense on the device first
        let (staged, start) = match x.1.contiguous_range() {
            Some((start, _)) => (None, start),
            None => (Some(self.gather(x, dtype, "to")?), 0),
        };
        let data = staged.as_ref().map_or(&src.data, |s| &s.data);
        let (size, n) = (dtype.size_in_bytes(), x.1.numel() * dtype.size_in_bytes());
        let mut bytes = vec![0u8; n];
        if n > 0 {
            let view = data.slice(start * size..start * size + n);
            self.stream.memcpy_dtoh(&view, &mut bytes).map_err(driver_err("to"))?;
        }
        self.stream.synchronize().map_err(driver_err("to"))?;
        Ok(from_bytes(dtype, &bytes))
    }

    fn full(&self, value: Scalar, dtype: DType, numel: usize) -> Result<Buffer> {
        let out = self.alloc(dtype, numel, "full")?;
        if numel > 0 {
            let f = self.movement_fn(&movement::fill_name(dtype))?;
            let (fv, iv) = match value {
                Scalar::F(v) => (v, v as i64),
                Scalar::I(v) => (v as f64, v),
                Scalar::B(v) => (f64::from(u8::from(v)), i64::from(v)),
            };
            let n = numel as i64;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&out.data).arg(&n).arg(&fv).arg(&iv);
            // SAFETY: the kernel writes `numel` elements of `out`, which holds that many.
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("full"))?;
        }
        Ok(Arc::new(out))
    }

    fn cast(&self, x: View, dtype: DType) -> Result<Buffer> {
        Ok(Arc::new(self.gather(x, dtype, "to_dtype")?))
    }

    fn assign(&self, dst: View, src: View) -> Result<()> {
        self.check(dst, "copy_")?;
        self.check(src, "copy_")?;
        let (d, s) = (self.buffer(dst.0, "copy_")?, self.buffer(src.0, "copy_")?);
        if dst.1.shape() != src.1.shape() || d.dtype != s.dtype {
            return Err(Error::shape(
                "copy_",
                format!(
                    "destination {:?} {} and source {:?} {} differ",
                    dst.1.shape(),
                    d.dtype,
                    src.1.shape(),
                    s.dtype
                ),
            ));
        }
        if dst.1.numel() == 0 {
            return Ok(());
        }
        // a source that shares the destination's memory is copied out first
        let staged;
        let (s, src_layout) = if std::ptr::eq(d, s) {
            staged = self.gather(src, s.dtype, "copy_")?;
            (&staged, Layout::contiguous(src.1.shape()))
        } else {
            (s, src.1.clone())
        };
        let f = self.movement_fn(&movement::copy_name(d.dtype))?;
        let (shape, o) = elementwise_args("copy_", &[&src_layout, dst.1])?;
        let (src_ptr, _r) = s.data.device_ptr(&self.stream);
        let (dst_ptr, _w) = d.data.device_ptr(&self.stream);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&src_ptr).arg(&dst_ptr).arg(&shape).arg(&o[0]).arg(&o[1]);
        // SAFETY: both layouts were checked against their buffers; the kernel writes only the
        // destination's addressed elements (distinct, as a validated view's are) and reads a
        // source that does not alias them.
        unsafe { b.launch(Self::config(dst.1.numel(), self.max_blocks)) }.map_err(driver_err("copy_"))?;
        Ok(())
    }

    fn unary(&self, op: UnaryOp, x: View) -> Result<Buffer> {
        self.check(x, op.name())?;
        let src = self.buffer(x.0, op.name())?;
        if !elementwise::unary_supported(op, src.dtype) {
            return Err(Error::unsupported(op.name(), format!("no CUDA kernel for {} yet", src.dtype)));
        }
        let out_dtype = if op.is_predicate() { DType::Bool } else { src.dtype };
        let out = self.alloc(out_dtype, x.1.numel(), op.name())?;
        if x.1.numel() > 0 {
            let f = self.elementwise_fn(src.dtype, &elementwise::unary_name(op, src.dtype))?;
            let (s, o) = elementwise_args(op.name(), &[x.1])?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&out.data).arg(&s).arg(&o[0]);
            // SAFETY: reads only the checked view of `src`, writes `numel` elements of `out`.
            unsafe { b.launch(Self::config(x.1.numel(), self.max_blocks)) }.map_err(driver_err(op.name()))?;
        }
        Ok(Arc::new(out))
    }

    fn binary(&self, op: BinaryOp, a: View, b: View) -> Result<Buffer> {
        self.check(a, op.name())?;
        self.check(b, op.name())?;
        let (x, y) = (self.buffer(a.0, op.name())?, self.buffer(b.0, op.name())?);
        if x.dtype != y.dtype {
            return Err(Error::dtype(op.name(), format!("operands are {} and {}", x.dtype, y.dtype)));
        }
        if !elementwise::binary_supported(op, x.dtype) {
            return Err(Error::unsupported(op.name(), format!("no CUDA kernel for {} yet", x.dtype)));
        }
        if matches!(op, BinaryOp::Remainder | BinaryOp::FloorDivide) && !x.dtype.is_float() {
            // integer division by zero has no defined result on the GPU: check on the host
            let divisor = self.download(b)?;
            if ember_storage::with_host_data!(&divisor, v => v.iter().any(|e| *e == Default::default())) {
                return Err(Error::invalid(op.name(), "integer division by zero"));
            }
        }
        let out_dtype = if op.is_predicate() { DType::Bool } else { x.dtype };
        let out = self.alloc(out_dtype, a.1.numel(), op.name())?;
        if a.1.numel() > 0 {
            let f = self.elementwise_fn(x.dtype, &elementwise::binary_name(op, x.dtype))?;
            let (s, o) = elementwise_args(op.name(), &[a.1, b.1])?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(&x.data).arg(&y.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&o[1]);
            // SAFETY: reads only the checked views, writes `numel` elements of `out`.
            unsafe { l.launch(Self::config(a.1.numel(), self.max_blocks)) }.map_err(driver_err(op.name()))?;
        }
        Ok(Arc::new(out))
    }

    fn where_cond(&self, cond: View, a: View, b: View) -> Result<Buffer> {
        for v in [cond, a, b] {
            self.check(v, "where")?;
        }
        let (c, x, y) = (self.buffer(cond.0, "where")?, self.buffer(a.0, "where")?, self.buffer(b.0, "where")?);
        if c.dtype != DType::Bool || x.dtype != y.dtype {
            return Err(Error::dtype(
                "where",
                format!(
                    "condition must be bool and the values of one dtype, got {}, {}, {}",
                    c.dtype, x.dtype, y.dtype
                ),
            ));
        }
        let out = self.alloc(x.dtype, a.1.numel(), "where")?;
        if a.1.numel() > 0 {
            let f = self.movement_fn(&movement::where_name(x.dtype))?;
            let (s, o) = elementwise_args("where", &[cond.1, a.1, b.1])?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(&c.data).arg(&x.data).arg(&y.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&o[1]).arg(&o[2]);
            // SAFETY: reads only the three checked views (one shape), writes `numel` elements of `out`.
            unsafe { l.launch(Self::config(a.1.numel(), self.max_blocks)) }.map_err(driver_err("where"))?;
        }
        Ok(Arc::new(out))
    }
    fn reduce(&self, op: ReduceOp, x: View, dims: &[usize]) -> Result<Buffer> {
        self.check(x, "reduce")?;
        let src = self.buffer(x.0, "reduce")?;
        if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) && dims.len() != 1 {
            return Err(Error::invalid("argmax", format!("reduces exactly one dim, got {dims:?}")));
        }
        let (permuted, rows, k) = reduce_view("reduce", x.1, dims)?;
        let out = self.alloc(reduce::output_dtype(op, src.dtype), rows, "reduce")?;
        if rows > 0 {
            let name = reduce::reduce_name(op, src.dtype);
            let f = self.function("reduce", || reduce::module_source().0, &name)?;
            let (s, o) = elementwise_args("reduce", &[&permuted])?;
            let (rows_i, k_i) = (rows as i64, k as i64);
            let cfg = LaunchConfig {
                grid_dim: (rows.min(self.max_blocks as usize) as u32, 1, 1),
                block_dim: (reduce::REDUCE_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&rows_i).arg(&k_i);
            // SAFETY: reads only the checked view of `src` (permuted, same elements), writes `rows`
            // elements of `out`; the block size is the one the kernel's shared arrays are sized for.
            unsafe { b.launch(cfg) }.map_err(driver_err(&name))?;
        }
        Ok(Arc::new(out))
    }
    fn scan(&self, op: ScanOp, x: View, dim: usize) -> Result<(Buffer, Option<Buffer>)> {
        self.check(x, "scan")?;
        let src = self.buffer(x.0, "scan")?;
        if x.1.ndim() == 0 {
            // a 0-d tensor is one row of one element
            return self.scan(op, (x.0, &x.1.unsqueeze(0)?), dim);
        }
        let (permuted, rows, k) = reduce_view("scan", x.1, &[dim])?;
        let (dense, _, _) = reduce_view("scan", &Layout::contiguous(x.1.shape()), &[dim])?;
        let out = self.alloc(src.dtype, x.1.numel(), "scan")?;
        let idx = if scan::has_indices(op) { Some(self.alloc(DType::I64, x.1.numel(), "scan")?) } else { None };
        if rows > 0 && k > 0 {
            let name = scan::scan_name(op, src.dtype);
            let f = self.function("scan", || scan::module_source().0, &name)?;
            let (s, o) = elementwise_args("scan", &[&permuted, &dense])?;
            let (rows_i, k_i) = (rows as i64, k as i64);
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&out.data);
            if let Some(i) = &idx {
                b.arg(&i.data);
            }
            b.arg(&s).arg(&o[0]).arg(&o[1]).arg(&rows_i).arg(&k_i);
            // SAFETY: reads only the checked view; writes each of the `numel` dense output (and
            // index) elements once through the permuted dense layout, a bijection onto them.
            unsafe { b.launch(Self::config(rows, self.max_blocks)) }.map_err(driver_err(&name))?;
        }
        Ok((Arc::new(out), idx.map(|i| Arc::new(i) as Buffer)))
    }
    fn sort(&self, x: View, dim: usize, descending: bool, _stable: bool) -> Result<(Buffer, Buffer)> {
        // every sort here is stable (a merge sort)
        self.check(x, "sort")?;
        let src = self.buffer(x.0, "sort")?;
        if x.1.ndim() == 0 {
            return self.sort((x.0, &x.1.unsqueeze(0)?), dim, descending, true);
        }
        let numel = x.1.numel();
        let (permuted, _, k) = reduce_view("sort", x.1, &[dim])?;
        let (dense, _, _) = reduce_view("sort", &Layout::contiguous(x.1.shape()), &[dim])?;
        let (values, indices) = (self.alloc(src.dtype, numel, "sort")?, self.alloc(DType::I64, numel, "sort")?);
        if numel == 0 {
            return Ok((Arc::new(values), Arc::new(indices)));
        }
        let widths = sort::merge_widths(k);
        let init = self.function("sort", || sort::module_source().0, &sort::init_name(src.dtype))?;
        let merge = self.function("sort", || sort::module_source().0, &sort::merge_name(src.dtype))?;
        let rows_layout = Layout::contiguous(permuted.shape());
        // ping-pong buffers for the passes before the last, which writes `values` and `indices`
        let mut scratch = vec![];
        for _ in 0..widths.len().min(2) {
            scratch.push((self.alloc(src.dtype, numel, "sort")?, self.alloc(DType::I64, numel, "sort")?));
        }
        let k_i = k as i64;
        {
            // the input, permuted to rows, into the first scratch pair (or the result when k <= 1)
            let (s, o) = elementwise_args("sort", &[&permuted, if widths.is_empty() { &dense } else { &rows_layout }])?;
            let (v, i) = scratch.first().map_or((&values, &indices), |(v, i)| (v, i));
            let mut b = self.stream.launch_builder(&init);
            b.arg(&src.data).arg(&v.data).arg(&i.data).arg(&s).arg(&o[0]).arg(&o[1]).arg(&k_i);
            // SAFETY: reads the checked view; writes each of the `numel` elements of `v` and `i`
            // once (a contiguous or permuted dense layout of their shape).
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("sort"))?;
        }
        let (n_i, desc) = (numel as i64, i32::from(descending));
        for (pass, &width) in widths.iter().enumerate() {
            let last = pass + 1 == widths.len();
            let (from_v, from_i) = (&scratch[pass % 2].0, &scratch[pass % 2].1);
            let (to_v, to_i) =
                if last { (&values, &indices) } else { (&scratch[(pass + 1) % 2].0, &scratch[(pass + 1) % 2].1) };
            let (s, o) = elementwise_args("sort", &[if last { &dense } else { &rows_layout }])?;
            let w_i = width as i64;
            let mut b = self.stream.launch_builder(&merge);
            b.arg(&from_v.data).arg(&from_i.data).arg(&to_v.data).arg(&to_i.data).arg(&s).arg(&o[0]);
            b.arg(&n_i).arg(&k_i).arg(&w_i).arg(&desc);
            // SAFETY: reads `numel` dense elements; each lands at a distinct place of its row
            // (a merge's positions are a permutation), written once through a dense layout.
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("sort"))?;
        }
        Ok((Arc::new(values), Arc::new(indices)))
    }
    fn softmax(&self, x: View, dim: usize, log: bool) -> Result<Buffer> {
        let op = if log { "log_softmax" } else { "softmax" };
        self.check(x, op)?;
        let src = self.buffer(x.0, op)?;
        if !src.dtype.is_float() {
            return Err(Error::dtype(op, format!("needs a floating dtype, got {}", src.dtype)));
        }
        if x.1.ndim() == 0 {
            // a 0-d tensor is one row of one element
            return self.softmax((x.0, &x.1.unsqueeze(0)?), dim, log);
        }
        let out = self.alloc(src.dtype, x.1.numel(), op)?;
        let (permuted, rows, k) = reduce_view(op, x.1, &[dim])?;
        let (dense, _, _) = reduce_view(op, &Layout::contiguous(x.1.shape()), &[dim])?;
        if rows > 0 && k > 0 {
            let name = reduce::softmax_name(src.dtype);
            let f = self.function("softmax", || reduce::softmax_source().0, &name)?;
            let (s, o) = elementwise_args(op, &[&permuted, &dense])?;
            let (rows_i, k_i, log_i) = (rows as i64, k as i64, i32::from(log));
            let cfg = LaunchConfig {
                grid_dim: (rows.min(self.max_blocks as usize) as u32, 1, 1),
                block_dim: (reduce::REDUCE_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&o[1]).arg(&rows_i).arg(&k_i).arg(&log_i);
            // SAFETY: reads only the checked view, writes each of the `numel` dense output elements
            // once (the permuted dense layout is a bijection onto them).
            unsafe { b.launch(cfg) }.map_err(driver_err(op))?;
        }
        Ok(Arc::new(out))
    }
    fn matmul(&self, a: View, b: View) -> Result<Buffer> {
        self.check(a, "matmul")?;
        self.check(b, "matmul")?;
        let (x, y) = (self.buffer(a.0, "matmul")?, self.buffer(b.0, "matmul")?);
        let (la, lb) = (a.1, b.1);
        ember_storage::shape::check_matmul_shapes(la.shape(), lb.shape())?;
        let nd = la.ndim();
        if x.dtype != y.dtype {
            return Err(Error::dtype("matmul", format!("not defined for {} and {}", x.dtype, y.dtype)));
        }
        let (data_type, compute) = match x.dtype {
            DType::F32 => (cublas_sys::cudaDataType_t::CUDA_R_32F, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
            DType::F64 => (cublas_sys::cudaDataType_t::CUDA_R_64F, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_64F),
            DType::F16 => (cublas_sys::cudaDataType_t::CUDA_R_16F, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F),
            DType::BF16 => {
                (cublas_sys::cudaDataType_t::CUDA_R_16BF, cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F)
            }
            DType::U8 | DType::I32 | DType::I64 => return self.matmul_int(a, b),
            other => return Err(Error::dtype("matmul", format!("not defined for {other}"))),
        };
        let compute = if x.dtype == DType::F32 && crate::allow_tf32() {
            cublas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            compute
        };
        let mut shape = la.shape().to_vec();
        shape[nd - 1] = lb.shape()[nd - 1];
        let numel: usize = shape.iter().product();
        if numel == 0 || la.shape()[nd - 1] == 0 {
            return self.full(Scalar::F(0.0), x.dtype, numel);
        }
        // operands cuBLAS cannot read as they are are gathered to dense first
        let (ga, gb) = crate::gemm::plan_needs(la, lb);
        let (dense_a, dense_b) = (Layout::contiguous(la.shape()), Layout::contiguous(lb.shape()));
        let staged_a = if ga { Some(self.gather(a, x.dtype, "matmul")?) } else { None };
        let staged_b = if gb { Some(self.gather(b, y.dtype, "matmul")?) } else { None };
        let (xa, la) = match &staged_a {
            Some(s) => (s, &dense_a),
            None => (x, la),
        };
        let (yb, lb) = match &staged_b {
            Some(s) => (s, &dense_b),
            None => (y, lb),
        };
        let p =
            crate::gemm::plan(la, lb).ok_or_else(|| Error::backend("matmul", "dense operands must map to cuBLAS"))?;
        let int = |v: usize| {
            i32::try_from(v)
                .map_err(|_| Error::unsupported("matmul", format!("size {v} exceeds cuBLAS's 32-bit sizes")))
        };
        let long = |v: usize| i64::try_from(v).map_err(|_| Error::invalid("matmul", format!("stride {v} too large")));
        let out = self.alloc(x.dtype, numel, "matmul")?;
        let blas_guard = self.blas()?;
        let blas = blas_guard.as_ref().expect("blas() creates the handle");
        let size = x.dtype.size_in_bytes() as u64;
        {
            let (pa, _ra) = yb.data.device_ptr(&self.stream); // cuBLAS's A is Ember's b
            let (pb, _rb) = xa.data.device_ptr(&self.stream);
            let (pc, _rc) = out.data.device_ptr(&self.stream);
            let op = |t: bool| {
                if t {
                    cublas_sys::cublasOperation_t::CUBLAS_OP_T
                } else {
                    cublas_sys::cublasOperation_t::CUBLAS_OP_N
                }
            };
            let (alpha32, beta32, alpha64, beta64) = (1f32, 0f32, 1f64, 0f64);
            let (alpha, beta): (*const std::ffi::c_void, *const std::ffi::c_void) = if x.dtype == DType::F64 {
                ((&alpha64 as *const f64).cast(), (&beta64 as *const f64).cast())
            } else {
                ((&alpha32 as *const f32).cast(), (&beta32 as *const f32).cast())
            };
            // SAFETY: the plan addresses only elements inside the checked views (tested against a
            // reference column-major product); `out` holds batch * m * n elements written densely;
            // alpha and beta live until the call returns and match the compute type.
            unsafe {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *blas.handle(),
                    op(p.a.transpose),
                    op(p.b.transpose),
                    int(p.m)?,
                    int(p.n)?,
                    int(p.k)?,
                    alpha,
                    (pa + p.a.offset as u64 * size) as *const std::ffi::c_void,
                    data_type,
                    int(p.a.ld)?,
                    long(p.a.batch_stride)?,
                    (pb + p.b.offset as u64 * size) as *const std::ffi::c_void,
                    data_type,
                    int(p.b.ld)?,
                    long(p.b.batch_stride)?,
                    beta,
                    pc as *mut std::ffi::c_void,
                    data_type,
                    int(p.m)?,
                    long(p.m * p.n)?,
                    int(p.batch)?,
                    compute,
                    cublas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| Error::backend("matmul", format!("cuBLAS: {e:?}")))?;
        }
        Ok(Arc::new(out))
    }
    fn index(&self, op: IndexOp, x: View, index: View, src: Option<View>) -> Result<Buffer> {
        let name = op.name();
        self.check(x, name)?;
        self.check(index, name)?;
        let (bx, bi) = (self.buffer(x.0, name)?, self.buffer(index.0, name)?);
        if bi.dtype != DType::I64 {
            return Err(Error::dtype(name, format!("indices must be i64, got {}", bi.dtype)));
        }
        let bs = match src {
            Some(s) => {
                self.check(s, name)?;
                let b = self.buffer(s.0, name)?;
                if b.dtype != bx.dtype {
                    return Err(Error::dtype(name, format!("src is {} but the input is {}", b.dtype, bx.dtype)));
                }
                Some(b)
            }
            None => None,
        };
        let p = indexing::plan(op, x.1, index.1, src.map(|s| s.1))?;
        let err = self.stream.alloc_zeros::<i64>(2).map_err(driver_err(name))?;
        let (stride, size) = (p.stride as i64, p.size as i64);
        let out = match p.kernel {
            IndexKernel::Gather => {
                let out = self.alloc(bx.dtype, p.write.numel(), name)?;
                if p.write.numel() > 0 {
                    let f = self.function("index", || index::module_source().0, &index::gather_name(bx.dtype))?;
                    let (s, o) = elementwise_args(name, &[&p.read, &p.index])?;
                    let mut b = self.stream.launch_builder(&f);
                    b.arg(&bx.data).arg(&bi.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&o[1]);
                    b.arg(&stride).arg(&size).arg(&err);
                    // SAFETY: the plan's layouts lie within the checked views (zero stride along the
                    // indexed dim, whose positions the kernel checks against `size` before reading);
                    // `out` holds the loop's `numel` elements.
                    unsafe { b.launch(Self::config(p.write.numel(), self.max_blocks)) }.map_err(driver_err(name))?;
                }
                out
            }
            IndexKernel::Scatter | IndexKernel::ScatterAdd => {
                let out = self.gather(x, bx.dtype, name)?;
                let bs = bs.ok_or_else(|| Error::invalid(name, "needs a src tensor"))?;
                if p.index.numel() > 0 {
                    let kernel = index::scatter_name(bx.dtype, p.kernel == IndexKernel::ScatterAdd);
                    let f = self.function("index", || index::module_source().0, &kernel)?;
                    let (s, o) = elementwise_args(name, &[&p.read, &p.index, &p.write])?;
                    let mut b = self.stream.launch_builder(&f);
                    b.arg(&bs.data).arg(&bi.data).arg(&out.data).arg(&s).arg(&o[0]).arg(&o[1]).arg(&o[2]);
                    b.arg(&stride).arg(&size).arg(&err);
                    // SAFETY: as above; writes land in the dense copy `out` at positions inside the
                    // input's shape (checked indices along `dim`, the loop no larger elsewhere).
                    unsafe { b.launch(Self::config(p.index.numel(), self.max_blocks)) }.map_err(driver_err(name))?;
                }
                out
            }
        };
        // one synchronisation: an out-of-range index becomes an error here, never a device assert
        let mut flag = [0i64; 2];
        self.stream.memcpy_dtoh(&err, &mut flag).map_err(driver_err(name))?;
        self.stream.synchronize().map_err(driver_err(name))?;
        if flag[0] != 0 {
            return Err(Error::invalid(
                name,
                format!("index {} is out of bounds for dimension with size {}", flag[1], p.size),
            ));
        }
        Ok(Arc::new(out))
    }
    fn im2col(&self, x: View, geom: &WindowGeometry, pad_value: f64) -> Result<Buffer> {
        self.check(x, "im2col")?;
        let src = self.buffer(x.0, "im2col")?;
        let w = window_arg("im2col", geom)?;
        let mut expect = vec![geom.batch, geom.channels];
        expect.extend(&geom.input);
        if x.1.shape() != expect.as_slice() {
            return Err(Error::shape(
                "im2col",
                format!("input {:?} does not match the window's {expect:?}", x.1.shape()),
            ));
        }
        let numel = (w.batch * w.channels * w.kernel_numel * w.out_numel) as usize;
        let out = self.alloc(src.dtype, numel, "im2col")?;
        if numel > 0 {
            let f = self.function("window", || window::module_source().0, &window::im2col_name(src.dtype))?;
            let ox = raw_operand("im2col", x.1)?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&out.data).arg(&w).arg(&ox).arg(&pad_value);
            // SAFETY: reads the checked view only at coordinates inside its shape (positions
            // outside the input are padding); writes the `numel` elements of `out`.
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("im2col"))?;
        }
        Ok(Arc::new(out))
    }
    fn col2im(&self, cols: View, geom: &WindowGeometry) -> Result<Buffer> {
        self.check(cols, "col2im")?;
        let src = self.buffer(cols.0, "col2im")?;
        if !window::col2im_supported(src.dtype) {
            return Err(Error::dtype("col2im", format!("not defined for {}", src.dtype)));
        }
        let w = window_arg("col2im", geom)?;
        let expect = [geom.batch, geom.channels * geom.kernel_numel(), w.out_numel as usize];
        if cols.1.shape() != expect.as_slice() {
            return Err(Error::shape(
                "col2im",
                format!("columns {:?} do not match the window's {expect:?}", cols.1.shape()),
            ));
        }
        let numel = geom.batch * geom.channels * geom.input.iter().product::<usize>();
        let out = self.alloc(src.dtype, numel, "col2im")?;
        if numel > 0 {
            let f = self.function("window", || window::module_source().0, &window::col2im_name(src.dtype))?;
            let oc = raw_operand("col2im", cols.1)?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&src.data).arg(&out.data).arg(&w).arg(&oc);
            // SAFETY: reads the checked [N, C*K, L] view at coordinates inside its shape; writes
            // the `numel` elements of `out`.
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("col2im"))?;
        }
        Ok(Arc::new(out))
    }
    fn fused(&self) -> Option<&dyn FusedKernels> {
        Some(self)
    }

    fn random(&self, op: RngOp, dtype: DType, numel: usize, key: RngKey) -> Result<Buffer> {
        if !dtype.is_float() {
            return Err(Error::dtype("random", format!("needs a floating dtype, got {dtype}")));
        }
        let out = self.alloc(dtype, numel, "random")?;
        if numel > 0 {
            let f = self.function("random", || random::module_source().0, &random::random_name(dtype))?;
            let (kind, a, b_arg) = random::random_args(op);
            let n = numel as i64;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&out.data).arg(&n).arg(&key.seed).arg(&key.offset).arg(&kind).arg(&a).arg(&b_arg);
            // SAFETY: writes the `numel` elements of `out`.
            unsafe { b.launch(Self::config(numel, self.max_blocks)) }.map_err(driver_err("random"))?;
        }
        Ok(Arc::new(out))
    }
}
