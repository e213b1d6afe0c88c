// Per-row scoring of logits [rows, V] against targets, one block per row, f32 math (KLD sums in f64):
//   nll    = logsumexp(x) - x[target]   (0 when target < 0)
//   kld    = sum_c p_base(c) (log p_base(c) - log p_model(c))   (when a baseline is given)
//   argmax of x and of the baseline (lowest index on ties)
// res[row] = { nll, kld, argmax (int bits), baseline argmax (int bits, -1 without baseline) }.
#include "common.cuh"

struct RowStats {
  float m;     // running max
  float s;     // sum of exp(x - m)
  float best;  // argmax value
  int arg;     // argmax index
};

__device__ __forceinline__ RowStats stats_init() { return RowStats{-INF_F, 0.f, -INF_F, 0x7fffffff}; }

__device__ __forceinline__ void stats_add(RowStats& a, float v, int c) {
  if (v > a.best) {  // columns arrive in increasing order per thread: first max wins
    a.best = v;
    a.arg = c;
  }
  if (v == -INF_F) return;
  if (v > a.m) {
    a.s = a.s * expf(a.m - v) + 1.f;
    a.m = v;
  } else {
    a.s += expf(v - a.m);
  }
}

__device__ __forceinline__ void stats_merge(RowStats& a, const RowStats& b) {
  if (b.best > a.best || (b.best == a.best && b.arg < a.arg)) {
    a.best = b.best;
    a.arg = b.arg;
  }
  if (b.m == -INF_F) return;
  if (a.m == -INF_F) {
    a.m = b.m;
    a.s = b.s;
    return;
  }
  const float M = fmaxf(a.m, b.m);
  a.s = a.s * expf(a.m - M) + b.s * expf(b.m - M);
  a.m = M;
}

__device__ __forceinline__ RowStats warp_stats(RowStats a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    RowStats b;
    b.m = __shfl_xor_sync(FULL_MASK, a.m, o);
    b.s = __shfl_xor_sync(FULL_MASK, a.s, o);
    b.best = __shfl_xor_sync(FULL_MASK, a.best, o);
    b.arg = __shfl_xor_sync(FULL_MASK, a.arg, o);
    stats_merge(a, b);
  }
  return a;
}

__device__ __forceinline__ RowStats block_stats(RowStats a) {
  __shared__ RowStats partial[32];
  a = warp_stats(a);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = a;
  __syncthreads();
  return warp_stats(lane < warps ? partial[lane] : stats_init());
}

__device__ __forceinline__ double block_sum_f64(double v) {
  __shared__ double partial[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < warps ? partial[lane] : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ void score_logits(float* res, const T* logits, const T* base, const int* targets, int V) {
  const long long off = (long long)blockIdx.x * V;
  const T* x = logits + off;
  RowStats a = stats_init();
  for (int c = threadIdx.x; c < V; c += blockDim.x) stats_add(a, to_float(x[c]), c);
  a = block_stats(a);
  const float lse = a.m + logf(a.s);

  float kld = 0.f;
  int argBase = -1;
  if (base != nullptr) {
    const T* y = base + off;
    RowStats bs = stats_init();
    for (int c = threadIdx.x; c < V; c += blockDim.x) stats_add(bs, to_float(y[c]), c);
    bs = block_stats(bs);
    const float lseBase = bs.m + logf(bs.s);
    double kl = 0.0;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float lb = to_float(y[c]) - lseBase;
      if (lb == -INF_F) continue;
      const float lm = to_float(x[c]) - lse;
      kl += (double)expf(lb) * (double)(lb - lm);
    }
    kld = (float)block_sum_f64(kl);
    argBase = bs.arg;
  }
  if (threadIdx.x == 0) {
    const int target = targets[blockIdx.x];
    float* r = res + 4ll * blockIdx.x;
    r[0] = target >= 0 ? lse - to_float(x[target]) : 0.f;
    r[1] = kld;
    r[2] = __int_as_float(a.arg);
    r[3] = __int_as_float(argBase);
  }
}

#define DEF_SCORE(T, S)                                                                                      \
  extern "C" __global__ void score_logits_##S(float* res, const T* logits, const T* base, const int* targets, int V) { \
    score_logits<T>(res, logits, base, targets, V);                                                          \
  }
FOR_EACH_DTYPE(DEF_SCORE)
