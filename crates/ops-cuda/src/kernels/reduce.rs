//! CUDA C for the reductions (`ReduceOp`): the backend permutes the reduced dims to the end, so a
//! kernel reduces `rows` rows of `k` elements each (read through strides). One block per row at a
//! time (grid-stride over rows): each thread folds the elements `threadIdx.x, + blockDim.x, ...`,
//! then a shared-memory tree combines the block's partials. The block size is fixed
//! ([`REDUCE_BLOCK`]), so the order of operations — and a float sum's rounding — does not depend on
//! the grid size. Floats accumulate in double and integers in 64 bits (wrapping), as the CPU
//! backend does; max/min propagate NaN; argmax/argmin return the first NaN or the first extreme.

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::{DType, ReduceOp};

/// Threads per block of every reduction kernel (a power of two; the shared arrays' size).
pub const REDUCE_BLOCK: u32 = 256;

/// Every reduction.
pub const REDUCE_OPS: [ReduceOp; 8] = [
    ReduceOp::Sum,
    ReduceOp::Prod,
    ReduceOp::Max,
    ReduceOp::Min,
    ReduceOp::ArgMax,
    ReduceOp::ArgMin,
    ReduceOp::All,
    ReduceOp::Any,
];

fn op_name(op: ReduceOp) -> &'static str {
    match op {
        ReduceOp::Sum => "sum",
        ReduceOp::Prod => "prod",
        ReduceOp::Max => "max",
        ReduceOp::Min => "min",
        ReduceOp::ArgMax => "argmax",
        ReduceOp::ArgMin => "argmin",
        ReduceOp::All => "all",
        ReduceOp::Any => "any",
    }
}

/// `reduce_<op>_<dtype>(const S* in, O* out, ember_shape s, ember_operand a, long long rows, long long k)`.
pub fn reduce_name(op: ReduceOp, dtype: DType) -> String {
    format!("reduce_{}_{}", op_name(op), cuda_type(dtype).suffix)
}

/// The output dtype of `op` on `dtype`.
pub fn output_dtype(op: ReduceOp, dtype: DType) -> DType {
    match op {
        ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
        ReduceOp::All | ReduceOp::Any => DType::Bool,
        _ => dtype,
    }
}

/// The initial value, combine expression (of `a` and `b`) and accumulator type of a value reduction.
fn value_parts(op: ReduceOp, t: CudaType) -> (&'static str, &'static str, &'static str) {
    let float = t.dtype.is_float();
    let (init, combine) = match (op, float) {
        (ReduceOp::Sum, true) => ("0.0", "a + b"),
        (ReduceOp::Sum, false) => ("0", "(long long)((unsigned long long)a + (unsigned long long)b)"),
        (ReduceOp::Prod, true) => ("1.0", "a * b"),
        (ReduceOp::Prod, false) => ("1", "(long long)((unsigned long long)a * (unsigned long long)b)"),
        (ReduceOp::Max, true) => ("-EMBER_INF", "(isnan(a) || isnan(b)) ? EMBER_NAN : (a > b ? a : b)"),
        (ReduceOp::Max, false) => ("(long long)0x8000000000000000ULL", "a > b ? a : b"),
        (ReduceOp::Min, true) => ("EMBER_INF", "(isnan(a) || isnan(b)) ? EMBER_NAN : (a < b ? a : b)"),
        (ReduceOp::Min, false) => ("0x7fffffffffffffffLL", "a < b ? a : b"),
        (ReduceOp::All, _) => ("1", "(a && b) ? 1 : 0"),
        (ReduceOp::Any, _) => ("0", "(a || b) ? 1 : 0"),
        _ => unreachable!("index reductions have their own kernel"),
    };
    let logical = matches!(op, ReduceOp::All | ReduceOp::Any);
    (init, combine, if float && !logical { "double" } else { "long long" })
}

fn value_kernel(op: ReduceOp, t: CudaType) -> String {
    let (init, combine, acc) = value_parts(op, t);
    let logical = matches!(op, ReduceOp::All | ReduceOp::Any);
    let load =
        if logical { "(ember_load(in[idx]) != 0) ? 1 : 0".to_string() } else { format!("({acc})ember_load(in[idx])") };
    let out_t = cuda_type(output_dtype(op, t.dtype));
    let store = if logical {
        "part[0] != 0".to_string()
    } else if t.dtype.is_float() {
        format!("ember_from_double<{}>(part[0])", out_t.storage)
    } else {
        format!("({})part[0]", out_t.storage)
    };
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ in, {o}* __restrict__ out, ember_shape s, ember_operand a, long long rows, long long k) {{
    typedef {acc} A;
    __shared__ A part[{block}];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
        A acc = {init};
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const long long i = row * k + j;
            const long long idx = s.contiguous ? i : ember_offset(i, s, a);
            const A b = {load};
            {{ const A a = acc; acc = {combine}; }}
        }}
        part[threadIdx.x] = acc;
        __syncthreads();
        for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {{
            if (threadIdx.x < w) {{ const A a = part[threadIdx.x], b = part[threadIdx.x + w]; part[threadIdx.x] = {combine}; }}
            __syncthreads();
        }}
        if (threadIdx.x == 0) out[row] = {store};
        __syncthreads();
    }}
}}
"#,
        name = reduce_name(op, t.dtype),
        s = t.storage,
        o = out_t.storage,
        block = REDUCE_BLOCK,
    )
}

/// argmax/argmin: (value, index) pairs; index -1 marks an empty partial. NaN beats numbers (the
/// first NaN wins), then the extreme value, then the smaller index.
fn index_kernel(op: ReduceOp, t: CudaType) -> String {
    let (acc, nan) = if t.dtype.is_float() { ("double", "isnan") } else { ("long long", "ember_never_nan") };
    let better = if op == ReduceOp::ArgMax { ">" } else { "<" };
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ in, long long* __restrict__ out, ember_shape s, ember_operand a, long long rows, long long k) {{
    typedef {acc} A;
    __shared__ A pv[{block}];
    __shared__ long long pi[{block}];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
        A v = 0;
        long long vi = -1;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const long long i = row * k + j;
            const A x = (A)ember_load(in[s.contiguous ? i : ember_offset(i, s, a)]);
            if (vi < 0 || (!{nan}(v) && ({nan}(x) || x {better} v))) {{ v = x; vi = j; }}
        }}
        pv[threadIdx.x] = v;
        pi[threadIdx.x] = vi;
        __syncthreads();
        for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {{
            if (threadIdx.x < w) {{
                const A x = pv[threadIdx.x + w];
                const long long xi = pi[threadIdx.x + w];
                const A y = pv[threadIdx.x];
                const long long yi = pi[threadIdx.x];
                bool take;
                if (xi < 0) take = false;
                else if (yi < 0) take = true;
                else if ({nan}(y) || {nan}(x)) take = {nan}(x) && (!{nan}(y) || xi < yi);
                else take = (x {better} y) || (x == y && xi < yi);
                if (take) {{ pv[threadIdx.x] = x; pi[threadIdx.x] = xi; }}
            }}
            __syncthreads();
        }}
        if (threadIdx.x == 0) out[row] = pi[0] < 0 ? 0 : pi[0];
        __syncthreads();
    }}
}}
"#,
        name = reduce_name(op, t.dtype),
        s = t.storage,
        block = REDUCE_BLOCK,
    )
}

/// The reduction module: every op for every dtype.
pub fn module_source() -> (String, Vec<(ReduceOp, DType, String)>) {
    let mut src = String::from(super::PRELUDE);
    src.push_str("__device__ __forceinline__ bool ember_never_nan(long long) { return false; }\n");
    let mut names = vec![];
    for t in CUDA_TYPES {
        for op in REDUCE_OPS {
            src.push_str(&match op {
                ReduceOp::ArgMax | ReduceOp::ArgMin => index_kernel(op, t),
                _ => value_kernel(op, t),
            });
            names.push((op, t.dtype, reduce_name(op, t.dtype)));
        }
    }
    (src, names)
}

/// `softmax_<dtype>(const S* in, S* out, ember_shape s, ember_operand a, ember_operand o, long long
/// rows, long long k, int log)`: softmax (or log-softmax, `log != 0`) of each row of `k` elements,
/// the output addressed through `o` (the dense output permuted as the input was). Three passes per
/// row in double: the maximum (NaN propagates), the sum of `exp(x - max)`, then the results.
pub fn softmax_name(dtype: DType) -> String {
    format!("softmax_{}", cuda_type(dtype).suffix)
}

fn softmax_kernel(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ in, {s}* __restrict__ out, ember_shape s, ember_operand a, ember_operand o, long long rows, long long k, int log_) {{
    __shared__ double part[{block}];
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {{
        double m = -EMBER_INF;
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const double v = (double)ember_load(in[ember_offset(row * k + j, s, a)]);
            m = (isnan(m) || isnan(v)) ? EMBER_NAN : (v > m ? v : m);
        }}
        part[threadIdx.x] = m;
        __syncthreads();
        for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {{
            if (threadIdx.x < w) {{
                const double x = part[threadIdx.x], y = part[threadIdx.x + w];
                part[threadIdx.x] = (isnan(x) || isnan(y)) ? EMBER_NAN : (x > y ? x : y);
            }}
            __syncthreads();
        }}
        m = part[0];
        __syncthreads();
        double sum = 0.0;
        for (long long j = threadIdx.x; j < k; j += blockDim.x)
            sum += exp((double)ember_load(in[ember_offset(row * k + j, s, a)]) - m);
        part[threadIdx.x] = sum;
        __syncthreads();
        for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {{
            if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
            __syncthreads();
        }}
        const double total = part[0];
        const double shift = m + log(total);
        for (long long j = threadIdx.x; j < k; j += blockDim.x) {{
            const double v = (double)ember_load(in[ember_offset(row * k + j, s, a)]);
            out[ember_offset(row * k + j, s, o)] = ember_from_double<{s}>(log_ ? v - shift : exp(v - m) / total);
        }}
        __syncthreads();
    }}
}}
"#,
        name = softmax_name(t.dtype),
        s = t.storage,
        block = REDUCE_BLOCK,
    )
}

/// The softmax module: one kernel per floating dtype.
pub fn softmax_source() -> (String, Vec<(DType, String)>) {
    let mut src = String::from(super::PRELUDE);
    let mut names = vec![];
    for t in CUDA_TYPES.iter().filter(|t| t.dtype.is_float()) {
        src.push_str(&softmax_kernel(*t));
        names.push((t.dtype, softmax_name(t.dtype)));
    }
    (src, names)
}
