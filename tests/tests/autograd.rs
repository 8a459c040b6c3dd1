//! Autograd: property-based gradient checks (f64 central differences against the analytic gradients)
//! over random shapes with broadcasting, size-1 dims and non-contiguous views; second-order checks;
//! graphs that change with the data; and the engine's guarantees (no stack overflow on deep graphs,
//! flat memory over many steps, clear errors for freed graphs and modified saved tensors).

use ember::{
    apply, checkpoint, grad, gradcheck, manual_seed, no_grad, set_detect_anomaly, Context, ConvOptions, DType,
    Function, PoolOptions, Result, Tensor,
};
use proptest::prelude::*;

mod common;
use common::broadcast_pair;

fn rand64(shape: &[usize]) -> Tensor {
    Tensor::randn(shape).unwrap().to_dtype(DType::F64).unwrap()
}

fn check(f: impl Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor]) {
    gradcheck(f, xs, 1e-6, 1e-5).unwrap_or_else(|e| panic!("{e}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn binary_ops_with_broadcasting((sa, sb) in broadcast_pair(), seed in any::<u64>()) {
        manual_seed(seed);
        let (a, b) = (rand64(&sa), rand64(&sb));
        check(|x| x[0].add(&x[1]), &[a.clone(), b.clone()]);
        check(|x| x[0].sub(&x[1])?.mul(&x[1]), &[a.clone(), b.clone()]);
        check(|x| x[0].div(&x[1].abs()?.add(0.5)?), &[a.clone(), b.clone()]);
        check(|x| x[0].abs()?.add(0.5)?.pow(&x[1]), &[a.clone(), b.clone()]);
        check(|x| x[0].atan2(&x[1].abs()?.add(0.5)?), &[a.clone(), b.clone()]);
        check(|x| x[0].hypot(&x[1].add(3.0)?), &[a.clone(), b.clone()]);
        check(|x| x[0].maximum(&x[1]), &[a.clone(), b.clone()]);
        check(|x| Tensor::where_cond(&x[0].gt(0.0)?, &x[0], &x[1]), &[a, b]);
    }

    #[test]
    fn unary_ops_on_noncontiguous_views(shape in proptest::collection::vec(2..4usize, 2..4), seed in any::<u64>()) {
        manual_seed(seed);
        let x = rand64(&shape).transpose(0, -1).unwrap().detach();
        for f in [Tensor::exp, Tensor::tanh, Tensor::sigmoid, Tensor::sin, Tensor::atan, Tensor::erf, Tensor::silu, Tensor::softsign] {
            check(|x| f(&x[0]), std::slice::from_ref(&x));
        }
        check(|x| x[0].abs()?.add(0.1)?.log(), std::slice::from_ref(&x));
        check(|x| x[0].abs()?.add(0.1)?.sqrt(), std::slice::from_ref(&x));
        check(|x| x[0].gelu("none"), std::slice::from_ref(&x));
        check(|x| x[0].gelu("tanh"), std::slice::from_ref(&x));
        check(|x| x[0].softplus(1.5, 20.0), std::slice::from_ref(&x));
        check(|x| x[0].elu(1.3), std::slice::from_ref(&x));
        check(|x| x[0].mish(), std::slice::from_ref(&x));
        check(|x| x[0].logsigmoid(), std::slice::from_ref(&x));
    }

    #[test]
    fn reductions_and_scans(shape in proptest::collection::vec(1..4usize, 1..4), seed in any::<u64>()) {
        manual_seed(seed);
        let x = rand64(&shape);
        check(|x| x[0].sum_dim([-1], false), std::slice::from_ref(&x));
        check(|x| x[0].mean_dim([0], true), std::slice::from_ref(&x));
        check(|x| x[0].amax([-1], false), std::slice::from_ref(&x));
        check(|x| x[0].logsumexp([-1], false), std::slice::from_ref(&x));
        check(|x| x[0].softmax(-1), std::slice::from_ref(&x));
        check(|x| x[0].log_softmax(0), std::slice::from_ref(&x));
        check(|x| x[0].cumsum(-1), std::slice::from_ref(&x));
        check(|x| x[0].abs()?.add(0.5)?.cumprod(0), std::slice::from_ref(&x));
        check(|x| x[0].prod(), std::slice::from_ref(&x));
        check(|x| x[0].sort(-1, true).map(|r| r.0), std::slice::from_ref(&x));
        check(|x| x[0].vector_norm(2.0, ember::SCALAR, false), std::slice::from_ref(&x));
        if x.numel() > 1 {
            check(|x| x[0].var_dim(ember::SCALAR, 1.0, false), std::slice::from_ref(&x));
        }
    }

    #[test]
    fn views_and_shape_ops(shape in proptest::collection::vec(2..5usize, 2..4), seed in any::<u64>()) {
        manual_seed(seed);
        let x = rand64(&shape);
        check(|x| x[0].permute((0..x[0].ndim() as isize).rev().collect::<Vec<_>>())?.reshape([-1])?.mul(&Tensor::arange(x[0].numel() as i64)?.to_dtype(DType::F64)?), std::slice::from_ref(&x));
        check(|x| x[0].narrow(0, 1, 1)?.mul(2.0), std::slice::from_ref(&x));
        check(|x| x[0].slice(-1, Some(0), None, 2)?.exp(), std::slice::from_ref(&x));
        check(|x| x[0].select(0, -1)?.sin(), std::slice::from_ref(&x));
        check(|x| x[0].unsqueeze(1)?.expand([-1, 3, -1])?.exp(), &[rand64(&shape[..2])]);
        check(|x| x[0].diagonal(0, 0, 1)?.exp(), std::slice::from_ref(&x));
        check(|x| x[0].unfold(0, 2, 1)?.exp(), std::slice::from_ref(&x));
        check(|x| Tensor::cat(&[x[0].clone(), x[0].mul(2.0)?], -1)?.tanh(), std::slice::from_ref(&x));
        check(|x| Tensor::stack(&[x[0].clone(), x[0].exp()?], 0), std::slice::from_ref(&x));
        check(|x| x[0].flip([0])?.roll([1], [-1])?.mul(&x[0]), std::slice::from_ref(&x));
        check(|x| x[0].repeat(&vec![2; x[0].ndim()]), std::slice::from_ref(&x));
        check(|x| x[0].pad([1, 2], ember::PadMode::Constant, 0.5), std::slice::from_ref(&x));
        check(|x| x[0].pad([1, 1], ember::PadMode::Reflect, 0.0), std::slice::from_ref(&x));
        check(|x| x[0].tril(0), std::slice::from_ref(&x));
    }

    #[test]
    fn matmul_and_indexing(m in 1..4usize, k in 1..4usize, n in 1..4usize, batch in 1..3usize, seed in any::<u64>()) {
        manual_seed(seed);
        let (a, b) = (rand64(&[batch, m, k]), rand64(&[k, n]));
        check(|x| x[0].matmul(&x[1]), &[a.clone(), b.clone()]);
        check(|x| x[0].permute([1, 0, 2])?.matmul(&x[1]), &[rand64(&[m, batch, k]), b.clone()]);
        check(|x| x[0].select(0, 0)?.mt()?.matmul(&x[0].select(0, 0)?), std::slice::from_ref(&a));
        let idx = Tensor::from_vec(vec![0i64, (k - 1) as i64, 0], [3]).unwrap();
        check(|x| x[0].index_select(-1, &idx), std::slice::from_ref(&a));
        let gi = Tensor::zeros_with([batch, m, 1], DType::I64, ember::Device::Cpu).unwrap();
        check(|x| x[0].gather(-1, &gi), std::slice::from_ref(&a));
        check(|x| x[0].scatter_add(-1, &gi, &x[0].narrow(-1, 0, 1)?), std::slice::from_ref(&a));
        let w = rand64(&[5, 3]);
        let ids = Tensor::from_vec(vec![4i64, 0, 4], [3]).unwrap();
        check(|x| x[0].embedding(&ids), &[w]);
    }

    #[test]
    fn linalg_and_special_functions(n in 1..4usize, m in 1..5usize, batch in 1..3usize, seed in any::<u64>()) {
        manual_seed(seed);
        // well-conditioned square matrices: a random matrix plus n on the diagonal
        let eye = Tensor::eye(n).unwrap().to_dtype(DType::F64).unwrap().mul(n as f64 + 1.0).unwrap();
        let well = move |x: &Tensor| x.add(&eye);
        let sq = rand64(&[batch, n, n]);
        let (w1, w2, w3, w4) = (well.clone(), well.clone(), well.clone(), well.clone());
        check(move |x| w1(&x[0])?.linalg_inv(), std::slice::from_ref(&sq));
        check(move |x| w2(&x[0])?.linalg_det(), std::slice::from_ref(&sq));
        check(move |x| w3(&x[0])?.linalg_solve(&x[1]), &[sq.clone(), rand64(&[batch, n, m])]);
        check(move |x| w4(&x[0])?.linalg_solve(&x[1]), &[sq.clone(), rand64(&[batch, n])]);
        // symmetric positive-definite inputs built from x, so finite differences see PyTorch's convention
        let spd = |x: &Tensor| -> Result<Tensor> {
            let n = x.shape()[x.ndim() - 1];
            x.matmul(&x.mt()?)?.add(&Tensor::eye(n)?.to_dtype(DType::F64)?)
        };
        check(move |x| spd(&x[0])?.linalg_cholesky(), std::slice::from_ref(&sq));
        check(move |x| spd(&x[0])?.linalg_eigvalsh(), std::slice::from_ref(&sq));
        let rect = rand64(&[batch, n, m]);
        check(|x| x[0].linalg_svdvals(), std::slice::from_ref(&rect));
        check(|x| {
            let (q, r) = x[0].linalg_qr()?;
            Tensor::cat(&[q.reshape([-1])?, r.reshape([-1])?], 0)
        }, std::slice::from_ref(&rect));
        check(|x| x[0].abs()?.add(0.3)?.digamma(), std::slice::from_ref(&rect));
    }
}

/// The grad functions layer and RMS norm record on the CPU backend (the fused kernels' nodes).
fn t_fused_norm(x: &Tensor) -> (Option<&'static str>, Option<&'static str>) {
    let x = x.detach().requires_grad_(true).unwrap();
    let a = x.layer_norm(&[5], None, None, 1e-5).unwrap();
    let b = x.rms_norm(&[5], None, None).unwrap();
    (a.grad_fn_name(), b.grad_fn_name())
}

#[test]
fn nn_kernels_gradcheck() {
    manual_seed(1);
    let x = rand64(&[2, 2, 5, 5]);
    let w = rand64(&[4, 1, 3, 3]);
    let b = rand64(&[4]);
    let mut o = ConvOptions::new(2);
    o.groups = 2;
    o.stride = vec![2, 1];
    o.padding = ember::ConvPadding::Explicit(vec![1, 0]);
    check(|t| t[0].conv(&t[1], Some(&t[2]), &o), &[x.clone(), w.clone(), b.clone()]);
    let wt = rand64(&[2, 3, 3, 3]);
    let mut ot = ConvOptions::new(2);
    ot.stride = vec![2, 2];
    ot.output_padding = vec![1, 0];
    check(|t| t[0].conv_transpose(&t[1], None, &ot), &[x.clone(), wt]);
    let mut p = PoolOptions::new(&[2, 2]);
    p.padding = vec![1, 1];
    check(|t| t[0].max_pool(&p).map(|r| r.0), std::slice::from_ref(&x));
    check(|t| t[0].avg_pool(&p), std::slice::from_ref(&x));
    check(|t| t[0].adaptive_avg_pool(&[2, 3]), std::slice::from_ref(&x));
    check(|t| t[0].layer_norm(&[5], Some(&t[1]), None, 1e-5), &[x.clone(), rand64(&[5])]);
    // layer and RMS norm by the fused kernels: weight and bias, a permuted view, two normalized dims
    let ln = t_fused_norm(&x);
    assert_eq!(ln, (Some("layer_norm"), Some("rms_norm")));
    check(|t| t[0].layer_norm(&[5, 5], Some(&t[1]), Some(&t[2]), 1e-5), &[x.clone(), rand64(&[5, 5]), rand64(&[5, 5])]);
    check(|t| t[0].permute([3, 1, 0, 2])?.layer_norm(&[5], None, Some(&t[1]), 1e-5), &[x.clone(), rand64(&[5])]);
    check(|t| t[0].rms_norm(&[5], Some(&t[1]), Some(1e-6)), &[x.clone(), rand64(&[5])]);
    check(|t| t[0].transpose(0, 3)?.rms_norm(&[5, 2], None, None), std::slice::from_ref(&x));
    check(|t| t[0].group_norm(2, None, None, 1e-5), std::slice::from_ref(&x));
    check(|t| t[0].batch_norm(None, None, None, None, true, 0.1, 1e-5), std::slice::from_ref(&x));
    // the fused kernels: with weight and bias, through a permuted (non-contiguous) view, on [N, C]
    let bn = |x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>| x.batch_norm(None, None, w, b, true, 0.1, 1e-5);
    let fused = bn(&x.detach().requires_grad_(true).unwrap(), None, None).unwrap();
    assert_eq!(fused.grad_fn_name(), Some("batch_norm"));
    check(|t| bn(&t[0], Some(&t[1]), Some(&t[2])), &[x.clone(), rand64(&[2]), rand64(&[2])]);
    check(|t| bn(&t[0].permute([0, 3, 2, 1])?, Some(&t[1]), None), &[x.clone(), rand64(&[5])]);
    check(|t| bn(&t[0], None, Some(&t[1])), &[rand64(&[6, 3]), rand64(&[3])]);
    check(|t| t[0].interpolate(Some(&[7, 3]), None, ember::InterpMode::Linear, false), std::slice::from_ref(&x));
    check(|t| t[0].interpolate(None, Some(&[2.0]), ember::InterpMode::Nearest, false), std::slice::from_ref(&x));
    let grid = rand64(&[2, 3, 4, 2]).mul(0.9).unwrap().detach();
    check(|t| t[0].grid_sample(&t[1], false), &[x.clone(), grid]);
    check(|t| t[0].pixel_shuffle(1)?.flatten(1, -1)?.softmax(-1), std::slice::from_ref(&x));
}

/// The first 3 columns of a 3x4 `x`, made well-conditioned.
fn square(x: &Tensor) -> Result<Tensor> {
    x.narrow(-1, 0, 3)?.add(&Tensor::eye(3)?.to_dtype(DType::F64)?.mul(4.0)?)
}

#[test]
fn second_order_through_singular_vectors_is_a_clear_error() {
    let x = rand64(&[3, 3]).requires_grad_(true).unwrap();
    let g = grad(&[x.linalg_svdvals().unwrap().sum().unwrap()], std::slice::from_ref(&x), None, true, true, false)
        .unwrap()
        .remove(0)
        .unwrap();
    let e = g.pow(2.0).unwrap().sum().unwrap().backward().unwrap_err().to_string();
    assert!(e.contains("second-order"), "{e}");
}

#[test]
fn second_order_gradients_match_finite_differences() {
    manual_seed(2);
    // gradcheck of the gradient function itself checks the Hessian-vector structure numerically
    type ScalarFn = Box<dyn Fn(&Tensor) -> Result<Tensor>>;
    let fs: Vec<(&str, ScalarFn)> = vec![
        ("tanh", Box::new(|x: &Tensor| x.tanh()?.sum())),
        ("exp*sin", Box::new(|x: &Tensor| x.exp()?.mul(&x.sin()?)?.sum())),
        ("softmax", Box::new(|x: &Tensor| x.softmax(-1)?.mul(x)?.sum())),
        ("matmul", Box::new(|x: &Tensor| x.matmul(&x.mt()?)?.pow(2.0)?.sum())),
        ("pow", Box::new(|x: &Tensor| x.abs()?.add(0.5)?.pow(x)?.sum())),
        ("logsumexp", Box::new(|x: &Tensor| x.logsumexp([-1], false)?.sum())),
        (
            "batch_norm",
            Box::new(|x: &Tensor| {
                let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 1.5], [4])?;
                x.batch_norm(None, None, Some(&w), None, true, 0.1, 1e-5)?.pow(3.0)?.sum()
            }),
        ),
        (
            "layer_norm",
            Box::new(|x: &Tensor| {
                let w = Tensor::from_vec(vec![0.5f64, -1.0, 2.0, 1.5], [4])?;
                x.layer_norm(&[4], Some(&w), Some(&w), 1e-5)?.pow(3.0)?.sum()
            }),
        ),
        ("rms_norm", Box::new(|x: &Tensor| x.rms_norm(&[4], None, Some(1e-5))?.pow(3.0)?.sum())),
        ("linalg_inv", Box::new(|x: &Tensor| square(x)?.linalg_inv()?.pow(2.0)?.sum())),
        ("linalg_det", Box::new(|x: &Tensor| square(x)?.linalg_det())),
        ("linalg_solve", Box::new(|x: &Tensor| square(x)?.linalg_solve(&x.narrow(-1, 3, 1)?)?.pow(2.0)?.sum())),
        (
            "linalg_cholesky",
            Box::new(|x: &Tensor| {
                let s = x.matmul(&x.mt()?)?.add(&Tensor::eye(3)?.to_dtype(DType::F64)?)?;
                s.linalg_cholesky()?.pow(2.0)?.sum()
            }),
        ),
    ];
    for (name, f) in fs {
        let x = rand64(&[3, 4]);
        gradcheck(
            |xs| {
                let y = f(&xs[0])?;
                Ok(grad(&[y], &xs[..1], None, true, true, false)?.remove(0).expect("used"))
            },
            &[x],
            1e-6,
            1e-5,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn graphs_that_depend_on_the_data() {
    manual_seed(3);
    // a loop whose trip count depends on a tensor's value
    let f = |xs: &[Tensor]| -> Result<Tensor> {
        let mut y = xs[0].clone();
        let mut steps = 0;
        while y.abs()?.sum()?.item()? < 50.0 && steps < 100 {
            y = y.mul(1.5)?.add(&xs[0].sin()?)?;
            steps += 1;
        }
        Ok(y)
    };
    check(f, &[rand64(&[3])]);

    // a recursive network over random binary trees
    #[derive(Debug)]
    enum Tree {
        Leaf(usize),
        Node(Box<Tree>, Box<Tree>),
    }
    fn build(depth: u32, seed: &mut u64) -> Tree {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if depth == 0 || (*seed >> 33).is_multiple_of(3) {
            Tree::Leaf((*seed >> 40) as usize % 4)
        } else {
            Tree::Node(Box::new(build(depth - 1, seed)), Box::new(build(depth - 1, seed)))
        }
    }
    fn encode(t: &Tree, emb: &Tensor, w: &Tensor) -> Result<Tensor> {
        match t {
            Tree::Leaf(i) => emb.select(0, *i as isize),
            Tree::Node(l, r) => Tensor::cat(&[encode(l, emb, w)?, encode(r, emb, w)?], 0)?
                .unsqueeze(0)?
                .matmul(w)?
                .squeeze_dim(0)?
                .tanh(),
        }
    }
    let mut seed = 7u64;
    for _ in 0..3 {
        let tree = build(4, &mut seed);
        check(|xs| encode(&tree, &xs[0], &xs[1]), &[rand64(&[4, 3]), rand64(&[6, 3])]);
    }

    // an RNN over variable-length sequences
    let rnn = |xs: &[Tensor], len: usize| -> Result<Tensor> {
        let mut h = Tensor::zeros_with([1, 3], DType::F64, ember::Device::Cpu)?;
        for t in 0..len {
            h = xs[0].select(0, t as isize)?.unsqueeze(0)?.matmul(&xs[1])?.add(&h.matmul(&xs[2])?)?.tanh()?;
        }
        Ok(h)
    };
    for len in [1, 3, 5] {
        check(|xs| rnn(xs, len), &[rand64(&[5, 2]), rand64(&[2, 3]), rand64(&[3, 3])]);
    }
}

#[test]
fn transposed_operands_get_dense_gradients() {
    // linear's weight enters the product as `weight.t()`: its gradient must come back dense (as
    // PyTorch's does) so in-place optimizers take their fused path, and must still be right.
    let x = rand64(&[4, 3]).requires_grad_(true).unwrap();
    let w = rand64(&[5, 3]).requires_grad_(true).unwrap();
    let b = rand64(&[4, 4]).requires_grad_(true).unwrap();
    let y = b.t().unwrap().matmul(&x.linear(&w, None).unwrap()).unwrap(); // [4, 5]
    let gy = rand64(&[4, 5]);
    y.backward_with(&gy).unwrap();
    for t in [&x, &w, &b] {
        assert!(t.grad().unwrap().is_contiguous(), "gradient of {:?} is a strided view", t.shape());
    }
    // against the plain formulas: y = bᵀ (x wᵀ)
    let xw = x.detach().matmul(&w.detach().t().unwrap()).unwrap();
    let gw = b.detach().matmul(&gy).unwrap().t().unwrap().matmul(&x.detach()).unwrap();
    let gb = xw.matmul(&gy.t().unwrap()).unwrap();
    for (got, want) in [(w.grad().unwrap(), gw), (b.grad().unwrap(), gb)] {
        let d = got.sub(&want).unwrap().abs().unwrap().max().unwrap().item().unwrap();
        assert!(d < 1e-12, "max difference {d}");
    }
    check(|xs| xs[2].t()?.matmul(&xs[0].linear(&xs[1], None)?), &[x.detach(), w.detach(), b.detach()]);
    // the folded [..., m, k] @ [k, n] product keeps its shape at the edges
    let e = rand64(&[2, 3, 0]).matmul(&rand64(&[0, 4])).unwrap();
    assert_eq!((e.shape(), e.abs().unwrap().sum().unwrap().item().unwrap()), (&[2, 3, 4][..], 0.0));
    assert_eq!(rand64(&[2, 0, 3]).matmul(&rand64(&[3, 4])).unwrap().shape(), [2, 0, 4]);
    let err = rand64(&[2, 3, 5]).matmul(&rand64(&[4, 4])).unwrap_err().to_string();
    assert!(err.contains("[2, 3, 5]") && err.contains("[4, 4]"), "{err}");
}

#[test]
fn gradients_of_many_views_add_into_their_input() {
    // Views (select, narrow, chunk, slice) of an intermediate: the engine adds their gradients into
    // the intermediate's gradient in place; the result must equal the plain formula, a full-size
    // gradient arriving first must not be written through, and hooks/retained grads must see sums.
    let x = rand64(&[5, 6]).requires_grad_(true).unwrap();
    let w = rand64(&[5, 6]);
    let f = |x: &Tensor| -> Result<Tensor> {
        let y = x.mul(&w)?; // dy/dx = w
        let mut acc = y.sum()?; // a full-size gradient (a shared expanded 1) reaches y first
        for t in 0..5 {
            acc = acc.add(&y.select(0, t)?.mul(t as f64)?.sum()?)?;
        }
        let parts = y.chunk(3, 1)?;
        acc = acc.add(&parts[0].sum()?)?.add(&parts[2].mul(3.0)?.sum()?)?;
        acc.add(&y.slice(1, Some(1), None, 2)?.sum()?)
    };
    f(&x).unwrap().backward().unwrap();
    // d/dy: 1 + row index + (cols 0-1: 1, cols 4-5: 3) + (odd cols: 1)
    let mut want = vec![];
    for r in 0..5 {
        for c in 0..6 {
            let chunk = [1.0, 1.0, 0.0, 0.0, 3.0, 3.0][c];
            want.push(1.0 + r as f64 + chunk + (c % 2) as f64);
        }
    }
    let want = Tensor::from_vec(want, [5, 6]).unwrap().mul(&w).unwrap();
    let d = x.grad().unwrap().sub(&want).unwrap().abs().unwrap().max().unwrap().item().unwrap();
    assert!(d < 1e-12, "max difference {d}");
    check(|xs| f(&xs[0]), &[x.detach()]);

    // the first gradient to reach `u` is the caller's own tensor: it must come back unchanged
    let u_in = rand64(&[3, 4]).requires_grad_(true).unwrap();
    let u = u_in.mul(1.0).unwrap();
    u.retain_grad().unwrap();
    let out = u.add(&u.select(0, 1).unwrap().mul(2.0).unwrap()).unwrap(); // [3, 4]
    let seed = rand64(&[3, 4]);
    let before = seed.to_vec::<f64>().unwrap();
    out.backward_with(&seed).unwrap();
    assert_eq!(seed.to_vec::<f64>().unwrap(), before, "the caller's gradient was written through");
    let mut want = before.clone(); // row 1 also gets twice the column sums
    for c in 0..4 {
        want[4 + c] += 2.0 * (0..3).map(|r| before[r * 4 + c]).sum::<f64>();
    }
    let want = Tensor::from_vec(want, [3, 4]).unwrap();
    for g in [u.grad().unwrap(), u_in.grad().unwrap()] {
        let d = g.sub(&want).unwrap().abs().unwrap().max().unwrap().item().unwrap();
        assert!(d < 1e-12, "max difference {d}");
    }
}

#[test]
fn deep_chains_do_not_overflow_the_stack() {
    let x = Tensor::ones_with([1], DType::F64, ember::Device::Cpu).unwrap().requires_grad_(true).unwrap();
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = y.mul(1.000_001).unwrap();
    }
    y.sum().unwrap().backward().unwrap();
    let g = x.grad().unwrap().item().unwrap();
    assert!((g - 1.000_001f64.powi(100_000)).abs() < 1e-3, "{g}");
    drop(y);
}

#[test]
fn engine_errors_are_clear() {
    let x = Tensor::randn([3]).unwrap().requires_grad_(true).unwrap();
    let y = x.exp().unwrap().sum().unwrap();
    y.backward().unwrap();
    let e = y.backward().unwrap_err().to_string();
    assert!(e.contains("second time"), "{e}");

    let a = x.exp().unwrap();
    let b = a.mul(&a).unwrap().sum().unwrap();
    no_grad(|| a.add_(1.0)).unwrap();
    let e = b.backward().unwrap_err().to_string();
    assert!(e.contains("mulBackward") && e.contains("in-place"), "{e}");

    let e = x.add_(1.0).unwrap_err().to_string();
    assert!(e.contains("in-place"), "{e}");
    assert!(Tensor::arange(3).unwrap().requires_grad_(true).is_err());
}

#[test]
fn grads_accumulate_hooks_and_retain_grad() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap().requires_grad_(true).unwrap();
    x.mul(3.0).unwrap().sum().unwrap().backward().unwrap();
    x.mul(3.0).unwrap().sum().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![6.0, 6.0]);
    x.set_grad(None);
    let mid = x.mul(2.0).unwrap();
    mid.retain_grad().unwrap();
    mid.register_hook(|g| Some(g.mul(10.0).unwrap())).unwrap();
    assert_eq!(mid.grad_fn_name(), Some("mul"));
    mid.pow(2.0).unwrap().sum().unwrap().backward().unwrap();
    // d/dmid = 2 mid = [4, 8]; the hook scales what flows on by 10
    assert_eq!(mid.grad().unwrap().to_vec::<f64>().unwrap(), vec![40.0, 80.0]);
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![80.0, 160.0]);
}

struct Cube;
impl Function for Cube {
    fn forward(&self, ctx: &mut Context, x: &[Tensor]) -> Result<Tensor> {
        ctx.save_for_backward(&[&x[0]]);
        x[0].pow(3.0)
    }
    fn backward(&self, ctx: &Context, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &ctx.saved_tensors()[0];
        Ok(vec![Some(g.mul(&x.mul(x)?.mul(3.0)?)?)])
    }
    fn name(&self) -> &'static str {
        "cube"
    }
}

#[test]
fn custom_functions_checkpoint_and_anomaly() {
    manual_seed(4);
    let x = rand64(&[5]);
    check(|xs| apply(Cube, xs), std::slice::from_ref(&x));
    let w = rand64(&[5, 5]).requires_grad_(true).unwrap();
    let (w1, w2) = (w.clone(), w.clone());
    let xr = x.detach().requires_grad_(true).unwrap();
    let plain = xr.unsqueeze(0).unwrap().matmul(&w1).unwrap().tanh().unwrap().sum().unwrap();
    let g_plain = grad(&[plain], &[xr.clone(), w1.clone()], None, false, false, false).unwrap();
    let ck = checkpoint(move |xs| xs[0].unsqueeze(0)?.matmul(&w2)?.tanh(), std::slice::from_ref(&xr)).unwrap();
    ck.sum().unwrap().backward().unwrap();
    let (gx, gw) = (xr.grad().unwrap().to_vec::<f64>().unwrap(), w.grad().unwrap().to_vec::<f64>().unwrap());
    for (a, b) in gx.iter().zip(g_plain[0].as_ref().unwrap().to_vec::<f64>().unwrap()) {
        assert!((a - b).abs() < 1e-12);
    }
    for (a, b) in gw.iter().zip(g_plain[1].as_ref().unwrap().to_vec::<f64>().unwrap()) {
        assert!((a - b).abs() < 1e-12);
    }
    set_detect_anomaly(true);
    let z = Tensor::zeros_with([2], DType::F64, ember::Device::Cpu).unwrap().requires_grad_(true).unwrap();
    let e = z.sqrt().unwrap().sum().unwrap().backward().unwrap_err().to_string();
    set_detect_anomaly(false);
    assert!(e.contains("sqrtBackward") && e.contains("non-finite"), "{e}");
}

/// A function that writes into views of an intermediate in place, for gradchecks.
fn inplace_on_views(x: &Tensor) -> Result<Tensor> {
    let y = x.mul(1.5)?;
    let rows = y.shape()[0];
    // y[0] *= x[-1]; y[1:] += sin(x[:-1]) (through a transposed view); y[-1].clamp_(-0.5, 0.5)
    y.narrow(0, 0, 1)?.mul_(&x.narrow(0, rows as isize - 1, 1)?)?;
    if rows > 1 {
        y.t()?.narrow(1, 1, rows - 1)?.add_(&x.narrow(0, 0, rows - 1)?.sin()?.t()?)?;
    }
    y.select(0, -1)?.clamp_(Some(-0.5), Some(0.5))?;
    y.exp()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn inplace_ops_on_intermediates_and_views(rows in 1..4usize, cols in 1..4usize, seed in any::<u64>()) {
        manual_seed(seed);
        let x = rand64(&[rows, cols]);
        check(|xs| inplace_on_views(&xs[0]), std::slice::from_ref(&x));
        // the whole tensor in place: y = 2x; y *= x; y -= x (so y = 2x² - x)
        check(|xs| {
            let y = xs[0].mul(2.0)?;
            y.mul_(&xs[0])?.sub_(&xs[0])?;
            Ok(y)
        }, std::slice::from_ref(&x));
        // second order through the rewritten history
        gradcheck(|xs| {
            let y = inplace_on_views(&xs[0])?.sum()?;
            Ok(grad(&[y], &xs[..1], None, true, true, false)?.remove(0).expect("used"))
        }, std::slice::from_ref(&x), 1e-6, 1e-5).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn views_taken_before_an_inplace_write_see_it() {
    let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).unwrap().requires_grad_(true).unwrap();
    let a = x.mul(1.0).unwrap();
    let later = a.narrow(0, 1, 2).unwrap(); // a[1:], taken before the write
    a.narrow(0, 0, 2).unwrap().mul_(10.0).unwrap(); // a[:2] *= 10
    assert_eq!(later.to_vec::<f64>().unwrap(), vec![20.0, 3.0]);
    later.sum().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![0.0, 10.0, 1.0]);
    assert_eq!(a.grad_fn_name(), Some("copy_slices"));
}

#[test]
fn a_buffer_filled_in_place_carries_gradients() {
    // h = zeros(3, 2); h[t] = x[t] * (t + 1): the pattern of RNN loops writing into preallocated output
    let x = Tensor::randn([3, 2]).unwrap().to_dtype(DType::F64).unwrap().requires_grad_(true).unwrap();
    let h = Tensor::zeros_with([3, 2], DType::F64, ember::Device::Cpu).unwrap();
    for t in 0..3 {
        h.select(0, t).unwrap().copy_(&x.select(0, t).unwrap().mul((t + 1) as f64).unwrap()).unwrap();
    }
    assert!(h.requires_grad() && !h.is_leaf());
    h.pow(2.0).unwrap().sum().unwrap().backward().unwrap();
    let xv = x.to_vec::<f64>().unwrap();
    let want: Vec<f64> = xv.iter().enumerate().map(|(i, v)| 2.0 * v * ((i / 2 + 1) as f64).powi(2)).collect();
    let got = x.grad().unwrap().to_vec::<f64>().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

#[test]
fn inplace_misuse_is_refused_clearly() {
    let w = Tensor::ones([2, 2]).unwrap().requires_grad_(true).unwrap();
    let e = w.narrow(0, 0, 1).unwrap().mul_(2.0).unwrap_err().to_string();
    assert!(e.contains("view of a leaf"), "{e}");
    let e = w.mul_(2.0).unwrap_err().to_string();
    assert!(e.contains("leaf tensor that requires grad") && e.contains("mul_"), "{e}");
    // writing into memory that several elements share
    let y = w.mul(1.0).unwrap().narrow(0, 0, 1).unwrap().expand([3, 2]).unwrap();
    let e = y.add_(1.0).unwrap_err().to_string();
    assert!(e.contains("same memory location"), "{e}");
    // a value saved for backward, changed in place afterwards
    let a = w.exp().unwrap();
    let b = a.mul(&a).unwrap().sum().unwrap();
    a.add_(1.0).unwrap();
    let e = b.backward().unwrap_err().to_string();
    assert!(e.contains("mulBackward") && e.contains("in-place"), "{e}");
    // nothing was written on refusal
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![1.0; 4]);
}

#[test]
fn post_accumulate_hooks_see_the_accumulated_gradient() {
    use std::sync::{Arc, Mutex};
    let w = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap().requires_grad_(true).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    w.register_post_accumulate_grad_hook(move |p| s.lock().unwrap().push(p.grad().unwrap().to_vec::<f64>().unwrap()))
        .unwrap();
    w.mul(&w).unwrap().sum().unwrap().backward().unwrap();
    w.mul(3.0).unwrap().sum().unwrap().backward().unwrap();
    // once per backward, after accumulation; not by grad()
    let _ = grad(&[w.sum().unwrap()], std::slice::from_ref(&w), None, false, false, false).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![vec![2.0, 4.0], vec![5.0, 7.0]]);
    assert!(w.mul(2.0).unwrap().register_post_accumulate_grad_hook(|_| {}).is_err());
}

#[test]
fn a_leaf_is_delivered_as_soon_as_its_last_feeder_has_run() {
    // DDP all-reduces a bucket from these hooks while backward goes on: w1's gradient is final
    // after the last product's backward, before the earlier nodes (h's hook) run.
    use std::sync::{Arc, Mutex};
    let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap();
    let w1 = Tensor::from_vec(vec![3.0f64, 4.0], [2]).unwrap().requires_grad_(true).unwrap();
    let w2 = Tensor::from_vec(vec![5.0f64, 6.0], [2]).unwrap().requires_grad_(true).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    w1.register_post_accumulate_grad_hook(move |p| {
        o1.lock().unwrap().push(("w1", p.grad().unwrap().to_vec::<f64>().unwrap()))
    })
    .unwrap();
    w2.register_post_accumulate_grad_hook(move |p| {
        o2.lock().unwrap().push(("w2", p.grad().unwrap().to_vec::<f64>().unwrap()))
    })
    .unwrap();
    let h = x.mul(&w2).unwrap();
    h.register_hook(move |g| {
        o3.lock().unwrap().push(("h", g.to_vec::<f64>().unwrap()));
        None
    })
    .unwrap();
    // w1 feeds two products: it is delivered once, with both contributions, after the second
    h.mul(&w1).unwrap().add(&w1.mul(2.0).unwrap()).unwrap().sum().unwrap().backward().unwrap();
    let seen = order.lock().unwrap().clone();
    assert_eq!(seen, vec![("w1", vec![7.0, 14.0]), ("h", vec![3.0, 4.0]), ("w2", vec![3.0, 8.0])]);
}

/// Max pooling by definition: every window position, -inf padding, a NaN or a larger value takes over.
fn max_pool_reference(x: &[f64], (n, c, h, w): (usize, usize, usize, usize), p: &PoolOptions) -> (Vec<f64>, Vec<i64>) {
    let out = |i: usize, len: usize| (len + 2 * p.padding[i] - p.dilation[i] * (p.kernel[i] - 1) - 1) / p.stride[i] + 1;
    let (oh, ow) = (out(0, h), out(1, w));
    let (mut vals, mut idx) = (vec![], vec![]);
    for plane in 0..n * c {
        for r in 0..oh {
            for q in 0..ow {
                let (mut best, mut at) = (f64::NEG_INFINITY, -1i64);
                for kh in 0..p.kernel[0] {
                    for kw in 0..p.kernel[1] {
                        let hi = (r * p.stride[0] + kh * p.dilation[0]) as isize - p.padding[0] as isize;
                        let wi = (q * p.stride[1] + kw * p.dilation[1]) as isize - p.padding[1] as isize;
                        if hi < 0 || wi < 0 || hi >= h as isize || wi >= w as isize {
                            continue;
                        }
                        let v = x[plane * h * w + hi as usize * w + wi as usize];
                        if at < 0 || v > best || v.is_nan() {
                            (best, at) = (v, hi as i64 * w as i64 + wi as i64);
                        }
                    }
                }
                vals.push(best);
                idx.push(at);
            }
        }
    }
    (vals, idx)
}

/// The 2x2 window (the common case, with its own kernel): ties keep the first maximum in window
/// order, NaN wins, odd sizes drop the last row and column.
#[test]
fn max_pool_2x2_matches_its_definition() {
    manual_seed(9);
    for (h, w) in [(4, 6), (5, 7), (2, 2)] {
        let shape = (2, 3, h, w);
        // coarse values make ties common
        let mut xv: Vec<f64> =
            rand64(&[2, 3, h, w]).to_vec::<f64>().unwrap().iter().map(|v| (v * 3.0).round()).collect();
        xv[5] = f64::NAN;
        let p = PoolOptions::new(&[2, 2]);
        let (want_v, want_i) = max_pool_reference(&xv, shape, &p);
        let x = Tensor::from_vec(xv, [2, 3, h, w]).unwrap();
        for x in [x.clone(), x.to_dtype(DType::F32).unwrap()] {
            let (vals, idx) = x.max_pool(&p).unwrap();
            assert_eq!(idx.to_vec::<i64>().unwrap(), want_i);
            let got = vals.to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap();
            assert!(got.iter().zip(&want_v).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())), "{got:?}");
            assert!(x
                .max_pool_values(&p)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .zip(&want_v)
                .all(|(a, b)| a == b || (a.is_nan() && b.is_nan())));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn max_pool2d_matches_its_definition(
        n in 1..3usize, c in 1..3usize, h in 3..7usize, w in 3..7usize,
        k in 1..4usize, s in 1..3usize, d in 1..3usize, pad in 0..2usize, nan in any::<bool>(), seed in any::<u64>()
    ) {
        manual_seed(seed);
        let mut p = PoolOptions::new(&[k, k.min(2)]);
        p.stride = vec![s, s];
        p.dilation = vec![d, 1];
        p.padding = vec![pad.min(k / 2), pad.min(k.min(2) / 2)];
        prop_assume!(h + 2 * p.padding[0] > d * (k - 1));
        let mut xv = rand64(&[n, c, h, w]).to_vec::<f64>().unwrap();
        if nan {
            let at = seed as usize % xv.len();
            xv[at] = f64::NAN;
        }
        let x = Tensor::from_vec(xv.clone(), [n, c, h, w]).unwrap();
        let (vals, idx) = x.max_pool(&p).unwrap();
        let (want_v, want_i) = max_pool_reference(&xv, (n, c, h, w), &p);
        let got_v = vals.to_vec::<f64>().unwrap();
        prop_assert_eq!(idx.to_vec::<i64>().unwrap(), want_i);
        prop_assert!(got_v.iter().zip(&want_v).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())));
        if !nan {
            let p2 = p.clone();
            check(move |t| t[0].max_pool(&p2).map(|r| r.0), std::slice::from_ref(&x));
        }
    }
}

/// The LSTM equations composed from tensor ops: the reference for the fused `lstm_sequence`.
fn lstm_reference(
    gi: &Tensor,
    h0: &Tensor,
    c0: &Tensor,
    w_hh: &Tensor,
    b_hh: Option<&Tensor>,
    reverse: bool,
) -> Result<Tensor> {
    let len = gi.shape()[0];
    let (mut h, mut c) = (h0.clone(), c0.clone());
    let (mut hs, mut cs) = (vec![None; len], vec![None; len]);
    for s in 0..len {
        let t = if reverse { len - 1 - s } else { s };
        let mut pre = gi.select(0, t as isize)?.add(&h.matmul(&w_hh.t()?)?)?;
        if let Some(b) = b_hh {
            pre = pre.add(b)?;
        }
        let g = pre.chunk(4, -1)?;
        c = g[1].sigmoid()?.mul(&c)?.add(&g[0].sigmoid()?.mul(&g[2].tanh()?)?)?;
        h = g[3].sigmoid()?.mul(&c.tanh()?)?;
        hs[t] = Some(h.clone());
        cs[t] = Some(c.clone());
    }
    let all: Vec<Tensor> = hs.into_iter().chain(cs).map(|t| t.expect("every step ran")).collect();
    let (b, hid) = (h0.shape()[0] as isize, h0.shape()[1] as isize);
    Tensor::stack(&all, 0)?.reshape([2, len as isize, b, hid])
}

/// The largest absolute difference between two tensors of one shape.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.sub(b).unwrap().abs().unwrap().max().unwrap().item().unwrap()
}

fn lstm_inputs(t: usize, b: usize, h: usize, bias: bool) -> Vec<Tensor> {
    let mut xs = vec![rand64(&[t, b, 4 * h]), rand64(&[b, h]), rand64(&[b, h]), rand64(&[4 * h, h])];
    if bias {
        xs.push(rand64(&[4 * h]));
    }
    xs
}

fn fused_lstm(xs: &[Tensor], reverse: bool) -> Result<Tensor> {
    xs[0].lstm_sequence(&xs[1], &xs[2], &xs[3], xs.get(4), reverse)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    /// The fused LSTM node: gradients against finite differences, and values and gradients equal
    /// to the composed equations', for random sizes, both directions, with and without bias.
    #[test]
    fn lstm_sequence_gradcheck(t in 1..5usize, b in 1..3usize, h in 1..4usize, reverse: bool, bias: bool) {
        let xs = lstm_inputs(t, b, h, bias);
        check(|xs| fused_lstm(xs, reverse), &xs);
        let leaves = |xs: &[Tensor]| -> Vec<Tensor> { xs.iter().map(|x| x.detach().requires_grad_(true).unwrap()).collect() };
        let (a, r) = (leaves(&xs), leaves(&xs));
        let w = rand64(&[2, t, b, h]);
        let ya = fused_lstm(&a, reverse).unwrap();
        let yr = lstm_reference(&r[0], &r[1], &r[2], &r[3], r.get(4), reverse).unwrap();
        prop_assert!(max_diff(&ya, &yr) < 1e-12);
        ya.mul(&w).unwrap().sum().unwrap().backward().unwrap();
        yr.mul(&w).unwrap().sum().unwrap().backward().unwrap();
        for (x, y) in a.iter().zip(&r) {
            prop_assert!(max_diff(&x.grad().unwrap(), &y.grad().unwrap()) < 1e-10);
        }
    }
}

/// Sizes large enough that the CPU kernel splits every step across threads (hidden units in
/// parts, threads meeting at a barrier per step): values and every gradient still equal the
/// composed equations, both directions.
#[test]
fn lstm_sequence_split_across_threads_matches_the_equations() {
    manual_seed(11);
    for reverse in [false, true] {
        let xs = lstm_inputs(7, 5, 44, true);
        let leaves =
            |xs: &[Tensor]| -> Vec<Tensor> { xs.iter().map(|x| x.detach().requires_grad_(true).unwrap()).collect() };
        let (a, r) = (leaves(&xs), leaves(&xs));
        let w = rand64(&[2, 7, 5, 44]);
        let ya = fused_lstm(&a, reverse).unwrap();
        let yr = lstm_reference(&r[0], &r[1], &r[2], &r[3], r.get(4), reverse).unwrap();
        assert!(max_diff(&ya, &yr) < 1e-12, "reverse {reverse}");
        ya.mul(&w).unwrap().sum().unwrap().backward().unwrap();
        yr.mul(&w).unwrap().sum().unwrap().backward().unwrap();
        for (i, (x, y)) in a.iter().zip(&r).enumerate() {
            assert!(max_diff(&x.grad().unwrap(), &y.grad().unwrap()) < 1e-10, "reverse {reverse}, input {i}");
        }
    }
}

#[test]
fn lstm_sequence_differentiates_twice_and_checks_its_arguments() {
    manual_seed(5);
    for reverse in [false, true] {
        let xs = lstm_inputs(3, 2, 2, true);
        // gradients of the gradients: the backward recorded under create_graph is itself checked
        gradcheck(
            |xs| {
                let y = fused_lstm(xs, reverse)?.pow(2.0)?.sum()?;
                let gs = grad(&[y], xs, None, true, true, false)?;
                let flat: Vec<Tensor> =
                    gs.into_iter().map(|g| g.expect("used").reshape([-1])).collect::<Result<_>>()?;
                Tensor::cat(&flat, 0)
            },
            &xs,
            1e-6,
            1e-5,
        )
        .unwrap_or_else(|e| panic!("reverse {reverse}: {e}"));
    }
    // f32 (the vectorised exp and tanh) stays close to the f64 composition
    let xs = lstm_inputs(6, 3, 8, true);
    let f32s: Vec<Tensor> = xs.iter().map(|x| x.to_dtype(DType::F32).unwrap()).collect();
    let y32 = fused_lstm(&f32s, false).unwrap().to_dtype(DType::F64).unwrap();
    let y64 = lstm_reference(&xs[0], &xs[1], &xs[2], &xs[3], xs.get(4), false).unwrap();
    assert!(max_diff(&y32, &y64) < 1e-5);
    // a gradient reaches the bias when it is the only input that asks for one
    let b = xs[4].detach().requires_grad_(true).unwrap();
    fused_lstm(&[xs[0].clone(), xs[1].clone(), xs[2].clone(), xs[3].clone(), b.clone()], false)
        .unwrap()
        .sum()
        .unwrap()
        .backward()
        .unwrap();
    let br = xs[4].detach().requires_grad_(true).unwrap();
    lstm_reference(&xs[0], &xs[1], &xs[2], &xs[3], Some(&br), false).unwrap().sum().unwrap().backward().unwrap();
    assert!(max_diff(&b.grad().expect("bias gradient"), &br.grad().unwrap()) < 1e-10);
    // f16 has no fused kernel: the composed path gives the same result
    let f16s: Vec<Tensor> = xs.iter().map(|x| x.to_dtype(DType::F16).unwrap()).collect();
    let y16 = fused_lstm(&f16s, true).unwrap().to_dtype(DType::F64).unwrap();
    let r16: Vec<Tensor> = f16s.iter().map(|x| x.to_dtype(DType::F64).unwrap()).collect();
    let want = lstm_reference(&r16[0], &r16[1], &r16[2], &r16[3], r16.get(4), true).unwrap();
    assert!(max_diff(&y16, &want) < 2e-2);
    // wrong shapes are named
    let e = xs[0].lstm_sequence(&xs[1], &xs[2], &xs[3].t().unwrap(), None, false).unwrap_err().to_string();
    assert!(e.contains("lstm_sequence") && e.contains("w_hh"), "{e}");
    let e = xs[1].lstm_sequence(&xs[1], &xs[2], &xs[3], None, false).unwrap_err().to_string();
    assert!(e.contains("[T, B, 4H]"), "{e}");
    // an empty sequence gives empty states
    let empty = rand64(&[0, 3, 32]);
    assert_eq!(empty.lstm_sequence(&xs[1], &xs[2], &xs[3], None, false).unwrap().shape(), &[2, 0, 3, 8]);
}

/// Convolution written as patches and one batched product: the reference for the fused kernel.
fn conv_reference(x: &Tensor, w: &Tensor, o: &ConvOptions) -> Result<Tensor> {
    let pad = match &o.padding {
        ember::ConvPadding::Explicit(p) => p.clone(),
        _ => unreachable!("the tests pass explicit padding"),
    };
    let kernel = &w.shape()[2..];
    let cols = x.im2col(kernel, &o.stride, &pad, &o.dilation, 0.0)?;
    let y = w.reshape([w.shape()[0] as isize, -1])?.matmul(&cols)?;
    let out = |d: usize| (x.shape()[d + 2] + 2 * pad[d] - o.dilation[d] * (kernel[d] - 1) - 1) / o.stride[d] + 1;
    y.reshape([x.shape()[0] as isize, w.shape()[0] as isize, out(0) as isize, out(1) as isize])
}

/// Two ways of computing `f(x, w)` compared: the largest differences of the values and of the
/// gradients of `x` and `w` for one random output gradient.
fn differences(
    x: &Tensor,
    w: &Tensor,
    a: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    b: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> [f64; 3] {
    let leaves = |t: &Tensor| t.detach().requires_grad_(true).unwrap();
    let (xa, wa, xb, wb) = (leaves(x), leaves(w), leaves(x), leaves(w));
    let (ya, yb) = (a(&xa, &wa).unwrap(), b(&xb, &wb).unwrap());
    let g = rand64(ya.shape());
    ya.backward_opts(&g, false, false).unwrap();
    yb.backward_opts(&g, false, false).unwrap();
    [
        max_diff(&ya, &yb),
        max_diff(&xa.grad().unwrap(), &xb.grad().unwrap()),
        max_diff(&wa.grad().unwrap(), &wb.grad().unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// The fused 2-d convolution: gradients against finite differences, values and gradients
    /// equal to the patches-and-product composition, over random sizes (batches across the
    /// kernel's sample groups), strides, paddings and dilations.
    #[test]
    fn fused_conv2d_matches_its_composition(
        n in 1..6usize, c in 1..3usize, oc in 1..3usize, h in 3..7usize, w in 3..6usize,
        k in 1..3usize, stride in 1..3usize, pad in 0..2usize, dil in 1..3usize,
    ) {
        prop_assume!(h + 2 * pad > dil * (k - 1) && w + 2 * pad > dil * (k - 1));
        let mut o = ConvOptions::new(2);
        o.stride = vec![stride, 1];
        o.padding = ember::ConvPadding::Explicit(vec![pad, pad]);
        o.dilation = vec![dil, 1];
        let (x, wt) = (rand64(&[n, c, h, w]), rand64(&[oc, c, k, k]));
        check(|t| t[0].conv(&t[1], None, &o), &[x.clone(), wt.clone()]);
        let [dy, dx, dw] = differences(&x, &wt, |x, w| x.conv(w, None, &o), |x, w| conv_reference(x, w, &o));
        prop_assert!(dy < 1e-12 && dx < 1e-10 && dw < 1e-10, "{dy} {dx} {dw}");
    }
}

/// Transposed convolution written as one batched product and a fold: the reference for the fused path.
fn conv_transpose_reference(x: &Tensor, w: &Tensor, o: &ConvOptions, out: &[usize]) -> Result<Tensor> {
    let pad = match &o.padding {
        ember::ConvPadding::Explicit(p) => p.clone(),
        _ => unreachable!("the tests pass explicit padding"),
    };
    let (n, cin) = (x.shape()[0], x.shape()[1]);
    let cols = w.reshape([cin as isize, -1])?.t()?.matmul(&x.reshape([n as isize, cin as isize, -1])?)?;
    cols.col2im(&out[2..], &w.shape()[2..], &o.stride, &pad, &o.dilation)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The fused convolution on larger images than the finite-difference test affords: wide
    /// stride-1 rows (copied row by row), short or strided rows (gathered through index tables),
    /// batches of one to many sample blocks; values and both gradients equal the composition.
    #[test]
    fn fused_conv2d_matches_its_composition_on_larger_images(
        n in 1..12usize, c in 1..4usize, oc in 1..5usize, h in 3..12usize, w in 3..40usize,
        k in 1..5usize, stride in 1..3usize, pad in 0..3usize, dil in 1..3usize, seed in any::<u64>(),
    ) {
        prop_assume!(h + 2 * pad > dil * (k - 1) && w + 2 * pad > dil * (k - 1) && pad < k * dil);
        manual_seed(seed);
        let mut o = ConvOptions::new(2);
        o.stride = vec![stride, stride];
        o.padding = ember::ConvPadding::Explicit(vec![pad, pad]);
        o.dilation = vec![1, dil];
        let (x, wt) = (rand64(&[n, c, h, w]), rand64(&[oc, c, k, k]));
        let [dy, dx, dw] = differences(&x, &wt, |x, w| x.conv(w, None, &o), |x, w| conv_reference(x, w, &o));
        prop_assert!(dy < 1e-12 && dx < 1e-10 && dw < 1e-10, "{dy} {dx} {dw}");
    }

    /// The fused transposed convolution (the convolution kernels run backwards): gradients
    /// against finite differences, values and gradients equal to a product and a fold, over
    /// strides, paddings, output paddings and dilations.
    #[test]
    fn fused_conv_transpose2d_matches_its_composition(
        n in 1..5usize, cin in 1..3usize, cout in 1..3usize, h in 1..5usize, w in 1..5usize,
        k in 1..4usize, stride in 1..3usize, pad in 0..2usize, dil in 1..3usize, extra in 0..2usize,
        seed in any::<u64>(),
    ) {
        let mut o = ConvOptions::new(2);
        o.stride = vec![stride, 1];
        o.padding = ember::ConvPadding::Explicit(vec![pad, 0]);
        o.dilation = vec![dil, 1];
        o.output_padding = vec![extra.min(stride - 1), 0];
        let out = ember::conv_transpose_output_shape(&[n, cin, h, w], &[cin, cout, k, k], &o);
        prop_assume!(out.is_ok());
        let out = out.unwrap();
        manual_seed(seed);
        let (x, wt) = (rand64(&[n, cin, h, w]), rand64(&[cin, cout, k, k]));
        check(|t| t[0].conv_transpose(&t[1], None, &o), &[x.clone(), wt.clone()]);
        // a 1x1 input whose window fills the output is one product instead (its own test below)
        let whole = out[2..] == [k, k] && pad == 0 && (dil == 1 || k == 1);
        let leaf = x.detach().requires_grad_(true).unwrap();
        let node = leaf.conv_transpose(&wt, None, &o).unwrap().grad_fn_name();
        prop_assert_eq!(node, Some(if whole { "reshape" } else { "conv_transpose2d" }));
        let [dy, dx, dw] = differences(
            &x,
            &wt,
            |x, w| x.conv_transpose(w, None, &o),
            |x, w| conv_transpose_reference(x, w, &o, &out),
        );
        prop_assert!(dy < 1e-12 && dx < 1e-10 && dw < 1e-10, "{dy} {dx} {dw}");
    }
}

#[test]
fn fused_conv_transpose2d_differentiates_twice() {
    manual_seed(7);
    let mut o = ConvOptions::new(2);
    o.stride = vec![2, 1];
    o.padding = ember::ConvPadding::Explicit(vec![1, 0]);
    o.output_padding = vec![1, 0];
    check_second_order(|x, w| x.conv_transpose(w, None, &o), [rand64(&[2, 2, 3, 3]), rand64(&[2, 3, 3, 2])]);
}

/// A window that covers the whole input once (a 4x4 -> 1x1 convolution, a 1x1 -> 4x4
/// transposed one) is one product over the batch: same values and gradients as the patches.
#[test]
fn whole_input_windows_are_one_product() {
    manual_seed(8);
    let o = ConvOptions::new(2);
    let (x, w, b) = (rand64(&[3, 2, 4, 3]), rand64(&[5, 2, 4, 3]), rand64(&[5]));
    check(|t| t[0].conv(&t[1], Some(&t[2]), &o), &[x.clone(), w.clone(), b.clone()]);
    let (y, p) = ember::profiler::profile(|| x.conv(&w, None, &o).unwrap());
    let ops: Vec<String> = p.key_averages().into_iter().map(|s| s.name).collect();
    assert!(ops.contains(&"matmul".to_string()) && !ops.iter().any(|n| n.contains("conv") || n == "im2col"), "{ops:?}");
    assert!(max_diff(&y, &conv_reference(&x, &w, &o).unwrap()) < 1e-12);
    let (xt, wt) = (rand64(&[3, 2, 1, 1]), rand64(&[2, 5, 4, 3]));
    check(|t| t[0].conv_transpose(&t[1], Some(&t[2]), &o), &[xt.clone(), wt.clone(), b.clone()]);
    let yt = xt.conv_transpose(&wt, None, &o).unwrap();
    assert_eq!(yt.shape(), &[3, 5, 4, 3]);
    assert!(max_diff(&yt, &conv_transpose_reference(&xt, &wt, &o, &[3, 5, 4, 3]).unwrap()) < 1e-12);
    // unbatched input takes the same path
    let y1 = x.select(0, 1).unwrap().conv(&w, None, &o).unwrap();
    assert!(max_diff(&y1, &y.select(0, 1).unwrap()) < 1e-12);
    // "same" padding of an even kernel pads on the right only: the window no longer covers the input once
    let mut same = ConvOptions::new(2);
    same.padding = ember::ConvPadding::Same;
    let (x2, w2) = (rand64(&[2, 3, 2, 2]), rand64(&[4, 3, 2, 2]));
    let y2 = x2.conv(&w2, None, &same).unwrap();
    assert_eq!(y2.shape(), &[2, 4, 2, 2]);
    let right = x2.pad([0, 1, 0, 1], ember::PadMode::Constant, 0.0).unwrap();
    assert!(max_diff(&y2, &conv_reference(&right, &w2, &o).unwrap()) < 1e-12);
}

/// Second derivatives of `f(x, w)` against finite differences: the gradients of `sum(f^2)`,
/// taken with `create_graph`, are themselves checked.
fn check_second_order(f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>, inputs: [Tensor; 2]) {
    gradcheck(
        |t| {
            let y = f(&t[0], &t[1])?.pow(2.0)?.sum()?;
            let gs = grad(&[y], t, None, true, true, false)?;
            let flat: Vec<Tensor> = gs.into_iter().map(|g| g.expect("used").reshape([-1])).collect::<Result<_>>()?;
            Tensor::cat(&flat, 0)
        },
        &inputs,
        1e-6,
        1e-5,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn fused_conv2d_differentiates_twice_and_handles_empty_batches() {
    manual_seed(6);
    let mut o = ConvOptions::new(2);
    o.padding = ember::ConvPadding::Explicit(vec![1, 0]);
    check_second_order(|x, w| x.conv(w, None, &o), [rand64(&[2, 2, 4, 4]), rand64(&[3, 2, 2, 2])]);
    // a non-contiguous input (a permuted view) and f16 (composed, no fused kernel) agree too
    let (x, w) = (rand64(&[4, 4, 2, 2]), rand64(&[3, 2, 2, 2]));
    let xp = x.permute([2, 3, 0, 1]).unwrap();
    let want = conv_reference(&xp.contiguous().unwrap(), &w, &o).unwrap();
    assert!(max_diff(&xp.conv(&w, None, &o).unwrap(), &want) < 1e-12);
    let half = |t: &Tensor| t.to_dtype(DType::F16).unwrap();
    let y16 = half(&xp).conv(&half(&w), None, &o).unwrap().to_dtype(DType::F64).unwrap();
    assert!(max_diff(&y16, &want) < 5e-2);
    let x = rand64(&[0, 2, 4, 4]).requires_grad_(true).unwrap();
    let w = rand64(&[3, 2, 2, 2]).requires_grad_(true).unwrap();
    let y = x.conv(&w, None, &o).unwrap();
    assert_eq!(y.shape(), &[0, 3, 5, 3]);
    y.sum().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().abs().unwrap().sum().unwrap().item().unwrap(), 0.0);
}
