// Ember's CUDA prelude: index helpers and the scalar functions the op table's CUDA expressions call
// (`ember_*`), written once for NVRTC and for the CPU emulation used in tests (which defines
// EMBER_EMULATION and the CUDA keywords first). Scalar code mirrors ops-cpu's `scalar.rs`.
#ifndef EMBER_PRELUDE
#define EMBER_PRELUDE

#ifndef EMBER_EMULATION
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#endif

#define EMBER_MAX_DIMS 8

// NVRTC has no <cmath>: infinity and NaN from their bits (the emulation header defines these first)
#ifndef EMBER_INF
#define EMBER_INF __longlong_as_double(0x7ff0000000000000LL)
#define EMBER_NAN __longlong_as_double(0x7ff8000000000000LL)
#endif

// One strided operand of an elementwise kernel, passed by value: element i of the (contiguous)
// output reads the operand at offset + sum_d coord_d(i) * stride[d].
struct ember_operand {
    long long offset;
    long long stride[EMBER_MAX_DIMS];
};

// The output's shape (row-major) and element count.
struct ember_shape {
    long long numel;
    int ndim;
    int contiguous; // 1 when every operand is contiguous from offset 0: index = i
    long long size[EMBER_MAX_DIMS];
};

__device__ __forceinline__ long long ember_offset(long long i, const ember_shape& s, const ember_operand& o) {
    long long off = o.offset;
    for (int d = s.ndim - 1; d >= 0; --d) {
        long long q = i / s.size[d];
        off += (i - q * s.size[d]) * o.stride[d];
        i = q;
    }
    return off;
}

// Loads and stores between the storage type and the compute type.
__device__ __forceinline__ float ember_load(__half v) { return __half2float(v); }
__device__ __forceinline__ float ember_load(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float ember_load(float v) { return v; }
__device__ __forceinline__ double ember_load(double v) { return v; }
__device__ __forceinline__ int ember_load(int v) { return v; }
__device__ __forceinline__ long long ember_load(long long v) { return v; }
__device__ __forceinline__ unsigned char ember_load(unsigned char v) { return v; }
__device__ __forceinline__ bool ember_load(bool v) { return v; }

template <typename S, typename T> __device__ __forceinline__ S ember_store(T v) { return (S)v; }
template <> __device__ __forceinline__ __half ember_store<__half, float>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 ember_store<__nv_bfloat16, float>(float v) {
    return __float2bfloat16_rn(v);
}

// Conversions with the CPU backend's semantics: through double when a float is involved (one
// rounding), saturating float-to-integer with NaN to 0 (Rust's `as`), wrapping integer-to-integer.
template <typename S> __device__ __forceinline__ S ember_from_double(double v) { return (S)v; }
template <> __device__ __forceinline__ __half ember_from_double<__half>(double v) { return __double2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 ember_from_double<__nv_bfloat16>(double v) {
    return __double2bfloat16(v);
}
template <typename I> __device__ __forceinline__ I ember_saturate(double v, double lo, double hi) {
    return isnan(v) ? I(0) : (v <= lo ? (I)lo : (v >= hi ? (I)hi : (I)v));
}
template <> __device__ __forceinline__ long long ember_from_double<long long>(double v) {
    // 2^63 is the first double above the maximum
    return isnan(v) ? 0 : (v >= 9223372036854775808.0 ? 0x7fffffffffffffffLL : (v <= -9223372036854775808.0 ? (long long)(0x8000000000000000ULL) : (long long)v));
}
template <> __device__ __forceinline__ int ember_from_double<int>(double v) {
    return ember_saturate<int>(v, -2147483648.0, 2147483647.0);
}
template <> __device__ __forceinline__ unsigned char ember_from_double<unsigned char>(double v) {
    return ember_saturate<unsigned char>(v, 0.0, 255.0);
}
template <> __device__ __forceinline__ bool ember_from_double<bool>(double v) { return v != 0.0; }

// sigmoid without overflow: 1 / (1 + e^-|x|), mirrored for negative x.
template <typename T> __device__ __forceinline__ T ember_sigmoid(T x) {
    T e = exp(-fabs(x));
    T pos = T(1) / (T(1) + e);
    return x >= T(0) ? pos : e * pos;
}

// PyTorch's sign: 0 for ±0 and NaN.
template <typename T> __device__ __forceinline__ T ember_sign(T x) {
    return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}

// Python's modulo for floats (the result takes the divisor's sign).
template <typename T> __device__ __forceinline__ T ember_remainder(T a, T b) {
    T r = fmod(a, b);
    return (r != T(0) && ((r < T(0)) != (b < T(0)))) ? r + b : r;
}
// ... and for integers: wrapping, b != 0 is checked by the caller.
__device__ __forceinline__ long long ember_remainder(long long a, long long b) {
    if (b == -1) return 0;
    long long r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}
__device__ __forceinline__ int ember_remainder(int a, int b) { return (int)ember_remainder((long long)a, (long long)b); }
__device__ __forceinline__ unsigned char ember_remainder(unsigned char a, unsigned char b) { return a % b; }

// Python's floor division for floats, as PyTorch's div_floor_floating (from fmod).
template <typename T> __device__ __forceinline__ T ember_floor_divide(T a, T b) {
    if (b == T(0)) return a / b;
    T m = fmod(a, b);
    T div = (a - m) / b;
    if (m != T(0) && ((b < T(0)) != (m < T(0)))) div -= T(1);
    if (div != T(0)) {
        T f = floor(div);
        return (div - f > T(0.5)) ? f + T(1) : f;
    }
    return copysign(T(0), a / b);
}
// ... and for integers (wrapping: the minimum divided by -1 is the minimum).
__device__ __forceinline__ long long ember_floor_divide(long long a, long long b) {
    if (b == -1) return (long long)(0ULL - (unsigned long long)a);
    long long q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ int ember_floor_divide(int a, int b) {
    return (int)ember_floor_divide((long long)a, (long long)b);
}
__device__ __forceinline__ unsigned char ember_floor_divide(unsigned char a, unsigned char b) { return a / b; }

// Digamma: reflection below 0.5, recurrence up to 10, then the asymptotic series (as ops-cpu).
template <typename T> __device__ T ember_digamma(T xin) {
    double x = (double)xin;
    if (isnan(x) || x == -EMBER_INF) return T(EMBER_NAN);
    if (x == 0.0) return signbit(x) ? T(EMBER_INF) : T(-EMBER_INF);
    if (x < 0.0 && x == floor(x)) return T(EMBER_NAN);
    double result = 0.0;
    const double pi = 3.14159265358979323846;
    if (x < 0.5) {
        result -= pi / tan(pi * x);
        x = 1.0 - x;
    }
    while (x < 10.0) {
        result -= 1.0 / x;
        x += 1.0;
    }
    double inv = 1.0 / x, inv2 = inv * inv;
    double series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 * (1.0 / 132)))));
    return T(result + log(x) - 0.5 * inv - series);
}

// Trigamma: reflection below 0.5, recurrence up to 10, then the asymptotic series; +inf at poles.
template <typename T> __device__ T ember_trigamma(T xin) {
    double x = (double)xin;
    if (isnan(x) || x == -EMBER_INF) return T(EMBER_NAN);
    if (x <= 0.0 && x == floor(x)) return T(EMBER_INF);
    const double pi = 3.14159265358979323846;
    double result = 0.0, sign = 1.0;
    if (x < 0.5) {
        double s = sin(pi * x);
        result = pi * pi / (s * s);
        sign = -1.0;
        x = 1.0 - x;
    }
    double acc = 0.0;
    while (x < 10.0) {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    double inv = 1.0 / x, inv2 = inv * inv;
    double series = inv + inv2 / 2 + inv * inv2 * (1.0 / 6 - inv2 * (1.0 / 30 - inv2 * (1.0 / 42 - inv2 * (1.0 / 30 - inv2 * (5.0 / 66)))));
    return T(result + sign * (acc + series));
}

#endif
