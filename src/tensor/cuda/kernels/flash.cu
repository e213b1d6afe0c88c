// Causal GQA prefill attention on tensor cores (FlashAttention-2 style), bf16/f16 storage, f32
// softmax and accumulation. Same contract as attention_prefill in attention.cu (kvLens, kvStride,
// sliding window), for head dims 64 and 128.
//
// Block = 4 warps x 16 query rows = 64 queries of one (head, sequence). K/V tiles of 64 keys are staged
// in shared memory; S = Q K^T and O += P V run as mma.sync m16n8k16 with operands fetched by ldmatrix
// (V transposed on the fly). The P fragments are the S accumulators converted in registers (the C
// layout of m16n8 matches the A layout of m16n8k16). Online softmax per row; each thread holds rows
// g and g+8 of its warp's 16 (g = lane / 4) and keys/dims 2*(lane % 4) + {0,1} of each 8-wide tile.
#include "common.cuh"
// llmopt:pdl

namespace flash {
constexpr int NW = 4;
constexpr int BQ = 16 * NW;
constexpr int BK = 64;
}  // namespace flash

// mma.sync / ldmatrix / cp.async helpers (shared with attention_backward.cu)
#include "mma.cuh"

template <typename T, int D>
__device__ __forceinline__ void attention_prefill_mma(T* out, const T* q, const T* k, const T* v, int seqQ, int kvLen,
                                                      int kvStride, int nHead, int nKvHead, int headDim, float scale,
                                                      int window, const int* kvLens, float* lse = nullptr) {
  using namespace flash;
  constexpr int SP = D + 8;     // shared row stride (halves): 16-byte rows, conflict-free ldmatrix
  constexpr int KD = D / 16;    // k-steps over the head dim for S = Q K^T
  constexpr int ND = D / 8;     // n-tiles over the head dim for O
  constexpr int NK = BK / 8;    // n-tiles over the keys of a tile
  extern __shared__ __align__(16) u16 sm[];
  u16* qs = sm;                 // [BQ][SP]
  u16* kbuf = qs + BQ * SP;     // 2 x [BK][SP] (double-buffered: the next tile loads during this one's math)
  u16* vbuf = kbuf + 2 * BK * SP;

  const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * BQ;
  const int kvh = h / (nHead / nKvHead);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tig = lane & 3;
  const long long qStride = (long long)nHead * headDim, kStride = (long long)nKvHead * headDim;
  const int posBase = (kvLens != nullptr ? kvLens[b] : kvLen) - seqQ;
  const u16* qg = reinterpret_cast<const u16*>(q) + ((long long)b * seqQ + t0) * qStride + (long long)h * headDim;
  const u16* kg = reinterpret_cast<const u16*>(k) + (long long)b * kvStride * kStride + (long long)kvh * headDim;
  const u16* vg = reinterpret_cast<const u16*>(v) + (long long)b * kvStride * kStride + (long long)kvh * headDim;

  const int tLast = imin(t0 + BQ, seqQ) - 1;
  const int kEnd = posBase + tLast + 1;
  const int kBegin = window > 0 ? imax(0, posBase + t0 - window + 1) / BK * BK : 0;
  stage_tile_async<D>(qs, qg, qStride, seqQ - t0);
  stage_tile_async<D>(kbuf, kg + (long long)kBegin * kStride, kStride, kEnd - kBegin);
  stage_tile_async<D>(vbuf, vg + (long long)kBegin * kStride, kStride, kEnd - kBegin);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  unsigned qa[KD][4];
  {
    const int j = lane >> 3, r = warp * 16 + (j & 1) * 8 + (lane & 7), c = (j >> 1) * 8;
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) ldmatrix_x4(qa[kk], qs + r * SP + kk * 16 + c);
  }

  const int row0 = t0 + warp * 16 + g, row1 = row0 + 8;
  const int p0 = row0 < seqQ ? posBase + row0 : -1, p1 = row1 < seqQ ? posBase + row1 : -1;
  float m0 = -INF_F, m1 = -INF_F, l0 = 0.f, l1 = 0.f;
  float o[ND][4];
#pragma unroll
  for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;

  const float sl2 = scale * 1.4426950408889634f;  // exp(x) = exp2(x log2 e)
  // this warp's rows: positions pw0 (first) .. pw1 (last valid); masks are needed near the diagonal only
  const int warpRow0 = t0 + warp * 16;
  const int pw0 = posBase + warpRow0, pw1 = posBase + imin(warpRow0 + 15, seqQ - 1);
  const bool warpRowsPartial = warpRow0 + 15 >= seqQ;

  int it = 0;
  for (int k0 = kBegin; k0 < kEnd; k0 += BK, ++it) {
    const u16* ks = kbuf + (it & 1) * BK * SP;
    const u16* vs = vbuf + (it & 1) * BK * SP;
    const bool more = k0 + BK < kEnd;
    if (more) {
      stage_tile_async<D>(kbuf + ((it + 1) & 1) * BK * SP, kg + (long long)(k0 + BK) * kStride, kStride, kEnd - k0 - BK);
      stage_tile_async<D>(vbuf + ((it + 1) & 1) * BK * SP, vg + (long long)(k0 + BK) * kStride, kStride, kEnd - k0 - BK);
      cp_async_commit();
    }
    // a warp whose rows all precede this tile (or are past seqQ) has nothing to add
    const bool active = warpRow0 < seqQ && k0 <= pw1;
    const bool needMask = window > 0 || warpRowsPartial || k0 + BK - 1 > pw0;
    if (active) {

    float s[NK][4];
#pragma unroll
    for (int nt = 0; nt < NK; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int nt = 0; nt < NK; nt += 2) {
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        // matrices: keys nt*8.. x dims kk*16+{0,8}, keys (nt+1)*8.. x dims kk*16+{0,8}
        const int j = lane >> 3;
        unsigned bf[4];
        ldmatrix_x4(bf, ks + ((nt + (j >> 1)) * 8 + (lane & 7)) * SP + kk * 16 + (j & 1) * 8);
        Mma<T>::run(s[nt], qa[kk], bf[0], bf[1]);
        Mma<T>::run(s[nt + 1], qa[kk], bf[2], bf[3]);
      }
    }

    // mask (near the diagonal / window edge), scale (log2 domain), row maxima
    float mx0 = -INF_F, mx1 = -INF_F;
#pragma unroll
    for (int nt = 0; nt < NK; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (needMask) {
          const int kp = k0 + nt * 8 + tig * 2 + (e & 1);
          const int p = e < 2 ? p0 : p1;
          const bool ok = kp <= p && (window <= 0 || kp > p - window);
          s[nt][e] = ok ? s[nt][e] * sl2 : -INF_F;
        } else {
          s[nt][e] *= sl2;
        }
      }
      mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
      mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(FULL_MASK, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(FULL_MASK, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    const float u0 = n0 == -INF_F ? 0.f : n0, u1 = n1 == -INF_F ? 0.f : n1;
    const float a0 = exp2f(m0 - u0), a1 = exp2f(m1 - u1);
    m0 = n0;
    m1 = n1;
    l0 *= a0;
    l1 *= a1;
#pragma unroll
    for (int i = 0; i < ND; ++i) {
      o[i][0] *= a0;
      o[i][1] *= a0;
      o[i][2] *= a1;
      o[i][3] *= a1;
    }
    unsigned pa[BK / 16][4];
#pragma unroll
    for (int nt = 0; nt < NK; ++nt) {
      const float e0 = exp2f(s[nt][0] - u0), e1 = exp2f(s[nt][1] - u0);
      const float e2 = exp2f(s[nt][2] - u1), e3 = exp2f(s[nt][3] - u1);
      l0 += e0 + e1;
      l1 += e2 + e3;
      pa[nt >> 1][(nt & 1) * 2 + 0] = Mma<T>::pack(e0, e1);
      pa[nt >> 1][(nt & 1) * 2 + 1] = Mma<T>::pack(e2, e3);
    }

    // O += P V: V tile [keys][dims] fetched transposed as the B operand
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
      for (int dt = 0; dt < ND; dt += 2) {
        // matrices: keys kk*16+{0,8}.. x dims dt*8.., then x dims (dt+1)*8..
        const int j = lane >> 3;
        unsigned bf[4];
        ldmatrix_x4_trans(bf, vs + (kk * 16 + (j & 1) * 8 + (lane & 7)) * SP + (dt + (j >> 1)) * 8);
        Mma<T>::run(o[dt], pa[kk], bf[0], bf[1]);
        Mma<T>::run(o[dt + 1], pa[kk], bf[2], bf[3]);
      }
    }
    }  // active
    if (more) cp_async_wait_all();
    __syncthreads();  // the next tile has landed for every thread; this one is free to be overwritten
  }

  l0 += __shfl_xor_sync(FULL_MASK, l0, 1);
  l0 += __shfl_xor_sync(FULL_MASK, l0, 2);
  l1 += __shfl_xor_sync(FULL_MASK, l1, 1);
  l1 += __shfl_xor_sync(FULL_MASK, l1, 2);
  const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
  if (lse != nullptr && tig == 0) {
    // natural log-sum-exp of the scaled scores: m is in log2 units, l = sum exp2(s - m)
    const long long base = (long long)b * seqQ * nHead + h;
    if (row0 < seqQ) lse[base + (long long)row0 * nHead] = l0 > 0.f ? m0 * 0.6931471805599453f + logf(l0) : -INF_F;
    if (row1 < seqQ) lse[base + (long long)row1 * nHead] = l1 > 0.f ? m1 * 0.6931471805599453f + logf(l1) : -INF_F;
  }
  u16* og = reinterpret_cast<u16*>(out) + (long long)b * seqQ * qStride + (long long)h * headDim;
#pragma unroll
  for (int dt = 0; dt < ND; ++dt) {
    const int d = dt * 8 + tig * 2;
    if (row0 < seqQ) *reinterpret_cast<unsigned*>(og + (long long)row0 * qStride + d) = Mma<T>::pack(o[dt][0] * i0, o[dt][1] * i0);
    if (row1 < seqQ) *reinterpret_cast<unsigned*>(og + (long long)row1 * qStride + d) = Mma<T>::pack(o[dt][2] * i1, o[dt][3] * i1);
  }
}

#define FLASH_ARGS(T)                                                                                         \
  T *out, const T *q, const T *k, const T *v, int seqQ, int kvLen, int kvStride, int nHead, int nKvHead, int headDim, \
      float scale, int window, const int *kvLens
#define FLASH_PASS out, q, k, v, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale, window, kvLens
#define DEF_FLASH(T, S, D)                                                                                    \
  extern "C" __global__ void __launch_bounds__(flash::NW * 32) attention_prefill_mma_##S##_d##D(FLASH_ARGS(T)) { pdl_start(); \
    attention_prefill_mma<T, D>(FLASH_PASS);                                                                  \
  }
DEF_FLASH(bf16_t, bf16, 64)
DEF_FLASH(bf16_t, bf16, 128)
DEF_FLASH(f16_t, f16, 64)
DEF_FLASH(f16_t, f16, 128)

// attention_prefill_mma_lse_*: the same kernel, also writing the log-sum-exp of each (query row, head)
// to lse [batch*seqQ, nHead] (f32) for the training backward; the inference entry points pass no lse
// and are unchanged. griddepcontrol.wait (a no-op unless launched with programmatic dependent launch)
// makes the entry safe in a family launched with it.
#define DEF_FLASH_LSE(T, S, D)                                                                                \
  extern "C" __global__ void __launch_bounds__(flash::NW * 32) attention_prefill_mma_lse_##S##_d##D(FLASH_ARGS(T), \
                                                                                                float* lse) { \
    GRID_DEPENDENCY_WAIT();                                                                                   \
    attention_prefill_mma<T, D>(FLASH_PASS, lse);                                                             \
  }
DEF_FLASH_LSE(bf16_t, bf16, 64)
DEF_FLASH_LSE(bf16_t, bf16, 128)
DEF_FLASH_LSE(f16_t, f16, 64)
DEF_FLASH_LSE(f16_t, f16, 128)
