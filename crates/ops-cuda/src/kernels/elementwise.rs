//! CUDA C for the elementwise ops, generated from the op table: one kernel per (op, dtype), each
//! a grid-stride loop over the contiguous output with 64-bit indices, reading its operands through
//! strides passed by value (`ember_shape`, `ember_operand`: broadcasting is a zero stride) and
//! taking a straight index when every operand is contiguous.
//!
//! Float rows are generated for f16, bf16, f32 and f64 (f16/bf16 compute in f32); integer dtypes
//! get the rows whose expression is exact on integers ([`int_expression_ok`]); predicates and
//! comparisons write bool.

use super::dtype::{cuda_type, CudaType};
use ember_storage::{BinaryOp, DType, OpClass, UnaryOp};

/// The op a generated kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementwiseOp {
    /// `unary_<op>_<dtype>(in, out, shape, operand)`.
    Unary(UnaryOp),
    /// `binary_<op>_<dtype>(x, y, out, shape, operand_x, operand_y)`.
    Binary(BinaryOp),
}

/// A generated kernel: its entry point, its op and the dtypes it reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelSpec {
    /// The `extern "C"` name.
    pub name: String,
    /// The op.
    pub op: ElementwiseOp,
    /// The input dtype.
    pub input: DType,
    /// The output dtype.
    pub output: DType,
}

/// The kernel name of a unary op on `dtype`.
pub fn unary_name(op: UnaryOp, dtype: DType) -> String {
    format!("unary_{}_{}", op.name(), cuda_type(dtype).suffix)
}

/// The kernel name of a binary op on `dtype` (both inputs have it).
pub fn binary_name(op: BinaryOp, dtype: DType) -> String {
    format!("binary_{}_{}", op.name(), cuda_type(dtype).suffix)
}

/// Whether an expression of the op table is exact when `T` is an integer type: only integer
/// arithmetic, comparisons, logic and the integer overloads of the prelude, no float functions.
pub fn int_expression_ok(expr: &str) -> bool {
    const FLOAT_ONLY: &[&str] = &[
        "isnan",
        "fmax",
        "fmin",
        "fmod",
        "fabs",
        "floor",
        "ceil",
        "trunc",
        "rint",
        "exp",
        "log",
        "pow",
        "sqrt",
        "erf",
        "tanh",
        "sin",
        "cos",
        "atan",
        "hypot",
        "copysign",
        "ember_sigmoid",
        "ember_sign",
        "ember_digamma",
        "ember_trigamma",
        "isinf",
        "isfinite",
        "lgamma",
        "/",
    ];
    !FLOAT_ONLY.iter().any(|f| expr.contains(f))
}

/// Whether the table gives a CUDA kernel for this unary op on this input dtype.
pub fn unary_supported(op: UnaryOp, dtype: DType) -> bool {
    match op.class() {
        OpClass::Predicate => dtype.is_float(),
        OpClass::Float => dtype.is_float(),
        OpClass::KeepsInt => dtype.is_float() || (dtype != DType::Bool && int_expression_ok(op.cuda_expr())),
    }
}

/// Whether the table gives a CUDA kernel for this binary op on inputs of this dtype.
pub fn binary_supported(op: BinaryOp, dtype: DType) -> bool {
    if dtype.is_float() {
        return true;
    }
    match op.class() {
        OpClass::Float => false,
        OpClass::Predicate => int_expression_ok(op.cuda_expr()) || dtype == DType::Bool,
        OpClass::KeepsInt => dtype != DType::Bool && int_expression_ok(op.cuda_expr()),
    }
}

fn output_dtype(predicate: bool, dtype: DType) -> DType {
    if predicate {
        DType::Bool
    } else {
        dtype
    }
}

/// One op-table kernel: a grid-stride loop over the contiguous output that binds each input
/// (`(pointer, operand, variable)`) as `T` for element `i`, evaluates the row's expression of those
/// variables and stores it (`bool` for predicates).
fn table_kernel(name: &str, t: CudaType, predicate: bool, inputs: &[(&str, &str, &str)], expr: &str) -> String {
    let out = cuda_type(output_dtype(predicate, t.dtype));
    let store = if predicate { "(bool)(r)".to_string() } else { format!("ember_store<{}>(r)", out.storage) };
    let pointers: String = inputs.iter().map(|(p, _, _)| format!("const {}* __restrict__ {p}, ", t.storage)).collect();
    let operands: String = inputs.iter().map(|(_, o, _)| format!(", ember_operand {o}")).collect();
    let loads: String = inputs
        .iter()
        .map(|(p, o, v)| {
            format!("        const T {v} = (T)ember_load({p}[s.contiguous ? i : ember_offset(i, s, {o})]);\n")
        })
        .collect();
    format!(
        r#"extern "C" __global__ void {name}({pointers}{o}* __restrict__ out, ember_shape s{operands}) {{
    typedef {c} T;
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
{loads}        const auto r = ({expr});
        out[i] = {store};
    }}
}}
"#,
        o = out.storage,
        c = t.compute,
    )
}

/// `unary_<op>_<dtype>(const S* in, O* out, ember_shape s, ember_operand a)`.
fn unary_kernel(op: UnaryOp, t: CudaType) -> String {
    table_kernel(&unary_name(op, t.dtype), t, op.is_predicate(), &[("in", "a", "x")], op.cuda_expr())
}

/// `binary_<op>_<dtype>(const S* x, const S* y, O* out, ember_shape s, ember_operand oa, ember_operand ob)`.
fn binary_kernel(op: BinaryOp, t: CudaType) -> String {
    let inputs = [("x", "oa", "a"), ("y", "ob", "b")];
    table_kernel(&binary_name(op, t.dtype), t, op.is_predicate(), &inputs, op.cuda_expr())
}

/// The elementwise module of one dtype: every unary and binary kernel the table gives for it, after
/// the prelude. One module per dtype keeps NVRTC calls few and each compile small.
pub fn module_source(dtype: DType) -> (String, Vec<KernelSpec>) {
    let t = cuda_type(dtype);
    let mut src = String::from(super::PRELUDE);
    let mut specs = vec![];
    for &op in UnaryOp::ALL.iter().filter(|&&op| unary_supported(op, dtype)) {
        src.push_str(&unary_kernel(op, t));
        specs.push(KernelSpec {
            name: unary_name(op, dtype),
            op: ElementwiseOp::Unary(op),
            input: dtype,
            output: output_dtype(op.is_predicate(), dtype),
        });
    }
    for &op in BinaryOp::ALL.iter().filter(|&&op| binary_supported(op, dtype)) {
        src.push_str(&binary_kernel(op, t));
        specs.push(KernelSpec {
            name: binary_name(op, dtype),
            op: ElementwiseOp::Binary(op),
            input: dtype,
            output: output_dtype(op.is_predicate(), dtype),
        });
    }
    (src, specs)
}
