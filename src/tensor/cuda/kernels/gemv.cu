// out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]) for small M (decode steps): memory-bound on the weights,
// which cuBLASLt's heuristics serve poorly at M = 1. One warp per output feature n: lanes stream
// w's row in 16-byte vectors (VEC elements) and dot it with all M rows of x (tiny, cached), f32
// accumulation, one warp reduction per row. The vector path needs K % VEC == 0 and 16-byte aligned
// rows; otherwise the scalar loop runs (same math, element by element).
#include "common.cuh"
// llmopt:pdl

constexpr int GEMV_WARPS = 8;

// Programmatic dependent launch: weights never depend on the previous kernel, so before waiting for
// it a warp loads the start of its row(s) into registers at M = 1 with 16-byte vectors (gemv_first:
// what the loop consumes first, a whole K = 2048 row), overlapping that kernel's tail; other shapes
// ask L2 for the same bytes (prefetch_row). (H200, 1B batch-1 BF16 step: 1.059 → 0.924–0.934 ms.) The
// dependents' launch stays at the start: triggered after the math, as qgemv_row.cu does, the step measured
// the same (0.931 ms, `bench/results/2026-12-01-h200-s5-call8/`).
template <typename T>
__device__ __forceinline__ void prefetch_row(const T* row, int K) {
  constexpr int VEC = Vec<T>::N;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int u = 0; u < 8; ++u) {
    const int k0 = lane * VEC + u * 32 * VEC;
    if (k0 < K) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + k0));
  }
}

// The lane's U 16-byte vectors of row wr's chunk at `base` (columns base + u·32·VEC), zeros past K.
template <typename T, int U>
__device__ __forceinline__ void gemv_load(uint4 (&v)[U], const T* wr, int base, int K) {
  constexpr int VEC = Vec<T>::N;
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int k0 = base + u * 32 * VEC;
    v[u] = k0 < K ? *reinterpret_cast<const uint4*>(wr + k0) : make_uint4(0u, 0u, 0u, 0u);
  }
}

// Whether a row is read by the M = 1 vector loop, whose first chunk the caller loads before pdl_wait.
template <int M>
__device__ __forceinline__ bool gemv_preloads(int vectorized) { return M == 1 && vectorized; }

// A lane's first chunk of row wr before pdl_wait (gemv_load into registers where gemv_preloads, else
// an L2 prefetch of the same bytes).
template <typename T, int M, int U>
__device__ __forceinline__ void gemv_first(uint4 (&v)[U], const T* wr, int K, int vectorized) {
  if (gemv_preloads<M>(vectorized)) gemv_load<T, U>(v, wr, (threadIdx.x & 31) * Vec<T>::N, K);
  else prefetch_row(wr, K);
}

// Dot products of w's row `n` with the M rows of x, left in acc[] after a warp reduction (all lanes).
// first: the lane's first chunk (gemv_first), used where gemv_preloads.
template <typename T, int M>
__device__ __forceinline__ void gemv_row(float* acc, const T* x, const T* wr, int K, int vectorized, const uint4 (&first)[8]) {
  constexpr int VEC = Vec<T>::N;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  if (gemv_preloads<M>(vectorized)) {
    // A lane's 8 16-byte w loads of a 32*8*VEC chunk (a whole K = 2048 row) are in flight together:
    // the first chunk's from before pdl_wait, each later one's from right after the math of the
    // chunk before; x's 8 with them. Same summation order as the loop below.
    constexpr int U = 8, STEP = U * 32 * VEC;
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) wv[u] = first[u];
    for (int base = lane * VEC; base < K; base += STEP) {
      uint4 xv[U];
      gemv_load<T, U>(xv, x, base, K);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (base + u * 32 * VEC >= K) break;
        float wf[VEC], xf[VEC];
        unpack16(wv[u], wf, wr);
        unpack16(xv[u], xf, x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[0] += wf[i] * xf[i];
      }
      if (base + STEP < K) gemv_load<T, U>(wv, wr, base + STEP, K);
    }
  } else if (vectorized) {
#pragma unroll 4
    for (int k0 = lane * VEC; k0 < K; k0 += 32 * VEC) {
      float wf[VEC];
      unpack16(*reinterpret_cast<const uint4*>(wr + k0), wf, wr);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xf[VEC];
        unpack16(*reinterpret_cast<const uint4*>(x + (long long)m * K + k0), xf, x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc[m] += wf[i] * xf[i];
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      const float wf = to_float(wr[k]);
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] += wf * to_float(x[(long long)m * K + k]);
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
}

// Up to three weight matrices in one launch (q/k/v): warp rows [0, N0) use w0, [N0, N0+N1) w1, the
// rest w2; each writes its own out (row-major [M, Ni]) and adds its own bias when given.
template <typename T, int M>
__device__ __forceinline__ void gemv3(T* out0, T* out1, T* out2, const T* x, const T* w0, const T* w1, const T* w2,
                                      const T* b0, const T* b1, const T* b2, int N0, int N1, int N2, int K,
                                      int vectorized) {
  pdl_launch();
  int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  T* out = nullptr;
  const T* w = nullptr;
  const T* bias = nullptr;
  int N = 0;
  if (n < N0) {
    out = out0, w = w0, bias = b0, N = N0;
  } else if (n < N0 + N1) {
    n -= N0, out = out1, w = w1, bias = b1, N = N1;
  } else if (n < N0 + N1 + N2) {
    n -= N0 + N1, out = out2, w = w2, bias = b2, N = N2;
  }
  uint4 first[8];
  if (w != nullptr) gemv_first<T, M>(first, w + (long long)n * K, K, vectorized);
  pdl_wait();
  if (w == nullptr) return;
  float acc[M];
  gemv_row<T, M>(acc, x, w + (long long)n * K, K, vectorized, first);
  if ((threadIdx.x & 31) == 0) {
    const float b = bias != nullptr ? to_float(bias[n]) : 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m) out[(long long)m * N + n] = from_float<T>(acc[m] + b);
  }
}

// Dot products of two weight rows (wa, wb) with the M rows of x in one pass, both rows' loads in
// flight together; firstA / firstB: the rows' first chunks (gemv_first, U = 4), used where gemv_preloads.
template <typename T, int M>
__device__ __forceinline__ void gemv_row2(float* a, float* b, const T* x, const T* wa, const T* wb, int K, int vectorized,
                                          const uint4 (&firstA)[4], const uint4 (&firstB)[4]) {
  constexpr int VEC = Vec<T>::N;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int m = 0; m < M; ++m) a[m] = b[m] = 0.f;
  if (gemv_preloads<M>(vectorized)) {
    // As gemv_row at M = 1: 4 chunks of both rows (8 w loads) in flight together, x's 4 with them.
    constexpr int U = 4, STEP = U * 32 * VEC;
    uint4 av[U], bv[U];
#pragma unroll
    for (int u = 0; u < U; ++u) av[u] = firstA[u], bv[u] = firstB[u];
    for (int base = lane * VEC; base < K; base += STEP) {
      uint4 xv[U];
      gemv_load<T, U>(xv, x, base, K);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        if (base + u * 32 * VEC >= K) break;
        float fa[VEC], fb[VEC], xf[VEC];
        unpack16(av[u], fa, wa);
        unpack16(bv[u], fb, wb);
        unpack16(xv[u], xf, x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          a[0] += fa[i] * xf[i];
          b[0] += fb[i] * xf[i];
        }
      }
      if (base + STEP < K) gemv_load<T, U>(av, wa, base + STEP, K), gemv_load<T, U>(bv, wb, base + STEP, K);
    }
  } else if (vectorized) {
#pragma unroll 4
    for (int k0 = lane * VEC; k0 < K; k0 += 32 * VEC) {
      float fa[VEC], fb[VEC];
      unpack16(*reinterpret_cast<const uint4*>(wa + k0), fa, wa);
      unpack16(*reinterpret_cast<const uint4*>(wb + k0), fb, wb);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xf[VEC];
        unpack16(*reinterpret_cast<const uint4*>(x + (long long)m * K + k0), xf, x);
#pragma unroll
        for (int i = 0; i < VEC; ++i) {
          a[m] += fa[i] * xf[i];
          b[m] += fb[i] * xf[i];
        }
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      const float fa = to_float(wa[k]), fb = to_float(wb[k]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float xv = to_float(x[(long long)m * K + k]);
        a[m] += fa * xv;
        b[m] += fb * xv;
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) {
    a[m] = warp_sum(a[m]);
    b[m] = warp_sum(b[m]);
  }
}

// SwiGLU input of down_proj in one launch: out[m, n] = silu(x[m]·wg[n]) * (x[m]·wu[n]), f32 throughout
// (the unfused path rounds gate and up to the dtype first).
template <typename T, int M>
__device__ __forceinline__ void gemv_silu_mul(T* out, const T* x, const T* wg, const T* wu, int N, int K, int vectorized) {
  pdl_launch();
  const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  uint4 firstG[4], firstU[4];
  if (n < N) {
    gemv_first<T, M>(firstG, wg + (long long)n * K, K, vectorized);
    gemv_first<T, M>(firstU, wu + (long long)n * K, K, vectorized);
  }
  pdl_wait();
  if (n >= N) return;
  float g[M], u[M];
  gemv_row2<T, M>(g, u, x, wg + (long long)n * K, wu + (long long)n * K, K, vectorized, firstG, firstU);
  if ((threadIdx.x & 31) == 0) {
#pragma unroll
    for (int m = 0; m < M; ++m) out[(long long)m * N + n] = from_float<T>(g[m] / (1.f + expf(-g[m])) * u[m]);
  }
}

template <typename T, int M>
__device__ __forceinline__ void gemv(T* out, const T* x, const T* w, const T* bias, int N, int K, int vectorized) {
  pdl_launch();
  const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  uint4 first[8];
  if (n < N) gemv_first<T, M>(first, w + (long long)n * K, K, vectorized);
  pdl_wait();
  if (n >= N) return;
  float acc[M];
  gemv_row<T, M>(acc, x, w + (long long)n * K, K, vectorized, first);
  if ((threadIdx.x & 31) == 0) {
    const float b = bias != nullptr ? to_float(bias[n]) : 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m) out[(long long)m * N + n] = from_float<T>(acc[m] + b);
  }
}

#define DEF_GEMV_M(T, S, M)                                                                                 \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                             \
      gemv_##S##_m##M(T* out, const T* x, const T* w, const T* bias, int N, int K, int vectorized) {        \
    gemv<T, M>(out, x, w, bias, N, K, vectorized);                                                          \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                             \
      gemv3_##S##_m##M(T* out0, T* out1, T* out2, const T* x, const T* w0, const T* w1, const T* w2,        \
                       const T* b0, const T* b1, const T* b2, int N0, int N1, int N2, int K, int vectorized) { \
    gemv3<T, M>(out0, out1, out2, x, w0, w1, w2, b0, b1, b2, N0, N1, N2, K, vectorized);                    \
  }                                                                                                         \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                             \
      gemv_silu_mul_##S##_m##M(T* out, const T* x, const T* wg, const T* wu, int N, int K, int vectorized) { \
    gemv_silu_mul<T, M>(out, x, wg, wu, N, K, vectorized);                                                  \
  }
#define DEF_GEMV(T, S)                                                                                      \
  DEF_GEMV_M(T, S, 1) DEF_GEMV_M(T, S, 2) DEF_GEMV_M(T, S, 3) DEF_GEMV_M(T, S, 4) DEF_GEMV_M(T, S, 5)       \
  DEF_GEMV_M(T, S, 6) DEF_GEMV_M(T, S, 7) DEF_GEMV_M(T, S, 8)
FOR_EACH_DTYPE(DEF_GEMV)

// --- decode-step fusion: rope + KV append in the q/k/v GEMV's epilogue ---
//
// q/k/v of one decode step (seq 1, M sequences) in one launch: q and k rotated (rotate-half,
// rotaryDim == headDim) at position pos[m], q written to qOut, k and v appended to the caches at row
// m * kvStride + pos[m]. Warps [0, Pq) take the q pairs (rows i and i + half of a head), [Pq, Pq + Pk)
// the k pairs, the rest the v rows; a pair's two dot products run in one pass (gemv_row2, the same
// sums as gemv_row). The pre-rope values are rounded to T first, as matmul then rope would.
// (Tried and reverted, H200 2026-12-01: the residual add + RMSNorm staged in every GEMV block's
// prologue as well — batch-1 decode 1.324 ms/step against 1.207 unfused: each of the ~1,400 blocks
// re-reading and reducing the 2048-wide row costs more than the separate norm launch.)
template <typename T, int M>
__device__ __forceinline__ void gemv_qkv_rope_kv(T* qOut, T* cacheK, T* cacheV, const T* x, const T* wq, const T* wk, const T* wv,
                                                 const T* bq, const T* bk, const T* bv, const int* pos, const T* cosT, const T* sinT,
                                                 int nHeads, int nKvHeads, int headDim, int kvStride, int K, int vectorized) {
  pdl_launch();
  const int half = headDim / 2;
  const int Pq = nHeads * half, Pk = nKvHeads * half, Nv = nKvHeads * headDim;
  const int warpId = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  int kind = -1, r1 = 0;  // 0 q pair, 1 k pair, 2 v row
  if (warpId < Pq) {
    kind = 0, r1 = (warpId / half) * headDim + warpId % half;
  } else if (warpId < Pq + Pk) {
    const int p = warpId - Pq;
    kind = 1, r1 = (p / half) * headDim + p % half;
  } else if (warpId < Pq + Pk + Nv) {
    kind = 2, r1 = warpId - Pq - Pk;
  }
  const T* w = kind == 0 ? wq : kind == 1 ? wk : wv;
  // v rows: one row (gemv_row, 8 vectors); q/k pairs: two (gemv_row2, 4 + 4).
  uint4 first[8], firstA[4], firstB[4];
  if (kind == 2) gemv_first<T, M>(first, w + (long long)r1 * K, K, vectorized);
  else if (kind >= 0) {
    gemv_first<T, M>(firstA, w + (long long)r1 * K, K, vectorized);
    gemv_first<T, M>(firstB, w + (long long)(r1 + half) * K, K, vectorized);
  }
  pdl_wait();
  if (kind < 0) return;
  const int lane = threadIdx.x & 31;
  const int D = nKvHeads * headDim;
  if (kind == 2) {
    float acc[M];
    gemv_row<T, M>(acc, x, w + (long long)r1 * K, K, vectorized, first);
    if (lane == 0) {
      const float b = bv != nullptr ? to_float(bv[r1]) : 0.f;
#pragma unroll
      for (int m = 0; m < M; ++m) cacheV[((long long)m * kvStride + pos[m]) * D + r1] = from_float<T>(acc[m] + b);
    }
    return;
  }
  float a[M], b[M];
  gemv_row2<T, M>(a, b, x, w + (long long)r1 * K, w + (long long)(r1 + half) * K, K, vectorized, firstA, firstB);
  if (lane != 0) return;
  const T* bias = kind == 0 ? bq : bk;
  const float ba = bias != nullptr ? to_float(bias[r1]) : 0.f, bb = bias != nullptr ? to_float(bias[r1 + half]) : 0.f;
  const int i = r1 % headDim;
#pragma unroll
  for (int m = 0; m < M; ++m) {
    const long long p = pos[m];
    const float c = to_float(cosT[p * half + i]), s = to_float(sinT[p * half + i]);
    const float x1 = to_float(from_float<T>(a[m] + ba)), x2 = to_float(from_float<T>(b[m] + bb));
    const T o1 = from_float<T>(x1 * c - x2 * s), o2 = from_float<T>(x2 * c + x1 * s);
    if (kind == 0) {
      const long long row = (long long)m * nHeads * headDim;
      qOut[row + r1] = o1;
      qOut[row + r1 + half] = o2;
    } else {
      const long long row = ((long long)m * kvStride + p) * D;
      cacheK[row + r1] = o1;
      cacheK[row + r1 + half] = o2;
    }
  }
}

#define DEF_GEMV_ROPE_M(T, S, M)                                                                                       \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                                        \
      gemv_qkv_rope_kv_##S##_m##M(T* qOut, T* cacheK, T* cacheV, const T* x, const T* wq, const T* wk, const T* wv,      \
                                  const T* bq, const T* bk, const T* bv, const int* pos, const T* cosT, const T* sinT,    \
                                  int nHeads, int nKvHeads, int headDim, int kvStride, int K, int vectorized) {           \
    gemv_qkv_rope_kv<T, M>(qOut, cacheK, cacheV, x, wq, wk, wv, bq, bk, bv, pos, cosT, sinT, nHeads, nKvHeads, headDim,  \
                           kvStride, K, vectorized);                                                                      \
  }
#define DEF_GEMV_ROPE(T, S) DEF_GEMV_ROPE_M(T, S, 1) DEF_GEMV_ROPE_M(T, S, 2) DEF_GEMV_ROPE_M(T, S, 3) DEF_GEMV_ROPE_M(T, S, 4)
FOR_EACH_DTYPE(DEF_GEMV_ROPE)
