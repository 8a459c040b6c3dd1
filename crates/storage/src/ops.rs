//! The op enums of the Backend contract: each op family is one trait method and its ops are data.

/// What an elementwise op computes in and returns (the op table's `class` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Computes in a float dtype; integer inputs are promoted to the default float by the Tensor layer.
    Float,
    /// Closed over the integers: integer inputs keep their dtype (wrapping arithmetic, as PyTorch).
    KeepsInt,
    /// Returns bool whatever the input dtype (predicates, comparisons, logical ops).
    Predicate,
}

/// What an op's backward reads besides the incoming gradient (the op table's `saves` column).
/// Modifying a saved value in place makes backward fail, as PyTorch's version check does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Saves {
    /// Nothing: the gradient is a function of the incoming gradient alone.
    Nothing,
    /// The input(s).
    Input,
    /// The input(s) and the output.
    Output,
}

/// Where an op is differentiable and well conditioned: the gradient checks sample each input from
/// its domain (the op table's `domain` column, e.g. `log`: x > 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// Every real number.
    Real,
    /// x > 0.
    Positive,
    /// x > -1.
    AboveMinusOne,
    /// x > 1.
    AboveOne,
    /// -1 < x < 1.
    OpenUnit,
    /// |x| < 1.2 (away from `tan`'s poles).
    Centered,
}

impl Domain {
    /// The open interval `(low, high)` of the domain.
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Domain::Real => (f64::NEG_INFINITY, f64::INFINITY),
            Domain::Positive => (0.0, f64::INFINITY),
            Domain::AboveMinusOne => (-1.0, f64::INFINITY),
            Domain::AboveOne => (1.0, f64::INFINITY),
            Domain::OpenUnit => (-1.0, 1.0),
            Domain::Centered => (-1.2, 1.2),
        }
    }

    /// Maps any real `t` into the domain, keeping a margin of `margin` from its bounds
    /// (a smooth, monotone map, so random samples cover the domain).
    pub fn map(self, t: f64, margin: f64) -> f64 {
        match self.bounds() {
            (lo, hi) if lo.is_infinite() && hi.is_infinite() => t,
            (lo, hi) if hi.is_infinite() => lo + margin + t.abs(),
            (lo, hi) => {
                let (lo, hi) = (lo + margin, hi - margin);
                lo + (hi - lo) / (1.0 + (-t).exp())
            }
        }
    }
}

macro_rules! yes_no {
    (yes) => {
        true
    };
    (no) => {
        false
    };
}

/// Expands the unary op table into `UnaryOp` and its descriptors.
macro_rules! define_unary_ops {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: $dom:ident,
            cpu: |$a:ident| $cpu:expr, $(int: |$ia:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$gx:ident, $gy:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        predicates: [$($P:ident($pname:ident) { cpu: |$pa:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        /// Elementwise ops of one input, one per row of [`crate::unary_op_table!`]. Float ops on integer
        /// inputs are promoted by the caller (the Tensor layer): a backend sees a float dtype for every
        /// op except the [`OpClass::KeepsInt`] and [`OpClass::Predicate`] ones.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum UnaryOp {
            $(#[doc = concat!("`torch.", stringify!($name), "`")] $V,)*
            $(#[doc = concat!("`torch.", stringify!($pname), "` (returns bool)")] $P,)*
        }

        impl UnaryOp {
            /// Every unary op, in table order.
            pub const ALL: &'static [UnaryOp] = &[$(UnaryOp::$V,)* $(UnaryOp::$P,)*];

            /// The PyTorch name (also the conformance name and, where [`Self::has_method`], the
            /// `Tensor` method).
            pub fn name(self) -> &'static str {
                match self {
                    $(UnaryOp::$V => stringify!($name),)*
                    $(UnaryOp::$P => stringify!($pname),)*
                }
            }

            /// The op named `name` (PyTorch's name), if it is in the table.
            pub fn from_name(name: &str) -> Option<UnaryOp> {
                Self::ALL.iter().copied().find(|op| op.name() == name)
            }

            /// What the op computes in and returns.
            pub fn class(self) -> OpClass {
                match self {
                    $(UnaryOp::$V => OpClass::$class,)*
                    $(UnaryOp::$P => OpClass::Predicate,)*
                }
            }

            /// True when `Tensor` has a method of this name that applies exactly this op (false
            /// for ops reached through another method, e.g. `gelu(approximate)`).
            pub fn has_method(self) -> bool {
                match self {
                    $(UnaryOp::$V => yes_no!($method),)*
                    $(UnaryOp::$P => true,)*
                }
            }

            /// What backward reads (`None` for predicates, which have no gradient).
            pub fn saves(self) -> Option<Saves> {
                match self {
                    $(UnaryOp::$V => Some(Saves::$saves),)*
                    $(UnaryOp::$P => None,)*
                }
            }

            /// Where the op is differentiable (`None` for predicates).
            pub fn domain(self) -> Option<Domain> {
                match self {
                    $(UnaryOp::$V => Some(Domain::$dom),)*
                    $(UnaryOp::$P => None,)*
                }
            }

            /// The op as a CUDA C expression of `x` of type `T` (see the op table's documentation).
            pub fn cuda_expr(self) -> &'static str {
                match self {
                    $(UnaryOp::$V => $cuda,)*
                    $(UnaryOp::$P => $pcuda,)*
                }
            }

            /// True when the result is bool whatever the input.
            pub fn is_predicate(self) -> bool {
                self.class() == OpClass::Predicate
            }

            /// True when integer inputs keep their dtype (the op is closed over the integers).
            pub fn keeps_integers(self) -> bool {
                self.class() == OpClass::KeepsInt
            }
        }
    };
}
crate::unary_op_table!(define_unary_ops);

/// Expands the binary op table into `BinaryOp` and its descriptors.
macro_rules! define_binary_ops {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: [$da:ident, $db:ident],
            cpu: |$a:ident, $b:ident| $cpu:expr, $(int: |$ia:ident, $ib:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$ga:ident, $gb:ident, $go:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        compare: [$($P:ident($pname:ident) { cpu: |$pa:ident, $pb:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        /// Elementwise ops of two inputs of one dtype, already broadcast to one shape, one per row of
        /// [`crate::binary_op_table!`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum BinaryOp {
            $(#[doc = concat!("`torch.", stringify!($name), "`")] $V,)*
            $(#[doc = concat!("`torch.", stringify!($pname), "` (returns bool)")] $P,)*
        }

        impl BinaryOp {
            /// Every binary op, in table order.
            pub const ALL: &'static [BinaryOp] = &[$(BinaryOp::$V,)* $(BinaryOp::$P,)*];

            /// The PyTorch name (also the conformance name and, where [`Self::has_method`], the
            /// `Tensor` method).
            pub fn name(self) -> &'static str {
                match self {
                    $(BinaryOp::$V => stringify!($name),)*
                    $(BinaryOp::$P => stringify!($pname),)*
                }
            }

            /// The op named `name` (PyTorch's name), if it is in the table.
            pub fn from_name(name: &str) -> Option<BinaryOp> {
                Self::ALL.iter().copied().find(|op| op.name() == name)
            }

            /// What the op computes in and returns.
            pub fn class(self) -> OpClass {
                match self {
                    $(BinaryOp::$V => OpClass::$class,)*
                    $(BinaryOp::$P => OpClass::Predicate,)*
                }
            }

            /// True when `Tensor` has a method of this name that applies exactly this op.
            pub fn has_method(self) -> bool {
                match self {
                    $(BinaryOp::$V => yes_no!($method),)*
                    $(BinaryOp::$P => true,)*
                }
            }

            /// What backward reads (`None` for comparisons and logical ops).
            pub fn saves(self) -> Option<Saves> {
                match self {
                    $(BinaryOp::$V => Some(Saves::$saves),)*
                    $(BinaryOp::$P => None,)*
                }
            }

            /// Where each input is differentiable (`None` for comparisons and logical ops).
            pub fn domain(self) -> Option<[Domain; 2]> {
                match self {
                    $(BinaryOp::$V => Some([Domain::$da, Domain::$db]),)*
                    $(BinaryOp::$P => None,)*
                }
            }

            /// The op as a CUDA C expression of `a` and `b` of type `T`.
            pub fn cuda_expr(self) -> &'static str {
                match self {
                    $(BinaryOp::$V => $cuda,)*
                    $(BinaryOp::$P => $pcuda,)*
                }
            }

            /// True when the result is bool.
            pub fn is_predicate(self) -> bool {
                self.class() == OpClass::Predicate
            }

            /// True when the op needs floating inputs (integers are promoted by the caller).
            pub fn needs_float(self) -> bool {
                self.class() == OpClass::Float
            }
        }
    };
}
crate::binary_op_table!(define_binary_ops);

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

impl IndexOp {
    /// PyTorch's name of the op (`index_select`, `gather`, ...), for errors.
    pub fn name(self) -> &'static str {
        match self {
            IndexOp::IndexSelect { .. } => "index_select",
            IndexOp::Gather { .. } => "gather",
            IndexOp::Scatter { .. } => "scatter",
            IndexOp::ScatterAdd { .. } => "scatter_add",
            IndexOp::IndexAdd { .. } => "index_add",
        }
    }

    /// The indexed dim.
    pub fn dim(self) -> usize {
        match self {
            IndexOp::IndexSelect { dim }
            | IndexOp::Gather { dim }
            | IndexOp::Scatter { dim }
            | IndexOp::ScatterAdd { dim }
            | IndexOp::IndexAdd { dim } => dim,
        }
    }
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
