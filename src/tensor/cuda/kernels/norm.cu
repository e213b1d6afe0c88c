// Row normalizations, one block per row, f32 accumulation.
#include "common.cuh"
// llmopt:pdl

// out = x / sqrt(mean(x^2) + eps) * w
template <typename T>
__device__ __forceinline__ void rms_norm(T* out, const T* x, const T* w, int cols, float eps) {
  const long long base = (long long)blockIdx.x * cols;
  float ss = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = to_float(x[base + c]);
    ss += v * v;
  }
  const float inv = 1.f / sqrtf(block_sum(ss) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    out[base + c] = from_float<T>(to_float(x[base + c]) * inv * to_float(w[c]));
}

// out = (x - mean) / sqrt(var + eps) * w + b  (two passes: mean, then centered variance)
template <typename T>
__device__ __forceinline__ void layer_norm(T* out, const T* x, const T* w, const T* b, int cols, float eps) {
  const long long base = (long long)blockIdx.x * cols;
  float mean;
  const float inv = row_mean_rstd(x + base, cols, eps, mean);
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    out[base + c] = from_float<T>((to_float(x[base + c]) - mean) * inv * to_float(w[c]) + to_float(b[c]));
}

// x += y (stored in the dtype), then out = rmsnorm(x) from the stored values: the same results as
// addInPlace followed by rmsNorm, in one pass over the row.
template <typename T>
__device__ __forceinline__ void add_rms_norm(T* out, T* x, const T* y, const T* w, int cols, float eps) {
  const long long base = (long long)blockIdx.x * cols;
  float ss = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const T sum = from_float<T>(to_float(x[base + c]) + to_float(y[base + c]));
    x[base + c] = sum;
    const float v = to_float(sum);
    ss += v * v;
  }
  const float inv = 1.f / sqrtf(block_sum(ss) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x)
    out[base + c] = from_float<T>(to_float(x[base + c]) * inv * to_float(w[c]));
}

#define DEF_ADD_NORM(T, S)                                                                                   \
  extern "C" __global__ void add_rms_norm_##S(T* out, T* x, const T* y, const T* w, int cols, float eps) { pdl_start();  \
    add_rms_norm<T>(out, x, y, w, cols, eps);                                                                \
  }
FOR_EACH_DTYPE(DEF_ADD_NORM)

#define DEF_NORM(T, S)                                                                                       \
  extern "C" __global__ void rms_norm_##S(T* out, const T* x, const T* w, int cols, float eps) { pdl_start();            \
    rms_norm<T>(out, x, w, cols, eps);                                                                       \
  }                                                                                                          \
  extern "C" __global__ void layer_norm_##S(T* out, const T* x, const T* w, const T* b, int cols, float eps) { pdl_start(); \
    layer_norm<T>(out, x, w, b, cols, eps);                                                                  \
  }
FOR_EACH_DTYPE(DEF_NORM)
