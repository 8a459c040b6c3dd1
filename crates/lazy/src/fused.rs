//! The lazy backend's fused kernels: each evaluates its inputs and runs the inner backend's kernel
//! (its results are ready). The in-place optimizer steps first evaluate every pending value that
//! reads the buffers they overwrite.

use crate::backend::LazyBackend;
use crate::log::EAGER_OPS;
use crate::schedule::before_write;
use ember_storage::{
    AdamStep, Buffer, ElementwiseProgram, FusedKernels, Layout, Result, SgdStep, View, WindowGeometry,
};
use std::sync::atomic::Ordering;

impl LazyBackend {
    fn kernels(&self) -> &dyn FusedKernels {
        // `LazyBackend::fused` returns `Some(self)` only when the inner backend has fused kernels
        self.inner().fused().expect("the lazy backend offers fused kernels only when its inner backend does")
    }

    fn opt<'a>(&self, x: Option<View<'a>>, why: &str) -> Result<Option<(Buffer, &'a Layout)>> {
        x.map(|v| self.eager(v, why)).transpose()
    }
}

fn view<'a>(x: &'a (Buffer, &'a Layout)) -> View<'a> {
    (&x.0, x.1)
}

fn view_opt<'a>(x: &'a Option<(Buffer, &'a Layout)>) -> Option<View<'a>> {
    x.as_ref().map(view)
}

impl FusedKernels for LazyBackend {
    fn max_pool2d(&self, x: View, geom: &WindowGeometry) -> Result<(Buffer, Buffer)> {
        let x = self.eager(x, "max_pool2d")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (v, i) = self.kernels().max_pool2d(view(&x), geom)?;
        Ok((self.wrap(v), self.wrap(i)))
    }

    fn batch_norm_stats(&self, x: View) -> Result<(Buffer, Buffer)> {
        let x = self.eager(x, "batch_norm")?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (m, v) = self.kernels().batch_norm_stats(view(&x))?;
        Ok((self.wrap(m), self.wrap(v)))
    }

    fn batch_norm_backward_reduce(&self, g: View, x: View, mean: View) -> Result<(Buffer, Buffer)> {
        let (g, x, m) = (self.eager(g, "batch_norm")?, self.eager(x, "batch_norm")?, self.eager(mean, "batch_norm")?);
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (a, b) = self.kernels().batch_norm_backward_reduce(view(&g), view(&x), view(&m))?;
        Ok((self.wrap(a), self.wrap(b)))
    }

    fn channel_affine(&self, x: View, a: View, y: Option<(View, View)>, k: View) -> Result<Buffer> {
        let (x, a, k) = (self.eager(x, "batch_norm")?, self.eager(a, "batch_norm")?, self.eager(k, "batch_norm")?);
        let y = match y {
            Some((p, q)) => Some((self.eager(p, "batch_norm")?, self.eager(q, "batch_norm")?)),
            None => None,
        };
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let yv = y.as_ref().map(|(p, q)| (view(p), view(q)));
        Ok(self.wrap(self.kernels().channel_affine(view(&x), view(&a), yv, view(&k))?))
    }

    fn layer_norm(
        &self,
        x: View,
        weight: Option<View>,
        bias: Option<View>,
        eps: f64,
        rms: bool,
    ) -> Result<(Buffer, Buffer, Buffer)> {
        let x = self.eager(x, "layer_norm")?;
        let (w, b) = (self.opt(weight, "layer_norm")?, self.opt(bias, "layer_norm")?);
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (y, m, r) = self.kernels().layer_norm(view(&x), view_opt(&w), view_opt(&b), eps, rms)?;
        Ok((self.wrap(y), self.wrap(m), self.wrap(r)))
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
        let why = "layer_norm_backward";
        let (g, x, m, r) = (self.eager(gy, why)?, self.eager(x, why)?, self.eager(mean, why)?, self.eager(rstd, why)?);
        let w = self.opt(weight, why)?;
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let out = self.kernels().layer_norm_backward(view(&g), view(&x), view(&m), view(&r), view_opt(&w), rms)?;
        Ok(self.wrap(out))
    }

    fn conv2d(&self, x: View, w: View, geom: &WindowGeometry) -> Result<Buffer> {
        let (x, w) = (self.eager(x, "conv2d")?, self.eager(w, "conv2d")?);
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        Ok(self.wrap(self.kernels().conv2d(view(&x), view(&w), geom)?))
    }

    fn conv2d_backward(
        &self,
        x: View,
        w: View,
        gy: View,
        geom: &WindowGeometry,
        need: (bool, bool),
    ) -> Result<(Option<Buffer>, Option<Buffer>)> {
        let why = "conv2d_backward";
        let (x, w, g) = (self.eager(x, why)?, self.eager(w, why)?, self.eager(gy, why)?);
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (gx, gw) = self.kernels().conv2d_backward(view(&x), view(&w), view(&g), geom, need)?;
        Ok((gx.map(|b| self.wrap(b)), gw.map(|b| self.wrap(b))))
    }

    fn lstm_sequence(&self, gi: View, h0: View, c0: View, w_hh: View, reverse: bool) -> Result<(Buffer, Buffer)> {
        let why = "lstm";
        let (gi, h, c, w) = (self.eager(gi, why)?, self.eager(h0, why)?, self.eager(c0, why)?, self.eager(w_hh, why)?);
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (y, gates) = self.kernels().lstm_sequence(view(&gi), view(&h), view(&c), view(&w), reverse)?;
        Ok((self.wrap(y), self.wrap(gates)))
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
        let why = "lstm_backward";
        let (ga, y, c, w, g) = (
            self.eager(gates, why)?,
            self.eager(y, why)?,
            self.eager(c0, why)?,
            self.eager(w_hh, why)?,
            self.eager(gy, why)?,
        );
        EAGER_OPS.fetch_add(1, Ordering::Relaxed);
        let (a, b, c) =
            self.kernels().lstm_sequence_backward(view(&ga), view(&y), view(&c), view(&w), view(&g), reverse)?;
        Ok((self.wrap(a), self.wrap(b), self.wrap(c)))
    }

    fn sgd_step(&self, param: View, grad: View, momentum_buffer: Option<View>, s: &SgdStep) -> Result<()> {
        let why = "sgd_step";
        let (p, g, m) = (self.eager(param, why)?, self.eager(grad, why)?, self.opt(momentum_buffer, why)?);
        before_write(&p.0, why)?;
        if let Some(m) = &m {
            before_write(&m.0, why)?;
        }
        self.kernels().sgd_step(view(&p), view(&g), view_opt(&m), s)
    }

    fn adam_step(&self, param: View, grad: View, exp_avg: View, exp_avg_sq: View, s: &AdamStep) -> Result<()> {
        let why = "adam_step";
        let (p, g, m, v) =
            (self.eager(param, why)?, self.eager(grad, why)?, self.eager(exp_avg, why)?, self.eager(exp_avg_sq, why)?);
        for b in [&p.0, &m.0, &v.0] {
            before_write(b, why)?;
        }
        self.kernels().adam_step(view(&p), view(&g), view(&m), view(&v), s)
    }

    fn elementwise(&self, program: &ElementwiseProgram, inputs: &[View]) -> Result<Vec<Buffer>> {
        let ins = inputs.iter().map(|&x| self.eager(x, "elementwise program")).collect::<Result<Vec<_>>>()?;
        let views: Vec<View> = ins.iter().map(view).collect();
        let outs = self.kernels().elementwise(program, &views)?;
        Ok(outs.into_iter().map(|b| self.wrap(b)).collect())
    }
}
