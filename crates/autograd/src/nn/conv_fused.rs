//! 2-d convolution (without groups) through the backend's per-sample fused kernels, as one graph
//! node: no batch-wide patch tensor is built forward or kept for backward. Backends without the
//! kernels, and backward passes that record a graph (`create_graph`), use the composition of
//! `im2col` and `matmul` instead, so higher-order gradients stay available.

use crate::graph::{is_grad_enabled, record_saving, Grads};
use crate::Tensor;
use ember_storage::{DType, Result, WindowGeometry};

impl Tensor {
    /// `[N, OC, L]` output of a 2-d convolution of `self` (`[N, C, H, W]`, already padded by
    /// anything beyond the geometry's symmetric padding) with `weight` `[OC, C, kh, kw]`, or `None`
    /// when the backend has no fused kernel for these operands.
    pub(crate) fn conv2d_fused(&self, weight: &Tensor, geom: &WindowGeometry) -> Result<Option<Tensor>> {
        if self.dtype() != weight.dtype() || self.device() != weight.device() || geom.input.len() != 2 {
            return Ok(None);
        }
        let (n, cout) = (self.shape()[0], weight.shape()[0]);
        let ck = geom.channels * geom.kernel_numel();
        let w2 = weight.reshape([cout as isize, ck as isize])?;
        let Some(fused) = self.fused().filter(|_| matches!(self.dtype(), DType::F32 | DType::F64)) else {
            return Ok(None);
        };
        let buf = fused.conv2d(self.v(), w2.v(), geom)?;
        let l: usize = geom.output().expect("the caller checked the geometry").iter().product();
        let y = self.same_backend(buf, &[n, cout, l]);
        let (x, w, g) = (self.clone(), weight.clone(), geom.clone());
        Ok(Some(record_saving(y, "conv2d", &[self, weight], &[self, weight], move |gy| {
            if is_grad_enabled() {
                composed_backward(&x, &w, &g, gy)
            } else {
                fused_backward(&x, &w, &g, gy)
            }
        })))
    }
}

/// Gradients of `(x, weight)` by the backend's fused backward.
fn fused_backward(x: &Tensor, w: &Tensor, g: &WindowGeometry, gy: &Tensor) -> Result<Grads> {
    let w2 = w.reshape([w.shape()[0] as isize, -1])?;
    let need = (x.requires_grad(), w.requires_grad());
    let (dx, dw) = x.fused_for("conv2d backward")?.conv2d_backward(x.v(), w2.v(), gy.v(), g, need)?;
    let dx = dx.map(|b| x.same_backend(b, x.shape()));
    let dw = dw.map(|b| w.same_backend(b, w.shape()));
    Ok(smallvec::smallvec![dx, dw])
}

/// The same gradients composed from recorded ops on the (attached) inputs.
fn composed_backward(x: &Tensor, w: &Tensor, g: &WindowGeometry, gy: &Tensor) -> Result<Grads> {
    let (k, st, p, dl) = (&g.kernel, &g.stride, &g.padding, &g.dilation);
    let w2 = w.reshape([w.shape()[0] as isize, -1])?;
    let cols = x.im2col(k, st, p, dl, 0.0)?;
    let dw = gy
        .matmul(&cols.mt()?)?
        .sum_dim([0], false)?
        .reshape(w.shape().iter().map(|&s| s as isize).collect::<Vec<_>>())?;
    let dx = w2.t()?.matmul(gy)?.col2im(&g.input, k, st, p, dl)?;
    Ok(smallvec::smallvec![Some(dx), Some(dw)])
}
