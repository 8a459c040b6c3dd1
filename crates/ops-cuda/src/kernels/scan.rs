//! CUDA C for the cumulative ops (`ScanOp`). The backend permutes the scanned dim last, so a kernel
//! walks `rows` rows of `k` elements (read through strides) and writes each result through the
//! output's permuted dense layout. One thread per row, in order: the same sequence of operations
//! as the CPU backend (floats accumulate in double and round each output once, integers wrap in 64
//! bits; cummax/cummin compare in the compute type and take the last of equal extremes and the
//! latest NaN), so the
//! results are identical. Many rows fill the device; a single very long row runs on one thread (a
//! parallel scan would change the float rounding; not written yet).

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::{DType, ScanOp};

/// Every scan.
pub const SCAN_OPS: [ScanOp; 4] = [ScanOp::Cumsum, ScanOp::Cumprod, ScanOp::Cummax, ScanOp::Cummin];

fn op_name(op: ScanOp) -> &'static str {
    match op {
        ScanOp::Cumsum => "cumsum",
        ScanOp::Cumprod => "cumprod",
        ScanOp::Cummax => "cummax",
        ScanOp::Cummin => "cummin",
    }
}

/// `scan_<op>_<dtype>`: cumsum/cumprod take `(const S* in, S* out, ember_shape s, ember_operand a,
/// ember_operand o, long long rows, long long k)`; cummax/cummin also `long long* idx` after `out`.
pub fn scan_name(op: ScanOp, dtype: DType) -> String {
    format!("scan_{}_{}", op_name(op), cuda_type(dtype).suffix)
}

/// Whether `op` also returns indices (and its kernel takes the `idx` argument).
pub fn has_indices(op: ScanOp) -> bool {
    matches!(op, ScanOp::Cummax | ScanOp::Cummin)
}

const ROW_LOOP: &str = "    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (long long)blockDim.x * gridDim.x) {";

fn accumulate(op: ScanOp, t: CudaType) -> String {
    let sum = op == ScanOp::Cumsum;
    let (acc, init, step, store) = if t.dtype.is_float() {
        (
            "double",
            if sum { "0.0" } else { "1.0" },
            if sum { "acc + x" } else { "acc * x" },
            format!("ember_from_double<{}>(acc)", t.storage),
        )
    } else {
        let step = if sum {
            "(long long)((unsigned long long)acc + (unsigned long long)x)"
        } else {
            "(long long)((unsigned long long)acc * (unsigned long long)x)"
        };
        let store = if t.dtype == DType::Bool { "acc != 0".to_string() } else { format!("({})acc", t.storage) };
        ("long long", if sum { "0" } else { "1" }, step, store)
    };
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ in, {s}* __restrict__ out, ember_shape s, ember_operand a, ember_operand o, long long rows, long long k) {{
{ROW_LOOP}
        {acc} acc = {init};
        for (long long e = 0; e < k; ++e) {{
            const long long q = r * k + e;
            const {acc} x = ({acc})ember_load(in[ember_offset(q, s, a)]);
            acc = {step};
            out[ember_offset(q, s, o)] = {store};
        }}
    }}
}}
"#,
        name = scan_name(op, t.dtype),
        s = t.storage,
    )
}

fn extreme(op: ScanOp, t: CudaType) -> String {
    let cmp = if op == ScanOp::Cummax { ">=" } else { "<=" };
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ in, {s}* __restrict__ out, long long* __restrict__ idx, ember_shape s, ember_operand a, ember_operand o, long long rows, long long k) {{
{ROW_LOOP}
        {c} best{{}};
        long long at = 0;
        {s} best_v{{}};
        for (long long e = 0; e < k; ++e) {{
            const long long q = r * k + e;
            const {s} v = in[ember_offset(q, s, a)];
            const {c} x = ember_load(v);
            // compared in the compute type (no rounding of i64 through double); x != x is NaN
            if (e == 0 || x != x || (best == best && x {cmp} best)) {{ best = x; at = e; best_v = v; }}
            const long long w = ember_offset(q, s, o);
            out[w] = best_v;
            idx[w] = at;
        }}
    }}
}}
"#,
        name = scan_name(op, t.dtype),
        s = t.storage,
        c = t.compute,
    )
}

/// The scan module: every scan for every dtype, as `(op, dtype, name)`.
pub fn module_source() -> (String, Vec<(ScanOp, DType, String)>) {
    let mut src = String::from(super::PRELUDE);
    let mut kernels = vec![];
    for t in CUDA_TYPES {
        for op in SCAN_OPS {
            src.push_str(&if has_indices(op) { extreme(op, t) } else { accumulate(op, t) });
            kernels.push((op, t.dtype, scan_name(op, t.dtype)));
        }
    }
    (src, kernels)
}
