// A CPU stand-in for the parts of CUDA C that Ember's elementwise kernels use, so the same
// sources compile as C++ and run on the host in tests: kernel qualifiers, the thread indices
// (thread-local, set by the launcher for each block and thread in turn), the math functions
// NVRTC provides beyond <cmath> (rsqrt, erfinv), and __half / __nv_bfloat16 with
// round-to-nearest-even conversions.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <barrier>
#include <thread>
#include <vector>

using namespace std;

#define EMBER_EMULATION 1
#define EMBER_INF INFINITY
#define EMBER_NAN NAN
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__

struct ember_dim3 { unsigned x, y, z; };
static thread_local ember_dim3 threadIdx, blockIdx, blockDim, gridDim;

inline float rsqrt(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }

// erfinv by Newton steps on erf from a rational first guess (as ops-cpu's special.rs).
inline double ember_erfinv_f64(double y) {
    if (isnan(y) || y < -1.0 || y > 1.0) return NAN;
    if (y == 1.0) return INFINITY;
    if (y == -1.0) return -INFINITY;
    double w = -log((1.0 - y) * (1.0 + y)), x;
    if (w < 5.0) {
        w -= 2.5;
        double p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w; p = -3.5233877e-06 + p * w; p = -4.39150654e-06 + p * w;
        p = 0.00021858087 + p * w; p = -0.00125372503 + p * w; p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w; p = 1.50140941 + p * w;
        x = p * y;
    } else {
        w = sqrt(w) - 3.0;
        double p = -0.000200214257;
        p = 0.000100950558 + p * w; p = 0.00134934322 + p * w; p = -0.00367342844 + p * w;
        p = 0.00573950773 + p * w; p = -0.0076224613 + p * w; p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w; p = 2.83297682 + p * w;
        x = p * y;
    }
    for (int i = 0; i < 3; ++i) {
        double err = erf(x) - y;
        x -= err / (2.0 / sqrt(M_PI) * exp(-x * x));
    }
    return x;
}
inline float erfinv(float y) { return (float)ember_erfinv_f64(y); }
inline double erfinv(double y) { return ember_erfinv_f64(y); }

struct __half { _Float16 v; };
inline float __half2float(__half h) { return (float)h.v; }
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }

struct __nv_bfloat16 { uint16_t bits; };
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)}; // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline __half __double2half(double d) { return __half{(_Float16)d}; }
// through f32: a second rounding only for doubles within half an f32 ulp of a bf16 midpoint
inline __nv_bfloat16 __double2bfloat16(double d) { return __float2bfloat16_rn((float)d); }

// Bits of the 16-bit float types, and the atomics the indexing kernels use (std::atomic_ref, so
// they stay atomic under the threaded launcher too).
inline unsigned short __half_as_ushort(__half h) { unsigned short u; memcpy(&u, &h, 2); return u; }
inline __half __ushort_as_half(unsigned short u) { __half h; memcpy(&h, &u, 2); return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }
template <typename T> inline T atomicCAS(T* p, T compare, T value) {
    std::atomic_ref<T>(*p).compare_exchange_strong(compare, value);
    return compare; // the old value, as CUDA's
}
template <typename T> inline T atomicAdd(T* p, T v) {
    if constexpr (std::is_floating_point_v<T>) {
        T old = std::atomic_ref<T>(*p).load();
        while (!std::atomic_ref<T>(*p).compare_exchange_weak(old, old + v)) {}
        return old;
    } else {
        return std::atomic_ref<T>(*p).fetch_add(v);
    }
}

// Kernels with __syncthreads and __shared__ memory: each block's threads run as OS threads that meet
// at a barrier; shared arrays are function statics (one block runs at a time).
#define __shared__ static
static std::barrier<>* ember_block_barrier = nullptr;
inline void __syncthreads() { ember_block_barrier->arrive_and_wait(); }
template <typename F> void ember_launch_threaded(unsigned grid, unsigned block, F body) {
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> bar(block);
        ember_block_barrier = &bar;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([=] {
                gridDim = {grid, 1, 1};
                blockDim = {block, 1, 1};
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                body();
            });
        }
        for (auto& th : threads) th.join();
    }
}
