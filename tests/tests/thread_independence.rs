//! Results do not depend on the CPU thread count: the main job's model (workload W13) trained for
//! a few steps with 1, 2 and 3 threads gives the same losses and parameters, bit for bit. Every
//! kernel that sums splits its work at boundaries fixed by the shapes, not by the threads. (In its
//! own test binary: the thread count is process-wide.)

use ember::nn::layers::{BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU};
use ember::nn::{functional as F, Module, ModuleExt, Sequential};
use ember::optim::{AdamOptions, AdamW, Optimizer};
use ember::{manual_seed, Tensor};

/// Bit patterns of a tensor's values.
fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// A parameter's name, the bits of its first gradient and of its final value.
type ParamBits = (String, Vec<u32>, Vec<u32>);

/// The W13 model trained `steps` steps on fixed random data with `threads` threads: the losses, and
/// every parameter's first gradient and final value (by name).
fn train(threads: usize, steps: usize) -> (Vec<u32>, Vec<ParamBits>) {
    ember::cpu::set_num_threads(threads);
    manual_seed(3);
    let net = Sequential::new()
        .layer(Conv2d::square(1, 32, 3, 1, 1).unwrap())
        .layer(BatchNorm2d::new(32).unwrap())
        .layer(ReLU::default())
        .layer(MaxPool2d::square(2))
        .layer(Conv2d::square(32, 64, 3, 1, 1).unwrap())
        .layer(BatchNorm2d::new(64).unwrap())
        .layer(ReLU::default())
        .layer(MaxPool2d::square(2))
        .layer(Flatten::default())
        .layer(Dropout::new(0.3))
        .layer(Linear::new(64 * 49, 128).unwrap())
        .layer(ReLU::default())
        .layer(Linear::new(128, 10).unwrap());
    let mut opt = AdamW::adamw(net.parameters(), AdamOptions::adamw(2e-3)).unwrap();
    let x = Tensor::randn([64, 1, 28, 28]).unwrap();
    let y = Tensor::randint(0, 10, [64]).unwrap();
    let mut losses = vec![];
    let mut first_grads = vec![];
    for step in 0..steps {
        opt.zero_grad().unwrap();
        let loss = F::cross_entropy(&net.forward(&x).unwrap(), &y).unwrap();
        loss.backward().unwrap();
        if step == 0 {
            first_grads = net.named_parameters().iter().map(|(_, p)| bits(&p.grad().unwrap())).collect();
        }
        opt.step().unwrap();
        losses.push(loss.item().unwrap() as f32);
    }
    let params =
        net.named_parameters().into_iter().zip(first_grads).map(|((name, p), g)| (name, g, bits(&p))).collect();
    (losses.iter().map(|v| v.to_bits()).collect(), params)
}

#[test]
fn the_main_jobs_model_trains_bit_identically_on_1_2_and_3_threads() {
    let (losses1, params1) = train(1, 3);
    for threads in [2, 3] {
        let (losses, params) = train(threads, 3);
        let differ: Vec<&String> = params1.iter().zip(&params).filter(|(a, b)| a.1 != b.1).map(|(a, _)| &a.0).collect();
        assert!(differ.is_empty(), "{threads} threads: the first gradients of {differ:?} differ from 1 thread's");
        for ((name, _, p1), (_, _, p)) in params1.iter().zip(&params) {
            assert!(p1 == p, "{threads} threads: {name} after 3 steps differs from 1 thread's");
        }
        assert_eq!(losses1, losses, "{threads} threads: losses differ from 1 thread's");
    }
    ember::cpu::set_num_threads(0);
}
