//! CUDA C for integer matrix products (cuBLAS has none): one thread per output element, the dot
//! product accumulated in 64 bits with wrapping, then wrapped to the dtype — the CPU backend's
//! (and PyTorch's) integer matmul. Operands are strided: the batch dims through an `ember_operand`
//! each, the matrix dims through explicit row and column strides.

use super::dtype::cuda_type;
use ember_storage::DType;

/// The integer dtypes with a product kernel.
pub const INT_MATMUL_TYPES: [DType; 3] = [DType::U8, DType::I32, DType::I64];

/// `matmul_int_<dtype>(const S* a, const S* b, S* out, ember_shape batch, ember_operand oa,
/// ember_operand ob, long long m, long long n, long long k, long long a_rs, long long a_cs,
/// long long b_rs, long long b_cs)`; the output is dense `[batch..., m, n]`.
pub fn matmul_int_name(dtype: DType) -> String {
    format!("matmul_int_{}", cuda_type(dtype).suffix)
}

fn kernel(dtype: DType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ a, const {s}* __restrict__ b, {s}* __restrict__ out, ember_shape batch, ember_operand oa, ember_operand ob, long long m, long long n, long long k, long long a_rs, long long a_cs, long long b_rs, long long b_cs) {{
    const long long total = batch.numel * m * n;
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {{
        const long long bi = i / (m * n), rc = i % (m * n), r = rc / n, c = rc % n;
        const long long pa = ember_offset(bi, batch, oa) + r * a_rs, pb = ember_offset(bi, batch, ob) + c * b_cs;
        unsigned long long acc = 0ULL;
        for (long long t = 0; t < k; ++t)
            acc += (unsigned long long)(long long)a[pa + t * a_cs] * (unsigned long long)(long long)b[pb + t * b_rs];
        out[i] = ({s})(long long)acc;
    }}
}}
"#,
        name = matmul_int_name(dtype),
        s = cuda_type(dtype).storage,
    )
}

/// The integer-product module and its kernels' names.
pub fn module_source() -> (String, Vec<String>) {
    let mut src = String::from(super::PRELUDE);
    let mut names = vec![];
    for d in INT_MATMUL_TYPES {
        src.push_str(&kernel(d));
        names.push(matmul_int_name(d));
    }
    (src, names)
}
