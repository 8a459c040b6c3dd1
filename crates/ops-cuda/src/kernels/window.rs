//! CUDA C for sliding windows (`WindowGeometry`): `im2col_<t>` unfolds `[N, C, *input]` (any
//! strides) into the dense patch matrix `[N, C * prod(kernel), prod(output)]`, one thread per output
//! element, writing the pad value where the window reaches outside the input; `col2im_<t>`, its
//! adjoint, folds a (strided) patch matrix back into a dense `[N, C, *input]`, one thread per
//! *input* element summing every patch entry that reads it, kernel positions in row-major order.
//! Gathering instead of scattering needs no atomics, and the sum's order is the CPU backend's, so
//! col2im is deterministic and matches it (f16/bf16 accumulate in f32 and round once, as there).

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::DType;

/// Spatial dims a window kernel handles (`EMBER_WINDOW_DIMS`; the operand adds N and C).
pub const WINDOW_DIMS: usize = 6;

/// `im2col_<dtype>(const S* x, S* out, ember_window w, ember_operand ox, double pad)`.
pub fn im2col_name(dtype: DType) -> String {
    format!("im2col_{}", cuda_type(dtype).suffix)
}

/// `col2im_<dtype>(const S* cols, S* out, ember_window w, ember_operand oc)` (the operand's first
/// three strides are those of the `[N, C*K, L]` patch matrix).
pub fn col2im_name(dtype: DType) -> String {
    format!("col2im_{}", cuda_type(dtype).suffix)
}

/// The dtypes col2im sums (the CPU backend's): the floats and i64.
pub fn col2im_supported(dtype: DType) -> bool {
    dtype.is_float() || dtype == DType::I64
}

/// The `ember_window` struct (mirrors `launch::WindowArg`), shared with the fused pooling kernel.
pub(crate) const WINDOW_STRUCT: &str = r#"
#define EMBER_WINDOW_DIMS 6
// The geometry of an N-d window, by value (mirrors launch::WindowArg).
struct ember_window {
    long long batch, channels, kernel_numel, out_numel;
    int nsp;
    long long input[EMBER_WINDOW_DIMS], kernel[EMBER_WINDOW_DIMS], stride[EMBER_WINDOW_DIMS];
    long long padding[EMBER_WINDOW_DIMS], dilation[EMBER_WINDOW_DIMS], output[EMBER_WINDOW_DIMS];
};
"#;

fn im2col(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ x, {s}* __restrict__ out, ember_window w, ember_operand ox, double pad) {{
    const long long total = w.batch * w.channels * w.kernel_numel * w.out_numel;
    const {s} padv = ember_from_double<{s}>(pad);
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {{
        long long l = i % w.out_numel, t = i / w.out_numel;
        long long kk = t % w.kernel_numel;
        t /= w.kernel_numel;
        const long long c = t % w.channels, n = t / w.channels;
        long long off = ox.offset + n * ox.stride[0] + c * ox.stride[1];
        bool inside = true;
        for (int d = w.nsp - 1; d >= 0; --d) {{
            const long long o = l % w.output[d], k = kk % w.kernel[d];
            l /= w.output[d];
            kk /= w.kernel[d];
            const long long pos = o * w.stride[d] + k * w.dilation[d] - w.padding[d];
            if (pos < 0 || pos >= w.input[d]) {{ inside = false; break; }}
            off += pos * ox.stride[2 + d];
        }}
        out[i] = inside ? x[off] : padv;
    }}
}}
"#,
        name = im2col_name(t.dtype),
        s = t.storage,
    )
}

fn col2im(t: CudaType) -> String {
    let acc = if t.dtype == DType::I64 { "long long" } else { t.compute };
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ cols, {s}* __restrict__ out, ember_window w, ember_operand oc) {{
    long long plane = 1;
    for (int d = 0; d < w.nsp; ++d) plane *= w.input[d];
    const long long total = w.batch * w.channels * plane;
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {{
        const long long nc = i / plane;
        const long long c = nc % w.channels, n = nc / w.channels;
        long long p[EMBER_WINDOW_DIMS];
        long long rest = i % plane;
        for (int d = w.nsp - 1; d >= 0; --d) {{ p[d] = rest % w.input[d]; rest /= w.input[d]; }}
        {acc} acc = ({acc})0;
        // every kernel position, row-major; each reads this element from at most one window
        for (long long kk = 0; kk < w.kernel_numel; ++kk) {{
            long long k_rest = kk, l = 0, scale = 1;
            bool hit = true;
            for (int d = w.nsp - 1; d >= 0; --d) {{
                const long long k = k_rest % w.kernel[d];
                k_rest /= w.kernel[d];
                const long long q = p[d] + w.padding[d] - k * w.dilation[d];
                if (q < 0 || q % w.stride[d] != 0 || q / w.stride[d] >= w.output[d]) {{ hit = false; break; }}
                l += (q / w.stride[d]) * scale;
                scale *= w.output[d];
            }}
            if (hit) acc = acc + ({acc})ember_load(cols[oc.offset + n * oc.stride[0] + (c * w.kernel_numel + kk) * oc.stride[1] + l * oc.stride[2]]);
        }}
        out[i] = ember_store<{s}>(acc);
    }}
}}
"#,
        name = col2im_name(t.dtype),
        s = t.storage,
    )
}

/// The window module: im2col for every dtype, col2im for the summable ones, and the names.
pub fn module_source() -> (String, Vec<String>) {
    let mut src = String::from(super::PRELUDE);
    src.push_str(WINDOW_STRUCT);
    let mut names = vec![];
    for t in CUDA_TYPES {
        src.push_str(&im2col(t));
        names.push(im2col_name(t.dtype));
        if col2im_supported(t.dtype) {
            src.push_str(&col2im(t));
            names.push(col2im_name(t.dtype));
        }
    }
    (src, names)
}
