// Element types and conversions shared by the kernels, with no CUDA headers:
// NVRTC ships none, and the appliance must compile its kernels at start on a
// board that may have no toolkit. 16-bit elements are stored as raw bits
// (`unsigned short`); conversions and tensor-core MMAs are inline PTX
// (sm_80 and later: Orin sm_87, Ada sm_89, Hopper sm_90).
//
// Each kernel is written once as a template over an element tag (F16 or
// BF16) and exported twice, `name_f16` and `name_bf16`, with C linkage.
#pragma once
#include "params.cuh"

typedef unsigned short elem_t;

struct F16 {
    static __device__ __forceinline__ float to_f32(elem_t v) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
        return f;
    }
    static __device__ __forceinline__ elem_t from_f32(float f) {
        elem_t v;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v) : "f"(f));
        return v;
    }
    // {lo, hi} -> one 32-bit register (lo in the low half).
    static __device__ __forceinline__ unsigned pack(float lo, float hi) {
        unsigned r;
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    // d += a * b, m16n8k16, row-major A, column-major B, f32 accumulators.
    static __device__ __forceinline__ void mma(float* d, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

struct BF16 {
    static __device__ __forceinline__ float to_f32(elem_t v) {
        return __uint_as_float(((unsigned)v) << 16);
    }
    static __device__ __forceinline__ elem_t from_f32(float f) {
        elem_t v;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(v) : "f"(f));
        return v;
    }
    static __device__ __forceinline__ unsigned pack(float lo, float hi) {
        unsigned r;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
    static __device__ __forceinline__ void mma(float* d, const unsigned* a, const unsigned* b) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
};

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

#define NEG_INF __int_as_float(0xff800000)

#define EXPORT_F16_BF16(name, Params)                                                   \
    extern "C" __global__ void name##_f16(const Params p) { name<F16>(p); }             \
    extern "C" __global__ void name##_bf16(const Params p) { name<BF16>(p); }
