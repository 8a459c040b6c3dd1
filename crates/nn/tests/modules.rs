//! Module traversal, state_dict keys, loading (strict and not), checkpoints, train/eval.

use ember_autograd::{DType, Tensor};
use ember_nn::layers::*;
use ember_nn::{functional as F, init, Module, ModuleExt, Sequential};

#[derive(ember_nn::Module)]
struct Net {
    conv: Conv2d,
    bn: BatchNorm2d,
    blocks: Vec<Linear>,
    head: Option<Linear>,
    #[module(buffer)]
    scale: Tensor,
    name: String,
    training: bool,
}

fn net() -> Net {
    Net {
        conv: Conv2d::square(1, 2, 3, 1, 1).unwrap(),
        bn: BatchNorm2d::new(2).unwrap(),
        blocks: vec![Linear::new(4, 4).unwrap(), Linear::new(4, 4).bias(false).unwrap()],
        head: Some(Linear::new(4, 1).unwrap()),
        scale: Tensor::ones([1]).unwrap(),
        name: "net".into(),
        training: true,
    }
}

#[test]
fn derive_gives_pytorch_keys_in_order() {
    let n = net();
    let keys: Vec<String> = n.state_dict().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "conv.weight",
            "conv.bias",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
            "blocks.0.weight",
            "blocks.0.bias",
            "blocks.1.weight",
            "head.weight",
            "head.bias",
            "scale",
        ]
    );
    assert_eq!(n.parameters().len(), 9);
    assert_eq!(n.buffers().len(), 4);
    assert!(n.parameters().iter().all(|p| p.requires_grad() && p.is_leaf()));
    assert_eq!(n.name, "net");
}

#[test]
fn train_eval_reaches_every_flag() {
    let mut n = net();
    assert!(n.is_training() && n.bn.training);
    n.eval();
    assert!(!n.is_training() && !n.bn.training && !n.training);
    n.train();
    assert!(n.bn.training);
}

#[test]
fn load_state_dict_copies_in_place_and_reports_all_problems() {
    let a = net();
    let b = net();
    let w_before = b.conv.weight.clone();
    ember_nn::load_state_dict(&b, &a.state_dict(), true).unwrap();
    // same tensor object, new values
    assert!(w_before.shares_storage(&b.conv.weight));
    assert_eq!(b.conv.weight.to_vec_f64().unwrap(), a.conv.weight.to_vec_f64().unwrap());

    let mut sd = a.state_dict();
    sd.retain(|(k, _)| k != "bn.bias");
    sd.push(("extra.weight".into(), Tensor::zeros([1]).unwrap()));
    for (k, t) in sd.iter_mut() {
        if k == "head.weight" {
            *t = Tensor::zeros([2, 4]).unwrap();
        }
    }
    let err = ember_nn::load_state_dict(&b, &sd, true).unwrap_err().to_string();
    assert!(err.contains("size mismatch for head.weight"), "{err}");
    assert!(err.contains("missing key(s) in state_dict: bn.bias"), "{err}");
    assert!(err.contains("unexpected key(s) in state_dict: extra.weight"), "{err}");

    sd.retain(|(k, _)| k != "head.weight");
    let report = ember_nn::load_state_dict(&b, &sd, false).unwrap();
    assert_eq!(report.missing_keys, ["bn.bias", "head.weight"]);
    assert_eq!(report.unexpected_keys, ["extra.weight"]);
}

#[test]
fn checkpoint_roundtrip_and_corrupt_file() {
    let dir = std::env::temp_dir().join(format!("ember-nn-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let a = net();
    ember_nn::save(&a, &path).unwrap();
    let b = net();
    ember_nn::load(&b, &path, true).unwrap();
    let x = Tensor::randn([2, 1, 4, 4]).unwrap();
    let (mut a, mut b) = (a, b);
    a.eval();
    b.eval();
    let ya = a.bn.forward(&a.conv.forward(&x).unwrap()).unwrap();
    let yb = b.bn.forward(&b.conv.forward(&x).unwrap()).unwrap();
    assert_eq!(ya.to_vec_f64().unwrap(), yb.to_vec_f64().unwrap());
    std::fs::write(&path, b"not a checkpoint").unwrap();
    assert!(ember_nn::load(&b, &path, true).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn batchnorm_updates_running_stats_and_uses_them_in_eval() {
    let mut bn = BatchNorm2d::new(3).unwrap();
    let x = Tensor::randn([4, 3, 5, 5]).unwrap().mul(2.0).unwrap().add(1.0).unwrap();
    let y = bn.forward(&x).unwrap();
    let m = y.mean_dim([0, 2, 3], false).unwrap().to_vec_f64().unwrap();
    assert!(m.iter().all(|v| v.abs() < 1e-5));
    let rm = bn.running_mean.as_ref().unwrap().to_vec_f64().unwrap();
    let batch_mean = x.mean_dim([0, 2, 3], false).unwrap().to_vec_f64().unwrap();
    for (r, b) in rm.iter().zip(&batch_mean) {
        assert!((r - 0.1 * b).abs() < 1e-6);
    }
    assert_eq!(bn.num_batches_tracked.as_ref().unwrap().item().unwrap(), 1.0);
    bn.eval();
    let y1 = bn.forward(&x).unwrap();
    let y2 = bn.forward(&x).unwrap();
    assert_eq!(y1.to_vec_f64().unwrap(), y2.to_vec_f64().unwrap());
    assert_eq!(bn.num_batches_tracked.as_ref().unwrap().item().unwrap(), 1.0);
}

#[test]
fn dropout_is_identity_in_eval_and_scales_in_training() {
    let mut d = Dropout::new(0.5);
    let x = Tensor::ones([10000]).unwrap();
    let y = d.forward(&x).unwrap().to_vec_f64().unwrap();
    assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    let kept = y.iter().filter(|&&v| v == 2.0).count();
    assert!((4000..6000).contains(&kept), "{kept}");
    d.eval();
    assert_eq!(d.forward(&x).unwrap().to_vec_f64().unwrap(), x.to_vec_f64().unwrap());
}

#[test]
fn sequential_lstm_and_transformer_shapes_and_keys() {
    let seq = Sequential::new().layer(Linear::new(3, 4).unwrap()).layer(Tanh::default());
    assert_eq!(seq.forward(&Tensor::randn([2, 3]).unwrap()).unwrap().shape(), &[2, 4]);
    let lstm =
        Rnn::lstm(3, 5, RnnOptions { num_layers: 2, bidirectional: true, batch_first: true, ..Default::default() })
            .unwrap();
    let keys: Vec<String> = lstm.state_dict().into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&"weight_ih_l1_reverse".to_string()));
    assert_eq!(keys.len(), 16);
    let (out, h, c) = lstm.forward_with_state(&Tensor::randn([2, 7, 3]).unwrap(), None, None).unwrap();
    assert_eq!((out.shape(), h.shape(), c.unwrap().shape()), (&[2, 7, 10][..], &[4, 2, 5][..], &[4, 2, 5][..]));
    let mut o = TransformerOptions::new(8, 2);
    o.dim_feedforward = 16;
    o.batch_first = true;
    let enc = TransformerEncoder::new(&o, 2, true).unwrap();
    assert_eq!(enc.forward(&Tensor::randn([3, 5, 8]).unwrap()).unwrap().shape(), &[3, 5, 8]);
    assert!(enc.state_dict().iter().any(|(k, _)| k == "layers.1.self_attn.out_proj.weight"));
    assert!(enc.state_dict().iter().any(|(k, _)| k == "norm.bias"));
}

#[test]
fn to_dtype_keeps_parameters_trainable() {
    let mut l = Linear::new(3, 2).unwrap();
    l.to_dtype(DType::F64).unwrap();
    assert_eq!(l.weight.dtype(), DType::F64);
    assert!(l.weight.requires_grad() && l.weight.is_leaf());
    let y = l.forward(&Tensor::randn([4, 3]).unwrap().to_dtype(DType::F64).unwrap()).unwrap();
    y.sum().unwrap().backward().unwrap();
    assert_eq!(l.weight.grad().unwrap().shape(), &[2, 3]);
}

#[test]
fn init_schemes_have_the_right_spread() {
    let t = Tensor::zeros([256, 512]).unwrap();
    init::kaiming_uniform_(&t, 0.0, init::FanMode::FanIn, "relu").unwrap();
    let bound = (6.0f64 / 512.0).sqrt();
    let v = t.to_vec_f64().unwrap();
    assert!(v.iter().all(|x| x.abs() <= bound + 1e-6));
    let std = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
    assert!((std - (2.0f64 / 512.0).sqrt()).abs() < 0.01 * std * 10.0);
    init::orthogonal_(&t.narrow(0, 0, 64).unwrap().contiguous().unwrap(), 1.0).unwrap();
    let q = Tensor::zeros([6, 10]).unwrap();
    init::orthogonal_(&q, 1.0).unwrap();
    let qqt = q.matmul(&q.t().unwrap()).unwrap().to_vec_f64().unwrap();
    for i in 0..6 {
        for j in 0..6 {
            assert!((qqt[i * 6 + j] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5);
        }
    }
    assert_eq!(init::calculate_gain("tanh", None).unwrap(), 5.0 / 3.0);
    assert!(init::calculate_gain("nope", None).is_err());
}

#[test]
fn losses_reject_bad_input_with_clear_errors() {
    let x = Tensor::randn([4, 3]).unwrap();
    let bad = Tensor::from_vec(vec![0i64, 1, 5, 2], [4]).unwrap();
    let e = F::cross_entropy_with(&x, &bad, &Default::default()).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("[0, 3)"), "{e}");
    let e = F::mse_loss_with(&x, &Tensor::zeros([4]).unwrap(), F::Reduction::Mean).unwrap_err().to_string();
    assert!(e.contains("mse_loss") && e.contains("[4, 3]"), "{e}");
}
