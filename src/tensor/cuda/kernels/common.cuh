// Shared by every kernel family: storage types, conversions, reductions. No CUDA headers are
// included (NVRTC compiles these without an include path): bf16/f16 are 16-bit structs converted
// with PTX. Kernels are instantiated per storage type with extern "C" names ending _f32/_bf16/_f16.
#pragma once

typedef unsigned short u16;
struct bf16_t { u16 x; };
struct f16_t { u16 x; };

#define INF_F __int_as_float(0x7f800000)
#define FULL_MASK 0xffffffffu

// Waits for the preceding grid's results when this kernel was launched with programmatic dependent
// launch (sm_90+); a no-op otherwise. Entry points added to a family that may be launched that way
// call it before reading any input.
#if __CUDA_ARCH__ >= 900
#define GRID_DEPENDENCY_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#else
#define GRID_DEPENDENCY_WAIT() ((void)0)
#endif

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16_t v) { return __uint_as_float(((unsigned)v.x) << 16); }
__device__ __forceinline__ float to_float(f16_t v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
  return f;
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16_t from_float<bf16_t>(float v) {
  bf16_t r;
#if __CUDA_ARCH__ >= 800
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.x) : "f"(v));
#else
  unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    r.x = (u16)((u >> 16) | 0x40u);  // quiet NaN
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    r.x = (u16)(u >> 16);
  }
#endif
  return r;
}
template <> __device__ __forceinline__ f16_t from_float<f16_t>(float v) {
  f16_t r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.x) : "f"(v));
  return r;
}

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // a previous call may still be reading `partial`
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return warp_sum(lane < warps ? partial[lane] : 0.f);
}

// LayerNorm's row statistics over the block (two passes: mean, then the centered variance): returns
// r = 1/sqrt(var + eps) and sets mean. Shared by the forward (norm.cu) and the backward (norm_backward.cu).
template <typename T>
__device__ __forceinline__ float row_mean_rstd(const T* xr, int cols, float eps, float& mean) {
  float s = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) s += to_float(xr[c]);
  mean = block_sum(s) / cols;
  float sq = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float d = to_float(xr[c]) - mean;
    sq += d * d;
  }
  return 1.f / sqrtf(block_sum(sq) / cols + eps);
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

// f64 sum over the block, returned to every thread (warp sums, then a warp sum of the partials).
__device__ __forceinline__ double block_sum_f64(double v) {
  __shared__ double partial[32];
  v = warp_sum_f64(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  return warp_sum_f64(lane < warps ? partial[lane] : 0.0);
}

// f64 sum over the block with the warps' partials added in warp order (deterministic for a fixed
// block size), valid in thread 0; `partial` holds ≥ 32 doubles of shared memory.
__device__ __forceinline__ double block_sum_f64(double v, double* partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum_f64(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0) for (int w = 0; w < warps; w++) s += partial[w];
  return s;
}

// Programmatic dependent launch (see kernels.ts): in a family marked `// llmopt:pdl`, every kernel
// calls pdl_start() first — or pdl_launch(), then only work that reads nothing the previous kernel
// writes (weight prefetch), then pdl_wait() — before it reads any input or writes any output. Every
// block reaches pdl_wait() before it returns. No-ops before sm_90 and when launched without PDL.
__device__ __forceinline__ void pdl_launch() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_start() {
  pdl_launch();
  pdl_wait();
}

// 16-byte vectors of a storage type: elements per vector, and their conversion to f32.
template <typename T> struct Vec;
template <> struct Vec<float> { static constexpr int N = 4; };
template <> struct Vec<bf16_t> { static constexpr int N = 8; };
template <> struct Vec<f16_t> { static constexpr int N = 8; };

__device__ __forceinline__ void unpack16(const uint4& u, float* f, const float*) {
  f[0] = __uint_as_float(u.x); f[1] = __uint_as_float(u.y); f[2] = __uint_as_float(u.z); f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack16(const uint4& u, float* f, const bf16_t*) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}
__device__ __forceinline__ void unpack16(const uint4& u, float* f, const f16_t*) {
  const unsigned w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = to_float(f16_t{(u16)(w[i] & 0xffffu)});
    f[2 * i + 1] = to_float(f16_t{(u16)(w[i] >> 16)});
  }
}

// Float min/max atomics through the integer orderings: non-negative floats order as ints, negative
// ones reversed as unsigned. v must not be NaN or −0 (the callers normalize −0 to +0).
__device__ __forceinline__ void atomic_min_f32(float* a, float v) {
  if (v >= 0.f) atomicMin((int*)a, __float_as_int(v));
  else atomicMax((unsigned*)a, __float_as_uint(v));
}
__device__ __forceinline__ void atomic_max_f32(float* a, float v) {
  if (v >= 0.f) atomicMax((int*)a, __float_as_int(v));
  else atomicMin((unsigned*)a, __float_as_uint(v));
}

// Instantiates `MACRO(T, suffix)` for every storage type.
#define FOR_EACH_DTYPE(MACRO) MACRO(float, f32) MACRO(bf16_t, bf16) MACRO(f16_t, f16)
