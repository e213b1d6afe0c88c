// Rotary position embedding, rotate-half layout (GPT-NeoX / HF Llama), in place.
// x is [rows, nHeads, headDim]; cos/sin are [maxPos, rotaryDim/2]; row r uses position pos[r].
// For i < rotaryDim/2: (x[i], x[i+half]) <- (x[i] cos - x[i+half] sin, x[i+half] cos + x[i] sin).
#include "common.cuh"
// llmopt:pdl

template <typename T>
__device__ __forceinline__ void rope(T* x, const int* pos, const T* cosT, const T* sinT, int nHeads, int headDim, int rotaryDim) {
  const int half = rotaryDim / 2;
  const long long p = pos[blockIdx.x];
  T* row = x + (long long)blockIdx.x * nHeads * headDim;
  for (int idx = threadIdx.x; idx < nHeads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    T* head = row + h * headDim;
    const float c = to_float(cosT[p * half + i]), s = to_float(sinT[p * half + i]);
    const float x1 = to_float(head[i]), x2 = to_float(head[i + half]);
    head[i] = from_float<T>(x1 * c - x2 * s);
    head[i + half] = from_float<T>(x2 * c + x1 * s);
  }
}

// One decode row r (sequence b = r / seq, step t = r % seq): rope on q's and k's heads in place, then
// k and v appended to the caches at row b*kvStride + pos[b] + t. The same results as rope(q), rope(k),
// writeKv(k), writeKv(v) with positions pos[b] + t.
template <typename T>
__device__ __forceinline__ void rope_write_kv(T* q, T* k, const T* v, T* cacheK, T* cacheV, const int* pos, const T* cosT,
                                              const T* sinT, int nHeads, int nKvHeads, int headDim, int rotaryDim,
                                              int seq, int kvStride) {
  const int half = rotaryDim / 2;
  const int r = blockIdx.x, b = r / seq, t = r % seq;
  const long long p = pos[b] + t;
  T* qr = q + (long long)r * nHeads * headDim;
  T* kr = k + (long long)r * nKvHeads * headDim;
  for (int idx = threadIdx.x; idx < (nHeads + nKvHeads) * half; idx += blockDim.x) {
    const int hh = idx / half, i = idx % half;
    T* head = hh < nHeads ? qr + hh * headDim : kr + (hh - nHeads) * headDim;
    const float c = to_float(cosT[p * half + i]), s = to_float(sinT[p * half + i]);
    const float x1 = to_float(head[i]), x2 = to_float(head[i + half]);
    head[i] = from_float<T>(x1 * c - x2 * s);
    head[i + half] = from_float<T>(x2 * c + x1 * s);
  }
  __syncthreads();
  const int D = nKvHeads * headDim;
  const long long dst = ((long long)b * kvStride + p) * D;
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    cacheK[dst + c] = kr[c];
    cacheV[dst + c] = v[(long long)r * D + c];
  }
}

#define DEF_ROPE_KV(T, S)                                                                                        \
  extern "C" __global__ void rope_write_kv_##S(T* q, T* k, const T* v, T* cacheK, T* cacheV, const int* pos,      \
                                               const T* cosT, const T* sinT, int nHeads, int nKvHeads, int headDim, \
                                               int rotaryDim, int seq, int kvStride) { pdl_start();                           \
    rope_write_kv<T>(q, k, v, cacheK, cacheV, pos, cosT, sinT, nHeads, nKvHeads, headDim, rotaryDim, seq, kvStride); \
  }
FOR_EACH_DTYPE(DEF_ROPE_KV)

#define DEF_ROPE(T, S)                                                                                          \
  extern "C" __global__ void rope_##S(T* x, const int* pos, const T* cosT, const T* sinT, int nHeads, int headDim, \
                                      int rotaryDim) { pdl_start();                                                          \
    rope<T>(x, pos, cosT, sinT, nHeads, headDim, rotaryDim);                                                    \
  }
FOR_EACH_DTYPE(DEF_ROPE)
