//! The kernels behind `torch.nn.functional`, exposed as tensor functions: linear, convolution (N-d,
//! groups, dilation, "same"), transposed convolution, pooling, fold/unfold, pixel shuffle, embedding bags.
//! Convolution is im2col + one batched matmul (groups broadcast as a batch dim).

use crate::Tensor;
use ember_storage::{DType, Error, Result, WindowGeometry};

/// Padding of a convolution.
#[derive(Clone, Debug, PartialEq)]
pub enum ConvPadding {
    /// Explicit symmetric padding per spatial dim.
    Explicit(Vec<usize>),
    /// Output has the input's size (stride 1).
    Same,
    /// No padding.
    Valid,
}

/// Options of an N-d convolution, with PyTorch's defaults from [`ConvOptions::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct ConvOptions {
    /// Stride per spatial dim.
    pub stride: Vec<usize>,
    /// Padding.
    pub padding: ConvPadding,
    /// Dilation per spatial dim.
    pub dilation: Vec<usize>,
    /// Groups.
    pub groups: usize,
    /// Extra size on one side of each output dim (transposed convolution only).
    pub output_padding: Vec<usize>,
}

impl ConvOptions {
    /// Stride 1, no padding, dilation 1, one group, for `d` spatial dims.
    pub fn new(d: usize) -> Self {
        ConvOptions {
            stride: vec![1; d],
            padding: ConvPadding::Explicit(vec![0; d]),
            dilation: vec![1; d],
            groups: 1,
            output_padding: vec![0; d],
        }
    }
}

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

/// Adds a per-channel bias `[C]` to `[N, C, ...]`.
fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => {
            let mut bs = vec![1isize; y.ndim()];
            bs[1] = -1;
            y.add(&b.reshape(&bs)?)
        }
        None => Ok(y),
    }
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
    /// `x @ weight.T + bias`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = self.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    /// `x1ᵀ W_o x2 + b_o` for each output feature o.
    pub fn bilinear(&self, x2: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = Tensor::einsum("...i,oij,...j->...o", &[self.clone(), weight.clone(), x2.clone()])?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    fn geometry(
        &self,
        op: &str,
        d: usize,
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
    ) -> Result<WindowGeometry> {
        if self.ndim() != d + 2 {
            return Err(Error::shape(op, format!("expects a {}-d input [N, C, ...], got {:?}", d + 2, self.shape())));
        }
        let g = WindowGeometry {
            batch: self.shape()[0],
            channels: self.shape()[1],
            input: self.shape()[2..].to_vec(),
            kernel: kernel.to_vec(),
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            dilation: dilation.to_vec(),
        };
        if [kernel, stride, padding, dilation].iter().any(|v| v.len() != d)
            || kernel.contains(&0)
            || stride.contains(&0)
            || dilation.contains(&0)
        {
            return Err(Error::invalid(op, format!("kernel {kernel:?}, stride {stride:?}, padding {padding:?}, dilation {dilation:?} must have {d} positive entries")));
        }
        if g.output().is_none() {
            return Err(Error::shape(
                op,
                format!("kernel {kernel:?} (dilation {dilation:?}) is larger than the padded input {:?}", self.shape()),
            ));
        }
        Ok(g)
    }

    /// Patches `[N, C * prod(kernel), L]` of an `[N, C, ...]` input (im2col; `F.unfold` in 2-d).
    pub fn im2col(
        &self,
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
        pad_value: f64,
    ) -> Result<Tensor> {
        let g = self.geometry("unfold", kernel.len(), kernel, stride, padding, dilation)?;
        let l: usize = g.output().expect("checked").iter().product();
        let buf = self.backend().im2col(self.v(), &g, pad_value)?;
        let out = self.same_backend(buf, &[g.batch, g.channels * g.kernel_numel(), l]);
        let (k, st, p, dl, inp) =
            (kernel.to_vec(), stride.to_vec(), padding.to_vec(), dilation.to_vec(), g.input.clone());
        Ok(crate::graph::record_free(out, "im2col", &[self], move |gr| {
            Ok(smallvec::smallvec![Some(gr.col2im(&inp, &k, &st, &p, &dl)?)])
        }))
    }

    /// The adjoint of [`Tensor::im2col`]: sums `[N, C * prod(kernel), L]` patches into `[N, C, *output_size]`
    /// (`F.fold` in 2-d).
    pub fn col2im(
        &self,
        output_size: &[usize],
        kernel: &[usize],
        stride: &[usize],
        padding: &[usize],
        dilation: &[usize],
    ) -> Result<Tensor> {
        let k = ember_storage::shape::numel(kernel);
        if self.ndim() != 3 || k == 0 || !self.shape()[1].is_multiple_of(k) {
            return Err(Error::shape("fold", format!("input {:?} must be [N, C * {k}, L]", self.shape())));
        }
        let g = WindowGeometry {
            batch: self.shape()[0],
            channels: self.shape()[1] / k,
            input: output_size.to_vec(),
            kernel: kernel.to_vec(),
            stride: stride.to_vec(),
            padding: padding.to_vec(),
            dilation: dilation.to_vec(),
        };
        let l: Option<usize> = g.output().map(|o| o.iter().product());
        if l != Some(self.shape()[2]) {
            return Err(Error::shape(
                "fold",
                format!(
                    "{} blocks do not tile output {output_size:?} with kernel {kernel:?}, stride {stride:?}",
                    self.shape()[2]
                ),
            ));
        }
        let buf = self.backend().col2im(self.v(), &g)?;
        let mut shape = vec![g.batch, g.channels];
        shape.extend_from_slice(output_size);
        let out = self.same_backend(buf, &shape);
        let (k, st, p, dl) = (kernel.to_vec(), stride.to_vec(), padding.to_vec(), dilation.to_vec());
        Ok(crate::graph::record_free(out, "col2im", &[self], move |gr| {
            Ok(smallvec::smallvec![Some(gr.im2col(&k, &st, &p, &dl, 0.0)?)])
        }))
    }

    /// N-d convolution (`F.conv1d/2d/3d`): input `[N, C_in, ...]`, weight `[C_out, C_in / groups, ...]`.
    pub fn conv(&self, weight: &Tensor, bias: Option<&Tensor>, opts: &ConvOptions) -> Result<Tensor> {
        let d = weight.ndim().saturating_sub(2);
        if d > 0 && self.ndim() == d + 1 {
            return self.unsqueeze(0)?.conv(weight, bias, opts)?.squeeze_dim(0);
        }
        let op = ["conv", "conv1d", "conv2d", "conv3d"].get(d).copied().unwrap_or("conv");
        if d == 0 || self.ndim() != d + 2 {
            return Err(Error::shape(
                op,
                format!("input {:?} and weight {:?} ranks do not fit", self.shape(), weight.shape()),
            ));
        }
        let (cin, cout, g) = (self.shape()[1], weight.shape()[0], opts.groups);
        if g == 0 || cin % g != 0 || cout % g != 0 || weight.shape()[1] * g != cin {
            return Err(Error::shape(
                op,
                format!("groups={g} does not fit input channels {cin}, weight {:?}", weight.shape()),
            ));
        }
        let kernel = &weight.shape()[2..];
        let mut x = self.clone();
        let padding = match &opts.padding {
            ConvPadding::Explicit(p) => p.clone(),
            ConvPadding::Valid => vec![0; d],
            ConvPadding::Same => {
                if opts.stride.iter().any(|&s| s != 1) {
                    return Err(Error::invalid(op, "padding='same' needs stride 1"));
                }
                // total padding dilation*(k-1); odd totals put the extra on the right, as PyTorch does
                let mut sym = vec![];
                let mut extra = vec![];
                for (dl, k) in opts.dilation.iter().zip(kernel) {
                    let total = dl * (k - 1);
                    sym.push(total / 2);
                    extra.push(total - 2 * (total / 2));
                }
                if extra.iter().any(|&e| e > 0) {
                    let mut pad = vec![];
                    for i in (0..d).rev() {
                        pad.extend([0isize, extra[i] as isize]);
                    }
                    x = x.pad(&pad, crate::PadMode::Constant, 0.0)?;
                }
                sym
            }
        };
        let geom = x.geometry(op, d, kernel, &opts.stride, &padding, &opts.dilation)?;
        let out_sp = geom.output().expect("checked");
        let mut shape: Vec<isize> = vec![self.shape()[0] as isize, cout as isize];
        shape.extend(out_sp.iter().map(|&s| s as isize));
        if g == 1 {
            if let Some(y) = x.conv2d_fused(weight, &geom)? {
                return add_channel_bias(y.reshape(&shape)?, bias);
            }
        }
        let cols = x.im2col(kernel, &opts.stride, &padding, &opts.dilation, 0.0)?;
        let (n, l) = (self.shape()[0], cols.shape()[2]);
        let ck = cin / g * ember_storage::shape::numel(kernel);
        let w = weight.reshape(&[g as isize, (cout / g) as isize, ck as isize])?;
        let c = cols.reshape(&[n as isize, g as isize, ck as isize, l as isize])?;
        let y = w.matmul(&c)?; // [N, g, cout/g, L]
        let y = y.reshape(&shape)?;
        add_channel_bias(y, bias)
    }

    /// N-d transposed convolution (`F.conv_transpose1d/2d/3d`): weight `[C_in, C_out / groups, ...]`.
    pub fn conv_transpose(&self, weight: &Tensor, bias: Option<&Tensor>, opts: &ConvOptions) -> Result<Tensor> {
        let d = weight.ndim().saturating_sub(2);
        if d > 0 && self.ndim() == d + 1 {
            return self.unsqueeze(0)?.conv_transpose(weight, bias, opts)?.squeeze_dim(0);
        }
        let op = "conv_transpose";
        let ConvPadding::Explicit(padding) = &opts.padding else {
            return Err(Error::invalid(op, "padding must be explicit for transposed convolution"));
        };
        if d == 0 || self.ndim() != d + 2 || weight.shape()[0] != self.shape()[1] {
            return Err(Error::shape(
                op,
                format!("input {:?} and weight {:?} do not fit", self.shape(), weight.shape()),
            ));
        }
        let (n, cin, g) = (self.shape()[0], self.shape()[1], opts.groups);
        if g == 0 || cin % g != 0 {
            return Err(Error::shape(op, format!("groups={g} does not divide input channels {cin}")));
        }
        let cout = weight.shape()[1] * g;
        let kernel = &weight.shape()[2..];
        let kn = ember_storage::shape::numel(kernel);
        let out_sp: Vec<usize> = (0..d)
            .map(|i| {
                let s = self.shape()[2 + i];
                ((s as isize - 1) * opts.stride[i] as isize - 2 * padding[i] as isize
                    + (opts.dilation[i] * (kernel[i] - 1)) as isize
                    + opts.output_padding[i] as isize
                    + 1)
                .max(0) as usize
            })
            .collect();
        if opts
            .output_padding
            .iter()
            .zip(opts.stride.iter().zip(&opts.dilation))
            .any(|(&op_, (&s, &dl))| op_ >= s.max(dl))
        {
            return Err(Error::invalid(
                op,
                format!("output_padding {:?} must be smaller than stride or dilation", opts.output_padding),
            ));
        }
        let l: usize = self.shape()[2..].iter().product();
        // cols[n, g, cout/g*K, L] = W[g]ᵀ @ x[n, g]
        let w = weight.reshape(&[g as isize, (cin / g) as isize, (cout / g * kn) as isize])?.mt()?;
        let x = self.reshape(&[n as isize, g as isize, (cin / g) as isize, l as isize])?;
        let cols = w.matmul(&x)?.reshape(&[n as isize, (cout * kn) as isize, l as isize])?;
        let y = cols.col2im(&out_sp, kernel, &opts.stride, padding, &opts.dilation)?;
        add_channel_bias(y, bias)
    }

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

    fn pool_out(&self, op: &str, o: &PoolOptions) -> Result<Vec<usize>> {
        let d = o.kernel.len();
        if self.ndim() != d + 2 {
            return Err(Error::shape(op, format!("expects a {}-d input [N, C, ...], got {:?}", d + 2, self.shape())));
        }
        if o.kernel.contains(&0) || o.stride.contains(&0) || o.dilation.contains(&0) {
            return Err(Error::invalid(
                op,
                format!("kernel {:?}, stride {:?} and dilation {:?} must be positive", o.kernel, o.stride, o.dilation),
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
            .map(|i| out_size(self.shape()[2 + i], o.kernel[i], o.stride[i], o.padding[i], o.dilation[i], o.ceil_mode))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::shape(op, format!("window {:?} does not fit input {:?}", o.kernel, self.shape())))
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
            let zeros = Tensor::zeros_with(&[n, c, in_shape[2] * in_shape[3]], gr.dtype(), gr.device())?;
            let gi = zeros.scatter_add(-1, &ix.reshape(&flat)?, &gr.reshape(&flat)?)?;
            Ok(smallvec::smallvec![Some(gi.reshape(&in_shape.iter().map(|&s| s as isize).collect::<Vec<_>>())?)])
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
        let cols = cols.reshape(&[n as isize, c as isize, k as isize, l as isize])?;
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
        let sums = cols.reshape(&[n as isize, c as isize, k as isize, l as isize])?.sum_dim(&[2], false)?;
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
        let div = Tensor::from_vec(div, &[l])?.to(self.device())?.to_dtype(self.dtype())?;
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
                    t.narrow(dim, s as isize, e - s)?.mean_dim(&[dim], true)
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

    /// `[N, C*r², H, W]` to `[N, C, H*r, W*r]`.
    pub fn pixel_shuffle(&self, r: usize) -> Result<Tensor> {
        let s = self.shape();
        if self.ndim() < 3 || r == 0 || !s[s.len() - 3].is_multiple_of(r * r) {
            return Err(Error::shape("pixel_shuffle", format!("input {s:?} channels must be divisible by {}", r * r)));
        }
        let nd = s.len();
        let (c, h, w) = (s[nd - 3], s[nd - 2], s[nd - 1]);
        let lead: Vec<isize> = s[..nd - 3].iter().map(|&x| x as isize).collect();
        let mut a = lead.clone();
        a.extend([(c / (r * r)) as isize, r as isize, r as isize, h as isize, w as isize]);
        let b = lead.len() as isize;
        let mut perm: Vec<isize> = (0..b).collect();
        perm.extend([b, b + 3, b + 1, b + 4, b + 2]);
        let mut out = lead;
        out.extend([(c / (r * r)) as isize, (h * r) as isize, (w * r) as isize]);
        self.reshape(&a)?.permute(&perm)?.reshape(&out)
    }

    /// `[N, C, H*r, W*r]` to `[N, C*r², H, W]`.
    pub fn pixel_unshuffle(&self, r: usize) -> Result<Tensor> {
        let s = self.shape();
        let nd = s.len();
        if nd < 3 || r == 0 || !s[nd - 2].is_multiple_of(r) || !s[nd - 1].is_multiple_of(r) {
            return Err(Error::shape("pixel_unshuffle", format!("input {s:?} spatial dims must be divisible by {r}")));
        }
        let (c, h, w) = (s[nd - 3], s[nd - 2], s[nd - 1]);
        let lead: Vec<isize> = s[..nd - 3].iter().map(|&x| x as isize).collect();
        let mut a = lead.clone();
        a.extend([c as isize, (h / r) as isize, r as isize, (w / r) as isize, r as isize]);
        let b = lead.len() as isize;
        let mut perm: Vec<isize> = (0..b).collect();
        perm.extend([b, b + 2, b + 4, b + 1, b + 3]);
        let mut out = lead;
        out.extend([(c * r * r) as isize, (h / r) as isize, (w / r) as isize]);
        self.reshape(&a)?.permute(&perm)?.reshape(&out)
    }

    /// Shuffles channels in `groups` (`F.channel_shuffle`).
    pub fn channel_shuffle(&self, groups: usize) -> Result<Tensor> {
        let s = self.shape();
        if s.len() < 2 || groups == 0 || !s[1].is_multiple_of(groups) {
            return Err(Error::shape("channel_shuffle", format!("channels of {s:?} must be divisible by {groups}")));
        }
        let mut a: Vec<isize> = vec![s[0] as isize, groups as isize, (s[1] / groups) as isize];
        a.extend(s[2..].iter().map(|&x| x as isize));
        let out: Vec<isize> = s.iter().map(|&x| x as isize).collect();
        self.reshape(&a)?.transpose(1, 2)?.reshape(&out)
    }

    /// Bags of embeddings (`F.embedding_bag`): `self` is the weight; `input` 2-d (one bag per row) or
    /// 1-d with `offsets`; mode "sum", "mean" or "max"; optional per-sample weights (sum mode).
    pub fn embedding_bag(
        &self,
        input: &Tensor,
        offsets: Option<&Tensor>,
        mode: &str,
        per_sample_weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (flat, starts): (Tensor, Vec<usize>) = match (input.ndim(), offsets) {
            (2, _) => {
                let (b, n) = (input.shape()[0], input.shape()[1]);
                (input.reshape(&[-1])?, (0..b).map(|i| i * n).collect())
            }
            (1, Some(o)) => (input.clone(), o.to_vec::<i64>()?.into_iter().map(|x| x as usize).collect()),
            _ => {
                return Err(Error::invalid(
                    "embedding_bag",
                    format!("input {:?} needs to be 2-d, or 1-d with offsets", input.shape()),
                ))
            }
        };
        let rows = self.embedding(&flat)?;
        let rows = match per_sample_weights {
            Some(w) => rows.mul(&w.reshape(&[-1, 1])?)?,
            None => rows,
        };
        let n = flat.numel();
        let mut bags = vec![];
        for (i, &s) in starts.iter().enumerate() {
            let e = starts.get(i + 1).copied().unwrap_or(n);
            if s > e || e > n {
                return Err(Error::invalid(
                    "embedding_bag",
                    format!("offsets {starts:?} are not increasing within {n}"),
                ));
            }
            let part = rows.narrow(0, s as isize, e - s)?;
            bags.push(if e == s {
                Tensor::zeros_with(&[self.shape()[1]], self.dtype(), self.device())?
            } else {
                match mode {
                    "sum" => part.sum_dim(&[0], false)?,
                    "mean" => part.mean_dim(&[0], false)?,
                    "max" => part.amax(&[0], false)?,
                    _ => return Err(Error::invalid("embedding_bag", format!("unknown mode {mode:?}"))),
                }
            });
        }
        Tensor::stack(&bags, 0)
    }
}
