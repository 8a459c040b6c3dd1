//! The gradient-check sweep driven by the op table: every differentiable row of
//! `ember::UnaryOp::ALL` and `ember::BinaryOp::ALL` is checked by f64 central finite differences
//! (first and second order) on inputs drawn from the row's declared domain, on any registered device
//! (PyTorch's OpInfo gradcheck, burn's backend tests). The caller picks shapes (proptest in
//! `tests/op_sweep.rs` and `tests/custom_backend.rs`).

use ember::{gradcheck, BinaryOp, DType, Device, Domain, Error, OpClass, Tensor, UnaryOp};

/// Distance kept from a domain's bounds, so finite differences stay inside it.
const MARGIN: f64 = 0.2;
const EPS: f64 = 1e-6;
const TOL: f64 = 1e-5;

/// Random f64 values of `shape` in `domain`, on `device`; with `transposed` the tensor is a
/// non-contiguous view (the transpose of a contiguous tensor of the reversed shape).
pub fn sample(shape: &[usize], domain: Domain, device: Device, transposed: bool) -> Result<Tensor, Error> {
    let stored: Vec<usize> = if transposed { shape.iter().rev().copied().collect() } else { shape.to_vec() };
    let raw = Tensor::randn(&stored)?.to_dtype(DType::F64)?.to_vec::<f64>()?;
    let mapped: Vec<f64> = raw.into_iter().map(|t| domain.map(t, MARGIN)).collect();
    let t = Tensor::from_vec(mapped, &stored)?.to(device)?;
    if transposed && shape.len() > 1 {
        let d = shape.len() as isize - 1;
        // reversing the dims of the stored tensor gives `shape` again, as a strided view
        t.permute((0..=d).rev().collect::<Vec<_>>())
    } else {
        Ok(t)
    }
}

/// What one sweep call checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Rows checked to first order.
    pub first: Vec<&'static str>,
    /// Rows checked to second order (the gradient of the gradient).
    pub second: Vec<&'static str>,
    /// Rows (or orders) skipped because their backward is not implemented, with the reason.
    pub unsupported: Vec<String>,
}

/// The unary rows that have a gradient (every row but the predicates).
pub fn differentiable_unary() -> impl Iterator<Item = UnaryOp> {
    UnaryOp::ALL.iter().copied().filter(|op| op.class() != OpClass::Predicate)
}

/// The binary rows that have a gradient (every row but comparisons and logical ops).
pub fn differentiable_binary() -> impl Iterator<Item = BinaryOp> {
    BinaryOp::ALL.iter().copied().filter(|op| op.class() != OpClass::Predicate)
}

/// `f(x)` and, with `second`, the gradient of `sum(f(x) * w)` with a graph (so gradcheck of it checks
/// the second derivative).
fn maybe_second(f: &dyn Fn(&[Tensor]) -> ember::Result<Tensor>, xs: &[Tensor], second: bool) -> ember::Result<Tensor> {
    let y = f(xs)?;
    if !second {
        return Ok(y);
    }
    // a fixed, non-uniform weight so the second derivative is not hidden by symmetry
    let w = Tensor::arange(y.numel() as i64)?
        .to_dtype(DType::F64)?
        .mul(0.25)?
        .add(0.5)?
        .reshape(y.shape().iter().map(|&s| s as isize).collect::<Vec<_>>())?;
    let w = w.to(y.device())?;
    let gs = ember::grad(&[y.mul(&w)?.sum()?], xs, None, true, true, true)?;
    // a gradient that does not depend on the inputs (add, neg) has no graph: its derivative is zero,
    // which the `0 * x` terms keep in the graph
    let mut total = xs[0].mul(0.0)?.sum()?;
    for (g, x) in gs.into_iter().zip(xs) {
        total = total.add(&x.mul(0.0)?.sum()?)?;
        if let Some(g) = g {
            total = total.add(&g.sum()?)?;
        }
    }
    Ok(total)
}

/// Checks one op to first and second order; unsupported backward formulas are recorded, any other
/// failure is returned with the op's name.
fn check_op(
    name: &'static str,
    f: &dyn Fn(&[Tensor]) -> ember::Result<Tensor>,
    xs: &[Tensor],
    out: &mut Checked,
) -> Result<(), String> {
    for second in [false, true] {
        match gradcheck(|xs| maybe_second(f, xs, second), xs, EPS, TOL) {
            Ok(_) if second => out.second.push(name),
            Ok(_) => out.first.push(name),
            Err(Error::Unsupported { .. }) => {
                out.unsupported.push(format!("{name} ({} order)", if second { "second" } else { "first" }));
                return Ok(());
            }
            Err(e) => {
                let shapes: Vec<_> = xs.iter().map(|x| x.shape().to_vec()).collect();
                let order = if second { "second" } else { "first" };
                return Err(format!("{name}: {order}-order gradcheck on inputs of shapes {shapes:?}: {e}"));
            }
        }
    }
    Ok(())
}

/// Checks every differentiable unary row on a `shape` input (a strided view with `transposed`).
pub fn sweep_unary(device: Device, shape: &[usize], transposed: bool) -> Result<Checked, String> {
    let mut out = Checked::default();
    for op in differentiable_unary() {
        let domain = op.domain().expect("differentiable rows declare a domain");
        let x = sample(shape, domain, device, transposed).map_err(|e| e.to_string())?;
        check_op(op.name(), &|xs: &[Tensor]| xs[0].unary(op), &[x], &mut out)?;
    }
    Ok(out)
}

/// Checks every differentiable binary row on inputs of shapes `a` and `b` that broadcast together.
pub fn sweep_binary(device: Device, a: &[usize], b: &[usize], transposed: bool) -> Result<Checked, String> {
    let mut out = Checked::default();
    for op in differentiable_binary() {
        let [da, db] = op.domain().expect("differentiable rows declare domains");
        let xa = sample(a, da, device, transposed).map_err(|e| e.to_string())?;
        let xb = sample(b, db, device, false).map_err(|e| e.to_string())?;
        check_op(op.name(), &|xs: &[Tensor]| xs[0].binary(op, &xs[1]), &[xa, xb], &mut out)?;
    }
    Ok(out)
}
