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
#include "common.cuh"

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
                                                long long total) {                                                   \
    to_blocks<T, T>(dst, src, batch, seq, heads, hd, Lq, total);                                                     \
  }                                                                                                                  \
  extern "C" __global__ void attn_from_blocks_##S(T* dst, const T* src, int batch, int rowsPerSeq, int valid,          \
                                                  int heads, int hd, int Lq) {                                       \
    from_blocks<T, T>(dst, src, batch, rowsPerSeq, valid, heads, hd, Lq);                                            \
  }                                                                                                                  \
  extern "C" __global__ void attn_from_blocks_f32_to_##S(T* dst, const float* src, int batch, int rowsPerSeq,          \
                                                         int valid, int heads, int hd, int Lq) {                     \
    from_blocks<float, T>(dst, src, batch, rowsPerSeq, valid, heads, hd, Lq);                                        \
  }                                                                                                                  \
  extern "C" __global__ void attn_delta_##S(float* delta, const T* dO, const T* O, long long rowsHeads, int hd) {     \
    attn_delta<T>(delta, dO, O, rowsHeads, hd);                                                                      \
  }                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) attn_softmax_backward_##S(                                       \
      float* Sm, float* dP, const float* lse, const float* delta, int ldS, int kLen, int kStart, int qb0, int Lq,    \
      int g, int nKvHead, int seqQ, int past, int window, int b0) {                                                  \
    softmax_backward<T, 8>(Sm, dP, lse, delta, ldS, kLen, kStart, qb0, Lq, g, nKvHead, seqQ, past, window, b0);      \
  }
FOR_EACH_DTYPE(DEF_ATTN_BWD)
