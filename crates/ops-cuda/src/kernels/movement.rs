//! CUDA C for moving data: `fill_<dtype>` (a constant), `copy_<dtype>` (strided to strided, what
//! `assign` runs), `where_<dtype>` (select by a bool condition) and `cast_<from>_<to>` for every pair
//! of the eight dtypes, with the CPU backend's
//! conversion rules (see the prelude's `ember_from_double`).

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::DType;

/// `fill_<dtype>(S* out, long long n, double value, long long ivalue)`: floats take `value`,
/// integers and bool `ivalue`.
pub fn fill_name(dtype: DType) -> String {
    format!("fill_{}", cuda_type(dtype).suffix)
}

/// `copy_<dtype>(const S* in, S* out, ember_shape s, ember_operand src, ember_operand dst)`.
pub fn copy_name(dtype: DType) -> String {
    format!("copy_{}", cuda_type(dtype).suffix)
}

/// `where_<dtype>(const bool* c, const S* x, const S* y, S* out, ember_shape s, ember_operand oc,
/// ember_operand ox, ember_operand oy)`: `c ? x : y`, contiguous output.
pub fn where_name(dtype: DType) -> String {
    format!("where_{}", cuda_type(dtype).suffix)
}

/// `cast_<from>_<to>(const F* in, T* out, ember_shape s, ember_operand src)`, contiguous output.
pub fn cast_name(from: DType, to: DType) -> String {
    format!("cast_{}_{}", cuda_type(from).suffix, cuda_type(to).suffix)
}

fn fill(t: CudaType) -> String {
    let value = if t.dtype.is_float() {
        format!("ember_from_double<{}>(value)", t.storage)
    } else if t.dtype == DType::Bool {
        "ivalue != 0".to_string()
    } else {
        format!("({})ivalue", t.storage)
    };
    format!(
        r#"extern "C" __global__ void {name}({s}* __restrict__ out, long long n, double value, long long ivalue) {{
    const {s} v = {value};
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) out[i] = v;
}}
"#,
        name = fill_name(t.dtype),
        s = t.storage,
    )
}

fn copy(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ in, {s}* __restrict__ out, ember_shape s, ember_operand src, ember_operand dst) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step)
        out[ember_offset(i, s, dst)] = in[ember_offset(i, s, src)];
}}
"#,
        name = copy_name(t.dtype),
        s = t.storage,
    )
}

fn where_kernel(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const bool* __restrict__ c, const {s}* __restrict__ x, const {s}* __restrict__ y, {s}* __restrict__ out, ember_shape s, ember_operand oc, ember_operand ox, ember_operand oy) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
        const bool take = c[s.contiguous ? i : ember_offset(i, s, oc)];
        out[i] = take ? x[s.contiguous ? i : ember_offset(i, s, ox)] : y[s.contiguous ? i : ember_offset(i, s, oy)];
    }}
}}
"#,
        name = where_name(t.dtype),
        s = t.storage,
    )
}

fn cast(f: CudaType, t: CudaType) -> String {
    let convert = if f.dtype.is_float() || t.dtype.is_float() || t.dtype == DType::Bool {
        format!("ember_from_double<{}>((double)ember_load(v))", t.storage)
    } else {
        // integers wrap, through 64 bits
        format!("({})(long long)ember_load(v)", t.storage)
    };
    format!(
        r#"extern "C" __global__ void {name}(const {fs}* __restrict__ in, {ts}* __restrict__ out, ember_shape s, ember_operand src) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
        const {fs} v = in[s.contiguous ? i : ember_offset(i, s, src)];
        out[i] = {convert};
    }}
}}
"#,
        name = cast_name(f.dtype, t.dtype),
        fs = f.storage,
        ts = t.storage,
    )
}

/// The data-movement module: fill, copy and where for every dtype, casts for every pair.
pub fn module_source() -> (String, Vec<String>) {
    let mut src = String::from(super::PRELUDE);
    let mut names = vec![];
    for t in CUDA_TYPES {
        src.push_str(&fill(t));
        src.push_str(&copy(t));
        src.push_str(&where_kernel(t));
        names.extend([fill_name(t.dtype), copy_name(t.dtype), where_name(t.dtype)]);
        for to in CUDA_TYPES {
            src.push_str(&cast(t, to));
            names.push(cast_name(t.dtype, to.dtype));
        }
    }
    (src, names)
}
