//! The checks that need several processes: `mpirun -n N mpi_check CASE`, launched by
//! `tests/mpi.rs`. Every rank prints `PASS <case> rank <r>` when its checks hold, or
//! `FAIL <case> rank <r>: <why>` and exits with status 1.
//!
//! Cases: `collectives`, `ddp` (MLP f32/f64 and a CNN against one process on the whole batch,
//! overlap on and off), `no_sync`, `unused`, `dead_rank` (the last rank leaves early; the others
//! must report a timeout), `crashed_rank` (the last rank exits with an error status).

use ember_autograd::{manual_seed, no_grad, DType, Result, Tensor};
use ember_distributed::{DdpOptions, DistributedDataParallel, MpiGroup, ProcessGroup, ReduceOp, SyncBatchNorm};
use ember_nn::layers::{BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Tanh};
use ember_nn::{functional as F, Module, ModuleExt, Slot, SlotMut, Traverse};
use std::sync::Arc;

type Check = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($msg)*));
        }
    };
}

fn e(err: ember_autograd::Error) -> String {
    err.to_string()
}

fn main() {
    let case = std::env::args().nth(1).unwrap_or_default();
    let group = match MpiGroup::init() {
        Ok(g) => Arc::new(g),
        Err(err) => {
            eprintln!("FAIL {case}: {err}");
            std::process::exit(1);
        }
    };
    let rank = group.rank();
    let result = match case.as_str() {
        "collectives" => collectives(group.as_ref()),
        "ddp" => ddp(&group),
        "no_sync" => no_sync(&group),
        "unused" => unused(&group),
        "sync_bn" => sync_bn(&group),
        "dead_rank" => dead_rank(group.as_ref()),
        "crashed_rank" => crashed_rank(group.as_ref()),
        "speed" => speed(group.as_ref()),
        other => Err(format!("unknown case {other:?}")),
    };
    match result {
        Ok(()) => println!("PASS {case} rank {rank}"),
        Err(why) => {
            println!("FAIL {case} rank {rank}: {why}");
            drop(group);
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// collectives against their definitions

const DTYPES: [DType; 8] =
    [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::I32, DType::U8, DType::Bool];

/// Rank `r`'s element `i`: small integers, exact in every dtype.
fn value(dtype: DType, r: usize, i: usize) -> f64 {
    match dtype {
        DType::Bool => (r + i).is_multiple_of(3) as u8 as f64,
        DType::U8 => ((r * 7 + i * 3) % 11) as f64,
        _ => ((r * 7 + i * 3) % 11) as f64 - 5.0,
    }
}

fn rank_tensor(dtype: DType, r: usize, shape: &[usize], salt: usize) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let vals: Vec<f64> = (0..n).map(|i| value(dtype, r, i + salt)).collect();
    Tensor::from_vec(vals, shape)?.to_dtype(dtype)
}

/// `op` over the ranks' values of element `i`, as the dtype computes it.
fn reduce_def(dtype: DType, op: ReduceOp, world: usize, i: usize, salt: usize) -> f64 {
    let vals: Vec<f64> = (0..world).map(|r| value(dtype, r, i + salt)).collect();
    let boolean = dtype == DType::Bool;
    match op {
        ReduceOp::Sum if boolean => vals.iter().any(|&v| v != 0.0) as u8 as f64,
        ReduceOp::Product if boolean => vals.iter().all(|&v| v != 0.0) as u8 as f64,
        ReduceOp::Sum => vals.iter().sum(),
        ReduceOp::Avg => vals.iter().sum::<f64>() / world as f64,
        ReduceOp::Product if dtype == DType::U8 => vals.iter().fold(1u8, |a, &v| a.wrapping_mul(v as u8)) as f64,
        ReduceOp::Product => vals.iter().product(),
        ReduceOp::Max => vals.iter().cloned().fold(f64::MIN, f64::max),
        ReduceOp::Min => vals.iter().cloned().fold(f64::MAX, f64::min),
    }
}

fn close(dtype: DType, got: &[f64], want: &[f64]) -> bool {
    let tol = match dtype {
        DType::F16 | DType::BF16 => 1e-2,
        DType::F32 => 1e-6,
        _ => 1e-12,
    };
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() <= tol * w.abs().max(1.0))
}

fn collectives(g: &dyn ProcessGroup) -> Check {
    let (rank, world) = (g.rank(), g.world_size());
    let shapes: [&[usize]; 4] = [&[], &[0], &[7], &[2, 3, 4]];
    let ops = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Product, ReduceOp::Max, ReduceOp::Min];
    let mut checked = 0;
    for dtype in DTYPES {
        for shape in shapes {
            let n: usize = shape.iter().product();
            for op in ops {
                let t = rank_tensor(dtype, rank, shape, 0).map_err(e)?;
                if op == ReduceOp::Avg && !dtype.is_float() {
                    ensure!(g.all_reduce(&t, op).is_err(), "all_reduce avg on {dtype} was accepted");
                    continue;
                }
                g.all_reduce(&t, op).map_err(e)?.wait().map_err(e)?;
                let want: Vec<f64> = (0..n).map(|i| reduce_def(dtype, op, world, i, 0)).collect();
                let got = t.to_vec_f64().map_err(e)?;
                ensure!(t.dtype() == dtype && t.shape() == shape, "all_reduce changed the tensor's dtype or shape");
                ensure!(close(dtype, &got, &want), "all_reduce {op:?} {dtype} {shape:?}: got {got:?}, want {want:?}");
                checked += 1;
            }
            for root in 0..world {
                let t = rank_tensor(dtype, rank, shape, 1).map_err(e)?;
                g.broadcast(&t, root).map_err(e)?.wait().map_err(e)?;
                let want = rank_tensor(dtype, root, shape, 1).map_err(e)?.to_vec_f64().map_err(e)?;
                ensure!(t.to_vec_f64().map_err(e)? == want, "broadcast from {root} {dtype} {shape:?}");
                checked += 1;
            }
        }
        // uneven all_gather: rank r contributes r rows (rank 0 none)
        let mine = rank_tensor(dtype, rank, &[rank, 3], 2).map_err(e)?;
        let all = g.all_gather(&mine).map_err(e)?.wait().map_err(e)?;
        ensure!(all.len() == world, "all_gather gave {} tensors", all.len());
        for (r, t) in all.iter().enumerate() {
            let want = rank_tensor(dtype, r, &[r, 3], 2).map_err(e)?;
            ensure!(t.shape() == want.shape() && t.dtype() == dtype, "all_gather piece {r}: shape {:?}", t.shape());
            ensure!(t.to_vec_f64().map_err(e)? == want.to_vec_f64().map_err(e)?, "all_gather piece {r} {dtype}");
        }
        // all_gather of a 0-dim tensor
        let s = rank_tensor(dtype, rank, &[], 3).map_err(e)?;
        let all = g.all_gather(&s).map_err(e)?.wait().map_err(e)?;
        for (r, t) in all.iter().enumerate() {
            ensure!(t.shape().is_empty(), "0-dim all_gather piece has shape {:?}", t.shape());
            ensure!(t.item().map_err(e)? == value(dtype, r, 3), "0-dim all_gather piece {r} {dtype}");
        }
        // reduce_scatter: input j has j + 1 rows; rank r receives the sum of every rank's input r
        if dtype != DType::Bool {
            let inputs: Vec<Tensor> =
                (0..world).map(|j| rank_tensor(dtype, rank, &[j + 1, 2], 10 * j)).collect::<Result<_>>().map_err(e)?;
            let out = g.reduce_scatter(&inputs, ReduceOp::Sum).map_err(e)?.wait().map_err(e)?;
            let want: Vec<f64> =
                (0..2 * (rank + 1)).map(|i| reduce_def(dtype, ReduceOp::Sum, world, i, 10 * rank)).collect();
            ensure!(out.shape() == [rank + 1, 2], "reduce_scatter shape {:?}", out.shape());
            ensure!(close(dtype, &out.to_vec_f64().map_err(e)?, &want), "reduce_scatter {dtype}");
            checked += 1;
        }
    }
    // a strided view is reduced and written through to its base
    let base = rank_tensor(DType::F64, rank, &[3, 4], 0).map_err(e)?;
    let view = base.t().map_err(e)?;
    g.all_reduce(&view, ReduceOp::Sum).map_err(e)?.wait().map_err(e)?;
    let want: Vec<f64> = (0..12).map(|i| reduce_def(DType::F64, ReduceOp::Sum, world, i, 0)).collect();
    ensure!(base.to_vec_f64().map_err(e)? == want, "all_reduce through a transposed view");
    // mismatched calls: the same clear error on every rank, and the group still works afterwards
    let odd = Tensor::zeros([rank + 1]).map_err(e)?;
    let err = g.all_reduce(&odd, ReduceOp::Sum).map_err(e)?.wait().err().map(|x| x.to_string()).unwrap_or_default();
    ensure!(err.contains("do not match") && err.contains("rank 1: all_reduce f32 [2]"), "mismatch error: {err:?}");
    let odd = Tensor::zeros([2]).map_err(e)?.to_dtype(if rank == 0 { DType::F32 } else { DType::F64 }).map_err(e)?;
    let err = g.broadcast(&odd, 0).map_err(e)?.wait().err().map(|x| x.to_string()).unwrap_or_default();
    ensure!(err.contains("rank 0: broadcast f32 [2] root=0") && err.contains("f64"), "dtype mismatch error: {err:?}");
    ensure!(g.broadcast(&Tensor::zeros([1]).map_err(e)?, world).is_err(), "a root outside the group was accepted");
    g.barrier().map_err(e)?.wait().map_err(e)?;
    // many collectives in flight at once complete in order
    let ts: Vec<Tensor> = (0..20).map(|k| Tensor::full([100], k as f64)).collect::<Result<_>>().map_err(e)?;
    let works = ts.iter().map(|t| g.all_reduce(t, ReduceOp::Sum)).collect::<Result<Vec<_>>>().map_err(e)?;
    for w in works {
        w.wait().map_err(e)?;
    }
    for (k, t) in ts.iter().enumerate() {
        ensure!(t.to_vec_f64().map_err(e)?.iter().all(|&v| v == (k * world) as f64), "pipelined all_reduce {k}");
    }
    println!("rank {rank}: {checked} collective results checked against their definitions");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DDP against one process on the whole batch

fn mlp(dtype: DType) -> Result<Sequential> {
    manual_seed(0);
    let mut s = Sequential::new();
    s.push(Linear::new(6, 16)?);
    s.push(Tanh::default());
    s.push(Linear::new(16, 8)?);
    s.push(ReLU::default());
    s.push(Linear::new(8, 3)?);
    s.to_dtype(dtype)?;
    Ok(s)
}

fn cnn() -> Result<Sequential> {
    manual_seed(0);
    let mut s = Sequential::new();
    s.push(Conv2d::new(1, 4, [3, 3])?);
    s.push(ReLU::default());
    s.push(MaxPool2d::new(&[2, 2]));
    s.push(Flatten::new(1, -1));
    s.push(Linear::new(36, 3)?);
    Ok(s)
}

/// The whole batch (every rank draws the same one), and this rank's share of it.
fn batch(dtype: DType, world: usize, per_rank: usize, input: &[usize], seed: u64) -> Result<(Tensor, Tensor)> {
    manual_seed(seed);
    let mut shape = vec![world * per_rank];
    shape.extend_from_slice(input);
    let x = Tensor::randn(&shape)?.to_dtype(dtype)?;
    let y = Tensor::randn([world * per_rank, 3])?.to_dtype(dtype)?;
    Ok((x, y))
}

fn sgd_step(params: &[Tensor], lr: f64) -> Result<()> {
    no_grad(|| {
        for p in params {
            if let Some(g) = p.grad() {
                p.sub_(&g.mul(lr)?)?;
            }
            p.set_grad(None);
        }
        Ok(())
    })
}

/// Largest difference between the two parameter lists, relative to the largest reference value.
fn rel_diff(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let (mut diff, mut scale) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.to_vec_f64()?.iter().zip(y.to_vec_f64()?) {
            diff = diff.max((u - v).abs());
            scale = scale.max(v.abs());
        }
    }
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

/// Every rank's parameters are bit-identical.
fn equal_on_every_rank(g: &dyn ProcessGroup, params: &[Tensor]) -> Check {
    for p in params {
        let flat = p.detach().reshape([1, -1]).map_err(e)?;
        let all = g.all_gather(&flat).map_err(e)?.wait().map_err(e)?;
        let mine = flat.to_vec_f64().map_err(e)?;
        for (r, t) in all.iter().enumerate() {
            ensure!(t.to_vec_f64().map_err(e)? == mine, "parameters differ between rank {} and rank {r}", g.rank());
        }
    }
    Ok(())
}

struct DdpCase {
    name: &'static str,
    dtype: DType,
    input: Vec<usize>,
    build: fn(DType) -> Result<Sequential>,
    tol: f64,
    options: DdpOptions,
}

fn run_ddp_case(group: &Arc<MpiGroup>, c: &DdpCase) -> Check {
    let (rank, world) = (group.rank(), group.world_size());
    let (per_rank, steps, lr) = (4, 3, 0.1);
    let reference = (c.build)(c.dtype).map_err(e)?;
    let dyn_group: Arc<dyn ProcessGroup> = group.clone();
    let ddp = DistributedDataParallel::with_options((c.build)(c.dtype).map_err(e)?, dyn_group, c.options.clone())
        .map_err(e)?;
    for step in 0..steps {
        let (x, y) = batch(c.dtype, world, per_rank, &c.input, 100 + step).map_err(e)?;
        // one process, the whole batch
        let loss = F::mse_loss_with(&reference.forward(&x).map_err(e)?, &y, F::Reduction::Mean).map_err(e)?;
        loss.backward().map_err(e)?;
        sgd_step(&reference.parameters(), lr).map_err(e)?;
        // this rank's share
        let (xs, ys) = (
            x.narrow(0, (rank * per_rank) as isize, per_rank).map_err(e)?,
            y.narrow(0, (rank * per_rank) as isize, per_rank).map_err(e)?,
        );
        let loss = F::mse_loss_with(&ddp.forward(&xs).map_err(e)?, &ys, F::Reduction::Mean).map_err(e)?;
        loss.backward().map_err(e)?;
        sgd_step(&ddp.module().parameters(), lr).map_err(e)?;
    }
    let diff = rel_diff(&ddp.module().parameters(), &reference.parameters()).map_err(e)?;
    ensure!(
        diff <= c.tol,
        "{}: parameters after {steps} steps differ from one process by {diff:e} (limit {:e})",
        c.name,
        c.tol
    );
    equal_on_every_rank(group.as_ref(), &ddp.module().parameters())?;
    println!(
        "rank {rank}: ddp {} ({} buckets): relative difference to one process {diff:.2e}",
        c.name,
        ddp.num_buckets()
    );
    Ok(())
}

fn ddp(group: &Arc<MpiGroup>) -> Check {
    let small = DdpOptions::default().bucket_cap_mb(0.0005); // several buckets
    let cases = [
        DdpCase { name: "mlp f32", dtype: DType::F32, input: vec![6], build: mlp, tol: 1e-6, options: small.clone() },
        DdpCase { name: "mlp f64", dtype: DType::F64, input: vec![6], build: mlp, tol: 1e-12, options: small.clone() },
        DdpCase {
            name: "mlp f64 without overlap",
            dtype: DType::F64,
            input: vec![6],
            build: mlp,
            tol: 1e-12,
            options: small.clone().overlap(false),
        },
        DdpCase {
            name: "mlp f32 one bucket",
            dtype: DType::F32,
            input: vec![6],
            build: mlp,
            tol: 1e-6,
            options: DdpOptions::default(),
        },
        DdpCase {
            name: "cnn f32",
            dtype: DType::F32,
            input: vec![1, 8, 8],
            build: |_| cnn(),
            tol: 1e-6,
            options: small,
        },
    ];
    for c in &cases {
        run_ddp_case(group, c)?;
    }
    Ok(())
}

/// Gradient accumulation: a micro-batch under no_sync, then a synchronised one, equals one process
/// summing the two micro-batches' losses over the whole batch.
fn no_sync(group: &Arc<MpiGroup>) -> Check {
    let (rank, world) = (group.rank(), group.world_size());
    let per_rank = 3;
    let reference = mlp(DType::F64).map_err(e)?;
    let local = mlp(DType::F64).map_err(e)?;
    let dyn_group: Arc<dyn ProcessGroup> = group.clone();
    let ddp = DistributedDataParallel::new(mlp(DType::F64).map_err(e)?, dyn_group).map_err(e)?;
    let micro: Vec<(Tensor, Tensor)> =
        (0..2).map(|m| batch(DType::F64, world, per_rank, &[6], 200 + m)).collect::<Result<_>>().map_err(e)?;
    let share = |t: &Tensor| t.narrow(0, (rank * per_rank) as isize, per_rank);
    for (m, (x, y)) in micro.iter().enumerate() {
        let loss = F::mse_loss_with(&reference.forward(x).map_err(e)?, y, F::Reduction::Mean).map_err(e)?;
        loss.backward().map_err(e)?;
        let (xs, ys) = (share(x).map_err(e)?, share(y).map_err(e)?);
        let run = || -> Result<()> { F::mse_loss_with(&ddp.forward(&xs)?, &ys, F::Reduction::Mean)?.backward() };
        if m == 0 {
            ddp.no_sync(run).map_err(e)?;
            // unsynchronised: exactly the local gradient
            F::mse_loss_with(&local.forward(&xs).map_err(e)?, &ys, F::Reduction::Mean)
                .map_err(e)?
                .backward()
                .map_err(e)?;
            let (got, want): (Vec<Tensor>, Vec<Tensor>) = ddp
                .module()
                .parameters()
                .iter()
                .zip(local.parameters())
                .map(|(p, q)| (p.grad().expect("grad"), q.grad().expect("grad")))
                .unzip();
            ensure!(rel_diff(&got, &want).map_err(e)? == 0.0, "gradients under no_sync are not the local ones");
        } else {
            run().map_err(e)?;
        }
    }
    let got: Vec<Tensor> = ddp.module().parameters().iter().map(|p| p.grad().expect("grad")).collect();
    let want: Vec<Tensor> = reference.parameters().iter().map(|p| p.grad().expect("grad")).collect();
    let diff = rel_diff(&got, &want).map_err(e)?;
    ensure!(diff <= 1e-12, "accumulated gradients differ from one process by {diff:e}");
    equal_on_every_rank(group.as_ref(), &got)?;
    println!("rank {rank}: no_sync accumulation: relative difference to one process {diff:.2e}");
    Ok(())
}

/// A network whose second branch only rank 0 uses, and a third layer nobody uses.
struct Branches {
    a: Linear,
    b: Linear,
    c: Linear,
    use_b: bool,
}

impl Traverse for Branches {
    fn visit<'a>(&'a self, v: &mut dyn FnMut(Slot<'a>)) {
        v(Slot::Child("a", &self.a));
        v(Slot::Child("b", &self.b));
        v(Slot::Child("c", &self.c));
    }
    fn visit_mut(&mut self, v: &mut dyn FnMut(SlotMut<'_>)) {
        v(SlotMut::Child("a", &mut self.a));
        v(SlotMut::Child("b", &mut self.b));
        v(SlotMut::Child("c", &mut self.c));
    }
}

impl Module for Branches {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.a.forward(x)?;
        if self.use_b {
            self.b.forward(&h)
        } else {
            Ok(h)
        }
    }
}

fn branches(use_b: bool) -> Result<Branches> {
    manual_seed(0);
    Ok(Branches { a: Linear::new(4, 4)?, b: Linear::new(4, 4)?, c: Linear::new(4, 4)?, use_b })
}

fn unused(group: &Arc<MpiGroup>) -> Check {
    let rank = group.rank();
    let dyn_group: Arc<dyn ProcessGroup> = group.clone();
    let opts = DdpOptions::default().find_unused_parameters(true).bucket_cap_mb(0.0001);
    let ddp = DistributedDataParallel::with_options(branches(rank == 0).map_err(e)?, dyn_group, opts).map_err(e)?;
    for step in 0..2 {
        manual_seed(300 + step + rank as u64);
        let x = Tensor::randn([5, 4]).map_err(e)?;
        ddp.forward(&x).map_err(e)?.pow(2.0).map_err(e)?.sum().map_err(e)?.backward().map_err(e)?;
        let m = ddp.module();
        ensure!(m.b.weight.grad().is_some(), "b (used by rank 0 only) has no averaged gradient on rank {rank}");
        ensure!(m.c.weight.grad().is_none(), "c (used by no rank) got a gradient");
        sgd_step(&m.parameters(), 0.05).map_err(e)?;
    }
    equal_on_every_rank(group.as_ref(), &ddp.module().parameters())?;
    // without find_unused_parameters, the next forward names the parameter that got no gradient
    let dyn_group: Arc<dyn ProcessGroup> = group.clone();
    let strict = DistributedDataParallel::new(branches(true).map_err(e)?, dyn_group).map_err(e)?;
    let x = Tensor::randn([5, 4]).map_err(e)?;
    strict.forward(&x).map_err(e)?.sum().map_err(e)?.backward().map_err(e)?;
    let err = strict.forward(&x).err().map(|x| x.to_string()).unwrap_or_default();
    ensure!(err.contains("c.weight") && err.contains("find_unused_parameters"), "unreduced bucket error: {err:?}");
    Ok(())
}

/// Conv, batch norm (synchronised when a group is given), ReLU, linear; in f64.
fn bn_net(group: Option<Arc<dyn ProcessGroup>>) -> Result<Sequential> {
    manual_seed(0);
    let mut s = Sequential::new();
    s.push(Conv2d::new(1, 3, [3, 3])?);
    match group {
        Some(g) => s.push(SyncBatchNorm::new(BatchNorm2d::new(3)?, g)),
        None => s.push(BatchNorm2d::new(3)?),
    }
    s.push(ReLU::default());
    s.push(Flatten::new(1, -1));
    s.push(Linear::new(3 * 6 * 6, 3)?);
    s.to_dtype(DType::F64)?;
    Ok(s)
}

/// DDP with SyncBatchNorm on shards equals one process with BatchNorm on the whole batch:
/// parameters, running statistics and the batch counter.
fn sync_bn(group: &Arc<MpiGroup>) -> Check {
    let (rank, world) = (group.rank(), group.world_size());
    let per_rank = 3;
    let reference = bn_net(None).map_err(e)?;
    let dyn_group: Arc<dyn ProcessGroup> = group.clone();
    let ddp = DistributedDataParallel::new(bn_net(Some(dyn_group.clone())).map_err(e)?, dyn_group).map_err(e)?;
    for step in 0..2 {
        let (x, y) = batch(DType::F64, world, per_rank, &[1, 8, 8], 400 + step).map_err(e)?;
        F::mse_loss_with(&reference.forward(&x).map_err(e)?, &y, F::Reduction::Mean)
            .map_err(e)?
            .backward()
            .map_err(e)?;
        sgd_step(&reference.parameters(), 0.1).map_err(e)?;
        let (xs, ys) = (
            x.narrow(0, (rank * per_rank) as isize, per_rank).map_err(e)?,
            y.narrow(0, (rank * per_rank) as isize, per_rank).map_err(e)?,
        );
        F::mse_loss_with(&ddp.forward(&xs).map_err(e)?, &ys, F::Reduction::Mean).map_err(e)?.backward().map_err(e)?;
        sgd_step(&ddp.module().parameters(), 0.1).map_err(e)?;
    }
    let (got, want): (Vec<Tensor>, Vec<Tensor>) =
        ddp.module().state_dict().into_iter().zip(reference.state_dict()).map(|((_, a), (_, b))| (a, b)).unzip();
    let diff = rel_diff(&got, &want).map_err(e)?;
    ensure!(diff <= 1e-10, "SyncBatchNorm state after 2 steps differs from one process's BatchNorm by {diff:e}");
    equal_on_every_rank(group.as_ref(), &got)?;
    println!("rank {rank}: SyncBatchNorm: relative difference to one process {diff:.2e}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// failures

/// The last rank leaves without calling the collective; the others must fail with a timeout.
fn dead_rank(g: &dyn ProcessGroup) -> Check {
    if g.rank() == g.world_size() - 1 {
        println!("rank {} leaves early", g.rank());
        return Ok(());
    }
    let t = Tensor::ones([10]).map_err(e)?;
    let start = std::time::Instant::now();
    match g.all_reduce(&t, ReduceOp::Sum).map_err(e)?.wait() {
        Ok(()) => Err("all_reduce completed without the last rank".into()),
        Err(err) => {
            println!("TIMEOUT after {:.1} s: {err}", start.elapsed().as_secs_f64());
            // the group is unusable now, and says so
            let again = g.barrier().map_err(e)?.wait().err().map(|x| x.to_string()).unwrap_or_default();
            ensure!(again.contains("unusable"), "after a timeout: {again:?}");
            Ok(())
        }
    }
}

/// The last rank dies with an error status before the collective; mpirun must end the job.
fn crashed_rank(g: &dyn ProcessGroup) -> Check {
    if g.rank() == g.world_size() - 1 {
        eprintln!("rank {} exits with status 3", g.rank());
        std::process::exit(3);
    }
    let t = Tensor::ones([10]).map_err(e)?;
    g.all_reduce(&t, ReduceOp::Sum).map_err(e)?.wait().map_err(e)?;
    Err("all_reduce completed without the last rank".into())
}

/// All-reduce time for a few sizes (not a check: printed for the notes).
fn speed(g: &dyn ProcessGroup) -> Check {
    for n in [1usize << 10, 1 << 16, 535_818, 1 << 22] {
        let t = Tensor::ones([n]).map_err(e)?;
        for _ in 0..3 {
            g.all_reduce(&t, ReduceOp::Sum).map_err(e)?.wait().map_err(e)?;
        }
        let start = std::time::Instant::now();
        let reps = 20;
        for _ in 0..reps {
            g.all_reduce(&t, ReduceOp::Sum).map_err(e)?.wait().map_err(e)?;
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
        if g.rank() == 0 {
            println!("all_reduce f32 x {n}: {ms:.3} ms ({:.2} GB/s of tensor)", 4.0 * n as f64 / ms / 1e6);
        }
    }
    Ok(())
}
