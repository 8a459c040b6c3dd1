//! The descriptors of the non-elementwise ops (`ember::NN_OPS`, `ember::nn::OPS`): every
//! conformance name they list has PyTorch cases, no name is claimed twice, every PyTorch case of
//! these families is claimed, and the typed shape rules agree with the forwards (or fail with them).

use ember::{
    conv_output_shape, conv_transpose_output_shape, pool_output_shape, ConvOptions, ConvPadding, OpDescriptor,
    PoolOptions, Tensor,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn descriptors() -> impl Iterator<Item = &'static OpDescriptor> {
    ember::NN_OPS.iter().chain(ember::nn::OPS)
}

fn conformance_ops() -> HashSet<String> {
    let dir = ember_tests::conformance::default_dir();
    ember_tests::conformance::load_manifest(&dir).expect("cases load").into_iter().map(|c| c.op).collect()
}

#[test]
fn every_descriptor_names_pytorch_cases_and_no_name_twice() {
    let ops = conformance_ops();
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for d in descriptors() {
        assert!(!d.conformance.is_empty(), "{} lists no conformance cases", d.name);
        for &name in d.conformance {
            assert!(ops.contains(name), "{}: no PyTorch case named {name}", d.name);
            if let Some(first) = owner.insert(name, d.name) {
                panic!("{name} is claimed by both {first} and {}", d.name);
            }
        }
    }
    println!("{} descriptors claim {} conformance ops", descriptors().count(), owner.len());
}

/// Whether a conformance op belongs to a family that must have a descriptor.
fn is_non_elementwise_nn_op(op: &str) -> bool {
    const PREFIXES: &[&str] =
        &["conv", "max_pool", "avg_pool", "lp_pool", "adaptive_", "pixel_", "rnn_", "gru", "lstm"];
    const NAMES: &[&str] = &[
        "unfold",
        "fold",
        "linear",
        "bilinear",
        "layer_norm",
        "rms_norm",
        "group_norm",
        "instance_norm",
        "batch_norm",
        "local_response_norm",
        "normalize",
        "cosine_similarity",
        "pairwise_distance",
        "interpolate",
        "grid_sample",
        "affine_grid",
        "channel_shuffle",
        "embedding_bag",
        "scaled_dot_product_attention",
        "multi_head_attention",
        "transformer_encoder_layer",
    ];
    PREFIXES.iter().any(|p| op.starts_with(p)) || NAMES.contains(&op)
}

#[test]
fn every_conv_pool_norm_rnn_and_attention_case_has_a_descriptor() {
    let claimed: HashSet<&str> = descriptors().flat_map(|d| d.conformance.iter().copied()).collect();
    let mut families = 0;
    for op in conformance_ops() {
        if is_non_elementwise_nn_op(&op) {
            families += 1;
            assert!(claimed.contains(op.as_str()), "{op} has PyTorch cases but no descriptor");
        }
    }
    assert!(families >= 40, "only {families} ops matched the families");
}

/// The shape rule and the forward agree: both give the same shape, or both fail.
fn agree(rule: ember::Result<Vec<usize>>, forward: ember::Result<Tensor>) -> Result<(), TestCaseError> {
    match (rule, forward) {
        (Ok(s), Ok(y)) => prop_assert_eq!(s.as_slice(), y.shape()),
        (Err(_), Err(_)) => {}
        (r, f) => prop_assert!(false, "shape rule {:?}, forward {:?}", r, f.map(|y| y.shape().to_vec())),
    }
    Ok(())
}

fn conv_options(
    d: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
    groups: usize,
    mode: u8,
    out_pad: usize,
) -> ConvOptions {
    let mut o = ConvOptions::new(d);
    o.stride = vec![stride; d];
    o.dilation = vec![dilation; d];
    o.groups = groups;
    o.output_padding = vec![out_pad; d];
    o.padding = match mode {
        0 => ConvPadding::Explicit(vec![pad; d]),
        1 => ConvPadding::Same,
        _ => ConvPadding::Valid,
    };
    o
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn conv_shape_rule_matches_the_forward(
        d in 1..3usize, n in 1..3usize, cin_g in 1..3usize, cout_g in 1..3usize, groups in 1..3usize,
        size in 1..7usize, k in 1..4usize, stride in 1..3usize, pad in 0..3usize, dilation in 1..3usize,
        mode in 0..3u8, batched: bool,
    ) {
        let o = conv_options(d, stride, pad, dilation, groups, mode, 0);
        let mut xs = if batched { vec![n, cin_g * groups] } else { vec![cin_g * groups] };
        xs.extend(vec![size; d]);
        let mut ws = vec![cout_g * groups, cin_g];
        ws.extend(vec![k; d]);
        let (x, w) = (Tensor::randn(&xs).unwrap(), Tensor::randn(&ws).unwrap());
        agree(conv_output_shape(&xs, &ws, &o), x.conv(&w, None, &o))?;
    }

    #[test]
    fn conv_transpose_shape_rule_matches_the_forward(
        d in 1..3usize, n in 1..3usize, cin_g in 1..3usize, cout_g in 1..3usize, groups in 1..3usize,
        size in 1..5usize, k in 1..4usize, stride in 1..3usize, pad in 0..3usize, dilation in 1..3usize,
        out_pad in 0..2usize,
    ) {
        let o = conv_options(d, stride, pad, dilation, groups, 0, out_pad);
        let mut xs = vec![n, cin_g * groups];
        xs.extend(vec![size; d]);
        let mut ws = vec![cin_g * groups, cout_g];
        ws.extend(vec![k; d]);
        let (x, w) = (Tensor::randn(&xs).unwrap(), Tensor::randn(&ws).unwrap());
        agree(conv_transpose_output_shape(&xs, &ws, &o), x.conv_transpose(&w, None, &o))?;
    }

    #[test]
    fn pool_shape_rule_matches_max_and_avg_pooling(
        d in 1..3usize, size in 1..8usize, k in 1..4usize, stride in 1..4usize, pad in 0..2usize,
        dilation in 1..3usize, ceil_mode: bool, batched: bool,
    ) {
        let mut o = PoolOptions::new(&vec![k; d]);
        o.stride = vec![stride; d];
        o.padding = vec![pad; d];
        o.dilation = vec![dilation; d];
        o.ceil_mode = ceil_mode;
        let mut xs = if batched { vec![2, 3] } else { vec![3] };
        xs.extend(vec![size; d]);
        let x = Tensor::randn(&xs).unwrap();
        agree(pool_output_shape(&xs, &o), x.max_pool(&o).map(|(v, _)| v))?;
        if dilation == 1 {
            agree(pool_output_shape(&xs, &o), x.avg_pool(&o))?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Transposed convolution is the adjoint of convolution with the same options:
    /// `<conv_transpose(y, w), x> = <y, conv(x, w)>`, including output_padding up to the dilation
    /// (where PyTorch allows output_padding >= stride).
    #[test]
    fn conv_transpose_is_the_adjoint_of_conv(
        d in 1..3usize, size in 1..4usize, k in 1..4usize, stride in 1..3usize, pad in 0..2usize,
        dilation in 1..4usize, out_pad in 0..3usize, seed: u64,
    ) {
        prop_assume!(out_pad < stride.max(dilation));
        ember::manual_seed(seed);
        let o = conv_options(d, stride, pad, dilation, 1, 0, out_pad);
        let mut ys = vec![2, 3];
        ys.extend(vec![size; d]);
        let mut ws = vec![3, 2];
        ws.extend(vec![k; d]);
        let Ok(xs) = conv_transpose_output_shape(&ys, &ws, &o) else { return Ok(()) };
        let y = Tensor::randn(&ys).unwrap().to_dtype(ember::DType::F64).unwrap();
        let w = Tensor::randn(&ws).unwrap().to_dtype(ember::DType::F64).unwrap();
        let x = Tensor::randn(&xs).unwrap().to_dtype(ember::DType::F64).unwrap();
        let lhs = y.conv_transpose(&w, None, &o).unwrap().mul(&x).unwrap().sum().unwrap().item().unwrap();
        // an output_padding of at least the stride gives conv(x) windows no input of the transposed
        // convolution feeds; the adjoint is conv restricted to the first `size` positions
        let mut cx = x.conv(&w, None, &o).unwrap();
        for i in 0..d {
            cx = cx.narrow(2 + i as isize, 0, size).unwrap();
        }
        prop_assert_eq!(cx.shape(), y.shape());
        let rhs = cx.mul(&y).unwrap().sum().unwrap().item().unwrap();
        prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
    }
}

/// Found by the shape-rule sweep: a kernel column with no input column in bounds (a 1x1 input,
/// padding 2, dilation 2) made im2col and col2im slice out of bounds (a panic) instead of padding.
#[test]
fn a_window_column_entirely_in_the_padding_is_padding() {
    let mut o = ConvOptions::new(2);
    o.padding = ConvPadding::Explicit(vec![2, 2]);
    o.dilation = vec![2, 2];
    let x = Tensor::from_vec(vec![3.0f32], [1, 1, 1, 1]).unwrap().requires_grad_(true).unwrap();
    let w = Tensor::arange(9).unwrap().to_dtype(ember::DType::F32).unwrap().reshape([1, 1, 3, 3]).unwrap();
    let y = x.conv(&w, None, &o).unwrap();
    assert_eq!(y.shape(), conv_output_shape(x.shape(), w.shape(), &o).unwrap().as_slice());
    // only the centre tap (weight 4) reaches the single input element
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.0]);
    y.sum().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![4.0]);
}
