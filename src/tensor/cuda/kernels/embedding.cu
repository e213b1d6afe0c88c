// Row gathers and scatters: token embeddings, learned positions, KV-cache appends. One block per row.
#include "common.cuh"
// llmopt:pdl

// out[r,:] = table[ids[r],:]
template <typename T>
__device__ __forceinline__ void embedding(T* out, const T* table, const int* ids, int cols) {
  const T* src = table + (long long)ids[blockIdx.x] * cols;
  T* dst = out + (long long)blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

// out[r,:] += table[ids[r],:]
template <typename T>
__device__ __forceinline__ void add_embedding(T* out, const T* table, const int* ids, int cols) {
  const T* src = table + (long long)ids[blockIdx.x] * cols;
  T* dst = out + (long long)blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = from_float<T>(to_float(dst[c]) + to_float(src[c]));
}

// cache[b*kvStride + start_b + t, :] = src[b*seq + t, :]   (block r = b*seq + t), where start_b =
// starts[b] when the starts pointer is given (read on the device), else start.
template <typename T>
__device__ __forceinline__ void write_kv(T* cache, const T* src, int seq, int start, int kvStride, int cols, const int* starts) {
  const int r = blockIdx.x, b = r / seq, t = r % seq;
  const int s = starts != nullptr ? starts[b] : start;
  const T* from = src + (long long)r * cols;
  T* to = cache + ((long long)b * kvStride + s + t) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) to[c] = from[c];
}

#define DEF_EMBEDDING(T, S)                                                                                  \
  extern "C" __global__ void embedding_##S(T* out, const T* table, const int* ids, int cols) { pdl_start();              \
    embedding<T>(out, table, ids, cols);                                                                     \
  }                                                                                                          \
  extern "C" __global__ void add_embedding_##S(T* out, const T* table, const int* ids, int cols) { pdl_start();          \
    add_embedding<T>(out, table, ids, cols);                                                                 \
  }                                                                                                          \
  extern "C" __global__ void write_kv_##S(T* cache, const T* src, int seq, int start, int kvStride, int cols,  \
                                          const int* starts) { pdl_start();                                               \
    write_kv<T>(cache, src, seq, start, kvStride, cols, starts);                                             \
  }
FOR_EACH_DTYPE(DEF_EMBEDDING)
