// Training (distill) elementwise and gather/scatter kernels: fill, scale, the backward of SwiGLU,
// GELU-tanh and rotary embedding, bias gradients and the embedding gradient. f32 math, one rounding
// at the store; the f32 gradient outputs (dTable, db) accumulate in f32.
#include "common.cuh"
// llmopt:pdl

#define GRID_STRIDE(i, n) \
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); i += (long long)gridDim.x * blockDim.x)

template <typename T>
__device__ __forceinline__ void fill(T* x, float value, long long n) {
  const T v = from_float<T>(value);
  GRID_STRIDE(i, n) x[i] = v;
}

template <typename T>
__device__ __forceinline__ void scale(T* x, float s, long long n) {
  GRID_STRIDE(i, n) x[i] = from_float<T>(to_float(x[i]) * s);
}

// act = silu(g) u:  dUp = dAct silu(g),  dGate = dAct u sigma(g) (1 + g (1 - sigma(g))).
// Every element is read before it is written, so dGate/dUp may be gate/up themselves.
template <typename T>
__device__ __forceinline__ void silu_mul_backward(T* dGate, T* dUp, const T* dAct, const T* gate, const T* up, long long n) {
  GRID_STRIDE(i, n) {
    const float g = to_float(gate[i]), u = to_float(up[i]), da = to_float(dAct[i]);
    const float s = 1.f / (1.f + expf(-g));
    dUp[i] = from_float<T>(da * g * s);
    dGate[i] = from_float<T>(da * u * s * (1.f + g * (1.f - s)));
  }
}

// y = 0.5 x (1 + tanh a), a = c (x + 0.044715 x^3):  dy/dx = 0.5 (1 + tanh a) + 0.5 x (1 - tanh^2 a) c (1 + 3 * 0.044715 x^2)
template <typename T>
__device__ __forceinline__ void gelu_tanh_backward(T* dx, const T* dy, const T* x, long long n) {
  const float c = 0.7978845608028654f;
  GRID_STRIDE(i, n) {
    const float v = to_float(x[i]);
    const float th = tanhf(c * (v + 0.044715f * v * v * v));
    dx[i] = from_float<T>(to_float(dy[i]) * (0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * c * (1.f + 3.f * 0.044715f * v * v)));
  }
}

// The transpose of rope (rotation by -theta), in place on dx [rows, nHeads, headDim]; row r uses pos[r]:
// (d1, d2) <- (d1 cos + d2 sin, d2 cos - d1 sin) for i < rotaryDim / 2.
template <typename T>
__device__ __forceinline__ void rope_backward(T* dx, const int* pos, const T* cosT, const T* sinT, int nHeads, int headDim, int rotaryDim) {
  const int half = rotaryDim / 2;
  const long long p = pos[blockIdx.x];
  T* row = dx + (long long)blockIdx.x * nHeads * headDim;
  for (int idx = threadIdx.x; idx < nHeads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    T* head = row + h * headDim;
    const float c = to_float(cosT[p * half + i]), s = to_float(sinT[p * half + i]);
    const float d1 = to_float(head[i]), d2 = to_float(head[i + half]);
    head[i] = from_float<T>(d1 * c + d2 * s);
    head[i + half] = from_float<T>(d2 * c - d1 * s);
  }
}

// db[c] += sum_r dy[r, c]. Block (32, 8) owns 32 columns; thread row y sums rows y, y + 8, ... in f32,
// then the 8 partials are added in a fixed order: deterministic.
template <typename T>
__device__ __forceinline__ void bias_grad(float* db, const T* dy, int rows, int cols) {
  __shared__ float part[8][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < cols)
    for (int r = threadIdx.y; r < rows; r += 8) s += to_float(dy[(long long)r * cols + c]);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
#pragma unroll
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    db[c] += t;
  }
}

// dTable[id, :] += dOut[r, :] for every row r with ids[r] = id. The host groups rows by id (counting
// sort, rows in increasing order): block u takes unique id uniq[u] and adds rows rowsOf[start[u] ..
// start[u + 1]) in that order, one f32 rounding per add, exactly as the cpu reference loops. No atomics:
// the result is deterministic and equals the cpu's in f32.
template <typename T>
__device__ __forceinline__ void embedding_backward(float* dTable, const T* dOut, const int* uniq, const int* start,
                                                   const int* rowsOf, int cols) {
  const int u = blockIdx.x;
  const int id = uniq[u], s0 = start[u], s1 = start[u + 1];
  float* dst = dTable + (long long)id * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    float acc = dst[c];
    for (int s = s0; s < s1; ++s) acc += to_float(dOut[(long long)rowsOf[s] * cols + c]);
    dst[c] = acc;
  }
}

#define DEF_TRAIN_ELEMENTWISE(T, S)                                                                                   \
  extern "C" __global__ void fill_##S(T* x, float value, long long n) { pdl_start(); fill<T>(x, value, n); }                       \
  extern "C" __global__ void scale_##S(T* x, float s, long long n) { pdl_start(); scale<T>(x, s, n); }                             \
  extern "C" __global__ void silu_mul_backward_##S(T* dGate, T* dUp, const T* dAct, const T* gate, const T* up,       \
                                                   long long n) { pdl_start();                                                     \
    silu_mul_backward<T>(dGate, dUp, dAct, gate, up, n);                                                              \
  }                                                                                                                   \
  extern "C" __global__ void gelu_tanh_backward_##S(T* dx, const T* dy, const T* x, long long n) { pdl_start();                    \
    gelu_tanh_backward<T>(dx, dy, x, n);                                                                              \
  }                                                                                                                   \
  extern "C" __global__ void rope_backward_##S(T* dx, const int* pos, const T* cosT, const T* sinT, int nHeads,       \
                                               int headDim, int rotaryDim) { pdl_start();                                          \
    rope_backward<T>(dx, pos, cosT, sinT, nHeads, headDim, rotaryDim);                                                \
  }                                                                                                                   \
  extern "C" __global__ void bias_grad_##S(float* db, const T* dy, int rows, int cols) { pdl_start(); bias_grad<T>(db, dy, rows, cols); } \
  extern "C" __global__ void embedding_backward_##S(float* dTable, const T* dOut, const int* uniq, const int* start,   \
                                                    const int* rowsOf, int cols) { pdl_start();                                    \
    embedding_backward<T>(dTable, dOut, uniq, start, rowsOf, cols);                                                   \
  }
FOR_EACH_DTYPE(DEF_TRAIN_ELEMENTWISE)
