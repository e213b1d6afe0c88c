// Quantized Linears at large M (prefill, eval), around a cuBLASLt GEMM (see quant-linear.ts):
//   W8A8 (FP8 / INT8):  quantize_act (x → codes in the weights' column order + per-token scales),
//                        cuBLASLt FP8×FP8→f32 or INT8×INT8→INT32 on the stored weights, then
//                        rescale (acc · sx[m] · sw[n] + bias[n] → the dtype).
//   weights only:        dequant_weight into a bf16/f16 scratch [N, K] (original column order), then
//                        the ordinary GEMM (what exllama does at large M: the GEMM is compute-bound,
//                        the dequantized copy costs one pass over the weights).
#include "quant.cuh"

// Byte position of column k in a row of 8-bit codes laid out as the weights (interleaved chunks).
__device__ __forceinline__ int qcol8_pos(int k) {
  return (k & ~63) | (qword_stored((k & 63) >> 2) << 2) | (k & 3);
}

// One block per row m: q[m, :] = codes of x[m, :] / s (columns [K, Kp) zero), sx[m] = s. Static scale
// when staticScale > 0, else s = absmax(row) / half (compressed-tensors' dynamic per-token scale).
template <typename T>
__device__ __forceinline__ void quantize_act(unsigned char* q, float* sx, const T* x, int K, int Kp, int fp8, float staticScale) {
  const T* row = x + (long long)blockIdx.x * K;
  unsigned char* out = q + (long long)blockIdx.x * Kp;
  float s = staticScale;
  if (!(s > 0.f)) {
    __shared__ float partial[32];
    float a = 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) a = fmaxf(a, fabsf(to_float(row[k])));
    a = warp_max(a);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) partial[warp] = a;
    __syncthreads();
    a = warp_max(lane < warps ? partial[lane] : 0.f);
    s = qdyn_scale(a, fp8);
  }
  if (threadIdx.x == 0) sx[blockIdx.x] = s;
  // Each thread quantizes one 4-column word and stores it where the weights keep that word.
  for (int j = threadIdx.x; j < Kp / 4; j += blockDim.x) {
    unsigned word = 0u;
#pragma unroll
    for (int i = 0; i < 4; ++i) word |= qx_code(row, 4 * j + i, K, s, fp8) << (8 * i);
    *reinterpret_cast<unsigned*>(out + qcol8_pos(4 * j)) = word;
  }
}

// out[m, n] = acc[m, n] · sx[m] · sw[n] (+ bias[n]) for n < N; acc rows are Np apart. grid (x: n, y: m).
template <typename T, typename A>
__device__ __forceinline__ void rescale(T* out, const A* acc, const float* sx, const float* sw, const T* bias, int N, int Np) {
  const int m = blockIdx.y;
  const float s = sx[m];
  for (int n = blockIdx.x * blockDim.x + threadIdx.x; n < N; n += gridDim.x * blockDim.x) {
    const float v = (float)acc[(long long)m * Np + n] * s * sw[n];
    out[(long long)m * N + n] = from_float<T>(bias != nullptr ? v + to_float(bias[n]) : v);
  }
}

// wd[n, col] = (q − zero) · scale for every stored word (grid-stride over N · words per row), col =
// the original column (perm: act-order). A word's columns are in one group (groups are whole words).
template <typename T, int FMT>
__device__ __forceinline__ void dequant_weight(T* wd, const unsigned char* w, const float* scale, const int* zero, const int* perm, int N,
                                               int K, int rowBytes, int G, int groupSize) {
  constexpr int KW = QFmt<FMT>::KW, CK = QFmt<FMT>::CK;
  const int words = rowBytes / 4;
  const long long total = (long long)N * words;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total; idx += (long long)gridDim.x * blockDim.x) {
    const int n = (int)(idx / words), p = (int)(idx % words);
    const int k0 = (p >> 4) * CK + qword_original(p & 15) * KW;
    if (k0 >= K) continue;
    const unsigned word = reinterpret_cast<const unsigned*>(w + (long long)n * rowBytes)[p];
    const int gi = n * G + (G > 1 ? k0 / groupSize : 0);
    const float s = scale[gi];
    const float z = zero != nullptr ? (float)zero[gi] : 0.f;
    T* row = wd + (long long)n * K;
#pragma unroll
    for (int i = 0; i < KW; ++i) {
      const int k = k0 + i;
      if (k >= K) break;
      float q;
      if constexpr (FMT == QFMT_FP8) q = e4m3_to_float((word >> (8 * i)) & 0xffu);
      else if constexpr (FMT == QFMT_S8) q = (float)(signed char)((word >> (8 * i)) & 0xffu);
      else q = (float)(int)((word >> (4 * i)) & 0xfu) - 8.f;
      row[perm != nullptr ? perm[k] : k] = from_float<T>((q - z) * s);
    }
  }
}

#define DEF_QGEMM(T, S)                                                                                                         \
  extern "C" __global__ void quantize_act_##S(unsigned char* q, float* sx, const T* x, int K, int Kp, int fp8, float staticScale) { \
    quantize_act<T>(q, sx, x, K, Kp, fp8, staticScale);                                                                        \
  }                                                                                                                             \
  extern "C" __global__ void rescale_f32_##S(T* out, const float* acc, const float* sx, const float* sw, const T* bias, int N, int Np) { \
    rescale<T, float>(out, acc, sx, sw, bias, N, Np);                                                                           \
  }                                                                                                                             \
  extern "C" __global__ void rescale_i32_##S(T* out, const int* acc, const float* sx, const float* sw, const T* bias, int N, int Np) { \
    rescale<T, int>(out, acc, sx, sw, bias, N, Np);                                                                             \
  }                                                                                                                             \
  extern "C" __global__ void dequant_weight_fp8_##S(T* wd, const unsigned char* w, const float* scale, const int* zero,          \
                                                    const int* perm, int N, int K, int rowBytes, int G, int groupSize) {       \
    dequant_weight<T, QFMT_FP8>(wd, w, scale, zero, perm, N, K, rowBytes, G, groupSize);                                        \
  }                                                                                                                             \
  extern "C" __global__ void dequant_weight_s8_##S(T* wd, const unsigned char* w, const float* scale, const int* zero,           \
                                                   const int* perm, int N, int K, int rowBytes, int G, int groupSize) {        \
    dequant_weight<T, QFMT_S8>(wd, w, scale, zero, perm, N, K, rowBytes, G, groupSize);                                         \
  }                                                                                                                             \
  extern "C" __global__ void dequant_weight_u4_##S(T* wd, const unsigned char* w, const float* scale, const int* zero,           \
                                                   const int* perm, int N, int K, int rowBytes, int G, int groupSize) {        \
    dequant_weight<T, QFMT_U4>(wd, w, scale, zero, perm, N, K, rowBytes, G, groupSize);                                         \
  }
DEF_QGEMM(bf16_t, bf16)
DEF_QGEMM(f16_t, f16)
