//! Criterion benchmarks of the CPU backend, one group per op family, called through the `Backend`
//! trait (what every layer above sees). `cargo bench -p ember-ops-cpu`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ember_ops_cpu::CpuBackend;
use ember_storage::{Backend, BinaryOp, Buffer, HostData, IndexOp, Layout, ReduceOp, UnaryOp, WindowGeometry};

fn buffer(n: usize) -> Buffer {
    CpuBackend.upload(HostData::F32((0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect())).unwrap()
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    for n in [1usize << 12, 1 << 20] {
        let (a, b) = (buffer(n), buffer(n));
        let l = Layout::contiguous(&[n]);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("add", n), &n, |bch, _| {
            bch.iter(|| CpuBackend.binary(BinaryOp::Add, (&a, &l), (&b, &l)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("exp", n), &n, |bch, _| {
            bch.iter(|| CpuBackend.unary(UnaryOp::Exp, (&a, &l)).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("tanh", n), &n, |bch, _| {
            bch.iter(|| CpuBackend.unary(UnaryOp::Tanh, (&a, &l)).unwrap())
        });
        let side = (n as f64).sqrt() as usize;
        let t = Layout::contiguous(&[side, side]).transpose(0, 1).unwrap();
        g.bench_with_input(BenchmarkId::new("add_transposed", n), &n, |bch, _| {
            bch.iter(|| CpuBackend.binary(BinaryOp::Add, (&a, &t), (&b, &t)).unwrap())
        });
    }
    g.finish();
}

fn reductions(c: &mut Criterion) {
    let mut g = c.benchmark_group("reduce");
    let n = 1usize << 20;
    let x = buffer(n);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("sum_all", |b| {
        b.iter(|| CpuBackend.reduce(ReduceOp::Sum, (&x, &Layout::contiguous(&[n])), &[0]).unwrap())
    });
    let rows = Layout::contiguous(&[1024, 1024]);
    g.bench_function("sum_rows", |b| b.iter(|| CpuBackend.reduce(ReduceOp::Sum, (&x, &rows), &[1]).unwrap()));
    g.bench_function("max_cols", |b| b.iter(|| CpuBackend.reduce(ReduceOp::Max, (&x, &rows), &[0]).unwrap()));
    g.bench_function("softmax_rows", |b| b.iter(|| CpuBackend.softmax((&x, &rows), 1, false).unwrap()));
    g.finish();
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    for n in [64usize, 256] {
        let (a, b) = (buffer(n * n), buffer(n * n));
        let l = Layout::contiguous(&[n, n]);
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        g.bench_with_input(BenchmarkId::new("square", n), &n, |bch, _| {
            bch.iter(|| CpuBackend.matmul((&a, &l), (&b, &l)).unwrap())
        });
        let t = l.transpose(0, 1).unwrap();
        g.bench_with_input(BenchmarkId::new("a_transposed", n), &n, |bch, _| {
            bch.iter(|| CpuBackend.matmul((&a, &t), (&b, &l)).unwrap())
        });
    }
    g.finish();
}

fn indexing_and_windows(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_window");
    let x = buffer(64 * 28 * 28);
    let geom = WindowGeometry {
        batch: 64,
        channels: 1,
        input: vec![28, 28],
        kernel: vec![5, 5],
        stride: vec![1, 1],
        padding: vec![2, 2],
        dilation: vec![1, 1],
    };
    g.bench_function("im2col_mnist_5x5", |b| {
        b.iter(|| CpuBackend.im2col((&x, &Layout::contiguous(&[64, 1, 28, 28])), &geom, 0.0).unwrap())
    });
    let idx = CpuBackend.upload(HostData::I64((0..1000).map(|i| (i * 37) % 1000).collect())).unwrap();
    let table = buffer(1000 * 64);
    g.bench_function("index_select_rows", |b| {
        b.iter(|| {
            CpuBackend
                .index(
                    IndexOp::IndexSelect { dim: 0 },
                    (&table, &Layout::contiguous(&[1000, 64])),
                    (&idx, &Layout::contiguous(&[1000])),
                    None,
                )
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, elementwise, reductions, matmul, indexing_and_windows);
criterion_main!(benches);
