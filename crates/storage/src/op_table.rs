//! The op table: one row per elementwise op, the only place its name, dtype class, saved values,
//! CPU function, CUDA C expression, backward formula and gradient-check domain are written
//! (DESIGN.md decision 11; PyTorch's OpInfo + `derivatives.yaml` in one place).
//!
//! The table is two macros, [`unary_op_table!`](crate::unary_op_table) and [`binary_op_table!`](crate::binary_op_table). Each takes the path of a
//! *callback* macro and calls it with every row, so each crate expands the columns it needs and
//! nothing else: `ember-storage` the op enums and their descriptors (`name`, `class`, `saves`,
//! `domain`, `cuda_expr`), `ember-ops-cpu` the CPU kernels, `ember-autograd` the `Tensor` methods
//! and the backward arms, the test crate its dispatch and gradient sweep. A backend outside this
//! workspace can do the same (`ember_storage::unary_op_table!(my_callback)`). Adding an op is one
//! row here, plus a hand-written fast kernel only where one pays.
//!
//! # Row syntax
//! Unary `math` rows:
//! ```text
//! Variant(name) { method: yes|no, class: Float|KeepsInt, saves: Nothing|Input|Output, domain: D,
//!                 cpu: |a| expr, [int: |a| expr,] cuda: "expr", grad: |x, y, g| expr }
//! ```
//! Unary `predicates` rows: `Variant(name) { cpu: |a| bool expr, cuda: "expr" }`.
//! Binary `math` rows: the same with `domain: [Da, Db]`, `cpu: |a, b| expr`, `int: |a, b| expr` and
//! `grad: |a, b, out, g| (Option<Tensor>, Option<Tensor>)`. Binary `compare` rows: as unary predicates.
//!
//! What each column means where it is expanded:
//! - `name`: the PyTorch (and conformance) name, and the `Tensor` method when `method: yes`.
//! - `class`: `Float` ops compute in a float dtype (integer inputs are promoted by the Tensor layer);
//!   `KeepsInt` ops are closed over the integers and their `int` closure runs on `i64` (wrapping, as
//!   PyTorch's integer arithmetic); predicate/compare rows return bool.
//! - `saves`: what backward reads besides the incoming gradient, so an in-place change to it makes
//!   backward fail (`Output`: input(s) and output; `Input`: input(s); `Nothing`).
//! - `cpu`: the scalar function over a float type `T` (ops-cpu's `Real`: `f32`/`f64`; f16/bf16 go
//!   through f32). Paths such as `scalar::sigmoid` resolve in ops-cpu; methods such as `fast_exp`
//!   are its vectorised forms. Predicate closures take an `f64`; compare closures two values of the
//!   operands' element type.
//! - `cuda`: a CUDA C expression of `x` (unary) or `a`, `b` (binary), of type `T` (`float` for
//!   f32/f16/bf16, `double` for f64); constants are written `T(c)` so the f64 path keeps full
//!   precision; `ember_*` helpers are defined by the CUDA backend's prelude.
//! - `grad`: the backward formula in `Tensor` ops (so it is itself differentiable); unary: `x` the
//!   input, `y` the output, `g` the incoming gradient, returning `Result<Tensor>`; binary: a tuple of
//!   the two (not yet broadcast-reduced) input gradients.
//! - `domain`: where the gradient sweep samples inputs ([`crate::ops::Domain`]).

/// Calls `$callback! { math: [rows] predicates: [rows] }` with every unary elementwise op.
/// See the module documentation for the row syntax.
#[macro_export]
macro_rules! unary_op_table {
    ($callback:path) => {
        $callback! {
            math: [
                Neg(neg) { method: yes, class: KeepsInt, saves: Nothing, domain: Real,
                    cpu: |a| -a, int: |a| a.wrapping_neg(), cuda: "-x", grad: |x, y, g| g.neg() },
                Abs(abs) { method: yes, class: KeepsInt, saves: Input, domain: Real,
                    cpu: |a| a.abs(), int: |a| a.wrapping_abs(), cuda: "fabs(x)",
                    grad: |x, y, g| g.mul(&x.sign()?) },
                Sign(sign) { method: yes, class: KeepsInt, saves: Nothing, domain: Real,
                    cpu: |a| scalar::sign(a), int: |a| a.signum(), cuda: "ember_sign(x)",
                    grad: |x, y, g| g.zeros_like() },
                Square(square) { method: yes, class: KeepsInt, saves: Input, domain: Real,
                    cpu: |a| a * a, int: |a| a.wrapping_mul(a), cuda: "x * x",
                    grad: |x, y, g| g.mul(&x.mul(2.0)?) },
                Exp(exp) { method: yes, class: Float, saves: Output, domain: Real,
                    cpu: |a| a.fast_exp(), cuda: "exp(x)", grad: |x, y, g| g.mul(y) },
                Exp2(exp2) { method: yes, class: Float, saves: Output, domain: Real,
                    cpu: |a| a.exp2(), cuda: "exp2(x)", grad: |x, y, g| g.mul(&y.mul(::std::f64::consts::LN_2)?) },
                Expm1(expm1) { method: yes, class: Float, saves: Output, domain: Real,
                    cpu: |a| a.exp_m1(), cuda: "expm1(x)", grad: |x, y, g| g.mul(&y.add(1.0)?) },
                Log(log) { method: yes, class: Float, saves: Input, domain: Positive,
                    cpu: |a| a.ln(), cuda: "log(x)", grad: |x, y, g| g.div(x) },
                Log2(log2) { method: yes, class: Float, saves: Input, domain: Positive,
                    cpu: |a| a.log2(), cuda: "log2(x)", grad: |x, y, g| g.div(&x.mul(::std::f64::consts::LN_2)?) },
                Log10(log10) { method: yes, class: Float, saves: Input, domain: Positive,
                    cpu: |a| a.log10(), cuda: "log10(x)",
                    grad: |x, y, g| g.div(&x.mul(::std::f64::consts::LN_10)?) },
                Log1p(log1p) { method: yes, class: Float, saves: Input, domain: AboveMinusOne,
                    cpu: |a| a.ln_1p(), cuda: "log1p(x)", grad: |x, y, g| g.div(&x.add(1.0)?) },
                Sqrt(sqrt) { method: yes, class: Float, saves: Output, domain: Positive,
                    cpu: |a| a.sqrt(), cuda: "sqrt(x)", grad: |x, y, g| g.div(&y.mul(2.0)?) },
                Rsqrt(rsqrt) { method: yes, class: Float, saves: Output, domain: Positive,
                    cpu: |a| a.sqrt().recip(), cuda: "rsqrt(x)", grad: |x, y, g| g.mul(&y.pow(3.0)?.mul(-0.5)?) },
                Reciprocal(reciprocal) { method: yes, class: Float, saves: Output, domain: Positive,
                    cpu: |a| a.recip(), cuda: "T(1) / x", grad: |x, y, g| g.mul(&y.mul(y)?.neg()?) },
                Sin(sin) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.sin(), cuda: "sin(x)", grad: |x, y, g| g.mul(&x.cos()?) },
                Cos(cos) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.cos(), cuda: "cos(x)", grad: |x, y, g| g.mul(&x.sin()?.neg()?) },
                Tan(tan) { method: yes, class: Float, saves: Output, domain: Centered,
                    cpu: |a| a.tan(), cuda: "tan(x)", grad: |x, y, g| g.mul(&y.mul(y)?.add(1.0)?) },
                Asin(asin) { method: yes, class: Float, saves: Input, domain: OpenUnit,
                    cpu: |a| a.asin(), cuda: "asin(x)", grad: |x, y, g| g.div(&x.mul(x)?.neg()?.add(1.0)?.sqrt()?) },
                Acos(acos) { method: yes, class: Float, saves: Input, domain: OpenUnit,
                    cpu: |a| a.acos(), cuda: "acos(x)",
                    grad: |x, y, g| g.div(&x.mul(x)?.neg()?.add(1.0)?.sqrt()?)?.neg() },
                Atan(atan) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.atan(), cuda: "atan(x)", grad: |x, y, g| g.div(&x.mul(x)?.add(1.0)?) },
                Sinh(sinh) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.sinh(), cuda: "sinh(x)", grad: |x, y, g| g.mul(&x.cosh()?) },
                Cosh(cosh) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.cosh(), cuda: "cosh(x)", grad: |x, y, g| g.mul(&x.sinh()?) },
                Tanh(tanh) { method: yes, class: Float, saves: Output, domain: Real,
                    cpu: |a| a.fast_tanh(), cuda: "tanh(x)", grad: |x, y, g| g.mul(&y.mul(y)?.neg()?.add(1.0)?) },
                Asinh(asinh) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.asinh(), cuda: "asinh(x)", grad: |x, y, g| g.div(&x.mul(x)?.add(1.0)?.sqrt()?) },
                Acosh(acosh) { method: yes, class: Float, saves: Input, domain: AboveOne,
                    cpu: |a| a.acosh(), cuda: "acosh(x)", grad: |x, y, g| g.div(&x.mul(x)?.sub(1.0)?.sqrt()?) },
                Atanh(atanh) { method: yes, class: Float, saves: Input, domain: OpenUnit,
                    cpu: |a| a.atanh(), cuda: "atanh(x)", grad: |x, y, g| g.div(&x.mul(x)?.neg()?.add(1.0)?) },
                Sigmoid(sigmoid) { method: yes, class: Float, saves: Output, domain: Real,
                    cpu: |a| scalar::sigmoid(a), cuda: "ember_sigmoid(x)",
                    grad: |x, y, g| g.mul(&y.mul(&y.neg()?.add(1.0)?)?) },
                Relu(relu) { method: yes, class: KeepsInt, saves: Input, domain: Real,
                    cpu: |a| if a > T::zero() || a.is_nan() { a } else { T::zero() }, int: |a| a.max(0),
                    cuda: "(x > T(0) || isnan(x)) ? x : T(0)",
                    grad: |x, y, g| g.binary($crate::BinaryOp::ThresholdBackward, x) },
                Silu(silu) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a * scalar::sigmoid(a), cuda: "x * ember_sigmoid(x)",
                    grad: |x, y, g| {
                        let s = x.sigmoid()?;
                        g.mul(&s.mul(&x.mul(&s.neg()?.add(1.0)?)?.add(1.0)?)?)
                    } },
                Gelu(gelu) { method: no, class: Float, saves: Input, domain: Real,
                    cpu: |a| T::c(0.5) * a * (T::one() + (a * T::c(::std::f64::consts::FRAC_1_SQRT_2)).erf()),
                    cuda: "T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)))",
                    grad: |x, y, g| {
                        let cdf = x.mul(::std::f64::consts::FRAC_1_SQRT_2)?.erf()?.add(1.0)?.mul(0.5)?;
                        let pdf = x.mul(x)?.mul(-0.5)?.exp()?.mul(1.0 / (2.0 * ::std::f64::consts::PI).sqrt())?;
                        g.mul(&cdf.add(&x.mul(&pdf)?)?)
                    } },
                GeluTanh(gelu_tanh) { method: no, class: Float, saves: Input, domain: Real,
                    cpu: |a| {
                        let k = T::c((2.0 / ::std::f64::consts::PI).sqrt());
                        T::c(0.5) * a * (T::one() + (k * (a + T::c(0.044715) * a * a * a)).tanh())
                    },
                    cuda: "T(0.5) * x * (T(1) + tanh(T(0.79788456080286535588) * (x + T(0.044715) * x * x * x)))",
                    grad: |x, y, g| {
                        let k = (2.0 / ::std::f64::consts::PI).sqrt();
                        let x2 = x.mul(x)?;
                        let t = x.add(&x2.mul(x)?.mul(0.044715)?)?.mul(k)?.tanh()?;
                        let left = t.add(1.0)?.mul(0.5)?;
                        let right = x.mul(0.5)?.mul(&t.mul(&t)?.neg()?.add(1.0)?)?
                            .mul(&x2.mul(3.0 * 0.044715)?.add(1.0)?.mul(k)?)?;
                        g.mul(&left.add(&right)?)
                    } },
                Erf(erf) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.erf(), cuda: "erf(x)",
                    grad: |x, y, g| g.mul(&x.mul(x)?.neg()?.exp()?.mul(2.0 / ::std::f64::consts::PI.sqrt())?) },
                Erfc(erfc) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| a.erfc(), cuda: "erfc(x)",
                    grad: |x, y, g| g.mul(&x.mul(x)?.neg()?.exp()?.mul(-2.0 / ::std::f64::consts::PI.sqrt())?) },
                Erfinv(erfinv) { method: yes, class: Float, saves: Output, domain: OpenUnit,
                    cpu: |a| a.erfinv(), cuda: "erfinv(x)",
                    grad: |x, y, g| g.mul(&y.mul(y)?.exp()?.mul(::std::f64::consts::PI.sqrt() / 2.0)?) },
                Lgamma(lgamma) { method: yes, class: Float, saves: Input, domain: Positive,
                    cpu: |a| a.lgamma(), cuda: "lgamma(x)", grad: |x, y, g| g.mul(&x.digamma()?) },
                Digamma(digamma) { method: yes, class: Float, saves: Input, domain: Positive,
                    cpu: |a| a.digamma(), cuda: "ember_digamma(x)", grad: |x, y, g| g.mul(&x.trigamma()?) },
                Trigamma(trigamma) { method: yes, class: Float, saves: Input, domain: Positive,
                    cpu: |a| a.trigamma(), cuda: "ember_trigamma(x)",
                    grad: |x, y, g| Err($crate::Error::unsupported(
                        "trigamma backward", "polygamma(2, x) is not implemented yet")) },
                Floor(floor) { method: yes, class: KeepsInt, saves: Nothing, domain: Real,
                    cpu: |a| a.floor(), int: |a| a, cuda: "floor(x)", grad: |x, y, g| g.zeros_like() },
                Ceil(ceil) { method: yes, class: KeepsInt, saves: Nothing, domain: Real,
                    cpu: |a| a.ceil(), int: |a| a, cuda: "ceil(x)", grad: |x, y, g| g.zeros_like() },
                Round(round) { method: yes, class: KeepsInt, saves: Nothing, domain: Real,
                    cpu: |a| T::c(Element::to_f64(a).round_ties_even()), int: |a| a, cuda: "rint(x)",
                    grad: |x, y, g| g.zeros_like() },
                Trunc(trunc) { method: yes, class: KeepsInt, saves: Nothing, domain: Real,
                    cpu: |a| a.trunc(), int: |a| a, cuda: "trunc(x)", grad: |x, y, g| g.zeros_like() },
                Sinc(sinc) { method: yes, class: Float, saves: Input, domain: Real,
                    cpu: |a| if a == T::zero() { T::one() } else {
                        let p = a * T::c(::std::f64::consts::PI);
                        p.sin() / p
                    },
                    cuda: "(x == T(0)) ? T(1) : sin(T(3.14159265358979323846) * x) / (T(3.14159265358979323846) * x)",
                    grad: |x, y, g| {
                        // (pi x cos(pi x) - sin(pi x)) / (pi x^2), 0 at x = 0
                        let p = x.mul(::std::f64::consts::PI)?;
                        let zero = x.eq(0.0)?;
                        let den = Tensor::where_cond(&zero, 1.0, &p.mul(x)?)?;
                        let d = p.mul(&p.cos()?)?.sub(&p.sin()?)?.div(&den)?;
                        g.mul(&Tensor::where_cond(&zero, 0.0, &d)?)
                    } },
                Frac(frac) { method: yes, class: Float, saves: Nothing, domain: Real,
                    cpu: |a| a - a.trunc(), cuda: "x - trunc(x)", grad: |x, y, g| Ok(g.clone()) },
            ]
            predicates: [
                IsNan(isnan) { cpu: |a| a.is_nan(), cuda: "isnan(x)" },
                IsInf(isinf) { cpu: |a| a.is_infinite(), cuda: "isinf(x)" },
                IsFinite(isfinite) { cpu: |a| a.is_finite(), cuda: "isfinite(x)" },
                LogicalNot(logical_not) { cpu: |a| a == 0.0, cuda: "x == T(0)" },
            ]
        }
    };
}

/// Calls `$callback! { math: [rows] compare: [rows] }` with every binary elementwise op.
/// See the module documentation for the row syntax.
#[macro_export]
macro_rules! binary_op_table {
    ($callback:path) => {
        $callback! {
            math: [
                Add(add) { method: yes, class: KeepsInt, saves: Nothing, domain: [Real, Real],
                    cpu: |a, b| a + b, int: |a, b| a.wrapping_add(b), cuda: "a + b",
                    grad: |a, b, out, g| (Some(g.clone()), Some(g.clone())) },
                Sub(sub) { method: yes, class: KeepsInt, saves: Nothing, domain: [Real, Real],
                    cpu: |a, b| a - b, int: |a, b| a.wrapping_sub(b), cuda: "a - b",
                    grad: |a, b, out, g| (Some(g.clone()), Some(g.neg()?)) },
                Mul(mul) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Real],
                    cpu: |a, b| a * b, int: |a, b| a.wrapping_mul(b), cuda: "a * b",
                    grad: |a, b, out, g| (Some(g.mul(b)?), Some(g.mul(a)?)) },
                Div(div) { method: yes, class: Float, saves: Input, domain: [Real, Positive],
                    cpu: |a, b| a / b, cuda: "a / b",
                    grad: |a, b, out, g| (Some(g.div(b)?), Some(g.mul(&a.div(&b.mul(b)?)?)?.neg()?)) },
                Pow(pow) { method: yes, class: KeepsInt, saves: Output, domain: [Positive, Real],
                    cpu: |a, b| a.powf(b),
                    int: |a, b| if b >= 0 {
                        a.wrapping_pow(b.min(u32::MAX as i64) as u32)
                    } else {
                        // only 1 and -1 have integer reciprocals (negative exponents are rejected
                        // above the backend, as in PyTorch; this keeps the kernel total)
                        match a { 1 => 1, -1 => if b % 2 == 0 { 1 } else { -1 }, _ => 0 }
                    },
                    cuda: "pow(a, b)",
                    grad: |a, b, out, g| {
                        // d/da = b * a^(b - 1), defined as 0 where b == 0 (as PyTorch; 0 * inf otherwise)
                        let ga = g.mul(&b.mul(&a.pow(&b.sub(1.0)?)?)?)?;
                        let ga = Tensor::where_cond(&b.eq(0.0)?, 0.0, &ga)?;
                        // d/db = out * log(a); PyTorch defines it as 0 where a == 0 and b >= 0
                        let gb = g.mul(&out.mul(&a.log()?)?)?;
                        let gb = Tensor::where_cond(&a.eq(0.0)?.logical_and(&b.ge(0.0)?)?, 0.0, &gb)?;
                        (Some(ga), Some(gb))
                    } },
                Maximum(maximum) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Real],
                    cpu: |a, b| if a.is_nan() || b.is_nan() { T::nan() } else { a.max(b) }, int: |a, b| a.max(b),
                    cuda: "(isnan(a) || isnan(b)) ? (a + b) : fmax(a, b)",
                    grad: |a, b, out, g| derivatives::max_min_grads(a, b, g, &a.gt(b)?)? },
                Minimum(minimum) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Real],
                    cpu: |a, b| if a.is_nan() || b.is_nan() { T::nan() } else { a.min(b) }, int: |a, b| a.min(b),
                    cuda: "(isnan(a) || isnan(b)) ? (a + b) : fmin(a, b)",
                    grad: |a, b, out, g| derivatives::max_min_grads(a, b, g, &a.lt(b)?)? },
                Fmax(fmax) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Real],
                    cpu: |a, b| a.max(b), int: |a, b| a.max(b), cuda: "fmax(a, b)",
                    grad: |a, b, out, g| derivatives::max_min_grads(a, b, g, &a.gt(b)?)? },
                Fmin(fmin) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Real],
                    cpu: |a, b| a.min(b), int: |a, b| a.min(b), cuda: "fmin(a, b)",
                    grad: |a, b, out, g| derivatives::max_min_grads(a, b, g, &a.lt(b)?)? },
                Atan2(atan2) { method: yes, class: Float, saves: Input, domain: [Real, Positive],
                    cpu: |a, b| a.atan2(b), cuda: "atan2(a, b)",
                    grad: |a, b, out, g| {
                        // 0 at the origin, where PyTorch defines it so
                        let d = a.mul(a)?.add(&b.mul(b)?)?;
                        let origin = d.eq(0.0)?;
                        let d = Tensor::where_cond(&origin, 1.0, &d)?;
                        let ga = Tensor::where_cond(&origin, 0.0, &g.mul(b)?.div(&d)?)?;
                        let gb = Tensor::where_cond(&origin, 0.0, &g.mul(a)?.div(&d)?.neg()?)?;
                        (Some(ga), Some(gb))
                    } },
                Remainder(remainder) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Positive],
                    cpu: |a, b| scalar::py_rem(a, b),
                    // wrapping: i64::MIN by -1 gives 0 as in PyTorch, instead of an overflow panic
                    int: |a, b| a.wrapping_rem_euclid(b) + if b < 0 && a.wrapping_rem_euclid(b) != 0 { b } else { 0 },
                    cuda: "ember_remainder(a, b)",
                    grad: |a, b, out, g| (Some(g.clone()), Some(g.mul(&a.div(b)?.floor()?)?.neg()?)) },
                Fmod(fmod) { method: yes, class: KeepsInt, saves: Input, domain: [Real, Positive],
                    cpu: |a, b| a % b, int: |a, b| a.wrapping_rem(b), cuda: "fmod(a, b)",
                    grad: |a, b, out, g| (Some(g.clone()), Some(g.mul(&a.div(b)?.trunc()?)?.neg()?)) },
                Copysign(copysign) { method: yes, class: Float, saves: Output, domain: [Real, Real],
                    cpu: |a, b| a.abs() * if b.is_sign_negative() { -T::one() } else { T::one() },
                    cuda: "copysign(a, b)",
                    grad: |a, b, out, g| {
                        let s = Tensor::where_cond(&a.eq(0.0)?, 0.0, &out.div(a)?)?;
                        (Some(g.mul(&s)?), Some(g.zeros_like()?))
                    } },
                Hypot(hypot) { method: yes, class: Float, saves: Output, domain: [Real, Real],
                    cpu: |a, b| a.hypot(b), cuda: "hypot(a, b)",
                    grad: |a, b, out, g| (Some(g.mul(a)?.div(out)?), Some(g.mul(b)?.div(out)?)) },
                FloorDivide(floor_divide) { method: yes, class: KeepsInt, saves: Nothing, domain: [Real, Positive],
                    cpu: |a, b| scalar::floor_div(a, b),
                    int: |a, b| a.wrapping_div_euclid(b)
                        .wrapping_sub(if b < 0 && a.wrapping_rem_euclid(b) != 0 { 1 } else { 0 }),
                    cuda: "ember_floor_divide(a, b)",
                    grad: |a, b, out, g| (Some(g.zeros_like()?), Some(g.zeros_like()?)) },
                // `a` where `b > 0`, else 0 (a NaN `b` passes `a`): PyTorch's `threshold_backward(a, b, 0)`,
                // relu's gradient in one pass.
                ThresholdBackward(threshold_backward) { method: no, class: KeepsInt, saves: Input, domain: [Real, Real],
                    cpu: |a, b| if b <= T::zero() { T::zero() } else { a }, int: |a, b| if b <= 0 { 0 } else { a },
                    cuda: "(b <= T(0)) ? T(0) : a",
                    grad: |a, b, out, g| (Some(g.binary($crate::BinaryOp::ThresholdBackward, b)?), Some(g.zeros_like()?)) },
            ]
            compare: [
                Eq(eq) { cpu: |a, b| a == b, cuda: "a == b" },
                Ne(ne) { cpu: |a, b| a != b, cuda: "a != b" },
                Lt(lt) { cpu: |a, b| a < b, cuda: "a < b" },
                Le(le) { cpu: |a, b| a <= b, cuda: "a <= b" },
                Gt(gt) { cpu: |a, b| a > b, cuda: "a > b" },
                Ge(ge) { cpu: |a, b| a >= b, cuda: "a >= b" },
                LogicalAnd(logical_and) { cpu: |a, b| scalar::truthy(a) && scalar::truthy(b),
                    cuda: "(a != T(0)) && (b != T(0))" },
                LogicalOr(logical_or) { cpu: |a, b| scalar::truthy(a) || scalar::truthy(b),
                    cuda: "(a != T(0)) || (b != T(0))" },
                LogicalXor(logical_xor) { cpu: |a, b| scalar::truthy(a) != scalar::truthy(b),
                    cuda: "(a != T(0)) != (b != T(0))" },
            ]
        }
    };
}
