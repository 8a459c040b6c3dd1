//! 2-d convolution under f16 autocast on the CPU, with the roundings of PyTorch's CPU kernel for
//! f16 (its "slow" im2col path, which CPUs without AVX512-FP16 take): the forward rounds once
//! (f32 accumulation, bias included); in backward, the columns' gradient `wᵀ·gy` is rounded to
//! f16 and folded back into the input's gradient one kernel position at a time, rounding after
//! each addition (`unfolded2d_acc` adds in f16), and the weight's gradient accumulates sample by
//! sample in f16 (a GEMM with beta = 1 per sample). Inputs arrive as f32 tensors holding f16
//! values; so do the results, which autocast rounds to f16.

use crate::function::{Context, Function};
use crate::nn::conv::ConvOptions;
use crate::Tensor;
use ember_storage::{DType, Result};

/// The convolution of `x` `[N, C, H, W]` by `w` `[OC, C, kh, kw]` (and a bias) with explicit
/// `padding`, groups 1.
pub(crate) struct HalfConvCpu {
    pub(crate) opts: ConvOptions,
    pub(crate) padding: Vec<usize>,
    pub(crate) has_bias: bool,
}

fn round_f16(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F16)?.to_dtype(t.dtype())
}

impl Function for HalfConvCpu {
    fn forward(&self, ctx: &mut Context, x: &[Tensor]) -> Result<Tensor> {
        ctx.save_for_backward(&[&x[0], &x[1]]);
        x[0].conv(&x[1], x.get(2), &self.opts)
    }

    fn backward(&self, ctx: &Context, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [x, w] = ctx.saved_tensors() else { unreachable!("two tensors saved") };
        let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (oc, kernel) = (w.shape()[0], &w.shape()[2..]);
        let k: usize = kernel.iter().product();
        let l = g.shape()[2] * g.shape()[3];
        let (st, dl) = (&self.opts.stride, &self.opts.dilation);
        let g3 = g.reshape([n as isize, oc as isize, l as isize])?;
        let w2 = w.reshape([oc as isize, (c * k) as isize])?;
        // the input's gradient: columns rounded, folded kernel position by kernel position
        let cols = round_f16(&w2.t()?.matmul(&g3)?)?; // [N, C*K, L]
        let mut gx = Tensor::zeros_with([n, c, h, wd], x.dtype(), x.device())?;
        let pos = Tensor::arange((c * k) as i64)?.to(x.device())?.remainder(k as f64)?.reshape([1, -1, 1])?;
        for kk in 0..k {
            let only = cols.mul(&pos.eq(kk as f64)?.to_dtype(cols.dtype())?)?;
            let img = only.col2im(&[h, wd], kernel, st, &self.padding, dl)?;
            gx = round_f16(&gx.add(&img)?)?;
        }
        // the weight's gradient, accumulated sample by sample in f16
        let patches = x.im2col(kernel, st, &self.padding, dl, 0.0)?; // [N, C*K, L]
        let mut gw = Tensor::zeros_with([oc, c * k], x.dtype(), x.device())?;
        for s in 0..n {
            let term = g3.select(0, s as isize)?.matmul(&patches.select(0, s as isize)?.t()?)?;
            gw = round_f16(&gw.add(&term)?)?;
        }
        let shape: Vec<isize> = w.shape().iter().map(|&d| d as isize).collect();
        let mut grads = vec![Some(gx), Some(gw.reshape(&shape)?)];
        if self.has_bias {
            grads.push(Some(g.sum_dim([0, 2, 3], false)?));
        }
        Ok(grads)
    }

    fn name(&self) -> &'static str {
        "conv2d"
    }
}
