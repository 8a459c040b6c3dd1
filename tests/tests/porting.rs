//! What a PyTorch user types works (issue: porting ergonomics), and the errors a port runs into
//! name the layer and say what was expected.

use ember::nn::layers::{
    BCEWithLogitsLoss, Conv2d, ConvTranspose2d, CrossEntropyLoss, Embedding, LayerNorm, LeakyReLU, Linear, MSELoss,
};
use ember::prelude::*;

fn v(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

#[test]
fn operators_take_every_mix_of_tensors_references_and_scalars() {
    let a = tensor!([1.0, 2.0, 4.0]).unwrap();
    let b = tensor!([2.0, 2.0, 2.0]).unwrap();
    assert_eq!(v(&(&a + &b)), [3.0, 4.0, 6.0]);
    assert_eq!(v(&(a.clone() - &b)), [-1.0, 0.0, 2.0]);
    assert_eq!(v(&(&a * b.clone())), [2.0, 4.0, 8.0]);
    assert_eq!(v(&(a.clone() / b.clone())), [0.5, 1.0, 2.0]);
    assert_eq!(v(&(1.0 - &a)), [0.0, -1.0, -3.0]);
    assert_eq!(v(&(-0.5 * &a)), [-0.5, -1.0, -2.0]);
    assert_eq!(v(&(2 * a.clone())), [2.0, 4.0, 8.0]);
    assert_eq!(v(&(8.0 / &a)), [8.0, 4.0, 2.0]);
    assert_eq!(v(&(&a * 2)), [2.0, 4.0, 8.0]);
    assert_eq!(v(&-&a), [-1.0, -2.0, -4.0]);
    assert_eq!(
        (0.5 * &a).exp().unwrap().dtype(),
        DType::F32,
        "a literal's type is inferred; the dtype is the tensor's"
    );
    // integer tensors stay integer with integer scalars on either side
    let i = tensor!([1, 2, 3]).unwrap();
    assert_eq!(((10 - &i).dtype(), v(&(10 - &i))), (DType::I64, vec![9.0, 8.0, 7.0]));
    // compound assignment rebinds: a view or an alias of the old tensor is untouched
    let mut x = a.clone();
    let alias = a.clone();
    x += &b;
    x *= 2.0;
    x -= 1;
    assert_eq!(v(&x), [5.0, 7.0, 11.0]);
    assert_eq!(v(&alias), [1.0, 2.0, 4.0]);
    // gradients flow through the operators
    let w = tensor!([1.0, 2.0]).unwrap().requires_grad_(true).unwrap();
    (1.0 - &w * &w).sum().unwrap().backward().unwrap();
    assert_eq!(v(&w.grad().unwrap()), [-2.0, -4.0]);
}

#[test]
fn dims_shapes_and_slices_take_any_integer_type() {
    let x = Tensor::arange(24usize).unwrap().to_dtype(DType::F32).unwrap().view([2, 3, 4]).unwrap();
    let [b, t, c] = x.dims3().unwrap();
    assert_eq!((b, t, c), (2, 3, 4));
    let (nh, hs) = (2usize, 2usize);
    assert_eq!(x.view([b, t, nh, hs]).unwrap().shape(), &[2, 3, 2, 2]);
    assert_eq!(x.view([-1i64, 4]).unwrap().shape(), &[6, 4]);
    assert_eq!(x.reshape(vec![b * t, c]).unwrap().shape(), &[6, 4]);
    assert_eq!(x.sum_dim(1, false).unwrap().shape(), &[2, 4]);
    assert_eq!(x.sum_dim(1usize, true).unwrap().shape(), &[2, 1, 4]);
    assert_eq!(x.sum_dim([-1, 0], false).unwrap().shape(), &[3]);
    assert_eq!(x.transpose(-2, -1).unwrap().shape(), &[2, 4, 3]);
    assert_eq!(x.i(&idx![.., ..t - 1, 1..]).unwrap().shape(), &[2, 2, 3]);
    assert_eq!(x.i(&idx![0i64, .., -1]).unwrap().shape(), &[3]);
    assert_eq!(Tensor::zeros([b, t]).unwrap().shape(), &[2, 3]);
    assert!(x.reshape(SCALAR).unwrap_err().to_string().contains("reshape"));
    assert!(Tensor::zeros([-1, 2]).unwrap_err().to_string().contains("negative size"));
    assert!(x.dims2().unwrap_err().to_string().contains("2 dims"));
}

#[test]
fn pytorch_defaults_are_defaults() {
    let x = tensor!([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]).unwrap();
    let (vals, idx) = x.topk(2).unwrap();
    assert_eq!((v(&vals), v(&idx)), (vec![3.0, 2.0, 5.0, 4.0], vec![0.0, 2.0, 1.0, 2.0]));
    assert_eq!(v(&x.clamp_min(2.0).unwrap()), [3.0, 2.0, 2.0, 2.0, 5.0, 4.0]);
    assert_eq!(v(&x.clamp_max(2.0).unwrap()), [2.0, 1.0, 2.0, 0.0, 2.0, 2.0]);
    let y = tensor!([0, 1]).unwrap();
    let ce = F::cross_entropy(&x, &y).unwrap();
    assert_eq!(ce.item().unwrap(), CrossEntropyLoss::new().forward(&x, &y).unwrap().item().unwrap());
    let smoothed = CrossEntropyLoss::new().label_smoothing(0.1).forward(&x, &y).unwrap().item().unwrap();
    assert!(smoothed > ce.item().unwrap());
    assert_eq!(MSELoss::new().forward(&x, &x).unwrap().item().unwrap(), 0.0);
    assert!(BCEWithLogitsLoss::new().forward(&x, &x.sigmoid().unwrap()).unwrap().item().unwrap().is_finite());
    // layers: PyTorch's keyword arguments chain on the constructor
    let conv = Conv2d::new(3, 8, 4).stride(2).padding(1).bias(false).unwrap();
    assert_eq!((conv.weight.shape(), conv.bias.is_none()), (&[8, 3, 4, 4][..], true));
    assert_eq!(conv.forward(&Tensor::randn([1, 3, 8, 8]).unwrap()).unwrap().shape(), &[1, 8, 4, 4]);
    let up = ConvTranspose2d::new(8, 3, 4).stride(2).padding(1).bias(false).unwrap();
    assert_eq!(up.forward(&Tensor::randn([1, 8, 4, 4]).unwrap()).unwrap().shape(), &[1, 3, 8, 8]);
    assert!(Conv2d::new(3, 8, [3, 3, 3]).is_err() && Conv2d::new(3, 8, 3).output_padding(1).is_err());
    let ln = LayerNorm::new(8).bias(false).unwrap();
    assert!(ln.weight.is_some() && ln.bias.is_none());
    assert_eq!(LeakyReLU::new(0.2).negative_slope, 0.2);
    let lin = Linear::new(4, 2).bias(false).unwrap();
    assert!(lin.bias.is_none());
    // the optimizer's and the module's zero_grad() take no arguments
    lin.forward(&Tensor::randn([3, 4]).unwrap()).unwrap().sum().unwrap().backward().unwrap();
    let mut opt = optim::Sgd::sgd(lin.parameters(), optim::SgdOptions::new(0.1)).unwrap();
    opt.step().unwrap();
    opt.zero_grad().unwrap();
    assert!(lin.weight.grad().is_none());
    // attention returns the output; the weights on request
    let q = Tensor::randn([2, 5, 8]).unwrap();
    let o = F::scaled_dot_product_attention(&q, &q, &q, None, 0.0, true, None).unwrap();
    let (o2, w) = F::scaled_dot_product_attention_with_weights(&q, &q, &q, None, 0.0, true, None).unwrap();
    assert_eq!((o.shape(), w.shape()), (&[2, 5, 8][..], &[2, 5, 5][..]));
    assert_eq!(v(&o), v(&o2));
}

#[test]
fn literals_lists_cat_and_destructuring() {
    let m = tensor!([[1, 2], [3, 4]]).unwrap();
    assert_eq!(m.dtype(), DType::I64);
    assert_eq!(m.to_vec2::<i64>().unwrap(), vec![vec![1, 2], vec![3, 4]]);
    assert_eq!(tensor!(2.5).unwrap().shape(), SCALAR);
    assert!(Tensor::new(&vec![vec![1.0f32, 2.0], vec![3.0]]).unwrap_err().to_string().contains("ragged"));
    let (a, b) = (Tensor::ones([2, 2]).unwrap(), Tensor::zeros([1, 2]).unwrap());
    assert_eq!(Tensor::cat(&[&a, &b], 0).unwrap().shape(), &[3, 2]);
    assert_eq!(Tensor::cat(&[a.clone(), b.clone()], 0).unwrap().shape(), &[3, 2]);
    let x = Tensor::randn([2, 6]).unwrap();
    let [q, k, w] = x.split_array(2, 1).unwrap();
    assert_eq!((q.shape(), k.shape(), w.shape()), (&[2, 2][..], &[2, 2][..], &[2, 2][..]));
    let [l, r] = x.chunk_array(-1).unwrap();
    assert_eq!(l.shape(), r.shape());
    assert!(x.split_array::<4>(2, 1).unwrap_err().to_string().contains("not 4"));
}

#[test]
fn apply_to_acts_on_one_layer_type() {
    let mut net = Sequential::new()
        .layer(Conv2d::new(1, 4, 3).unwrap())
        .layer(LeakyReLU::new(0.2))
        .layer(Conv2d::new(4, 4, 3).unwrap())
        .layer(Linear::new(4, 2).unwrap());
    let mut seen = 0;
    net.apply_to(|c: &mut Conv2d| {
        seen += 1;
        init::constant_(&c.weight, 0.5)
    })
    .unwrap();
    assert_eq!(seen, 2);
    let params = net.named_parameters();
    assert!(params
        .iter()
        .filter(|(n, _)| n.ends_with("0.weight") || n.ends_with("2.weight"))
        .all(|(_, p)| v(p).iter().all(|&x| x == 0.5)));
    let mut count = 0;
    net.apply(&mut |_| count += 1);
    assert_eq!(count, 5, "four layers and the container");
}

#[test]
fn errors_name_the_layer_and_what_it_expected() {
    let conv = Conv2d::new(3, 8, 3).unwrap();
    let e = conv.forward(&Tensor::randn([1, 2, 8, 8]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("Conv2d") && e.contains("expected input with 3 channels, got 2"), "{e}");
    let e =
        Tensor::randn([1, 2, 8, 8]).unwrap().conv(&conv.weight, None, &ConvOptions::new(2)).unwrap_err().to_string();
    assert!(e.contains("expects input with 3 channels, got 2"), "{e}");
    let e =
        ConvTranspose2d::new(8, 3, 4).unwrap().forward(&Tensor::randn([1, 4, 2, 2]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("ConvTranspose2d") && e.contains("expected input with 8 channels, got 4"), "{e}");
    let e = Linear::new(4, 2).unwrap().forward(&Tensor::randn([3, 5]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("Linear") && e.contains("4 features") && e.contains("[3, 5]"), "{e}");
    let e = Embedding::new(10, 4).unwrap().forward(&Tensor::zeros([3]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("Embedding") && e.contains("integer indices"), "{e}");
    assert!(Embedding::new(10, 4).unwrap().forward(&tensor!([1, 2]).unwrap().to_dtype(DType::I32).unwrap()).is_ok());
    let logits = Tensor::randn([4, 3]).unwrap();
    let e = F::cross_entropy(&logits, &Tensor::zeros([4]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("class indices must be an integer tensor"), "{e}");
    let w = Tensor::randn([3]).unwrap().requires_grad_(true).unwrap();
    let y = (&w * &w).sum().unwrap();
    y.backward().unwrap();
    let e = y.backward().unwrap_err().to_string();
    assert!(e.contains("second time") && e.contains("retain_graph"), "{e}");
}
