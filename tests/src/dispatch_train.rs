//! Conformance dispatch for the nn/optim issue: losses, attention, recurrent and transformer
//! modules, optimizers, clipping, LR schedulers and short training runs.

use crate::dispatch::Args;
use ember::nn::functional::{self as F, ClassLossOptions, Reduction};
use ember::nn::layers::{
    Conv2d, Flatten, Linear, Mask, MaxPool, MultiheadAttention, ReLU, Rnn, RnnCell, RnnMode, RnnOptions, Tanh,
    TransformerEncoderLayer, TransformerOptions,
};
use ember::nn::{walk_module_mut, Module, ModuleExt, Sequential, SlotMut, Traverse};
use ember::optim::{self, lr_scheduler, Optimizer};
use ember::{DType, Error, Tensor};
use serde_json::{Map, Value};

type R<T> = Result<T, Error>;
type Inputs<'a> = &'a [(String, Option<Tensor>)];

fn f(a: &Map<String, Value>, k: &str, d: f64) -> f64 {
    Args(a).f(k, d)
}
fn b(a: &Map<String, Value>, k: &str, d: bool) -> bool {
    Args(a).b(k, d)
}
fn i(a: &Map<String, Value>, k: &str, d: i64) -> i64 {
    Args(a).i(k, d)
}
fn s<'a>(a: &'a Map<String, Value>, k: &str, d: &'a str) -> &'a str {
    Args(a).s(k).unwrap_or(d)
}
fn pair(a: &Map<String, Value>, k: &str, d: (f64, f64)) -> (f64, f64) {
    match a.get(k).and_then(|v| v.as_array()) {
        Some(v) if v.len() == 2 => (v[0].as_f64().unwrap_or(d.0), v[1].as_f64().unwrap_or(d.1)),
        _ => d,
    }
}
fn red(a: &Map<String, Value>) -> R<Reduction> {
    Reduction::parse(s(a, "reduction", "mean"))
}

/// Replaces the module's parameters by the named inputs (so gradients reach the case's tensors).
fn install(m: &mut dyn Traverse, inputs: Inputs<'_>, prefix: &str) -> R<()> {
    let mut missing = vec![];
    walk_module_mut(m, &mut |p, slot| {
        if let SlotMut::Param(n, t) | SlotMut::Buffer(n, t) = slot {
            let key = if p.is_empty() { format!("{prefix}{n}") } else { format!("{prefix}{p}.{n}") };
            match inputs.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.clone()) {
                Some(v) => *t = v,
                None => missing.push(key),
            }
        }
    });
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid("conformance", format!("case lacks parameters {missing:?}")))
    }
}

/// `None` when the op is not one of this issue's.
pub(crate) fn call_train(op: &str, a: &Map<String, Value>, inputs: Inputs<'_>) -> Option<R<Vec<Tensor>>> {
    let named = |n: &str| inputs.iter().find(|(k, _)| k == n).and_then(|(_, t)| t.as_ref());
    let pos = |k: usize| -> R<&Tensor> {
        inputs.get(k).and_then(|(_, t)| t.as_ref()).ok_or_else(|| Error::invalid(op, format!("missing input {k}")))
    };
    let one = |t: R<Tensor>| t.map(|t| vec![t]);
    let r = match op {
        "mse_loss" => one(red(a).and_then(|r| F::mse_loss_with(pos(0)?, pos(1)?, r))),
        "ctc_loss" => one(red(a).and_then(|reduction| {
            let o = F::CtcOptions {
                blank: i(a, "blank", 0) as usize,
                reduction,
                zero_infinity: b(a, "zero_infinity", false),
            };
            F::ctc_loss(pos(0)?, pos(1)?, pos(2)?, pos(3)?, o)
        })),
        "l1_loss" => one(red(a).and_then(|r| F::l1_loss_with(pos(0)?, pos(1)?, r))),
        "smooth_l1_loss" => one(red(a).and_then(|r| F::smooth_l1_loss(pos(0)?, pos(1)?, r, f(a, "beta", 1.0)))),
        "huber_loss" => one(red(a).and_then(|r| F::huber_loss(pos(0)?, pos(1)?, r, f(a, "delta", 1.0)))),
        "cross_entropy" | "nll_loss" => one((|| {
            let o = ClassLossOptions {
                weight: named("weight"),
                ignore_index: i(a, "ignore_index", -100),
                reduction: red(a)?,
                label_smoothing: f(a, "label_smoothing", 0.0),
            };
            if op == "cross_entropy" {
                F::cross_entropy_with(pos(0)?, pos(1)?, &o)
            } else {
                F::nll_loss_with(pos(0)?, pos(1)?, &o)
            }
        })()),
        "binary_cross_entropy" => {
            one(red(a).and_then(|r| F::binary_cross_entropy_with(pos(0)?, pos(1)?, named("weight"), r)))
        }
        "binary_cross_entropy_with_logits" => one(red(a).and_then(|r| {
            F::binary_cross_entropy_with_logits_opts(pos(0)?, pos(1)?, named("weight"), named("pos_weight"), r)
        })),
        "kl_div" => one(red(a).and_then(|r| F::kl_div(pos(0)?, pos(1)?, r, b(a, "log_target", false)))),
        "poisson_nll_loss" => one(red(a).and_then(|r| {
            F::poisson_nll_loss(pos(0)?, pos(1)?, b(a, "log_input", true), b(a, "full", false), f(a, "eps", 1e-8), r)
        })),
        "gaussian_nll_loss" => one(red(a)
            .and_then(|r| F::gaussian_nll_loss(pos(0)?, pos(1)?, pos(2)?, b(a, "full", false), f(a, "eps", 1e-6), r))),
        "margin_ranking_loss" => {
            one(red(a).and_then(|r| F::margin_ranking_loss(pos(0)?, pos(1)?, pos(2)?, f(a, "margin", 0.0), r)))
        }
        "hinge_embedding_loss" => {
            one(red(a).and_then(|r| F::hinge_embedding_loss(pos(0)?, pos(1)?, f(a, "margin", 1.0), r)))
        }
        "soft_margin_loss" => one(red(a).and_then(|r| F::soft_margin_loss(pos(0)?, pos(1)?, r))),
        "multilabel_soft_margin_loss" => {
            one(red(a).and_then(|r| F::multilabel_soft_margin_loss(pos(0)?, pos(1)?, named("weight"), r)))
        }
        "multi_margin_loss" => one(red(a).and_then(|r| {
            F::multi_margin_loss(pos(0)?, pos(1)?, i(a, "p", 1), f(a, "margin", 1.0), named("weight"), r)
        })),
        "cosine_embedding_loss" => {
            one(red(a).and_then(|r| F::cosine_embedding_loss(pos(0)?, pos(1)?, pos(2)?, f(a, "margin", 0.0), r)))
        }
        "triplet_margin_loss" => one(red(a).and_then(|r| {
            F::triplet_margin_loss(
                pos(0)?,
                pos(1)?,
                pos(2)?,
                f(a, "margin", 1.0),
                f(a, "p", 2.0),
                f(a, "eps", 1e-6),
                b(a, "swap", false),
                r,
            )
        })),
        "scaled_dot_product_attention" => one((|| {
            let mask = named("attn_mask").map(|m| {
                if m.dtype() == DType::Bool {
                    F::AttnMask::Allow(m)
                } else {
                    F::AttnMask::Additive(m)
                }
            });
            let scale = a.get("scale").and_then(|v| v.as_f64());
            Ok(F::scaled_dot_product_attention_with_weights(
                pos(0)?,
                pos(1)?,
                pos(2)?,
                mask,
                0.0,
                b(a, "is_causal", false),
                scale,
            )?
            .0)
        })()),
        "rnn_tanh_cell" | "rnn_relu_cell" | "lstm_cell" | "gru_cell" => (|| {
            let mode = match op {
                "rnn_tanh_cell" => RnnMode::RnnTanh,
                "rnn_relu_cell" => RnnMode::RnnRelu,
                "lstm_cell" => RnnMode::Lstm,
                _ => RnnMode::Gru,
            };
            let w = named("weight_ih").ok_or_else(|| Error::invalid(op, "missing weight_ih"))?;
            let hidden = named("weight_hh").map_or(0, |t| t.shape()[1]);
            let mut cell = RnnCell::new(mode, w.shape()[1], hidden, named("bias_ih").is_some())?;
            install(&mut cell, inputs, "")?;
            let (h, c) = cell.step(pos(0)?, pos(1)?, named("cx"))?;
            Ok(match c {
                Some(c) => vec![h, c],
                None => vec![h],
            })
        })(),
        "lstm" | "gru" | "rnn_tanh" | "rnn_relu" => (|| {
            let mode = match op {
                "lstm" => RnnMode::Lstm,
                "gru" => RnnMode::Gru,
                "rnn_tanh" => RnnMode::RnnTanh,
                _ => RnnMode::RnnRelu,
            };
            let o = RnnOptions {
                num_layers: i(a, "num_layers", 1) as usize,
                bias: b(a, "bias", true),
                batch_first: b(a, "batch_first", false),
                dropout: 0.0,
                bidirectional: b(a, "bidirectional", false),
            };
            let mut m = Rnn::new(mode, i(a, "input_size", 1) as usize, i(a, "hidden_size", 1) as usize, o)?;
            install(&mut m, inputs, "")?;
            m.eval();
            let (out, h, c) = m.forward_with_state(pos(0)?, named("h0"), named("c0"))?;
            Ok(std::iter::once(out).chain(std::iter::once(h)).chain(c).collect())
        })(),
        "multi_head_attention" => (|| {
            let mut m = MultiheadAttention::new(
                i(a, "embed_dim", 1) as usize,
                i(a, "num_heads", 1) as usize,
                0.0,
                true,
                b(a, "batch_first", false),
            )?;
            install(&mut m, inputs, "")?;
            m.eval();
            let (out, w) = m.forward_attn(
                pos(0)?,
                pos(1)?,
                pos(2)?,
                named("key_padding_mask").map(Mask::from_tensor),
                b(a, "need_weights", true),
                named("attn_mask").map(Mask::from_tensor),
                b(a, "average_attn_weights", true),
            )?;
            Ok(std::iter::once(out).chain(w).collect())
        })(),
        "transformer_encoder_layer" => (|| {
            let mut o = TransformerOptions::new(i(a, "d_model", 1) as usize, i(a, "nhead", 1) as usize);
            o.dim_feedforward = i(a, "dim_feedforward", 2048) as usize;
            o.dropout = f(a, "dropout", 0.1);
            o.activation = s(a, "activation", "relu").to_string();
            o.layer_norm_eps = f(a, "layer_norm_eps", 1e-5);
            o.batch_first = b(a, "batch_first", false);
            o.norm_first = b(a, "norm_first", false);
            let mut m = TransformerEncoderLayer::new(&o)?;
            install(&mut m, inputs, "")?;
            m.eval();
            one(m.forward_masked(pos(0)?, None, named("src_key_padding_mask").map(Mask::from_tensor)))
        })(),
        "clip_grad_norm_" | "clip_grad_value_" => (|| {
            let grads: Vec<Tensor> =
                inputs.iter().filter_map(|(_, t)| t.as_ref()).map(|t| t.deep_clone()).collect::<R<_>>()?;
            if op == "clip_grad_value_" {
                let params: Vec<Tensor> = grads
                    .iter()
                    .map(|g| {
                        let p = g.zeros_like()?.requires_grad_(true)?;
                        p.set_grad(Some(g.clone()));
                        Ok(p)
                    })
                    .collect::<R<_>>()?;
                optim::clip_grad_value_(&params, f(a, "clip_value", 1.0))?;
                return Ok(grads);
            }
            let total = optim::clip_grads_by_norm(&grads, f(a, "max_norm", 1.0), f(a, "norm_type", 2.0), false)?;
            Ok(std::iter::once(total).chain(grads).collect())
        })(),
        "amp.GradScaler" => run_grad_scaler(a, inputs),
        _ if op.starts_with("optim.") => run_optimizer(&op[6..], a, inputs),
        _ if op.starts_with("lr_scheduler.") => run_scheduler(&op[13..], a, inputs),
        _ if op.starts_with("train.") => run_training(&op[6..], a, inputs),
        _ => return None,
    };
    Some(r)
}

/// An optimizer from its PyTorch name and constructor arguments.
pub(crate) fn make_optimizer(name: &str, a: &Map<String, Value>, params: Vec<Tensor>) -> R<Box<dyn Optimizer>> {
    let lr = |d| f(a, "lr", d);
    let wd = f(a, "weight_decay", 0.0);
    let maximize = b(a, "maximize", false);
    Ok(match name {
        "SGD" => Box::new(optim::Sgd::sgd(
            params,
            optim::SgdOptions {
                lr: lr(1e-3),
                momentum: f(a, "momentum", 0.0),
                dampening: f(a, "dampening", 0.0),
                weight_decay: wd,
                nesterov: b(a, "nesterov", false),
                maximize,
            },
        )?),
        "Adam" | "AdamW" => {
            let base =
                if name == "Adam" { optim::AdamOptions::adam(lr(1e-3)) } else { optim::AdamOptions::adamw(lr(1e-3)) };
            let o = optim::AdamOptions {
                betas: pair(a, "betas", base.betas),
                eps: f(a, "eps", base.eps),
                weight_decay: f(a, "weight_decay", base.weight_decay),
                amsgrad: b(a, "amsgrad", false),
                maximize,
                ..base
            };
            Box::new(if name == "Adam" { optim::Adam::adam(params, o)? } else { optim::AdamW::adamw(params, o)? })
        }
        "RMSprop" => Box::new(optim::Optim::new(
            optim::RmsPropAlgo,
            params,
            optim::RmsPropOptions {
                lr: lr(0.01),
                alpha: f(a, "alpha", 0.99),
                eps: f(a, "eps", 1e-8),
                weight_decay: wd,
                momentum: f(a, "momentum", 0.0),
                centered: b(a, "centered", false),
                maximize,
            },
        )?),
        "Adagrad" => Box::new(optim::Optim::new(
            optim::AdagradAlgo,
            params,
            optim::AdagradOptions {
                lr: lr(0.01),
                lr_decay: f(a, "lr_decay", 0.0),
                weight_decay: wd,
                initial_accumulator_value: f(a, "initial_accumulator_value", 0.0),
                eps: f(a, "eps", 1e-10),
                maximize,
            },
        )?),
        "Adadelta" => Box::new(optim::Optim::new(
            optim::AdadeltaAlgo,
            params,
            optim::AdadeltaOptions {
                lr: lr(1.0),
                rho: f(a, "rho", 0.9),
                eps: f(a, "eps", 1e-6),
                weight_decay: wd,
                maximize,
            },
        )?),
        "Adamax" => Box::new(optim::Optim::new(
            optim::AdamaxAlgo,
            params,
            optim::AdamaxOptions {
                lr: lr(2e-3),
                betas: pair(a, "betas", (0.9, 0.999)),
                eps: f(a, "eps", 1e-8),
                weight_decay: wd,
                maximize,
            },
        )?),
        "NAdam" | "RAdam" => {
            let base = if name == "NAdam" { optim::NAdamOptions::nadam() } else { optim::NAdamOptions::radam() };
            let o = optim::NAdamOptions {
                lr: lr(base.lr),
                betas: pair(a, "betas", base.betas),
                eps: f(a, "eps", base.eps),
                weight_decay: wd,
                momentum_decay: f(a, "momentum_decay", base.momentum_decay),
                decoupled_weight_decay: b(a, "decoupled_weight_decay", false),
                maximize,
            };
            if name == "NAdam" {
                Box::new(optim::Optim::new(optim::NAdamAlgo, params, o)?)
            } else {
                Box::new(optim::Optim::new(optim::RAdamAlgo, params, o)?)
            }
        }
        "Rprop" => Box::new(optim::Optim::new(
            optim::RpropAlgo,
            params,
            optim::RpropOptions {
                lr: lr(0.01),
                etas: pair(a, "etas", (0.5, 1.2)),
                step_sizes: pair(a, "step_sizes", (1e-6, 50.0)),
                maximize,
            },
        )?),
        other => return Err(Error::unsupported(&format!("optim.{other}"), "no Ember implementation yet")),
    })
}

fn run_optimizer(name: &str, a: &Map<String, Value>, inputs: Inputs<'_>) -> R<Vec<Tensor>> {
    let get = |n: &str| {
        inputs
            .iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, t)| t.clone())
            .ok_or_else(|| Error::invalid(name, format!("missing {n}")))
    };
    let p = get("param")?.deep_clone()?.requires_grad_(true)?;
    let mut opt = make_optimizer(name, a, vec![p.clone()])?;
    let mut outs = vec![];
    for k in 1.. {
        let Ok(g) = get(&format!("grad.{k}")) else { break };
        p.set_grad(Some(g.deep_clone()?));
        opt.step()?;
        outs.push(p.detach().deep_clone()?);
    }
    Ok(outs)
}

/// `amp.GradScaler` driving SGD on one parameter: the loss of step k is `sum(param * grad.k)`, so
/// its scaled backward leaves `grad.k * scale` in `.grad`; outputs per step the parameter and the
/// scale after `update()` (F64).
fn run_grad_scaler(a: &Map<String, Value>, inputs: Inputs<'_>) -> R<Vec<Tensor>> {
    let get = |n: &str| {
        inputs
            .iter()
            .find(|(k, _)| k == n)
            .and_then(|(_, t)| t.clone())
            .ok_or_else(|| Error::invalid("amp.GradScaler", format!("missing {n}")))
    };
    let p = get("param")?.deep_clone()?.requires_grad_(true)?;
    let mut opt = optim::Sgd::sgd(vec![p.clone()], optim::SgdOptions::new(f(a, "lr", 0.1)))?;
    let mut scaler = optim::GradScaler::new(optim::GradScalerOptions {
        init_scale: f(a, "init_scale", 65536.0),
        growth_factor: f(a, "growth_factor", 2.0),
        backoff_factor: f(a, "backoff_factor", 0.5),
        growth_interval: i(a, "growth_interval", 2000).max(1) as u64,
        enabled: true,
    });
    let mut outs = vec![];
    for k in 1.. {
        let Ok(g) = get(&format!("grad.{k}")) else { break };
        opt.zero_grad()?;
        scaler.scale(&p.mul(&g)?.sum()?)?.backward()?;
        scaler.step(&mut opt)?;
        scaler.update()?;
        outs.push(p.detach().deep_clone()?);
        outs.push(Tensor::scalar(scaler.get_scale()));
    }
    Ok(outs)
}

fn run_scheduler(name: &str, a: &Map<String, Value>, inputs: Inputs<'_>) -> R<Vec<Tensor>> {
    let base_lr = f(a, "base_lr", 0.1);
    let p = Tensor::zeros([1])?.requires_grad_(true)?;
    let mut opt = optim::Sgd::sgd(vec![p], optim::SgdOptions::new(base_lr))?;
    let int = |k: &str, d: i64| i(a, k, d).max(0) as u64;
    const K: usize = 20;
    let mut lrs = vec![];
    if name == "ReduceLROnPlateau" {
        let metrics = inputs.iter().find(|(k, _)| k == "metrics").and_then(|(_, t)| t.clone());
        let metrics = metrics.ok_or_else(|| Error::invalid(name, "missing metrics"))?.to_vec_f64()?;
        let mut s = lr_scheduler::ReduceLrOnPlateau::new(self::s(a, "mode", "min") == "max");
        s.factor = f(a, "factor", 0.1);
        s.patience = int("patience", 10);
        s.threshold = f(a, "threshold", 1e-4);
        s.threshold_rel = self::s(a, "threshold_mode", "rel") == "rel";
        s.cooldown = int("cooldown", 0);
        s.min_lr = f(a, "min_lr", 0.0);
        s.eps = f(a, "eps", 1e-8);
        for m in metrics.iter().take(K) {
            lrs.push(opt.lr(0));
            opt.step()?;
            s.step(&mut opt, *m);
        }
        return Ok(vec![Tensor::from_vec(lrs, [metrics.len().min(K)])?]);
    }
    let mut sched = match name {
        "StepLR" => lr_scheduler::step_lr(&mut opt, int("step_size", 1), f(a, "gamma", 0.1)),
        "MultiStepLR" => {
            let ms: Vec<u64> = a
                .get("milestones")
                .and_then(|v| v.as_array())
                .map(|v| v.iter().filter_map(|x| x.as_u64()).collect())
                .unwrap_or_default();
            lr_scheduler::multi_step_lr(&mut opt, &ms, f(a, "gamma", 0.1))
        }
        "ExponentialLR" => lr_scheduler::exponential_lr(&mut opt, f(a, "gamma", 0.1)),
        "CosineAnnealingLR" => lr_scheduler::cosine_annealing_lr(&mut opt, int("T_max", 1), f(a, "eta_min", 0.0)),
        "CosineAnnealingWarmRestarts" => lr_scheduler::cosine_annealing_warm_restarts(
            &mut opt,
            int("T_0", 1),
            int("T_mult", 1),
            f(a, "eta_min", 0.0),
        ),
        "LinearLR" => lr_scheduler::linear_lr(
            &mut opt,
            f(a, "start_factor", 1.0 / 3.0),
            f(a, "end_factor", 1.0),
            int("total_iters", 5),
        ),
        "PolynomialLR" => lr_scheduler::polynomial_lr(&mut opt, int("total_iters", 5), f(a, "power", 1.0)),
        "OneCycleLR" => {
            let mut o = lr_scheduler::OneCycleOptions::new(f(a, "max_lr", 0.1), int("total_steps", 1));
            o.pct_start = f(a, "pct_start", 0.3);
            o.anneal_strategy = s(a, "anneal_strategy", "cos").to_string();
            o.cycle_momentum = b(a, "cycle_momentum", true);
            o.div_factor = f(a, "div_factor", 25.0);
            o.final_div_factor = f(a, "final_div_factor", 1e4);
            o.three_phase = b(a, "three_phase", false);
            lr_scheduler::one_cycle_lr(&mut opt, o)?
        }
        "CyclicLR" => lr_scheduler::cyclic_lr(
            &mut opt,
            lr_scheduler::CyclicOptions {
                base_lr,
                max_lr: f(a, "max_lr", 0.1),
                step_size_up: int("step_size_up", 2000),
                step_size_down: a.get("step_size_down").and_then(|v| v.as_u64()),
                mode: s(a, "mode", "triangular").to_string(),
                gamma: f(a, "gamma", 1.0),
            },
        )?,
        other => return Err(Error::unsupported(&format!("lr_scheduler.{other}"), "no Ember implementation yet")),
    };
    for _ in 0..K {
        lrs.push(opt.lr(0));
        opt.step()?;
        sched.step(&mut opt)?;
    }
    Ok(vec![Tensor::from_vec(lrs, [K])?])
}

/// The LSTM classifier of `train.lstm`: last output step through a linear layer.
#[derive(ember::nn::Module)]
struct LstmClassifier {
    lstm: Rnn,
    fc: Linear,
}

impl Module for LstmClassifier {
    fn forward(&self, x: &Tensor) -> R<Tensor> {
        let out = self.lstm.forward(x)?;
        let t = out.shape()[1] as isize;
        self.fc.forward(&out.select(1, t - 1)?)
    }
}

fn run_training(model: &str, a: &Map<String, Value>, inputs: Inputs<'_>) -> R<Vec<Tensor>> {
    let mut net: Box<dyn Module> = match model {
        "mlp" => {
            let sizes: Vec<usize> = a
                .get("layers")
                .and_then(|v| v.as_array())
                .map(|v| v.iter().filter_map(|x| x.as_u64()).map(|x| x as usize).collect())
                .unwrap_or_default();
            let mut seq = Sequential::new();
            for (k, w) in sizes.windows(2).enumerate() {
                seq.push(Linear::new(w[0], w[1])?);
                if k + 2 < sizes.len() {
                    match s(a, "activation", "relu") {
                        "tanh" => seq.push(Tanh::default()),
                        _ => seq.push(ReLU::default()),
                    }
                }
            }
            Box::new(seq)
        }
        "convnet" => Box::new(
            Sequential::new()
                .layer(Conv2d::new(1, 4, [3, 3])?)
                .layer(ReLU::default())
                .layer(MaxPool::square(2))
                .layer(Flatten::default())
                .layer(Linear::new(36, 5)?),
        ),
        "lstm" => Box::new(LstmClassifier {
            lstm: Rnn::lstm(5, 8, RnnOptions { batch_first: true, ..Default::default() })?,
            fc: Linear::new(8, 3)?,
        }),
        other => return Err(Error::unsupported(&format!("train.{other}"), "unknown model")),
    };
    net.to_dtype(DType::F64)?;
    if let Some(x) = inputs.iter().find(|(k, _)| k == "x.1").and_then(|(_, t)| t.as_ref()) {
        net.to_device(x.device())?;
    }
    let state: Vec<(String, Tensor)> = inputs
        .iter()
        .filter(|(k, _)| !k.starts_with("x.") && !k.starts_with("y."))
        .filter_map(|(k, t)| Some((k.clone(), t.clone()?)))
        .collect();
    ember::nn::load_state_dict(&net, &state, true)?;
    let empty = Map::new();
    let oa = a.get("optimizer_args").and_then(|v| v.as_object()).unwrap_or(&empty);
    let mut opt = make_optimizer(s(a, "optimizer", "SGD"), oa, net.parameters())?;
    let get = |n: &str| inputs.iter().find(|(k, _)| k == n).and_then(|(_, t)| t.clone());
    let mut losses = vec![];
    for k in 1.. {
        let (Some(x), Some(y)) = (get(&format!("x.{k}")), get(&format!("y.{k}"))) else { break };
        opt.zero_grad()?;
        let loss = F::cross_entropy_with(&net.forward(&x)?, &y, &ClassLossOptions::default())?;
        losses.push(loss.item()?);
        loss.backward()?;
        opt.step()?;
    }
    let n = losses.len();
    let mut outs = vec![Tensor::from_vec(losses, [n])?];
    outs.extend(net.state_dict().into_iter().map(|(_, t)| t));
    Ok(outs)
}
