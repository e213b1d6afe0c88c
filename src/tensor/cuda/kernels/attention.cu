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

namespace fused {
constexpr int NW = 4;
constexpr int SPLIT_MAX = 64;
}  // namespace fused

__device__ __forceinline__ float load_cg(const float* p) {
  float v;
  asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  return v;
}

// N elements of T packed little-endian in 32-bit words -> f32.
template <typename T, int N>
__device__ __forceinline__ void unpack_words(const unsigned* w, float* f) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if constexpr (sizeof(T) == 4) {
      f[i] = __uint_as_float(w[i]);
    } else {
      const unsigned h = (i & 1) ? (w[i >> 1] >> 16) : (w[i >> 1] & 0xffffu);
      f[i] = to_float(T{(u16)h});
    }
  }
}

// VB bytes (2, 4, 8 or 16) at p into words.
template <int VB>
__device__ __forceinline__ void load_bytes(unsigned* w, const void* p) {
  if constexpr (VB == 2) {
    w[0] = *reinterpret_cast<const u16*>(p);
  } else if constexpr (VB == 4) {
    w[0] = *reinterpret_cast<const unsigned*>(p);
  } else if constexpr (VB == 8) {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    w[0] = u.x; w[1] = u.y;
  } else {
    static_assert(VB == 16, "V slice of 2, 4, 8 or 16 bytes");
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    w[0] = u.x; w[1] = u.y; w[2] = u.z; w[3] = u.w;
  }
}

template <typename T, int D, int GC>
__device__ __forceinline__ void attention_decode_fused(float* partO, float* partML, int* counters, T* out, const T* q,
                                                       const T* k, const T* v, int seqQ, int kvLen, int kvStride,
                                                       int nHead, int nKvHead, int headDim, float scale, int window,
                                                       const int* kvLens, int splits, int vec) {
  using namespace fused;
  constexpr int DL = D / 32;
  constexpr int VEC = Vec<T>::N;
  constexpr bool REGS = D * sizeof(T) <= 128;
  constexpr int KW = REGS ? D * (int)sizeof(T) / 4 : 4;         // words of a lane's K row
  constexpr int VB = DL * (int)sizeof(T);                        // bytes of a lane's slice of one V row
  constexpr int VW = REGS ? (VB + 3) / 4 : 1;                    // its words
  constexpr int QPT = (GC * D + NW * 32 - 1) / (NW * 32);        // q elements per thread
  __shared__ __align__(16) float qs[GC][D];
  __shared__ __align__(16) float ps[NW][GC][32];
  __shared__ float smM[NW][GC], smL[NW][GC];
  __shared__ float smAcc[NW][GC][D];
  __shared__ float wts[GC][SPLIT_MAX];
  __shared__ int lastBlock;

  const int G = nHead / nKvHead, chunks = (G + GC - 1) / GC;
  const int kvh = blockIdx.y / chunks, h0 = kvh * G + (blockIdx.y % chunks) * GC;
  const int ng = imin(GC, kvh * G + G - h0);
  const int split = blockIdx.x, bt = blockIdx.z, b = bt / seqQ, t = bt % seqQ;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const long long qStride = (long long)nHead * headDim, kStride = (long long)nKvHead * headDim;

  // q loads first: they do not wait for kvLens
  const T* qRow = q + (long long)bt * qStride + (long long)h0 * headDim;
  float qv[QPT];
#pragma unroll
  for (int i = 0; i < QPT; ++i) {
    const int idx = threadIdx.x + i * NW * 32, g = idx / D, d = idx % D;
    qv[i] = (idx < GC * D && g < ng && d < headDim) ? to_float(qRow[g * headDim + d]) : 0.f;
  }
  const int p = (kvLens != nullptr ? kvLens[b] : kvLen) - seqQ + t;
  const int kBegin = window > 0 ? imax(0, p - window + 1) : 0;
  const int per = ((p - kBegin + 1 + splits - 1) / splits + 31) & ~31;
  const int ks = kBegin + split * per, ke = imin(p + 1, ks + per);
  const T* kBase = k + (long long)b * kvStride * kStride + (long long)kvh * headDim;
  const T* vBase = v + (long long)b * kvStride * kStride + (long long)kvh * headDim;
  const bool regs = REGS && vec == 2;

  unsigned kr[KW], vr[32][VW];
  // lane's K row of key kp (zeros past the split), V slices of rows t0..t0+31 (zeros past the split)
  auto loadK = [&](int kp) {
    if constexpr (REGS) {
      if (kp < ke) {
        const uint4* src = reinterpret_cast<const uint4*>(kBase + (long long)kp * kStride);
#pragma unroll
        for (int i = 0; i < KW / 4; ++i) {
          const uint4 u = src[i];
          kr[4 * i] = u.x; kr[4 * i + 1] = u.y; kr[4 * i + 2] = u.z; kr[4 * i + 3] = u.w;
        }
      } else {
#pragma unroll
        for (int i = 0; i < KW; ++i) kr[i] = 0u;
      }
    }
  };
  auto loadV = [&](int t0) {
    if constexpr (REGS) {
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        if (t0 + j < ke) {
          load_bytes<VB>(vr[j], vBase + (long long)(t0 + j) * kStride + lane * DL);
        } else {
#pragma unroll
          for (int i = 0; i < VW; ++i) vr[j][i] = 0u;
        }
      }
    }
  };
  int t0 = ks + warp * 32;
  if (regs) {
    loadK(t0 + lane);
    loadV(t0);
  }

  const float qScale = scale * 1.4426950408889634f;
#pragma unroll
  for (int i = 0; i < QPT; ++i) {
    const int idx = threadIdx.x + i * NW * 32;
    if (idx < GC * D) qs[idx / D][idx % D] = qv[i] * qScale;
  }
  __syncthreads();

  float acc[GC][DL], m[GC], lsum[GC];
#pragma unroll
  for (int g = 0; g < GC; ++g) {
    m[g] = -INF_F;
    lsum[g] = 0.f;
#pragma unroll
    for (int i = 0; i < DL; ++i) acc[g][i] = 0.f;
  }

  for (; t0 < ke; t0 += NW * 32) {
    const int kp = t0 + lane, next = t0 + NW * 32;
    const bool valid = kp < ke;
    float sc[GC];
#pragma unroll
    for (int g = 0; g < GC; ++g) sc[g] = 0.f;
    if (regs) {
#pragma unroll
      for (int w = 0; w < KW; w += 4) {
        constexpr int EPW = 4 / sizeof(T);  // elements per word
        float kf[4 * EPW];
        unpack_words<T, 4 * EPW>(&kr[w], kf);
#pragma unroll
        for (int g = 0; g < GC; ++g) {
#pragma unroll
          for (int i = 0; i < 4 * EPW; i += 4) {
            const float4 q4 = *reinterpret_cast<const float4*>(&qs[g][w * EPW + i]);
            sc[g] += q4.x * kf[i] + q4.y * kf[i + 1] + q4.z * kf[i + 2] + q4.w * kf[i + 3];
          }
        }
      }
      loadK(next + lane);
    } else if (valid) {
      const T* krow = kBase + (long long)kp * kStride;
      if (vec) {
#pragma unroll 4
        for (int d0 = 0; d0 < D; d0 += VEC) {
          if (d0 >= headDim) break;
          float kf[VEC];
          unpack16(*reinterpret_cast<const uint4*>(krow + d0), kf, krow);
#pragma unroll
          for (int g = 0; g < GC; ++g) {
#pragma unroll
            for (int i = 0; i < VEC; ++i) sc[g] += qs[g][d0 + i] * kf[i];
          }
        }
      } else {
        for (int d = 0; d < headDim; ++d) {
          const float kf = to_float(krow[d]);
#pragma unroll
          for (int g = 0; g < GC; ++g) sc[g] += qs[g][d] * kf;
        }
      }
    }
#pragma unroll
    for (int g = 0; g < GC; ++g) {
      const float s = valid ? sc[g] : -INF_F;
      const float mNew = fmaxf(m[g], warp_max(s));  // lane 0's key is valid: mNew is finite
      const float alpha = exp2f(m[g] - mNew);
      const float pj = exp2f(s - mNew);
      lsum[g] = lsum[g] * alpha + pj;
      m[g] = mNew;
#pragma unroll
      for (int i = 0; i < DL; ++i) acc[g][i] *= alpha;
      ps[warp][g][lane] = pj;
    }
    __syncwarp();
    if (regs) {
#pragma unroll
      for (int j0 = 0; j0 < 32; j0 += 4) {
        float4 p4[GC];
#pragma unroll
        for (int g = 0; g < GC; ++g) p4[g] = *reinterpret_cast<const float4*>(&ps[warp][g][j0]);
#pragma unroll
        for (int jj = 0; jj < 4; ++jj) {
          float vf[DL];
          unpack_words<T, DL>(vr[j0 + jj], vf);
#pragma unroll
          for (int g = 0; g < GC; ++g) {
            const float pj = jj == 0 ? p4[g].x : jj == 1 ? p4[g].y : jj == 2 ? p4[g].z : p4[g].w;
#pragma unroll
            for (int i = 0; i < DL; ++i) acc[g][i] += pj * vf[i];
          }
        }
      }
      loadV(next);
    } else {
      const int n = imin(32, ke - t0);
#pragma unroll 4
      for (int j = 0; j < n; ++j) {
        const T* vrow = vBase + (long long)(t0 + j) * kStride;
        float vf[DL];
#pragma unroll
        for (int i = 0; i < DL; ++i) {
          const int d = lane * DL + i;
          vf[i] = d < headDim ? to_float(vrow[d]) : 0.f;
        }
#pragma unroll
        for (int g = 0; g < GC; ++g) {
          const float pj = ps[warp][g][j];
#pragma unroll
          for (int i = 0; i < DL; ++i) acc[g][i] += pj * vf[i];
        }
      }
    }
    __syncwarp();  // ps is rewritten by the next tile
  }

#pragma unroll
  for (int g = 0; g < GC; ++g) {
    const float l = warp_sum(lsum[g]);
    if (lane == 0) {
      smM[warp][g] = m[g];
      smL[warp][g] = l;
    }
#pragma unroll
    for (int i = 0; i < DL; ++i) smAcc[warp][g][lane * DL + i] = acc[g][i];
  }
  __syncthreads();
  // this split's result per (head, dim): the block's warps merged
  for (int idx = threadIdx.x; idx < ng * headDim; idx += NW * 32) {
    const int g = idx / headDim, d = idx % headDim, h = h0 + g;
    float M = -INF_F;
#pragma unroll
    for (int w = 0; w < NW; ++w) M = fmaxf(M, smM[w][g]);
    float L = 0.f, O = 0.f;
    if (M != -INF_F) {
#pragma unroll
      for (int w = 0; w < NW; ++w) {
        if (smM[w][g] == -INF_F) continue;
        const float f = exp2f(smM[w][g] - M);
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
  if (splits == 1) return;

  // publish, count, and let the last split of this (row, head group) merge
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = counters + (long long)bt * gridDim.y + blockIdx.y;
    const int last = atomicAdd(counter, 1) == splits - 1;
    if (last) *counter = 0;
    lastBlock = last;
  }
  __syncthreads();
  if (!lastBlock) return;
  __threadfence();
  for (int g = warp; g < ng; g += NW) {
    const long long base = ((long long)bt * nHead + h0 + g) * splits;
    float ms[SPLIT_MAX / 32], ls[SPLIT_MAX / 32], M = -INF_F;
#pragma unroll
    for (int r = 0; r < SPLIT_MAX / 32; ++r) {
      const int s = lane + 32 * r;
      ms[r] = s < splits ? load_cg(partML + 2 * (base + s)) : -INF_F;
      ls[r] = s < splits ? load_cg(partML + 2 * (base + s) + 1) : 0.f;
      M = fmaxf(M, ms[r]);
    }
    M = warp_max(M);
    float wsum = 0.f;
#pragma unroll
    for (int r = 0; r < SPLIT_MAX / 32; ++r) {
      ls[r] = ms[r] != -INF_F ? ls[r] * exp2f(ms[r] - M) : 0.f;
      wsum += ls[r];
    }
    const float L = warp_sum(wsum);
#pragma unroll
    for (int r = 0; r < SPLIT_MAX / 32; ++r) {
      const int s = lane + 32 * r;
      if (s < splits) wts[g][s] = L > 0.f ? ls[r] / L : 0.f;
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < ng * headDim; idx += NW * 32) {
    const int g = idx / headDim, d = idx % headDim, h = h0 + g;
    const float* po = partO + ((long long)bt * nHead + h) * splits * headDim + d;
    float O = 0.f;
#pragma unroll 4
    for (int s = 0; s < splits; ++s) O += wts[g][s] * load_cg(po + (long long)s * headDim);
    out[(long long)bt * qStride + (long long)h * headDim + d] = from_float<T>(O);
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
  }
#define DEF_DECODE_FUSED_G(T, S, D, GC)                                                                      \
  extern "C" __global__ void __launch_bounds__(fused::NW * 32, 1) attention_decode_fused_##S##_d##D##_g##GC(          \
      float* partO, float* partML, int* counters, ATTENTION_ARGS(T), int splits, int vec) { pdl_start();          \
    attention_decode_fused<T, D, GC>(partO, partML, counters, ATTENTION_PASS, splits, vec);                       \
  }
#define DEF_DECODE_FUSED_D(T, S, D) \
  DEF_DECODE_FUSED_G(T, S, D, 1) DEF_DECODE_FUSED_G(T, S, D, 2) DEF_DECODE_FUSED_G(T, S, D, 4) DEF_DECODE_FUSED_G(T, S, D, 8)
#define DEF_DECODE_FUSED(T, S) \
  DEF_DECODE_FUSED_D(T, S, 32) DEF_DECODE_FUSED_D(T, S, 64) DEF_DECODE_FUSED_D(T, S, 128) DEF_DECODE_FUSED_D(T, S, 256)
FOR_EACH_DTYPE(DEF_DECODE_FUSED)
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
