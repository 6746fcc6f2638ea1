// Patch extraction, token assembly, residual + LayerNorm, bias + GELU.
// Memory-bound and simple: one thread per output element, or one block per
// row where a row reduction is needed.
#include "common.cuh"

template <typename E>
__device__ void im2col(const Im2colParams p) {
    const unsigned int grid = p.size / p.patch;
    const unsigned int cols = p.channels * p.patch * p.patch;
    const unsigned long long total = (unsigned long long)p.batch * grid * grid * cols;
    const float* image = reinterpret_cast<const float*>(p.image);
    elem_t* out = reinterpret_cast<elem_t*>(p.patches);
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int col = i % cols;
        const unsigned long long row = i / cols;
        const unsigned int kx = col % p.patch, ky = (col / p.patch) % p.patch, ch = col / (p.patch * p.patch);
        const unsigned int gx = row % grid, gy = (row / grid) % grid;
        const unsigned long long b = row / (grid * grid);
        const unsigned long long src =
            ((b * p.channels + ch) * p.size + gy * p.patch + ky) * p.size + gx * p.patch + kx;
        out[i] = E::from_f32(image[src]);
    }
}
EXPORT_F16_BF16(im2col, Im2colParams)

template <typename E>
__device__ void assemble_tokens(const AssembleParams p) {
    const unsigned long long total = (unsigned long long)p.batch * p.tokens * p.width;
    const elem_t* patch_out = reinterpret_cast<const elem_t*>(p.patch_out);
    const float* bias = reinterpret_cast<const float*>(p.patch_bias);
    const float* cls = reinterpret_cast<const float*>(p.cls);
    const float* pos = reinterpret_cast<const float*>(p.pos);
    float* resid = reinterpret_cast<float*>(p.resid);
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned int c = i % p.width;
        const unsigned int t = (i / p.width) % p.tokens;
        const unsigned long long b = i / ((unsigned long long)p.width * p.tokens);
        const float v = t == 0 ? cls[c]
                               : E::to_f32(patch_out[(b * (p.tokens - 1) + t - 1) * p.width + c]) + bias[c];
        resid[i] = v + pos[(unsigned long long)t * p.width + c];
    }
}
EXPORT_F16_BF16(assemble_tokens, AssembleParams)

// One block (256 threads) per selected row; two passes over the row held in
// registers (width <= 256 * 16 = 4096), mean then variance, in f32.
template <typename E, bool OUT_F32>
__device__ void residual_norm(const ResidualNormParams p) {
    constexpr int PER = 16;
    __shared__ float partial[8];
    __shared__ float stat;
    const unsigned long long row = (unsigned long long)blockIdx.x * p.row_stride;
    float* resid = reinterpret_cast<float*>(p.resid) + row * p.width;
    const elem_t* delta = p.delta ? reinterpret_cast<const elem_t*>(p.delta) + row * p.width : nullptr;
    const float* gamma = reinterpret_cast<const float*>(p.gamma);
    const float* beta = reinterpret_cast<const float*>(p.beta);
    const unsigned long long out_row = (unsigned long long)blockIdx.x * p.width;
    float v[PER];
    float sum = 0.f;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        const unsigned int c = threadIdx.x + k * blockDim.x;
        v[k] = 0.f;
        if (c < p.width) {
            v[k] = resid[c] + (delta ? E::to_f32(delta[c]) : 0.f);
            if (delta) resid[c] = v[k];
            sum += v[k];
        }
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    sum = warp_sum(sum);
    if (lane == 0) partial[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int w = 0; w < (int)(blockDim.x / 32); ++w) s += partial[w];
        stat = s / p.width;
    }
    __syncthreads();
    const float mean = stat;
    float sq = 0.f;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        const unsigned int c = threadIdx.x + k * blockDim.x;
        if (c < p.width) sq += (v[k] - mean) * (v[k] - mean);
    }
    sq = warp_sum(sq);
    __syncthreads();
    if (lane == 0) partial[warp] = sq;
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.f;
        for (int w = 0; w < (int)(blockDim.x / 32); ++w) s += partial[w];
        stat = rsqrtf(s / p.width + p.eps);
    }
    __syncthreads();
    const float inv = stat;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
        const unsigned int c = threadIdx.x + k * blockDim.x;
        if (c < p.width) {
            const float y = (v[k] - mean) * inv * gamma[c] + beta[c];
            if (OUT_F32) {
                reinterpret_cast<float*>(p.out)[out_row + c] = y;
            } else {
                reinterpret_cast<elem_t*>(p.out)[out_row + c] = E::from_f32(y);
            }
        }
    }
}
template <typename E> __device__ void residual_norm_elem(const ResidualNormParams p) { residual_norm<E, false>(p); }
template <typename E> __device__ void residual_norm_out_f32(const ResidualNormParams p) { residual_norm<E, true>(p); }
EXPORT_F16_BF16(residual_norm_elem, ResidualNormParams)
EXPORT_F16_BF16(residual_norm_out_f32, ResidualNormParams)

template <typename E>
__device__ void bias_gelu(const BiasGeluParams p) {
    const unsigned long long total = (unsigned long long)p.rows * p.cols;
    elem_t* x = reinterpret_cast<elem_t*>(p.x);
    const float* bias = reinterpret_cast<const float*>(p.bias);
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < total;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const float v = E::to_f32(x[i]) + bias[i % p.cols];
        x[i] = E::from_f32(0.5f * v * (1.f + erff(v * 0.70710678118654752f)));
    }
}
EXPORT_F16_BF16(bias_gelu, BiasGeluParams)
