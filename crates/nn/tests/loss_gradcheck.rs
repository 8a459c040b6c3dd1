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
        check(|t| F::mse_loss_with(&t[0], &t[1], red), &[x.clone(), y.clone()]);
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
        check(|xs| F::cross_entropy_with(&xs[0], &t, &o), std::slice::from_ref(&x));
        let probs = randn(&shape).softmax(1).unwrap();
        check(|xs| F::cross_entropy_with(&xs[0], &probs, &ClassLossOptions::default()), std::slice::from_ref(&x));
        let tb = Tensor::rand(&shape).unwrap().to_dtype(DType::F64).unwrap();
        check(|xs| F::binary_cross_entropy_with_logits_opts(&xs[0], &tb, None, None, Reduction::Mean), std::slice::from_ref(&x));
        let p = x.sigmoid().unwrap().clamp(Some(0.05), Some(0.95)).unwrap();
        check(|xs| F::binary_cross_entropy_with(&xs[0], &tb, None, Reduction::Sum), &[p]);
        let lp = x.log_softmax(1).unwrap();
        check(|xs| F::kl_div(&xs[0], &xs[1], Reduction::BatchMean, true), &[lp.clone(), lp]);
    }

    #[test]
    fn margin_losses(n in 1usize..5, d in 2usize..5) {
        let (a, p, q) = (randn(&[n, d]), randn(&[n, d]), randn(&[n, d]));
        check(|t| F::triplet_margin_loss(&t[0], &t[1], &t[2], 1.0, 2.0, 1e-6, true, Reduction::Mean), &[a.clone(), p.clone(), q]);
        let y = Tensor::randint(0, 2, [n]).unwrap().to_dtype(DType::F64).unwrap().mul(2.0).unwrap().sub(1.0).unwrap();
        check(|t| F::cosine_embedding_loss(&t[0], &t[1], &y, 0.1, Reduction::Mean), &[a.clone(), p]);
        let cls = Tensor::randint(0, d as i64, [n]).unwrap();
        check(|t| F::multi_margin_loss(&t[0], &cls, 2, 1.0, None, Reduction::Mean), std::slice::from_ref(&a));
        let yl = Tensor::randint(0, 2, [n, d]).unwrap().to_dtype(DType::F64).unwrap();
        check(|t| F::multilabel_soft_margin_loss(&t[0], &yl, None, Reduction::Mean), &[a]);
    }
}

/// CTC's negative log-likelihood by enumerating every path of `t` steps over `c` classes.
fn ctc_brute_force(lp: &[f64], t: usize, c: usize, target: &[usize]) -> f64 {
    let mut total = 0.0;
    for code in 0..c.pow(t as u32) {
        let path: Vec<usize> = (0..t).map(|i| code / c.pow(i as u32) % c).collect();
        let mut collapsed = vec![];
        for (i, &k) in path.iter().enumerate() {
            if k != 0 && (i == 0 || path[i - 1] != k) {
                collapsed.push(k);
            }
        }
        if collapsed == target {
            total += path.iter().enumerate().map(|(i, &k)| lp[i * c + k]).sum::<f64>().exp();
        }
    }
    -total.ln()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn ctc_loss_matches_path_enumeration_and_finite_differences(
        t in 1usize..5, c in 2usize..4, len in 0usize..3, seed in any::<u64>()
    ) {
        ember_autograd::manual_seed(seed);
        let target: Vec<usize> = (0..len).map(|i| 1 + (seed as usize >> (2 * i)) % (c - 1)).collect();
        let logits = randn(&[t, 1, c]);
        let lp = logits.log_softmax(-1).unwrap();
        let targets = Tensor::from_vec(target.iter().map(|&k| k as i64).collect(), [1, len]).unwrap();
        let il = Tensor::from_vec(vec![t as i64], [1]).unwrap();
        let tl = Tensor::from_vec(vec![len as i64], [1]).unwrap();
        let o = F::CtcOptions { reduction: Reduction::Sum, ..Default::default() };
        let got = F::ctc_loss(&lp, &targets, &il, &tl, o).unwrap().item().unwrap();
        let want = ctc_brute_force(&lp.to_vec::<f64>().unwrap(), t, c, &target);
        prop_assert!((got - want).abs() < 1e-9 * want.abs().max(1.0) || (got.is_infinite() && want.is_infinite()), "{got} vs {want}");
        if want.is_finite() {
            // PyTorch's gradient is the one w.r.t. the logits of a log_softmax: check it that way
            check(|x| F::ctc_loss(&x[0].log_softmax(-1)?, &targets, &il, &tl, o), &[logits]);
        }
    }
}

#[test]
fn ctc_loss_rejects_bad_input() {
    let lp = randn(&[4, 2, 3]).log_softmax(-1).unwrap();
    let il = Tensor::from_vec(vec![4i64, 4], [2]).unwrap();
    let tl = Tensor::from_vec(vec![1i64, 1], [2]).unwrap();
    let o = F::CtcOptions::default();
    let with_blank = Tensor::from_vec(vec![0i64, 1], [2, 1]).unwrap();
    assert!(F::ctc_loss(&lp, &with_blank, &il, &tl, o).unwrap_err().to_string().contains("blank"));
    let too_long = Tensor::from_vec(vec![5i64, 4], [2]).unwrap();
    let ok = Tensor::from_vec(vec![1i64, 2], [2, 1]).unwrap();
    assert!(F::ctc_loss(&lp, &ok, &too_long, &tl, o).unwrap_err().to_string().contains("exceeds"));
    let concat_wrong = Tensor::from_vec(vec![1i64, 2, 2], [3]).unwrap();
    assert!(F::ctc_loss(&lp, &concat_wrong, &il, &tl, o).is_err());
    assert!(F::ctc_loss(&lp.select(1, 0).unwrap(), &ok, &il, &tl, o).is_err());
}
