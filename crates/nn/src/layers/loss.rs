//! The loss modules of `torch.nn` (`nn.CrossEntropyLoss()`, `nn.MSELoss()`, ...): the options of
//! the functional losses held in a value, applied with `forward(&input, &target)`.
//!
//! ```
//! use ember_autograd::{tensor, Tensor};
//! use ember_nn::layers::CrossEntropyLoss;
//! let criterion = CrossEntropyLoss::new().label_smoothing(0.1);
//! let loss = criterion.forward(&Tensor::randn(&[4, 3])?, &tensor!([0, 2, 1, 0])?)?;
//! assert_eq!(loss.shape(), &[] as &[usize]);
//! # Ok::<(), ember_autograd::Error>(())
//! ```

use crate::functional::{self as F, ClassLossOptions, Reduction};
use ember_autograd::{Result, Tensor};

/// `nn.CrossEntropyLoss`: logits `[N, C, d...]` against class indices or probabilities.
#[derive(Clone, Debug)]
pub struct CrossEntropyLoss {
    /// Per-class weights `[C]`.
    pub weight: Option<Tensor>,
    /// Targets equal to this contribute nothing (default −100).
    pub ignore_index: i64,
    /// Reduction (default mean).
    pub reduction: Reduction,
    /// Label smoothing in `[0, 1]` (default 0).
    pub label_smoothing: f64,
}

impl Default for CrossEntropyLoss {
    fn default() -> Self {
        let d = ClassLossOptions::default();
        CrossEntropyLoss {
            weight: None,
            ignore_index: d.ignore_index,
            reduction: d.reduction,
            label_smoothing: d.label_smoothing,
        }
    }
}

impl CrossEntropyLoss {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// `weight=`.
    pub fn weight(mut self, w: Tensor) -> Self {
        self.weight = Some(w);
        self
    }
    /// `ignore_index=`.
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.ignore_index = i;
        self
    }
    /// `reduction=`.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }
    /// `label_smoothing=`.
    pub fn label_smoothing(mut self, eps: f64) -> Self {
        self.label_smoothing = eps;
        self
    }
    fn options(&self) -> ClassLossOptions<'_> {
        ClassLossOptions {
            weight: self.weight.as_ref(),
            ignore_index: self.ignore_index,
            reduction: self.reduction,
            label_smoothing: self.label_smoothing,
        }
    }
    /// The loss of `input` against `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        F::cross_entropy_with(input, target, &self.options())
    }
}

/// `nn.NLLLoss`: log-probabilities against class indices.
#[derive(Clone, Debug, Default)]
pub struct NLLLoss {
    /// The options shared with [`CrossEntropyLoss`] (label smoothing unused).
    pub inner: CrossEntropyLoss,
}

impl NLLLoss {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// `weight=`.
    pub fn weight(mut self, w: Tensor) -> Self {
        self.inner.weight = Some(w);
        self
    }
    /// `ignore_index=`.
    pub fn ignore_index(mut self, i: i64) -> Self {
        self.inner.ignore_index = i;
        self
    }
    /// `reduction=`.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.inner.reduction = r;
        self
    }
    /// The loss of `input` against `target`.
    pub fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        F::nll_loss_with(input, target, &self.inner.options())
    }
}

macro_rules! reduction_loss {
    ($($(#[$doc:meta])* $name:ident => |$i:ident, $t:ident, $r:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $name {
            /// Reduction (default mean).
            pub reduction: Reduction,
        }
        impl $name {
            /// PyTorch's defaults (mean reduction).
            pub fn new() -> Self {
                Self::default()
            }
            /// `reduction=`.
            pub fn reduction(mut self, r: Reduction) -> Self {
                self.reduction = r;
                self
            }
            /// The loss of `input` against `target`.
            pub fn forward(&self, $i: &Tensor, $t: &Tensor) -> Result<Tensor> {
                let $r = self.reduction;
                $body
            }
        }
    )*};
}

reduction_loss! {
    /// `nn.MSELoss`.
    MSELoss => |i, t, r| F::mse_loss_with(i, t, r);
    /// `nn.L1Loss`.
    L1Loss => |i, t, r| F::l1_loss_with(i, t, r);
    /// `nn.BCELoss` (probabilities; see [`BCEWithLogitsLoss`] for logits).
    BCELoss => |i, t, r| F::binary_cross_entropy_with(i, t, None, r);
    /// `nn.BCEWithLogitsLoss` (without `pos_weight`; use the functional form for it).
    BCEWithLogitsLoss => |i, t, r| F::binary_cross_entropy_with_logits_opts(i, t, None, None, r);
}
