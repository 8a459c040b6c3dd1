//! Every activation as a module (`nn.ReLU`, `nn.GELU`, ...): thin wrappers over the tensor functions.

use crate::Module;
use ember_autograd::{Result, Tensor};

macro_rules! plain_activation {
    ($($(#[$doc:meta])* $name:ident => |$x:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(crate::Module, Default, Clone, Copy)]
        pub struct $name {}
        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                $body
            }
        }
    )*};
}

plain_activation! {
    /// `max(x, 0)`.
    ReLU => |x| x.relu();
    /// `min(max(x, 0), 6)`.
    ReLU6 => |x| x.relu6();
    /// `tanh(x)`.
    Tanh => |x| x.tanh();
    /// `1 / (1 + e^-x)`.
    Sigmoid => |x| x.sigmoid();
    /// `x σ(x)`.
    SiLU => |x| x.silu();
    /// `x tanh(softplus(x))`.
    Mish => |x| x.mish();
    /// Scaled ELU with PyTorch's constants.
    SELU => |x| x.selu();
    /// `relu6(x + 3) / 6`.
    Hardsigmoid => |x| x.hardsigmoid();
    /// `x relu6(x + 3) / 6`.
    Hardswish => |x| x.hardswish();
    /// `x / (1 + |x|)`.
    Softsign => |x| x.softsign();
    /// `x − tanh(x)`.
    Tanhshrink => |x| x.tanhshrink();
    /// `log σ(x)`.
    LogSigmoid => |x| x.logsigmoid();
}

/// GELU, exact (`"none"`) or tanh-approximated (`"tanh"`).
#[derive(crate::Module, Clone)]
pub struct GELU {
    /// "none" or "tanh".
    pub approximate: String,
}

impl Default for GELU {
    fn default() -> Self {
        GELU { approximate: "none".into() }
    }
}

impl Module for GELU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.gelu(&self.approximate)
    }
}

macro_rules! scalar_activation {
    ($($(#[$doc:meta])* $name:ident($($field:ident: $default:expr),*) => |$s:ident, $x:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(crate::Module, Clone, Copy)]
        pub struct $name {
            $(#[doc = concat!("`", stringify!($field), "`")] pub $field: f64,)*
        }
        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default),* }
            }
        }
        impl $name {
            #[doc = concat!("`nn.", stringify!($name), "(", $(stringify!($field), ", ",)* ")`.")]
            pub fn new($($field: f64),*) -> Self {
                $name { $($field),* }
            }
        }
        impl Module for $name {
            fn forward(&self, $x: &Tensor) -> Result<Tensor> {
                let $s = self;
                $body
            }
        }
    )*};
}

scalar_activation! {
    /// `max(x, 0) + negative_slope · min(x, 0)`.
    LeakyReLU(negative_slope: 0.01) => |s, x| x.leaky_relu(s.negative_slope);
    /// Exponential linear unit.
    ELU(alpha: 1.0) => |s, x| x.elu(s.alpha);
    /// Continuously differentiable ELU.
    CELU(alpha: 1.0) => |s, x| x.celu(s.alpha);
    /// `log(1 + e^{βx}) / β`, linear above `threshold`.
    Softplus(beta: 1.0, threshold: 20.0) => |s, x| x.softplus(s.beta, s.threshold);
    /// Clamp to `[min_val, max_val]`.
    Hardtanh(min_val: -1.0, max_val: 1.0) => |s, x| x.hardtanh(s.min_val, s.max_val);
    /// Shrink towards 0 by `lambd`.
    Softshrink(lambd: 0.5) => |s, x| x.softshrink(s.lambd);
    /// Zero inside `[-lambd, lambd]`.
    Hardshrink(lambd: 0.5) => |s, x| x.hardshrink(s.lambd);
    /// `x` above `threshold`, otherwise `value`.
    Threshold(threshold: 0.0, value: 0.0) => |s, x| x.threshold(s.threshold, s.value);
}

/// Softmax along `dim`.
#[derive(crate::Module, Clone, Copy)]
pub struct Softmax {
    /// The dim that sums to 1.
    pub dim: isize,
}

impl Module for Softmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.softmax(self.dim)
    }
}

/// Log-softmax along `dim`.
#[derive(crate::Module, Clone, Copy)]
pub struct LogSoftmax {
    /// The normalised dim.
    pub dim: isize,
}

impl Module for LogSoftmax {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.log_softmax(self.dim)
    }
}

/// Gated linear unit along `dim` (default −1).
#[derive(crate::Module, Clone, Copy)]
pub struct GLU {
    /// The halved dim.
    pub dim: isize,
}

impl Default for GLU {
    fn default() -> Self {
        GLU { dim: -1 }
    }
}

impl Module for GLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.glu(self.dim)
    }
}

/// Parametric ReLU with a learned slope (`nn.PReLU`, one shared slope or one per channel, init 0.25).
#[derive(crate::Module)]
pub struct PReLU {
    /// `[num_parameters]`.
    pub weight: Tensor,
}

impl PReLU {
    /// `nn.PReLU(num_parameters, init)`.
    pub fn new(num_parameters: usize, init: f64) -> Result<Self> {
        Ok(PReLU { weight: super::linear::const_param(&[num_parameters], init)? })
    }
}

impl Module for PReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.prelu(&self.weight)
    }
}
