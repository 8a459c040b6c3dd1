//! The main job: train a small CNN on the MNIST subset bundled in `data/mnist-5k` (the recipe of
//! workload W13: conv-bn-relu-pool twice, dropout, two linear layers; AdamW with a one-cycle
//! schedule; random shifts of up to 2 px), with a progress bar, a checkpoint per epoch,
//! `--resume`, and a PNG chart of the curves.
//!
//! ```sh
//! cargo run --release --example mnist                 # 12 epochs on the bundled 5,000 images
//! cargo run --release --example mnist -- --resume     # continue from runs/mnist/checkpoint.safetensors
//! cargo run --release --example mnist -- --amp bf16   # mixed precision (f16: with a GradScaler)
//! cargo run --release --example mnist -- --help
//! # data-parallel over MPI (2 processes; root in a container also needs --allow-run-as-root):
//! mpirun -n 2 --oversubscribe cargo run --release --features mpi --example mnist -- --distributed
//! ```

use clap::Parser;
use ember::data::{DataLoader, DistributedSampler, LoaderOptions, Mnist, TensorDataset};
use ember::distributed::{DistributedDataParallel, ProcessGroup, ReduceOp};
use ember::nn::layers::{BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU};
use ember::nn::{functional as F, Module, ModuleExt, Sequential};
use ember::optim::{lr_scheduler, AdamOptions, AdamW, GradScaler, GradScalerOptions, Optimizer};
use ember::{autocast, io, manual_seed, no_grad, DType, Device, Error, PadMode, Result, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const MEAN: f64 = 0.1307;
const STD: f64 = 0.3081;

#[derive(Parser, Debug)]
#[command(about = "Train a CNN on MNIST with Ember (workload W13's recipe)")]
struct Args {
    /// Passes over the training set.
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// AdamW's base learning rate (the one-cycle peak is 1.5x this).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of the initialisation, shuffling, shifts and dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N (CUDA needs the `cuda` feature: `--features cuda`); `lazy` (or
    /// `lazy-cuda:N`) runs the same training with lazy evaluation and fusion.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Directory with MNIST's IDX files (train-*/t10k-*, raw or .gz); default: the bundled subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where checkpoints, metrics.csv and curves.png go.
    #[arg(long, default_value = "runs/mnist")]
    out: PathBuf,
    /// Continue from <out>/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Use at most this many training images (quick runs).
    #[arg(long)]
    limit: Option<usize>,
    /// DataLoader worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Stop after this many epochs (as if interrupted; continue later with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Write every training step's loss to this file, one per line (to compare devices step by step).
    #[arg(long)]
    loss_log: Option<PathBuf>,
    /// Mixed precision: `bf16` (autocast) or `f16` (autocast with a GradScaler); f32 without it.
    #[arg(long)]
    amp: Option<String>,
    /// Data-parallel training over MPI: launch N copies with `mpirun -n N` (build with
    /// `--features mpi`). `--batch-size` stays the global batch: each rank takes batch-size / N
    /// images of its shard per step, so the steps and the schedule are those of one process.
    #[arg(long)]
    distributed: bool,
}

/// The network, plain or wrapped for data-parallel training.
enum Net {
    Plain(Sequential),
    Ddp(DistributedDataParallel<Sequential>),
}

impl Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Net::Plain(n) => n.forward(x),
            Net::Ddp(d) => d.forward(x),
        }
    }
    fn inner(&self) -> &Sequential {
        match self {
            Net::Plain(n) => n,
            Net::Ddp(d) => d.module(),
        }
    }
    fn inner_mut(&mut self) -> &mut Sequential {
        match self {
            Net::Plain(n) => n,
            Net::Ddp(d) => d.module_mut(),
        }
    }
}

fn model() -> Result<Sequential> {
    Ok(Sequential::new()
        .layer(Conv2d::square(1, 32, 3, 1, 1)?)
        .layer(BatchNorm2d::new(32)?)
        .layer(ReLU::default())
        .layer(MaxPool2d::square(2))
        .layer(Conv2d::square(32, 64, 3, 1, 1)?)
        .layer(BatchNorm2d::new(64)?)
        .layer(ReLU::default())
        .layer(MaxPool2d::square(2))
        .layer(Flatten::default())
        .layer(Dropout::new(0.3))
        .layer(Linear::new(64 * 49, 128)?)
        .layer(ReLU::default())
        .layer(Linear::new(128, 10)?))
}

/// Pads by 2 with the normalised background and crops a 28x28 window at a random offset.
fn random_shift(x: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
    let padded = x.pad([2, 2, 2, 2], PadMode::Constant, -MEAN / STD)?;
    let (dx, dy) = (rng.random_range(0..5i64) as isize, rng.random_range(0..5i64) as isize);
    padded.narrow(2, dy, 28)?.narrow(3, dx, 28)?.contiguous()
}

fn accuracy(net: &mut Sequential, x: &Tensor, y: &Tensor) -> Result<f64> {
    net.eval();
    let acc = no_grad(|| -> Result<f64> {
        let mut correct = 0.0;
        for start in (0..x.shape()[0]).step_by(500) {
            let len = 500.min(x.shape()[0] - start);
            let pred = net.forward(&x.narrow(0, start as isize, len)?)?.argmax(Some(1), false)?;
            correct += pred.eq(&y.narrow(0, start as isize, len)?)?.to_dtype(DType::F64)?.sum()?.item()?;
        }
        Ok(correct / x.shape()[0] as f64)
    })?;
    net.train();
    Ok(acc)
}

#[derive(Debug)]
struct History {
    rows: Vec<(usize, f64, f64, f64)>, // epoch, train loss, train acc, test acc
}

impl History {
    fn to_tensor(&self) -> Result<Tensor> {
        let flat: Vec<f64> = self.rows.iter().flat_map(|&(e, a, b, c)| [e as f64, a, b, c]).collect();
        Tensor::from_vec(flat, [self.rows.len(), 4])
    }
    fn from_tensor(t: &Tensor) -> Result<History> {
        let v = t.to_vec_f64()?;
        Ok(History { rows: v.chunks(4).map(|r| (r[0] as usize, r[1], r[2], r[3])).collect() })
    }
}

fn save_checkpoint(path: &Path, net: &Sequential, opt: &AdamW, epoch: usize, step: u64, hist: &History) -> Result<()> {
    let mut entries: Vec<(String, Tensor)> =
        net.state_dict().into_iter().map(|(k, t)| (format!("model.{k}"), t)).collect();
    entries.extend(opt.state_dict().into_iter().map(|(k, t)| (format!("optim.{k}"), t)));
    entries.push(("meta.epoch".into(), Tensor::scalar(epoch as f64)));
    entries.push(("meta.step".into(), Tensor::scalar(step as f64)));
    entries.push(("meta.history".into(), hist.to_tensor()?));
    let refs: Vec<(&str, &Tensor)> = entries.iter().map(|(k, t)| (k.as_str(), t)).collect();
    io::save_safetensors(path, &refs) // temp file + fsync + rename: a crash keeps the old checkpoint
}

fn main() {
    if let Err(e) = run(Args::parse()).map(|_| ()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<History> {
    // cpu, cuda or cuda:N (CUDA needs the `cuda` feature: `--features cuda`); checked before loading
    let device = Device::parse(&args.device)?;
    let group: Option<Arc<dyn ProcessGroup>> =
        if args.distributed { Some(ember::distributed::init_process_group("mpi")?) } else { None };
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
    let lead = rank == 0; // prints, writes the checkpoint, metrics and chart
    if !args.batch_size.is_multiple_of(world) || args.batch_size == 0 {
        return Err(Error::invalid(
            "mnist",
            format!("--batch-size {} must be a positive multiple of the {world} ranks", args.batch_size),
        ));
    }
    if world > 1 && std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // the ranks of one machine share its cores
        let local = std::env::var("OMPI_COMM_WORLD_LOCAL_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(world);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ember::cpu::set_num_threads((cores / local).max(1));
    }
    Tensor::zeros([1])?.to(device)?;
    let dir = args.data.clone().unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist-5k"));
    let train = Mnist::load(&dir, true)?;
    let test = Mnist::load(&dir, false)?;
    let mut xtr = train.normalized_images(MEAN, STD)?;
    let mut ytr = train.labels.clone();
    if let Some(n) = args.limit {
        let n = n.min(xtr.shape()[0]);
        xtr = xtr.narrow(0, 0, n)?;
        ytr = ytr.narrow(0, 0, n)?;
    }
    let xte = test.normalized_images(MEAN, STD)?.to(device)?;
    let yte = test.labels.to(device)?;
    let n_train = xtr.shape()[0];
    if lead {
        println!(
            "MNIST from {}: {} training / {} test images; {} epochs, batch {}, {} thread(s){}",
            dir.display(),
            n_train,
            xte.shape()[0],
            args.epochs,
            args.batch_size,
            rayon_threads(),
            if world > 1 {
                format!(" per rank, {world} ranks over MPI ({} images per rank per step)", args.batch_size / world)
            } else {
                String::new()
            }
        );
    }

    manual_seed(args.seed);
    let mut net = model()?;
    net.to_device(device)?; // initialised on the CPU, so every device starts from the same weights
    let mut loader = DataLoader::new(
        TensorDataset::new(vec![xtr, ytr])?,
        LoaderOptions {
            batch_size: args.batch_size / world,
            shuffle: true,
            seed: args.seed,
            num_workers: args.workers,
            ..Default::default()
        },
    );
    if world > 1 {
        // each rank its shard of a per-epoch shuffle (padded so every rank takes the same steps)
        loader = loader.with_sampler(DistributedSampler::new(n_train, world, rank, true, args.seed)?);
    }
    let steps_per_epoch = loader.len();
    let total_steps = (args.epochs * steps_per_epoch) as u64;
    let mut opt = AdamW::adamw(net.parameters(), AdamOptions { weight_decay: 1e-4, ..AdamOptions::adamw(args.lr) })?;
    // mixed precision: bf16 needs no loss scaling; f16 does (the scaler passes through otherwise)
    let amp = match args.amp.as_deref() {
        None => None,
        Some("bf16") => Some(DType::BF16),
        Some("f16") => Some(DType::F16),
        Some(other) => return Err(Error::invalid("mnist", format!("--amp takes bf16 or f16, got {other:?}"))),
    };
    let mut scaler = GradScaler::new(GradScalerOptions { enabled: amp == Some(DType::F16), ..Default::default() });
    let mut sched =
        lr_scheduler::one_cycle_lr(&mut opt, lr_scheduler::OneCycleOptions::new(1.5 * args.lr, total_steps.max(1)))?;

    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let ckpt = args.out.join("checkpoint.safetensors");
    let mut start_epoch = 0;
    let mut history = History { rows: vec![] };
    if args.resume {
        let state = io::load_safetensors(&ckpt)?;
        let pick = |prefix: &str| -> Vec<(String, Tensor)> {
            state.iter().filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone()))).collect()
        };
        ember::nn::load_state_dict(&net, &pick("model."), true)?;
        opt.load_state_dict(&pick("optim."))?;
        let meta = |k: &str| {
            state
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::format(&ckpt.display().to_string(), format!("missing {k}")))
        };
        start_epoch = meta("meta.epoch")?.item()? as usize;
        sched.set_last_epoch(&mut opt, meta("meta.step")?.item()? as u64);
        history = History::from_tensor(&meta("meta.history")?)?;
        if lead {
            println!("resumed from {} after epoch {start_epoch}", ckpt.display());
        }
    }
    // rank 0's parameters and buffers everywhere, gradients averaged during backward
    let mut net = match &group {
        Some(g) => Net::Ddp(DistributedDataParallel::new(net, g.clone())?),
        None => Net::Plain(net),
    };

    let mut step_losses = String::new();
    let t0 = Instant::now();
    // time in the training loops alone (what PyTorch's W13 reference times), without the
    // per-epoch evaluation, checkpoint and chart
    let mut train_s = 0.0;
    let last = args.stop_after.map_or(args.epochs, |s| s.min(args.epochs));
    for epoch in start_epoch..last {
        // Every random stream is a function of (seed, epoch): a resumed run is bit-identical.
        // (Each rank its own dropout and shift streams; rank 0's are those of one process.)
        manual_seed(args.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64 + 1).wrapping_add((rank as u64) << 40));
        let mut shift_rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ (epoch as u64 + 1) << 32 ^ (rank as u64) << 48);
        let bar = if lead { ProgressBar::new(n_train as u64) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix:>2} [{bar:30}] {pos:>5}/{len} {msg}")
                .map_err(|e| Error::invalid("progress", e.to_string()))?
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}", epoch + 1));
        let (mut seen, mut loss_sum, mut correct) = (0usize, 0.0, 0.0);
        let te = Instant::now();
        for batch in loader.iter(epoch as u64) {
            let batch = batch?;
            // shifted on the host (one random stream for every device), then moved
            let (x, y) = (random_shift(&batch[0], &mut shift_rng)?.to(device)?, &batch[1].to(device)?);
            opt.zero_grad()?;
            let forward = || -> Result<(Tensor, Tensor)> {
                let logits = net.forward(&x)?;
                let loss = F::cross_entropy_with(&logits, y, &Default::default())?;
                Ok((logits, loss))
            };
            let (logits, loss) = match amp {
                Some(dtype) => autocast(dtype, forward)?,
                None => forward()?,
            };
            scaler.scale(&loss)?.backward()?;
            scaler.step(&mut opt)?;
            scaler.update()?;
            sched.step(&mut opt)?;
            let b = y.shape()[0];
            seen += b;
            let step_loss = loss.item()?;
            loss_sum += step_loss * b as f64;
            if args.loss_log.is_some() {
                step_losses.push_str(&format!("{step_loss:e}\n"));
            }
            correct += no_grad(|| logits.argmax(Some(1), false)?.eq(y)?.to_dtype(DType::F64)?.sum()?.item())?;
            bar.set_position((seen * world) as u64);
            bar.set_message(format!(
                "loss {:.4}  acc {:5.1}%  {:>5.0} img/s",
                loss_sum / seen as f64,
                100.0 * correct / seen as f64,
                seen as f64 / te.elapsed().as_secs_f64()
            ));
        }
        bar.finish_and_clear();
        if let Some(g) = &group {
            // the epoch's loss and accuracy over every rank's images
            let totals = Tensor::from_vec(vec![loss_sum, correct, seen as f64], [3])?;
            g.all_reduce(&totals, ReduceOp::Sum)?.wait()?;
            let t = totals.to_vec::<f64>()?;
            (loss_sum, correct, seen) = (t[0], t[1], t[2] as usize);
        }
        train_s += te.elapsed().as_secs_f64();
        let test_acc = accuracy(net.inner_mut(), &xte, &yte)?;
        let (train_loss, train_acc) = (loss_sum / seen as f64, correct / seen as f64);
        history.rows.push((epoch + 1, train_loss, train_acc, test_acc));
        if !lead {
            continue;
        }
        println!(
            "epoch {:>2}/{}  train loss {:.4}  train acc {:5.2}%  test acc {:5.2}%  ({:.1}s)",
            epoch + 1,
            args.epochs,
            train_loss,
            100.0 * train_acc,
            100.0 * test_acc,
            te.elapsed().as_secs_f64()
        );
        save_checkpoint(&ckpt, net.inner(), &opt, epoch + 1, sched.last_epoch(), &history)?;
        write_metrics(&args.out, &history)?;
    }
    let wall = t0.elapsed().as_secs_f64();
    if !lead {
        return Ok(history);
    }
    if let Some(path) = &args.loss_log {
        io::write_atomic(path, step_losses.as_bytes())?;
    }
    if let Some(&(_, _, _, acc)) = history.rows.last() {
        println!(
            "\nfinal test accuracy: {:.2}%  ({} epochs, {:.1}s this run: {:.1}s training, {:.1}s evaluation and checkpoints)",
            100.0 * acc,
            history.rows.len(),
            wall,
            train_s,
            wall - train_s
        );
        println!("checkpoint: {}", ckpt.display());
        println!("curves:     {}", args.out.join("curves.png").display());
    }
    Ok(history)
}

fn rayon_threads() -> usize {
    ember::cpu::num_threads()
}

fn write_metrics(dir: &Path, h: &History) -> Result<()> {
    let mut csv = String::from("epoch,train_loss,train_acc,test_acc\n");
    for (e, l, a, t) in &h.rows {
        csv.push_str(&format!("{e},{l:.6},{a:.6},{t:.6}\n"));
    }
    io::write_atomic(&dir.join("metrics.csv"), csv.as_bytes())?;
    let col = |f: fn(&(usize, f64, f64, f64)) -> f64| h.rows.iter().map(f).collect::<Vec<f64>>();
    let png = chart::render(&col(|r| r.1), &col(|r| r.2), &col(|r| r.3))?;
    io::write_atomic(&dir.join("curves.png"), &png)
}

/// The curves as a readable chart: left, the training loss per epoch; right, the training and
/// test accuracy in percent; labelled axes with ticks, titles and a legend. Drawn with plotters
/// into an RGB buffer with an embedded font (a subset of DejaVu Sans, `assets/`), so no system
/// font library is needed, and encoded with png.
mod chart {
    use ember::{Error, Result};
    use plotters::prelude::*;

    const W: u32 = 960;
    const H: u32 = 400;
    const FONT: &[u8] = include_bytes!("assets/DejaVuSans-subset.ttf");
    // matplotlib's first three colours
    const TAB_BLUE: RGBColor = RGBColor(31, 119, 180);
    const TAB_ORANGE: RGBColor = RGBColor(255, 127, 14);
    const TAB_GREEN: RGBColor = RGBColor(44, 160, 44);

    fn err(e: impl std::fmt::Display) -> Error {
        Error::invalid("curves.png", e.to_string())
    }

    /// One panel: `series` as (name, values per epoch from 1, colour), y from `lo` to `hi`.
    fn panel<DB: DrawingBackend>(
        area: &DrawingArea<DB, plotters::coord::Shift>,
        title: &str,
        y_desc: &str,
        (lo, hi): (f64, f64),
        series: &[(&str, &[f64], RGBColor)],
    ) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let epochs = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(2);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(1f64..epochs as f64, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_desc)
            .x_labels(epochs.min(12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| if hi - lo > 5.0 { format!("{y:.0}") } else { format!("{y:.2}") })
            .light_line_style(RGBColor(238, 238, 238))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(err)?;
        for &(name, values, color) in series {
            let points: Vec<(f64, f64)> = values.iter().enumerate().map(|(i, &v)| (i as f64 + 1.0, v)).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    }

    /// PNG bytes of the chart of `loss` (training loss) and `train_acc`/`test_acc` (fractions).
    pub fn render(loss: &[f64], train_acc: &[f64], test_acc: &[f64]) -> Result<Vec<u8>> {
        // registering twice (a second chart in one process) is harmless
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
        let mut rgb = vec![255u8; (W * H * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (W, H)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let (left, right) = root.split_horizontally(W / 2);
            let max_loss = loss.iter().cloned().fold(0.0, f64::max).max(1e-3) * 1.1;
            panel(&left, "Training loss", "cross-entropy", (0.0, max_loss), &[("train loss", loss, TAB_BLUE)])?;
            let pct = |v: &[f64]| v.iter().map(|a| 100.0 * a).collect::<Vec<f64>>();
            let (tr, te) = (pct(train_acc), pct(test_acc));
            let low = tr.iter().chain(&te).cloned().fold(100.0, f64::min);
            let lo = (low - 2.0).clamp(0.0, 90.0).floor();
            panel(
                &right,
                "Accuracy",
                "accuracy (%)",
                (lo, 100.0),
                &[("train", &tr, TAB_ORANGE), ("test", &te, TAB_GREEN)],
            )?;
            root.present().map_err(err)?;
        }
        let mut out = vec![];
        {
            let mut enc = png::Encoder::new(&mut out, W, H);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut wr = enc.write_header().map_err(err)?;
            wr.write_image_data(&rgb).map_err(err)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(out: &Path, epochs: usize, resume: bool) -> Args {
        Args {
            epochs,
            batch_size: 32,
            lr: 2e-3,
            seed: 7,
            device: "cpu".into(),
            data: None,
            out: out.to_path_buf(),
            resume,
            limit: Some(256),
            workers: 2,
            stop_after: None,
            loss_log: None,
            amp: None,
            distributed: false,
        }
    }

    /// A short run learns, and stopping after epoch 1 then resuming gives the same numbers bit
    /// for bit as running straight through.
    #[test]
    fn trains_and_resumes_bit_for_bit() {
        let base = std::env::temp_dir().join(format!("ember-mnist-test-{}", std::process::id()));
        let (a, b) = (base.join("straight"), base.join("resumed"));
        let straight = run(args(&a, 2, false)).unwrap();
        run(Args { stop_after: Some(1), ..args(&b, 2, false) }).unwrap();
        let resumed = run(args(&b, 2, true)).unwrap();
        assert_eq!(straight.rows, resumed.rows);
        let (_, loss1, _, _) = straight.rows[0];
        let (_, loss2, _, acc2) = straight.rows[1];
        assert!(loss2 < loss1, "loss should fall: {loss1} -> {loss2}");
        assert!(acc2 > 0.5, "test accuracy after two short epochs: {acc2}");
        assert!(b.join("curves.png").exists() && b.join("metrics.csv").exists());
        // the chart decodes, has its size, and has ink (axes, text, lines) in both panels
        let mut reader = png::Decoder::new(std::fs::File::open(b.join("curves.png")).unwrap()).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!((info.width, info.height), (960, 400));
        let ink =
            |x0: usize, x1: usize| (0..400 * 960).filter(|i| (x0..x1).contains(&(i % 960)) && rgb[3 * i] < 128).count();
        assert!(ink(0, 480) > 2000 && ink(480, 960) > 2000, "{} {}", ink(0, 480), ink(480, 960));
        assert!(run(Args { device: "tpu".into(), ..args(&a, 1, false) }).is_err());
        if !ember::cuda::is_available() {
            // no GPU (or no `cuda` feature): a clear error before any work, not a panic
            let e = run(Args { device: "cuda".into(), ..args(&a, 1, false) }).unwrap_err().to_string();
            assert!(e.contains("cuda"), "{e}");
        }
        if !ember::distributed::HAS_MPI {
            // built without MPI: --distributed says how to get it
            let e = run(Args { distributed: true, ..args(&a, 1, false) }).unwrap_err().to_string();
            assert!(e.contains("--features mpi"), "{e}");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
