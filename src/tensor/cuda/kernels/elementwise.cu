// Elementwise ops over whole tensors (grid-stride loops, f32 math, one rounding at the store).
#include "common.cuh"
// llmopt:pdl

#define GRID_STRIDE(i, n) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

template <typename T>
__device__ __forceinline__ void add_inplace(T* x, const T* y, long long n) {
  GRID_STRIDE(i, n) x[i] = from_float<T>(to_float(x[i]) + to_float(y[i]));
}

template <typename T>
__device__ __forceinline__ void silu_mul(T* out, const T* gate, const T* up, long long n) {
  GRID_STRIDE(i, n) {
    const float g = to_float(gate[i]);
    out[i] = from_float<T>(g / (1.f + expf(-g)) * to_float(up[i]));
  }
}

// GPT-2 "gelu_new": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <typename T>
__device__ __forceinline__ void gelu_tanh(T* out, const T* x, long long n) {
  GRID_STRIDE(i, n) {
    const float v = to_float(x[i]);
    out[i] = from_float<T>(0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v))));
  }
}

#define DEF_ELEMENTWISE(T, S)                                                                                     \
  extern "C" __global__ void add_inplace_##S(T* x, const T* y, long long n) { pdl_start(); add_inplace<T>(x, y, n); }          \
  extern "C" __global__ void silu_mul_##S(T* out, const T* gate, const T* up, long long n) { pdl_start();                      \
    silu_mul<T>(out, gate, up, n);                                                                                \
  }                                                                                                               \
  extern "C" __global__ void gelu_tanh_##S(T* out, const T* x, long long n) { pdl_start(); gelu_tanh<T>(out, x, n); }
FOR_EACH_DTYPE(DEF_ELEMENTWISE)
