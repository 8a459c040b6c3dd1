//! Bad input gives an `Error` naming the op and the offending values.

use ember::{ConvOptions, DType, PoolOptions, Tensor};

fn err(r: ember::Result<Tensor>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn shape_mismatches_name_the_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3]).unwrap();
    let b = Tensor::zeros(&[4, 5]).unwrap();
    let e = err(a.matmul(&b));
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    let e = err(a.add(&Tensor::zeros(&[4]).unwrap()));
    assert!(e.contains("add") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    let e = err(a.reshape(&[4, -1]));
    assert!(e.contains("reshape") && e.contains("[4, -1]"), "{e}");
    let e = err(Tensor::cat(&[a.clone(), b.clone()], 0));
    assert!(e.contains("cat"), "{e}");
}

#[test]
fn out_of_range_indices_and_dims_are_errors() {
    let a = Tensor::arange(6).unwrap().reshape(&[2, 3]).unwrap();
    let e = err(a.sum_dim(&[2], false));
    assert!(e.contains("dim 2") && e.contains("rank 2"), "{e}");
    let idx = Tensor::from_vec(vec![0i64, 7], &[2]).unwrap();
    let e = err(a.index_select(1, &idx));
    assert!(e.contains("index_select") && e.contains('7'), "{e}");
    let gi = Tensor::from_vec(vec![0i64, -1, 2, 1, 0, 0], &[2, 3]).unwrap();
    let e = err(a.gather(1, &gi));
    assert!(e.contains("gather") && e.contains("-1"), "{e}");
    let e = err(a.select(0, 5));
    assert!(e.contains("select"), "{e}");
    assert!(a.one_hot(2).is_err());
}

#[test]
fn invalid_arguments_are_errors() {
    let x = Tensor::zeros(&[1, 4, 5, 5]).unwrap();
    let w = Tensor::zeros(&[6, 3, 3, 3]).unwrap();
    let mut o = ConvOptions::new(2);
    o.groups = 3;
    let e = err(x.conv(&w, None, &o));
    assert!(e.contains("groups=3"), "{e}");
    o.groups = 1;
    o.stride = vec![0, 1];
    assert!(x.conv(&Tensor::zeros(&[2, 4, 3, 3]).unwrap(), None, &o).is_err());
    assert!(x.slice(0, None, None, 0).is_err());
    assert!(Tensor::arange_with(0.0, 5.0, -1.0, DType::F32, ember::Device::Cpu).is_err());
    assert!(x.max_pool(&PoolOptions::new(&[7, 7])).is_err());
    let e = err(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]));
    assert!(e.contains("5 elements") && e.contains("[2, 3]"), "{e}");
    let i = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    let e = err(i.remainder(&Tensor::from_vec(vec![1i64, 0], &[2]).unwrap()));
    assert!(e.contains("division by zero"), "{e}");
}

#[test]
fn dtype_mismatches_are_errors() {
    let f = Tensor::zeros(&[3]).unwrap();
    let idx = Tensor::zeros(&[3]).unwrap();
    let e = err(f.index_select(0, &idx));
    assert!(e.contains("i64") && e.contains("f32"), "{e}");
    let e = err(Tensor::where_cond(&f, &f, &f));
    assert!(e.contains("where") && e.contains("bool"), "{e}");
    let i = Tensor::arange(3).unwrap();
    assert!(i.mean().is_err());
    assert!(i.add_(0.5).is_err());
    assert!(f.add_(1).is_ok());
}
