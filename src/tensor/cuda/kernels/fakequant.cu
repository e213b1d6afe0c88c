// Fake quantization of rows in place (Device.fakeQuantRows), bit-exact with the cpu reference
// (src/tensor/cpu/fake-quant.ts): v = f32(x / s) (torch's float32 division; s may be an f64 static
// scale), q · s formed in f64 and rounded once, as JavaScript does. One block per row.
//   int8: q = round_half_even(clamp(v, -128, 127))
//   fp8:  q = e4m3(clamp(v, -448, 448))   (RNE on the f32 bits, as torch's cast)
// Dynamic (scale <= 0 passed): s = f32(absmax(row) / half), a zero row gets 2^-23.
#include "common.cuh"
// llmopt:pdl

// E4M3 value of f32 `v` (|v| <= 448 after the clamp), rounded to nearest even.
__device__ __forceinline__ float e4m3_round(float v) {
  const unsigned u = __float_as_uint(v);
  const unsigned sign = u & 0x80000000u;
  const unsigned a = u & 0x7fffffffu;
  float r;
  if (a < 0x3c800000u) {
    // below 2^-6: multiples of 2^-9 (x * 512 is exact in f32)
    r = rintf(__uint_as_float(a) * 512.f) * (1.f / 512.f);
  } else {
    const unsigned mant = a & 0x7fffffu;
    int h = (int)((((a >> 23) - 120u) << 3) | (mant >> 20));
    const unsigned rest = mant & 0xfffffu;
    if (rest > 0x80000u || (rest == 0x80000u && (h & 1))) h += 1;
    const int e = (h >> 3) & 0xf, m = h & 7;
    r = (e == 0) ? m * (1.f / 512.f) : ldexpf((float)(8 + m), e - 10);
  }
  return sign ? -r : r;
}

template <typename T>
__device__ __forceinline__ void fake_quant_rows(T* x, int cols, int fp8, double staticScale) {
  T* row = x + (long long)blockIdx.x * cols;
  const double half = fp8 ? 448.0 : 127.5;
  double scale = staticScale;
  if (scale <= 0.0) {
    float amax = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) amax = fmaxf(amax, fabsf(to_float(row[c])));
    amax = warp_max(amax);
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) partial[warp] = amax;
    __syncthreads();
    amax = warp_max(lane < warps ? partial[lane] : 0.f);
    float s = (float)((double)amax / half);
    if (s == 0.f) s = 1.1920928955078125e-7f;  // 2^-23
    scale = (double)s;
  }
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    // the quotient rounded to f32, as torch divides (and the cpu reference: Math.fround(x / s))
    const float v = (float)((double)to_float(row[c]) / scale);
    float q;
    if (fp8) {
      q = e4m3_round(v > 448.f ? 448.f : v < -448.f ? -448.f : v);
    } else {
      q = rintf(v < -128.f ? -128.f : v > 127.f ? 127.f : v);
    }
    row[c] = from_float<T>((float)((double)q * scale));
  }
}

#define DEF_FAKE_QUANT(T, S)                                                                             \
  extern "C" __global__ void fake_quant_rows_##S(T* x, int cols, int fp8, double staticScale) { pdl_start();         \
    fake_quant_rows<T>(x, cols, fp8, staticScale);                                                       \
  }
FOR_EACH_DTYPE(DEF_FAKE_QUANT)
