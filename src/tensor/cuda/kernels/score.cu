// Per-row scoring of logits [rows, V] against targets, one block per row. Maxima and exponentials
// in f32; their sums, log-sum-exps, nll and the KLD sum in f64:
//   nll    = logsumexp(x) - x[target]   (0 when target < 0)
//   kld    = sum_c p_base(c) (log p_base(c) - log p_model(c))   (when a baseline is given)
//   argmax of x and of the baseline (lowest index on ties)
// res[2 row] = nll, res[2 row + 1] = kld; resArg[2 row] = argmax, resArg[2 row + 1] = baseline argmax (-1 without).
#include "common.cuh"
// llmopt:pdl

struct RowStats {
  float m;     // running max
  double s;    // sum of exp(x - m), in f64 so that log-sum-exps are good to ~1e-9
  float best;  // argmax value
  int arg;     // argmax index
};

__device__ __forceinline__ RowStats stats_init() { return RowStats{-INF_F, 0.0, -INF_F, 0x7fffffff}; }

__device__ __forceinline__ void stats_add(RowStats& a, float v, int c) {
  if (v > a.best) {  // columns arrive in increasing order per thread: first max wins
    a.best = v;
    a.arg = c;
  }
  if (v == -INF_F) return;
  if (v > a.m) {
    a.s = a.s * exp((double)a.m - (double)v) + 1.0;
    a.m = v;
  } else {
    a.s += (double)expf(v - a.m);
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
  a.s = a.s * exp((double)a.m - (double)M) + b.s * exp((double)b.m - (double)M);
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

template <typename T>
__device__ __forceinline__ void score_logits(double* res, int* resArg, const T* logits, const T* base, const int* targets,
                                             int V) {
  const long long off = (long long)blockIdx.x * V;
  const T* x = logits + off;
  RowStats a = stats_init();
  for (int c = threadIdx.x; c < V; c += blockDim.x) stats_add(a, to_float(x[c]), c);
  a = block_stats(a);
  // log-sum-exps in f64: an f32 lse (~10) would carry ~1e-6 absolute error into every nll and kld.
  const double lse = (double)a.m + log(a.s);
  const int target = targets[blockIdx.x];

  double kld = 0.0;
  int argBase = -1;
  if (base != nullptr) {
    const T* y = base + off;
    RowStats bs = stats_init();
    for (int c = threadIdx.x; c < V; c += blockDim.x) stats_add(bs, to_float(y[c]), c);
    bs = block_stats(bs);
    const double lseBase = (double)bs.m + log(bs.s);
    // KL(base || model) = sum_c p_base(c) (y_c - x_c) - lseBase + lse, with p_base = exp(y_c - lseBase).
    double t = 0.0;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float yc = to_float(y[c]);
      if (yc == -INF_F) continue;
      const double p = exp((double)yc - lseBase);
      t += p * (double)(yc - to_float(x[c]));
    }
    kld = block_sum_f64(t) - lseBase + lse;
    argBase = bs.arg;
  }
  if (threadIdx.x == 0) {
    res[2ll * blockIdx.x] = target >= 0 ? lse - (double)to_float(x[target]) : 0.0;
    res[2ll * blockIdx.x + 1] = kld;
    resArg[2ll * blockIdx.x] = a.arg;
    resArg[2ll * blockIdx.x + 1] = argBase;
  }
}

#define DEF_SCORE(T, S)                                                                                        \
  extern "C" __global__ void score_logits_##S(double* res, int* resArg, const T* logits, const T* base,         \
                                              const int* targets, int V) { pdl_start();                                     \
    score_logits<T>(res, resArg, logits, base, targets, V);                                                    \
  }
FOR_EACH_DTYPE(DEF_SCORE)
