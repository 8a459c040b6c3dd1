//! A short tour of Ember's tensor API: run with `cargo run --release --example tour`.

use ember::prelude::*;

fn main() -> Result<()> {
    manual_seed(0);
    println!("Ember tensor tour\n");

    let x = Tensor::arange(12)?.reshape([3, 4])?.to_dtype(DType::F32)?;
    println!("x = arange(12).reshape(3, 4):\n{x}\n");
    println!("x[1:, ::2] =\n{}\n", x.i(&[s(1, 3, 1), s(0, 4, 2)])?);
    println!("x.sum(dim=1) = {}", x.sum_dim([1], false)?);
    println!("x.softmax(-1)[0] = {}\n", x.softmax(-1)?.select(0, 0)?);

    let w = Tensor::randn([4, 2])?;
    let y = x.matmul(&w)?.relu()?;
    println!("relu(x @ w) with w ~ N(0, 1), shape {:?}:\n{y}\n", y.shape());

    let img = Tensor::randn([1, 1, 6, 6])?;
    let k = Tensor::ones([2, 1, 3, 3])?.div(9.0)?;
    let conv = img.conv(&k, None, &ConvOptions::new(2))?;
    println!("conv2d of a 6x6 image with two 3x3 box filters -> shape {:?}", conv.shape());

    let (vals, idx) = Tensor::from_vec(vec![3.0f32, 1.0, 4.0, 1.0, 5.0, 9.0], [6])?.topk_with(3, 0, true)?;
    println!("topk(3) of [3, 1, 4, 1, 5, 9]: values {vals}, indices {idx}");

    let b = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3, 1])?;
    println!("broadcasting [3, 1] + [4] -> {:?}", b.add(&Tensor::ones([4])?)?.shape());

    match x.matmul(&Tensor::ones([3, 3])?) {
        Ok(_) => println!("unexpected"),
        Err(e) => println!("\nerrors name the op and the shapes: {e}"),
    }
    Ok(())
}
