//! Batch norm through the backend's fused kernels (statistics, backward reductions, per-channel
//! affine): two passes over the input forward and two backward, instead of the nine or so a
//! composition of broadcasting ops takes. Used for f32/f64 when the backend has the kernels;
//! otherwise [`Tensor::batch_norm`] composes the same maths from reductions and broadcasts.

use super::norm::{affine, per_channel};
use crate::graph::{is_grad_enabled, no_grad, Grads};
use crate::Tensor;
use ember_storage::{DType, Error, Result};

use super::descriptor::{OpBackward, OpDescriptor};
/// `F.batch_norm`.
pub const BATCH_NORM: OpDescriptor = OpDescriptor {
    name: "batch_norm",
    forward: "Tensor::batch_norm",
    conformance: &["batch_norm"],
    shape_rule: "the input's shape; weight, bias and running statistics [C]",
    backward: OpBackward::Node {
        formula: "f32/f64 in training on a backend with fused kernels: grad_x = w invstd (gy - mean(gy) - x̂ mean(gy x̂)), grad_w = Σ gy x̂, grad_b = Σ gy, by two fused reductions; otherwise composed",
    },
};

/// The per-channel operands `(scale, shift)` with `y = x * scale + shift`.
fn scale_shift(
    mean: &Tensor,
    invstd: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let scale = match weight {
        Some(w) => w.mul(invstd)?,
        None => invstd.clone(),
    };
    let shift = mean.mul(&scale)?.neg()?;
    let shift = match bias {
        Some(b) => shift.add(b)?,
        None => shift,
    };
    Ok((scale, shift))
}

/// The arguments of [`Tensor::batch_norm`], as it passes them on.
pub(crate) struct BatchNormArgs<'a> {
    pub(crate) running_mean: Option<&'a Tensor>,
    pub(crate) running_var: Option<&'a Tensor>,
    pub(crate) weight: Option<&'a Tensor>,
    pub(crate) bias: Option<&'a Tensor>,
    pub(crate) training: bool,
    pub(crate) momentum: f64,
    pub(crate) eps: f64,
}

impl Tensor {
    /// Batch norm over `[N, C, ...]`. In training mode it uses the batch statistics and, when running
    /// statistics are given, updates them in place (`(1 - momentum) * old + momentum * new`, unbiased
    /// variance); in eval mode it uses the running statistics.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm(
        &self,
        running_mean: Option<&Tensor>,
        running_var: Option<&Tensor>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        momentum: f64,
        eps: f64,
    ) -> Result<Tensor> {
        if self.ndim() < 2 {
            return Err(Error::shape("batch_norm", format!("expects [N, C, ...], got {:?}", self.shape())));
        }
        let args = BatchNormArgs { running_mean, running_var, weight, bias, training, momentum, eps };
        if let Some(y) = self.batch_norm_fused(args)? {
            return Ok(y);
        }
        let nd = self.ndim();
        let dims: Vec<isize> = (0..nd as isize).filter(|&d| d != 1).collect();
        let (x, back) = self.upcast_low_precision()?;
        let (mean, var) = if training {
            let count = self.numel() / self.shape()[1];
            if count <= 1 {
                return Err(Error::invalid(
                    "batch_norm",
                    format!("expected more than 1 value per channel when training, got input {:?}", self.shape()),
                ));
            }
            let mean = x.mean_dim(&dims, true)?;
            let xc = x.sub(&mean)?;
            let var = xc.mul(&xc)?.mean_dim(&dims, true)?;
            if let (Some(rm), Some(rv)) = (running_mean, running_var) {
                update_running_stats(rm, rv, &mean.reshape([-1])?, &var.reshape([-1])?, count, momentum)?;
            }
            (mean, var)
        } else {
            match (running_mean, running_var) {
                (Some(rm), Some(rv)) => {
                    (per_channel(rm, nd)?.to_dtype(x.dtype())?, per_channel(rv, nd)?.to_dtype(x.dtype())?)
                }
                _ => return Err(Error::invalid("batch_norm", "eval mode needs running_mean and running_var")),
            }
        };
        let y = x.sub(&mean)?.mul(&var.add(eps)?.rsqrt()?)?.to_dtype(back)?;
        affine(
            y,
            weight.map(|w| per_channel(w, nd)).transpose()?.as_ref(),
            bias.map(|b| per_channel(b, nd)).transpose()?.as_ref(),
        )
    }

    /// `x * a[c] + k[c]` or `x * a[c] + y * b[c] + k[c]` over dim 1, by the backend's kernel.
    fn channel_affine(&self, a: &Tensor, y: Option<(&Tensor, &Tensor)>, k: &Tensor) -> Result<Option<Tensor>> {
        let yv = y.map(|(y, b)| (y.v(), b.v()));
        let Some(fused) = self.fused() else {
            return Ok(None);
        };
        Ok(Some(self.same_backend(fused.channel_affine(self.v(), a.v(), yv, k.v())?, self.shape())))
    }

    /// Batch norm by fused kernels, or `None` when this input or backend needs the composed path
    /// (other dtypes, a backend without the kernels, eval mode under autograd, arguments the
    /// composed path reports errors for).
    pub(crate) fn batch_norm_fused(&self, args: BatchNormArgs) -> Result<Option<Tensor>> {
        let BatchNormArgs { running_mean, running_var, weight, bias, training, momentum, eps } = args;
        let dt = self.dtype();
        if !matches!(dt, DType::F32 | DType::F64) || self.ndim() < 2 {
            return Ok(None);
        }
        let c = self.shape()[1];
        let count = self.numel() / c.max(1);
        let params_fit = [weight, bias, running_mean, running_var]
            .into_iter()
            .flatten()
            .all(|p| p.shape() == [c] && p.device() == self.device());
        let affine_fit = [weight, bias].into_iter().flatten().all(|p| p.dtype() == dt);
        if !params_fit || !affine_fit || (training && count <= 1) {
            return Ok(None);
        }
        let needs_grad = is_grad_enabled()
            && (self.requires_grad() || [weight, bias].into_iter().flatten().any(|p| p.requires_grad()));
        if !training && needs_grad {
            return Ok(None);
        }
        let stats = if training {
            let Some(fused) = self.fused() else { return Ok(None) };
            let (m, v) = fused.batch_norm_stats(self.v())?;
            (self.same_backend(m, &[c]), self.same_backend(v, &[c]))
        } else {
            match (running_mean, running_var) {
                (Some(rm), Some(rv)) => (rm.detach().to_dtype(dt)?, rv.detach().to_dtype(dt)?),
                _ => return Ok(None),
            }
        };
        let (mean, var) = stats;
        let (y, invstd) = no_grad(|| -> Result<Option<(Tensor, Tensor)>> {
            let invstd = var.add(eps)?.rsqrt()?;
            let (scale, shift) = scale_shift(&mean, &invstd, weight, bias)?;
            Ok(self.channel_affine(&scale, None, &shift)?.map(|y| (y, invstd)))
        })?
        .map_or((None, None), |(y, i)| (Some(y), Some(i)));
        let (Some(y), Some(invstd)) = (y, invstd) else { return Ok(None) };
        if training {
            if let (Some(rm), Some(rv)) = (running_mean, running_var) {
                update_running_stats(rm, rv, &mean, &var, count, momentum)?;
            }
        }
        if !needs_grad {
            return Ok(Some(y));
        }
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        let mut saved = vec![self];
        saved.extend(weight);
        let (x, w, has_bias) = (self.clone(), weight.cloned(), bias.is_some());
        Ok(Some(crate::graph::record_saving(y, "batch_norm", &inputs, &saved, move |g| {
            let (dx, dw, db) = if is_grad_enabled() {
                batch_norm_backward_composed(&x, w.as_ref(), g, eps)?
            } else {
                batch_norm_backward_fused(&x, w.as_ref(), g, &mean, &invstd, count)?
            };
            let mut grads = Grads::new();
            grads.push(Some(dx));
            if w.is_some() {
                grads.push(Some(dw));
            }
            if has_bias {
                grads.push(Some(db));
            }
            Ok(grads)
        })))
    }
}

/// `(dx, dweight, dbias)` by the backend's kernels: one reduction pass and one affine pass.
fn batch_norm_backward_fused(
    x: &Tensor,
    weight: Option<&Tensor>,
    g: &Tensor,
    mean: &Tensor,
    invstd: &Tensor,
    count: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = mean.shape()[0];
    let (sg, sgx) = x.fused_for("batch_norm backward")?.batch_norm_backward_reduce(g.v(), x.v(), mean.v())?;
    let (sum_g, sum_gx) = (x.same_backend(sg, &[c]), x.same_backend(sgx, &[c]));
    let m = count as f64;
    // dx = k * (g - sum_g / m - xhat * sum(g * xhat) / m), k = weight * invstd, xhat = (x - mean) * invstd,
    // regrouped as g * k + x * b + d with per-channel b and d
    let k = match weight {
        Some(w) => w.mul(invstd)?,
        None => invstd.clone(),
    };
    let b = k.mul(&invstd.mul(invstd)?)?.mul(&sum_gx)?.mul(-1.0 / m)?;
    let d = k.mul(&sum_g)?.mul(-1.0 / m)?.sub(&mean.mul(&b)?)?;
    let dx = g
        .channel_affine(&k, Some((x, &b)), &d)?
        .ok_or_else(|| Error::unsupported("batch_norm", "the backend lost its channel_affine kernel"))?;
    Ok((dx, sum_gx.mul(invstd)?, sum_g))
}

/// `(dx, dweight, dbias)` from differentiable ops, for backward passes that are themselves
/// recorded (`create_graph`): the statistics are recomputed from `x`, so second derivatives see
/// their dependence on it.
fn batch_norm_backward_composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    g: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let nd = x.ndim();
    let dims: Vec<isize> = (0..nd as isize).filter(|&d| d != 1).collect();
    let m = (x.numel() / x.shape()[1]) as f64;
    let mean = x.mean_dim(&dims, true)?;
    let xc = x.sub(&mean)?;
    let invstd = xc.mul(&xc)?.mean_dim(&dims, true)?.add(eps)?.rsqrt()?;
    let xhat = xc.mul(&invstd)?;
    let sum_g = g.sum_dim(&dims, true)?;
    let sum_gxhat = g.mul(&xhat)?.sum_dim(&dims, true)?;
    let mut bshape = vec![1isize; nd];
    bshape[1] = -1;
    let k = match weight {
        Some(w) => w.reshape(&bshape)?.mul(&invstd)?,
        None => invstd,
    };
    let inner = g.sub(&sum_g.mul(1.0 / m)?)?.sub(&xhat.mul(&sum_gxhat.mul(1.0 / m)?)?)?;
    Ok((k.mul(&inner)?, sum_gxhat.reshape([-1])?, sum_g.reshape([-1])?))
}

/// `running = (1 - momentum) * running + momentum * batch`, with the unbiased batch variance
/// (`count` values per channel); `mean` and `var` are `[C]`.
pub(crate) fn update_running_stats(
    rm: &Tensor,
    rv: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    count: usize,
    momentum: f64,
) -> Result<()> {
    crate::graph::no_grad(|| {
        let unbiased = var.mul(count as f64 / (count - 1) as f64)?;
        rm.copy_(&rm.mul(1.0 - momentum)?.add(&mean.mul(momentum)?)?)?;
        rv.copy_(&rv.mul(1.0 - momentum)?.add(&unbiased.mul(momentum)?)?)?;
        Ok(())
    })
}
