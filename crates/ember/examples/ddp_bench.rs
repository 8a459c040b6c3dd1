//! What bucketed overlap buys: workloads W7 (MLP train step) and W11 (Transformer encoder layer
//! forward + backward) as DistributedDataParallel steps, every rank with the workload's full batch,
//! with each bucket's all-reduce started during backward (`overlap`) and with all of them after
//! backward (`after`), plus the same step without DDP (`local`). Rank 0 prints one JSON line per
//! figure (ms per step, median over rounds), in the style of `cargo xtask bench`.
//!
//! ```sh
//! cargo build --release --features mpi --example ddp_bench
//! mpirun -n 2 --oversubscribe target/release/examples/ddp_bench            # W7 and W11
//! torchrun --nproc_per_node 2 bench/ddp_torch.py                           # PyTorch DDP (gloo)
//! ```

use ember::distributed::{init_process_group, DdpOptions, DistributedDataParallel, ProcessGroup};
use ember::nn::layers::{Linear, ReLU, TransformerEncoderLayer, TransformerOptions};
use ember::nn::{functional as F, Module, ModuleExt, Sequential};
use ember::optim::{Adam, AdamOptions, Optimizer};
use ember::{manual_seed, Result, Tensor};
use std::sync::Arc;
use std::time::Instant;

const ROUNDS: usize = 7;
const STEPS: usize = 5;

fn w7() -> Result<Sequential> {
    Ok(Sequential::new()
        .layer(Linear::new(784, 512)?)
        .layer(ReLU::default())
        .layer(Linear::new(512, 256)?)
        .layer(ReLU::default())
        .layer(Linear::new(256, 10)?))
}

fn w11() -> Result<TransformerEncoderLayer> {
    let mut o = TransformerOptions::new(256, 4);
    o.dim_feedforward = 1024;
    o.dropout = 0.0;
    o.batch_first = true;
    TransformerEncoderLayer::new(&o)
}

/// Median ms per step over ROUNDS rounds of STEPS steps, every round started together.
fn time(group: &dyn ProcessGroup, mut step: impl FnMut() -> Result<()>) -> Result<(f64, f64, f64)> {
    for _ in 0..3 {
        step()?;
    }
    let mut ms = vec![];
    for _ in 0..ROUNDS {
        group.barrier()?.wait()?;
        let t = Instant::now();
        for _ in 0..STEPS {
            step()?;
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3 / STEPS as f64);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[ROUNDS / 2], ms[0], ms[ROUNDS - 1]))
}

fn emit(group: &dyn ProcessGroup, id: &str, mode: &str, (median, min, max): (f64, f64, f64)) {
    if group.rank() == 0 {
        println!(
            "{{\"id\": \"{id}\", \"lib\": \"ember\", \"mode\": \"ddp-{mode}\", \"ranks\": {}, \"threads\": {}, \"value\": {median:.3}, \"unit\": \"ms\", \"min_ms\": {min:.3}, \"max_ms\": {max:.3}, \"steps\": {}}}",
            group.world_size(),
            ember::cpu::num_threads(),
            ROUNDS * STEPS
        );
    }
}

fn main() -> Result<()> {
    let group = init_process_group("mpi")?;
    let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(1usize);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        ember::cpu::set_num_threads((cores / local).max(1));
    }
    let only = std::env::args().nth(1).unwrap_or_else(|| "W7,W11".into());
    let g: &dyn ProcessGroup = group.as_ref();
    manual_seed(group.rank() as u64);
    if only.contains("W7") {
        let x = Tensor::randn([128, 784])?;
        let y = Tensor::randint(0, 10, [128])?;
        for mode in ["local", "overlap", "after"] {
            manual_seed(0);
            let net = w7()?;
            let mut opt = Adam::adam(net.parameters(), AdamOptions::adam(1e-3))?;
            let ddp = match mode {
                "local" => None,
                _ => Some(DistributedDataParallel::with_options(
                    w7()?,
                    Arc::clone(&group),
                    DdpOptions::default().overlap(mode == "overlap"),
                )?),
            };
            if let Some(d) = &ddp {
                opt = Adam::adam(d.module().parameters(), AdamOptions::adam(1e-3))?;
            }
            let t = time(g, || {
                opt.zero_grad()?;
                let out = match &ddp {
                    Some(d) => d.forward(&x)?,
                    None => net.forward(&x)?,
                };
                F::cross_entropy_with(&out, &y, &Default::default())?.backward()?;
                opt.step()
            })?;
            emit(g, "W7", mode, t);
        }
    }
    if only.contains("W11") {
        let x = Tensor::randn([16, 128, 256])?;
        for mode in ["local", "overlap", "after"] {
            manual_seed(0);
            let layer = w11()?;
            let ddp = match mode {
                "local" => None,
                _ => Some(DistributedDataParallel::with_options(
                    w11()?,
                    Arc::clone(&group),
                    DdpOptions::default().overlap(mode == "overlap"),
                )?),
            };
            let t = time(g, || {
                let out = match &ddp {
                    Some(d) => {
                        d.module().zero_grad();
                        d.forward(&x)?
                    }
                    None => {
                        layer.zero_grad();
                        layer.forward(&x)?
                    }
                };
                out.sum()?.backward()
            })?;
            emit(g, "W11", mode, t);
        }
    }
    Ok(())
}
