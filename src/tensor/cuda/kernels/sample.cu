// Next-token choice on the device, one block per row of logits [B, V], so a decode step (logits →
// next ids → positions + 1) runs without the host and can be replayed from a CUDA graph.
//   greedy (invTemp == 0 or topK == 1): argmax, lowest index on ties (as scoreLogits).
//   sampling: candidates = tokens whose logit >= the topK-th largest (all when topK <= 0 or >= V),
//     weights exp((x - max) * invTemp), u = uniform01(seed, step, row), pick the first candidate in
//     index order whose running weight sum exceeds u * total. src/model/sampling.ts is the same
//     algorithm on the host (the running sums may round differently).
// The chosen id goes to ids[row] (the next step's input) and history[step * B + row].
#include "common.cuh"
// llmopt:pdl

constexpr int SAMPLE_THREADS = 1024;

__device__ __forceinline__ unsigned mix32(unsigned h) {
  h ^= h >> 16;
  h *= 0x7feb352du;
  h ^= h >> 15;
  h *= 0x846ca68bu;
  h ^= h >> 16;
  return h;
}

__device__ __forceinline__ float uniform01(unsigned seed, unsigned step, unsigned row) {
  const unsigned h = mix32(seed ^ mix32(step * 0x9e3779b9u + row * 0x85ebca6bu + 0x632be5abu));
  return (float)(h >> 8) * (1.f / 16777216.f);
}

// Order-preserving map of a float to an unsigned key (larger float -> larger key).
__device__ __forceinline__ unsigned float_key(float f) {
  const unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

struct MaxArg {
  float v;
  int i;
};

__device__ __forceinline__ MaxArg better(MaxArg a, MaxArg b) {
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}

template <typename T>
__device__ __forceinline__ void sample_rows(const T* logits, int V, float invTemp, int topK, unsigned seed, int* ids,
                                            int* history, const int* step, int historyCap) {
  __shared__ MaxArg warpBest[32];
  __shared__ unsigned hist[256];
  __shared__ unsigned prefixShared, remainingShared;
  __shared__ float warpTotals[32];
  __shared__ int chosen;
  const int row = blockIdx.x, B = gridDim.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const T* x = logits + (long long)row * V;

  // 1. max and argmax. Each thread sees its indices in ascending order (first max kept), through
  // 16-byte loads, 4 in flight, when the row allows: a 128k-vocabulary row is a few memory round
  // trips instead of ~125 dependent 2-byte loads per thread.
  MaxArg best{-INF_F, 0x7fffffff};
  constexpr int VN = 16 / sizeof(T);
  if (V % VN == 0 && (reinterpret_cast<unsigned long long>(x) & 15ull) == 0) {
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    const int nv = V / VN;
    constexpr int U = 4;
    for (int base = threadIdx.x; base < nv; base += U * blockDim.x) {
      uint4 r[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * blockDim.x;
        r[u] = i < nv ? xv[i] : make_uint4(0u, 0u, 0u, 0u);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * blockDim.x;
        if (i >= nv) break;
        const T* e = reinterpret_cast<const T*>(&r[u]);
#pragma unroll
        for (int j = 0; j < VN; ++j) {
          const float v = to_float(e[j]);
          if (v > best.v) best = MaxArg{v, i * VN + j};
        }
      }
    }
  } else {
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
      const float v = to_float(x[c]);
      if (v > best.v) best = MaxArg{v, c};
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxArg other{__shfl_xor_sync(FULL_MASK, best.v, o), __shfl_xor_sync(FULL_MASK, best.i, o)};
    best = better(best, other);
  }
  if (lane == 0) warpBest[warp] = best;
  __syncthreads();
  best = warpBest[0];
  for (int w = 1; w < warps; ++w) best = better(best, warpBest[w]);
  if (best.i == 0x7fffffff) best.i = 0;  // all -inf/NaN: token 0
  int token = best.i;

  if (!(invTemp == 0.f || topK == 1 || best.v == -INF_F)) {
    // 2. threshold: the key of the topK-th largest logit (radix select, 8 bits at a time)
    unsigned thrKey = 0u;
    if (topK > 0 && topK < V) {
      unsigned prefix = 0u, mask = 0u, remaining = (unsigned)topK;
      for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0u;
        __syncthreads();
        for (int c = threadIdx.x; c < V; c += blockDim.x) {
          const unsigned k = float_key(to_float(x[c]));
          if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 0xffu], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
          unsigned above = 0u;
          int bin = 255;
          for (; bin > 0; --bin) {
            if (above + hist[bin] >= remaining) break;
            above += hist[bin];
          }
          prefixShared = prefix | ((unsigned)bin << shift);
          remainingShared = remaining - above;
        }
        __syncthreads();
        prefix = prefixShared;
        remaining = remainingShared;
        mask |= 0xffu << shift;
        __syncthreads();
      }
      thrKey = prefix;
    }
    // 3. weights over contiguous per-thread chunks, scanned in index order
    const int chunk = (V + blockDim.x - 1) / blockDim.x;
    const int c0 = imin(V, threadIdx.x * chunk), c1 = imin(V, c0 + chunk);
    float mine = 0.f;
    for (int c = c0; c < c1; ++c) {
      const float v = to_float(x[c]);
      if (float_key(v) >= thrKey && v == v) mine += expf((v - best.v) * invTemp);
    }
    // inclusive scan of `mine` across the block (thread order = index order)
    float incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float n = __shfl_up_sync(FULL_MASK, incl, o);
      if (lane >= o) incl += n;
    }
    if (lane == 31) warpTotals[warp] = incl;
    if (threadIdx.x == 0) chosen = -1;
    __syncthreads();
    float before = 0.f, total = 0.f;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warpTotals[w];
      total += warpTotals[w];
    }
    incl += before;
    const float excl = incl - mine;
    const float target = uniform01(seed, (unsigned)step[0], (unsigned)row) * total;
    if (mine > 0.f && excl <= target && target < incl) {
      float acc = excl;
      int pick = -1, last = -1;
      for (int c = c0; c < c1; ++c) {
        const float v = to_float(x[c]);
        if (!(float_key(v) >= thrKey && v == v)) continue;
        last = c;
        acc += expf((v - best.v) * invTemp);
        if (acc > target) {
          pick = c;
          break;
        }
      }
      chosen = pick >= 0 ? pick : last;
    }
    __syncthreads();
    if (chosen >= 0) token = chosen;
  }
  if (threadIdx.x == 0) {
    ids[row] = token;
    const int s = step[0];
    if (history != nullptr && s < historyCap) history[(long long)s * B + row] = token;
  }
}

#define DEF_SAMPLE(T, S)                                                                                       \
  extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)                                                 \
      sample_rows_##S(const T* logits, int V, float invTemp, int topK, unsigned seed, int* ids, int* history, \
                      const int* step, int historyCap) { pdl_start();                                                     \
    sample_rows<T>(logits, V, invTemp, topK, seed, ids, history, step, historyCap);                           \
  }
FOR_EACH_DTYPE(DEF_SAMPLE)

// After a step: every sequence's position and KV length advance by one, and so does the step counter.
extern "C" __global__ void decode_advance(int* positions, int* kvLens, int* step, int B) { pdl_start();
  for (int b = threadIdx.x; b < B; b += blockDim.x) {
    positions[b] += 1;
    kvLens[b] += 1;
  }
  if (threadIdx.x == 0) step[0] += 1;
}
