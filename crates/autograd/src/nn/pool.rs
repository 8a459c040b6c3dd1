//! Pooling: max (with indices), average, power-average and adaptive pooling, N-d.

use crate::Tensor;
use ember_storage::{DType, Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.max_pool1d/2d/3d` (values and indices).
pub const MAX_POOL: OpDescriptor = OpDescriptor {
    name: "max_pool2d",
    forward: "Tensor::max_pool",
    conformance: &["max_pool1d", "max_pool2d"],
    shape_rule: "pool_output_shape",
    backward: OpBackward::Node {
        formula: "2-d f32/f64 on a backend with fused kernels: the gradient scatter-added at the argmax indices; otherwise composed (max over reshaped or im2col windows)",
    },
};

/// `F.avg_pool1d/2d/3d`.
pub const AVG_POOL: OpDescriptor = OpDescriptor {
    name: "avg_pool2d",
    forward: "Tensor::avg_pool",
    conformance: &["avg_pool1d", "avg_pool2d"],
    shape_rule: "pool_output_shape",
    backward: OpBackward::Composed,
};

/// `F.lp_pool1d/2d`.
pub const LP_POOL: OpDescriptor = OpDescriptor {
    name: "lp_pool2d",
    forward: "Tensor::lp_pool",
    conformance: &["lp_pool1d", "lp_pool2d"],
    shape_rule: "pool_output_shape",
    backward: OpBackward::Composed,
};

/// `F.adaptive_avg_pool1d/2d/3d`.
pub const ADAPTIVE_AVG_POOL: OpDescriptor = OpDescriptor {
    name: "adaptive_avg_pool2d",
    forward: "Tensor::adaptive_avg_pool",
    conformance: &["adaptive_avg_pool1d", "adaptive_avg_pool2d"],
    shape_rule: "the leading dims, then output_size",
    backward: OpBackward::Composed,
};

/// `F.adaptive_max_pool2d`.
pub const ADAPTIVE_MAX_POOL: OpDescriptor = OpDescriptor {
    name: "adaptive_max_pool2d",
    forward: "Tensor::adaptive_max_pool2d",
    conformance: &["adaptive_max_pool2d"],
    shape_rule: "the leading dims, then output_size",
    backward: OpBackward::Composed,
};

/// Options of max/avg/lp pooling.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolOptions {
    /// Window size per spatial dim.
    pub kernel: Vec<usize>,
    /// Stride (defaults to the kernel).
    pub stride: Vec<usize>,
    /// Implicit padding on both sides.
    pub padding: Vec<usize>,
    /// Dilation (max pooling).
    pub dilation: Vec<usize>,
    /// Round the output size up.
    pub ceil_mode: bool,
    /// Average pooling: count padded zeros in the divisor.
    pub count_include_pad: bool,
    /// Average pooling: fixed divisor.
    pub divisor_override: Option<usize>,
}

impl PoolOptions {
    /// A window of `kernel` with stride = kernel, no padding, PyTorch's defaults.
    pub fn new(kernel: &[usize]) -> Self {
        let d = kernel.len();
        PoolOptions {
            kernel: kernel.to_vec(),
            stride: kernel.to_vec(),
            padding: vec![0; d],
            dilation: vec![1; d],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
}

/// Spatial output sizes of pooling an `[N, C, ...]` input of shape `input`: validates the options.
fn pool_spatial(op: &str, input: &[usize], o: &PoolOptions) -> Result<Vec<usize>> {
    let d = o.kernel.len();
    if input.len() != d + 2 {
        return Err(Error::shape(op, format!("expects a {}-d input [N, C, ...], got {input:?}", d + 2)));
    }
    if [&o.stride, &o.padding, &o.dilation].iter().any(|v| v.len() != d)
        || o.kernel.contains(&0)
        || o.stride.contains(&0)
        || o.dilation.contains(&0)
    {
        return Err(Error::invalid(
            op,
            format!(
                "kernel {:?}, stride {:?}, padding {:?} and dilation {:?} must have {d} entries each; kernel, stride and dilation must be positive",
                o.kernel, o.stride, o.padding, o.dilation
            ),
        ));
    }
    if o.divisor_override == Some(0) {
        return Err(Error::invalid(op, "divisor_override must not be zero"));
    }
    if o.padding.iter().zip(&o.kernel).any(|(&p, &k)| p > k / 2) {
        return Err(Error::invalid(
            op,
            format!("padding {:?} should be at most half of kernel {:?}", o.padding, o.kernel),
        ));
    }
    (0..d)
        .map(|i| out_size(input[2 + i], o.kernel[i], o.stride[i], o.padding[i], o.dilation[i], o.ceil_mode))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::shape(op, format!("window {:?} does not fit input {input:?}", o.kernel)))
}

/// Output shape of [`Tensor::max_pool`], [`Tensor::avg_pool`] and [`Tensor::lp_pool`] over an input
/// (batched `[N, C, ...]` or unbatched `[C, ...]`): per spatial dim
/// `(in + 2 * padding - dilation * (k - 1) - 1) / stride + 1`, rounded up in ceil mode unless the
/// last window would start in the right padding (PyTorch's `MaxPool2d` formula).
pub fn pool_output_shape(input: &[usize], o: &PoolOptions) -> Result<Vec<usize>> {
    if input.len() == o.kernel.len() + 1 {
        let mut s = pool_output_shape(&[&[1], input].concat(), o)?;
        s.remove(0);
        return Ok(s);
    }
    let mut shape = input[..2.min(input.len())].to_vec();
    shape.extend(pool_spatial("pool", input, o)?);
    Ok(shape)
}

/// A pooling window's output size; `None` for a zero kernel, stride or dilation, a window larger
/// than the padded input, or sizes whose arithmetic would overflow.
fn out_size(input: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    if s == 0 {
        return None;
    }
    let eff = d.checked_mul(k.checked_sub(1)?)?.checked_add(1)?;
    let padded = p.checked_mul(2)?.checked_add(input)?;
    let span = padded.checked_sub(eff)?;
    let mut o = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
    if ceil && (o - 1).checked_mul(s)? >= input + p {
        o -= 1;
    }
    Some(o)
}

impl Tensor {
    /// Pads on the right of each spatial dim so a ceil-mode window fits; returns the new tensor.
    fn ceil_pad(&self, o: &PoolOptions, out: &[usize], value: f64) -> Result<Tensor> {
        let d = o.kernel.len();
        let mut pad = vec![];
        let mut any = false;
        for i in (0..d).rev() {
            let need = (out[i] - 1) * o.stride[i] + o.dilation[i] * (o.kernel[i] - 1) + 1;
            let have = self.shape()[2 + i] + 2 * o.padding[i];
            let extra = need.saturating_sub(have);
            any |= extra > 0;
            pad.extend([0isize, extra as isize]);
        }
        if any {
            self.pad(&pad, crate::PadMode::Constant, value)
        } else {
            Ok(self.clone())
        }
    }

    /// Spatial output sizes of a pooling of this `[N, C, ...]` tensor.
    fn pool_out(&self, op: &str, o: &PoolOptions) -> Result<Vec<usize>> {
        pool_spatial(op, self.shape(), o)
    }

    /// Max pooling whose windows tile the input exactly (kernel = stride, no padding or dilation,
    /// sizes divisible): a reshape/permute into `[..., windows, K]` and one reduction over the
    /// contiguous last dim, instead of im2col.
    fn max_pool_tiled(&self, o: &PoolOptions, out: &[usize]) -> Result<Option<(Tensor, Tensor)>> {
        let Some((vals, arg)) = self.max_pool_tiled_raw(o, out)? else { return Ok(None) };
        let d = o.kernel.len();
        let insz = &self.shape()[2..];
        // flat input index: sum_i (o_i * k_i + a_i) * stride_of_dim_i, with a = (a_0, a_1, ...)
        let mut flat = Tensor::zeros_with(arg.shape(), ember_storage::DType::I64, self.device())?;
        let mut rest = arg.clone();
        let mut plane_stride = 1i64;
        for i in (0..d).rev() {
            let ki = o.kernel[i] as i64;
            let ai = rest.remainder(ki)?;
            rest = rest.floor_divide(ki)?;
            let mut ishape = vec![1isize; arg.ndim()];
            ishape[2 + i] = out[i] as isize;
            let oi = Tensor::arange_with(0.0, out[i] as f64, 1.0, ember_storage::DType::I64, self.device())?
                .reshape(&ishape)?;
            let coord = oi.mul(ki)?.add(&ai)?;
            flat = flat.add(&coord.mul(plane_stride)?)?;
            plane_stride *= insz[i] as i64;
        }
        Ok(Some((vals, flat)))
    }

    /// 2-d max pooling through the backend's fused kernel, when it has one and no window reaches
    /// past the padding (ceil mode adding a window): one pass for values and indices; backward
    /// scatters the gradient to the indices.
    fn max_pool2d_fused(&self, o: &PoolOptions, out: &[usize]) -> Result<Option<(Tensor, Tensor)>> {
        if o.kernel.len() != 2 || self.ndim() != 4 || !matches!(self.dtype(), DType::F32 | DType::F64) {
            return Ok(None);
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let g = self.geometry("max_pool2d", 2, &o.kernel, &o.stride, &o.padding, &o.dilation)?;
        if g.output().as_deref() != Some(out) {
            return Ok(None);
        }
        let Some(fused) = self.fused().filter(|_| matches!(self.dtype(), DType::F32 | DType::F64)) else {
            return Ok(None);
        };
        let (vals, idx) = fused.max_pool2d(self.v(), &g)?;
        let shape = [n, c, out[0], out[1]];
        let vals = self.same_backend(vals, &shape);
        let idx = self.same_backend(idx, &shape);
        let (ix, in_shape) = (idx.clone(), self.shape().to_vec());
        let vals = crate::graph::record_saving(vals, "max_pool2d", &[self], &[&idx], move |gr| {
            let flat = [n as isize, c as isize, -1];
            let zeros = Tensor::zeros_with([n, c, in_shape[2] * in_shape[3]], gr.dtype(), gr.device())?;
            let gi = zeros.scatter_add(-1, &ix.reshape(flat)?, &gr.reshape(flat)?)?;
            Ok(smallvec::smallvec![Some(gi.reshape(in_shape.iter().map(|&s| s as isize).collect::<Vec<_>>())?)])
        });
        Ok(Some((vals, idx)))
    }

    /// Max pooling values only (what `nn.MaxPool2d` returns), skipping the index computation
    /// when the windows tile the input.
    pub fn max_pool_values(&self, o: &PoolOptions) -> Result<Tensor> {
        if self.ndim() == o.kernel.len() + 2 && self.dtype().is_float() {
            let out = self.pool_out("max_pool", o)?;
            if let Some((v, _)) = self.max_pool2d_fused(o, &out)? {
                return Ok(v);
            }
            if let Some((v, _)) = self.max_pool_tiled_raw(o, &out)? {
                return Ok(v);
            }
        }
        Ok(self.max_pool(o)?.0)
    }

    /// Values and within-window argmax of a max pool whose windows tile the input.
    fn max_pool_tiled_raw(&self, o: &PoolOptions, out: &[usize]) -> Result<Option<(Tensor, Tensor)>> {
        let d = o.kernel.len();
        let insz = &self.shape()[2..];
        let tiled = o.kernel == o.stride
            && o.padding.iter().all(|&p| p == 0)
            && o.dilation.iter().all(|&x| x == 1)
            && (0..d).all(|i| out[i] * o.kernel[i] == insz[i])
            && self.dtype().is_float();
        if !tiled || d == 0 {
            return Ok(None);
        }
        let (n, c) = (self.shape()[0] as isize, self.shape()[1] as isize);
        // [N, C, o0, k0, o1, k1, ...] -> [N, C, o0, o1, ..., k0, k1, ...]
        let mut split = vec![n, c];
        for (&oi, &ki) in out.iter().zip(&o.kernel) {
            split.push(oi as isize);
            split.push(ki as isize);
        }
        let mut perm: Vec<isize> = vec![0, 1];
        perm.extend((0..d).map(|i| (2 + 2 * i) as isize));
        perm.extend((0..d).map(|i| (3 + 2 * i) as isize));
        let k = ember_storage::shape::numel(&o.kernel);
        let mut grouped = vec![n, c];
        grouped.extend(out.iter().map(|&x| x as isize));
        grouped.push(k as isize);
        let windows = self.reshape(&split)?.permute(&perm)?.reshape(&grouped)?;
        Ok(Some(windows.max_dim(-1, false)?))
    }

    /// Max pooling with the flat index (within each input plane) of every maximum.
    pub fn max_pool(&self, o: &PoolOptions) -> Result<(Tensor, Tensor)> {
        if self.ndim() == o.kernel.len() + 1 {
            let (v, i) = self.unsqueeze(0)?.max_pool(o)?;
            return Ok((v.squeeze_dim(0)?, i.squeeze_dim(0)?));
        }
        let out = self.pool_out("max_pool", o)?;
        if let Some(r) = self.max_pool2d_fused(o, &out)? {
            return Ok(r);
        }
        if let Some(r) = self.max_pool_tiled(o, &out)? {
            return Ok(r);
        }
        let x = self.ceil_pad(o, &out, f64::NEG_INFINITY)?;
        let cols = x.im2col(&o.kernel, &o.stride, &o.padding, &o.dilation, f64::NEG_INFINITY)?;
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let k = ember_storage::shape::numel(&o.kernel);
        let l = cols.shape()[2];
        let cols = cols.reshape([n as isize, c as isize, k as isize, l as isize])?;
        let (vals, arg) = cols.max_dim(2, false)?;
        // flat input index of each maximum
        let a = arg.to_vec::<i64>()?;
        let d = o.kernel.len();
        let insz = &self.shape()[2..];
        let mut flat = Vec::with_capacity(a.len());
        for (pos, &kk) in a.iter().enumerate() {
            let mut li = pos % l;
            let mut ki = kk as usize;
            let mut coords = vec![0isize; d];
            for i in (0..d).rev() {
                let (oi, kidx) = (li % out[i], ki % o.kernel[i]);
                li /= out[i];
                ki /= o.kernel[i];
                coords[i] = (oi * o.stride[i] + kidx * o.dilation[i]) as isize - o.padding[i] as isize;
            }
            let mut f = 0i64;
            for i in 0..d {
                f = f * insz[i] as i64 + coords[i].clamp(0, insz[i] as isize - 1) as i64;
            }
            flat.push(f);
        }
        let mut shape = vec![n, c];
        shape.extend_from_slice(&out);
        let ishape: Vec<isize> = shape.iter().map(|&s| s as isize).collect();
        Ok((vals.reshape(&ishape)?, Tensor::from_vec(flat, &shape)?.to(self.device())?))
    }

    /// Average pooling.
    pub fn avg_pool(&self, o: &PoolOptions) -> Result<Tensor> {
        if self.ndim() == o.kernel.len() + 1 {
            return self.unsqueeze(0)?.avg_pool(o)?.squeeze_dim(0);
        }
        let out = self.pool_out("avg_pool", o)?;
        let x = self.ceil_pad(o, &out, 0.0)?;
        let cols = x.im2col(&o.kernel, &o.stride, &o.padding, &o.dilation, 0.0)?;
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let k = ember_storage::shape::numel(&o.kernel);
        let l = cols.shape()[2];
        let sums = cols.reshape([n as isize, c as isize, k as isize, l as isize])?.sum_dim([2], false)?;
        // PyTorch's divisor per output position
        let d = o.kernel.len();
        let insz = &self.shape()[2..];
        let mut div = vec![0f64; l];
        for (pos, dv) in div.iter_mut().enumerate() {
            let mut li = pos;
            let (mut pool, mut clipped) = (1f64, 1f64);
            for i in (0..d).rev() {
                let oi = li % out[i];
                li /= out[i];
                let start = (oi * o.stride[i]) as isize - o.padding[i] as isize;
                let end = (start + o.kernel[i] as isize).min((insz[i] + o.padding[i]) as isize);
                pool *= (end - start) as f64;
                clipped *= (end.min(insz[i] as isize) - start.max(0)) as f64;
            }
            *dv = match o.divisor_override {
                Some(v) => v as f64,
                None if o.count_include_pad => pool,
                None => clipped,
            };
        }
        let div = Tensor::from_vec(div, [l])?.to(self.device())?.to_dtype(self.dtype())?;
        let mut shape: Vec<isize> = vec![n as isize, c as isize];
        shape.extend(out.iter().map(|&s| s as isize));
        sums.div(&div)?.reshape(&shape)
    }

    /// Power-average pooling: `(sum over the window of x^p)^(1/p)`.
    pub fn lp_pool(&self, norm_type: f64, o: &PoolOptions) -> Result<Tensor> {
        let k = ember_storage::shape::numel(&o.kernel);
        let avg = self.pow(norm_type)?.avg_pool(o)?;
        avg.sign()?.mul(&avg.abs()?.relu()?)?.mul(k as f64)?.pow(1.0 / norm_type)
    }

    /// Adaptive average pooling to `output` sizes (separable: one spatial dim at a time).
    pub fn adaptive_avg_pool(&self, output: &[usize]) -> Result<Tensor> {
        let d = output.len();
        if self.ndim() < d + 1 {
            return Err(Error::shape(
                "adaptive_avg_pool",
                format!("input {:?} has fewer than {} dims", self.shape(), d + 1),
            ));
        }
        let mut t = self.clone();
        for (i, &o) in output.iter().enumerate() {
            let dim = (self.ndim() - d + i) as isize;
            let n = self.shape()[self.ndim() - d + i];
            let parts: Vec<Tensor> = (0..o)
                .map(|j| {
                    let (s, e) = (j * n / o, ((j + 1) * n).div_ceil(o));
                    t.narrow(dim, s as isize, e - s)?.mean_dim([dim], true)
                })
                .collect::<Result<_>>()?;
            t = Tensor::cat(&parts, dim)?;
        }
        Ok(t)
    }

    /// Adaptive max pooling over the last two dims, with flat indices.
    pub fn adaptive_max_pool2d(&self, output: &[usize]) -> Result<(Tensor, Tensor)> {
        if self.ndim() < 3 || output.len() != 2 {
            return Err(Error::shape("adaptive_max_pool2d", format!("input {:?}, output {output:?}", self.shape())));
        }
        let nd = self.ndim();
        let (h, w) = (self.shape()[nd - 2], self.shape()[nd - 1]);
        let (mut vals, mut idxs) = (vec![], vec![]);
        for i in 0..output[0] {
            let (h0, h1) = (i * h / output[0], ((i + 1) * h).div_ceil(output[0]));
            for j in 0..output[1] {
                let (w0, w1) = (j * w / output[1], ((j + 1) * w).div_ceil(output[1]));
                let win = self.narrow(-2, h0 as isize, h1 - h0)?.narrow(-1, w0 as isize, w1 - w0)?.flatten(-2, -1)?;
                let (v, li) = win.max_dim(-1, false)?;
                let ww = (w1 - w0) as i64;
                let gi = li
                    .div(ww)?
                    .floor()?
                    .to_dtype(ember_storage::DType::I64)?
                    .add(h0 as i64)?
                    .mul(w as i64)?
                    .add(&li.remainder(ww)?.add(w0 as i64)?)?;
                vals.push(v);
                idxs.push(gi);
            }
        }
        let mut shape: Vec<isize> = self.shape()[..nd - 2].iter().map(|&s| s as isize).collect();
        shape.extend([output[0] as isize, output[1] as isize]);
        Ok((Tensor::stack(&vals, -1)?.reshape(&shape)?, Tensor::stack(&idxs, -1)?.reshape(&shape)?))
    }
}
