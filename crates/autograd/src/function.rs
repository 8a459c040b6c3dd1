//! User-defined differentiable ops ([`Function`]) and activation checkpointing ([`checkpoint`]).

use crate::graph::{enable_grad, is_grad_enabled, no_grad, record_saving};
use crate::Tensor;
use ember_storage::Result;

/// What a custom op's forward keeps for its backward.
#[derive(Debug, Default)]
pub struct Context {
    saved: Vec<Tensor>,
    /// Non-tensor values the backward needs.
    pub values: Vec<f64>,
}

impl Context {
    /// Saves tensors for backward; modifying them in place afterwards makes backward fail clearly.
    pub fn save_for_backward(&mut self, tensors: &[&Tensor]) {
        self.saved.extend(tensors.iter().map(|t| t.detach()));
    }
    /// The saved tensors, in order.
    pub fn saved_tensors(&self) -> &[Tensor] {
        &self.saved
    }
}

/// A differentiable op written by a user: `forward` runs without recording, `backward` maps the
/// gradient of the output to one optional gradient per input (it may use any Tensor ops, so it is
/// itself differentiable when the backward pass is recorded).
///
/// ```
/// use ember_autograd::{apply, gradcheck, Context, Function, Result, Tensor};
/// struct Cube;
/// impl Function for Cube {
///     fn forward(&self, ctx: &mut Context, x: &[Tensor]) -> Result<Tensor> {
///         ctx.save_for_backward(&[&x[0]]);
///         x[0].pow(3.0)
///     }
///     fn backward(&self, ctx: &Context, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
///         let x = &ctx.saved_tensors()[0];
///         Ok(vec![Some(g.mul(&x.mul(x)?.mul(3.0)?)?)])
///     }
/// }
/// let x = Tensor::randn(&[4]).unwrap();
/// gradcheck(|xs| apply(Cube, xs), &[x], 1e-6, 1e-6).unwrap();
/// ```
pub trait Function: Send + Sync + 'static {
    /// Computes the output from the inputs.
    fn forward(&self, ctx: &mut Context, inputs: &[Tensor]) -> Result<Tensor>;
    /// Gradients of the inputs, given the gradient of the output.
    fn backward(&self, ctx: &Context, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
    /// The name shown by `grad_fn_name`.
    fn name(&self) -> &'static str {
        "custom"
    }
}

/// Runs a [`Function`] on `inputs`, recording it in the graph.
pub fn apply<F: Function>(f: F, inputs: &[Tensor]) -> Result<Tensor> {
    let mut ctx = Context::default();
    let out = no_grad(|| f.forward(&mut ctx, inputs))?;
    let saved: Vec<Tensor> = ctx.saved.clone();
    let saved_refs: Vec<&Tensor> = saved.iter().collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let name = f.name();
    let metas: Vec<(Vec<usize>, ember_storage::DType)> =
        inputs.iter().map(|t| (t.shape().to_vec(), t.dtype())).collect();
    Ok(record_saving(out, name, &refs, &saved_refs, move |g| {
        let grads = f.backward(&ctx, g)?;
        check_function_grads(name, &metas, &grads)?;
        Ok(crate::graph::Grads::from_vec(grads))
    }))
}

/// A custom backward must return one gradient (or `None`) per input, each of its input's shape and
/// a floating dtype, as PyTorch checks ("function MyBackward returned an incorrect number of
/// gradients (expected 2, got 1)").
fn check_function_grads(
    name: &str,
    inputs: &[(Vec<usize>, ember_storage::DType)],
    grads: &[Option<Tensor>],
) -> Result<()> {
    if grads.len() != inputs.len() {
        return Err(ember_storage::Error::autograd(format!(
            "function {name}Backward returned an incorrect number of gradients (expected {}, got {})",
            inputs.len(),
            grads.len()
        )));
    }
    for (i, (g, (shape, dtype))) in grads.iter().zip(inputs).enumerate() {
        if let Some(g) = g {
            if g.shape() != shape.as_slice() || (dtype.is_float() && !g.dtype().is_float()) {
                return Err(ember_storage::Error::autograd(format!(
                    "function {name}Backward returned an invalid gradient at index {i}: got shape {:?} ({}) but \
                     expected shape {shape:?} ({dtype})",
                    g.shape(),
                    g.dtype()
                )));
            }
        }
    }
    Ok(())
}

/// Activation checkpointing: runs `f` without keeping its intermediate tensors, and recomputes them
/// during backward. Gradients reach `inputs` and every leaf `f` uses (parameters captured by `f`).
pub fn checkpoint(
    f: impl Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static,
    inputs: &[Tensor],
) -> Result<Tensor> {
    let out = no_grad(|| f(inputs))?;
    let ins: Vec<Tensor> = inputs.to_vec();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    Ok(crate::graph::record(out, "checkpoint", &refs, move |g| {
        let create = is_grad_enabled();
        let xs: Vec<Tensor> = ins
            .iter()
            .map(|t| if t.requires_grad() { t.detach().requires_grad_(true) } else { Ok(t.detach()) })
            .collect::<Result<_>>()?;
        let y = enable_grad(|| f(&xs))?;
        y.backward_opts(g, false, create)?;
        Ok(xs.iter().map(|x| x.grad()).collect())
    }))
}
