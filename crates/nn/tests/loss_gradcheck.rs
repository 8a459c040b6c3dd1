//! Property-based gradient checks (f64 central differences) for the losses, with random shapes.

use ember_autograd::{gradcheck, DType, Tensor};
use ember_nn::functional::{self as F, ClassLossOptions, Reduction};
use proptest::prelude::*;

fn randn(shape: &[usize]) -> Tensor {
    Tensor::randn(shape).unwrap().to_dtype(DType::F64).unwrap()
}

fn check(f: impl Fn(&[Tensor]) -> ember_autograd::Result<Tensor>, inputs: &[Tensor]) {
    let leaves: Vec<Tensor> = inputs.iter().map(|t| t.detach().requires_grad_(true).unwrap()).collect();
    let err = gradcheck(|xs| f(xs)?.sum(), &leaves, 1e-6, 1e-5).unwrap();
    assert!(err < 1e-5, "max gradient error {err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn regression_losses(n in 1usize..5, m in 1usize..4, r in 0usize..3) {
        let red = [Reduction::None, Reduction::Mean, Reduction::Sum][r];
        let (x, y) = (randn(&[n, m]), randn(&[n, m]));
        check(|t| F::mse_loss(&t[0], &t[1], red), &[x.clone(), y.clone()]);
        check(|t| F::huber_loss(&t[0], &t[1], red, 0.7), &[x.clone(), y.clone()]);
        check(|t| F::smooth_l1_loss(&t[0], &t[1], red, 0.5), &[x.clone(), y.clone()]);
        let v = randn(&[n, m]).abs().unwrap().add(0.5).unwrap();
        check(|t| F::gaussian_nll_loss(&t[0], &t[1], &t[2], false, 1e-6, red), &[x, y, v]);
    }

    #[test]
    fn classification_losses(n in 1usize..5, c in 2usize..5, extra in 0usize..3, smooth in 0.0f64..0.3) {
        let shape: Vec<usize> = if extra == 0 { vec![n, c] } else { vec![n, c, extra] };
        let x = randn(&shape);
        let tshape: Vec<usize> = if extra == 0 { vec![n] } else { vec![n, extra] };
        let t = Tensor::randint(0, c as i64, &tshape).unwrap();
        let w = randn(&[c]).abs().unwrap().add(0.1).unwrap();
        let o = ClassLossOptions { weight: Some(&w), label_smoothing: smooth, ..Default::default() };
        check(|xs| F::cross_entropy(&xs[0], &t, &o), std::slice::from_ref(&x));
        let probs = randn(&shape).softmax(1).unwrap();
        check(|xs| F::cross_entropy(&xs[0], &probs, &ClassLossOptions::default()), std::slice::from_ref(&x));
        let tb = Tensor::rand(&shape).unwrap().to_dtype(DType::F64).unwrap();
        check(|xs| F::binary_cross_entropy_with_logits(&xs[0], &tb, None, None, Reduction::Mean), std::slice::from_ref(&x));
        let p = x.sigmoid().unwrap().clamp(Some(0.05), Some(0.95)).unwrap();
        check(|xs| F::binary_cross_entropy(&xs[0], &tb, None, Reduction::Sum), &[p]);
        let lp = x.log_softmax(1).unwrap();
        check(|xs| F::kl_div(&xs[0], &xs[1], Reduction::BatchMean, true), &[lp.clone(), lp]);
    }

    #[test]
    fn margin_losses(n in 1usize..5, d in 2usize..5) {
        let (a, p, q) = (randn(&[n, d]), randn(&[n, d]), randn(&[n, d]));
        check(|t| F::triplet_margin_loss(&t[0], &t[1], &t[2], 1.0, 2.0, 1e-6, true, Reduction::Mean), &[a.clone(), p.clone(), q]);
        let y = Tensor::randint(0, 2, &[n]).unwrap().to_dtype(DType::F64).unwrap().mul(2.0).unwrap().sub(1.0).unwrap();
        check(|t| F::cosine_embedding_loss(&t[0], &t[1], &y, 0.1, Reduction::Mean), &[a.clone(), p]);
        let cls = Tensor::randint(0, d as i64, &[n]).unwrap();
        check(|t| F::multi_margin_loss(&t[0], &cls, 2, 1.0, None, Reduction::Mean), std::slice::from_ref(&a));
        let yl = Tensor::randint(0, 2, &[n, d]).unwrap().to_dtype(DType::F64).unwrap();
        check(|t| F::multilabel_soft_margin_loss(&t[0], &yl, None, Reduction::Mean), &[a]);
    }
}
