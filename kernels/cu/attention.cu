// Fused multi-head attention forward, FlashAttention-2 style: a block takes
// 64 queries of one (image, head); it streams 64-key tiles of K and V
// through shared memory, computes S = Q K^T on tensor cores (mma.sync
// m16n8k16, f32 accumulation), keeps a running row max and row sum (online
// softmax in base 2) and accumulates P V in registers, so the tokens x tokens
// score matrix never reaches global memory.
//
// Layout: qkv elem [batch, tokens, 3, heads, 64] (the fused QKV projection,
// timm order); out elem [batch, tokens, heads, 64]. Head dimension 64; any
// sequence length: ragged tiles are zero-filled and their keys masked.
// Grid (ceil(tokens / 64), heads, batch); 128 threads. Warp w owns query rows
// 16w..16w+15 of the tile; within a warp, lane = 4g + t holds rows g and g+8
// and columns 2t, 2t+1 of every 8-column slice (the MMA fragment layout),
// so row reductions are shuffles within groups of 4 lanes.
#include "common.cuh"

namespace attn {
constexpr int HD = 64;
constexpr int TILE = 64;
constexpr int THREADS = 128;
constexpr int LDE = HD + 8;  // shared row pitch in elements: conflict-free 32-bit fragment loads
}  // namespace attn

// Copy 64 rows of K (which = 1) or V (which = 2) from token `first` into
// shared memory, 16 bytes per thread per step; rows past the end are zero.
__device__ __forceinline__ void load_kv_tile(elem_t* tile, const elem_t* qkv, const AttentionParams& p,
                                             unsigned int b, unsigned int h, unsigned int first,
                                             unsigned int which) {
    using namespace attn;
    const unsigned long long token_pitch = 3ull * p.heads * HD;
    for (int chunk = threadIdx.x; chunk < TILE * HD / 8; chunk += THREADS) {
        const int r = chunk / (HD / 8), c = (chunk % (HD / 8)) * 8;
        const unsigned int t = first + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (t < p.tokens) {
            v = *reinterpret_cast<const uint4*>(qkv + ((unsigned long long)b * p.tokens + t) * token_pitch +
                                                (unsigned long long)which * p.heads * HD +
                                                (unsigned long long)h * HD + c);
        }
        *reinterpret_cast<uint4*>(tile + r * LDE + c) = v;
    }
}

__device__ __forceinline__ unsigned pair_bits(elem_t lo, elem_t hi) {
    return (unsigned)lo | ((unsigned)hi << 16);
}

template <typename E>
__device__ void flash_attention(const AttentionParams p) {
    using namespace attn;
    __shared__ __align__(16) elem_t sk[TILE * LDE];
    __shared__ __align__(16) elem_t sv[TILE * LDE];

    const unsigned int h = blockIdx.y, b = blockIdx.z;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const elem_t* qkv = reinterpret_cast<const elem_t*>(p.qkv);
    const unsigned long long token_pitch = 3ull * p.heads * HD;
    const unsigned int row_lo = blockIdx.x * TILE + warp * 16 + g, row_hi = row_lo + 8;

    // Q as A fragments (16 rows x 64), straight from global into registers.
    unsigned qa[HD / 16][4];
    {
        const unsigned* q_lo = reinterpret_cast<const unsigned*>(
            qkv + ((unsigned long long)b * p.tokens + row_lo) * token_pitch + (unsigned long long)h * HD);
        const unsigned* q_hi = reinterpret_cast<const unsigned*>(
            qkv + ((unsigned long long)b * p.tokens + row_hi) * token_pitch + (unsigned long long)h * HD);
        const bool lo_ok = row_lo < p.tokens, hi_ok = row_hi < p.tokens;
#pragma unroll
        for (int kk = 0; kk < HD / 16; ++kk) {
            qa[kk][0] = lo_ok ? q_lo[(kk * 16 + 2 * t) / 2] : 0u;
            qa[kk][1] = hi_ok ? q_hi[(kk * 16 + 2 * t) / 2] : 0u;
            qa[kk][2] = lo_ok ? q_lo[(kk * 16 + 8 + 2 * t) / 2] : 0u;
            qa[kk][3] = hi_ok ? q_hi[(kk * 16 + 8 + 2 * t) / 2] : 0u;
        }
    }

    float o[HD / 8][4];
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m_lo = NEG_INF, m_hi = NEG_INF, l_lo = 0.f, l_hi = 0.f;

    for (unsigned int k0 = 0; k0 < p.tokens; k0 += TILE) {
        __syncthreads();  // the previous tile is no longer read
        load_kv_tile(sk, qkv, p, b, h, k0, 1);
        load_kv_tile(sv, qkv, p, b, h, k0, 2);
        __syncthreads();

        // S = Q K^T: 8 slices of 8 keys; B fragment = two adjacent head
        // dimensions of one key, a single 32-bit shared load.
        float s[TILE / 8][4];
#pragma unroll
        for (int n = 0; n < TILE / 8; ++n) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
            const unsigned* krow = reinterpret_cast<const unsigned*>(sk + (n * 8 + g) * LDE);
#pragma unroll
            for (int kk = 0; kk < HD / 16; ++kk) {
                const unsigned kb[2] = {krow[(kk * 16 + 2 * t) / 2], krow[(kk * 16 + 8 + 2 * t) / 2]};
                E::mma(s[n], qa[kk], kb);
            }
        }

        // Online softmax, base 2; keys past the end are masked.
        float mx_lo = NEG_INF, mx_hi = NEG_INF;
#pragma unroll
        for (int n = 0; n < TILE / 8; ++n) {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
                const bool valid = k0 + n * 8 + 2 * t + j < p.tokens;
                s[n][j] = valid ? s[n][j] * p.scale_log2 : NEG_INF;
                s[n][2 + j] = valid ? s[n][2 + j] * p.scale_log2 : NEG_INF;
                mx_lo = fmaxf(mx_lo, s[n][j]);
                mx_hi = fmaxf(mx_hi, s[n][2 + j]);
            }
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
        }
        // Finite: every key tile holds at least one valid key.
        const float new_lo = fmaxf(m_lo, mx_lo), new_hi = fmaxf(m_hi, mx_hi);
        const float alpha_lo = exp2f(m_lo - new_lo), alpha_hi = exp2f(m_hi - new_hi);
        m_lo = new_lo;
        m_hi = new_hi;

        // P as A fragments: S slices 2c and 2c+1 form key chunk c (16 keys).
        unsigned pa[TILE / 16][4];
        float sum_lo = 0.f, sum_hi = 0.f;
#pragma unroll
        for (int n = 0; n < TILE / 8; ++n) {
            const elem_t p0 = E::from_f32(exp2f(s[n][0] - new_lo)), p1 = E::from_f32(exp2f(s[n][1] - new_lo));
            const elem_t p2 = E::from_f32(exp2f(s[n][2] - new_hi)), p3 = E::from_f32(exp2f(s[n][3] - new_hi));
            // Normalise by exactly what is multiplied (the rounded P).
            sum_lo += E::to_f32(p0) + E::to_f32(p1);
            sum_hi += E::to_f32(p2) + E::to_f32(p3);
            pa[n / 2][(n % 2) * 2 + 0] = pair_bits(p0, p1);
            pa[n / 2][(n % 2) * 2 + 1] = pair_bits(p2, p3);
        }
#pragma unroll
        for (int off = 1; off < 4; off <<= 1) {
            sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, off);
            sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, off);
        }
        l_lo = l_lo * alpha_lo + sum_lo;
        l_hi = l_hi * alpha_hi + sum_hi;

        // O = O * alpha + P V; B fragment = one head dimension of two keys.
#pragma unroll
        for (int n = 0; n < HD / 8; ++n) {
            o[n][0] *= alpha_lo;
            o[n][1] *= alpha_lo;
            o[n][2] *= alpha_hi;
            o[n][3] *= alpha_hi;
#pragma unroll
            for (int c = 0; c < TILE / 16; ++c) {
                const elem_t* vcol = sv + n * 8 + g;
                const unsigned vb[2] = {
                    pair_bits(vcol[(c * 16 + 2 * t) * LDE], vcol[(c * 16 + 2 * t + 1) * LDE]),
                    pair_bits(vcol[(c * 16 + 8 + 2 * t) * LDE], vcol[(c * 16 + 9 + 2 * t) * LDE]),
                };
                E::mma(o[n], pa[c], vb);
            }
        }
    }

    // out[row, h, :] = O / l, two adjacent columns per 32-bit store.
    unsigned* out = reinterpret_cast<unsigned*>(p.out);
    const unsigned long long out_pitch = (unsigned long long)p.heads * HD / 2;
    const float inv_lo = 1.f / l_lo, inv_hi = 1.f / l_hi;
#pragma unroll
    for (int n = 0; n < HD / 8; ++n) {
        const unsigned long long col = ((unsigned long long)h * HD + n * 8 + 2 * t) / 2;
        if (row_lo < p.tokens)
            out[((unsigned long long)b * p.tokens + row_lo) * out_pitch + col] = E::pack(o[n][0] * inv_lo, o[n][1] * inv_lo);
        if (row_hi < p.tokens)
            out[((unsigned long long)b * p.tokens + row_hi) * out_pitch + col] = E::pack(o[n][2] * inv_hi, o[n][3] * inv_hi);
    }
}
EXPORT_F16_BF16(flash_attention, AttentionParams)
