//! Elementwise kernels, expanded from the op table (`ember_storage::unary_op_table!` and
//! `binary_op_table!`): every row's `cpu` closure becomes one arm of a `match`, so every (op, dtype)
//! pair compiles to its own inlined loop over the strided view. f16/bf16 are computed in f32 by the
//! caller (see `dispatch.rs`).

use crate::real::Real;
use crate::scalar;
use crate::simd::{map_slice, zip_slice};
use crate::strided::{map1, map2, with_dense};
use ember_storage::{BinaryOp, Element, Error, Layout, Result, UnaryOp};

/// True when a view's last dim steps by more than one element (a transposed view): the float
/// kernels then run on a dense copy (an exact copy of the bits), so every element goes through
/// the same vectorised loop as dense input and a fused program's tiles. Walked element by
/// element in scalar code, a NaN could come out with the other sign: LLVM may swap the operands
/// of a commutative operation, and x86 returns the first operand's NaN (silu of a transposed
/// +NaN gave -NaN, of the same value dense +NaN).
fn scattered(l: &Layout) -> bool {
    let last = l.ndim().saturating_sub(1);
    l.ndim() > 0 && l.shape()[last] > 1 && l.strides()[last] > 1
}

/// Expands the unary rows into the float, integer and predicate kernels.
macro_rules! cpu_unary_kernels {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: $dom:ident,
            cpu: |$a:ident| $cpu:expr, $(int: |$ia:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$gx:ident, $gy:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        predicates: [$($P:ident($pname:ident) { cpu: |$pa:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        /// Applies a non-predicate unary op to a float view.
        pub(crate) fn unary_float<T: Real>(op: UnaryOp, x: &[T], l: &Layout) -> Vec<T> {
            if scattered(l) {
                return with_dense(x, l, |d| unary_float(op, d, &Layout::contiguous(l.shape())));
            }
            match op {
                $(UnaryOp::$V => map1(x, l, |$a: T| $cpu),)*
                $(UnaryOp::$P)|* => unreachable!("predicates go through unary_predicate"),
            }
        }

        /// `o[i] = op(x[i])` over contiguous slices (a fused program's tile): the same per-element
        /// code as [`unary_float`], so the same bits.
        pub(crate) fn unary_slice<T: Real>(op: UnaryOp, x: &[T], o: &mut [T]) {
            match op {
                $(UnaryOp::$V => map_slice(o, x, |$a: T| $cpu),)*
                $(UnaryOp::$P)|* => unreachable!("programs hold no predicates"),
            }
        }

        /// Applies an integer-closed unary op through i64 (wrapping like PyTorch's integer arithmetic).
        pub(crate) fn unary_int<T: Element + Sync>(op: UnaryOp, x: &[T], l: &Layout) -> Result<Vec<T>> {
            $($(if op == UnaryOp::$V {
                return Ok(map1(x, l, |v: T| {
                    let $ia: i64 = v.to_i64();
                    T::from_i64($int)
                }));
            })?)*
            Err(Error::dtype(op.name(), format!("not defined for integer dtype {}", T::DTYPE)))
        }

        /// Applies a predicate (isnan, isinf, isfinite, logical_not) to any view, through f64.
        pub(crate) fn unary_predicate<T: Element + Sync>(op: UnaryOp, x: &[T], l: &Layout) -> Vec<bool> {
            match op {
                $(UnaryOp::$P => map1(x, l, |v: T| {
                    let $pa: f64 = v.to_f64();
                    $pcpu
                }),)*
                _ => unreachable!("only predicates"),
            }
        }
    };
}
ember_storage::unary_op_table!(cpu_unary_kernels);

/// Expands the binary rows into the float, integer and compare kernels.
macro_rules! cpu_binary_kernels {
    (
        math: [$($V:ident($name:ident) {
            method: $method:ident, class: $class:ident, saves: $saves:ident, domain: [$da:ident, $db:ident],
            cpu: |$a:ident, $b:ident| $cpu:expr, $(int: |$ia:ident, $ib:ident| $int:expr,)? cuda: $cuda:literal,
            grad: |$ga:ident, $gb:ident, $go:ident, $gg:ident| $grad:expr $(,)?
        }),* $(,)?]
        compare: [$($P:ident($pname:ident) { cpu: |$pa:ident, $pb:ident| $pcpu:expr, cuda: $pcuda:literal $(,)? }),* $(,)?]
    ) => {
        /// Applies a non-predicate binary op to two float views of one shape.
        pub(crate) fn binary_float<T: Real>(op: BinaryOp, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Vec<T> {
            if scattered(la) {
                return with_dense(a, la, |d| binary_float(op, d, &Layout::contiguous(la.shape()), b, lb));
            }
            if scattered(lb) {
                return with_dense(b, lb, |d| binary_float(op, a, la, d, &Layout::contiguous(lb.shape())));
            }
            match op {
                $(BinaryOp::$V => map2(a, la, b, lb, |$a: T, $b: T| $cpu),)*
                $(BinaryOp::$P)|* => unreachable!("comparisons go through binary_predicate"),
            }
        }

        /// `o[i] = op(a[i], b[i])` over contiguous slices (a fused program's tile): the same
        /// per-element code as [`binary_float`], so the same bits.
        pub(crate) fn binary_slice<T: Real>(op: BinaryOp, a: &[T], b: &[T], o: &mut [T]) {
            match op {
                $(BinaryOp::$V => zip_slice(o, a, b, |$a: T, $b: T| $cpu),)*
                $(BinaryOp::$P)|* => unreachable!("programs hold no comparisons"),
            }
        }

        /// `o[i] = op(a[i], s)`: [`binary_slice`] with a broadcast scalar on the right (one
        /// stream less to read; the same per-element code, so the same bits).
        pub(crate) fn binary_slice_scalar_rhs<T: Real>(op: BinaryOp, a: &[T], s: T, o: &mut [T]) {
            match op {
                $(BinaryOp::$V => map_slice(o, a, |$a: T| { let $b = s; $cpu }),)*
                $(BinaryOp::$P)|* => unreachable!("programs hold no comparisons"),
            }
        }

        /// `o[i] = op(s, b[i])`: [`binary_slice`] with a broadcast scalar on the left.
        pub(crate) fn binary_slice_scalar_lhs<T: Real>(op: BinaryOp, s: T, b: &[T], o: &mut [T]) {
            match op {
                $(BinaryOp::$V => map_slice(o, b, |$b: T| { let $a = s; $cpu }),)*
                $(BinaryOp::$P)|* => unreachable!("programs hold no comparisons"),
            }
        }

        /// Applies a binary op to two integer (or bool) views through i64, wrapping like PyTorch.
        /// Integer division by zero (`remainder`, `fmod`, `floor_divide`) is an error, as in PyTorch.
        pub(crate) fn binary_int<T: Element + Sync>(
            op: BinaryOp,
            a: &[T],
            la: &Layout,
            b: &[T],
            lb: &Layout,
        ) -> Result<Vec<T>> {
            let needs_nonzero = matches!(op, BinaryOp::Remainder | BinaryOp::Fmod | BinaryOp::FloorDivide);
            if needs_nonzero && map2(b, lb, b, lb, |y, _| y.to_i64() == 0).into_iter().any(|z| z) {
                return Err(Error::invalid(op.name(), "integer division by zero"));
            }
            $($(if op == BinaryOp::$V {
                return Ok(map2(a, la, b, lb, |x: T, y: T| {
                    let ($ia, $ib): (i64, i64) = (x.to_i64(), y.to_i64());
                    T::from_i64($int)
                }));
            })?)*
            Err(Error::dtype(op.name(), format!("needs floating inputs, got {}", T::DTYPE)))
        }

        /// Applies a comparison or logical op to two views of one dtype.
        pub(crate) fn binary_predicate<T: Element + Sync>(
            op: BinaryOp,
            a: &[T],
            la: &Layout,
            b: &[T],
            lb: &Layout,
        ) -> Vec<bool> {
            match op {
                $(BinaryOp::$P => map2(a, la, b, lb, |$pa: T, $pb: T| $pcpu),)*
                _ => unreachable!("only comparisons and logical ops"),
            }
        }
    };
}
ember_storage::binary_op_table!(cpu_binary_kernels);
