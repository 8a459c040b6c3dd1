//! Elementwise ops with NumPy broadcasting and PyTorch's type promotion, and the std operators.

use crate::creation::DEFAULT_FLOAT;
use crate::tensor::same_device;
use crate::Tensor;
use ember_storage::shape::broadcast_shapes;
use ember_storage::{BinaryOp, DType, DTypeKind, Error, Result, Saves, Scalar, UnaryOp};

/// The right-hand side of a binary op: a tensor or a Python-like scalar (`x.add(&y)`, `x.mul(2.0)`).
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    /// A tensor.
    T(&'a Tensor),
    /// A scalar: it changes the result's kind (int to float) but never its width.
    S(Scalar),
}

impl<'a> From<&'a Tensor> for Rhs<'a> {
    fn from(t: &'a Tensor) -> Self {
        Rhs::T(t)
    }
}
macro_rules! rhs_from {
    ($t:ty, $v:ident, $conv:expr) => {
        impl From<$t> for Rhs<'_> {
            fn from(v: $t) -> Self {
                Rhs::S(Scalar::$v($conv(v)))
            }
        }
    };
}
rhs_from!(f64, F, |v| v);
rhs_from!(f32, F, |v: f32| v as f64);
rhs_from!(i64, I, |v| v);
rhs_from!(i32, I, |v: i32| v as i64);
rhs_from!(bool, B, |v| v);

fn kind_of(s: Scalar) -> DTypeKind {
    match s {
        Scalar::F(_) => DTypeKind::Float,
        Scalar::I(_) => DTypeKind::Int,
        Scalar::B(_) => DTypeKind::Bool,
    }
}

/// PyTorch's result type of two tensors: dimensioned tensors outrank zero-dim ones of the same kind.
pub fn result_type(a: &Tensor, b: &Tensor) -> DType {
    let (da, db) = (a.dtype(), b.dtype());
    match (a.ndim() == 0, b.ndim() == 0) {
        (false, true) if db.kind() <= da.kind() => da,
        (true, false) if da.kind() <= db.kind() => db,
        _ => DType::promote(da, db),
    }
}

impl Tensor {
    /// `polygamma(n, x)`: digamma for n = 0, trigamma for n = 1; higher orders are not implemented yet.
    pub fn polygamma(&self, n: u32) -> Result<Tensor> {
        match n {
            0 => self.digamma(),
            1 => self.trigamma(),
            _ => Err(Error::unsupported("polygamma", format!("order {n} (only 0 and 1 are implemented)"))),
        }
    }

    /// `s` as a zero-dim tensor of the dtype `self op s` computes in (PyTorch's promotion with a
    /// scalar; float ops on integers in the default float dtype).
    fn scalar_operand(&self, op: BinaryOp, s: Scalar) -> Result<Tensor> {
        let mut dt = self.dtype().promote_with_scalar(kind_of(s), DEFAULT_FLOAT);
        if op.needs_float() && !dt.is_float() {
            dt = DEFAULT_FLOAT;
        }
        self.scalar_like(s, dt)
    }

    /// A zero-dim tensor holding `s`, of `dtype`, on this tensor's device.
    pub(crate) fn scalar_like(&self, s: Scalar, dtype: DType) -> Result<Tensor> {
        let buf = self.backend().full(s, dtype, 1)?;
        Ok(self.same_backend(buf, &[]))
    }

    /// Broadcasts to `shape` without copying.
    pub fn broadcast_to(&self, shape: impl crate::Dims) -> Result<Tensor> {
        let shape: &[usize] = &shape.to_sizes("broadcast_to")?;
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let out = self.view_with_layout(self.layout().expand(shape)?);
        let orig = self.shape().to_vec();
        Ok(crate::graph::record_free(out, "expand", &[self], move |g| {
            Ok(smallvec::smallvec![Some(crate::derivatives::sum_to(g, &orig)?)])
        }))
    }

    /// Applies a unary op; float ops on integer inputs compute in the default float dtype.
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let x = if !op.is_predicate() && !self.dtype().is_float() && !op.keeps_integers() {
            self.to_dtype(DEFAULT_FLOAT)?
        } else {
            self.clone()
        };
        if x.dtype() == DType::Bool && !op.is_predicate() {
            return Err(Error::dtype(op.name(), "not defined for bool tensors"));
        }
        let buf = x.backend().unary(op, x.v())?;
        let out = x.same_backend(buf, x.shape());
        if op.is_predicate() || !out.dtype().is_float() {
            return Ok(out);
        }
        let (xs, ys) = (x.clone(), out.detach());
        let y_saved = ys.clone();
        let all = [&x, &y_saved];
        let saved: &[&Tensor] = match op.saves() {
            Some(Saves::Output) => &all,
            Some(Saves::Input) => &all[..1],
            _ => &[],
        };
        Ok(crate::graph::record_saving(out, op.name(), &[&x], saved, move |g| {
            // with create_graph the output must be part of the graph: recompute it from the input
            let y = if crate::graph::is_grad_enabled() { xs.unary(op)? } else { ys.clone() };
            Ok(smallvec::smallvec![crate::derivatives::unary(op, &xs, &y, g)?])
        }))
    }

    /// Applies a binary op with broadcasting and type promotion.
    pub fn binary<'a>(&self, op: BinaryOp, rhs: impl Into<Rhs<'a>>) -> Result<Tensor> {
        match rhs.into() {
            Rhs::T(b) => self.binary_tensor(op, b),
            Rhs::S(s) => self.binary_tensor(op, &self.scalar_operand(op, s)?),
        }
    }

    fn binary_tensor(&self, op: BinaryOp, b: &Tensor) -> Result<Tensor> {
        same_device(op.name(), &[self, b])?;
        let shape = broadcast_shapes(self.shape(), b.shape(), op.name())?;
        let mut dt = result_type(self, b);
        if op.needs_float() && !dt.is_float() {
            dt = DEFAULT_FLOAT;
        }
        if op == BinaryOp::Sub && dt == DType::Bool {
            return Err(Error::dtype(
                "sub",
                "subtraction of two bool tensors is not supported; use logical_xor() instead (as in PyTorch)",
            ));
        }
        let (x, y) = (self.to_dtype(dt)?.broadcast_to(&shape)?, b.to_dtype(dt)?.broadcast_to(&shape)?);
        if op == BinaryOp::Pow && !dt.is_float() && dt != DType::Bool && y.lt(0.0)?.any()?.item()? != 0.0 {
            return Err(Error::invalid("pow", "integers to negative integer powers are not allowed (as in PyTorch)"));
        }
        let buf = x.backend().binary(op, x.v(), y.v())?;
        let out = x.same_backend(buf, &shape);
        if op.is_predicate() || !out.dtype().is_float() {
            return Ok(out);
        }
        if !crate::graph::is_grad_enabled() || !(x.requires_grad() || y.requires_grad()) {
            return Ok(out);
        }
        let saves = op.saves().unwrap_or(Saves::Nothing);
        let o = (saves == Saves::Output).then(|| out.detach());
        let (xa, yb) = (x.clone(), y.clone());
        let o_saved = o.clone();
        let all = [&x, &y, o_saved.as_ref().unwrap_or(&x)];
        let saved = match saves {
            Saves::Nothing => &all[..0],
            Saves::Input => &all[..2],
            Saves::Output => &all[..],
        };
        Ok(crate::graph::record_saving(out, op.name(), &[&x, &y], saved, move |g| {
            let o = match &o {
                Some(o) if !crate::graph::is_grad_enabled() => o.clone(),
                Some(_) => xa.binary(op, &yb)?,
                None => g.clone(),
            };
            let (ga, gb) = crate::derivatives::binary(op, &xa, &yb, &o, g)?;
            Ok(smallvec::smallvec![ga, gb])
        }))
    }

    /// `cond ? self : other` elementwise, broadcasting all three (`torch.where(cond, self, other)`).
    pub fn where_cond<'a>(cond: &Tensor, a: impl Into<Rhs<'a>>, b: impl Into<Rhs<'a>>) -> Result<Tensor> {
        let (a, b) = (a.into(), b.into());
        let reference = match (a, b) {
            (Rhs::T(t), _) | (_, Rhs::T(t)) => t.clone(),
            _ => cond.clone(),
        };
        let to_t = |r: Rhs, other: &Rhs| -> Result<Tensor> {
            match r {
                Rhs::T(t) => Ok(t.clone()),
                Rhs::S(s) => {
                    let dt = match other {
                        Rhs::T(t) => t.dtype().promote_with_scalar(kind_of(s), DEFAULT_FLOAT),
                        Rhs::S(_) if kind_of(s) == DTypeKind::Float => DEFAULT_FLOAT,
                        Rhs::S(_) => DType::I64,
                    };
                    reference.scalar_like(s, dt)
                }
            }
        };
        let (ta, tb) = (to_t(a, &b)?, to_t(b, &a)?);
        same_device("where", &[cond, &ta, &tb])?;
        if cond.dtype() != DType::Bool {
            return Err(Error::dtype("where", format!("condition must be bool, got {}", cond.dtype())));
        }
        let shape = broadcast_shapes(&broadcast_shapes(cond.shape(), ta.shape(), "where")?, tb.shape(), "where")?;
        let dt = result_type(&ta, &tb);
        let (c, x, y) = (
            cond.broadcast_to(&shape)?,
            ta.to_dtype(dt)?.broadcast_to(&shape)?,
            tb.to_dtype(dt)?.broadcast_to(&shape)?,
        );
        let buf = x.backend().where_cond(c.v(), x.v(), y.v())?;
        let out = x.same_backend(buf, &shape);
        if !out.dtype().is_float() {
            return Ok(out);
        }
        let cc = c.clone();
        Ok(crate::graph::record_saving(out, "where", &[&x, &y], &[&c], move |g| {
            Ok(smallvec::smallvec![Some(Tensor::where_cond(&cc, g, 0.0)?), Some(Tensor::where_cond(&cc, 0.0, g)?)])
        }))
    }

    /// `torch.where(cond, self, other)` as a method on the condition-selected tensor.
    pub fn where_self<'a>(&'a self, cond: &Tensor, other: impl Into<Rhs<'a>>) -> Result<Tensor> {
        Tensor::where_cond(cond, self, other)
    }
}

/// One `Tensor` method for a table row whose `method` column is `yes`.
macro_rules! tensor_method {
    (no, $kind:ident, $V:ident, $name:ident) => {};
    (yes, unary, $V:ident, $name:ident) => {
        #[doc = concat!("Elementwise `", stringify!($name), "` (`torch.", stringify!($name), "`).")]
        pub fn $name(&self) -> Result<Tensor> {
            self.unary(UnaryOp::$V)
        }
    };
    (yes, binary, $V:ident, $name:ident) => {
        #[doc = concat!("Elementwise `", stringify!($name), "` with broadcasting (`torch.", stringify!($name), "`).")]
        pub fn $name<'a>(&self, other: impl Into<Rhs<'a>>) -> Result<Tensor> {
            self.binary(BinaryOp::$V, other)
        }
    };
}
/// Expands the unary op table into the `Tensor` methods (`x.exp()`, `x.isnan()`, ...).
macro_rules! unary_methods {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: $dom:ident,
            cpu: |$a:ident| $cpu:expr, $(int: |$ia:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$gx:ident, $gy:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        predicates: [$($P:ident($pname:ident) { cpu: |$pa:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        impl Tensor {
            $(tensor_method!($method, unary, $V, $name);)*
            $(tensor_method!(yes, unary, $P, $pname);)*
        }
    };
}
ember_storage::unary_op_table!(unary_methods);

/// Expands the binary op table into the `Tensor` methods (`x.add(&y)`, `x.lt(0.0)`, ...).
macro_rules! binary_methods {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: [$da:ident, $db:ident],
            cpu: |$a:ident, $b:ident| $cpu:expr, $(int: |$ia:ident, $ib:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$ga:ident, $gb:ident, $go:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        compare: [$($P:ident($pname:ident) { cpu: |$pa:ident, $pb:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        impl Tensor {
            $(tensor_method!($method, binary, $V, $name);)*
            $(tensor_method!(yes, binary, $P, $pname);)*
        }
    };
}

ember_storage::binary_op_table!(binary_methods);

impl Tensor {
    /// `s op self` for a scalar `s` on the left (`1.0 - &x`, `2.0 / &x`): the scalar becomes a 0-dim
    /// tensor of the dtype `self op s` would have, so promotion and rounding are PyTorch's.
    pub fn binary_scalar_lhs<'a>(&self, op: BinaryOp, lhs: impl Into<Rhs<'a>>) -> Result<Tensor> {
        match lhs.into() {
            Rhs::T(a) => a.binary_tensor(op, self),
            Rhs::S(s) => self.scalar_operand(op, s)?.binary_tensor(op, self),
        }
    }
}

/// The std operators (`&a + &b`, `a * 2`, `1.0 - &x`, `-x`, `a += &b`) for every mix of `Tensor`,
/// `&Tensor` and the scalars `f64` and `i64` (one float and one integer type, so that a literal's
/// type is inferred and `(0.5 * &x).exp()` compiles; an `f32` variable needs `f64::from`):
/// conveniences that panic with the op's error
/// message (naming the op and the shapes), as slice indexing does. Use the methods (`a.add(&b)?`)
/// where shapes come from user input.
///
/// Compound assignment (`a += &b`) rebinds `a` to the new tensor `a + b`; it never writes into `a`'s
/// storage, so it is safe under autograd and for tensors shared with other handles (views, tied
/// weights). For PyTorch's in-place update use the `_` methods (`a.add_(&b)?`).
macro_rules! std_ops {
    ($($trait:ident $method:ident $assign_trait:ident $assign:ident => $op:ident),*) => {$(
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                self.binary(BinaryOp::$op, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                std::ops::$trait::$method(&self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                std::ops::$trait::$method(&self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                std::ops::$trait::$method(self, &rhs)
            }
        }
        impl std::ops::$assign_trait<&Tensor> for Tensor {
            fn $assign(&mut self, rhs: &Tensor) {
                *self = std::ops::$trait::$method(&*self, rhs);
            }
        }
        impl std::ops::$assign_trait<Tensor> for Tensor {
            fn $assign(&mut self, rhs: Tensor) {
                *self = std::ops::$trait::$method(&*self, &rhs);
            }
        }
        std_ops!(@scalars $trait $method $assign_trait $assign $op; f64, i64);
    )*};
    (@scalars $trait:ident $method:ident $assign_trait:ident $assign:ident $op:ident; $($s:ty),*) => {$(
        impl std::ops::$trait<$s> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: $s) -> Tensor {
                self.binary(BinaryOp::$op, rhs).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$trait<$s> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: $s) -> Tensor {
                std::ops::$trait::$method(&self, rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for $s {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                rhs.binary_scalar_lhs(BinaryOp::$op, self).unwrap_or_else(|e| panic!("{e}"))
            }
        }
        impl std::ops::$trait<Tensor> for $s {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                std::ops::$trait::$method(self, &rhs)
            }
        }
        impl std::ops::$assign_trait<$s> for Tensor {
            fn $assign(&mut self, rhs: $s) {
                *self = std::ops::$trait::$method(&*self, rhs);
            }
        }
    )*};
}
std_ops!(
    Add add AddAssign add_assign => Add,
    Sub sub SubAssign sub_assign => Sub,
    Mul mul MulAssign mul_assign => Mul,
    Div div DivAssign div_assign => Div
);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        self.unary(UnaryOp::Neg).unwrap_or_else(|e| panic!("{e}"))
    }
}
impl std::ops::Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        -&self
    }
}
