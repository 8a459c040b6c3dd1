//! Profiling aid for workload W9: 1000 scalar ops with requires_grad, then backward.
use ember::Tensor;
fn main() {
    let a = Tensor::full([1], 0.999).unwrap().requires_grad_(true).unwrap();
    let b = Tensor::full([1], 0.001).unwrap().requires_grad_(true).unwrap();
    let x0 = Tensor::ones([1]).unwrap().requires_grad_(true).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..2000 {
        let mut y = x0.clone();
        for _ in 0..500 {
            y = y.mul(&a).unwrap().add(&b).unwrap();
        }
        y.backward().unwrap();
        a.set_grad(None);
        b.set_grad(None);
        x0.set_grad(None);
    }
    println!("{:.3} us/op", t.elapsed().as_secs_f64() * 1e6 / 2000.0 / 1000.0);
}
