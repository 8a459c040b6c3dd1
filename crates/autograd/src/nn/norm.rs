//! Normalisation kernels of `nn.functional`: layer, group, instance, batch, RMS and local response norm,
//! `normalize`, cosine similarity and pairwise distance. f16/bf16 compute in f32.

use crate::Tensor;
use ember_storage::{DType, Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.layer_norm`.
pub const LAYER_NORM: OpDescriptor = OpDescriptor {
    name: "layer_norm",
    forward: "Tensor::layer_norm",
    conformance: &["layer_norm"],
    shape_rule: "the input's shape",
    backward: OpBackward::Node {
        formula: "f32/f64 on a backend with fused kernels: grad_x = rstd (g - mean(g) - x̂ mean(g x̂)) with g = gy w, one fused pass per row; grad_w = Σ gy x̂, grad_b = Σ gy over the leading dims; otherwise composed",
    },
};

/// `F.rms_norm`.
pub const RMS_NORM: OpDescriptor = OpDescriptor {
    name: "rms_norm",
    forward: "Tensor::rms_norm",
    conformance: &["rms_norm"],
    shape_rule: "the input's shape",
    backward: OpBackward::Node {
        formula: "f32/f64 on a backend with fused kernels: grad_x = rstd (g - x̂ mean(g x̂)) with g = gy w and x̂ = x rstd, one fused pass per row; grad_w = Σ gy x̂; otherwise composed",
    },
};

/// `F.group_norm`.
pub const GROUP_NORM: OpDescriptor = OpDescriptor {
    name: "group_norm",
    forward: "Tensor::group_norm",
    conformance: &["group_norm"],
    shape_rule: "the input's shape",
    backward: OpBackward::Composed,
};

/// `F.instance_norm`.
pub const INSTANCE_NORM: OpDescriptor = OpDescriptor {
    name: "instance_norm",
    forward: "Tensor::instance_norm",
    conformance: &["instance_norm"],
    shape_rule: "the input's shape",
    backward: OpBackward::Composed,
};

/// `F.local_response_norm`.
pub const LOCAL_RESPONSE_NORM: OpDescriptor = OpDescriptor {
    name: "local_response_norm",
    forward: "Tensor::local_response_norm",
    conformance: &["local_response_norm"],
    shape_rule: "the input's shape",
    backward: OpBackward::Composed,
};

/// `F.normalize`.
pub const NORMALIZE: OpDescriptor = OpDescriptor {
    name: "normalize",
    forward: "Tensor::normalize",
    conformance: &["normalize"],
    shape_rule: "the input's shape",
    backward: OpBackward::Composed,
};

/// `F.cosine_similarity`.
pub const COSINE_SIMILARITY: OpDescriptor = OpDescriptor {
    name: "cosine_similarity",
    forward: "Tensor::cosine_similarity",
    conformance: &["cosine_similarity"],
    shape_rule: "the broadcast shape without dim",
    backward: OpBackward::Composed,
};

/// `F.pairwise_distance`.
pub const PAIRWISE_DISTANCE: OpDescriptor = OpDescriptor {
    name: "pairwise_distance",
    forward: "Tensor::pairwise_distance",
    conformance: &["pairwise_distance"],
    shape_rule: "the broadcast shape without the last dim (kept with keepdim)",
    backward: OpBackward::Composed,
};

pub(super) fn affine(y: Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Tensor> {
    let y = match weight {
        Some(w) => y.mul(w)?,
        None => y,
    };
    match bias {
        Some(b) => y.add(b),
        None => Ok(y),
    }
}

/// Reshapes a per-channel vector to broadcast over `[N, C, ...]` of rank `nd`.
pub(super) fn per_channel(v: &Tensor, nd: usize) -> Result<Tensor> {
    let mut s = vec![1isize; nd];
    if nd > 1 {
        s[1] = -1;
    } else {
        s[0] = -1;
    }
    v.reshape(&s)
}

impl Tensor {
    /// Layer norm over the trailing `normalized_shape` dims (biased variance).
    pub fn layer_norm(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let k = normalized_shape.len();
        if k > self.ndim() || self.shape()[self.ndim() - k..] != *normalized_shape {
            return Err(Error::shape(
                "layer_norm",
                format!("normalized_shape {normalized_shape:?} does not match the end of {:?}", self.shape()),
            ));
        }
        let mut ts = vec![self];
        ts.extend(weight);
        ts.extend(bias);
        let (hw, hb) = (weight.is_some(), bias.is_some());
        let y = crate::autocast::autocast_op("layer_norm", &ts, |t| {
            t[0].layer_norm(normalized_shape, hw.then(|| &t[1]), hb.then(|| &t[1 + usize::from(hw)]), eps)
        })?;
        if let Some(y) = y {
            return Ok(y);
        }
        let low = matches!(self.dtype(), DType::F16 | DType::BF16);
        if low && ts[1..].iter().any(|p| p.dtype() == DType::F32) {
            // f16/bf16 input with f32 parameters (as under autocast): computed in f32 and returned in
            // the input's dtype, as PyTorch's mixed-dtype layer norm
            return self.to_dtype(DType::F32)?.layer_norm(normalized_shape, weight, bias, eps)?.to_dtype(self.dtype());
        }
        if let Some(y) = self.norm_fused(normalized_shape, weight, bias, eps, false)? {
            return Ok(y);
        }
        let (x, back) = self.upcast_low_precision()?;
        let dims: Vec<isize> = (0..k).map(|i| -(i as isize) - 1).collect();
        let mean = x.mean_dim(&dims, true)?;
        let xc = x.sub(&mean)?;
        let var = xc.mul(&xc)?.mean_dim(&dims, true)?;
        let y = xc.mul(&var.add(eps)?.rsqrt()?)?;
        let y = y.to_dtype(back)?;
        affine(y, weight, bias)
    }

    /// RMS norm over the trailing dims (`eps` defaults to the dtype's machine epsilon, as PyTorch).
    pub fn rms_norm(&self, normalized_shape: &[usize], weight: Option<&Tensor>, eps: Option<f64>) -> Result<Tensor> {
        let k = normalized_shape.len();
        if k > self.ndim() || self.shape()[self.ndim() - k..] != *normalized_shape {
            return Err(Error::shape(
                "rms_norm",
                format!("normalized_shape {normalized_shape:?} does not match the end of {:?}", self.shape()),
            ));
        }
        let eps = eps.unwrap_or(match self.dtype() {
            DType::F64 => f64::EPSILON,
            DType::F16 => 0.000_976_562_5,
            DType::BF16 => 0.007_812_5,
            _ => f32::EPSILON as f64,
        });
        if let Some(y) = self.norm_fused(normalized_shape, weight, None, eps, true)? {
            return Ok(y);
        }
        let (x, back) = self.upcast_low_precision()?;
        let dims: Vec<isize> = (0..k).map(|i| -(i as isize) - 1).collect();
        let y = x.mul(&x.mul(&x)?.mean_dim(&dims, true)?.add(eps)?.rsqrt()?)?.to_dtype(back)?;
        affine(y, weight, None)
    }

    /// Group norm: channels split into `groups`, each normalised over its channels and spatial dims.
    pub fn group_norm(
        &self,
        groups: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        if self.ndim() < 2 || groups == 0 || !self.shape()[1].is_multiple_of(groups) {
            return Err(Error::shape(
                "group_norm",
                format!("channels of {:?} must be divisible by num_groups={groups}", self.shape()),
            ));
        }
        let n = self.shape()[0] as isize;
        let (x, back) = self.upcast_low_precision()?;
        let g = x.reshape([n, groups as isize, -1])?;
        let mean = g.mean_dim([-1], true)?;
        let gc = g.sub(&mean)?;
        let var = gc.mul(&gc)?.mean_dim([-1], true)?;
        let shape: Vec<isize> = self.shape().iter().map(|&s| s as isize).collect();
        let y = gc.mul(&var.add(eps)?.rsqrt()?)?.reshape(&shape)?.to_dtype(back)?;
        let nd = self.ndim();
        affine(
            y,
            weight.map(|w| per_channel(w, nd)).transpose()?.as_ref(),
            bias.map(|b| per_channel(b, nd)).transpose()?.as_ref(),
        )
    }

    /// Instance norm: each (sample, channel) normalised over its spatial dims.
    pub fn instance_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        if self.ndim() < 3 {
            return Err(Error::shape("instance_norm", format!("expects [N, C, ...], got {:?}", self.shape())));
        }
        let dims: Vec<isize> = (2..self.ndim() as isize).collect();
        let (x, back) = self.upcast_low_precision()?;
        let mean = x.mean_dim(&dims, true)?;
        let xc = x.sub(&mean)?;
        let var = xc.mul(&xc)?.mean_dim(&dims, true)?;
        let y = xc.mul(&var.add(eps)?.rsqrt()?)?.to_dtype(back)?;
        let nd = self.ndim();
        affine(
            y,
            weight.map(|w| per_channel(w, nd)).transpose()?.as_ref(),
            bias.map(|b| per_channel(b, nd)).transpose()?.as_ref(),
        )
    }

    /// Local response norm across channels.
    pub fn local_response_norm(&self, size: usize, alpha: f64, beta: f64, k: f64) -> Result<Tensor> {
        if self.ndim() < 3 || size == 0 {
            return Err(Error::shape(
                "local_response_norm",
                format!("expects [N, C, ...] and size > 0, got {:?}", self.shape()),
            ));
        }
        let sq = self.mul(self)?;
        // pad channels (size/2 before, (size-1)/2 after), then average windows of `size` along channels
        let c = self.shape()[1];
        let mut pad = vec![0isize; 2 * (self.ndim() - 2)];
        pad.extend([(size / 2) as isize, ((size - 1) / 2) as isize]);
        let padded = sq.pad(&pad, crate::PadMode::Constant, 0.0)?;
        let win = padded.unfold(1, size, 1)?.mean_dim([-1], false)?.narrow(1, 0, c)?;
        self.div(&win.mul(alpha)?.add(k)?.pow(beta)?)
    }

    /// `x / max(||x||_p, eps)` along `dim`.
    pub fn normalize(&self, p: f64, dim: impl crate::Dim, eps: f64) -> Result<Tensor> {
        let dim = dim.to_isize();
        self.div(&self.vector_norm(p, [dim], true)?.clamp(Some(eps), None)?.expand_as(self)?)
    }

    /// Cosine similarity along `dim`.
    pub fn cosine_similarity(&self, other: &Tensor, dim: impl crate::Dim, eps: f64) -> Result<Tensor> {
        let dim = dim.to_isize();
        let shape = ember_storage::shape::broadcast_shapes(self.shape(), other.shape(), "cosine_similarity")?;
        let (a, b) = (self.broadcast_to(&shape)?, other.broadcast_to(&shape)?);
        let na = a.vector_norm(2.0, [dim], true)?.clamp(Some(eps), None)?;
        let nb = b.vector_norm(2.0, [dim], true)?.clamp(Some(eps), None)?;
        a.div(&na)?.mul(&b.div(&nb)?)?.sum_dim([dim], false)
    }

    /// `||x1 - x2 + eps||_p` along the last dim.
    pub fn pairwise_distance(&self, other: &Tensor, p: f64, eps: f64, keepdim: bool) -> Result<Tensor> {
        self.sub(other)?.add(eps)?.vector_norm(p, [-1], keepdim)
    }
}

impl Tensor {
    /// Layer norm (RMS norm with `rms`) by the backend's fused kernels, or `None` when this input
    /// or backend needs the composed path (dtypes other than f32/f64, a backend without the
    /// kernels, empty inputs, parameters of another dtype, device or shape).
    fn norm_fused(
        &self,
        normalized_shape: &[usize],
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f64,
        rms: bool,
    ) -> Result<Option<Tensor>> {
        let dt = self.dtype();
        let k: usize = normalized_shape.iter().product();
        let params_fit = [weight, bias]
            .into_iter()
            .flatten()
            .all(|p| p.dtype() == dt && p.device() == self.device() && p.shape() == normalized_shape);
        if !matches!(dt, DType::F32 | DType::F64) || self.numel() == 0 || k == 0 || !params_fit {
            return Ok(None);
        }
        let Some(fused) = self.fused() else { return Ok(None) };
        let rows = self.numel() / k;
        let flat = |t: &Tensor, shape: &[usize]| -> Result<Tensor> {
            let s: Vec<isize> = shape.iter().map(|&v| v as isize).collect();
            t.detach().reshape(&s)
        };
        let x2 = flat(self, &[rows, k])?;
        let (w1, b1) = (weight.map(|w| flat(w, &[k])).transpose()?, bias.map(|b| flat(b, &[k])).transpose()?);
        let (y, mean, rstd) =
            fused.layer_norm(x2.v(), w1.as_ref().map(|w| w.v()), b1.as_ref().map(|b| b.v()), eps, rms)?;
        let y = self.same_backend(y, self.shape());
        let (mean, rstd) = (self.same_backend(mean, &[rows]), self.same_backend(rstd, &[rows]));
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let mut saved = vec![self];
        saved.extend(weight);
        let (x, w, has_bias, shape) = (self.clone(), weight.cloned(), bias.is_some(), normalized_shape.to_vec());
        Ok(Some(crate::graph::record_saving(
            y,
            if rms { "rms_norm" } else { "layer_norm" },
            &inputs,
            &saved,
            move |g| {
                let (dx, dw, db) = if crate::is_grad_enabled() {
                    norm_backward_composed(&x, w.as_ref(), g, &shape, eps, rms)?
                } else {
                    norm_backward_fused(&x, w.as_ref(), g, &mean, &rstd, &shape, rms)?
                };
                let mut grads = crate::graph::Grads::new();
                grads.push(Some(dx));
                if w.is_some() {
                    grads.push(Some(dw));
                }
                if has_bias {
                    grads.push(Some(db));
                }
                Ok(grads)
            },
        )))
    }
}

/// `(dx, dweight, dbias)` of layer/RMS norm by the backend's fused input gradient; the parameters'
/// gradients are sums over the leading dims (`[R, K]` rows).
fn norm_backward_fused(
    x: &Tensor,
    weight: Option<&Tensor>,
    g: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    normalized_shape: &[usize],
    rms: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let rows = mean.shape()[0] as isize;
    let x2 = x.detach().reshape([rows, -1])?;
    let g2 = g.reshape([rows, -1])?;
    let w1 = weight.map(|w| w.detach().reshape([-1])).transpose()?;
    let dx = x.fused_for("layer_norm backward")?.layer_norm_backward(
        g2.v(),
        x2.v(),
        mean.v(),
        rstd.v(),
        w1.as_ref().map(|w| w.v()),
        rms,
    )?;
    let dx = x.same_backend(dx, x.shape());
    let pshape: Vec<isize> = normalized_shape.iter().map(|&v| v as isize).collect();
    let dw = match weight {
        Some(_) => {
            let xhat = x2.sub(&mean.reshape([rows, 1])?)?.mul(&rstd.reshape([rows, 1])?)?;
            g2.mul(&xhat)?.sum_dim([0], false)?.reshape(&pshape)?
        }
        None => dx.clone(),
    };
    let db = g2.sum_dim([0], false)?.reshape(&pshape)?;
    Ok((dx, dw, db))
}

/// `(dx, dweight, dbias)` of layer/RMS norm from differentiable ops, for backward passes that are
/// themselves recorded (`create_graph`): the statistics are recomputed from `x`, so second
/// derivatives see their dependence on it.
fn norm_backward_composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    g: &Tensor,
    normalized_shape: &[usize],
    eps: f64,
    rms: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let k = normalized_shape.len();
    let dims: Vec<isize> = (0..k).map(|i| -(i as isize) - 1).collect();
    let lead: Vec<isize> = (0..(x.ndim() - k) as isize).collect();
    let xc = if rms { x.clone() } else { x.sub(&x.mean_dim(&dims, true)?)? };
    let rstd = xc.mul(&xc)?.mean_dim(&dims, true)?.add(eps)?.rsqrt()?;
    let xhat = xc.mul(&rstd)?;
    let gw = match weight {
        Some(w) => g.mul(w)?,
        None => g.clone(),
    };
    let mut inner = gw.sub(&xhat.mul(&gw.mul(&xhat)?.mean_dim(&dims, true)?)?)?;
    if !rms {
        inner = inner.sub(&gw.mean_dim(&dims, true)?)?;
    }
    let dx = rstd.mul(&inner)?;
    let sum_lead = |t: &Tensor| if lead.is_empty() { Ok(t.clone()) } else { t.sum_dim(&lead, false) };
    Ok((dx, sum_lead(&g.mul(&xhat)?)?, sum_lead(g)?))
}
