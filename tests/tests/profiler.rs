//! The profiler: every backend op of a training step is seen with its shapes and bytes, ranges
//! nest, the table and the Chrome trace hold what was recorded, and nothing is recorded (or left
//! switched on) outside a profile.

use ember::nn::layers::{Conv2d, Linear};
use ember::nn::{Module, ModuleExt};
use ember::profiler::{self, EventKind, SortBy};
use ember::Tensor;
use std::sync::Mutex;

/// A profile records the ops of every thread of the process (as PyTorch's CPU profiler does), so
/// the tests of this file, which count what a profile saw, run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_training_step_is_profiled_op_by_op_with_ranges_table_and_trace() {
    let _serial = serial();
    let conv = Conv2d::new(1, 4, 3).unwrap();
    let fc = Linear::new(4 * 6 * 6, 10).unwrap();
    let x = Tensor::randn([8, 1, 8, 8]).unwrap();
    let ((), prof) = profiler::profile(|| {
        let loss = profiler::record_function("forward", || {
            let h = profiler::record_function("conv", || conv.forward(&x).unwrap().relu().unwrap());
            fc.forward(&h.flatten(1, -1).unwrap()).unwrap().square().unwrap().mean().unwrap()
        });
        profiler::record_function("backward", || loss.backward().unwrap());
    });
    let stats = prof.key_averages();
    let find = |n: &str| stats.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("{n} in {stats:#?}"));
    // the linear layer's product: [8, 144] x [144, 10] somewhere among the matmuls
    assert!(prof.events().iter().any(|e| e.name == "matmul" && e.shapes.contains(&vec![8, 144])));
    assert!(find("matmul").bytes >= 8 * 10 * 4);
    let fwd = find("forward");
    assert_eq!((fwd.kind, fwd.calls), (EventKind::Range, 1));
    let conv_range = find("conv");
    assert!(fwd.self_ns <= fwd.total_ns && conv_range.total_ns <= fwd.total_ns);
    assert!(find("backward").total_ns > 0);
    let table = prof.table(SortBy::TotalTime, 8);
    assert!(table.contains("[forward]") && table.contains("Calls") && table.lines().count() >= 5, "{table}");
    println!("{table}");
    let trace: serde_json::Value = serde_json::from_str(&prof.chrome_trace()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    assert_eq!(events.len(), prof.events().len());
    assert!(events.iter().all(|e| e["ph"] == "X" && e["dur"].as_f64().unwrap() >= 0.0));
    let path = std::env::temp_dir().join(format!("ember-trace-{}.json", std::process::id()));
    prof.export_chrome_trace(&path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 100);
    std::fs::remove_file(&path).unwrap();
    assert!(conv.weight.grad().is_some() && fc.parameters().iter().all(|p| p.grad().is_some()));
}

#[test]
fn a_sequential_is_profiled_layer_by_layer() {
    let _serial = serial();
    let net = ember::nn::Sequential::new()
        .layer(Conv2d::new(1, 2, 3).unwrap())
        .layer(ember::nn::layers::ReLU::default())
        .layer(ember::nn::layers::Flatten::new(1, -1))
        .layer(Linear::new(2 * 6 * 6, 3).unwrap());
    let x = Tensor::randn([2, 1, 8, 8]).unwrap();
    let (y, prof) = profiler::profile(|| net.forward(&x).unwrap());
    assert_eq!(y.shape(), &[2, 3]);
    let names: Vec<String> =
        prof.key_averages().into_iter().filter(|s| s.kind == EventKind::Range).map(|s| s.name).collect();
    for want in ["0.ConvNd<2>", "1.ReLU", "2.Flatten", "3.Linear"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[test]
fn nothing_is_recorded_outside_a_profile_and_a_panic_switches_it_off() {
    let _serial = serial();
    let x = Tensor::randn([16]).unwrap();
    let (_, empty) = profiler::profile(|| ());
    assert!(empty.events().is_empty());
    let r = std::panic::catch_unwind(|| profiler::profile(|| panic!("inside")));
    assert!(r.is_err());
    let _ = x.exp().unwrap(); // after the panic: not recorded anywhere, no profile is running
    let (_, p) = profiler::profile(|| x.exp().unwrap());
    assert_eq!(p.events().len(), 1, "{:?}", p.events());
    assert_eq!(profiler::record_function("outside", || 3), 3);
}

/// Per-op cost when profiling is off and on (printed, for the notes), on small ops where it shows.
#[test]
fn overhead_is_measured() {
    let _serial = serial();
    let x = Tensor::randn([16]).unwrap();
    let run = || {
        let t = std::time::Instant::now();
        for _ in 0..20_000 {
            std::hint::black_box(x.add(&x).unwrap());
        }
        t.elapsed().as_nanos() as f64 / 20_000.0
    };
    run();
    let off = run();
    let (on, prof) = profiler::profile(run);
    assert_eq!(prof.key_averages()[0].calls, 20_000);
    println!("per op: {off:.0} ns without a profile, {on:.0} ns inside one");
    assert!(on.is_finite() && off.is_finite());
}
