// Kernel parameter blocks, passed by value. Mirrored field for field by
// `#[repr(C)]` structs in kernels/src/params.rs; a Rust test parses this file
// and fails if the two drift apart. Pointers are device addresses (u64).
// Only fixed-width types: unsigned long long (u64), unsigned int (u32),
// float (f32).
#pragma once

// Image f32 [batch, channels, size, size] -> patches elem [batch * grid^2, channels * patch^2],
// each row in the (channel, ky, kx) order of the convolution kernel.
struct Im2colParams {
    unsigned long long image;
    unsigned long long patches;
    unsigned int batch;
    unsigned int channels;
    unsigned int size;
    unsigned int patch;
};

// Residual stream f32 [batch, tokens, width]: row 0 of each image is
// cls + pos[0]; row 1 + i is patch_out[i] + patch_bias + pos[1 + i].
struct AssembleParams {
    unsigned long long patch_out;   // elem [batch * (tokens - 1), width]
    unsigned long long patch_bias;  // f32 [width]
    unsigned long long cls;         // f32 [width]
    unsigned long long pos;         // f32 [tokens, width]
    unsigned long long resid;       // f32 [batch * tokens, width]
    unsigned int batch;
    unsigned int tokens;
    unsigned int width;
    unsigned int pad0;
};

// For each selected row r = block * row_stride:
//   resid[r] += delta[r] (when delta != 0), then
//   out[block] = LayerNorm(resid[r]) * gamma + beta   (elem, or f32 for the
//   `_f32` entry point). One block of 256 threads per selected row.
struct ResidualNormParams {
    unsigned long long resid;   // f32 [rows_total, width]
    unsigned long long delta;   // elem [rows_total, width] or 0
    unsigned long long gamma;   // f32 [width]
    unsigned long long beta;    // f32 [width]
    unsigned long long out;     // elem or f32 [rows, width]
    unsigned int rows;          // selected rows (the grid size)
    unsigned int row_stride;    // 1 for all rows, tokens for the CLS rows
    unsigned int width;
    float eps;
};

// x[r, c] = gelu(x[r, c] + bias[c]) in place (erf GELU, as the reference).
struct BiasGeluParams {
    unsigned long long x;       // elem [rows, cols]
    unsigned long long bias;    // f32 [cols]
    unsigned int rows;
    unsigned int cols;
};

// Fused multi-head attention forward over the fused QKV projection:
// qkv elem [batch, tokens, 3, heads, 64] -> out elem [batch, tokens, heads, 64].
// Grid: (ceil(tokens / 64), heads, batch); 128 threads (4 warps x 16 query rows).
struct AttentionParams {
    unsigned long long qkv;
    unsigned long long out;
    unsigned int batch;
    unsigned int heads;
    unsigned int tokens;
    float scale_log2;           // log2(e) / sqrt(64)
};
