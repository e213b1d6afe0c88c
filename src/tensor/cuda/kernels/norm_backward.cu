// Backward of RMSNorm and LayerNorm. A block takes rows blockIdx.x, blockIdx.x + gridDim.x, ...: it
// writes dx per row and adds each row's weight (and bias) gradient into a per-block partial held in
// shared memory (thread t owns columns t, t + blockDim.x, ...: no races); partials go to `part`
// [gridDim.x][cols] (LayerNorm: dw partials, then db partials at part + gridDim.x * cols), and
// reduce_partials adds them into the f32 gradients in block order. No atomics: deterministic.
// f32 math, row sums through block reductions.
#include "common.cuh"
// llmopt:pdl

// Two sums over the block at once (same pattern as block_sum).
__device__ __forceinline__ float2 block_sum2(float a, float b) {
  __shared__ float2 partial2[32];
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) partial2[warp] = make_float2(a, b);
  __syncthreads();
  const float2 p = lane < warps ? partial2[lane] : make_float2(0.f, 0.f);
  return make_float2(warp_sum(p.x), warp_sum(p.y));
}

// y = x r w, r = 1/sqrt(mean(x^2) + eps); with g = dy w:  dx = r g - x r^3 sum(g x) / C;  dw += dy x r.
template <typename T>
__device__ __forceinline__ void rms_norm_backward(T* dx, float* part, const T* dy, const T* x, const T* w, int rows, int cols,
                                                  float eps, int accumulate) {
  extern __shared__ float dwAcc[];  // [cols]
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dwAcc[c] = 0.f;
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const long long base = (long long)row * cols;
    float ss = 0.f, gx = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float xv = to_float(x[base + c]);
      ss += xv * xv;
      gx += to_float(dy[base + c]) * to_float(w[c]) * xv;
    }
    const float2 sums = block_sum2(ss, gx);
    const float r = 1.f / sqrtf(sums.x / cols + eps);
    const float k = r * r * r * sums.y / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float xv = to_float(x[base + c]), g = to_float(dy[base + c]);
      dwAcc[c] += g * xv * r;
      const float v = r * g * to_float(w[c]) - xv * k;
      dx[base + c] = from_float<T>(accumulate ? to_float(dx[base + c]) + v : v);
    }
  }
  for (int c = threadIdx.x; c < cols; c += blockDim.x) part[(long long)blockIdx.x * cols + c] = dwAcc[c];
}

// y = xh w + b, xh = (x - mean) r, r = 1/sqrt(var + eps); with g = dy w:
// dx = r (g - mean(g) - xh mean(g xh));  dw += dy xh;  db += dy.
template <typename T>
__device__ __forceinline__ void layer_norm_backward(T* dx, float* part, const T* dy, const T* x, const T* w, int rows, int cols,
                                                    float eps, int accumulate) {
  extern __shared__ float acc[];  // dw [cols], then db [cols]
  float* dwAcc = acc;
  float* dbAcc = acc + cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dwAcc[c] = dbAcc[c] = 0.f;
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const long long base = (long long)row * cols;
    float mean;
    const float r = row_mean_rstd(x + base, cols, eps, mean);
    float gs = 0.f, gxs = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float xh = (to_float(x[base + c]) - mean) * r;
      const float g = to_float(dy[base + c]) * to_float(w[c]);
      gs += g;
      gxs += g * xh;
    }
    const float2 sums = block_sum2(gs, gxs);
    const float gMean = sums.x / cols, gxMean = sums.y / cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      const float xh = (to_float(x[base + c]) - mean) * r;
      const float d = to_float(dy[base + c]);
      dwAcc[c] += d * xh;
      dbAcc[c] += d;
      const float v = r * (d * to_float(w[c]) - gMean - xh * gxMean);
      dx[base + c] = from_float<T>(accumulate ? to_float(dx[base + c]) + v : v);
    }
  }
  const long long off = (long long)blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    part[off + c] = dwAcc[c];
    part[(long long)gridDim.x * cols + off + c] = dbAcc[c];
  }
}

// grad[c] += sum_{b < blocks} part[b][c], in block order (f64 accumulator).
extern "C" __global__ void reduce_partials(float* grad, const float* part, int blocks, int cols) { pdl_start();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  double s = 0.0;
  for (int b = 0; b < blocks; ++b) s += (double)part[(long long)b * cols + c];
  grad[c] = (float)((double)grad[c] + s);
}

#define DEF_NORM_BACKWARD(T, S)                                                                                      \
  extern "C" __global__ void rms_norm_backward_##S(T* dx, float* part, const T* dy, const T* x, const T* w, int rows,  \
                                                   int cols, float eps, int accumulate) { pdl_start();                            \
    rms_norm_backward<T>(dx, part, dy, x, w, rows, cols, eps, accumulate);                                           \
  }                                                                                                                  \
  extern "C" __global__ void layer_norm_backward_##S(T* dx, float* part, const T* dy, const T* x, const T* w,          \
                                                     int rows, int cols, float eps, int accumulate) { pdl_start();                \
    layer_norm_backward<T>(dx, part, dy, x, w, rows, cols, eps, accumulate);                                         \
  }
FOR_EACH_DTYPE(DEF_NORM_BACKWARD)
