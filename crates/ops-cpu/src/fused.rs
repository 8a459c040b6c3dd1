//! The CPU backend's fused kernels (DESIGN.md decision 12): per-sample convolution, max pooling,
//! batch norm, layer/RMS norm, LSTM and optimizer steps.

use crate::host::*;
use crate::strided::with_dense;
use crate::CpuBackend;

use crate::oom::guarded;
use crate::{conv, layer_norm, norm, optim_step, recurrent, window};
use ember_storage::{
    AdamStep, Buffer, ElementwiseProgram, Error, FusedKernels, HostData, Result, SgdStep, View, WindowGeometry,
};

/// The CPU backend's fused kernels: per-sample convolution, max pooling, batch norm and LSTM.
impl FusedKernels for CpuBackend {
    fn max_pool2d(&self, x: View, geom: &WindowGeometry) -> Result<(Buffer, Buffer)> {
        guarded("max_pool2d", || {
            let b = checked(x, "max_pool2d")?;
            if geom.input.len() != 2 || x.1.ndim() != 4 {
                return Err(Error::shape(
                    "max_pool2d",
                    format!("needs a 4-d input and a 2-d window, got {:?}", x.1.shape()),
                ));
            }
            let out_sp =
                geom.output().ok_or_else(|| Error::invalid("max_pool2d", format!("window {geom:?} does not fit")))?;
            let g = b.read();
            let (vals, idx) = match &*g {
                HostData::F32(v) => {
                    let (a, i) = with_dense(v, x.1, |d| window::max_pool2d(d, geom, &out_sp, |t: f32| t.is_nan()));
                    (HostData::F32(a), i)
                }
                HostData::F64(v) => {
                    let (a, i) = with_dense(v, x.1, |d| window::max_pool2d(d, geom, &out_sp, |t: f64| t.is_nan()));
                    (HostData::F64(a), i)
                }
                other => {
                    return Err(Error::dtype(
                        "max_pool2d",
                        format!("the fused kernel takes f32 or f64, got {}", other.dtype()),
                    ))
                }
            };
            Ok((buf(vals), buf(HostData::I64(idx))))
        })
    }

    fn batch_norm_stats(&self, x: View) -> Result<(Buffer, Buffer)> {
        guarded("batch_norm_stats", || norm::entry::batch_norm_stats(x))
    }

    fn batch_norm_backward_reduce(&self, g: View, x: View, mean: View) -> Result<(Buffer, Buffer)> {
        guarded("batch_norm_backward_reduce", || norm::entry::batch_norm_backward_reduce(g, x, mean))
    }

    fn channel_affine(&self, x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer> {
        guarded("channel_affine", || norm::entry::channel_affine(x, a, y, k))
    }

    fn layer_norm(
        &self,
        x: View,
        weight: Option<View>,
        bias: Option<View>,
        eps: f64,
        rms: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        guarded("layer_norm", || layer_norm::entry::layer_norm(x, weight, bias, eps, rms))
    }

    fn layer_norm_backward(
        &self,
        gy: View,
        x: View,
        mean: View,
        rstd: View,
        weight: Option<View>,
        rms: bool,
    ) -> Result<Buffer> {
        guarded("layer_norm_backward", || layer_norm::entry::layer_norm_backward(gy, x, mean, rstd, weight, rms))
    }

    fn conv2d(&self, x: View, w: View, geom: &WindowGeometry) -> Result<Buffer> {
        guarded("conv2d", || conv::entry::conv2d(x, w, geom))
    }

    fn conv2d_backward(
        &self,
        x: View,
        w: View,
        gy: View,
        geom: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        guarded("conv2d_backward", || conv::entry::conv2d_backward(x, w, gy, geom, need))
    }

    fn lstm_sequence(&self, gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)> {
        guarded("lstm_sequence", || recurrent::entry::lstm_sequence(gi, h0, c0, w_hh, reverse))
    }

    fn lstm_sequence_backward(
        &self,
        gates: View,
        y: View,
        c0: View,
        w_hh: View,
        gy: View,
        reverse: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        guarded("lstm_sequence_backward", || recurrent::entry::lstm_sequence_backward(gates, y, c0, w_hh, gy, reverse))
    }

    fn sgd_step(&self, param: View, grad: View, momentum_buffer: Option<View>, s: &SgdStep) -> Result<()> {
        guarded("sgd_step", || optim_step::sgd(param, grad, momentum_buffer, s))
    }

    fn adam_step(&self, param: View, grad: View, exp_avg: View, exp_avg_sq: View, s: &AdamStep) -> Result<()> {
        guarded("adam_step", || optim_step::adam(param, grad, exp_avg, exp_avg_sq, s))
    }

    fn elementwise(&self, program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>> {
        guarded("elementwise program", || crate::program::run(program, inputs))
    }
}
