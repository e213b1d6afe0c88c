// Causal GQA attention with online softmax (flash-attention style): no seqQ x kvLen matrix is ever
// stored. q/out rows are [batch*seqQ, nHead*headDim]; k/v rows are [batch*kvStride, nKvHead*headDim].
// Query t of sequence b sits at position kvLen_b - seqQ + t and sees keys kp <= p (and kp > p - window
// when window > 0), where kvLen_b = kvLens[b] when the kvLens pointer is given (per-sequence lengths
// read on the device: ragged batches, and decode steps replayed from a CUDA graph), else kvLen. Scores, softmax and P.V accumulate in f32. D is headDim rounded up to a multiple
// of 32 (dims past headDim are zero).
//
// prefill: block = (16-query tile, head, batch); 4 warps x 4 query rows. K/V tiles of 32 keys are
//   staged in shared memory (as f32) and shared by the 16 queries; when scoring, lane j owns key j.
// decode:  block = (query row, head); 8 warps split the keys, each keeps its own running max/sum/
//   output, merged through shared memory at the end. Used when seqQ is small.
#include "common.cuh"
// llmopt:pdl

namespace prefill {
constexpr int NW = 4;
constexpr int QPW = 4;
constexpr int QT = NW * QPW;
constexpr int KT = 32;
}  // namespace prefill

template <typename T, int D>
__device__ __forceinline__ void attention_prefill(T* out, const T* q, const T* k, const T* v, int seqQ, int kvLen,
                                                  int kvStride, int nHead, int nKvHead, int headDim, float scale,
                                                  int window, const int* kvLens, float* lse = nullptr) {
  using namespace prefill;
  constexpr int DP = D + 1;  // padded K rows: lanes reading different keys hit different banks
  constexpr int DL = D / 32;
  extern __shared__ float smem[];
  float* ks = smem;          // [KT][DP]
  float* vs = ks + KT * DP;  // [KT][D]
  float* qs = vs + KT * D;   // [QT][D]
  const int b = blockIdx.z, h = blockIdx.y, t0 = blockIdx.x * QT;
  const int kvh = h / (nHead / nKvHead);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long qStride = (long long)nHead * headDim, kStride = (long long)nKvHead * headDim;
  const int posBase = (kvLens != nullptr ? kvLens[b] : kvLen) - seqQ;

  for (int i = threadIdx.x; i < QT * D; i += blockDim.x) {
    const int r = i / D, d = i % D, t = t0 + r;
    float val = 0.f;
    if (t < seqQ && d < headDim) val = to_float(q[((long long)b * seqQ + t) * qStride + (long long)h * headDim + d]);
    qs[i] = val;
  }

  float m[QPW], l[QPW], acc[QPW][DL];
#pragma unroll
  for (int r = 0; r < QPW; ++r) {
    m[r] = -INF_F;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < DL; ++i) acc[r][i] = 0.f;
  }

  const int tLast = imin(t0 + QT, seqQ) - 1;
  const int pFirst = posBase + t0, pLast = posBase + tLast;
  const int kBegin = window > 0 ? imax(0, pFirst - window + 1) : 0;
  const int kEnd = pLast + 1;

  for (int k0 = kBegin; k0 < kEnd; k0 += KT) {
    __syncthreads();  // the previous tile is consumed (and qs is written before the first)
    for (int i = threadIdx.x; i < KT * D; i += blockDim.x) {
      const int j = i / D, d = i % D, kp = k0 + j;
      float kv = 0.f, vv = 0.f;
      if (kp < kEnd && d < headDim) {
        const long long off = ((long long)b * kvStride + kp) * kStride + (long long)kvh * headDim + d;
        kv = to_float(k[off]);
        vv = to_float(v[off]);
      }
      ks[j * DP + d] = kv;
      vs[j * D + d] = vv;
    }
    __syncthreads();

#pragma unroll
    for (int r = 0; r < QPW; ++r) {
      const int row = warp * QPW + r, t = t0 + row;
      if (t >= seqQ) continue;
      const int p = posBase + t, kp = k0 + lane;
      const bool valid = kp <= p && (window <= 0 || kp > p - window);
      float s = -INF_F;
      if (valid) {
        const float* qr = qs + row * D;
        const float* kr = ks + lane * DP;
        float dot = 0.f;
#pragma unroll 8
        for (int d = 0; d < D; ++d) dot += qr[d] * kr[d];
        s = dot * scale;
      }
      const float mNew = fmaxf(m[r], warp_max(s));
      if (mNew == -INF_F) continue;  // no visible key for this row yet (uniform across the warp)
      const float alpha = expf(m[r] - mNew);
      const float pj = valid ? expf(s - mNew) : 0.f;
      l[r] = l[r] * alpha + warp_sum(pj);
      m[r] = mNew;
#pragma unroll
      for (int i = 0; i < DL; ++i) acc[r][i] *= alpha;
      for (int j = 0; j < KT; ++j) {
        const float pb = __shfl_sync(FULL_MASK, pj, j);
#pragma unroll
        for (int i = 0; i < DL; ++i) acc[r][i] += pb * vs[j * D + lane + 32 * i];
      }
    }
  }

#pragma unroll
  for (int r = 0; r < QPW; ++r) {
    const int t = t0 + warp * QPW + r;
    if (t >= seqQ) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
    if (lse != nullptr && lane == 0) lse[((long long)b * seqQ + t) * nHead + h] = l[r] > 0.f ? m[r] + logf(l[r]) : -INF_F;
    T* o = out + ((long long)b * seqQ + t) * qStride + (long long)h * headDim;
#pragma unroll
    for (int i = 0; i < DL; ++i) {
      const int d = lane + 32 * i;
      if (d < headDim) o[d] = from_float<T>(acc[r][i] * inv);
    }
  }
}

namespace decode {
constexpr int NW = 8;
}

template <typename T, int D>
__device__ __forceinline__ void attention_decode(T* out, const T* q, const T* k, const T* v, int seqQ, int kvLen,
                                                 int kvStride, int nHead, int nKvHead, int headDim, float scale,
                                                 int window, const int* kvLens) {
  constexpr int NW = decode::NW;
  constexpr int DL = D / 32;
  __shared__ float smM[NW], smL[NW];
  __shared__ float smAcc[NW][D];
  const int bt = blockIdx.x, b = bt / seqQ, t = bt % seqQ, h = blockIdx.y;
  const int kvh = h / (nHead / nKvHead);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long qStride = (long long)nHead * headDim, kStride = (long long)nKvHead * headDim;
  const int p = (kvLens != nullptr ? kvLens[b] : kvLen) - seqQ + t;
  const int kBegin = window > 0 ? imax(0, p - window + 1) : 0;

  const T* qp = q + (long long)bt * qStride + (long long)h * headDim;
  float qr[DL], acc[DL];
#pragma unroll
  for (int i = 0; i < DL; ++i) {
    const int d = lane + 32 * i;
    qr[i] = d < headDim ? to_float(qp[d]) : 0.f;
    acc[i] = 0.f;
  }
  float m = -INF_F, l = 0.f;
  for (int kp = kBegin + warp; kp <= p; kp += NW) {
    const long long off = ((long long)b * kvStride + kp) * kStride + (long long)kvh * headDim;
    float part = 0.f;
#pragma unroll
    for (int i = 0; i < DL; ++i) {
      const int d = lane + 32 * i;
      if (d < headDim) part += qr[i] * to_float(k[off + d]);
    }
    const float s = warp_sum(part) * scale;
    const float mNew = fmaxf(m, s);
    const float alpha = expf(m - mNew), pj = expf(s - mNew);
    l = l * alpha + pj;
    m = mNew;
#pragma unroll
    for (int i = 0; i < DL; ++i) {
      const int d = lane + 32 * i;
      if (d < headDim) acc[i] = acc[i] * alpha + pj * to_float(v[off + d]);
    }
  }
  if (lane == 0) {
    smM[warp] = m;
    smL[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < DL; ++i) smAcc[warp][lane + 32 * i] = acc[i];
  __syncthreads();

  float M = -INF_F;
#pragma unroll
  for (int w = 0; w < NW; ++w) M = fmaxf(M, smM[w]);
  float L = 0.f;
#pragma unroll
  for (int w = 0; w < NW; ++w)
    if (smM[w] != -INF_F) L += smL[w] * expf(smM[w] - M);
  const float inv = L > 0.f ? 1.f / L : 0.f;
  T* o = out + (long long)bt * qStride + (long long)h * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float sum = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w)
      if (smM[w] != -INF_F) sum += smAcc[w][d] * expf(smM[w] - M);
    o[d] = from_float<T>(sum * inv);
  }
}

// split-KV decode (flash-decoding) for small seqQ: block = (KV split, KV head [x group chunk], query row).
// The query heads of one KV head (GQA group, up to GMAX at a time) share every K/V row the block reads,
// and a row's keys are cut into `splits` contiguous ranges so that even batch 1 fills the GPU. Each
// warp takes tiles of 32 keys: lane j scores key j against every head of the group (its K row read
// with 16-byte loads, q from shared memory), one max/sum reduction per head and tile, then P.V with
// lane l owning dims [l*DL, l*DL + DL). With one split the block writes the output; otherwise each
// split writes its normalized partial output and (max, sum) to partO/partML, merged by
// attention_combine. vecK: K rows may be read as 16-byte vectors (headDim, row stride, pointer).
namespace splitkv {
constexpr int NW = 4;
constexpr int GMAX = 8;
}  // namespace splitkv

template <typename T> struct VecOf;
template <> struct VecOf<float> { static constexpr int N = 4; };
template <> struct VecOf<bf16_t> { static constexpr int N = 8; };
template <> struct VecOf<f16_t> { static constexpr int N = 8; };

__device__ __forceinline__ void unpack16(const uint4& u, float* f, const float*) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack16(const uint4& u, float* f, const bf16_t*) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack16(const uint4& u, float* f, const f16_t*) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = to_float(f16_t{(u16)(w[i] & 0xffffu)});
    f[2 * i + 1] = to_float(f16_t{(u16)(w[i] >> 16)});
  }
}

template <typename T, int D>
__device__ __forceinline__ void attention_decode_split(float* partO, float* partML, T* out, const T* q, const T* k,
                                                       const T* v, int seqQ, int kvLen, int kvStride, int nHead,
                                                       int nKvHead, int headDim, float scale, int window,
                                                       const int* kvLens, int splits, int vecK) {
  using namespace splitkv;
  constexpr int DL = D / 32;
  constexpr int VEC = VecOf<T>::N;
  // V rows of each warp's current tile are staged here (rows of up to 128 bytes: 16 KB per block) so
  // the P.V loop reads shared memory instead of waiting on 32 dependent global loads; longer rows would
  // overflow the 48 KB of static shared memory with smAcc, and are read directly.
  constexpr bool STAGE_V = D * sizeof(T) <= 128;
  __shared__ float qs[GMAX][D];
  __shared__ float smM[NW][GMAX], smL[NW][GMAX];
  __shared__ float smAcc[NW][GMAX][D];
  __shared__ __align__(16) T vs[STAGE_V ? NW : 1][STAGE_V ? 32 : 1][STAGE_V ? D : 1];
  const int G = nHead / nKvHead, chunks = (G + GMAX - 1) / GMAX;
  const int kvh = blockIdx.y / chunks, h0 = kvh * G + (blockIdx.y % chunks) * GMAX;
  const int ng = imin(GMAX, kvh * G + G - h0);
  const int split = blockIdx.x, bt = blockIdx.z, b = bt / seqQ, t = bt % seqQ;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long qStride = (long long)nHead * headDim, kStride = (long long)nKvHead * headDim;
  const int p = (kvLens != nullptr ? kvLens[b] : kvLen) - seqQ + t;
  const int kBegin = window > 0 ? imax(0, p - window + 1) : 0;
  const int per = (p - kBegin + 1 + splits - 1) / splits;
  const int ks = kBegin + split * per, ke = imin(p + 1, ks + per);

  for (int i = threadIdx.x; i < GMAX * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    qs[g][d] = (g < ng && d < headDim) ? to_float(q[(long long)bt * qStride + (long long)(h0 + g) * headDim + d]) * scale : 0.f;
  }
  __syncthreads();

  float acc[GMAX][DL], m[GMAX], l[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    m[g] = -INF_F;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < DL; ++i) acc[g][i] = 0.f;
  }
  const T* kBase = k + (long long)b * kvStride * kStride + (long long)kvh * headDim;
  const T* vBase = v + (long long)b * kvStride * kStride + (long long)kvh * headDim;

  for (int t0 = ks + warp * 32; t0 < ke; t0 += NW * 32) {
    const int kp = t0 + lane;
    const bool valid = kp < ke;
    float sc[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) sc[g] = 0.f;
    if (STAGE_V) {
      // lane j copies V row kp (zeros past the chunk) into the warp's staging rows
      const T* vr = vBase + (long long)kp * kStride;
      T* dst = &vs[STAGE_V ? warp : 0][STAGE_V ? lane : 0][0];
      if (vecK) {
#pragma unroll
        for (int d0 = 0; d0 < D; d0 += VEC) {
          uint4 val = make_uint4(0u, 0u, 0u, 0u);
          if (valid && d0 < headDim) val = *reinterpret_cast<const uint4*>(vr + d0);
          *reinterpret_cast<uint4*>(dst + d0) = val;
        }
      } else {
        for (int d = 0; d < D; ++d) dst[d] = (valid && d < headDim) ? vr[d] : from_float<T>(0.f);
      }
    }
    if (valid) {
      const T* kr = kBase + (long long)kp * kStride;
      if (vecK) {
#pragma unroll 4
        for (int d0 = 0; d0 < D; d0 += VEC) {
          if (d0 >= headDim) break;
          float kf[VEC];
          unpack16(*reinterpret_cast<const uint4*>(kr + d0), kf, kr);
#pragma unroll
          for (int g = 0; g < GMAX; ++g) {
            if (g >= ng) break;
#pragma unroll
            for (int i = 0; i < VEC; ++i) sc[g] += qs[g][d0 + i] * kf[i];
          }
        }
      } else {
        for (int d = 0; d < headDim; ++d) {
          const float kf = to_float(kr[d]);
#pragma unroll
          for (int g = 0; g < GMAX; ++g) sc[g] += qs[g][d] * kf;
        }
      }
    }
    float pg[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      if (g >= ng) break;
      const float s = valid ? sc[g] : -INF_F;
      const float mNew = fmaxf(m[g], warp_max(s));  // at least lane 0's key is valid
      const float alpha = expf(m[g] - mNew);
      pg[g] = valid ? expf(s - mNew) : 0.f;
      l[g] = l[g] * alpha + warp_sum(pg[g]);
      m[g] = mNew;
#pragma unroll
      for (int i = 0; i < DL; ++i) acc[g][i] *= alpha;
    }
    const int n = imin(32, ke - t0);
    if (STAGE_V) __syncwarp();
#pragma unroll 4
    for (int j = 0; j < n; ++j) {
      const T* vr = STAGE_V ? &vs[STAGE_V ? warp : 0][STAGE_V ? j : 0][0] : vBase + (long long)(t0 + j) * kStride;
      float vf[DL];
#pragma unroll
      for (int i = 0; i < DL; ++i) {
        const int d = lane * DL + i;
        vf[i] = d < headDim ? to_float(vr[d]) : 0.f;
      }
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        if (g >= ng) break;
        const float pj = __shfl_sync(FULL_MASK, pg[g], j);
#pragma unroll
        for (int i = 0; i < DL; ++i) acc[g][i] += pj * vf[i];
      }
    }
    if (STAGE_V) __syncwarp();
  }
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (lane == 0) {
      smM[warp][g] = m[g];
      smL[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < DL; ++i) smAcc[warp][g][lane * DL + i] = acc[g][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < ng * headDim; idx += blockDim.x) {
    const int g = idx / headDim, d = idx % headDim, h = h0 + g;
    float M = -INF_F;
#pragma unroll
    for (int w = 0; w < NW; ++w) M = fmaxf(M, smM[w][g]);
    float L = 0.f, O = 0.f;
    if (M != -INF_F) {
#pragma unroll
      for (int w = 0; w < NW; ++w) {
        if (smM[w][g] == -INF_F) continue;
        const float f = expf(smM[w][g] - M);
        L += smL[w][g] * f;
        O += smAcc[w][g][d] * f;
      }
    }
    const float o = L > 0.f ? O / L : 0.f;
    if (splits == 1) {
      out[(long long)bt * qStride + (long long)h * headDim + d] = from_float<T>(o);
    } else {
      const long long slot = ((long long)bt * nHead + h) * splits + split;
      partO[slot * headDim + d] = o;
      if (d == 0) {
        partML[2 * slot] = M;
        partML[2 * slot + 1] = L;
      }
    }
  }
}

// Merges the splits of attention_decode_split: block = (head, query row).
template <typename T>
__device__ __forceinline__ void attention_combine(T* out, const float* partO, const float* partML, int nHead, int headDim,
                                                  int splits) {
  const int h = blockIdx.x, bt = blockIdx.y;
  const long long base = ((long long)bt * nHead + h) * splits;
  float M = -INF_F;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, partML[2 * (base + s)]);
  T* o = out + ((long long)bt * nHead + h) * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float L = 0.f, O = 0.f;
    if (M != -INF_F) {
      for (int s = 0; s < splits; ++s) {
        const float ms = partML[2 * (base + s)];
        if (ms == -INF_F) continue;
        const float w = partML[2 * (base + s) + 1] * expf(ms - M);
        L += w;
        O += w * partO[(base + s) * headDim + d];
      }
    }
    o[d] = from_float<T>(L > 0.f ? O / L : 0.f);
  }
}

#define ATTENTION_ARGS(T)                                                                                     \
  T *out, const T *q, const T *k, const T *v, int seqQ, int kvLen, int kvStride, int nHead, int nKvHead, int headDim, \
      float scale, int window, const int *kvLens
#define ATTENTION_PASS out, q, k, v, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale, window, kvLens

#define DEF_ATTENTION_D(T, S, D)                                                                             \
  extern "C" __global__ void __launch_bounds__(prefill::NW * 32) attention_prefill_##S##_d##D(ATTENTION_ARGS(T)) { pdl_start(); \
    attention_prefill<T, D>(ATTENTION_PASS);                                                                 \
  }                                                                                                          \
  extern "C" __global__ void __launch_bounds__(decode::NW * 32) attention_decode_##S##_d##D(ATTENTION_ARGS(T)) { pdl_start();   \
    attention_decode<T, D>(ATTENTION_PASS);                                                                  \
  }                                                                                                          \
  extern "C" __global__ void __launch_bounds__(splitkv::NW * 32)                                             \
      attention_decode_split_##S##_d##D(float* partO, float* partML, ATTENTION_ARGS(T), int splits, int vecK) { pdl_start(); \
    attention_decode_split<T, D>(partO, partML, ATTENTION_PASS, splits, vecK);                               \
  }
#define DEF_COMBINE(T, S)                                                                                  \
  extern "C" __global__ void attention_combine_##S(T* out, const float* partO, const float* partML, int nHead,    \
                                                   int headDim, int splits) { pdl_start();                                    \
    attention_combine<T>(out, partO, partML, nHead, headDim, splits);                                          \
  }
FOR_EACH_DTYPE(DEF_COMBINE)
#define DEF_ATTENTION(T, S) \
  DEF_ATTENTION_D(T, S, 32) DEF_ATTENTION_D(T, S, 64) DEF_ATTENTION_D(T, S, 128) DEF_ATTENTION_D(T, S, 256)
FOR_EACH_DTYPE(DEF_ATTENTION)

// attention_prefill_lse_*: the prefill kernel also writing the softmax log-sum-exp per (query row, head)
// to lse [batch*seqQ, nHead] (f32), for the training backward (attention_prefill_* are unchanged).
// griddepcontrol.wait: a no-op unless launched with programmatic dependent launch.
#define DEF_ATTENTION_LSE_D(T, S, D)                                                                         \
  extern "C" __global__ void __launch_bounds__(prefill::NW * 32)                                             \
      attention_prefill_lse_##S##_d##D(ATTENTION_ARGS(T), float* lse) {                                      \
    GRID_DEPENDENCY_WAIT();                                                                                  \
    attention_prefill<T, D>(ATTENTION_PASS, lse);                                                            \
  }
#define DEF_ATTENTION_LSE(T, S) \
  DEF_ATTENTION_LSE_D(T, S, 32) DEF_ATTENTION_LSE_D(T, S, 64) DEF_ATTENTION_LSE_D(T, S, 128) DEF_ATTENTION_LSE_D(T, S, 256)
FOR_EACH_DTYPE(DEF_ATTENTION_LSE)
