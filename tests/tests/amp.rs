//! Mixed precision: autocast scopes (nesting, disabling, the cast cache, no_grad, backward outside
//! the lists) and the GradScaler (skipped steps, growth, clipping after unscale_, checkpoints, and
//! an f16 model whose gradients underflow without it). PyTorch's own values for both are in the
//! conformance cases (`autocast.*`, `amp.GradScaler`).

use ember::optim::{self, GradScaler, GradScalerOptions, Optimizer};
use ember::{autocast, autocast_cache_len, autocast_disabled, no_grad, DType, Tensor};

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(shape).unwrap()
}

#[test]
fn autocast_casts_listed_ops_nests_and_can_be_disabled() {
    ember::manual_seed(0);
    let (x, w) = (randn(&[4, 8]), randn(&[3, 8]).requires_grad_(true).unwrap());
    let dtypes = autocast(DType::BF16, || {
        let a = x.linear(&w, None)?.dtype();
        let b = autocast(DType::F16, || x.linear(&w, None))?.dtype();
        let c = autocast_disabled(|| x.linear(&w, None))?.dtype();
        // not listed: runs in its inputs' dtype; listed in f32: cast up
        let d = x.relu()?.dtype();
        let e = ember::nn::functional::mse_loss_with(
            &x.to_dtype(DType::BF16)?,
            &x,
            ember::nn::functional::Reduction::Mean,
        )?
        .dtype();
        Ok((a, b, c, d, e))
    })
    .unwrap();
    assert_eq!(dtypes, (DType::BF16, DType::F16, DType::F32, DType::F32, DType::F32));
    // f64 is never cast; outside the scope nothing is
    let y = autocast(DType::BF16, || x.to_dtype(DType::F64)?.matmul(&w.to_dtype(DType::F64)?.t()?)).unwrap();
    assert_eq!(y.dtype(), DType::F64);
    assert_eq!(x.linear(&w, None).unwrap().dtype(), DType::F32);
    let e = autocast(DType::F32, || Ok(())).unwrap_err().to_string();
    assert!(e.contains("bf16 or f16"), "{e}");
}

#[test]
fn a_parameter_used_twice_is_cast_once_and_gradients_reach_it_in_f32() {
    ember::manual_seed(1);
    let (x, w) = (randn(&[5, 6]), randn(&[6, 6]).requires_grad_(true).unwrap());
    let y = autocast(DType::BF16, || {
        let h = x.matmul(&w)?;
        let y = h.matmul(&w)?;
        assert_eq!(autocast_cache_len(), 1, "w cast once for both products");
        Ok(y)
    })
    .unwrap();
    assert_eq!(autocast_cache_len(), 0, "the cache ends with the scope");
    assert_eq!(y.dtype(), DType::BF16);
    y.to_dtype(DType::F32).unwrap().sum().unwrap().backward().unwrap();
    let g = w.grad().unwrap();
    assert_eq!(g.dtype(), DType::F32);
    // against the f32 computation on bf16-rounded values
    let wb = w.detach().to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap().requires_grad_(true).unwrap();
    let xb = x.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    let h = xb.matmul(&wb).unwrap().to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    h.matmul(&wb).unwrap().sum().unwrap().backward().unwrap();
    let diff = g.sub(&wb.grad().unwrap()).unwrap().abs().unwrap().amax(ember::SCALAR, false).unwrap().item().unwrap();
    let scale = g.abs().unwrap().amax(ember::SCALAR, false).unwrap().item().unwrap();
    assert!(diff <= 0.02 * scale, "{diff} vs {scale}");
}

#[test]
fn autocast_inside_no_grad_records_nothing_and_the_cache_keeps_grad_modes_apart() {
    ember::manual_seed(2);
    let (x, w) = (randn(&[2, 3]), randn(&[4, 3]).requires_grad_(true).unwrap());
    autocast(DType::BF16, || {
        let a = no_grad(|| x.linear(&w, None))?;
        assert_eq!(a.dtype(), DType::BF16);
        assert!(!a.requires_grad());
        // the same weight with grad mode on: a cast that records, not the no_grad one
        let b = x.linear(&w, None)?;
        assert!(b.requires_grad());
        assert_eq!(autocast_cache_len(), 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn backward_inside_a_scope_follows_the_forward_dtypes() {
    let w = randn(&[3, 3]).requires_grad_(true).unwrap();
    let x = randn(&[2, 3]);
    autocast(DType::BF16, || {
        let y = x.matmul(&w)?;
        y.to_dtype(DType::F32)?.sum()?.backward()?;
        Ok(())
    })
    .unwrap();
    assert_eq!(w.grad().unwrap().dtype(), DType::F32);
}

/// One SGD step on `w` from the loss `sum(w * g)` under `scaler`; returns whether it stepped.
fn scaled_step(scaler: &mut GradScaler, opt: &mut dyn Optimizer, w: &Tensor, g: &Tensor) -> bool {
    opt.zero_grad().unwrap();
    scaler.scale(&w.mul(g).unwrap().sum().unwrap()).unwrap().backward().unwrap();
    let stepped = scaler.step(opt).unwrap();
    scaler.update().unwrap();
    stepped
}

#[test]
fn the_scaler_skips_non_finite_steps_backs_off_and_grows() {
    let w = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap().requires_grad_(true).unwrap();
    let mut opt = optim::Sgd::sgd(vec![w.clone()], optim::SgdOptions::new(0.5)).unwrap();
    let o = GradScalerOptions { init_scale: 8.0, growth_interval: 2, ..Default::default() };
    let mut scaler = GradScaler::new(o);
    let g = Tensor::from_vec(vec![1.0f32, -1.0], [2]).unwrap();
    let bad = Tensor::from_vec(vec![f32::INFINITY, 1.0], [2]).unwrap();
    assert!(scaled_step(&mut scaler, &mut opt, &w, &g));
    assert_eq!(w.to_vec_f64().unwrap(), vec![0.5, 2.5]);
    assert_eq!(scaler.get_scale(), 8.0);
    assert!(!scaled_step(&mut scaler, &mut opt, &w, &bad), "an inf gradient skips the step");
    assert_eq!(w.to_vec_f64().unwrap(), vec![0.5, 2.5]);
    assert_eq!(scaler.get_scale(), 4.0);
    assert!(scaled_step(&mut scaler, &mut opt, &w, &g));
    assert!(scaled_step(&mut scaler, &mut opt, &w, &g));
    assert_eq!(scaler.get_scale(), 8.0, "two clean steps in a row grow the scale");
    // misuse is a clear error
    let e = scaler.update().unwrap_err().to_string();
    assert!(e.contains("no inf checks"), "{e}");
    opt.zero_grad().unwrap();
    scaler.scale(&w.sum().unwrap()).unwrap().backward().unwrap();
    scaler.unscale_(&mut opt).unwrap();
    let e = scaler.unscale_(&mut opt).unwrap_err().to_string();
    assert!(e.contains("already been called"), "{e}");
}

#[test]
fn clipping_after_unscale_sees_the_true_gradients_and_state_round_trips() {
    let w = Tensor::from_vec(vec![3.0f32, 4.0], [2]).unwrap().requires_grad_(true).unwrap();
    let mut opt = optim::Sgd::sgd(vec![w.clone()], optim::SgdOptions::new(1.0)).unwrap();
    let mut scaler = GradScaler::new(GradScalerOptions { init_scale: 1024.0, ..Default::default() });
    opt.zero_grad().unwrap();
    // gradient (3, 4), norm 5: clipped to norm 1 -> (0.6, 0.8)
    scaler.scale(&w.mul(&w).unwrap().sum().unwrap().mul(0.5).unwrap()).unwrap().backward().unwrap();
    scaler.unscale_(&mut opt).unwrap();
    let norm = optim::clip_grad_norm_(std::slice::from_ref(&w), 1.0, 2.0, false).unwrap().item().unwrap();
    assert!((norm - 5.0).abs() < 1e-5, "{norm}");
    assert!(scaler.step(&mut opt).unwrap());
    scaler.update().unwrap();
    let v = w.to_vec_f64().unwrap();
    assert!((v[0] - 2.4).abs() < 1e-5 && (v[1] - 3.2).abs() < 1e-5, "{v:?}");
    // a checkpoint of the scaler restores scale and growth count
    let state = scaler.state_dict();
    let mut other = GradScaler::new(GradScalerOptions::default());
    other.load_state_dict(&state).unwrap();
    assert_eq!(other.get_scale(), 1024.0);
    assert_eq!(
        other.state_dict().iter().map(|(k, t)| (k.clone(), t.item().unwrap())).collect::<Vec<_>>(),
        state.iter().map(|(k, t)| (k.clone(), t.item().unwrap())).collect::<Vec<_>>()
    );
}

#[test]
fn an_f16_forward_underflows_without_the_scaler_and_not_with_it() {
    ember::manual_seed(3);
    let x = randn(&[8, 4]);
    let grads = |scale: bool| -> Tensor {
        let w = randn(&[2, 4]).mul(0.1).unwrap().requires_grad_(true).unwrap();
        let mut opt = optim::Sgd::sgd(vec![w.clone()], optim::SgdOptions::new(0.0)).unwrap();
        let mut scaler = GradScaler::new(GradScalerOptions { enabled: scale, ..Default::default() });
        let y = autocast(DType::F16, || x.linear(&w, None)).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        // a tiny loss: its gradient reaching the f16 output (1e-8) is below f16's smallest subnormal
        let loss = y.to_dtype(DType::F32).unwrap().sum().unwrap().mul(1e-8).unwrap();
        scaler.scale(&loss).unwrap().backward().unwrap();
        scaler.unscale_(&mut opt).unwrap();
        w.grad().unwrap()
    };
    let plain = grads(false);
    assert_eq!(plain.abs().unwrap().sum().unwrap().item().unwrap(), 0.0, "f16 gradients underflow to 0");
    let scaled = grads(true);
    let want = x.sum_dim([0], false).unwrap().mul(1e-8).unwrap(); // d/dw of sum(x wᵀ) * 1e-8, per row
    let got = scaled.select(0, 0).unwrap();
    let rel = got.sub(&want).unwrap().abs().unwrap().amax(ember::SCALAR, false).unwrap().item().unwrap()
        / want.abs().unwrap().amax(ember::SCALAR, false).unwrap().item().unwrap();
    assert!(rel < 0.01, "scaled gradients recover the true ones: {rel}");
}

#[test]
fn f16_convolution_without_bias_and_strided_gets_every_gradient() {
    ember::manual_seed(4);
    let x = randn(&[2, 3, 7, 6]).requires_grad_(true).unwrap();
    let w = randn(&[4, 3, 3, 3]).requires_grad_(true).unwrap();
    let mut o = ember::ConvOptions::new(2);
    o.stride = vec![2, 1];
    o.padding = ember::ConvPadding::Explicit(vec![1, 0]);
    let y = autocast(DType::F16, || x.conv(&w, None, &o)).unwrap();
    assert_eq!((y.dtype(), y.shape()), (DType::F16, &[2, 4, 4, 4][..]));
    y.to_dtype(DType::F32).unwrap().sum().unwrap().backward().unwrap();
    // against f32 gradients: within f16's rounding
    let (x2, w2) = (x.detach().requires_grad_(true).unwrap(), w.detach().requires_grad_(true).unwrap());
    x2.conv(&w2, None, &o).unwrap().sum().unwrap().backward().unwrap();
    for (a, b) in [(x.grad().unwrap(), x2.grad().unwrap()), (w.grad().unwrap(), w2.grad().unwrap())] {
        assert_eq!(a.dtype(), DType::F32);
        let d = a.sub(&b).unwrap().abs().unwrap().amax(ember::SCALAR, false).unwrap().item().unwrap();
        let m = b.abs().unwrap().amax(ember::SCALAR, false).unwrap().item().unwrap();
        assert!(d <= 5e-3 * m, "{d} vs {m}");
    }
}
