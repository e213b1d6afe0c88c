// Calibration statistics of quantization jobs (QuantJobOps, quant-job-ops.ts), on activations in
// the device dtype: per-channel min/max (SmoothQuant), absmax (static input scales, KV scales), the
// layer error sums of the report, and SmoothQuant's rescaling of an f32 Hessian. Same values as the
// cpu reference: min/max/absmax exactly (f32 compares; −0 counts as +0), error sums in f64 (another
// summation order), the Hessian rescale bit-exactly (f64 quotient, one rounding to f32).
#include "common.cuh"
// llmopt:pdl


// Column c = blockIdx.x·blockDim.x + threadIdx.x over rows [blockIdx.y·rowsPerBlock, +rowsPerBlock).
template <typename T>
__device__ __forceinline__ void channel_range(const T* x, long long rows, int cols, int rowsPerBlock, float* mn, float* mx) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  const long long r0 = (long long)blockIdx.y * rowsPerBlock;
  const long long r1 = r0 + rowsPerBlock < rows ? r0 + rowsPerBlock : rows;
  float lo = INF_F, hi = -INF_F;
  for (long long r = r0; r < r1; r++) {
    const float v = to_float(x[r * cols + c]);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo <= hi) {
    atomic_min_f32(&mn[c], lo + 0.f);  // + 0 turns −0 into +0
    atomic_max_f32(&mx[c], hi + 0.f);
  }
}

// acc[0] = max(acc[0], max |x|) over n values, grid-stride; acc starts ≥ 0.
template <typename T>
__device__ __forceinline__ void abs_max(const T* x, long long n, float* acc) {
  float m = 0.f;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = fabsf(to_float(x[i]));
    if (v > m) m = v;
  }
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  m = warp_max(m);
  if (lane == 0) partial[warp] = m;
  __syncthreads();
  if (warp == 0) {
    m = warp_max(lane < warps ? partial[lane] : 0.f);
    if (lane == 0) atomicMax((int*)acc, __float_as_int(m + 0.f));
  }
}

// partials[3·block + {0, 1, 2}] = Σ (yq − y)², Σ y², Σ (y − x)² over the block's grid-stride share.
template <typename T>
__device__ __forceinline__ void error_sums(const T* yq, const T* y, const T* x, long long n, double* partials) {
  double d2 = 0.0, r2 = 0.0, u2 = 0.0;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const double q = to_float(yq[i]), v = to_float(y[i]), xi = to_float(x[i]);
    d2 += (q - v) * (q - v);
    r2 += v * v;
    u2 += (v - xi) * (v - xi);
  }
  __shared__ double partial[32];
  d2 = block_sum_f64(d2, partial);
  r2 = block_sum_f64(r2, partial);
  u2 = block_sum_f64(u2, partial);
  if (threadIdx.x == 0) {
    partials[3 * blockIdx.x] = d2;
    partials[3 * blockIdx.x + 1] = r2;
    partials[3 * blockIdx.x + 2] = u2;
  }
}

#define DEF_CALIB(T, S)                                                                                              \
  extern "C" __global__ void channel_range_##S(const T* x, long long rows, int cols, int rowsPerBlock, float* mn,    \
                                               float* mx) { pdl_start();                                                          \
    channel_range<T>(x, rows, cols, rowsPerBlock, mn, mx);                                                           \
  }                                                                                                                  \
  extern "C" __global__ void abs_max_##S(const T* x, long long n, float* acc) { pdl_start(); abs_max<T>(x, n, acc); }             \
  extern "C" __global__ void error_sums_##S(const T* yq, const T* y, const T* x, long long n, double* partials) { pdl_start();     \
    error_sums<T>(yq, y, x, n, partials);                                                                            \
  }
FOR_EACH_DTYPE(DEF_CALIB)

// h[i, j] = f32(h[i, j] / (s[i] · s[j])) for an f32 [n, n] Hessian and f64 scales.
extern "C" __global__ void scale_hessian(float* h, const double* s, int n) { pdl_start();
  const long long total = (long long)n * n;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const int r = (int)(i / n), c = (int)(i % n);
    h[i] = (float)((double)h[i] / (s[r] * s[c]));
  }
}
