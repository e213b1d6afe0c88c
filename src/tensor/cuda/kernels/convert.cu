// Storage-type conversions: uploads arrive as f32 and downloads leave as f32.
#include "common.cuh"
// llmopt:pdl

template <typename S, typename D>
__device__ __forceinline__ void convert(D* dst, const S* src, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] = from_float<D>(to_float(src[i]));
}

#define DEF_CONVERT(T, S)                                                                   \
  extern "C" __global__ void convert_f32_to_##S(T* dst, const float* src, long long n) { pdl_start();   \
    convert<float, T>(dst, src, n);                                                         \
  }                                                                                         \
  extern "C" __global__ void convert_##S##_to_f32(float* dst, const T* src, long long n) { pdl_start(); \
    convert<T, float>(dst, src, n);                                                         \
  }
DEF_CONVERT(bf16_t, bf16)
DEF_CONVERT(f16_t, f16)
