//! DDP and the process-group API in one process (`WorldOfOne`): what runs on every machine,
//! without a launcher. The multi-process checks are in `tests/mpi.rs` (feature `mpi`).

use ember_autograd::{manual_seed, no_grad, Tensor};
use ember_distributed::{init_process_group, DdpOptions, DistributedDataParallel, ProcessGroup, ReduceOp, WorldOfOne};
use ember_nn::layers::{Linear, Sequential, Tanh};
use ember_nn::{Module, ModuleExt};
use std::sync::Arc;

/// `manual_seed` is process-wide: tests that build seeded networks run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn net() -> Sequential {
    manual_seed(7);
    let mut s = Sequential::new();
    s.push(Linear::new(3, 5).unwrap());
    s.push(Tanh::default());
    s.push(Linear::new(5, 2).unwrap());
    s
}

fn grads(m: &impl ModuleExt) -> Vec<Vec<f64>> {
    m.parameters().iter().map(|p| p.grad().map(|g| g.to_vec_f64().unwrap()).unwrap_or_default()).collect()
}

#[test]
fn a_world_of_one_ddp_gives_the_plain_gradients_for_every_bucketing() {
    let _serial = serial();
    let x = Tensor::randn([4, 3]).unwrap();
    let plain = net();
    plain.forward(&x).unwrap().pow(2.0).unwrap().sum().unwrap().backward().unwrap();
    for options in
        [DdpOptions::default(), DdpOptions::default().bucket_cap_mb(1e-5), DdpOptions::default().overlap(false)]
    {
        let ddp = DistributedDataParallel::with_options(net(), Arc::new(WorldOfOne), options).unwrap();
        ddp.forward(&x).unwrap().pow(2.0).unwrap().sum().unwrap().backward().unwrap();
        assert_eq!(grads(ddp.module()), grads(&plain));
    }
    // the state_dict is the module's under "module." (PyTorch's keys)
    let ddp = DistributedDataParallel::new(net(), Arc::new(WorldOfOne)).unwrap();
    let keys: Vec<String> = ddp.state_dict().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys[0], "module.0.weight");
    assert_eq!(ddp.num_buckets(), 1);
    assert_eq!(
        DistributedDataParallel::with_options(net(), Arc::new(WorldOfOne), DdpOptions::default().bucket_cap_mb(1e-5))
            .unwrap()
            .num_buckets(),
        4
    );
}

#[test]
fn no_sync_and_a_synchronised_backward_accumulate() {
    let _serial = serial();
    let ddp = DistributedDataParallel::new(net(), Arc::new(WorldOfOne)).unwrap();
    let plain = net();
    let (a, b) = (Tensor::randn([2, 3]).unwrap(), Tensor::randn([2, 3]).unwrap());
    ddp.no_sync(|| ddp.forward(&a).unwrap().sum().unwrap().backward()).unwrap();
    ddp.forward(&b).unwrap().sum().unwrap().backward().unwrap();
    plain.forward(&a).unwrap().sum().unwrap().backward().unwrap();
    plain.forward(&b).unwrap().sum().unwrap().backward().unwrap();
    let (g, want) = (grads(ddp.module()), grads(&plain));
    for (u, v) in g.iter().flatten().zip(want.iter().flatten()) {
        assert!((u - v).abs() <= 1e-6 * v.abs().max(1.0), "{u} vs {v}");
    }
}

/// A module holding a layer its forward never calls.
struct WithSpare {
    used: Sequential,
    spare: Linear,
}

impl ember_nn::Traverse for WithSpare {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(ember_nn::Slot<'a>)) {
        v(ember_nn::Slot::Child("used", &self.used));
        v(ember_nn::Slot::Child("spare", &self.spare));
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(ember_nn::SlotMut<'_>)) {
        v(ember_nn::SlotMut::Child("used", &mut self.used));
        v(ember_nn::SlotMut::Child("spare", &mut self.spare));
    }
}

impl Module for WithSpare {
    fn forward(&self, x: &Tensor) -> ember_autograd::Result<Tensor> {
        self.used.forward(x)
    }
}

fn with_spare() -> WithSpare {
    WithSpare { used: net(), spare: Linear::new(2, 2).unwrap() }
}

#[test]
fn a_parameter_without_gradient_is_named_at_the_next_forward() {
    let _serial = serial();
    let x = Tensor::randn([2, 3]).unwrap();
    let strict = DistributedDataParallel::new(with_spare(), Arc::new(WorldOfOne)).unwrap();
    strict.forward(&x).unwrap().sum().unwrap().backward().unwrap();
    // evaluation forwards (no grad) check and arm nothing
    no_grad(|| strict.forward(&x)).unwrap();
    let e = strict.forward(&x).unwrap_err().to_string();
    assert!(e.contains("spare.weight") && e.contains("find_unused_parameters(true)"), "{e}");
    // with find_unused_parameters the spare layer is skipped and keeps no gradient
    let lenient = DistributedDataParallel::with_options(
        with_spare(),
        Arc::new(WorldOfOne),
        DdpOptions::default().find_unused_parameters(true),
    )
    .unwrap();
    for _ in 0..2 {
        lenient.forward(&x).unwrap().sum().unwrap().backward().unwrap();
        assert!(lenient.module().used.parameters().iter().all(|p| p.grad().is_some()));
        assert!(lenient.module().spare.weight.grad().is_none());
    }
}

#[test]
fn world_of_one_collectives_and_engine_names() {
    let g = WorldOfOne;
    let t = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    g.all_reduce(&t, ReduceOp::Avg).unwrap().wait().unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), [1.0, 2.0]);
    assert!(g.all_reduce(&Tensor::from_vec(vec![1i64], [1]).unwrap(), ReduceOp::Avg).is_err());
    let all = g.all_gather(&t).unwrap().wait().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].to_vec::<f32>().unwrap(), [1.0, 2.0]);
    assert!(g.broadcast(&t, 1).is_err());
    assert!(g.reduce_scatter(&[t.clone(), t.clone()], ReduceOp::Sum).is_err());
    let w = g.barrier().unwrap();
    assert!(w.is_completed());
    w.wait().unwrap();
    assert_eq!(init_process_group("local").unwrap().world_size(), 1);
    assert!(init_process_group("gloo").err().unwrap().to_string().contains("unknown engine"));
    if !ember_distributed::HAS_MPI {
        let e = init_process_group("mpi").err().unwrap().to_string();
        assert!(e.contains("--features mpi"), "{e}");
    }
}
