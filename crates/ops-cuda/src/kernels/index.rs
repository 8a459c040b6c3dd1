//! CUDA C for the indexing ops (`IndexOp`), two kernels per dtype and one more for accumulation:
//!
//! - `gather_<t>` (gather and index_select): `out[i] = x[ox(i) + j * stride]` with `j = idx[oi(i)]`.
//! - `scatter_<t>` / `scatter_add_<t>` (scatter, scatter_add, index_add): on a dense copy of the
//!   input, `out[oo(i) + j * stride] = src[os(i)]` (or `+=`, atomically).
//!
//! The host shapes every op into these by giving the indexed operand a zero stride along `dim` (its
//! position along `dim` is `j`, not the loop's coordinate), and a 1-d index (index_select, index_add)
//! a zero stride everywhere but `dim`. So no kernel needs to know which dim is indexed, and the
//! launch arguments' dim merging still applies.
//!
//! **Index errors**: every index is checked against the dim's size on the device. An index out of
//! range is not read or written through; the first thread to find one records it in a two-slot flag
//! (`err[0] = 1`, `err[1] = the index`), which the backend reads back right after the launch (one
//! synchronisation per indexing op) and turns into an `Error` naming the op — a bad index never
//! becomes a device assert that would poison the context. Which bad index is reported, when there are
//! several, is the first one a thread found (the CPU backend reports the first in row-major order).
//!
//! **Accumulation**: `scatter_add` adds with atomics, so when several indices name one element the
//! order of float additions (and so the last bits of the sum) can vary between runs, as PyTorch's
//! CUDA `scatter_add`. f32, f64, i32 and i64 use the hardware's atomic add; the 1- and 2-byte dtypes
//! (bool, u8, f16, bf16) a compare-and-swap loop on the aligned 32-bit word holding the element (the
//! backend pads every allocation to 8 bytes, so that word is always inside it). Plain `scatter` with
//! repeated indices keeps one of the written values, unspecified which (also as PyTorch).

use super::dtype::{cuda_type, CudaType, CUDA_TYPES};
use ember_storage::DType;

/// `gather_<dtype>(const S* x, const long long* idx, S* out, ember_shape s, ember_operand ox,
/// ember_operand oi, long long stride, long long size, long long* err)`.
pub fn gather_name(dtype: DType) -> String {
    format!("gather_{}", cuda_type(dtype).suffix)
}

/// `scatter_<dtype>` (`add` false) or `scatter_add_<dtype>`: `(const S* src, const long long* idx,
/// S* out, ember_shape s, ember_operand os, ember_operand oi, ember_operand oo, long long stride,
/// long long size, long long* err)`.
pub fn scatter_name(dtype: DType, add: bool) -> String {
    format!("scatter_{}{}", if add { "add_" } else { "" }, cuda_type(dtype).suffix)
}

/// Atomic adds with the CPU backend's `add_elem` semantics, and the index-error flag.
const ATOMICS: &str = r#"
// Bits of the 1- and 2-byte element types, for the compare-and-swap loop below.
template <typename S> struct ember_bits;
template <> struct ember_bits<bool> {
    static __device__ unsigned int to(bool v) { return v ? 1u : 0u; }
    static __device__ bool from(unsigned int b) { return b != 0u; }
    static __device__ bool add(bool a, bool b) { return a || b; }
};
template <> struct ember_bits<unsigned char> {
    static __device__ unsigned int to(unsigned char v) { return v; }
    static __device__ unsigned char from(unsigned int b) { return (unsigned char)b; }
    static __device__ unsigned char add(unsigned char a, unsigned char b) { return (unsigned char)(a + b); }
};
template <> struct ember_bits<__half> {
    static __device__ unsigned int to(__half v) { return __half_as_ushort(v); }
    static __device__ __half from(unsigned int b) { return __ushort_as_half((unsigned short)b); }
    static __device__ __half add(__half a, __half b) { return __float2half_rn(__half2float(a) + __half2float(b)); }
};
template <> struct ember_bits<__nv_bfloat16> {
    static __device__ unsigned int to(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
    static __device__ __nv_bfloat16 from(unsigned int b) { return __ushort_as_bfloat16((unsigned short)b); }
    static __device__ __nv_bfloat16 add(__nv_bfloat16 a, __nv_bfloat16 b) {
        return __float2bfloat16_rn(__bfloat162float(a) + __bfloat162float(b));
    }
};

// A 1- or 2-byte element added to through a compare-and-swap on the aligned word holding it.
template <typename S> __device__ void ember_atomic_add(S* p, S v) {
    unsigned int* word = (unsigned int*)((unsigned long long)p & ~3ULL);
    const unsigned int shift = (unsigned int)((unsigned long long)p & 3ULL) * 8u;
    const unsigned int mask = (sizeof(S) == 1 ? 0xffu : 0xffffu) << shift;
    unsigned int old = *word, assumed;
    do {
        assumed = old;
        const S sum = ember_bits<S>::add(ember_bits<S>::from((assumed & mask) >> shift), v);
        old = atomicCAS(word, assumed, (assumed & ~mask) | ((ember_bits<S>::to(sum) << shift) & mask));
    } while (old != assumed);
}
__device__ __forceinline__ void ember_atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void ember_atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void ember_atomic_add(int* p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void ember_atomic_add(long long* p, long long v) {
    atomicAdd((unsigned long long*)p, (unsigned long long)v); // two's complement: wraps as i64
}

// Records an out-of-range index: the first thread to find one stores it.
__device__ __forceinline__ void ember_index_error(long long* err, long long j) {
    if (atomicCAS((unsigned long long*)err, 0ULL, 1ULL) == 0ULL) err[1] = j;
}
"#;

fn gather(t: CudaType) -> String {
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ x, const long long* __restrict__ idx, {s}* __restrict__ out, ember_shape s, ember_operand ox, ember_operand oi, long long stride, long long size, long long* err) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
        const long long j = idx[ember_offset(i, s, oi)];
        if (j < 0 || j >= size) {{ ember_index_error(err, j); continue; }}
        out[i] = x[ember_offset(i, s, ox) + j * stride];
    }}
}}
"#,
        name = gather_name(t.dtype),
        s = t.storage,
    )
}

fn scatter(t: CudaType, add: bool) -> String {
    let write = if add { "ember_atomic_add(&out[at], v)" } else { "out[at] = v" };
    format!(
        r#"extern "C" __global__ void {name}(const {s}* __restrict__ src, const long long* __restrict__ idx, {s}* out, ember_shape s, ember_operand os, ember_operand oi, ember_operand oo, long long stride, long long size, long long* err) {{
    long long step = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < s.numel; i += step) {{
        const long long j = idx[ember_offset(i, s, oi)];
        if (j < 0 || j >= size) {{ ember_index_error(err, j); continue; }}
        const long long at = ember_offset(i, s, oo) + j * stride;
        const {s} v = src[ember_offset(i, s, os)];
        {write};
    }}
}}
"#,
        name = scatter_name(t.dtype, add),
        s = t.storage,
    )
}

/// The indexing module: gather, scatter and scatter_add for every dtype, and the kernels' names.
pub fn module_source() -> (String, Vec<String>) {
    let mut src = String::from(super::PRELUDE);
    src.push_str(ATOMICS);
    let mut names = vec![];
    for t in CUDA_TYPES {
        src.push_str(&gather(t));
        src.push_str(&scatter(t, false));
        src.push_str(&scatter(t, true));
        names.extend([gather_name(t.dtype), scatter_name(t.dtype, false), scatter_name(t.dtype, true)]);
    }
    (src, names)
}
