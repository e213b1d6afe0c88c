// out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]) for small M (decode steps): memory-bound on the weights,
// which cuBLASLt's heuristics serve poorly at M = 1. One warp per output feature n: lanes stream
// w's row in 16-byte vectors (VEC elements) and dot it with all M rows of x (tiny, cached), f32
// accumulation, one warp reduction per row. The vector path needs K % VEC == 0 and 16-byte aligned
// rows; otherwise the scalar loop runs (same math, element by element).
#include "common.cuh"

constexpr int GEMV_WARPS = 8;

template <typename T> struct Vec;
template <> struct Vec<float> { static constexpr int N = 4; };
template <> struct Vec<bf16_t> { static constexpr int N = 8; };
template <> struct Vec<f16_t> { static constexpr int N = 8; };

__device__ __forceinline__ void unpack(const uint4& u, float* f, const float*) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack(const uint4& u, float* f, const bf16_t*) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack(const uint4& u, float* f, const f16_t*) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = to_float(f16_t{(u16)(w[i] & 0xffffu)});
    f[2 * i + 1] = to_float(f16_t{(u16)(w[i] >> 16)});
  }
}

template <typename T, int M>
__device__ __forceinline__ void gemv(T* out, const T* x, const T* w, const T* bias, int N, int K, int vectorized) {
  constexpr int VEC = Vec<T>::N;
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N) return;
  const T* wr = w + (long long)n * K;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  if (vectorized) {
#pragma unroll 4
    for (int k0 = lane * VEC; k0 < K; k0 += 32 * VEC) {
      float wf[VEC];
      unpack(*reinterpret_cast<const uint4*>(wr + k0), wf, wr);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xf[VEC];
        unpack(*reinterpret_cast<const uint4*>(x + (long long)m * K + k0), xf, x);
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
  for (int m = 0; m < M; ++m) {
    const float s = warp_sum(acc[m]);
    if (lane == 0) out[(long long)m * N + n] = from_float<T>(s + (bias != nullptr ? to_float(bias[n]) : 0.f));
  }
}

#define DEF_GEMV_M(T, S, M)                                                                                 \
  extern "C" __global__ void __launch_bounds__(GEMV_WARPS * 32)                                             \
      gemv_##S##_m##M(T* out, const T* x, const T* w, const T* bias, int N, int K, int vectorized) {        \
    gemv<T, M>(out, x, w, bias, N, K, vectorized);                                                          \
  }
#define DEF_GEMV(T, S)                                                                                      \
  DEF_GEMV_M(T, S, 1) DEF_GEMV_M(T, S, 2) DEF_GEMV_M(T, S, 3) DEF_GEMV_M(T, S, 4) DEF_GEMV_M(T, S, 5)       \
  DEF_GEMV_M(T, S, 6) DEF_GEMV_M(T, S, 7) DEF_GEMV_M(T, S, 8)
FOR_EACH_DTYPE(DEF_GEMV)
