// Attention backward around cuBLASLt GEMMs (the GEMMs themselves are queued by train-ops.ts).
//
// Layouts. Token-major tensors are [batch*seq, heads*hd] (the Device layout). The GEMMs want each
// (sequence, KV head) as one matrix of a strided batch, so q/dO/dq are kept in "query-block" layout
// [nb][batch][heads][Lq][hd] (query block qb holds rows t = qb*Lq + t', zero past seq), and k/v and
// the f32 dk/dv accumulators in head-major layout [batch][kvHeads][kvStride][hd] (the same thing with
// nb = 1, Lq = kvStride). In query-block layout the Lq rows of the g query heads of one KV group are
// contiguous: one matrix of g*Lq rows per (sequence, KV head).
//
// Per query block the host runs S = scale Q K^T and dP = dO V^T (f32, [g*Lq, kLen] per batch entry),
// then softmax_backward turns them into P = exp(S - lse) (causal / sliding-window mask) and
// dS = P (dP - delta) with delta = rowsum(dO * O), and then dV += P^T dO, dK += scale dS^T Q,
// dQ = scale dS K.
//
// For 16-bit dtypes and head dims 64/128, attn_bwd_dq_mma replaces the S/dP GEMMs, the softmax kernel
// and the dQ GEMM of a query block by one tensor-core kernel (the structure of flash.cu's forward):
// per 64 query rows of one head it streams the block's key tiles, computes S = Q K^T and dP = dO V^T
// in registers, P and dS from lse and delta, accumulates dQ = scale dS K, and writes P and dS (16-bit)
// for the dV/dK GEMMs. S and dP never reach memory.
#include "mma.cuh"
// llmopt:pdl

// dst (query-block layout, element type D) <- src (token-major, element type S); rows t >= seq are 0.
// One thread per destination element, consecutive threads along hd (coalesced on both sides).
template <typename S, typename D>
__device__ __forceinline__ void to_blocks(D* dst, const S* src, int batch, int seq, int heads, int hd, int Lq, long long total) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int d = (int)(i % hd);
    long long r = i / hd;
    const int tp = (int)(r % Lq);
    r /= Lq;
    const int h = (int)(r % heads);
    r /= heads;
    const int b = (int)(r % batch);
    const int qb = (int)(r / batch);
    const int t = qb * Lq + tp;
    dst[i] = t < seq ? from_float<D>(to_float(src[((long long)b * seq + t) * heads * hd + (long long)h * hd + d])) : from_float<D>(0.f);
  }
}

// dst (token-major [batch*rowsPerSeq, heads*hd], type D) <- src (query-block layout, type S); rows
// t >= valid of each sequence are written as 0 (dk/dv rows no query sees).
template <typename S, typename D>
__device__ __forceinline__ void from_blocks(D* dst, const S* src, int batch, int rowsPerSeq, int valid, int heads, int hd, int Lq) {
  const long long total = (long long)batch * rowsPerSeq * heads * hd;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int d = (int)(i % hd);
    long long r = i / hd;
    const int h = (int)(r % heads);
    r /= heads;
    const int t = (int)(r % rowsPerSeq);
    const int b = (int)(r / rowsPerSeq);
    const int qb = t / Lq, tp = t % Lq;
    const float val = t < valid ? to_float(src[((((long long)qb * batch + b) * heads + h) * Lq + tp) * hd + d]) : 0.f;
    dst[i] = from_float<D>(val);
  }
}

// delta[r * heads + h] = sum_d dO[r, h, d] O[r, h, d] (f32), one warp per (row, head).
template <typename T>
__device__ __forceinline__ void attn_delta(float* delta, const T* dO, const T* O, long long rowsHeads, int hd) {
  const long long w = (blockIdx.x * (long long)blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= rowsHeads) return;
  const T* a = dO + w * hd;
  const T* b = O + w * hd;
  float s = 0.f;
  for (int d = lane; d < hd; d += 32) s += to_float(a[d]) * to_float(b[d]);
  s = warp_sum(s);
  if (lane == 0) delta[w] = s;
}

// One block per row of the stacked S/dP matrices of this query block: row R = (i, j, t') with
// batch entry i = (b - b0) * nKvHead + kvh, query head h = kvh * g + j, query t = qb0 + t' at
// position past + t. Columns c are keys kStart + c. S holds scale q.k (f32, ld ldS); dP holds dO.v.
// Writes P (type T) over S and dS (type T) over dP, row by row in place: for 16-bit T, P's row R is
// the first half of the bytes of S's row R (so P has ld 2 ldS), and the same for dS in dP.
//
// In-place safety: the row is processed in chunks of CH = blockDim.x * U columns in increasing order;
// each chunk reads all of its S/dP values into registers, then __syncthreads, then writes. Writing T
// values [c0, c0 + CH) touches the bytes of f32 values [c0/2, (c0 + CH)/2), which were all read by this
// chunk (c0 = 0) or by earlier ones (c0 >= CH); no other block touches this row.
template <typename T, int U>
__device__ __forceinline__ void softmax_backward(float* S, float* dP, const float* lse, const float* delta, int ldS, int kLen,
                                                 int kStart, int qb0, int Lq, int g, int nKvHead, int seqQ, int past,
                                                 int window, int b0) {
  const long long R = blockIdx.x;
  const int i = (int)(R / ((long long)g * Lq));
  const int j = (int)((R / Lq) % g), tp = (int)(R % Lq);
  const int b = b0 + i / nKvHead, kvh = i % nKvHead, h = kvh * g + j;
  const int nHead = nKvHead * g;
  const int t = qb0 + tp;
  const bool rowValid = t < seqQ;
  const int pos = past + t;
  float L = 0.f, D = 0.f;
  if (rowValid) {
    const long long li = ((long long)b * seqQ + t) * nHead + h;
    L = lse[li];
    D = delta[li];
  }
  float* srow = S + R * ldS;
  float* drow = dP + R * ldS;
  T* prow = reinterpret_cast<T*>(srow);
  T* dsrow = reinterpret_cast<T*>(drow);
  const int CH = blockDim.x * U;
  for (int c0 = 0; c0 < kLen; c0 += CH) {
    float sv[U], dv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * blockDim.x + threadIdx.x;
      sv[u] = c < kLen ? srow[c] : 0.f;
      dv[u] = c < kLen ? drow[c] : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * blockDim.x + threadIdx.x;
      if (c >= kLen) continue;
      const int kp = kStart + c;
      const bool ok = rowValid && kp <= pos && (window <= 0 || kp > pos - window) && L != -INF_F;
      const float p = ok ? expf(sv[u] - L) : 0.f;
      prow[c] = from_float<T>(p);
      dsrow[c] = from_float<T>(p * (dv[u] - D));
    }
    __syncthreads();
  }
}

#define DEF_ATTN_BWD(T, S)                                                                                           \
  extern "C" __global__ void attn_to_blocks_##S(T* dst, const T* src, int batch, int seq, int heads, int hd, int Lq,  \
                                                long long total) { pdl_start();                                                   \
    to_blocks<T, T>(dst, src, batch, seq, heads, hd, Lq, total);                                                     \
  }                                                                                                                  \
  extern "C" __global__ void attn_from_blocks_##S(T* dst, const T* src, int batch, int rowsPerSeq, int valid,          \
                                                  int heads, int hd, int Lq) { pdl_start();                                       \
    from_blocks<T, T>(dst, src, batch, rowsPerSeq, valid, heads, hd, Lq);                                            \
  }                                                                                                                  \
  extern "C" __global__ void attn_from_blocks_f32_to_##S(T* dst, const float* src, int batch, int rowsPerSeq,          \
                                                         int valid, int heads, int hd, int Lq) { pdl_start();                     \
    from_blocks<float, T>(dst, src, batch, rowsPerSeq, valid, heads, hd, Lq);                                        \
  }                                                                                                                  \
  extern "C" __global__ void attn_delta_##S(float* delta, const T* dO, const T* O, long long rowsHeads, int hd) { pdl_start();     \
    attn_delta<T>(delta, dO, O, rowsHeads, hd);                                                                      \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) attn_softmax_backward_##S(                                       \
      float* Sm, float* dP, const float* lse, const float* delta, int ldS, int kLen, int kStart, int qb0, int Lq,    \
      int g, int nKvHead, int seqQ, int past, int window, int b0) { pdl_start();                                                  \
    softmax_backward<T, 8>(Sm, dP, lse, delta, ldS, kLen, kStart, qb0, Lq, g, nKvHead, seqQ, past, window, b0);      \
  }
FOR_EACH_DTYPE(DEF_ATTN_BWD)

namespace bwd {
constexpr int NW = 4;
constexpr int BQ = 16 * NW;  // query rows per block
constexpr int BK = 64;       // keys per tile
}  // namespace bwd

// Block = query rows t0 .. t0 + 63 (t0 = qb0 + 64 blockIdx.x, within the query block starting at qb0) of
// head h = blockIdx.y of sequence b = b0 + blockIdx.z, over the query block's keys [kStart, kEnd).
// P and dS go to [batch entry (b - b0) * nKvHead + kvh][j * Lq + row][column kp - kStart] (ld ldP) for
// every row of the block (zeros where masked, and for rows t >= seqQ) and every column < kEnd - kStart;
// dq (token-major) is written for rows t < seqQ. Each thread holds rows g and g + 8 of its warp's 16.
template <typename T, int D>
__device__ __forceinline__ void attn_bwd_dq_mma(T* dq, T* P, T* dS, const T* q, const T* k, const T* v, const T* dO,
                                                const float* lse, const float* delta, int seqQ, int kvStride, int nHead,
                                                int nKvHead, float scale, int window, int past, int qb0, int Lq,
                                                int kStart, int kEnd, int ldP, int b0) {
  using namespace bwd;
  constexpr int SP = D + 8;   // shared row stride (halves)
  constexpr int KD = D / 16;  // k-steps over the head dim (S, dP)
  constexpr int ND = D / 8;   // n-tiles over the head dim (dQ)
  constexpr int NK = BK / 8;  // n-tiles over the keys of a tile
  extern __shared__ __align__(16) u16 sm[];
  u16* qs = sm;               // [BQ][SP]: the Q tile, then the dO tile
  u16* kbuf = qs + BQ * SP;   // 2 x [BK][SP]
  u16* vbuf = kbuf + 2 * BK * SP;

  const int bi = blockIdx.z, b = b0 + bi, h = blockIdx.y;
  const int tp0 = blockIdx.x * BQ, t0 = qb0 + tp0;
  const int g = nHead / nKvHead, kvh = h / g, jh = h % g;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tig = lane & 3;
  const long long qStride = (long long)nHead * D, kStride = (long long)nKvHead * D;
  // a tile wholly past seqQ (padding of the last query block) stages zeros from a valid address
  const long long qRow = (long long)b * seqQ + (t0 < seqQ ? t0 : 0);
  const u16* qg = reinterpret_cast<const u16*>(q) + qRow * qStride + (long long)h * D;
  const u16* dog = reinterpret_cast<const u16*>(dO) + qRow * qStride + (long long)h * D;
  const u16* kg = reinterpret_cast<const u16*>(k) + (long long)b * kvStride * kStride + (long long)kvh * D;
  const u16* vg = reinterpret_cast<const u16*>(v) + (long long)b * kvStride * kStride + (long long)kvh * D;
  const int kLen = kEnd - kStart;

  // Q and dO fragments (A operands, rows = this warp's 16 queries), via shared memory
  unsigned qa[KD][4], da[KD][4];
  const int fr = warp * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), fc = (lane >> 4) * 8;
  stage_tile_async<D>(qs, qg, qStride, seqQ - t0);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) ldmatrix_x4(qa[kk], qs + fr * SP + kk * 16 + fc);
  __syncthreads();
  stage_tile_async<D>(qs, dog, qStride, seqQ - t0);
  stage_tile_async<D>(kbuf, kg + (long long)kStart * kStride, kStride, kLen);
  stage_tile_async<D>(vbuf, vg + (long long)kStart * kStride, kStride, kLen);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
#pragma unroll
  for (int kk = 0; kk < KD; ++kk) ldmatrix_x4(da[kk], qs + fr * SP + kk * 16 + fc);

  const float LOG2E = 1.4426950408889634f;
  const int r0 = tp0 + warp * 16 + gq, r1 = r0 + 8;  // rows within the query block
  const int ta = qb0 + r0, tb = qb0 + r1;            // query indices
  const bool va = ta < seqQ, vb = tb < seqQ;
  const int pa0 = past + ta, pb0 = past + tb;
  float la = 0.f, lb = 0.f, dla = 0.f, dlb = 0.f;  // lse (log2 units) and delta of rows r0, r1
  bool okA = va, okB = vb;
  if (va) {
    const float L = lse[((long long)b * seqQ + ta) * nHead + h];
    okA = L != -INF_F;
    la = L * LOG2E;
    dla = delta[((long long)b * seqQ + ta) * nHead + h];
  }
  if (vb) {
    const float L = lse[((long long)b * seqQ + tb) * nHead + h];
    okB = L != -INF_F;
    lb = L * LOG2E;
    dlb = delta[((long long)b * seqQ + tb) * nHead + h];
  }
  const float sl2 = scale * LOG2E;
  float dqa[ND][4];
#pragma unroll
  for (int i = 0; i < ND; ++i) dqa[i][0] = dqa[i][1] = dqa[i][2] = dqa[i][3] = 0.f;

  const long long rowBase = ((long long)bi * nKvHead + kvh) * ((long long)g * Lq) + (long long)jh * Lq;
  u16* prow0 = reinterpret_cast<u16*>(P) + (rowBase + r0) * ldP;
  u16* prow1 = reinterpret_cast<u16*>(P) + (rowBase + r1) * ldP;
  u16* srow0 = reinterpret_cast<u16*>(dS) + (rowBase + r0) * ldP;
  u16* srow1 = reinterpret_cast<u16*>(dS) + (rowBase + r1) * ldP;
  const int warpRow0 = t0 + warp * 16;
  const int pw0 = past + warpRow0, pw1 = past + imin(warpRow0 + 15, seqQ - 1);

  int it = 0;
  for (int k0 = kStart; k0 < kEnd; k0 += BK, ++it) {
    const u16* ks = kbuf + (it & 1) * BK * SP;
    const u16* vs = vbuf + (it & 1) * BK * SP;
    const bool more = k0 + BK < kEnd;
    if (more) {
      stage_tile_async<D>(kbuf + ((it + 1) & 1) * BK * SP, kg + (long long)(k0 + BK) * kStride, kStride, kEnd - k0 - BK);
      stage_tile_async<D>(vbuf + ((it + 1) & 1) * BK * SP, vg + (long long)(k0 + BK) * kStride, kStride, kEnd - k0 - BK);
      cp_async_commit();
    }
    const int c0 = k0 - kStart;  // column of this tile's first key
    // a warp whose rows are all past seqQ, all before this tile, or all past its window writes zeros
    const bool active = warpRow0 < seqQ && k0 <= pw1 && !(window > 0 && k0 + BK - 1 <= pw0 - window);
    if (!active) {
#pragma unroll
      for (int nt = 0; nt < NK; ++nt) {
        const int c = c0 + nt * 8 + tig * 2;
        if (c < kLen) {
          *reinterpret_cast<unsigned*>(prow0 + c) = 0u;
          *reinterpret_cast<unsigned*>(prow1 + c) = 0u;
          *reinterpret_cast<unsigned*>(srow0 + c) = 0u;
          *reinterpret_cast<unsigned*>(srow1 + c) = 0u;
        }
      }
    } else {
      float s[NK][4], dp[NK][4];
#pragma unroll
      for (int nt = 0; nt < NK; ++nt) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        dp[nt][0] = dp[nt][1] = dp[nt][2] = dp[nt][3] = 0.f;
      }
      // S = Q K^T and dP = dO V^T: K/V tiles [keys][dims] are the B operands (col layout) as loaded
#pragma unroll
      for (int nt = 0; nt < NK; nt += 2) {
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
          const int jj = lane >> 3;
          const int off = ((nt + (jj >> 1)) * 8 + (lane & 7)) * SP + kk * 16 + (jj & 1) * 8;
          unsigned bk[4], bv[4];
          ldmatrix_x4(bk, ks + off);
          ldmatrix_x4(bv, vs + off);
          Mma<T>::run(s[nt], qa[kk], bk[0], bk[1]);
          Mma<T>::run(s[nt + 1], qa[kk], bk[2], bk[3]);
          Mma<T>::run(dp[nt], da[kk], bv[0], bv[1]);
          Mma<T>::run(dp[nt + 1], da[kk], bv[2], bv[3]);
        }
      }
      // P = exp(scale s - lse) under the mask, dS = P (dP - delta); both written as 16-bit pairs,
      // dS also packed into the A fragments of dQ += dS K
      unsigned dsa[BK / 16][4];
#pragma unroll
      for (int nt = 0; nt < NK; ++nt) {
        float pv[4], dv[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kp = k0 + nt * 8 + tig * 2 + (e & 1);
          const int pos = e < 2 ? pa0 : pb0;
          const bool rowOk = e < 2 ? okA : okB;
          const bool ok = rowOk && kp <= pos && (window <= 0 || kp > pos - window);
          const float L = e < 2 ? la : lb, Dl = e < 2 ? dla : dlb;
          pv[e] = ok ? exp2f(s[nt][e] * sl2 - L) : 0.f;
          dv[e] = pv[e] * (dp[nt][e] - Dl);
        }
        const unsigned p01 = Mma<T>::pack(pv[0], pv[1]), p23 = Mma<T>::pack(pv[2], pv[3]);
        const unsigned d01 = Mma<T>::pack(dv[0], dv[1]), d23 = Mma<T>::pack(dv[2], dv[3]);
        dsa[nt >> 1][(nt & 1) * 2 + 0] = d01;
        dsa[nt >> 1][(nt & 1) * 2 + 1] = d23;
        const int c = c0 + nt * 8 + tig * 2;
        if (c < kLen) {
          *reinterpret_cast<unsigned*>(prow0 + c) = p01;
          *reinterpret_cast<unsigned*>(prow1 + c) = p23;
          *reinterpret_cast<unsigned*>(srow0 + c) = d01;
          *reinterpret_cast<unsigned*>(srow1 + c) = d23;
        }
      }
      // dQ += dS K: the K tile [keys][dims] fetched transposed as the B operand (k = keys)
#pragma unroll
      for (int kk = 0; kk < BK / 16; ++kk) {
#pragma unroll
        for (int dt = 0; dt < ND; dt += 2) {
          const int jj = lane >> 3;
          unsigned bf[4];
          ldmatrix_x4_trans(bf, ks + (kk * 16 + (jj & 1) * 8 + (lane & 7)) * SP + (dt + (jj >> 1)) * 8);
          Mma<T>::run(dqa[dt], dsa[kk], bf[0], bf[1]);
          Mma<T>::run(dqa[dt + 1], dsa[kk], bf[2], bf[3]);
        }
      }
    }
    if (more) cp_async_wait_all();
    __syncthreads();
  }

  u16* og = reinterpret_cast<u16*>(dq) + (long long)b * seqQ * qStride + (long long)h * D;
#pragma unroll
  for (int dt = 0; dt < ND; ++dt) {
    const int d = dt * 8 + tig * 2;
    if (va) *reinterpret_cast<unsigned*>(og + (long long)ta * qStride + d) = Mma<T>::pack(dqa[dt][0] * scale, dqa[dt][1] * scale);
    if (vb) *reinterpret_cast<unsigned*>(og + (long long)tb * qStride + d) = Mma<T>::pack(dqa[dt][2] * scale, dqa[dt][3] * scale);
  }
}

#define DEF_ATTN_BWD_MMA(T, S, D)                                                                                    \
  extern "C" __global__ void __launch_bounds__(bwd::NW * 32) attn_bwd_dq_mma_##S##_d##D(                             \
      T* dq, T* P, T* dS, const T* q, const T* k, const T* v, const T* dO, const float* lse, const float* delta,     \
      int seqQ, int kvStride, int nHead, int nKvHead, float scale, int window, int past, int qb0, int Lq, int kStart, \
      int kEnd, int ldP, int b0) { pdl_start();                                                                                    \
    attn_bwd_dq_mma<T, D>(dq, P, dS, q, k, v, dO, lse, delta, seqQ, kvStride, nHead, nKvHead, scale, window, past,   \
                          qb0, Lq, kStart, kEnd, ldP, b0);                                                            \
  }
DEF_ATTN_BWD_MMA(bf16_t, bf16, 64)
DEF_ATTN_BWD_MMA(bf16_t, bf16, 128)
DEF_ATTN_BWD_MMA(f16_t, f16, 64)
DEF_ATTN_BWD_MMA(f16_t, f16, 128)
