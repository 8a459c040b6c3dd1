//! `torch.nn.init`: fill a tensor in place (without recording a graph) from the usual schemes.
//! Random draws come from Ember's global generator ([`ember_autograd::manual_seed`]).

use ember_autograd::{no_grad, Error, Result, Tensor};

/// Fan mode of the Kaiming schemes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// Number of inputs per output (keeps the forward variance).
    FanIn,
    /// Number of outputs per input (keeps the backward variance).
    FanOut,
}

/// The recommended gain for a nonlinearity (`torch.nn.init.calculate_gain`): `linear`, `conv*`,
/// `sigmoid` give 1, `tanh` 5/3, `relu` √2, `leaky_relu` √(2/(1+slope²)), `selu` 3/4.
pub fn calculate_gain(nonlinearity: &str, param: Option<f64>) -> Result<f64> {
    Ok(match nonlinearity {
        "linear" | "conv1d" | "conv2d" | "conv3d" | "conv_transpose1d" | "conv_transpose2d" | "conv_transpose3d"
        | "sigmoid" => 1.0,
        "tanh" => 5.0 / 3.0,
        "relu" => 2f64.sqrt(),
        "leaky_relu" => {
            let s = param.unwrap_or(0.01);
            (2.0 / (1.0 + s * s)).sqrt()
        }
        "selu" => 0.75,
        other => return Err(Error::invalid("calculate_gain", format!("unsupported nonlinearity {other}"))),
    })
}

/// `(fan_in, fan_out)` of a weight: dims 1 and 0 times the receptive field (dims 2..).
pub fn fans(t: &Tensor) -> Result<(usize, usize)> {
    let s = t.shape();
    if s.len() < 2 {
        return Err(Error::shape("init", format!("fan in/out needs at least 2 dims, got {s:?}")));
    }
    let rf: usize = s[2..].iter().product();
    Ok((s[1] * rf, s[0] * rf))
}

fn fill_from(t: &Tensor, src: Tensor) -> Result<()> {
    no_grad(|| t.copy_(&src.to_dtype(t.dtype())?.to(t.device())?).map(|_| ()))
}

/// Fills with U(a, b).
pub fn uniform_(t: &Tensor, a: f64, b: f64) -> Result<()> {
    fill_from(t, Tensor::rand(t.shape())?.mul(b - a)?.add(a)?)
}

/// Fills with N(mean, std²).
pub fn normal_(t: &Tensor, mean: f64, std: f64) -> Result<()> {
    fill_from(t, Tensor::randn(t.shape())?.mul(std)?.add(mean)?)
}

/// Fills with a constant.
pub fn constant_(t: &Tensor, value: f64) -> Result<()> {
    no_grad(|| t.fill_(value).map(|_| ()))
}

/// Fills with zeros.
pub fn zeros_(t: &Tensor) -> Result<()> {
    constant_(t, 0.0)
}

/// Fills with ones.
pub fn ones_(t: &Tensor) -> Result<()> {
    constant_(t, 1.0)
}

/// Xavier/Glorot uniform: U(−a, a) with a = gain·√(6/(fan_in+fan_out)).
pub fn xavier_uniform_(t: &Tensor, gain: f64) -> Result<()> {
    let (i, o) = fans(t)?;
    let a = gain * (6.0 / (i + o) as f64).sqrt();
    uniform_(t, -a, a)
}

/// Xavier/Glorot normal: N(0, gain²·2/(fan_in+fan_out)).
pub fn xavier_normal_(t: &Tensor, gain: f64) -> Result<()> {
    let (i, o) = fans(t)?;
    normal_(t, 0.0, gain * (2.0 / (i + o) as f64).sqrt())
}

fn kaiming_std(t: &Tensor, a: f64, mode: FanMode, nonlinearity: &str) -> Result<f64> {
    let (i, o) = fans(t)?;
    let fan = if mode == FanMode::FanIn { i } else { o };
    let gain = calculate_gain(nonlinearity, Some(a))?;
    Ok(gain / (fan as f64).sqrt())
}

/// He/Kaiming uniform: U(−b, b) with b = gain·√(3/fan).
pub fn kaiming_uniform_(t: &Tensor, a: f64, mode: FanMode, nonlinearity: &str) -> Result<()> {
    let b = 3f64.sqrt() * kaiming_std(t, a, mode, nonlinearity)?;
    uniform_(t, -b, b)
}

/// He/Kaiming normal: N(0, gain²/fan).
pub fn kaiming_normal_(t: &Tensor, a: f64, mode: FanMode, nonlinearity: &str) -> Result<()> {
    normal_(t, 0.0, kaiming_std(t, a, mode, nonlinearity)?)
}

/// Truncated normal: N(mean, std²) redrawn outside [a, b] (inverse-CDF method, as PyTorch).
pub fn trunc_normal_(t: &Tensor, mean: f64, std: f64, a: f64, b: f64) -> Result<()> {
    let cdf = |x: f64| (1.0 + libm::erf(x / 2f64.sqrt())) / 2.0;
    let (l, u) = (cdf((a - mean) / std), cdf((b - mean) / std));
    let v = Tensor::rand(t.shape())?.to_dtype(ember_autograd::DType::F64)?.mul(u - l)?.add(l)?;
    let x = v.mul(2.0)?.sub(1.0)?.erfinv()?.mul(std * 2f64.sqrt())?.add(mean)?.clamp(Some(a), Some(b))?;
    fill_from(t, x)
}

/// (Semi-)orthogonal matrix from the QR decomposition of a Gaussian matrix, scaled by `gain`.
/// Dims after the first are flattened, as in PyTorch.
pub fn orthogonal_(t: &Tensor, gain: f64) -> Result<()> {
    let s = t.shape().to_vec();
    if s.len() < 2 {
        return Err(Error::shape("orthogonal_", format!("needs at least 2 dims, got {s:?}")));
    }
    let rows = s[0];
    let cols = t.numel() / rows;
    let mut flat = Tensor::randn([rows, cols])?.to_dtype(ember_autograd::DType::F64)?;
    if rows < cols {
        flat = flat.t()?.contiguous()?;
    }
    let (q, r) = flat.linalg_qr()?;
    let d = r.diagonal(0, 0, 1)?.sign()?;
    let mut q = q.mul(&d.unsqueeze(0)?)?;
    if rows < cols {
        q = q.t()?;
    }
    let shape: Vec<isize> = s.iter().map(|&x| x as isize).collect();
    fill_from(t, q.mul(gain)?.contiguous()?.reshape(&shape)?)
}
