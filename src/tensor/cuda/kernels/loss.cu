// The distillation loss over the vocabulary and the teacher's top-k, one block per row. Maxima and
// exponentials in f32, their sums, log-sum-exps and the loss terms in f64 (as score.cu).
//
// distill_loss, per row with student logits z, teacher logits w (full) or top-k, temperature T:
//   u = z / T, q = softmax(u); p = softmax(w / T) (top-k: the k entries p_i = exp(w_i / T - lse_t)
//   and one "rest" bucket of mass 1 - sum p_i against the student's rest mass sum_{j not in K} q_j);
//   D = KL(p || q) (kind 0), KL(q || p) (kind 1) or KL(p || l p + (1 - l) q) (kind 2), over the
//   buckets (every column its own bucket with a full teacher);
//   CE = logsumexp(z) - z[target] (unsoftened);
//   loss = (1 - alpha) T^2 D + alpha CE (no teacher: loss = CE).
// Gradient of a bucket divergence D(Q) through the softmax: dD/du_j = q_j (G_b(j) - sum_b Q_b G_b)
// with G_b = dD/dQ_b: forward KL G = -P/Q (so q_j - p_j for singletons), reverse KL
// G = log Q - log P + 1 (q_j (log q_j - log p_j - D)), skew G = -(1 - l) P / M.
// dLogits = gradScale ((1 - alpha) T dD/du + alpha (softmax(z) - onehot(target))), written in place
// when dLogits = logits (each column is read before it is written, by the same thread). Rows with
// target < 0 get zero gradient and zero loss.
// res[3 row + {0, 1, 2}] = loss, D, CE.
#include "common.cuh"
// llmopt:pdl

struct Lse {
  float m;   // running max
  double s;  // sum of exp(x - m)
};

__device__ __forceinline__ Lse lse_init() { return Lse{-INF_F, 0.0}; }

__device__ __forceinline__ void lse_add(Lse& a, float v) {
  if (v == -INF_F) return;
  if (v > a.m) {
    a.s = a.s * exp((double)a.m - (double)v) + 1.0;
    a.m = v;
  } else {
    a.s += (double)expf(v - a.m);
  }
}

__device__ __forceinline__ void lse_merge(Lse& a, const Lse& b) {
  if (b.m == -INF_F) return;
  if (a.m == -INF_F) {
    a = b;
    return;
  }
  const float M = fmaxf(a.m, b.m);
  a.s = a.s * exp((double)a.m - (double)M) + b.s * exp((double)b.m - (double)M);
  a.m = M;
}

__device__ __forceinline__ Lse warp_lse(Lse a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Lse b;
    b.m = __shfl_xor_sync(FULL_MASK, a.m, o);
    b.s = __shfl_xor_sync(FULL_MASK, a.s, o);
    lse_merge(a, b);
  }
  return a;
}

// log-sum-exp over the block (returned to every thread); -inf when every value was -inf.
__device__ __forceinline__ double block_lse(Lse a) {
  __shared__ Lse partialLse[32];
  a = warp_lse(a);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) partialLse[warp] = a;
  __syncthreads();
  a = lane < warps ? partialLse[lane] : lse_init();
  a = warp_lse(a);
  return a.m == -INF_F ? -(double)INF_F : (double)a.m + log(a.s);
}

enum { KIND_KL = 0, KIND_REVERSE = 1, KIND_SKEW = 2 };
enum { MODE_CE = 0, MODE_FULL = 1, MODE_TOPK = 2 };
// Smallest bucket mass used in a log (as the cpu reference's BUCKET_FLOOR).
#define BUCKET_FLOOR 1e-20

// Divergence term and G of one bucket with teacher mass P (log lp) and student mass Q (log lq).
__device__ __forceinline__ void bucket_terms(int kind, double P, double lp, double Q, double lq, double lambda, double& d, double& G) {
  if (kind == KIND_KL) {
    d = P > 0.0 ? P * (lp - lq) : 0.0;
    G = Q > 0.0 ? -P / Q : 0.0;
  } else if (kind == KIND_REVERSE) {
    d = Q > 0.0 ? Q * (lq - lp) : 0.0;
    G = lq - lp + 1.0;
  } else {
    const double M = lambda * P + (1.0 - lambda) * Q;
    d = P > 0.0 ? P * (lp - log(M)) : 0.0;
    G = M > 0.0 ? -(1.0 - lambda) * P / M : 0.0;
  }
}

// Dynamic shared memory (top-k mode only): a bitmap of the row's top-k columns [ceil(V/32)], then the
// final gradient of each top-k column [k] (f32).
template <typename T>
__device__ __forceinline__ void distill_loss(double* res, T* dLogits, const T* logits, const T* teacher, const int* tkIds,
                                             const float* tkLogits, const float* tkLse, int k, const int* targets, int V,
                                             int kind, int mode, double invT, double temperature, double alpha, double lambda,
                                             float gradScale) {
  extern __shared__ unsigned lossShared[];
  const long long row = blockIdx.x;
  const long long off = row * V;
  const T* z = logits + off;
  T* dz = dLogits + off;
  const int target = targets[row];
  if (target < 0) {
    for (int c = threadIdx.x; c < V; c += blockDim.x) dz[c] = from_float<T>(0.f);
    if (threadIdx.x == 0) res[3 * row] = res[3 * row + 1] = res[3 * row + 2] = 0.0;
    return;
  }
  const bool unitT = temperature == 1.0;
  const float invTf = (float)invT;
  const int words = (V + 31) / 32;
  unsigned* inK = lossShared;
  float* gK = reinterpret_cast<float*>(lossShared + words);
  if (mode == MODE_TOPK) {
    for (int i = threadIdx.x; i < words; i += blockDim.x) inK[i] = 0u;
    __syncthreads();
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
      const int id = tkIds[row * k + i];
      atomicOr(&inK[id >> 5], 1u << (id & 31));
    }
    __syncthreads();
  }

  // pass 1: log-sum-exps of u (student at T), z (student at 1), w / T (teacher), u over the rest bucket
  Lse ls = lse_init(), l1 = lse_init(), lt = lse_init(), lr = lse_init();
  for (int c = threadIdx.x; c < V; c += blockDim.x) {
    const float zc = to_float(z[c]);
    const float u = zc * invTf;
    lse_add(ls, u);
    if (!unitT) lse_add(l1, zc);
    if (mode == MODE_FULL) lse_add(lt, to_float(teacher[off + c]) * invTf);
    if (mode == MODE_TOPK && !((inK[c >> 5] >> (c & 31)) & 1u)) lse_add(lr, u);
  }
  const double lseS = block_lse(ls);
  const double lse1 = unitT ? lseS : block_lse(l1);
  const double lseT = mode == MODE_FULL ? block_lse(lt) : 0.0;
  const double lseRest = mode == MODE_TOPK ? block_lse(lr) : 0.0;
  const double ce = lse1 - (double)to_float(z[target]);
  const double wD = mode == MODE_CE ? 0.0 : (1.0 - alpha) * temperature;  // (1 - alpha) T^2 * (1/T)
  const double wCE = mode == MODE_CE ? 1.0 : alpha;
  const float lseSf = (float)lseS, lse1f = (float)lse1, lseTf = (float)lseT;

  // the distillation divergence D (and what the gradient needs of it) before pass 3
  double D = 0.0, Sg = 0.0;
  float restCoef = 0.f;  // top-k: dD/du_j = q_j restCoef for the columns of the rest bucket
  if (mode == MODE_TOPK) {
    // the k classes of the teacher's top-k; each of their columns' final gradient is kept in gK.
    // As the cpu reference: the bucket R = 1 - sum P (floored at BUCKET_FLOOR) exists when k < V.
    double dK = 0.0, sK = 0.0, sumP = 0.0;
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
      const int id = tkIds[row * k + i];
      const double lp = (double)tkLogits[row * k + i] * invT - (double)tkLse[row];
      const double lq = (double)to_float(z[id]) * invT - lseS;
      const double P = exp(lp), Q = exp(lq);
      sumP += P;
      if (kind == KIND_KL) {
        dK += P * (lp - lq);
      } else if (kind == KIND_REVERSE) {
        dK += Q * (lq - lp);
      } else {
        const double M = lambda * P + (1.0 - lambda) * Q;
        dK += P * (lp - log(M));
        sK += Q * P / M;
      }
    }
    dK = block_sum_f64(dK);
    sK = block_sum_f64(sK);
    sumP = block_sum_f64(sumP);
    const bool bucket = k < V;
    const double qBucket = bucket ? exp(lseRest - lseS) : 0.0;
    const double R = bucket ? fmax(1.0 - sumP, BUCKET_FLOOR) : 0.0;
    const double QR = bucket ? fmax(qBucket, BUCKET_FLOOR) : 0.0;
    double S = 0.0;
    if (kind == KIND_KL) {
      D = dK + (bucket ? R * (log(R) - log(QR)) : 0.0);
      restCoef = bucket ? (float)(1.0 - R / QR) : 0.f;
    } else if (kind == KIND_REVERSE) {
      const double aB = bucket ? log(QR) - log(R) : 0.0;
      D = dK + qBucket * aB;
      restCoef = (float)(aB - D);
    } else {
      const double M = lambda * R + (1.0 - lambda) * qBucket;
      const double rB = bucket ? R / M : 0.0;
      D = dK + (bucket ? R * (log(R) - log(M)) : 0.0);
      S = sK + qBucket * rB;
      restCoef = (float)((1.0 - lambda) * (S - rB));
    }
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
      const int id = tkIds[row * k + i];
      const double lp = (double)tkLogits[row * k + i] * invT - (double)tkLse[row];
      const double zc = (double)to_float(z[id]);
      const double lq = zc * invT - lseS;
      const double P = exp(lp), Q = exp(lq);
      double dD;
      if (kind == KIND_KL) dD = Q - P;
      else if (kind == KIND_REVERSE) dD = Q * (lq - lp - D);
      else dD = (1.0 - lambda) * Q * (S - P / (lambda * P + (1.0 - lambda) * Q));
      const double q1 = unitT ? Q : exp(zc - lse1);
      gK[i] = (float)(gradScale * (wD * dD + wCE * (q1 - (id == target ? 1.0 : 0.0))));
    }
  } else if (mode == MODE_FULL && kind != KIND_KL) {
    // pass 2 (reverse / skew KL): D and Sg = sum_j q_j G_j need the whole row before any gradient
    double d = 0.0, sg = 0.0;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float zc = to_float(z[c]), tc = to_float(teacher[off + c]);
      const float u = zc * invTf, wt = tc * invTf;
      const double lq = (double)zc * invT - lseS, lp = (double)tc * invT - lseT;
      const double Q = (double)expf(u - lseSf), P = (double)expf(wt - lseTf);
      double di, G;
      bucket_terms(kind, P, lp, Q, lq, lambda, di, G);
      d += di;
      sg += Q * G;
    }
    D = block_sum_f64(d);
    Sg = kind == KIND_REVERSE ? D + 1.0 : block_sum_f64(sg);
  }

  // pass 3: the gradient (forward KL with a full teacher sums D here too). dLogits may be the logits:
  // every read of a column other than the thread's own (z[target], the top-k columns) is done by now.
  __syncthreads();
  double dKl = 0.0;
  const float lambdaF = (float)lambda;
  for (int c = threadIdx.x; c < V; c += blockDim.x) {
    const float zc = to_float(z[c]);
    const float u = zc * invTf;
    const float q = expf(u - lseSf);
    float dD = 0.f;
    if (mode == MODE_FULL) {
      const float tc = to_float(teacher[off + c]);
      const float p = expf(tc * invTf - lseTf);
      if (kind == KIND_KL) {
        dD = q - p;
        if (p > 0.f) dKl += (double)p * (((double)tc * invT - lseT) - ((double)zc * invT - lseS));
      } else if (kind == KIND_REVERSE) {
        dD = q * (float)(((double)zc * invT - lseS) - ((double)tc * invT - lseT) - D);
      } else {
        const float M = lambdaF * p + (1.f - lambdaF) * q;
        const float G = M > 0.f ? -(1.f - lambdaF) * p / M : 0.f;
        dD = q * (G - (float)Sg);
      }
    } else if (mode == MODE_TOPK) {
      dD = q * restCoef;  // the top-k columns are overwritten below
    }
    float g = (float)wD * dD;
    if (wCE != 0.0) {
      const float q1 = unitT ? q : expf(zc - lse1f);
      g += (float)wCE * (q1 - (c == target ? 1.f : 0.f));
    }
    dz[c] = from_float<T>(gradScale * g);
  }
  if (mode == MODE_FULL && kind == KIND_KL) D = block_sum_f64(dKl);
  if (mode == MODE_TOPK) {
    __syncthreads();  // the rest-bucket values of the top-k columns are written; replace them
    for (int i = threadIdx.x; i < k; i += blockDim.x) dz[tkIds[row * k + i]] = from_float<T>(gK[i]);
  }
  if (threadIdx.x == 0) {
    const double loss = mode == MODE_CE ? ce : (1.0 - alpha) * temperature * temperature * D + alpha * ce;
    res[3 * row] = loss;
    res[3 * row + 1] = D;
    res[3 * row + 2] = ce;
  }
}

// --- top-k -------------------------------------------------------------------------------------

// Order-preserving key of a float: larger float, larger unsigned key (-0 and +0 are one key: equal
// values, ordered by column like the cpu's comparison).
__device__ __forceinline__ unsigned float_key(float f) {
  const unsigned u = __float_as_uint(f == 0.f ? 0.f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Block-wide exclusive prefix count of `flag` over threads in order; total returned in *total.
__device__ __forceinline__ int block_rank(bool flag, int* warpCounts, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const unsigned ballot = __ballot_sync(FULL_MASK, flag);
  const int inWarp = __popc(ballot & ((1u << lane) - 1u));
  __syncthreads();
  if (lane == 0) warpCounts[warp] = __popc(ballot);
  __syncthreads();
  int before = 0, all = 0;
  for (int w = 0; w < warps; ++w) {
    const int n = warpCounts[w];
    if (w < warp) before += n;
    all += n;
  }
  *total = all;
  return before + inWarp;
}

// Per row of logits [rows, V]: the k largest values (largest first; equal values: lower column
// first), their columns, and logsumexp(logits / T). The k-th largest key is found by a 4-round radix
// select on the 32-bit keys (8-bit digits, high to low); then columns with a larger key are
// collected, plus the lowest-indexed columns equal to it up to k, and the k are sorted (bitonic, in
// shared memory: keys [P], columns [P], P = k rounded up to a power of two).
template <typename T>
__device__ __forceinline__ void top_k(int* outIds, float* outVals, float* outLse, const T* logits, int V, int k, int P, float invT) {
  extern __shared__ unsigned topShared[];
  unsigned* sKey = topShared;            // [P]
  int* sIdx = reinterpret_cast<int*>(topShared + P);  // [P]
  __shared__ unsigned hist[256];
  __shared__ unsigned shDesired;
  __shared__ int shRemaining, shCount;
  __shared__ int warpCounts[32];
  const long long off = (long long)blockIdx.x * V;
  const T* x = logits + off;

  unsigned desired = 0u, mask = 0u;
  int remaining = k;  // how many of the k are still to be found among keys matching `desired` on `mask`
  Lse l = lse_init();
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0u;
    __syncthreads();
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float v = to_float(x[c]);
      if (shift == 24) lse_add(l, v * invT);
      const unsigned key = float_key(v);
      if ((key & mask) == desired) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int cum = 0, digit = 0;
      for (int d = 255; d >= 0; --d) {
        const int n = (int)hist[d];
        if (cum + n >= remaining) {
          digit = d;
          break;
        }
        cum += n;
      }
      shDesired = desired | ((unsigned)digit << shift);
      shRemaining = remaining - cum;
    }
    __syncthreads();
    desired = shDesired;
    remaining = shRemaining;
    mask |= 255u << shift;
  }
  const double lse = block_lse(l);

  // collect: every key > desired (count k - remaining), then the first `remaining` keys == desired
  if (threadIdx.x == 0) shCount = 0;
  __syncthreads();
  int tiesTaken = 0;
  for (int c0 = 0; c0 < V; c0 += blockDim.x) {
    const int c = c0 + threadIdx.x;
    const unsigned key = c < V ? float_key(to_float(x[c])) : 0u;
    if (c < V && key > desired) {
      const int at = atomicAdd(&shCount, 1);
      sKey[at] = key;
      sIdx[at] = c;
    }
    int ties;
    const int rank = block_rank(c < V && key == desired, warpCounts, &ties);
    if (c < V && key == desired && tiesTaken + rank < remaining) {
      const int at = (k - remaining) + tiesTaken + rank;
      sKey[at] = key;
      sIdx[at] = c;
    }
    tiesTaken += ties;
  }
  __syncthreads();
  for (int i = k + threadIdx.x; i < P; i += blockDim.x) {
    sKey[i] = 0u;
    sIdx[i] = 0x7fffffff;
  }
  __syncthreads();
  // bitonic sort, descending by (key, -column)
  for (int size = 2; size <= P; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < P / 2; i += blockDim.x) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool descending = (lo & size) == 0;
        const unsigned ka = sKey[lo], kb = sKey[hi];
        const int ia = sIdx[lo], ib = sIdx[hi];
        const bool aFirst = ka > kb || (ka == kb && ia < ib);
        if (aFirst != descending) {
          sKey[lo] = kb;
          sKey[hi] = ka;
          sIdx[lo] = ib;
          sIdx[hi] = ia;
        }
      }
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const int c = sIdx[i];
    outIds[(long long)blockIdx.x * k + i] = c;
    outVals[(long long)blockIdx.x * k + i] = to_float(x[c]);
  }
  if (threadIdx.x == 0) outLse[blockIdx.x] = (float)lse;
}

#define DEF_LOSS(T, S)                                                                                              \
  extern "C" __global__ void __launch_bounds__(1024) distill_loss_##S(double* res, T* dLogits, const T* logits, const T* teacher,            \
                                              const int* tkIds, const float* tkLogits, const float* tkLse, int k,   \
                                              const int* targets, int V, int kind, int mode, double invT,           \
                                              double temperature, double alpha, double lambda, float gradScale) { pdl_start();   \
    distill_loss<T>(res, dLogits, logits, teacher, tkIds, tkLogits, tkLse, k, targets, V, kind, mode, invT,         \
                    temperature, alpha, lambda, gradScale);                                                         \
  }                                                                                                                 \
  extern "C" __global__ void __launch_bounds__(1024) top_k_##S(int* outIds, float* outVals, float* outLse, const T* logits, int V, int k,    \
                                       int P, float invT) { pdl_start();                                                         \
    top_k<T>(outIds, outVals, outLse, logits, V, k, P, invT);                                                       \
  }
FOR_EACH_DTYPE(DEF_LOSS)
