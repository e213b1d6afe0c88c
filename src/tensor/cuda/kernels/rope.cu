// Rotary position embedding, rotate-half layout (GPT-NeoX / HF Llama), in place.
// x is [rows, nHeads, headDim]; cos/sin are [maxPos, rotaryDim/2]; row r uses position pos[r].
// For i < rotaryDim/2: (x[i], x[i+half]) <- (x[i] cos - x[i+half] sin, x[i+half] cos + x[i] sin).
#include "common.cuh"

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

#define DEF_ROPE(T, S)                                                                                          \
  extern "C" __global__ void rope_##S(T* x, const int* pos, const T* cosT, const T* sinT, int nHeads, int headDim, \
                                      int rotaryDim) {                                                          \
    rope<T>(x, pos, cosT, sinT, nHeads, headDim, rotaryDim);                                                    \
  }
FOR_EACH_DTYPE(DEF_ROPE)
