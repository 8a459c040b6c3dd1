//! Backward formulas of the elementwise primitives, one arm per op (PyTorch's `derivatives.yaml`).
//! Written with Tensor ops, so they are differentiable themselves.

use crate::derivatives;
use crate::Tensor;
use ember_storage::{BinaryOp, Result, UnaryOp};

/// Sums a broadcast gradient back to `shape`.
pub(crate) fn sum_to(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let lead = g.ndim() - shape.len();
    let mut dims: Vec<isize> = (0..lead as isize).collect();
    for (i, &s) in shape.iter().enumerate() {
        if s == 1 && g.shape()[lead + i] != 1 {
            dims.push((lead + i) as isize);
        }
    }
    let r = if dims.is_empty() { g.clone() } else { g.sum_dim(&dims, true)? };
    r.reshape(shape.iter().map(|&s| s as isize).collect::<Vec<_>>())
}

/// The gradients of `maximum`/`minimum`/`fmax`/`fmin`: `g` goes to the input that `first` selects and
/// is split evenly on ties, as PyTorch does.
pub(crate) fn max_min_grads(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    first: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let tie = a.eq(b)?;
    let dt = g.dtype();
    let wa = first.to_dtype(dt)?.add(&tie.to_dtype(dt)?.mul(0.5)?)?;
    let wb = wa.neg()?.add(1.0)?;
    Ok((Some(g.mul(&wa)?), Some(g.mul(&wb)?)))
}

/// Expands the unary rows' `grad` column into one backward function.
macro_rules! unary_backward {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: $dom:ident,
            cpu: |$a:ident| $cpu:expr, $(int: |$ia:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$gx:ident, $gy:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        predicates: [$($P:ident($pname:ident) { cpu: |$pa:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        /// d(op(x))/dx * g, given the input `x` and the output `y` (`None` for predicates).
        pub(crate) fn unary(op: UnaryOp, x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
            match op {
                $(UnaryOp::$V => {
                    let ($gx, $gy, $gg) = (x, y, g);
                    let _ = ($gx, $gy, $gg);
                    $grad.map(Some)
                })*
                $(UnaryOp::$P)|* => Ok(None),
            }
        }
    };
}
ember_storage::unary_op_table!(unary_backward);

/// Expands the binary rows' `grad` column into one backward function.
macro_rules! binary_backward {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: [$da:ident, $db:ident],
            cpu: |$a:ident, $b:ident| $cpu:expr, $(int: |$ia:ident, $ib:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$ga:ident, $gb:ident, $go:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        compare: [$($P:ident($pname:ident) { cpu: |$pa:ident, $pb:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        /// (d/da, d/db) of `op(a, b)` times `g`, before summing back over broadcast dims.
        pub(crate) fn binary(
            op: BinaryOp,
            a: &Tensor,
            b: &Tensor,
            out: &Tensor,
            g: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            match op {
                $(BinaryOp::$V => {
                    let ($ga, $gb, $go, $gg) = (a, b, out, g);
                    let _ = ($ga, $gb, $go, $gg);
                    Ok($grad)
                })*
                $(BinaryOp::$P)|* => Ok((None, None)),
            }
        }
    };
}
ember_storage::binary_op_table!(binary_backward);
