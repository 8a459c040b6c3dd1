//! Reliability: tied weights are one parameter, concurrent backward passes never deadlock, and the
//! std-lib allocation and locking hazards found by the adversarial review stay fixed.

use ember::nn::layers::{Embedding, Linear, Rnn, RnnMode, WithBias};
use ember::nn::{Module, ModuleExt};
use ember::optim::{Optimizer, Sgd, SgdOptions};
use ember::Tensor;

#[derive(ember::nn::Module)]
struct TiedLm {
    wte: Embedding,
    lm_head: Linear,
}

fn tied() -> TiedLm {
    let wte = Embedding::new(10, 4).unwrap();
    let mut lm_head = Linear::new(4, 10).bias(false).unwrap();
    lm_head.weight = wte.weight.clone(); // GPT-style weight tying
    TiedLm { wte, lm_head }
}

#[test]
fn tied_weights_are_one_parameter_and_updated_once() {
    let m = tied();
    assert_eq!(m.parameters().len(), 1);
    let names: Vec<String> = m.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["wte.weight"], "the first name is kept");
    let all: Vec<String> = m.named_parameters_with(false).into_iter().map(|(k, _)| k).collect();
    assert_eq!(all, ["wte.weight", "lm_head.weight"]);
    assert_eq!(m.num_parameters(), 40);
    // SGD with lr 1 and gradient 1 moves each weight by exactly -1 (it moved by -2 before)
    let mut opt = Sgd::sgd(m.parameters(), SgdOptions::new(1.0)).unwrap();
    let w0 = m.wte.weight.to_vec::<f32>().unwrap();
    m.wte.weight.set_grad(Some(Tensor::ones([10, 4]).unwrap()));
    opt.step().unwrap();
    let w1 = m.lm_head.weight.to_vec::<f32>().unwrap();
    for (a, b) in w0.iter().zip(&w1) {
        assert!((a - 1.0 - b).abs() < 1e-6, "{a} -> {b}");
    }
    // state_dict keeps both keys, as PyTorch's does, and loading them keeps the tie
    let sd = m.state_dict();
    let keys: Vec<&str> = sd.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["wte.weight", "lm_head.weight"]);
    let other = tied();
    ember::nn::load_state_dict(&other, &sd, true).unwrap();
    assert_eq!(other.lm_head.weight.to_vec::<f32>().unwrap(), w1);
    assert!(other.lm_head.weight.is_same(&other.wte.weight));
}

#[test]
fn moving_a_tied_model_keeps_the_tie() {
    let mut m = tied();
    m.to_dtype(ember::DType::F64).unwrap();
    assert!(m.lm_head.weight.is_same(&m.wte.weight));
    assert_eq!(m.parameters().len(), 1);
}

#[test]
fn a_tensor_listed_twice_in_an_optimizer_is_an_error() {
    let w = Tensor::zeros([3]).unwrap().requires_grad_(true).unwrap();
    let e = Sgd::sgd(vec![w.clone(), w.clone()], SgdOptions::new(0.1)).err().expect("duplicate").to_string();
    assert!(e.contains("parameter 1") && e.contains("same tensor as parameter 0"), "{e}");
    let mut opt = Sgd::sgd(vec![w.clone()], SgdOptions::new(0.1)).unwrap();
    let g = ember::optim::ParamGroup { params: vec![w], options: SgdOptions::new(0.2) };
    assert!(opt.add_param_group(g).unwrap_err().to_string().contains("more than one parameter group"));
}

#[test]
fn concurrent_backward_through_a_shared_large_leaf_finishes() {
    // [256, 256] leaves take the parallel add path; each thread builds its own graph on them
    let w = Tensor::randn([256, 256]).unwrap().requires_grad_(true).unwrap();
    let lstm = Rnn::new(RnnMode::Lstm, 32, 64, Default::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    for t in 0..4 {
        let (w, lstm, tx) = (w.clone(), lstm.parameters(), tx.clone());
        std::thread::spawn(move || {
            for _ in 0..25 {
                let x = Tensor::randn([64, 256]).unwrap();
                x.matmul(&w).unwrap().tanh().unwrap().sum().unwrap().backward().unwrap();
            }
            drop(lstm);
            tx.send(t).unwrap();
        });
    }
    drop(tx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut done = 0;
    while done < 4 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        rx.recv_timeout(left).expect("a backward pass deadlocked (no thread finished within 120 s)");
        done += 1;
    }
    assert_eq!(w.grad().unwrap().shape(), &[256, 256]);
}

#[test]
fn concurrent_lstm_backward_finishes_and_accumulates_every_contribution() {
    let lstm = std::sync::Arc::new(Rnn::new(RnnMode::Lstm, 16, 128, Default::default()).unwrap());
    let x = Tensor::randn([12, 8, 16]).unwrap();
    // one pass alone gives the reference gradient
    lstm.forward(&x).unwrap().sum().unwrap().backward().unwrap();
    let one: Vec<Vec<f32>> = lstm.parameters().iter().map(|p| p.grad().unwrap().to_vec::<f32>().unwrap()).collect();
    lstm.zero_grad();
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..3 {
        let (lstm, x, tx) = (lstm.clone(), x.clone(), tx.clone());
        std::thread::spawn(move || {
            for _ in 0..4 {
                lstm.forward(&x).unwrap().sum().unwrap().backward().unwrap();
            }
            tx.send(()).unwrap();
        });
    }
    drop(tx);
    for _ in 0..3 {
        rx.recv_timeout(std::time::Duration::from_secs(120)).expect("LSTM backward deadlocked");
    }
    for (p, g1) in lstm.parameters().iter().zip(&one) {
        let g = p.grad().unwrap().to_vec::<f32>().unwrap();
        for (a, b) in g.iter().zip(g1) {
            assert!((a - 12.0 * b).abs() <= 1e-3 * (12.0 * b.abs()).max(1.0), "{a} vs 12 x {b}");
        }
    }
}

#[test]
fn checkpoint_writes_use_unique_temporaries_and_clean_stale_ones() {
    let dir = std::env::temp_dir().join(format!("ember-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    // a temporary left by a killed save (pid 999999999 does not run)
    let stale = dir.join(".model.safetensors.999999999.0.tmp");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    // concurrent saves to one path all succeed (they shared one temporary name before)
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = path.clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let t = Tensor::full([256], i as f64).unwrap();
                    ember::io::save_safetensors(&path, &[("w", &t)]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let loaded = ember::io::load_safetensors(&path).unwrap();
    let v = loaded[0].1.to_vec::<f32>().unwrap();
    assert!(v.iter().all(|&x| x == v[0]), "one writer's complete file, not a mix");
    assert!(!stale.exists(), "the stale temporary was removed");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "no temporaries left: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_decompression_bomb_is_rejected_after_reading_only_what_the_header_declares() {
    use std::io::Write;
    // an .npz entry declaring 4 f32 values followed by 64 MiB of zeros (deflated to ~64 KiB)
    let dir = std::env::temp_dir().join(format!("ember-bomb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut npy = ember::io::to_npy_bytes(&Tensor::zeros([4]).unwrap()).unwrap();
    npy.extend(std::iter::repeat_n(0u8, 64 << 20));
    let path = dir.join("bomb.npz");
    let mut zw = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zw.start_file("x.npy", opts).unwrap();
    zw.write_all(&npy).unwrap();
    zw.finish().unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let e = ember::io::load_npz(&path).unwrap_err().to_string();
    assert!(e.contains("data has 17 bytes") && e.contains("needs 16"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn optimizer_settings_are_validated() {
    let w = || vec![Tensor::zeros([3]).unwrap().requires_grad_(true).unwrap()];
    assert!(Sgd::sgd(w(), SgdOptions::new(-0.1)).err().unwrap().to_string().contains("learning rate"));
    assert!(Sgd::sgd(w(), SgdOptions::new(f64::NAN)).is_err());
    assert!(Sgd::sgd(w(), SgdOptions::new(0.1).momentum(-0.5)).err().unwrap().to_string().contains("momentum"));
    assert!(Sgd::sgd(w(), SgdOptions::new(0.1).momentum(0.9)).is_ok());
}

#[test]
fn adam_family_settings_are_validated() {
    use ember::optim::{Adam, AdamOptions};
    let w = || vec![Tensor::zeros([3]).unwrap().requires_grad_(true).unwrap()];
    let bad_beta = AdamOptions { betas: (0.9, 1.0), ..AdamOptions::adam(1e-3) };
    assert!(Adam::adam(w(), bad_beta).err().unwrap().to_string().contains("beta parameter at index 1"));
    let bad_eps = AdamOptions { eps: -1.0, ..AdamOptions::adam(1e-3) };
    assert!(Adam::adam(w(), bad_eps).err().unwrap().to_string().contains("epsilon"));
    let bad_wd = AdamOptions { weight_decay: f64::INFINITY, ..AdamOptions::adam(1e-3) };
    assert!(Adam::adam(w(), bad_wd).err().unwrap().to_string().contains("weight_decay"));
    let mut nesterov = SgdOptions::new(0.1);
    nesterov.nesterov = true;
    assert!(Sgd::sgd(w(), nesterov).err().unwrap().to_string().contains("Nesterov"));
}

#[test]
fn schedulers_stop_at_their_end_and_never_loop_forever() {
    use ember::optim::lr_scheduler::{cosine_annealing_warm_restarts, one_cycle_lr, OneCycleOptions};
    let w = vec![Tensor::zeros([3]).unwrap().requires_grad_(true).unwrap()];
    let mut opt = Sgd::sgd(w.clone(), SgdOptions::new(0.1).momentum(0.9)).unwrap();
    let mut s = one_cycle_lr(&mut opt, OneCycleOptions::new(0.1, 4)).unwrap();
    for _ in 0..4 {
        s.step(&mut opt).unwrap();
    }
    let e = s.step(&mut opt).unwrap_err().to_string();
    assert!(e.contains("tried to step 5 times") && e.contains("total steps is 4"), "{e}");
    let mut opt = Sgd::sgd(w, SgdOptions::new(0.1)).unwrap();
    let mut s = cosine_annealing_warm_restarts(&mut opt, 3, u64::MAX / 2, 0.0);
    s.set_last_epoch(&mut opt, u64::MAX - 1); // returns: the cycle length saturates instead of wrapping
    assert!(opt.lr(0).is_finite());
}

#[test]
fn optimizer_state_with_out_of_range_steps_or_unknown_names_is_rejected() {
    use ember::optim::{Adam, AdamOptions};
    let w = Tensor::zeros([3]).unwrap().requires_grad_(true).unwrap();
    let mut opt = Adam::adam(vec![w.clone()], AdamOptions::adam(1e-3)).unwrap();
    w.set_grad(Some(Tensor::ones([3]).unwrap()));
    opt.step().unwrap();
    let mut sd = opt.state_dict();
    opt.load_state_dict(&sd).unwrap();
    let step = sd.iter_mut().find(|(k, _)| k.ends_with(".step")).expect("a step entry");
    step.1 = Tensor::scalar((1u64 << 31) as f64);
    let e = opt.load_state_dict(&sd).unwrap_err().to_string();
    assert!(e.contains("step") && e.contains("2147483648"), "{e}");
    let mut sd = opt.state_dict();
    sd.push(("state.0.made_up".into(), Tensor::zeros([3]).unwrap()));
    assert!(opt.load_state_dict(&sd).unwrap_err().to_string().contains("made_up"));
}

#[test]
fn adagrad_adadelta_and_rprop_settings_are_validated() {
    use ember::optim::{
        Adadelta, AdadeltaAlgo, AdadeltaOptions, Adagrad, AdagradAlgo, AdagradOptions, Rprop, RpropAlgo, RpropOptions,
    };
    let w = || vec![Tensor::zeros([3]).unwrap().requires_grad_(true).unwrap()];
    let o = AdagradOptions { lr_decay: -1.0, ..Default::default() };
    assert!(Adagrad::new(AdagradAlgo, w(), o).err().unwrap().to_string().contains("lr_decay"));
    let o = AdadeltaOptions { rho: 1.5, ..Default::default() };
    assert!(Adadelta::new(AdadeltaAlgo, w(), o).err().unwrap().to_string().contains("rho"));
    let o = RpropOptions { etas: (1.5, 1.2), ..Default::default() };
    assert!(Rprop::new(RpropAlgo, w(), o).err().unwrap().to_string().contains("eta"));
    assert!(Rprop::new(RpropAlgo, w(), RpropOptions::default()).is_ok());
}
