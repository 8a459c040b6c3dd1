//! The gamma distribution, its sampler and the implicit reparameterisation gradient that makes
//! gamma samples (and Beta and Dirichlet ones, built from them) differentiable.

use crate::{broadcast_all, extended, Distribution};
use ember_autograd::{apply, Context, DType, Function, Result, Tensor};
use rand::{Rng, SeedableRng};
use std::any::Any;

/// `Gamma(concentration, rate)` with density `β^α x^{α−1} e^{−βx} / Γ(α)`
/// (`torch.distributions.Gamma`).
#[derive(Clone, Debug)]
pub struct Gamma {
    /// Shape α.
    pub concentration: Tensor,
    /// Rate β (inverse scale).
    pub rate: Tensor,
}

impl Gamma {
    /// A gamma with shape `concentration` and `rate` (broadcast together).
    pub fn new(concentration: &Tensor, rate: &Tensor) -> Result<Self> {
        let [concentration, rate]: [Tensor; 2] =
            broadcast_all("Gamma", &[concentration, rate])?.try_into().expect("two");
        Ok(Gamma { concentration, rate })
    }
}

impl Distribution for Gamma {
    fn batch_shape(&self) -> Vec<usize> {
        self.concentration.shape().to_vec()
    }
    fn event_shape(&self) -> Vec<usize> {
        vec![]
    }
    fn rsample(&self, sample_shape: &[usize]) -> Result<Tensor> {
        let shape = extended(sample_shape, self.concentration.shape(), &[]);
        Ok(standard_gamma(&self.concentration.broadcast_to(&shape)?)? / self.rate.broadcast_to(&shape)?)
    }
    fn log_prob(&self, value: &Tensor) -> Result<Tensor> {
        let (a, b) = (&self.concentration, &self.rate);
        Ok(a * b.log()? + value.log()?.mul(&(a - 1.0))? - b.mul(value)? - a.lgamma()?)
    }
    fn entropy(&self) -> Result<Tensor> {
        let a = &self.concentration;
        Ok(a - self.rate.log()? + a.lgamma()? + (1.0 - a) * a.digamma()?)
    }
    fn mean(&self) -> Result<Tensor> {
        Ok(&self.concentration / &self.rate)
    }
    fn variance(&self) -> Result<Tensor> {
        Ok(&self.concentration / self.rate.square()?)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Draws one `Gamma(alpha, 1)` per element of `alpha`, differentiable in `alpha` by implicit
/// reparameterisation: `dz/dα = −(∂F/∂α)(α, z) / f(z; α)` with `F` the gamma CDF.
pub(crate) fn standard_gamma(alpha: &Tensor) -> Result<Tensor> {
    apply(StandardGamma, std::slice::from_ref(alpha))
}

struct StandardGamma;

impl Function for StandardGamma {
    fn forward(&self, ctx: &mut Context, inputs: &[Tensor]) -> Result<Tensor> {
        let alpha = &inputs[0];
        // one seed from Ember's generator, so manual_seed makes the draws repeatable
        let seed = Tensor::randint(0, i64::MAX, [1])?.to_vec::<i64>()?[0] as u64;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let a = alpha.to_dtype(DType::F64)?.to_vec::<f64>()?;
        let z: Vec<f64> = a.iter().map(|&a| sample_standard_gamma(a, &mut rng)).collect();
        let z = Tensor::from_vec(z, alpha.shape())?.to(alpha.device())?.to_dtype(alpha.dtype())?;
        ctx.save_for_backward(&[alpha, &z]);
        Ok(z)
    }
    fn backward(&self, ctx: &Context, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let [alpha, z] = ctx.saved_tensors() else { unreachable!("two saved") };
        Ok(vec![Some(g * standard_gamma_grad(alpha, z)?)])
    }
    fn name(&self) -> &'static str {
        "StandardGamma"
    }
}

/// `dz/dα` of a standard gamma sample `z` at concentration `alpha` (PyTorch's
/// `_standard_gamma_grad`), elementwise, computed in f64 from the regularised incomplete gamma
/// function (a central difference in α of the CDF, divided by the density).
pub fn standard_gamma_grad(alpha: &Tensor, z: &Tensor) -> Result<Tensor> {
    let a = alpha.to_dtype(DType::F64)?.to_vec::<f64>()?;
    let x = z.to_dtype(DType::F64)?.broadcast_to(alpha.shape())?.to_vec::<f64>()?;
    let g: Vec<f64> = a.iter().zip(&x).map(|(&a, &x)| gamma_sample_grad(a, x)).collect();
    Tensor::from_vec(g, alpha.shape())?.to(alpha.device())?.to_dtype(alpha.dtype())
}

fn gamma_sample_grad(a: f64, x: f64) -> f64 {
    if !(a > 0.0 && x > 0.0) {
        return 0.0;
    }
    let h = 1e-5 * a.max(1.0);
    let h = h.min(a / 2.0);
    // differentiate whichever of P and Q = 1 − P is smaller, to avoid cancellation
    let lower = x < a + 1.0;
    let f = |a: f64| if lower { reg_gamma_p(a, x) } else { -reg_gamma_q(a, x) };
    let dp_da = (f(a + h) - f(a - h)) / (2.0 * h);
    let log_density = (a - 1.0) * x.ln() - x - libm::lgamma(a);
    -dp_da / log_density.exp()
}

/// The regularised lower incomplete gamma `P(a, x)` by its series (for `x < a + 1`).
fn reg_gamma_p(a: f64, x: f64) -> f64 {
    if x >= a + 1.0 {
        return 1.0 - reg_gamma_q(a, x);
    }
    let (mut term, mut sum) = (1.0 / a, 1.0 / a);
    for n in 1..10_000 {
        term *= x / (a + n as f64);
        sum += term;
        if term.abs() < sum.abs() * 1e-17 {
            break;
        }
    }
    sum * (-x + a * x.ln() - libm::lgamma(a)).exp()
}

/// The regularised upper incomplete gamma `Q(a, x)` by its continued fraction (for `x ≥ a + 1`),
/// evaluated with Lentz's method.
fn reg_gamma_q(a: f64, x: f64) -> f64 {
    if x < a + 1.0 {
        return 1.0 - reg_gamma_p(a, x);
    }
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..10_000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x + a * x.ln() - libm::lgamma(a)).exp() * h
}

/// One `Gamma(a, 1)` draw by Marsaglia and Tsang's method (boosted by `U^{1/a}` for `a < 1`);
/// never 0, as PyTorch clamps to the smallest positive value.
fn sample_standard_gamma(a: f64, rng: &mut impl Rng) -> f64 {
    if a.is_nan() || a <= 0.0 {
        return f64::NAN;
    }
    if a < 1.0 {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return (sample_standard_gamma(a + 1.0, rng) * u.powf(1.0 / a)).max(f64::MIN_POSITIVE);
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u: f64 = rng.random();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
