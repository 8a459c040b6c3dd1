//! Criterion benchmarks of the op families across backends: the CPU backend and, where a GPU is
//! present, `cuda:0`, through the `Backend` trait with the same inputs, so the groups read as one
//! table per family (`cargo bench -p ember-ops-cuda`). Each CUDA iteration ends with a device
//! synchronisation, so it measures the kernels, not their queuing. Without a GPU only the CPU rows
//! run (and a line says so).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ember_ops_cpu::CpuBackend;
use ember_ops_cuda::CudaBackend;
use ember_storage::{
    Backend, BinaryOp, Buffer, HostData, IndexOp, Layout, ReduceOp, RngKey, RngOp, UnaryOp, WindowGeometry,
};

/// One backend under test.
enum Target {
    Cpu(CpuBackend),
    Cuda(Box<CudaBackend>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Cpu(_) => "cpu",
            Target::Cuda(_) => "cuda",
        }
    }
    fn b(&self) -> &dyn Backend {
        match self {
            Target::Cpu(c) => c,
            Target::Cuda(c) => c.as_ref(),
        }
    }
    /// Waits for the backend's queued work (CPU ops finish before they return).
    fn sync(&self) {
        if let Target::Cuda(c) = self {
            c.synchronize().expect("synchronize");
        }
    }
    fn buffer(&self, n: usize) -> Buffer {
        self.b().upload(HostData::F32((0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect())).unwrap()
    }
}

fn targets() -> Vec<Target> {
    let mut t = vec![Target::Cpu(CpuBackend::new())];
    match CudaBackend::new(0) {
        Ok(c) => t.push(Target::Cuda(Box::new(c))),
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| println!("cuda rows skipped: {e}"));
        }
    }
    t
}

/// Times `f` on every target as `<group>/<name>/<target>`.
fn each(c: &mut Criterion, group: &str, elements: u64, name: &str, f: &dyn Fn(&Target) -> Box<dyn Fn() + '_>) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(elements));
    for t in targets() {
        let run = f(&t);
        g.bench_function(BenchmarkId::new(name, t.name()), |b| {
            b.iter(|| {
                run();
                t.sync();
            })
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let n = 1usize << 20;
    let l = Layout::contiguous(&[n]);
    each(c, "elementwise", n as u64, "add", &|t| {
        let (a, b, l) = (t.buffer(n), t.buffer(n), l.clone());
        Box::new(move || drop(t.b().binary(BinaryOp::Add, (&a, &l), (&b, &l)).unwrap()))
    });
    each(c, "elementwise", n as u64, "tanh", &|t| {
        let (a, l) = (t.buffer(n), l.clone());
        Box::new(move || drop(t.b().unary(UnaryOp::Tanh, (&a, &l)).unwrap()))
    });
    each(c, "elementwise", n as u64, "add_transposed", &|t| {
        let (a, b) = (t.buffer(n), t.buffer(n));
        let tl = Layout::contiguous(&[1024, 1024]).transpose(0, 1).unwrap();
        Box::new(move || drop(t.b().binary(BinaryOp::Add, (&a, &tl), (&b, &tl)).unwrap()))
    });
}

fn reductions(c: &mut Criterion) {
    let n = 1usize << 20;
    let rows = Layout::contiguous(&[1024, 1024]);
    each(c, "reduce", n as u64, "sum_rows", &|t| {
        let (x, l) = (t.buffer(n), rows.clone());
        Box::new(move || drop(t.b().reduce(ReduceOp::Sum, (&x, &l), &[1]).unwrap()))
    });
    each(c, "reduce", n as u64, "softmax_rows", &|t| {
        let (x, l) = (t.buffer(n), rows.clone());
        Box::new(move || drop(t.b().softmax((&x, &l), 1, false).unwrap()))
    });
    each(c, "reduce", n as u64, "sort_rows", &|t| {
        let (x, l) = (t.buffer(n), rows.clone());
        Box::new(move || drop(t.b().sort((&x, &l), 1, false, true).unwrap()))
    });
}

fn matmul(c: &mut Criterion) {
    let n = 512usize;
    let l = Layout::contiguous(&[n, n]);
    each(c, "matmul", (2 * n * n * n) as u64, "square_512", &|t| {
        let (a, b, l) = (t.buffer(n * n), t.buffer(n * n), l.clone());
        Box::new(move || drop(t.b().matmul((&a, &l), (&b, &l)).unwrap()))
    });
}

fn indexing_windows_rng(c: &mut Criterion) {
    let geom = WindowGeometry {
        batch: 64,
        channels: 1,
        input: vec![28, 28],
        kernel: vec![5, 5],
        stride: vec![1, 1],
        padding: vec![2, 2],
        dilation: vec![1, 1],
    };
    each(c, "index_window_rng", 64 * 25 * 784, "im2col_mnist_5x5", &|t| {
        let (x, g) = (t.buffer(64 * 784), geom.clone());
        Box::new(move || drop(t.b().im2col((&x, &Layout::contiguous(&[64, 1, 28, 28])), &g, 0.0).unwrap()))
    });
    each(c, "index_window_rng", 1000 * 64, "index_select_rows", &|t| {
        let idx = t.b().upload(HostData::I64((0..1000).map(|i| (i * 37) % 1000).collect())).unwrap();
        let table = t.buffer(1000 * 64);
        Box::new(move || {
            let (lt, li) = (Layout::contiguous(&[1000, 64]), Layout::contiguous(&[1000]));
            drop(t.b().index(IndexOp::IndexSelect { dim: 0 }, (&table, &lt), (&idx, &li), None).unwrap())
        })
    });
    each(c, "index_window_rng", 1 << 20, "uniform", &|t| {
        Box::new(move || {
            let key = RngKey { seed: 1, offset: 0 };
            drop(t.b().random(RngOp::Uniform { low: 0.0, high: 1.0 }, ember_storage::DType::F32, 1 << 20, key).unwrap())
        })
    });
}

criterion_group!(benches, elementwise, reductions, matmul, indexing_windows_rng);
criterion_main!(benches);
