//! The model workloads W5-W8, W10, W11, W15 (nn + optim), timed like `torch_ref.py`.

use crate::bench::{bench, device, emit, maybe_autocast, on_device, with_autocast};
use ember::nn::layers::{
    BatchNorm2d, Conv2d, Linear, ReLU, Rnn, RnnOptions, TransformerEncoderLayer, TransformerOptions,
};
use ember::nn::{functional as F, Module, ModuleExt, Sequential};
use ember::optim::{AdamOptions, Optimizer, Sgd, SgdOptions};
use ember::{ConvOptions, ConvPadding, PoolOptions, Tensor};
use serde_json::json;

fn randn(shape: &[usize]) -> Tensor {
    on_device(Tensor::randn(shape).expect("randn"))
}

/// `m` moved to the workloads' device.
fn placed<M: Module>(mut m: M) -> M {
    m.to_device(device()).expect("module to device");
    m
}

fn conv_opts(pad: usize) -> ConvOptions {
    let mut o = ConvOptions::new(2);
    o.padding = ConvPadding::Explicit(vec![pad, pad]);
    o
}

/// LeNet-5 as in `torch_ref.py`.
#[derive(ember::nn::Module)]
struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl LeNet {
    fn new() -> LeNet {
        LeNet {
            conv1: Conv2d::square(1, 6, 5, 1, 2).expect("conv1"),
            conv2: Conv2d::square(6, 16, 5, 1, 0).expect("conv2"),
            fc1: Linear::new(400, 120).expect("fc1"),
            fc2: Linear::new(120, 84).expect("fc2"),
            fc3: Linear::new(84, 10).expect("fc3"),
        }
    }
}

impl Module for LeNet {
    fn forward(&self, x: &Tensor) -> ember::Result<Tensor> {
        let p = PoolOptions::new(&[2, 2]);
        let x = self.conv1.forward(x)?.relu()?.max_pool_values(&p)?;
        let x = self.conv2.forward(&x)?.relu()?.max_pool_values(&p)?;
        let x = self.fc1.forward(&x.flatten(1, -1)?)?.relu()?;
        self.fc3.forward(&self.fc2.forward(&x)?.relu()?)
    }
}

/// W12: LeNet trained with SGD on the bundled MNIST subset, 5 epochs; wall seconds and accuracy.
fn w12(threads: usize) -> ember::Result<()> {
    use ember::data::{sampler::permutation, Mnist};
    use ember::DType;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-5k");
    let (train, test) = (Mnist::load(&dir, true)?, Mnist::load(&dir, false)?);
    let xtr = train.normalized_images(0.0, 1.0)?;
    let xte = test.normalized_images(0.0, 1.0)?;
    ember::manual_seed(0);
    let model = LeNet::new();
    let mut opt = Sgd::sgd(model.parameters(), SgdOptions::new(0.05).momentum(0.9))?;
    let (n, batch, epochs) = (xtr.shape()[0], 64usize, 5u64);
    let t0 = std::time::Instant::now();
    let mut epoch_loss = vec![];
    for e in 0..epochs {
        let perm = permutation(n, e);
        let mut total = 0.0;
        for chunk in perm.chunks(batch) {
            let idx = Tensor::from_vec(chunk.iter().map(|&i| i as i64).collect::<Vec<_>>(), [chunk.len()])?;
            opt.zero_grad()?;
            let loss = F::cross_entropy_with(
                &model.forward(&xtr.index_select(0, &idx)?)?,
                &train.labels.index_select(0, &idx)?,
                &Default::default(),
            )?;
            loss.backward()?;
            opt.step()?;
            total += loss.item()? * chunk.len() as f64;
        }
        epoch_loss.push((total / n as f64 * 1e4).round() / 1e4);
    }
    let train_s = t0.elapsed().as_secs_f64();
    let acc = ember::no_grad(|| {
        model.forward(&xte)?.argmax(Some(1), false)?.eq(&test.labels)?.to_dtype(DType::F64)?.mean()?.item()
    })?;
    let rec = json!({
        "id": "W12", "lib": "ember", "device": "cpu", "threads": threads,
        "params": {"train": n, "test": xte.shape()[0], "data": "idx", "epochs": epochs, "batch": batch,
                   "opt": "SGD(lr=0.05, momentum=0.9)", "shuffle": "permutation per epoch"},
        "value": (train_s * 1e4).round() / 1e4, "unit": "s",
        "test_accuracy": (acc * 1e4).round() / 1e4, "epoch_train_loss": epoch_loss,
    });
    println!("{rec}");
    Ok(())
}

/// Runs the selected model workloads (W12 only when named explicitly: it trains for a while).
pub fn run(on: &dyn Fn(&str) -> bool, explicit: &dyn Fn(&str) -> bool, threads: usize, reps: usize) {
    if explicit("W12") {
        w12(threads).expect("W12");
    }
    if on("W5") {
        let x = randn(&[64, 1, 28, 28]).requires_grad_(true).expect("x");
        let w1 = randn(&[32, 1, 5, 5]).mul(0.2).and_then(|t| t.requires_grad_(true)).expect("w1");
        let w2 = randn(&[64, 32, 5, 5]).mul(0.035).and_then(|t| t.requires_grad_(true)).expect("w2");
        let t = bench(reps, || {
            for p in [&x, &w1, &w2] {
                p.set_grad(None);
            }
            let h = x.conv(&w1, None, &conv_opts(2)).and_then(|h| h.relu()).expect("conv1");
            h.conv(&w2, None, &conv_opts(2)).and_then(|y| y.sum()).and_then(|l| l.backward()).expect("conv2");
        });
        let params = json!({"input": [64, 1, 28, 28], "convs": "1->32 5x5 p2, relu, 32->64 5x5 p2", "bias": false});
        emit("W5", threads, params, t.median_s * 1e3, "ms", &t, Some("loss = sum; grads for input and both weights"));
    }
    if on("W6") {
        let conv1 = placed(Conv2d::with_options(64, 64, &[3, 3], conv_opts(1), false).expect("conv1"));
        let bn1 = placed(BatchNorm2d::new(64).expect("bn"));
        let conv2 = placed(Conv2d::with_options(64, 64, &[3, 3], conv_opts(1), false).expect("conv2"));
        let x = randn(&[8, 64, 56, 56]).requires_grad_(true).expect("x");
        let t = bench(reps, || {
            x.set_grad(None);
            for p in conv1.parameters().iter().chain(&bn1.parameters()).chain(&conv2.parameters()) {
                p.set_grad(None);
            }
            let h = conv1.forward(&x).and_then(|h| bn1.forward(&h)).and_then(|h| h.relu()).expect("fwd");
            conv2.forward(&h).and_then(|y| y.add(&x)).and_then(|y| y.sum()).and_then(|l| l.backward()).expect("bwd");
        });
        let params =
            json!({"input": [8, 64, 56, 56], "block": "conv3x3-bn-relu-conv3x3-+x", "bias": false, "bn": "train mode"});
        emit("W6", threads, params, t.median_s * 1e3, "ms", &t, None);
    }
    if on("W7") {
        let model = placed(
            Sequential::new()
                .layer(Linear::new(784, 512).expect("l1"))
                .layer(ReLU::default())
                .layer(Linear::new(512, 256).expect("l2"))
                .layer(ReLU::default())
                .layer(Linear::new(256, 10).expect("l3")),
        );
        let mut opt = ember::optim::Adam::adam(model.parameters(), AdamOptions::adam(1e-3)).expect("adam");
        let x = randn(&[128, 784]);
        let y = on_device(Tensor::randint(0, 10, [128]).expect("y"));
        let t = bench(reps, || {
            opt.zero_grad().expect("zero_grad");
            // with --autocast the forward and the loss run under autocast, as torch_ref.py
            let loss =
                maybe_autocast(|| F::cross_entropy_with(&model.forward(&x)?, &y, &Default::default())).expect("loss");
            loss.backward().expect("bwd");
            opt.step().expect("step");
        });
        emit(
            "W7",
            threads,
            with_autocast(json!({"layers": [784, 512, 256, 10], "batch": 128, "opt": "Adam(lr=1e-3)"})),
            t.median_s * 1e3,
            "ms",
            &t,
            None,
        );
    }
    if on("W8") {
        let model = placed(LeNet::new());
        let mut opt = Sgd::sgd(model.parameters(), SgdOptions::new(0.05).momentum(0.9)).expect("sgd");
        let x = on_device(Tensor::rand([64, 1, 28, 28]).expect("x"));
        let y = on_device(Tensor::randint(0, 10, [64]).expect("y"));
        let t = bench(reps, || {
            opt.zero_grad().expect("zero_grad");
            F::cross_entropy_with(&model.forward(&x).expect("fwd"), &y, &Default::default())
                .and_then(|l| l.backward())
                .expect("bwd");
            opt.step().expect("step");
        });
        let params = json!({"batch": 64, "input": [1, 28, 28], "pad": 2, "opt": "SGD(lr=0.05, momentum=0.9)"});
        emit("W8", threads, params, t.median_s * 1e3, "ms", &t, None);
    }
    if on("W10") {
        let lstm = placed(Rnn::lstm(200, 200, RnnOptions { num_layers: 2, ..Default::default() }).expect("lstm"));
        let x = randn(&[35, 20, 200]);
        let t = bench(reps, || {
            lstm.zero_grad();
            lstm.forward(&x).and_then(|o| o.sum()).and_then(|l| l.backward()).expect("lstm");
        });
        emit(
            "W10",
            threads,
            json!({"layers": 2, "input": 200, "hidden": 200, "seq": 35, "batch": 20}),
            t.median_s * 1e3,
            "ms",
            &t,
            None,
        );
    }
    if on("W11") {
        let mut o = TransformerOptions::new(256, 4);
        o.dim_feedforward = 1024;
        o.dropout = 0.0;
        o.batch_first = true;
        let layer = placed(TransformerEncoderLayer::new(&o).expect("layer"));
        let x = randn(&[16, 128, 256]);
        let t = bench(reps, || {
            layer.zero_grad();
            // with --autocast the forward runs under autocast and the loss is the f32 sum of its output
            maybe_autocast(|| layer.forward(&x))
                .and_then(|o| o.to_dtype(ember::DType::F32))
                .and_then(|o| o.sum())
                .and_then(|l| l.backward())
                .expect("layer");
        });
        let params = with_autocast(
            json!({"d_model": 256, "heads": 4, "ff": 1024, "seq": 128, "batch": 16, "dropout": 0.0, "norm_first": false}),
        );
        emit("W11", threads, params, t.median_s * 1e3, "ms", &t, None);
    }
    if on("W15") {
        w15_dcgan(threads, reps);
    }
}

/// W15: one DCGAN iteration at MNIST size, as `torch_ref.py`'s `w15_dcgan` (nz 64, ngf = ndf =
/// 32, batch 64): a discriminator step on a real and a fake batch, then a generator step.
fn w15_dcgan(threads: usize, reps: usize) {
    use ember::nn::layers::{BCEWithLogitsLoss, ConvBuilder, ConvTranspose2d, LeakyReLU, Tanh, WithBias};
    let (nz, ngf, ndf) = (64, 32, 32);
    let g = placed(
        Sequential::new()
            .layer(ConvTranspose2d::new(nz, ngf * 4, 4).bias(false).expect("g1"))
            .layer(BatchNorm2d::new(ngf * 4).expect("bn"))
            .layer(ReLU::default())
            .layer(ConvTranspose2d::new(ngf * 4, ngf * 2, 3).stride(2).padding(1).bias(false).expect("g2"))
            .layer(BatchNorm2d::new(ngf * 2).expect("bn"))
            .layer(ReLU::default())
            .layer(ConvTranspose2d::new(ngf * 2, ngf, 4).stride(2).padding(1).bias(false).expect("g3"))
            .layer(BatchNorm2d::new(ngf).expect("bn"))
            .layer(ReLU::default())
            .layer(ConvTranspose2d::new(ngf, 1, 4).stride(2).padding(1).bias(false).expect("g4"))
            .layer(Tanh::default()),
    );
    let d = placed(
        Sequential::new()
            .layer(Conv2d::new(1, ndf, 4).stride(2).padding(1).bias(false).expect("d1"))
            .layer(LeakyReLU::new(0.2))
            .layer(Conv2d::new(ndf, ndf * 2, 4).stride(2).padding(1).bias(false).expect("d2"))
            .layer(BatchNorm2d::new(ndf * 2).expect("bn"))
            .layer(LeakyReLU::new(0.2))
            .layer(Conv2d::new(ndf * 2, ndf * 4, 3).stride(2).padding(1).bias(false).expect("d3"))
            .layer(BatchNorm2d::new(ndf * 4).expect("bn"))
            .layer(LeakyReLU::new(0.2))
            .layer(Conv2d::new(ndf * 4, 1, 4).bias(false).expect("d4")),
    );
    let adam = AdamOptions { betas: (0.5, 0.999), ..AdamOptions::adam(2e-4) };
    let mut opt_g = ember::optim::Adam::adam(g.parameters(), adam.clone()).expect("adam");
    let mut opt_d = ember::optim::Adam::adam(d.parameters(), adam).expect("adam");
    let real = on_device(Tensor::rand([64, 1, 28, 28]).expect("real") * 2.0 - 1.0);
    let ones = on_device(Tensor::ones([64]).expect("ones"));
    let zeros = on_device(Tensor::zeros([64]).expect("zeros"));
    let bce = BCEWithLogitsLoss::new();
    let t = bench(reps, || {
        opt_d.zero_grad().expect("zero_grad");
        let err_real = bce.forward(&d.forward(&real).expect("d").view([-1]).expect("view"), &ones).expect("bce");
        err_real.backward().expect("bwd");
        let fake = g.forward(&randn(&[64, nz, 1, 1])).expect("g");
        let err_fake =
            bce.forward(&d.forward(&fake.detach()).expect("d").view([-1]).expect("view"), &zeros).expect("bce");
        err_fake.backward().expect("bwd");
        opt_d.step().expect("step");
        opt_g.zero_grad().expect("zero_grad");
        let err_g = bce.forward(&d.forward(&fake).expect("d").view([-1]).expect("view"), &ones).expect("bce");
        err_g.backward().expect("bwd");
        opt_g.step().expect("step");
    });
    let params = json!({"batch": 64, "image": [1, 28, 28], "nz": nz, "ngf": ngf, "ndf": ndf, "opt": "Adam(2e-4, 0.5)"});
    emit("W15", threads, params, t.median_s * 1e3, "ms", &t, None);
}
