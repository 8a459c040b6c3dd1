//! Optimizer behaviour beyond the PyTorch trajectories of the conformance suite: the fused f32
//! loops agree with the generic tensor path, state_dict resumes exactly, clipping, groups.

use ember_autograd::{DType, Tensor};
use ember_optim::*;

fn quadratic_steps(opt: &mut dyn Optimizer, w: &Tensor, steps: usize) -> Vec<f64> {
    let target = Tensor::from_vec((0..w.numel()).map(|i| i as f32 * 0.1).collect::<Vec<_>>(), w.shape())
        .unwrap()
        .to_dtype(w.dtype())
        .unwrap();
    let mut losses = vec![];
    for _ in 0..steps {
        opt.zero_grad().unwrap();
        let d = w.sub(&target).unwrap();
        let loss = d.mul(&d).unwrap().sum().unwrap();
        losses.push(loss.item().unwrap());
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    losses
}

fn leaf(dtype: DType) -> Tensor {
    Tensor::from_vec(vec![1.0f32, -2.0, 0.5, 3.0, -1.0, 0.25], [2, 3])
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .requires_grad_(true)
        .unwrap()
}

#[test]
fn fused_f32_matches_generic_f64_path() {
    for nesterov in [false, true] {
        let (a, b) = (leaf(DType::F32), leaf(DType::F64));
        let o = SgdOptions { lr: 0.05, momentum: 0.9, dampening: 0.0, weight_decay: 0.01, nesterov, maximize: false };
        let mut fa = Sgd::sgd(vec![a.clone()], o.clone()).unwrap();
        let mut fb = Sgd::sgd(vec![b.clone()], o).unwrap();
        quadratic_steps(&mut fa, &a, 20);
        quadratic_steps(&mut fb, &b, 20);
        for (x, y) in a.to_vec_f64().unwrap().iter().zip(b.to_vec_f64().unwrap()) {
            assert!((x - y).abs() < 1e-5, "sgd nesterov={nesterov}: {x} vs {y}");
        }
    }
    for decoupled in [false, true] {
        let (a, b) = (leaf(DType::F32), leaf(DType::F64));
        let o = AdamOptions { weight_decay: 0.1, ..AdamOptions::adam(0.05) };
        let (mut fa, mut fb) = if decoupled {
            (AdamW::adamw(vec![a.clone()], o.clone()).unwrap(), AdamW::adamw(vec![b.clone()], o).unwrap())
        } else {
            (Adam::adam(vec![a.clone()], o.clone()).unwrap(), Adam::adam(vec![b.clone()], o).unwrap())
        };
        quadratic_steps(&mut fa, &a, 30);
        quadratic_steps(&mut fb, &b, 30);
        for (x, y) in a.to_vec_f64().unwrap().iter().zip(b.to_vec_f64().unwrap()) {
            assert!((x - y).abs() < 1e-4, "adam decoupled={decoupled}: {x} vs {y}");
        }
    }
}

#[test]
fn every_optimizer_decreases_a_quadratic() {
    type Make = Box<dyn Fn(Tensor) -> Box<dyn Optimizer>>;
    let make: Vec<(&str, Make)> = vec![
        ("sgd", Box::new(|w| Box::new(Sgd::sgd(vec![w], SgdOptions::new(0.05).momentum(0.5)).unwrap()))),
        ("adam", Box::new(|w| Box::new(Adam::adam(vec![w], AdamOptions::adam(0.05)).unwrap()))),
        ("rmsprop", Box::new(|w| Box::new(Optim::new(RmsPropAlgo, vec![w], RmsPropOptions::default()).unwrap()))),
        (
            "adagrad",
            Box::new(|w| {
                Box::new(Optim::new(AdagradAlgo, vec![w], AdagradOptions { lr: 0.3, ..Default::default() }).unwrap())
            }),
        ),
        (
            "adadelta",
            Box::new(|w| {
                Box::new(Optim::new(AdadeltaAlgo, vec![w], AdadeltaOptions { lr: 10.0, ..Default::default() }).unwrap())
            }),
        ),
        (
            "adamax",
            Box::new(|w| {
                Box::new(Optim::new(AdamaxAlgo, vec![w], AdamaxOptions { lr: 0.05, ..Default::default() }).unwrap())
            }),
        ),
        (
            "nadam",
            Box::new(|w| {
                Box::new(Optim::new(NAdamAlgo, vec![w], NAdamOptions { lr: 0.05, ..NAdamOptions::nadam() }).unwrap())
            }),
        ),
        (
            "radam",
            Box::new(|w| {
                Box::new(Optim::new(RAdamAlgo, vec![w], NAdamOptions { lr: 0.05, ..NAdamOptions::radam() }).unwrap())
            }),
        ),
        ("rprop", Box::new(|w| Box::new(Optim::new(RpropAlgo, vec![w], RpropOptions::default()).unwrap()))),
    ];
    for (name, mk) in make {
        let w = leaf(DType::F64);
        let mut opt = mk(w.clone());
        let l = quadratic_steps(opt.as_mut(), &w, 60);
        assert!(l[59] < 0.5 * l[0], "{name}: {} -> {}", l[0], l[59]);
    }
}

#[test]
fn state_dict_resumes_bit_for_bit() {
    let w = leaf(DType::F32);
    let mut opt = AdamW::adamw(vec![w.clone()], AdamOptions::adamw(0.05)).unwrap();
    quadratic_steps(&mut opt, &w, 5);
    let saved_w = w.detach().deep_clone().unwrap();
    let saved = opt.state_dict();
    let tail = quadratic_steps(&mut opt, &w, 5);

    let w2 = saved_w.requires_grad_(true).unwrap();
    let mut opt2 = AdamW::adamw(vec![w2.clone()], AdamOptions::adamw(0.5)).unwrap();
    opt2.load_state_dict(&saved).unwrap();
    assert_eq!(opt2.lr(0), 0.05);
    let tail2 = quadratic_steps(&mut opt2, &w2, 5);
    assert_eq!(tail, tail2);
    assert_eq!(w.to_vec_f64().unwrap(), w2.to_vec_f64().unwrap());

    let bad = vec![("state.0.exp_avg".to_string(), Tensor::zeros([5]).unwrap())];
    assert!(opt2.load_state_dict(&bad).is_err());
    let bad = vec![("nonsense".to_string(), Tensor::zeros([1]).unwrap())];
    assert!(opt2.load_state_dict(&bad).is_err());
}

#[test]
fn groups_clipping_and_errors() {
    let (a, b) = (leaf(DType::F32), leaf(DType::F32));
    let mut opt = Sgd::sgd(vec![a.clone()], SgdOptions::new(0.1)).unwrap();
    assert!(opt.add_param_group(ParamGroup { params: vec![a.clone()], options: SgdOptions::new(0.1) }).is_err());
    opt.add_param_group(ParamGroup { params: vec![b.clone()], options: SgdOptions::new(0.0) }).unwrap();
    assert_eq!(opt.num_groups(), 2);
    a.mul(&b).unwrap().sum().unwrap().backward().unwrap();
    let b_before = b.to_vec_f64().unwrap();
    opt.step().unwrap();
    assert_eq!(b.to_vec_f64().unwrap(), b_before, "lr 0 group must not move");

    let total = clip_grad_norm_(&[a.clone(), b.clone()], 1.0, 2.0, false).unwrap().item().unwrap();
    assert!(total > 1.0);
    let after: f64 =
        [&a, &b].iter().map(|p| p.grad().unwrap().to_vec_f64().unwrap().iter().map(|g| g * g).sum::<f64>()).sum();
    assert!((after.sqrt() - 1.0).abs() < 1e-3);
    clip_grad_value_(std::slice::from_ref(&a), 0.01).unwrap();
    assert!(a.grad().unwrap().to_vec_f64().unwrap().iter().all(|g| g.abs() <= 0.01 + 1e-9));
    a.grad().unwrap().fill_(f64::NAN).unwrap();
    assert!(clip_grad_norm_(std::slice::from_ref(&a), 1.0, 2.0, true).is_err());
    assert!(Sgd::sgd(vec![a.mul(2.0).unwrap()], SgdOptions::new(0.1)).is_err(), "non-leaf must be refused");
}

#[test]
fn one_cycle_cycles_adam_beta1() {
    let w = leaf(DType::F32);
    let mut opt = AdamW::adamw(vec![w], AdamOptions::adamw(1e-3)).unwrap();
    let mut s = lr_scheduler::one_cycle_lr(&mut opt, lr_scheduler::OneCycleOptions::new(0.01, 10)).unwrap();
    assert!((opt.lr(0) - 0.01 / 25.0).abs() < 1e-12);
    assert!((opt.momentum(0).unwrap() - 0.95).abs() < 1e-12);
    for _ in 0..2 {
        s.step(&mut opt).unwrap();
    }
    // PyTorch's warm-up phase ends at step pct_start * total_steps - 1 = 2
    assert!((opt.lr(0) - 0.01).abs() < 1e-9, "peak at step 2: {}", opt.lr(0));
    assert!((opt.momentum(0).unwrap() - 0.85).abs() < 1e-9);
}

/// Rosenbrock's function of `w = (x, y)`, with its gradient put in `w.grad()`.
fn rosenbrock(w: &Tensor) -> ember_autograd::Result<f64> {
    w.set_grad(None);
    let (x, y) = (w.select(0, 0)?, w.select(0, 1)?);
    let a = x.neg()?.add(1.0)?;
    let b = y.sub(&x.mul(&x)?)?;
    let loss = a.mul(&a)?.add(&b.mul(&b)?.mul(100.0)?)?;
    loss.backward()?;
    loss.item()
}

#[test]
fn lbfgs_minimises_rosenbrock_and_plain_step_is_an_error() {
    let w = Tensor::from_vec(vec![-1.2f64, 1.0], [2]).unwrap().requires_grad_(true).unwrap();
    let mut opt = Lbfgs::new(vec![w.clone()], LbfgsOptions { lr: 0.5, ..Default::default() }).unwrap();
    let mut closure = || rosenbrock(&w);
    let first = opt.step_with(&mut closure).unwrap();
    let mut last = first;
    for _ in 0..30 {
        last = opt.step_with(&mut closure).unwrap();
    }
    assert!(last < 1e-3 * first.max(1.0), "rosenbrock {first} -> {last}");
    assert!(opt.step().is_err());
}

#[test]
fn lbfgs_with_strong_wolfe_reaches_the_rosenbrock_minimum() {
    let w = Tensor::from_vec(vec![-1.2f64, 1.0], [2]).unwrap().requires_grad_(true).unwrap();
    let options = LbfgsOptions { line_search: Some(ember_optim::LineSearch::StrongWolfe), ..Default::default() };
    let mut opt = Lbfgs::new(vec![w.clone()], options).unwrap();
    let evals = std::cell::Cell::new(0);
    let mut closure = || {
        evals.set(evals.get() + 1);
        rosenbrock(&w)
    };
    let mut losses = vec![];
    for _ in 0..4 {
        losses.push(opt.step_with(&mut closure).unwrap());
    }
    let end = w.to_vec::<f64>().unwrap();
    assert!((end[0] - 1.0).abs() < 1e-4 && (end[1] - 1.0).abs() < 1e-4, "{end:?} after losses {losses:?}");
    assert!(losses[3] < 1e-9, "{losses:?}");
    // a line search never accepts a step that increases the loss
    assert!(losses.windows(2).all(|p| p[1] <= p[0]), "{losses:?}");
    // max_eval (25) bounds each step
    assert!(evals.get() <= 4 * 26, "{} evaluations", evals.get());
}
