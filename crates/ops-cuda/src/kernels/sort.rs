//! CUDA C for sorting along one dim: a stable merge sort whose every pass is one fully parallel
//! kernel over all elements of all rows. `sort_init_<t>` copies the (permuted, strided) input into
//! dense rows with indices `0..k`; `sort_merge_<t>` merges runs of `width` into runs of `2 * width`,
//! each element finding its place by binary search in the other run (left-run elements go before
//! equal right-run ones: stable). `ceil(log2 k)` passes; the last writes through the output's
//! permuted dense layout. Keys compare in their own type with NaN the largest (first when
//! descending), exactly as the CPU backend's sort, so values and indices are identical to it.

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::DType;

/// `sort_init_<dtype>(const S* x, S* v, long long* idx, ember_shape s, ember_operand a,
/// ember_operand o, long long k)`.
pub fn init_name(dtype: DType) -> String {
    format!("sort_init_{}", cuda_type(dtype).suffix)
}

/// `sort_merge_<dtype>(const S* in_v, const long long* in_i, S* out_v, long long* out_i,
/// ember_shape s, ember_operand o, long long numel, long long k, long long width, int descending)`.
pub fn merge_name(dtype: DType) -> String {
    format!("sort_merge_{}", cuda_type(dtype).suffix)
}

/// The widths of the merge passes for rows of `k` elements: 1, 2, 4, ... below `k`.
pub fn merge_widths(k: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize), |w| w.checked_mul(2)).take_while(|&w| w < k).collect()
}

const COMPARE: &str = r#"
// Whether key a sorts strictly before key b (NaN the largest; reversed when descending); keys are
// compared in their compute type (an i64 is not rounded through double); `a != a` is NaN.
template <typename K> __device__ __forceinline__ bool ember_sorts_before(K a, K b, int descending) {
    const bool an = a != a, bn = b != b;
    return descending ? ((an && !bn) || a > b) : ((!an && bn) || a < b);
}
"#;

fn kernels(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {init}(const {s}* __restrict__ x, {s}* __restrict__ v, long long* __restrict__ idx, ember_shape s, ember_operand a, ember_operand o, long long k) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
        const long long w = ember_offset(i, s, o);
        v[w] = x[ember_offset(i, s, a)];
        idx[w] = i % k;
    }}
}}

extern "C" __global__ void {merge}(const {s}* __restrict__ in_v, const long long* __restrict__ in_i, {s}* __restrict__ out_v, long long* __restrict__ out_i, ember_shape s, ember_operand o, long long numel, long long k, long long width, int descending) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < numel; i += step) {{
        const long long base = (i / k) * k, p = i % k;
        const long long start = (p / (2 * width)) * (2 * width);
        const long long mid = start + width < k ? start + width : k;
        const long long end = start + 2 * width < k ? start + 2 * width : k;
        const auto key = ember_load(in_v[i]);
        long long lo, hi, place;
        if (p < mid) {{
            // left run: after the right run's elements that sort strictly before it
            lo = mid; hi = end;
            while (lo < hi) {{
                const long long m = lo + (hi - lo) / 2;
                if (ember_sorts_before(ember_load(in_v[base + m]), key, descending)) lo = m + 1; else hi = m;
            }}
            place = p + (lo - mid);
        }} else {{
            // right run: after the left run's elements it does not sort strictly before
            lo = start; hi = mid;
            while (lo < hi) {{
                const long long m = lo + (hi - lo) / 2;
                if (!ember_sorts_before(key, ember_load(in_v[base + m]), descending)) lo = m + 1; else hi = m;
            }}
            place = start + (p - mid) + (lo - start);
        }}
        const long long q = base + place;
        const long long w = s.contiguous ? q : ember_offset(q, s, o);
        out_v[w] = in_v[i];
        out_i[w] = in_i[i];
    }}
}}
"#,
        init = init_name(t.dtype),
        merge = merge_name(t.dtype),
        s = t.storage,
    )
}

/// The sort module: init and merge kernels for every dtype, and their names.
pub fn module_source() -> (String, Vec<String>) {
    let mut src = String::from(super::PRELUDE);
    src.push_str(COMPARE);
    let mut names = vec![];
    for t in CUDA_TYPES {
        src.push_str(&kernels(t));
        names.extend([init_name(t.dtype), merge_name(t.dtype)]);
    }
    (src, names)
}
