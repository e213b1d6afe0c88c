// Quantized Linear weights on the device (laid out by src/tensor/cuda/quant-linear.ts), shared by
// qgemv.cu (small M) and qgemm.cu (large M).
//
// Formats (one byte or one nibble per weight, row-major [Np, rowBytes], Np = N rounded up to 16):
//   QFMT_FP8  E4M3 bytes
//   QFMT_S8   int8 bytes (pack-quantized 8-bit weights are stored as q = u − 128 too)
//   QFMT_U4   4-bit, stored u = q + 8, 8 per 32-bit word, value i in bits [4i, 4i + 4)
// A row holds Kp = K rounded up to a whole number of 64-byte chunks (64 columns of 8-bit, 128 of
// 4-bit); columns past K are zero bytes. Inside each chunk the 16 words are interleaved: stored word
// p = 4t + u holds the chunk's word t + 4u, so that lane t of a quad loads its words t, t+4, t+8, t+12
// with one 16-byte load and the four lanes of a quad together cover 16 consecutive words per u.
// Scales are f32 [Np, G] (G groups per row, 1 for per-channel and per-tensor), zero points int32
// [Np, G] (signed, absent when symmetric); with act-order, perm[j] is the original column of stored
// column j (columns sorted by group).
#pragma once
#include "common.cuh"

#define QFMT_FP8 0
#define QFMT_S8 1
#define QFMT_U4 2

// Columns per 32-bit word and per 64-byte chunk.
template <int FMT> struct QFmt {
  static constexpr int KW = FMT == QFMT_U4 ? 8 : 4;
  static constexpr int CK = 16 * KW;
};

// Stored word index (within a chunk) of original word w, and its inverse.
__device__ __forceinline__ int qword_stored(int w) { return 4 * (w & 3) + (w >> 2); }
__device__ __forceinline__ int qword_original(int p) { return (p >> 2) + 4 * (p & 3); }

// A 16-byte load of streamed weight bytes: read-only, not kept in L1.
__device__ __forceinline__ uint4 ld_stream(const unsigned char* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

// --- activation quantization, as compressed-tensors computes it ----------------------------------
// v = f32(x / s) (IEEE division), then fp8: RNE to E4M3 saturated to ±448; int8: round half to even
// of clamp(v, -128, 127). Dynamic scale s = f32(absmax / half), half = 448 or 127.5; 0 → 2^-23.

constexpr float QEPS = 1.1920928955078125e-7f;  // 2^-23

__device__ __forceinline__ float qdyn_scale(float absmax, int fp8) {
  const float s = __fdiv_rn(absmax, fp8 ? 448.f : 127.5f);
  return s == 0.f ? QEPS : s;
}

// Per-token scales of x [M ≤ 8, K] into sx[0..M), computed by the whole block: the static scale, or
// qdyn_scale of each row's absmax (amaxw: 8 floats of scratch per warp; vec: K % 8 == 0 and x 16-byte
// aligned, read 16 bytes at a time). Ends with __syncthreads().
template <typename T>
__device__ __forceinline__ void qx_token_scales(float* sx, float* amaxw, const T* x, int M, int K, float staticScale, int fp8, int vec) {
  const int tid = threadIdx.x, nt = blockDim.x;
  if (staticScale > 0.f) {
    if (tid < M) sx[tid] = staticScale;
  } else {
    const int lane = tid & 31, warp = tid >> 5, nw = nt >> 5;
    for (int m = 0; m < M; ++m) {
      const T* xr = x + (long long)m * K;
      float a = 0.f;
      if (vec) {
        // 16-byte loads: an eighth of the scalar loop's load instructions.
#pragma unroll 2
        for (int j = tid; j < K / 8; j += nt) {
          const uint4 raw = reinterpret_cast<const uint4*>(xr)[j];
          const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
          for (int i = 0; i < 8; ++i) a = fmaxf(a, fabsf(to_float(e[i])));
        }
      } else {
        for (int k = tid; k < K; k += nt) a = fmaxf(a, fabsf(to_float(xr[k])));
      }
      a = warp_max(a);
      if (lane == 0) amaxw[warp * 8 + m] = a;
    }
    __syncthreads();
    if (tid < M) {
      float a = 0.f;
      for (int w = 0; w < nw; ++w) a = fmaxf(a, amaxw[w * 8 + tid]);
      sx[tid] = qdyn_scale(a, fp8);
    }
  }
  __syncthreads();
}

// Two f32 → two E4M3 bytes (lo in bits 0-7, hi in bits 8-15), RNE, saturated to ±448.
__device__ __forceinline__ unsigned e4m3x2(float lo, float hi) {
#if __CUDA_ARCH__ >= 890
  unsigned short r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return 0u;  // the host never selects fp8 below sm_89
#endif
}

__device__ __forceinline__ unsigned s8_byte(float v) {
  return (unsigned)(__float2int_rn(fminf(fmaxf(v, -128.f), 127.f)) & 0xff);
}

// 8 values (v[i] = x[i] / s) → 8 bytes of codes, byte i = code i.
__device__ __forceinline__ uint2 quant8(const float* v, int fp8) {
  uint2 r;
  if (fp8) {
    r.x = e4m3x2(v[0], v[1]) | (e4m3x2(v[2], v[3]) << 16);
    r.y = e4m3x2(v[4], v[5]) | (e4m3x2(v[6], v[7]) << 16);
  } else {
    r.x = s8_byte(v[0]) | (s8_byte(v[1]) << 8) | (s8_byte(v[2]) << 16) | (s8_byte(v[3]) << 24);
    r.y = s8_byte(v[4]) | (s8_byte(v[5]) << 8) | (s8_byte(v[6]) << 16) | (s8_byte(v[7]) << 24);
  }
  return r;
}

// Codes of columns [8j, 8j + 8) of the x row xr (one 16-byte load; zeros past K), byte i = column 8j + i.
template <typename T>
__device__ __forceinline__ uint2 qx_codes8(const T* xr, int j, int K, float s, int fp8) {
  float v[8];
  if (8 * j < K) {
    const uint4 raw = reinterpret_cast<const uint4*>(xr)[j];
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = __fdiv_rn(to_float(e[i]), s);
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = 0.f;
  }
  return quant8(v, fp8);
}

// Code of column k of the x row xr (0 past K).
template <typename T>
__device__ __forceinline__ unsigned qx_code(const T* xr, int k, int K, float s, int fp8) {
  if (k >= K) return 0u;
  const float v = __fdiv_rn(to_float(xr[k]), s);
  return fp8 ? (e4m3x2(v, 0.f) & 0xffu) : s8_byte(v);
}

// --- weights to f16 pairs (exact) ------------------------------------------------------------------

// Two E4M3 bytes (lo, hi of a 16-bit value) → f16x2.
__device__ __forceinline__ unsigned e4m3x2_to_f16x2(unsigned two) {
#if __CUDA_ARCH__ >= 890
  unsigned r;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"((unsigned short)two));
  return r;
#else
  return 0u;
#endif
}

__device__ __forceinline__ unsigned f16x2_sub(unsigned a, unsigned b) {
  unsigned r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

__device__ __forceinline__ unsigned f16x2_of(float lo, float hi) {
  unsigned r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

__device__ __forceinline__ unsigned lop3_and_or(unsigned a, unsigned b, unsigned c) {
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(b), "r"(c));  // (a & b) | c
  return r;
}

// 4 int8 bytes (signed) → f16x2 pairs (b0, b1) and (b2, b3) of (1024 + 128 + q); subtract the bias.
__device__ __forceinline__ void s8x4_to_f16x2(unsigned w, unsigned bias, unsigned& lo, unsigned& hi) {
  const unsigned u = w ^ 0x80808080u;  // q + 128
  lo = f16x2_sub(__byte_perm(u, 0x64646464u, 0x4140), bias);
  hi = f16x2_sub(__byte_perm(u, 0x64646464u, 0x4342), bias);
}

// 8 nibbles → four f16x2 pairs (n0, n4), (n1, n5), (n2, n6), (n3, n7) of (1024 + u); bias subtracted.
__device__ __forceinline__ void u4x8_to_f16x2(unsigned w, unsigned bias, unsigned* p) {
  p[0] = f16x2_sub(lop3_and_or(w, 0x000f000fu, 0x64006400u), bias);
  p[1] = f16x2_sub(lop3_and_or(w >> 4, 0x000f000fu, 0x64006400u), bias);
  p[2] = f16x2_sub(lop3_and_or(w >> 8, 0x000f000fu, 0x64006400u), bias);
  p[3] = f16x2_sub(lop3_and_or(w >> 12, 0x000f000fu, 0x64006400u), bias);
}

// Position of column i (0..7) of an 8-column group in the order the U4 mma pairs read them:
// [x0, x4, x1, x5, x2, x6, x3, x7].
__device__ __forceinline__ int u4_pair_pos(int i) { return (i & 3) * 2 + (i >> 2); }

// f32 → f16 bits, clamped to ±65504 first (an f16 infinity times a zero weight would give NaN).
__device__ __forceinline__ u16 f16_sat(float v) {
  return from_float<f16_t>(fminf(fmaxf(v, -65504.f), 65504.f)).x;
}

// E4M3 byte → f32 (exact).
__device__ __forceinline__ float e4m3_to_float(unsigned byte) {
  const unsigned h = e4m3x2_to_f16x2(byte & 0xffu);
  return to_float(f16_t{(u16)(h & 0xffffu)});
}
