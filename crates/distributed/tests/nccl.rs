//! NcclGroup: a world of one on a GPU. Without a GPU (or without NCCL) creating the group is a clear
//! error, which is checked here; the GPU checks then report that they were skipped and why.
#![cfg(feature = "nccl")]

use ember_autograd::{manual_seed, Device, Tensor};
use ember_distributed::{DistributedDataParallel, NcclGroup, ProcessGroup, ReduceOp};
use ember_nn::layers::{Linear, Sequential, Tanh};
use ember_nn::{Module, ModuleExt};
use std::sync::Arc;

fn group_or_skip() -> Option<NcclGroup> {
    match NcclGroup::world_of_one(0) {
        Ok(g) => Some(g),
        Err(e) => {
            let e = e.to_string();
            if !ember_autograd::cuda::is_available() {
                assert!(e.contains("no usable CUDA device"), "{e}");
                eprintln!("skipped the GPU part of the NCCL checks: no CUDA device here ({e})");
            } else {
                assert!(e.contains("NCCL") || e.contains("cuda"), "{e}");
                eprintln!("skipped the GPU part of the NCCL checks: {e}");
            }
            None
        }
    }
}

#[test]
fn a_world_of_one_on_a_gpu_reduces_gathers_and_trains() {
    let Some(g) = group_or_skip() else { return };
    let dev = Device::Cuda(0);
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.5, 4.0, 0.0, 6.0], [2, 3]).unwrap().to(dev).unwrap();
    for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min, ReduceOp::Product] {
        let t = x.deep_clone().unwrap();
        g.all_reduce(&t, op).unwrap().wait().unwrap();
        assert_eq!(t.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap(), "{op:?}");
    }
    // a transposed view is reduced and written through
    let base = x.deep_clone().unwrap();
    g.all_reduce(&base.t().unwrap(), ReduceOp::Sum).unwrap().wait().unwrap();
    assert_eq!(base.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    g.broadcast(&x, 0).unwrap().wait().unwrap();
    let all = g.all_gather(&x).unwrap().wait().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].shape(), x.shape());
    assert_eq!(all[0].to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    let rs = g.reduce_scatter(std::slice::from_ref(&x), ReduceOp::Sum).unwrap().wait().unwrap();
    assert_eq!(rs.to_vec::<f32>().unwrap(), x.to_vec::<f32>().unwrap());
    g.barrier().unwrap().wait().unwrap();
    assert!(g.all_reduce(&Tensor::ones([2]).unwrap(), ReduceOp::Sum).is_err(), "a CPU tensor was accepted");

    // DDP over NCCL gives the plain gradients
    let net = || {
        manual_seed(3);
        let mut s = Sequential::new();
        s.push(Linear::new(3, 4).unwrap());
        s.push(Tanh::default());
        s.push(Linear::new(4, 2).unwrap());
        s.to_device(dev).unwrap();
        s
    };
    let input = Tensor::randn([5, 3]).unwrap().to(dev).unwrap();
    let plain = net();
    plain.forward(&input).unwrap().pow(2.0).unwrap().sum().unwrap().backward().unwrap();
    let ddp = DistributedDataParallel::new(net(), Arc::new(g)).unwrap();
    ddp.forward(&input).unwrap().pow(2.0).unwrap().sum().unwrap().backward().unwrap();
    for (p, q) in ddp.module().parameters().iter().zip(plain.parameters()) {
        assert_eq!(p.grad().unwrap().to_vec_f64().unwrap(), q.grad().unwrap().to_vec_f64().unwrap());
    }
}
