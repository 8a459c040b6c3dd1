//! The reference workloads (W1-W4 so far), timed like `torch_ref.py`: warm-ups, then the median of
//! repetitions, short calls repeated inside one repetition until it lasts 20 ms.

use ember::{Device, Tensor};
use serde_json::json;
use std::sync::OnceLock;
use std::time::Instant;

/// The device the workloads run on (set once by [`run`]).
static DEVICE: OnceLock<Device> = OnceLock::new();

/// The autocast dtype of W7 and W11 (`--autocast bf16|f16`, set once by [`run`]).
static AUTOCAST: OnceLock<Option<ember::DType>> = OnceLock::new();

/// The autocast dtype of W7 and W11, if any.
pub(crate) fn autocast_dtype() -> Option<ember::DType> {
    AUTOCAST.get().copied().flatten()
}

/// Runs `f` under autocast when `--autocast` was given (W7, W11), else as it is.
pub(crate) fn maybe_autocast<R>(f: impl FnOnce() -> ember::Result<R>) -> ember::Result<R> {
    match autocast_dtype() {
        Some(d) => ember::autocast(d, f),
        None => f(),
    }
}

/// `params` with `"autocast": "bf16"` (or f16) when `--autocast` was given, as torch_ref.py.
pub(crate) fn with_autocast(mut params: serde_json::Value) -> serde_json::Value {
    if let (Some(d), Some(m)) = (autocast_dtype(), params.as_object_mut()) {
        m.insert("autocast".into(), json!(if d == ember::DType::F16 { "f16" } else { "bf16" }));
    }
    params
}

/// The workloads' device.
pub(crate) fn device() -> Device {
    *DEVICE.get().unwrap_or(&Device::Cpu)
}

/// Waits for the device's queued work (a no-op on the CPU, whose ops finish before they return).
pub(crate) fn sync() {
    if device().is_lazy() {
        ember::lazy::sync().expect("lazy sync");
    }
    if let Device::Cuda(i) = device().eager() {
        ember::cuda::synchronize(i).expect("synchronize");
    }
}

/// Makes sure `t`'s value is computed before it is dropped: on a lazy device a result nobody
/// reads is never computed, so a timed closure hands its result here (a no-op on eager devices).
pub(crate) fn realise(t: Tensor) {
    if t.device().is_lazy() {
        ember::lazy::sync().expect("lazy sync");
    }
    drop(t);
}

/// `t` on the workloads' device.
pub(crate) fn on_device(t: Tensor) -> Tensor {
    t.to(device()).expect("to device")
}

pub(crate) struct Timing {
    pub(crate) median_s: f64,
    min_s: f64,
    max_s: f64,
    reps: usize,
    inner: usize,
}

pub(crate) fn bench(reps: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..3 {
        f();
    }
    sync();
    let t0 = Instant::now();
    f();
    sync();
    let one = t0.elapsed().as_secs_f64();
    let inner = ((0.02 / one.max(1e-9)) as usize).max(1);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            sync();
            t.elapsed().as_secs_f64() / inner as f64
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    if std::env::var_os("EMBER_BENCH_PROFILE").is_some() {
        // one more run under the profiler, its table on stderr (the JSON lines stay on stdout)
        let ((), p) = ember::profiler::profile(|| {
            f();
            sync();
        });
        eprintln!("{}", p.table(ember::profiler::SortBy::SelfTime, 25));
        for s in p.key_averages_by_shape().iter().filter(|s| s.kind == ember::profiler::EventKind::Op).take(20) {
            eprintln!("{:>9.3}ms {:>4}x {:<22} {:?}", s.total_ns as f64 / 1e6, s.calls, s.name, s.shapes);
        }
    }
    Timing { median_s: times[times.len() / 2], min_s: times[0], max_s: times[times.len() - 1], reps, inner }
}

pub(crate) fn emit(
    id: &str,
    threads: usize,
    mut params: serde_json::Value,
    value: f64,
    unit: &str,
    t: &Timing,
    note: Option<&str>,
) {
    if let (true, Some(m)) = (device().is_lazy(), params.as_object_mut()) {
        m.entry("mode").or_insert(json!("lazy"));
    }
    let mut rec = json!({
        "id": id, "lib": "ember", "device": device_name(), "threads": threads, "params": params,
        "value": (value * 1e4).round() / 1e4, "unit": unit,
        "median_ms": t.median_s * 1e3, "min_ms": t.min_s * 1e3, "max_ms": t.max_s * 1e3,
        "reps": t.reps, "inner": t.inner,
    });
    if let Some(n) = note {
        rec["note"] = json!(n);
    }
    println!("{rec}");
}

/// The device as torch_ref.py names it (`cpu`, `cuda`).
pub(crate) fn device_name() -> &'static str {
    match device().eager() {
        Device::Cpu => "cpu",
        _ => "cuda",
    }
}

fn randn(shape: &[usize]) -> Tensor {
    on_device(Tensor::randn(shape).expect("randn"))
}

/// Runs the selected workloads (all when `only` is empty).
pub fn run(
    only: &[String],
    threads: usize,
    reps: usize,
    device: Device,
    autocast: Option<ember::DType>,
) -> ember::Result<()> {
    DEVICE.set(device).map_err(|_| ember::Error::invalid("bench", "the device is set once"))?;
    AUTOCAST.set(autocast).map_err(|_| ember::Error::invalid("bench", "the autocast dtype is set once"))?;
    ember::cpu::set_num_threads(threads);
    ember::manual_seed(0);
    let on = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    println!(
        "{}",
        json!({"id": "env", "lib": "ember", "version": env!("CARGO_PKG_VERSION"), "threads": threads, "os": std::env::consts::OS, "arch": std::env::consts::ARCH})
    );
    if on("W1") {
        // as torch_ref.py: 4096 and 8192 too on a GPU, and bf16 products (f32 accumulation)
        let gpu = device != Device::Cpu;
        let large: &[usize] = if gpu { &[4096, 8192] } else { &[] };
        for &n in [128usize, 256, 512, 1024, 2048].iter().chain(large) {
            let (a, b) = (randn(&[n, n]), randn(&[n, n]));
            let t = bench(reps, || {
                a.matmul(&b).expect("matmul");
            });
            emit("W1", threads, json!({"N": n}), 2.0 * (n as f64).powi(3) / t.median_s / 1e9, "GFLOP/s", &t, None);
        }
        // bf16 rows: N = 1024, 2048 on the CPU, the large sizes on a GPU (as torch_ref.py)
        let bf16_sizes: &[usize] = if gpu { large } else { &[1024, 2048] };
        for &n in bf16_sizes {
            let bf = |t: Tensor| t.to_dtype(ember::DType::BF16).expect("bf16");
            let (a, b) = (bf(randn(&[n, n])), bf(randn(&[n, n])));
            let t = bench(reps, || {
                a.matmul(&b).expect("matmul");
            });
            let params = json!({"N": n, "dtype": "bf16"});
            emit("W1", threads, params, 2.0 * (n as f64).powi(3) / t.median_s / 1e9, "GFLOP/s", &t, None);
        }
    }
    let n = 1usize << 24;
    if on("W2") {
        let (a, b, c) = (randn(&[n]), randn(&[n]), randn(&[n]));
        let t = bench(reps, || {
            realise(a.mul(&b).and_then(|ab| ab.add(&c)).expect("a*b+c"));
        });
        emit(
            "W2",
            threads,
            json!({"n": n, "op": "a*b+c", "out": "fresh"}),
            16.0 * n as f64 / t.median_s / 1e9,
            "GB/s",
            &t,
            Some("16 bytes/element counted (3 reads + 1 write); the expression makes a temporary"),
        );
        let t = bench(reps, || {
            realise(c.addcmul(&a, &b, 1.0).expect("addcmul"));
        });
        emit(
            "W2",
            threads,
            json!({"n": n, "op": "addcmul(c,a,b)", "out": "fresh"}),
            16.0 * n as f64 / t.median_s / 1e9,
            "GB/s",
            &t,
            Some("composite: mul then add"),
        );
    }
    if on("W3") {
        let x = randn(&[n]);
        for (name, f) in [("tanh", Tensor::tanh as fn(&Tensor) -> ember::Result<Tensor>), ("exp", Tensor::exp)] {
            let t = bench(reps, || {
                realise(f(&x).expect("unary"));
            });
            emit(
                "W3",
                threads,
                json!({"n": n, "op": name, "out": "fresh"}),
                8.0 * n as f64 / t.median_s / 1e9,
                "GB/s",
                &t,
                None,
            );
        }
    }
    if on("W9") {
        let n_ops = 1000usize;
        let leaf = |t: ember::Result<Tensor>| on_device(t.expect("leaf")).requires_grad_(true).expect("leaf");
        let (a, b, x0) = (leaf(Tensor::full([1], 0.999)), leaf(Tensor::full([1], 0.001)), leaf(Tensor::ones([1])));
        let forward = || -> Tensor {
            let mut y = x0.clone();
            for _ in 0..n_ops / 2 {
                y = y.mul(&a).and_then(|y| y.add(&b)).expect("op");
            }
            y
        };
        let t = bench(reps, || {
            x0.set_grad(None);
            a.set_grad(None);
            b.set_grad(None);
            forward().backward().expect("backward");
        });
        let tf = bench(reps, || {
            realise(forward());
        });
        let mut rec = json!({
            "id": "W9", "lib": "ember", "device": device_name(), "threads": threads,
            "params": {"ops": n_ops, "shape": [1], "mix": "alternating mul/add, all requires_grad"},
            "value": t.median_s / n_ops as f64 * 1e6, "unit": "us/op",
            "median_ms": t.median_s * 1e3, "reps": t.reps, "inner": t.inner,
        });
        rec["forward_only_us_per_op"] = json!(tf.median_s / n_ops as f64 * 1e6);
        println!("{rec}");
    }
    if on("W4") {
        let x = randn(&[n]);
        let t = bench(reps, || {
            x.sum().expect("sum");
        });
        emit(
            "W4",
            threads,
            json!({"n": n, "op": "sum"}),
            4.0 * n as f64 / t.median_s / 1e9,
            "GB/s",
            &t,
            Some("4 bytes/element read"),
        );
        let (rows, cols) = (4096usize, 1024usize);
        let m = randn(&[rows, cols]);
        let t = bench(reps, || {
            m.softmax(1).expect("softmax");
        });
        emit(
            "W4",
            threads,
            json!({"shape": [rows, cols], "op": "softmax(dim=1)"}),
            8.0 * (rows * cols) as f64 / t.median_s / 1e9,
            "GB/s",
            &t,
            Some("8 bytes/element counted (1 read + 1 write)"),
        );
    }
    let explicit = |id: &str| only.iter().any(|o| o == id);
    crate::bench_nn::run(&on, &explicit, threads, reps);
    if on("W14") {
        crate::bench_fusion::run(device, threads, reps);
    }
    Ok(())
}
