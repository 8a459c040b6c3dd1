//! Memory safety under hostile shapes, strides and sizes: every call returns `Ok` with the values a
//! naive model computes, or a clean `Err`; never a panic, an abort or a read outside the buffer.
//!
//! The property test builds views with `as_strided` from sizes and strides near `usize::MAX`,
//! `isize::MAX`, 2^62 and zero over a 24-element buffer, and runs every op family on them.

use ember::{DType, Tensor};
use proptest::prelude::*;

const HUGE: [usize; 5] = [usize::MAX, isize::MAX as usize, 1usize << 62, 1usize << 48, 1usize << 44];

fn err_text<T: std::fmt::Debug>(r: ember::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn overflowing_shapes_are_rejected_at_construction() {
    let e = err_text(Tensor::zeros([4, 1usize << 62]));
    assert!(e.contains("[4, 4611686018427387904]") && e.contains("more elements"), "{e}");
    assert!(Tensor::ones([1usize << 32, 1usize << 32, 1usize << 32]).is_err());
    assert!(Tensor::rand([usize::MAX, 2]).is_err());
    assert!(Tensor::randn([1usize << 62, 1usize << 62]).is_err());
    assert!(Tensor::from_vec(Vec::<f32>::new(), [1usize << 33, 1usize << 31]).is_err(), "2^64 wraps to 0 elements");
    assert!(Tensor::from_vec(vec![1.0f32], [1usize << 32, 1usize << 32])
        .unwrap_err()
        .to_string()
        .contains("more elements"));
    // a zero dim makes any shape empty, as in PyTorch, but each size must still be a valid i64
    assert_eq!(Tensor::zeros([0, 1usize << 59]).unwrap().numel(), 0);
    assert!(Tensor::zeros([0, usize::MAX]).is_err());
}

#[test]
fn sizes_beyond_memory_are_out_of_memory_errors_not_aborts() {
    let e = err_text(Tensor::zeros([1usize << 20, 1usize << 20, 1usize << 4]));
    assert!(e.contains("full") && e.contains("out of memory") && e.contains(&(1u64 << 46).to_string()), "{e}");
    let e = err_text(Tensor::arange(1usize << 40));
    assert!(e.contains("arange") && e.contains("out of memory"), "{e}");
    assert!(Tensor::rand([1usize << 44]).unwrap_err().to_string().contains("out of memory"));
    assert!(Tensor::eye(1usize << 32).is_err());
    assert!(Tensor::randperm(1usize << 44).is_err());
    // a stride-0 view of 2^44 elements is legal; materialising it is not
    let big = Tensor::scalar(1.0f32).expand([1usize << 44]).unwrap();
    assert!(big.exp().unwrap_err().to_string().contains("out of memory"));
    assert!(big.contiguous().is_err());
    // the process is still healthy afterwards
    assert_eq!(Tensor::ones([3]).unwrap().sum().unwrap().item().unwrap(), 3.0);
}

#[test]
fn matmul_whose_output_size_overflows_is_an_error_not_an_overrun() {
    // 16 x 2^31 x 2^31 = 2^66 elements: the product of sizes used to wrap to 0 and gemm wrote
    // 2^62 elements into an empty buffer
    let a = Tensor::zeros([1, 1, 1]).unwrap().expand([16, 1usize << 31, 1]).unwrap();
    let b = Tensor::zeros([1, 1, 1]).unwrap().expand([16, 1, 1usize << 31]).unwrap();
    assert!(a.matmul(&b).is_err());
    let a = Tensor::zeros([1, 1]).unwrap().expand([1usize << 31, 1]).unwrap();
    let b = Tensor::zeros([1, 1]).unwrap().expand([1, 1usize << 31]).unwrap();
    assert!(a.matmul(&b).unwrap_err().to_string().contains("out of memory"));
}

#[test]
fn as_strided_rejects_views_that_wrap_or_leave_the_buffer() {
    let x = Tensor::arange(6).unwrap();
    for (shape, strides, off) in [
        (vec![2], vec![1usize << 63], 0usize),
        (vec![2, 2], vec![usize::MAX, 1], 0),
        (vec![3], vec![(usize::MAX / 2) + 1], 0),
        (vec![2], vec![1], usize::MAX),
        (vec![1usize << 62, 4], vec![0, 1], 0),
        (vec![1], vec![1usize << 63], 0), // a stride that turns negative as isize, even on a size-1 dim
    ] {
        let e = err_text(x.as_strided(&shape, &strides, off));
        assert!(e.contains("as_strided"), "{e}");
    }
    // legal extreme: stride 0 over a large dim, and a size-0 dim with any stride
    assert_eq!(x.as_strided(&[1usize << 20], &[0], 5).unwrap().max().unwrap().item().unwrap(), 5.0);
    assert_eq!(x.as_strided(&[0, 3], &[1usize << 50, 1], 0).unwrap().numel(), 0);
}

#[test]
fn views_with_huge_steps_and_sizes_are_errors() {
    let x = Tensor::arange(6).unwrap();
    assert!(x.narrow(0, 5, usize::MAX).is_err(), "start + length wraps");
    let s = x.slice(0, None, None, usize::MAX).unwrap();
    assert_eq!(s.to_vec::<i64>().unwrap(), vec![0]);
    assert!(
        x.unfold(0, 2, usize::MAX).is_err()
            || x.unfold(0, 2, usize::MAX).unwrap().to_vec::<i64>().unwrap() == vec![0, 1]
    );
    assert!(x.view([-1, 1isize << 62, 4]).is_err());
    assert!(x.expand([1usize << 62, 1usize << 62, 6]).is_err());
    assert!(x.reshape([1usize << 33, 1usize << 31, 0]).is_err());
}

#[test]
fn npy_headers_declaring_overflowing_shapes_are_rejected() {
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4611686018427387904), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    let e = ember::io::from_npy_bytes(&bytes, "bomb.npy").unwrap_err().to_string();
    assert!(e.contains("bomb.npy"), "{e}");
}

/// A naive model of a strided view: the buffer positions of its elements in row-major order, with
/// arithmetic that cannot wrap; `None` when some element lies outside `len` or the count is large.
fn positions(shape: &[usize], strides: &[usize], offset: usize, len: usize) -> Option<Vec<usize>> {
    if shape.contains(&0) {
        return Some(vec![]);
    }
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if n > 10_000 {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let (mut rem, mut p) = (k, offset);
        for d in (0..shape.len()).rev() {
            p = p.checked_add((rem % shape[d]).checked_mul(strides[d])?)?;
            rem /= shape[d];
        }
        assert!(p < len, "model: element {k} at {p} outside the buffer");
        out.push(p);
    }
    Some(out)
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..4, 1 => proptest::sample::select(HUGE.to_vec())]
}

fn stride() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..7, 1 => proptest::sample::select(HUGE.to_vec()), 1 => Just((usize::MAX / 3) + 1)]
}

fn offset() -> impl Strategy<Value = usize> {
    prop_oneof![4 => 0usize..30, 1 => proptest::sample::select(HUGE.to_vec())]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn extreme_views_through_every_op_family_give_values_or_errors(
        dims in proptest::collection::vec((size(), stride()), 0..4),
        off in offset(),
    ) {
        const LEN: usize = 24;
        let base = Tensor::arange(LEN as i64).unwrap().to_dtype(DType::F32).unwrap();
        let (shape, strides): (Vec<usize>, Vec<usize>) = dims.into_iter().unzip();
        let view = match base.as_strided(&shape, &strides, off) {
            Ok(v) => v,
            Err(e) => {
                prop_assert!(e.to_string().contains("as_strided"), "{}", e);
                return Ok(());
            }
        };
        let numel = if shape.contains(&0) { Some(0) } else { shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) };
        match positions(&shape, &strides, off, LEN) {
            Some(pos) => {
                let want: Vec<f32> = pos.iter().map(|&p| p as f32).collect();
                prop_assert_eq!(view.to_vec::<f32>().unwrap(), want.clone());
                let e: Vec<f32> = view.exp().unwrap().to_vec::<f32>().unwrap();
                for (g, w) in e.iter().zip(&want) {
                    prop_assert!((g - w.exp()).abs() <= 1e-6 * w.exp(), "exp({}) = {}", w, g);
                }
                prop_assert_eq!(view.add(&view).unwrap().to_vec::<f32>().unwrap(), want.iter().map(|v| v + v).collect::<Vec<_>>());
                let total: f64 = want.iter().map(|&v| v as f64).sum();
                prop_assert!((view.sum().unwrap().item().unwrap() - total).abs() <= 1e-3 * total.max(1.0));
                prop_assert_eq!(view.to_dtype(DType::I64).unwrap().to_vec::<i64>().unwrap(), want.iter().map(|&v| v as i64).collect::<Vec<_>>());
                prop_assert_eq!(view.contiguous().unwrap().to_vec::<f32>().unwrap(), want.clone());
                if !shape.is_empty() {
                    let c = view.cumsum(0).unwrap();
                    prop_assert_eq!(c.shape(), view.shape());
                    let (sorted, _) = view.sort(-1, false).unwrap();
                    prop_assert_eq!(sorted.shape(), view.shape());
                    let sm = view.softmax(-1).unwrap();
                    prop_assert_eq!(sm.shape(), view.shape());
                    if shape[0] > 0 {
                        let idx = Tensor::from_vec(vec![0i64, (shape[0] - 1) as i64], [2]).unwrap();
                        prop_assert_eq!(view.index_select(0, &idx).unwrap().shape()[0], 2);
                    }
                }
                if shape.len() == 2 && shape[0] <= 4 {
                    let p = view.matmul(&view.t().unwrap()).unwrap();
                    let (m, k) = (shape[0], shape[1]);
                    for i in 0..m {
                        for j in 0..m {
                            let dot: f32 = (0..k).map(|t| want[i * k + t] * want[j * k + t]).sum();
                            let got = p.to_vec::<f32>().unwrap()[i * m + j];
                            prop_assert!((got - dot).abs() <= 1e-3 * dot.abs().max(1.0));
                        }
                    }
                }
            }
            None => {
                // a legal view with a huge element count (stride-0 dims): materialising it must
                // fail cleanly; ops whose work grows without allocating are not run (they would
                // only be slow, as in PyTorch)
                prop_assert!(numel.is_none_or(|n| n >= 1usize << 44));
                prop_assert!(view.exp().is_err());
                prop_assert!(view.add(&view).is_err());
                prop_assert!(view.to_dtype(DType::F64).is_err());
                if shape.len() == 2 && shape[1] <= 3 {
                    prop_assert!(view.matmul(&view.t().unwrap()).is_err());
                }
            }
        }
    }
}
