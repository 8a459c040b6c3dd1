//! Bad input gives an `Error` naming the op and the offending values.

use ember::{ConvOptions, DType, PoolOptions, Tensor};

fn err(r: ember::Result<Tensor>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn shape_mismatches_name_the_op_and_shapes() {
    let a = Tensor::zeros([2, 3]).unwrap();
    let b = Tensor::zeros([4, 5]).unwrap();
    let e = err(a.matmul(&b));
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    let e = err(a.add(&Tensor::zeros([4]).unwrap()));
    assert!(e.contains("add") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    let e = err(a.reshape([4, -1]));
    assert!(e.contains("reshape") && e.contains("[4, -1]"), "{e}");
    let e = err(Tensor::cat(&[a.clone(), b.clone()], 0));
    assert!(e.contains("cat"), "{e}");
}

#[test]
fn out_of_range_indices_and_dims_are_errors() {
    let a = Tensor::arange(6).unwrap().reshape([2, 3]).unwrap();
    let e = err(a.sum_dim([2], false));
    assert!(e.contains("dim 2") && e.contains("rank 2"), "{e}");
    let idx = Tensor::from_vec(vec![0i64, 7], [2]).unwrap();
    let e = err(a.index_select(1, &idx));
    assert!(e.contains("index_select") && e.contains('7'), "{e}");
    let gi = Tensor::from_vec(vec![0i64, -1, 2, 1, 0, 0], [2, 3]).unwrap();
    let e = err(a.gather(1, &gi));
    assert!(e.contains("gather") && e.contains("-1"), "{e}");
    let e = err(a.select(0, 5));
    assert!(e.contains("select"), "{e}");
    assert!(a.one_hot(2).is_err());
}

#[test]
fn invalid_arguments_are_errors() {
    let x = Tensor::zeros([1, 4, 5, 5]).unwrap();
    let w = Tensor::zeros([6, 3, 3, 3]).unwrap();
    let mut o = ConvOptions::new(2);
    o.groups = 3;
    let e = err(x.conv(&w, None, &o));
    assert!(e.contains("groups=3"), "{e}");
    o.groups = 1;
    o.stride = vec![0, 1];
    assert!(x.conv(&Tensor::zeros([2, 4, 3, 3]).unwrap(), None, &o).is_err());
    assert!(x.slice(0, None, None, 0).is_err());
    assert!(Tensor::arange_with(0.0, 5.0, -1.0, DType::F32, ember::Device::Cpu).is_err());
    assert!(x.max_pool(&PoolOptions::new(&[7, 7])).is_err());
    let e = err(Tensor::from_vec(vec![1.0f32; 5], [2, 3]));
    assert!(e.contains("5 elements") && e.contains("[2, 3]"), "{e}");
    let i = Tensor::from_vec(vec![1i64, 2], [2]).unwrap();
    let e = err(i.remainder(&Tensor::from_vec(vec![1i64, 0], [2]).unwrap()));
    assert!(e.contains("division by zero"), "{e}");
}

#[test]
fn dtype_mismatches_are_errors() {
    let f = Tensor::zeros([3]).unwrap();
    let idx = Tensor::zeros([3]).unwrap();
    let e = err(f.index_select(0, &idx));
    assert!(e.contains("i64") && e.contains("f32"), "{e}");
    let e = err(Tensor::where_cond(&f, &f, &f));
    assert!(e.contains("where") && e.contains("bool"), "{e}");
    let i = Tensor::arange(3).unwrap();
    assert!(i.mean().is_err());
    assert!(i.add_(0.5).is_err());
    assert!(f.add_(1).is_ok());
}

/// Inputs that used to panic (or were silently wrong) now give PyTorch's result or a clear error.
#[test]
fn former_panics_and_silent_results_are_errors_or_pytorch_results() {
    use ember::{ConvPadding, InterpMode};
    let x = Tensor::randn([1, 1, 4, 4]).unwrap();
    let mut o = PoolOptions::new(&[2, 2]);
    o.stride = vec![0, 0];
    assert!(err(x.max_pool(&o).map(|t| t.0)).contains("must be positive"));
    assert!(err(x.avg_pool(&PoolOptions::new(&[0, 0]))).contains("must be positive"));
    let mut o = PoolOptions::new(&[2, 2]);
    o.divisor_override = Some(0);
    assert!(err(x.avg_pool(&o)).contains("divisor_override"));
    // empty inputs
    let e = Tensor::zeros([0]).unwrap();
    assert_eq!(e.nonzero().unwrap().shape(), &[0, 1]);
    assert_eq!(e.masked_select(&e.gt(0.0).unwrap()).unwrap().shape(), &[0]);
    // empty matrices give PyTorch's empty results
    let z = Tensor::zeros([2, 0, 0]).unwrap();
    assert_eq!(z.linalg_inv().unwrap().shape(), &[2, 0, 0]);
    assert_eq!(z.linalg_det().unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    assert_eq!(z.linalg_solve(&Tensor::zeros([2, 0, 3]).unwrap()).unwrap().shape(), &[2, 0, 3]);
    assert_eq!(z.linalg_cholesky().unwrap().shape(), &[2, 0, 0]);
    assert_eq!(z.linalg_svdvals().unwrap().shape(), &[2, 0]);
    assert_eq!(z.linalg_eigvalsh().unwrap().shape(), &[2, 0]);
    let (q, r) = Tensor::zeros([3, 0]).unwrap().linalg_qr().unwrap();
    assert_eq!((q.shape(), r.shape()), (&[3, 0][..], &[0, 0][..]));
    // absurd convolution geometry: an error on the caller's thread, never a panic on a pool thread
    let w = Tensor::randn([1, 1, 3, 3]).unwrap();
    let mut c = ConvOptions::new(2);
    c.padding = ConvPadding::Explicit(vec![1 << 62, 1 << 62]);
    assert!(x.conv(&w, None, &c).is_err());
    c.padding = ConvPadding::Explicit(vec![1 << 62, 0]);
    c.dilation = vec![1 << 63, 1];
    assert!(x.conv(&w, None, &c).is_err());
    // integer edge cases, as PyTorch
    let mn = Tensor::from_vec(vec![i64::MIN], [1]).unwrap();
    let m1 = Tensor::from_vec(vec![-1i64], [1]).unwrap();
    assert_eq!(mn.floor_divide(&m1).unwrap().to_vec::<i64>().unwrap(), vec![i64::MIN]);
    assert_eq!(mn.remainder(&m1).unwrap().to_vec::<i64>().unwrap(), vec![0]);
    assert!(err(Tensor::from_vec(vec![2i64], [1]).unwrap().pow(&m1)).contains("negative integer powers"));
    let b = Tensor::from_vec(vec![true], [1]).unwrap();
    assert!(err(b.sub(&b)).contains("logical_xor"));
    assert!(Tensor::arange_with(0.0, f64::NAN, 1.0, DType::F32, ember::Device::Cpu).is_err());
    let r = Tensor::randint(i64::MIN, i64::MAX, [64]).unwrap().to_vec::<i64>().unwrap();
    assert!(r.iter().any(|&v| v < 0) && r.iter().any(|&v| v > 0), "the full i64 range is sampled: {r:?}");
    assert!(err(Tensor::zeros([3]).unwrap().expand([-1, 3])).contains("-1"));
    // interpolate
    assert!(x.interpolate(Some(&[0, 0]), None, InterpMode::Nearest, false).is_err());
    assert!(x.interpolate(None, Some(&[f64::NAN]), InterpMode::Nearest, false).is_err());
    assert!(x.interpolate(None, Some(&[-2.0]), InterpMode::Linear, false).is_err());
    assert!(x.interpolate(None, Some(&[1e12]), InterpMode::Nearest, false).is_err());
    assert!(Tensor::from_vec(vec![0i64], [1]).unwrap().one_hot(1 << 40).is_err());
}

/// Autograd rejects gradients of the wrong shape, dtype or count, naming where they came from.
#[test]
fn wrong_gradients_are_errors() {
    use ember::{apply, Context, Function};
    let x = Tensor::randn([4]).unwrap().requires_grad_(true).unwrap();
    x.register_hook(|g| Some(g.sum().unwrap())).unwrap();
    let e = x.mul(2.0).unwrap().sum().unwrap().backward().unwrap_err().to_string();
    assert!(e.contains("hook") && e.contains("[4]"), "{e}");

    struct TooFew;
    impl Function for TooFew {
        fn forward(&self, _: &mut Context, xs: &[Tensor]) -> ember::Result<Tensor> {
            xs[0].add(&xs[1])
        }
        fn backward(&self, _: &Context, g: &Tensor) -> ember::Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.clone())])
        }
        fn name(&self) -> &'static str {
            "TooFew"
        }
    }
    let (a, b) = (Tensor::randn([3]).unwrap().requires_grad_(true).unwrap(), Tensor::randn([3]).unwrap());
    let e = apply(TooFew, &[a.clone(), b]).unwrap().sum().unwrap().backward().unwrap_err().to_string();
    assert!(e.contains("TooFewBackward") && e.contains("expected 2, got 1"), "{e}");

    struct WrongShape;
    impl Function for WrongShape {
        fn forward(&self, _: &mut Context, xs: &[Tensor]) -> ember::Result<Tensor> {
            xs[0].mul(2.0)
        }
        fn backward(&self, _: &Context, g: &Tensor) -> ember::Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.sum()?)])
        }
    }
    let e = apply(WrongShape, std::slice::from_ref(&a)).unwrap().sum().unwrap().backward().unwrap_err().to_string();
    assert!(e.contains("invalid gradient at index 0") && e.contains("[3]"), "{e}");

    let y = a.mul(2.0).unwrap();
    let e = y.backward_opts(&Tensor::from_vec(vec![1i64, 1, 1], [3]).unwrap(), false, false).unwrap_err();
    assert!(e.to_string().contains("floating"), "{e}");
}

#[test]
fn io_errors_keep_the_underlying_error_as_their_source() {
    let e = ember::io::load_npy("/nonexistent/dir/x.npy").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/dir/x.npy"), "{e}");
    let source = std::error::Error::source(&e).expect("an io error has a source");
    let io = source.downcast_ref::<std::io::Error>().expect("the source is the std::io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert!(std::error::Error::source(&ember::Error::invalid("x", "y")).is_none());
}
