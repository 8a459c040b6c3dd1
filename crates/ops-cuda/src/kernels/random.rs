//! CUDA C for the random ops (`RngOp`): the CPU backend's counter-based Philox-4x32-10 stream, so
//! one (seed, offset) gives the same random bits on both devices. Element `i` draws the four words of
//! counter `offset + i` and maps them exactly as ops-cpu's `rng.rs` does: a 53-bit uniform from the
//! first two words (`low + (high - low) * u`, and the Bernoulli test `u < p`), Box-Muller from all
//! four for the normal. Uniform and Bernoulli values are bit-identical to the CPU backend's (exact
//! IEEE operations, compiled with `--fmad=false`); the normal's `log` and `cos` are CUDA's (within an
//! ulp or two of the host's libm in f64), so f64 normals may differ from the CPU's in the last bits,
//! and f32/f16/bf16 normals, rounded from them, almost never do.

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::{DType, RngOp};

/// `random_<dtype>(S* out, long long n, unsigned long long seed, unsigned long long offset, int kind,
/// double a, double b)` for the floating dtypes.
pub fn random_name(dtype: DType) -> String {
    format!("random_{}", cuda_type(dtype).suffix)
}

/// The kernel's `(kind, a, b)` arguments for `op`: 0 uniform on [a, b), 1 normal (mean a, std b),
/// 2 Bernoulli (`b` with probability `a`, else 0).
pub fn random_args(op: RngOp) -> (i32, f64, f64) {
    match op {
        RngOp::Uniform { low, high } => (0, low, high),
        RngOp::Normal { mean, std } => (1, mean, std),
        RngOp::Bernoulli { p, value } => (2, p, value),
    }
}

const PHILOX: &str = r#"
// Philox-4x32-10 (Random123): four 32-bit words for one 64-bit counter under a 64-bit key.
__device__ __forceinline__ void ember_philox(unsigned long long seed, unsigned long long counter, unsigned int w[4]) {
    unsigned int c0 = (unsigned int)counter, c1 = (unsigned int)(counter >> 32), c2 = 0u, c3 = 0u;
    unsigned int k0 = (unsigned int)seed, k1 = (unsigned int)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
        const unsigned long long p0 = 0xD2511F53ULL * (unsigned long long)c0;
        const unsigned long long p1 = 0xCD9E8D57ULL * (unsigned long long)c2;
        const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0, n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0; c1 = (unsigned int)p1; c2 = n2; c3 = (unsigned int)p0;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    w[0] = c0; w[1] = c1; w[2] = c2; w[3] = c3;
}

// A uniform in [0, 1) with 53 random bits.
__device__ __forceinline__ double ember_unit(unsigned int hi, unsigned int lo) {
    return (double)((((unsigned long long)hi) << 21) ^ ((unsigned long long)lo >> 11)) * (1.0 / 9007199254740992.0);
}
"#;

fn random(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}({s}* __restrict__ out, long long n, unsigned long long seed, unsigned long long offset, int kind, double a, double b) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += step) {{
        unsigned int w[4];
        ember_philox(seed, offset + (unsigned long long)i, w);
        double v;
        if (kind == 0) {{
            v = a + (b - a) * ember_unit(w[0], w[1]);
        }} else if (kind == 1) {{
            const double u1 = 1.0 - ember_unit(w[0], w[1]);
            const double u2 = ember_unit(w[2], w[3]);
            v = a + b * sqrt(-2.0 * log(u1)) * cos(2.0 * 3.141592653589793 * u2);
        }} else {{
            v = ember_unit(w[0], w[1]) < a ? b : 0.0;
        }}
        out[i] = ember_from_double<{s}>(v);
    }}
}}
"#,
        name = random_name(t.dtype),
        s = t.storage,
    )
}

/// The RNG module: one kernel per floating dtype, and their names.
pub fn module_source() -> (String, Vec<String>) {
    let mut src = String::from(super::PRELUDE);
    src.push_str(PHILOX);
    let mut names = vec![];
    for t in CUDA_TYPES.iter().filter(|t| t.dtype.is_float()) {
        src.push_str(&random(*t));
        names.push(random_name(t.dtype));
    }
    (src, names)
}
