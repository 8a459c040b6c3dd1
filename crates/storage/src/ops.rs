//! The op enums of the Backend contract: each op family is one trait method and its ops are data.

/// Elementwise ops of one input. Float ops on integer inputs are promoted by the caller (the Tensor layer);
/// a backend sees a float dtype for every op except `Neg`, `Abs`, `Sign`, `Square` and the predicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sign,
    Square,
    Exp,
    Exp2,
    Expm1,
    Log,
    Log2,
    Log10,
    Log1p,
    Sqrt,
    Rsqrt,
    Reciprocal,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Sigmoid,
    Relu,
    Silu,
    Gelu,
    GeluTanh,
    Erf,
    Erfc,
    Erfinv,
    Lgamma,
    Digamma,
    /// ψ₁(x), the derivative of digamma (`polygamma(1, x)`).
    Trigamma,
    Floor,
    Ceil,
    Round,
    Trunc,
    Frac,
    /// Predicates: output dtype is bool.
    IsNan,
    IsInf,
    IsFinite,
    LogicalNot,
}

impl UnaryOp {
    /// The PyTorch name.
    pub fn name(self) -> &'static str {
        use UnaryOp::*;
        match self {
            Neg => "neg",
            Abs => "abs",
            Sign => "sign",
            Square => "square",
            Exp => "exp",
            Exp2 => "exp2",
            Expm1 => "expm1",
            Log => "log",
            Log2 => "log2",
            Log10 => "log10",
            Log1p => "log1p",
            Sqrt => "sqrt",
            Rsqrt => "rsqrt",
            Reciprocal => "reciprocal",
            Sin => "sin",
            Cos => "cos",
            Tan => "tan",
            Asin => "asin",
            Acos => "acos",
            Atan => "atan",
            Sinh => "sinh",
            Cosh => "cosh",
            Tanh => "tanh",
            Asinh => "asinh",
            Acosh => "acosh",
            Atanh => "atanh",
            Sigmoid => "sigmoid",
            Relu => "relu",
            Silu => "silu",
            Gelu => "gelu",
            GeluTanh => "gelu_tanh",
            Erf => "erf",
            Erfc => "erfc",
            Erfinv => "erfinv",
            Lgamma => "lgamma",
            Digamma => "digamma",
            Trigamma => "trigamma",
            Floor => "floor",
            Ceil => "ceil",
            Round => "round",
            Trunc => "trunc",
            Frac => "frac",
            IsNan => "isnan",
            IsInf => "isinf",
            IsFinite => "isfinite",
            LogicalNot => "logical_not",
        }
    }

    /// True when the result is bool whatever the input.
    pub fn is_predicate(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::IsFinite | UnaryOp::LogicalNot)
    }

    /// True when integer inputs keep their dtype (the op is closed over the integers).
    pub fn keeps_integers(self) -> bool {
        use UnaryOp::*;
        matches!(self, Neg | Abs | Sign | Square | Relu | Floor | Ceil | Round | Trunc)
    }
}

/// Elementwise ops of two inputs of one dtype, already broadcast to one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Fmax,
    Fmin,
    Atan2,
    Remainder,
    Fmod,
    Copysign,
    Hypot,
    FloorDivide,
    /// `a` where `b > 0`, else 0 (zero also where `b <= 0`; a NaN `b` passes `a`): PyTorch's
    /// `threshold_backward(a, b, 0)`, relu's gradient in one pass.
    ThresholdBackward,
    /// Comparisons and logical ops: output dtype is bool.
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LogicalAnd,
    LogicalOr,
    LogicalXor,
}

impl BinaryOp {
    /// The PyTorch name.
    pub fn name(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Maximum => "maximum",
            Minimum => "minimum",
            Fmax => "fmax",
            Fmin => "fmin",
            Atan2 => "atan2",
            Remainder => "remainder",
            Fmod => "fmod",
            Copysign => "copysign",
            Hypot => "hypot",
            FloorDivide => "floor_divide",
            ThresholdBackward => "threshold_backward",
            Eq => "eq",
            Ne => "ne",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            LogicalAnd => "logical_and",
            LogicalOr => "logical_or",
            LogicalXor => "logical_xor",
        }
    }

    /// True when the result is bool.
    pub fn is_predicate(self) -> bool {
        use BinaryOp::*;
        matches!(self, Eq | Ne | Lt | Le | Gt | Ge | LogicalAnd | LogicalOr | LogicalXor)
    }

    /// True when the op needs floating inputs (integers are promoted by the caller).
    pub fn needs_float(self) -> bool {
        matches!(self, BinaryOp::Div | BinaryOp::Atan2 | BinaryOp::Copysign | BinaryOp::Hypot)
    }
}

/// Reductions over a set of dims (the output keeps them with size 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum (f16/bf16 accumulate in f32, f32 in f64 blocks).
    Sum,
    /// Product.
    Prod,
    /// Maximum (NaN propagates).
    Max,
    /// Minimum (NaN propagates).
    Min,
    /// Index of the first maximum over one dim; output i64.
    ArgMax,
    /// Index of the first minimum over one dim; output i64.
    ArgMin,
    /// Logical and; output bool.
    All,
    /// Logical or; output bool.
    Any,
}

/// Cumulative ops along one dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanOp {
    /// Running sum.
    Cumsum,
    /// Running product.
    Cumprod,
    /// Running maximum, with the index where it was attained.
    Cummax,
    /// Running minimum, with the index where it was attained.
    Cummin,
}

/// Indexing ops along one dim; indices are i64 and checked by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexOp {
    /// `out = x.index_select(dim, index)` with a 1-d index.
    IndexSelect {
        /// The indexed dim.
        dim: usize,
    },
    /// `out[i][j] = x[i][index[i][j]]` (for dim 1); index has the output's shape.
    Gather {
        /// The indexed dim.
        dim: usize,
    },
    /// `out = x; out[..index..] = src` (last write wins).
    Scatter {
        /// The indexed dim.
        dim: usize,
    },
    /// `out = x; out[..index..] += src`.
    ScatterAdd {
        /// The indexed dim.
        dim: usize,
    },
    /// `out = x; out.select(dim, index[i]) += src.select(dim, i)` with a 1-d index.
    IndexAdd {
        /// The indexed dim.
        dim: usize,
    },
}

/// Random distributions, drawn from a counter-based generator keyed by (seed, offset).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RngOp {
    /// Uniform on [low, high).
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound (exclusive).
        high: f64,
    },
    /// Normal with mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `value` with probability `p`, else 0 (element `i` is `value` when the uniform draw
    /// `Uniform { low: 0, high: 1 }` would give for it is below `p`): dropout's scaled keep-mask in
    /// one pass.
    Bernoulli {
        /// Probability of `value`.
        p: f64,
        /// The value drawn with probability `p`.
        value: f64,
    },
}

/// Where a counter-based generator starts: element `i` uses counter `offset + i`, so results do not
/// depend on how the work is split between threads or devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngKey {
    /// The seed (`manual_seed`).
    pub seed: u64,
    /// The first counter value.
    pub offset: u64,
}

/// The geometry of an N-d sliding window (convolution, pooling, unfold/fold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowGeometry {
    /// Batch size N.
    pub batch: usize,
    /// Channels C.
    pub channels: usize,
    /// Input spatial sizes.
    pub input: Vec<usize>,
    /// Kernel sizes.
    pub kernel: Vec<usize>,
    /// Strides.
    pub stride: Vec<usize>,
    /// Zero padding on both sides of each spatial dim.
    pub padding: Vec<usize>,
    /// Dilations.
    pub dilation: Vec<usize>,
}

impl WindowGeometry {
    /// Output spatial sizes; `None` when the window does not fit, a stride or kernel size is 0, or
    /// any size derived from the geometry (padded input, dilated kernel, the patch matrix
    /// `N x C x K x L`) overflows [`crate::shape::MAX_ELEMENTS`]. All arithmetic is checked, so
    /// absurd padding or dilation can never wrap around to a geometry that looks valid.
    pub fn output(&self) -> Option<Vec<usize>> {
        let n = self.input.len();
        if self.kernel.len() != n || self.stride.len() != n || self.padding.len() != n || self.dilation.len() != n {
            return None;
        }
        let out: Vec<usize> = (0..n)
            .map(|i| {
                let eff = self.dilation[i].checked_mul(self.kernel[i].checked_sub(1)?)?.checked_add(1)?;
                let padded = self.padding[i].checked_mul(2)?.checked_add(self.input[i])?;
                if padded < eff || self.stride[i] == 0 || padded > crate::shape::MAX_ELEMENTS {
                    None
                } else {
                    Some((padded - eff) / self.stride[i] + 1)
                }
            })
            .collect::<Option<_>>()?;
        let mut all = vec![self.batch, self.channels];
        all.extend(&self.kernel);
        all.extend(&out);
        crate::shape::checked_numel(&all, "window").ok()?;
        crate::shape::checked_numel(&[&[self.batch, self.channels][..], &self.input].concat(), "window").ok()?;
        Some(out)
    }

    /// Number of kernel positions (product of kernel sizes).
    pub fn kernel_numel(&self) -> usize {
        crate::shape::numel(&self.kernel)
    }
}
