//! Composite elementwise ops and activations, written with Tensor ops (so they differentiate for free).

use crate::creation::DEFAULT_FLOAT;
use crate::elementwise::Rhs;
use crate::Tensor;
use ember_storage::{Error, Result, Scalar, UnaryOp};

impl Tensor {
    fn float(&self) -> Result<Tensor> {
        if self.dtype().is_float() {
            Ok(self.clone())
        } else {
            self.to_dtype(DEFAULT_FLOAT)
        }
    }

    /// `max(self, min)` elementwise (`clamp_min`).
    pub fn clamp_min(&self, min: f64) -> Result<Tensor> {
        self.clamp(Some(min), None)
    }

    /// `min(self, max)` elementwise (`clamp_max`).
    pub fn clamp_max(&self, max: f64) -> Result<Tensor> {
        self.clamp(None, Some(max))
    }

    /// Limits values to `[min, max]` (either bound optional; NaN propagates).
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> Result<Tensor> {
        let lo = min.map(|v| self.scalar_like(Scalar::F(v), self.dtype())).transpose()?;
        let hi = max.map(|v| self.scalar_like(Scalar::F(v), self.dtype())).transpose()?;
        self.clamp_tensor(lo.as_ref(), hi.as_ref())
    }
    /// Clamps with tensor bounds. As PyTorch: NaN passes through, a bound above `max` gives `max`,
    /// and the gradient goes to `self` wherever it lies within the bounds, the boundaries included
    /// (to a bound where it was taken).
    pub fn clamp_tensor(&self, min: Option<&Tensor>, max: Option<&Tensor>) -> Result<Tensor> {
        let mut t = self.clone();
        if let Some(lo) = min {
            t = Tensor::where_cond(&t.lt(lo)?, lo, &t)?;
        }
        if let Some(hi) = max {
            t = Tensor::where_cond(&t.gt(hi)?, hi, &t)?;
        }
        Ok(t)
    }
    /// Replaces NaN, +inf and -inf (defaults: 0, the dtype's max and min).
    pub fn nan_to_num(&self, nan: f64, posinf: Option<f64>, neginf: Option<f64>) -> Result<Tensor> {
        if !self.dtype().is_float() {
            return Ok(self.clone());
        }
        let (hi, lo) = match self.dtype() {
            ember_storage::DType::F64 => (f64::MAX, f64::MIN),
            ember_storage::DType::F16 => (65504.0, -65504.0),
            ember_storage::DType::BF16 => (3.3895313892515355e38, -3.3895313892515355e38),
            _ => (f32::MAX as f64, f32::MIN as f64),
        };
        let t = Tensor::where_cond(&self.isnan()?, nan, self)?;
        let t = Tensor::where_cond(&t.eq(f64::INFINITY)?, posinf.unwrap_or(hi), &t)?;
        Tensor::where_cond(&t.eq(f64::NEG_INFINITY)?, neginf.unwrap_or(lo), &t)
    }
    /// `self + weight * (end - self)`.
    pub fn lerp<'a>(&self, end: &Tensor, weight: impl Into<Rhs<'a>>) -> Result<Tensor> {
        self.add(&end.sub(self)?.mul(weight)?)
    }
    /// `self + value * t1 * t2`.
    pub fn addcmul(&self, t1: &Tensor, t2: &Tensor, value: f64) -> Result<Tensor> {
        self.add(&t1.mul(t2)?.mul(value)?)
    }
    /// `self + value * t1 / t2`.
    pub fn addcdiv(&self, t1: &Tensor, t2: &Tensor, value: f64) -> Result<Tensor> {
        self.add(&t1.div(t2)?.mul(value)?)
    }
    /// `x * log(y)`, 0 where x == 0 (and y is not NaN).
    pub fn xlogy<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<Tensor> {
        let x = self.float()?;
        let y = match other.into() {
            Rhs::T(t) => t.clone(),
            Rhs::S(s) => x.scalar_like(s, x.dtype())?,
        };
        // x * log(y) with log(y) replaced by 0 where x == 0 and y <= 0: the value is 0 wherever x == 0
        // (NaN stays NaN) and d/dx keeps log(y) where y > 0, as PyTorch defines it.
        let masked = x.eq(0.0)?.logical_and(&y.le(0.0)?)?;
        x.mul(&Tensor::where_cond(&masked, 0.0, &y.log()?)?)
    }
    /// `log(p / (1 - p))`, with p clamped to `[eps, 1 - eps]` when `eps` is given.
    pub fn logit(&self, eps: Option<f64>) -> Result<Tensor> {
        let p = match eps {
            Some(e) => self.float()?.clamp(Some(e), Some(1.0 - e))?,
            None => self.float()?,
        };
        p.div(&p.neg()?.add(1.0)?)?.log()
    }
    /// Elementwise power with a scalar base: `base ** self`.
    pub fn rpow(&self, base: f64) -> Result<Tensor> {
        let b = self.scalar_like(
            Scalar::F(base),
            self.dtype().promote_with_scalar(ember_storage::DTypeKind::Float, DEFAULT_FLOAT),
        )?;
        b.pow(self)
    }

    /// GELU: exact (`approximate = "none"`) or the tanh approximation.
    pub fn gelu(&self, approximate: &str) -> Result<Tensor> {
        match approximate {
            "none" => self.unary(UnaryOp::Gelu),
            "tanh" => self.unary(UnaryOp::GeluTanh),
            _ => Err(Error::invalid("gelu", format!("approximate must be 'none' or 'tanh', got {approximate:?}"))),
        }
    }
    /// ELU with `alpha`.
    pub fn elu(&self, alpha: f64) -> Result<Tensor> {
        // the exp branch sees min(x, 0), so a large x never makes exp overflow into a NaN gradient
        let neg = self.clamp(None, Some(0.0))?.exp()?.sub(1.0)?.mul(alpha)?;
        Tensor::where_cond(&self.gt(0.0)?, self, &neg)
    }
    /// CELU with `alpha`.
    pub fn celu(&self, alpha: f64) -> Result<Tensor> {
        let neg = self.clamp(None, Some(0.0))?.div(alpha)?.exp()?.sub(1.0)?.mul(alpha)?;
        Tensor::where_cond(&self.gt(0.0)?, self, &neg)
    }
    /// SELU.
    pub fn selu(&self) -> Result<Tensor> {
        const ALPHA: f64 = 1.673_263_242_354_377_3;
        const SCALE: f64 = 1.050_700_987_355_480_5;
        self.elu(ALPHA)?.mul(SCALE)
    }
    /// Leaky ReLU.
    pub fn leaky_relu(&self, negative_slope: f64) -> Result<Tensor> {
        Tensor::where_cond(&self.gt(0.0)?, self, &self.mul(negative_slope)?)
    }
    /// ReLU capped at 6.
    pub fn relu6(&self) -> Result<Tensor> {
        self.hardtanh(0.0, 6.0)
    }
    /// Clamp to `[min_val, max_val]`; unlike `clamp`, the gradient is 0 on the boundaries (PyTorch's
    /// `hardtanh_backward`, so `relu6`'s gradient at 0 is relu's).
    pub fn hardtanh(&self, min_val: f64, max_val: f64) -> Result<Tensor> {
        let lo = self.scalar_like(Scalar::F(min_val), self.dtype())?;
        let hi = self.scalar_like(Scalar::F(max_val), self.dtype())?;
        let t = Tensor::where_cond(&self.le(&lo)?, &lo, self)?;
        Tensor::where_cond(&t.ge(&hi)?, &hi, &t)
    }
    /// `relu6(x + 3) / 6`.
    pub fn hardsigmoid(&self) -> Result<Tensor> {
        let out = crate::graph::no_grad(|| self.add(3.0)?.relu6()?.div(6.0))?;
        let x = self.clone();
        Ok(crate::graph::record(out, "hardsigmoid", &[self], move |g| {
            // PyTorch's CPU kernel multiplies by the f32-rounded 1/6 for every dtype; match it exactly.
            const ONE_SIXTH_F32: f64 = (1.0f32 / 6.0f32) as f64;
            let inside = x.gt(-3.0)?.logical_and(&x.lt(3.0)?)?.to_dtype(g.dtype())?;
            Ok(smallvec::smallvec![Some(g.mul(&inside)?.mul(ONE_SIXTH_F32)?)])
        }))
    }
    /// `x * hardsigmoid(x)`.
    pub fn hardswish(&self) -> Result<Tensor> {
        let out = crate::graph::no_grad(|| self.mul(&self.add(3.0)?.relu6()?.div(6.0)?))?;
        let x = self.clone();
        Ok(crate::graph::record(out, "hardswish", &[self], move |g| {
            let mid = x.div(3.0)?.add(0.5)?;
            let d = Tensor::where_cond(&x.lt(-3.0)?, 0.0, &Tensor::where_cond(&x.le(3.0)?, &mid, 1.0)?)?;
            Ok(smallvec::smallvec![Some(g.mul(&d)?)])
        }))
    }
    /// `log(1 + exp(beta x)) / beta`, linear above `threshold`.
    pub fn softplus(&self, beta: f64, threshold: f64) -> Result<Tensor> {
        let bx = self.mul(beta)?;
        // the soft branch sees min(beta * x, threshold): exp cannot overflow where the linear branch
        // is taken, so the unused branch contributes 0, not inf * 0 = NaN, to the gradient
        let soft = bx.clamp(None, Some(threshold))?.exp()?.log1p()?.div(beta)?;
        Tensor::where_cond(&bx.gt(threshold)?, self, &soft)
    }
    /// `x / (1 + |x|)`.
    pub fn softsign(&self) -> Result<Tensor> {
        self.div(&self.abs()?.add(1.0)?)
    }
    /// Shrinks towards 0 by `lambd`.
    pub fn softshrink(&self, lambd: f64) -> Result<Tensor> {
        let up = Tensor::where_cond(&self.gt(lambd)?, &self.sub(lambd)?, 0.0)?;
        Tensor::where_cond(&self.lt(-lambd)?, &self.add(lambd)?, &up)
    }
    /// Zeroes values within `[-lambd, lambd]`.
    pub fn hardshrink(&self, lambd: f64) -> Result<Tensor> {
        Tensor::where_cond(&self.abs()?.gt(lambd)?, self, 0.0)
    }
    /// `x - tanh(x)`.
    pub fn tanhshrink(&self) -> Result<Tensor> {
        self.sub(&self.tanh()?)
    }
    /// `x` where `x > threshold`, else `value`.
    pub fn threshold(&self, threshold: f64, value: f64) -> Result<Tensor> {
        Tensor::where_cond(&self.gt(threshold)?, self, value)
    }
    /// `x * tanh(softplus(x))`.
    pub fn mish(&self) -> Result<Tensor> {
        self.mul(&self.softplus(1.0, 20.0)?.tanh()?)
    }
    /// `log(sigmoid(x))`, computed stably as `min(x, 0) - log1p(exp(-|x|))`.
    pub fn logsigmoid(&self) -> Result<Tensor> {
        // minimum splits the gradient at 0, so logsigmoid'(0) = sigmoid(0) = 0.5
        self.minimum(0.0)?.sub(&self.abs()?.neg()?.exp()?.log1p()?)
    }
    /// Gated linear unit along `dim`: `a * sigmoid(b)` for the two halves.
    pub fn glu(&self, dim: impl crate::Dim) -> Result<Tensor> {
        let dim = dim.to_isize();
        let n = self.size_of(dim)?;
        if n % 2 != 0 {
            return Err(Error::shape("glu", format!("dim {dim} must have an even size, got {n}")));
        }
        let h = self.chunk(2, dim)?;
        h[0].mul(&h[1].sigmoid()?)
    }
    /// PReLU with a learnable `weight` (one value, or one per channel on dim 1).
    pub fn prelu(&self, weight: &Tensor) -> Result<Tensor> {
        if let Some(y) = crate::autocast::autocast_op("prelu", &[self, weight], |t| t[0].prelu(&t[1]))? {
            return Ok(y);
        }
        let w = if weight.numel() == 1 || self.ndim() < 2 {
            weight.reshape(crate::SCALAR)?
        } else {
            let mut shape = vec![1isize; self.ndim()];
            shape[1] = weight.numel() as isize;
            weight.reshape(&shape)?
        };
        Tensor::where_cond(&self.gt(0.0)?, self, &self.mul(&w)?)
    }
}
