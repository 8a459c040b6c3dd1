//! Graph memory stays flat over a long training-like loop. In its own test binary (its own process),
//! because it reads the process-wide count of live graph nodes.

use ember::{live_nodes, no_grad, Tensor};

#[test]
fn memory_stays_flat_over_many_steps() {
    let w = Tensor::randn([8, 8]).unwrap().requires_grad_(true).unwrap();
    let x = Tensor::randn([4, 8]).unwrap();
    let before = live_nodes();
    for _ in 0..10_000 {
        let loss = x.matmul(&w).unwrap().tanh().unwrap().pow(2.0).unwrap().mean().unwrap();
        loss.backward().unwrap();
        no_grad(|| w.sub_(&w.grad().unwrap().mul(0.01).unwrap())).unwrap();
        w.set_grad(None);
    }
    assert_eq!(live_nodes(), before, "graph nodes leaked over 10,000 steps");
}
