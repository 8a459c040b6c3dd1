//! A backend written outside the ops crates: it counts every op by family and forwards to the CPU
//! backend. Registered under its own device, it runs the whole conformance suite unchanged, which
//! shows that every layer above the Backend trait is device-agnostic. It is registered twice: once
//! forwarding the CPU backend's fused kernels (one line, `fused()`), once without them, so both the
//! fast paths and the composed fallbacks run the suite.

use ember::storage::{
    register_backend, Backend, BinaryOp, Buffer, DType, Device, FusedKernels, HostData, IndexOp, Layout, ReduceOp,
    Result, RngKey, RngOp, Scalar, ScanOp, UnaryOp, View, WindowGeometry,
};
use ember::Tensor;
use ember_tests::conformance::{default_dir, run_all, Outcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const DEVICE: Device = Device::Custom("counting", 0);
/// The same wrapper without fused kernels: every layer above takes its composed path.
const COMPOSED: Device = Device::Custom("composed", 0);

/// Counts ops by family; with `FUSED` it also offers the CPU backend's fused kernels.
#[derive(Debug, Default)]
struct Counting<const FUSED: bool> {
    counts: Mutex<HashMap<&'static str, usize>>,
}

impl<const FUSED: bool> Counting<FUSED> {
    fn inner(&self, family: &'static str) -> Arc<dyn Backend> {
        *self.counts.lock().unwrap().entry(family).or_default() += 1;
        ember::cpu::CpuBackend::shared()
    }
}

impl<const FUSED: bool> Backend for Counting<FUSED> {
    fn device(&self) -> Device {
        if FUSED {
            DEVICE
        } else {
            COMPOSED
        }
    }
    fn fused(&self) -> Option<&dyn FusedKernels> {
        static CPU: std::sync::OnceLock<Arc<dyn Backend>> = std::sync::OnceLock::new();
        if !FUSED {
            return None;
        }
        *self.counts.lock().unwrap().entry("fused").or_default() += 1;
        CPU.get_or_init(ember::cpu::CpuBackend::shared).fused()
    }
    fn upload(&self, data: HostData) -> Result<Buffer> {
        self.inner("upload").upload(data)
    }
    fn download(&self, x: View) -> Result<HostData> {
        self.inner("download").download(x)
    }
    fn full(&self, value: Scalar, dtype: DType, numel: usize) -> Result<Buffer> {
        self.inner("full").full(value, dtype, numel)
    }
    fn cast(&self, x: View, dtype: DType) -> Result<Buffer> {
        self.inner("cast").cast(x, dtype)
    }
    fn assign(&self, dst: View, src: View) -> Result<()> {
        self.inner("assign").assign(dst, src)
    }
    fn unary(&self, op: UnaryOp, x: View) -> Result<Buffer> {
        self.inner("unary").unary(op, x)
    }
    fn binary(&self, op: BinaryOp, a: View, b: View) -> Result<Buffer> {
        self.inner("binary").binary(op, a, b)
    }
    fn where_cond(&self, c: View, a: View, b: View) -> Result<Buffer> {
        self.inner("where").where_cond(c, a, b)
    }
    fn reduce(&self, op: ReduceOp, x: View, dims: &[usize]) -> Result<Buffer> {
        self.inner("reduce").reduce(op, x, dims)
    }
    fn scan(&self, op: ScanOp, x: View, dim: usize) -> Result<(Buffer, Option<Buffer>)> {
        self.inner("scan").scan(op, x, dim)
    }
    fn sort(&self, x: View, dim: usize, descending: bool, stable: bool) -> Result<(Buffer, Buffer)> {
        self.inner("sort").sort(x, dim, descending, stable)
    }
    fn softmax(&self, x: View, dim: usize, log: bool) -> Result<Buffer> {
        self.inner("softmax").softmax(x, dim, log)
    }
    fn matmul(&self, a: View, b: View) -> Result<Buffer> {
        self.inner("matmul").matmul(a, b)
    }
    fn index(&self, op: IndexOp, x: View, index: View, src: Option<View>) -> Result<Buffer> {
        self.inner("index").index(op, x, index, src)
    }
    fn im2col(&self, x: View, g: &WindowGeometry, pad: f64) -> Result<Buffer> {
        self.inner("im2col").im2col(x, g, pad)
    }
    fn col2im(&self, cols: View, g: &WindowGeometry) -> Result<Buffer> {
        self.inner("col2im").col2im(cols, g)
    }
    fn random(&self, op: RngOp, dtype: DType, numel: usize, key: RngKey) -> Result<Buffer> {
        self.inner("random").random(op, dtype, numel, key)
    }
}

/// One counting backend for the whole test binary (the registry is process-wide and tests run in parallel).
fn shared() -> Arc<Counting<true>> {
    static ONE: std::sync::OnceLock<Arc<Counting<true>>> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let b = Arc::new(Counting::default());
        register_backend(DEVICE, b.clone());
        b
    })
    .clone()
}

/// The wrapper without fused kernels, registered once.
fn composed() -> Arc<Counting<false>> {
    static ONE: std::sync::OnceLock<Arc<Counting<false>>> = std::sync::OnceLock::new();
    ONE.get_or_init(|| {
        let b = Arc::new(Counting::default());
        register_backend(COMPOSED, b.clone());
        b
    })
    .clone()
}

#[test]
fn conformance_runs_unchanged_through_a_custom_backend() {
    let backend = shared();
    let dir = default_dir();
    let on_cpu = run_all(&dir, Device::Cpu, true).expect("cases load");
    let wrapped = run_all(&dir, DEVICE, true).expect("cases load");
    println!("cpu:      {}", on_cpu.line());
    println!("counting: {}", wrapped.line());
    let counts = backend.counts.lock().unwrap().clone();
    println!("ops seen by the counting backend: {counts:?}");
    for ((id, a), (_, b)) in on_cpu.results.iter().zip(&wrapped.results) {
        assert_eq!(a, b, "case {id} differs between cpu and the counting backend");
    }
    assert!(wrapped.results.iter().all(|(_, o)| !matches!(o, Outcome::Failed(_))));
    for family in [
        "upload", "download", "unary", "binary", "reduce", "matmul", "index", "im2col", "col2im", "softmax", "sort",
        "scan", "fused",
    ] {
        assert!(counts.get(family).copied().unwrap_or(0) > 0, "no {family} op reached the custom backend");
    }
}

#[test]
fn conformance_runs_on_the_composed_paths_of_a_backend_without_fused_kernels() {
    let backend = composed();
    let dir = default_dir();
    let on_cpu = run_all(&dir, Device::Cpu, true).expect("cases load");
    let wrapped = run_all(&dir, COMPOSED, true).expect("cases load");
    println!("composed: {}", wrapped.line());
    for ((id, a), (_, b)) in on_cpu.results.iter().zip(&wrapped.results) {
        assert_eq!(a, b, "case {id} differs between cpu and the backend without fused kernels");
    }
    let counts = backend.counts.lock().unwrap().clone();
    assert!(!counts.contains_key("fused"));
    assert!(counts.get("im2col").copied().unwrap_or(0) > 0, "convolution did not take the composed path");
}

#[test]
fn tensors_remember_their_custom_device() {
    shared();
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap().to(DEVICE).unwrap();
    let y = x.exp().unwrap().sum().unwrap();
    assert_eq!(y.device(), DEVICE);
    let cpu = Tensor::ones([3]).unwrap();
    let err = x.add(&cpu).unwrap_err().to_string();
    assert!(err.contains("add") && err.contains("counting:0") && err.contains("cpu"), "{err}");
    let _ = Layout::contiguous(&[1]);
}

#[test]
fn the_op_table_gradient_sweep_runs_unchanged_through_a_custom_backend() {
    let backend = shared();
    let before = backend.counts.lock().unwrap().get("unary").copied().unwrap_or(0);
    for (seed, shape, transposed) in [(1u64, vec![2usize, 3], true), (2, vec![3], false), (3, vec![], false)] {
        ember::manual_seed(seed);
        let u = ember_tests::sweep::sweep_unary(DEVICE, &shape, transposed).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.first.len(), ember_tests::sweep::differentiable_unary().count() - 1, "{:?}", u.unsupported);
        let b = ember_tests::sweep::sweep_binary(DEVICE, &shape, &shape[shape.len().min(1)..], transposed)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.second.len(), ember_tests::sweep::differentiable_binary().count());
    }
    let after = backend.counts.lock().unwrap().get("unary").copied().unwrap_or(0);
    assert!(after > before, "the sweep's ops did not reach the custom backend");
}
