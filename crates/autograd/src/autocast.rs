//! Automatic mixed precision: `torch.autocast` for Ember.
//!
//! Inside [`autocast`]`(DType::BF16, || ...)` (or `F16`) on this thread, the ops PyTorch lists as
//! safe in lower precision (matrix products, `linear`, convolutions, attention, ...) take their
//! f32 inputs in the autocast dtype and return it; the ops it lists as needing f32 (losses, `prod`,
//! `cumsum`, the linear-algebra decompositions, ...) take f16/bf16 inputs in f32; `cat` and `stack`
//! promote to their widest floating input; every other op runs in its inputs' dtypes. f64 inputs
//! are never cast, as in PyTorch. The lists are PyTorch's (`torch.amp` documentation, "CPU Ops that
//! can autocast to bfloat16" / "CPU Ops that can autocast to float32", and the CUDA lists), one
//! per device type, declared once in [`policy`].
//!
//! Scopes nest; [`autocast_disabled`] turns autocast off inside one (PyTorch's
//! `autocast(enabled=False)`). A listed op runs its body with autocast suspended, so the ops it
//! calls internally are not cast again (as PyTorch's dispatcher excludes the autocast key). A
//! backward pass never autocasts, even when called inside a scope: its ops follow the forward's
//! dtypes (PyTorch recommends backward outside autocast; Ember makes it so).
//!
//! **Numerics.** A lower-precision op rounds its inputs to the autocast dtype, computes in f32 and
//! rounds its result once: what PyTorch's CPU kernels for bf16/f16 do (f32 accumulation, one rounding
//! of the output, bias added before it). Gradients flow back through the casts, so f32 parameters
//! get f32 gradients.
//!
//! **Cast cache.** Within the outermost scope, the cast of a leaf tensor that requires grad (a
//! parameter) is made once and reused, so a weight used by several ops is converted once; the
//! cache is keyed by the tensor, its version (an in-place update makes a new cast) and the grad
//! mode, and is dropped when the outermost scope ends.

use crate::Tensor;
use ember_storage::{DType, Device, Error, Result};
use std::cell::RefCell;
use std::collections::HashMap;

/// How autocast treats an op's floating inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CastPolicy {
    /// Rounded to the autocast dtype (f32 inputs only); the result is in the autocast dtype.
    LowerPrecision,
    /// f16/bf16 inputs computed in f32; the result is f32.
    Fp32,
    /// Every floating input in the widest floating dtype among them.
    Promote,
}

/// Ops autocast runs in lower precision on the CPU (PyTorch's CPU list).
const CPU_LOWER: &[&str] = &[
    "conv1d",
    "conv2d",
    "conv3d",
    "conv",
    "bmm",
    "mm",
    "linalg_vecdot",
    "baddbmm",
    "addmm",
    "addbmm",
    "linear",
    "matmul",
    "conv_tbc",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose",
    "prelu",
    "scaled_dot_product_attention",
    "multi_head_attention",
    "lstm",
    "gru",
    "rnn",
];

/// Ops autocast runs in f32 on the CPU (PyTorch's CPU list, the ops Ember has).
const CPU_FP32: &[&str] = &[
    "avg_pool3d",
    "binary_cross_entropy",
    "grid_sample",
    "prod",
    "quantile",
    "nanquantile",
    "cdist",
    "trace",
    "cholesky",
    "inverse",
    "pinverse",
    "max_pool3d",
    "adaptive_avg_pool3d",
    "mse_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "hinge_embedding_loss",
    "poisson_nll_loss",
    "smooth_l1_loss",
    "cross_entropy",
    "l1_loss",
    "huber_loss",
    "margin_ranking_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "multilabel_margin_loss",
    "multi_margin_loss",
    "multilabel_soft_margin_loss",
    "ctc_loss",
    "kl_div",
    "binary_cross_entropy_with_logits",
    "gaussian_nll_loss",
    "linalg_inv",
    "linalg_det",
    "linalg_solve",
    "linalg_cholesky",
    "linalg_qr",
    "linalg_svdvals",
    "linalg_eigvalsh",
    "qr",
];

/// Ops autocast runs in lower precision on CUDA (PyTorch's CUDA list).
const CUDA_LOWER: &[&str] = &[
    "conv1d",
    "conv2d",
    "conv3d",
    "conv",
    "conv_tbc",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose",
    "addbmm",
    "addmm",
    "baddbmm",
    "bmm",
    "chain_matmul",
    "linalg_multi_dot",
    "linear",
    "matmul",
    "mm",
    "mv",
    "prelu",
    "scaled_dot_product_attention",
    "multi_head_attention",
    "lstm",
    "gru",
    "rnn",
];

/// Ops autocast runs in f32 on CUDA (PyTorch's CUDA list, the ops Ember has).
const CUDA_FP32: &[&str] = &[
    "acos",
    "asin",
    "cosh",
    "erfinv",
    "exp",
    "expm1",
    "log",
    "log10",
    "log2",
    "log1p",
    "reciprocal",
    "rsqrt",
    "sinh",
    "tan",
    "pow",
    "softplus",
    "layer_norm",
    "group_norm",
    "norm",
    "cosine_similarity",
    "poisson_nll_loss",
    "cosine_embedding_loss",
    "nll_loss",
    "hinge_embedding_loss",
    "kl_div",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "mse_loss",
    "margin_ranking_loss",
    "multilabel_margin_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "multi_margin_loss",
    "binary_cross_entropy_with_logits",
    "dist",
    "pdist",
    "cdist",
    "renorm",
    "logsumexp",
    "cumprod",
    "cumsum",
    "prod",
    "sum",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "ctc_loss",
    "gaussian_nll_loss",
    "multilabel_soft_margin_loss",
];

/// Ops that promote their floating inputs to the widest among them (both device types).
const PROMOTE: &[&str] = &["cat", "stack", "index_copy"];

/// The policy of `op` (PyTorch's name) on `device`, or `None` when autocast leaves it alone.
pub fn policy(op: &str, device: Device) -> Option<CastPolicy> {
    let (lower, fp32) = match device {
        Device::Cuda(_) => (CUDA_LOWER, CUDA_FP32),
        _ => (CPU_LOWER, CPU_FP32),
    };
    if lower.contains(&op) {
        Some(CastPolicy::LowerPrecision)
    } else if fp32.contains(&op) {
        Some(CastPolicy::Fp32)
    } else if PROMOTE.contains(&op) {
        Some(CastPolicy::Promote)
    } else {
        None
    }
}

/// One cached cast: the source (kept alive so its address is not reused) and the result.
struct Cached {
    _source: Tensor,
    cast: Tensor,
}

#[derive(Default)]
struct State {
    /// One entry per open scope: its dtype, or `None` for a disabled scope.
    scopes: Vec<Option<DType>>,
    /// Nesting depth of listed ops' bodies (autocast is off inside them).
    suspended: usize,
    cache: HashMap<(usize, u64, DType, bool), Cached>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Closes a scope when dropped (also when the closure panics).
struct ScopeGuard;

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.scopes.pop();
            if s.scopes.is_empty() {
                s.cache.clear();
            }
        });
    }
}

fn open(dtype: Option<DType>) -> ScopeGuard {
    STATE.with(|s| s.borrow_mut().scopes.push(dtype));
    ScopeGuard
}

/// Runs `f` with autocast to `dtype` (`BF16` or `F16`) on this thread: `torch.autocast(device,
/// dtype)` for every device, with each device type's op lists.
///
/// ```
/// use ember_autograd::{autocast, DType, Tensor};
/// let x = Tensor::randn(&[4, 8]).unwrap();
/// let w = Tensor::randn(&[3, 8]).unwrap().requires_grad_(true).unwrap();
/// let y = autocast(DType::BF16, || x.linear(&w, None)).unwrap();
/// assert_eq!(y.dtype(), DType::BF16);
/// y.to_dtype(DType::F32).unwrap().sum().unwrap().backward().unwrap();
/// assert_eq!(w.grad().unwrap().dtype(), DType::F32);
/// ```
pub fn autocast<R>(dtype: DType, f: impl FnOnce() -> Result<R>) -> Result<R> {
    if !matches!(dtype, DType::BF16 | DType::F16) {
        return Err(Error::invalid("autocast", format!("the autocast dtype must be bf16 or f16, got {dtype}")));
    }
    let _scope = open(Some(dtype));
    f()
}

/// Runs `f` with autocast off (PyTorch's `autocast(enabled=False)` inside an autocast region):
/// ops run in their inputs' dtypes.
pub fn autocast_disabled<R>(f: impl FnOnce() -> R) -> R {
    let _scope = open(None);
    f()
}

/// The autocast dtype in effect on this thread, if autocast is on.
pub fn autocast_dtype() -> Option<DType> {
    STATE.with(|s| {
        let s = s.borrow();
        if s.suspended > 0 {
            None
        } else {
            s.scopes.last().copied().flatten()
        }
    })
}

/// How many casts the current scope has cached (parameters cast once per scope); 0 outside a
/// scope. A diagnostic: a weight used by several ops inside one scope counts once.
pub fn autocast_cache_len() -> usize {
    STATE.with(|s| s.borrow().cache.len())
}

/// True when autocast is on on this thread.
pub fn is_autocast_enabled() -> bool {
    autocast_dtype().is_some()
}

/// Suspends autocast while a listed op's body runs.
struct Suspend;

impl Drop for Suspend {
    fn drop(&mut self) {
        STATE.with(|s| s.borrow_mut().suspended -= 1);
    }
}

/// Runs `f` with autocast suspended (the body of an op autocast already handled).
pub(crate) fn suspended<R>(f: impl FnOnce() -> R) -> R {
    STATE.with(|s| s.borrow_mut().suspended += 1);
    let _s = Suspend;
    f()
}

/// `t` in `dtype`, through the scope's cache for parameters (leaves that require grad).
fn cached_cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    if t.dtype() == dtype {
        return Ok(t.clone());
    }
    if !(t.is_leaf() && t.requires_grad()) {
        return t.to_dtype(dtype);
    }
    let key = (std::sync::Arc::as_ptr(&t.0) as usize, t.version(), dtype, crate::is_grad_enabled());
    if let Some(c) = STATE.with(|s| s.borrow().cache.get(&key).map(|c| c.cast.clone())) {
        return Ok(c);
    }
    let cast = t.to_dtype(dtype)?;
    STATE.with(|s| s.borrow_mut().cache.insert(key, Cached { _source: t.clone(), cast: cast.clone() }));
    Ok(cast)
}

/// What a listed op does under autocast: its inputs as the policy wants them, the dtype to compute
/// in, and the dtype to return.
pub(crate) struct Plan {
    /// The inputs (floating ones cast, others as given), in order.
    pub inputs: Vec<Tensor>,
    /// The dtype the result is returned in (`None`: as computed).
    pub output: Option<DType>,
}

/// The autocast plan for `op` on `tensors` (the floating inputs it may cast; the device of the
/// first decides the list), or `None` when autocast is off or does not list `op`.
pub(crate) fn plan(op: &str, tensors: &[&Tensor]) -> Result<Option<Plan>> {
    let Some(dtype) = autocast_dtype() else { return Ok(None) };
    let Some(first) = tensors.first() else { return Ok(None) };
    let Some(policy) = policy(op, first.device()) else { return Ok(None) };
    let eligible = |t: &Tensor| t.dtype().is_float() && t.dtype() != DType::F64;
    let plan = match policy {
        CastPolicy::LowerPrecision => {
            // rounded to the low dtype, computed in f32, the result rounded once
            let inputs = tensors
                .iter()
                .map(|t| if eligible(t) { cached_cast(t, dtype)?.to_dtype(DType::F32) } else { Ok((*t).clone()) })
                .collect::<Result<_>>()?;
            let any = tensors.iter().any(|t| eligible(t));
            Plan { inputs, output: any.then_some(dtype) }
        }
        CastPolicy::Fp32 => {
            let inputs = tensors
                .iter()
                .map(|t| if eligible(t) { cached_cast(t, DType::F32) } else { Ok((*t).clone()) })
                .collect::<Result<_>>()?;
            Plan { inputs, output: None }
        }
        CastPolicy::Promote => {
            let widest = tensors.iter().filter(|t| t.dtype().is_float()).map(|t| t.dtype()).max_by_key(|d| width(*d));
            let inputs = tensors
                .iter()
                .map(|t| match widest {
                    Some(w) if t.dtype().is_float() => t.to_dtype(w),
                    _ => Ok((*t).clone()),
                })
                .collect::<Result<_>>()?;
            Plan { inputs, output: None }
        }
    };
    Ok(Some(plan))
}

/// Orders floating dtypes by width (f16 and bf16 tie; the first seen wins).
fn width(d: DType) -> u8 {
    match d {
        DType::F64 => 3,
        DType::F32 => 2,
        _ => 1,
    }
}

/// Runs op `op` (PyTorch's name, see [`policy`]) under autocast's plan for it: `body` gets the
/// inputs as the policy wants them and runs with autocast suspended; the result is cast to the
/// plan's output dtype. `Ok(None)` when autocast is off or leaves the op alone: the caller then runs
/// the op as usual. Authors of new layers call this at the top of their op to join autocast:
///
/// ```
/// use ember_autograd::{autocast, autocast_op, DType, Result, Tensor};
/// fn my_product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
///     if let Some(y) = autocast_op("matmul", &[a, b], |t| my_product(&t[0], &t[1]))? {
///         return Ok(y);
///     }
///     a.mul(b)?.sum_dim(&[-1], false)
/// }
/// let (a, b) = (Tensor::randn(&[2, 3]).unwrap(), Tensor::randn(&[2, 3]).unwrap());
/// assert_eq!(autocast(DType::BF16, || my_product(&a, &b)).unwrap().dtype(), DType::BF16);
/// ```
pub fn autocast_op(
    op: &str,
    tensors: &[&Tensor],
    body: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    Ok(autocast_op_multi(op, tensors, |t| Ok(vec![body(t)?]))?.map(|mut v| v.remove(0)))
}

/// [`autocast_op`] for ops with several results (each floating one cast to the plan's output dtype).
pub fn autocast_op_multi(
    op: &str,
    tensors: &[&Tensor],
    body: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Option<Vec<Tensor>>> {
    let Some(plan) = plan(op, tensors)? else { return Ok(None) };
    let ys = suspended(|| body(&plan.inputs))?;
    let ys = ys
        .into_iter()
        .map(|y| match plan.output {
            Some(d) if y.dtype().is_float() && y.dtype() != d => y.to_dtype(d),
            _ => Ok(y),
        })
        .collect::<Result<_>>()?;
    Ok(Some(ys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_disable_and_close() {
        assert_eq!(autocast_dtype(), None);
        autocast(DType::BF16, || {
            assert_eq!(autocast_dtype(), Some(DType::BF16));
            autocast(DType::F16, || {
                assert_eq!(autocast_dtype(), Some(DType::F16));
                Ok(())
            })?;
            autocast_disabled(|| assert_eq!(autocast_dtype(), None));
            suspended(|| assert_eq!(autocast_dtype(), None));
            assert_eq!(autocast_dtype(), Some(DType::BF16));
            Ok(())
        })
        .unwrap();
        assert_eq!(autocast_dtype(), None);
        let e = autocast(DType::F32, || Ok(())).unwrap_err().to_string();
        assert!(e.contains("bf16 or f16"), "{e}");
    }

    #[test]
    fn lists_differ_by_device_type() {
        assert_eq!(policy("linear", Device::Cpu), Some(CastPolicy::LowerPrecision));
        assert_eq!(policy("softmax", Device::Cpu), None);
        assert_eq!(policy("softmax", Device::Cuda(0)), Some(CastPolicy::Fp32));
        assert_eq!(policy("cross_entropy", Device::Cpu), Some(CastPolicy::Fp32));
        assert_eq!(policy("cat", Device::Cuda(0)), Some(CastPolicy::Promote));
        assert_eq!(policy("add", Device::Cpu), None);
    }
}
