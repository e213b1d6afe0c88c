// Weight quantization of quantization jobs (QuantJobOps, quant-job-ops.ts), f32 weights:
//   observers  group_minmax, qparams_minmax, mse_errors → mse_improved → (host: patience) → mse_select
//   RTN        rtn_quantize_<dt>
//   GPTQ       gather_sym (act-order + padding), gptq_damp (dead columns, dampening), the blocked
//              Cholesky's diagonal step chol_diag (the rest are cuBLASLt GEMMs), tri_inv_diag,
//              copy_block, zero_upper, gather_cols, and gptq_block (the in-block column loop)
// Value math mirrors src/tensor/quant-math.ts: x / scale rounded to f32, the zero point added in
// f64, clamp, round half to even (int) or the torch E4M3 cast (fp8); scales from (min, max) in f64
// and rounded once to the scale dtype, as compressed-tensors' calculate_qparams.
#include "common.cuh"
// llmopt:pdl

// ---- value math --------------------------------------------------------------------------------

struct QRange {
  int qmin, qmax, fp8;
};

// E4M3 code of f32 v with |v| ≤ 448 (clamped by the caller): torch's RNE cast (io/dtypes.ts).
__device__ __forceinline__ int e4m3_code(float v) {
  const unsigned u = __float_as_uint(v);
  const unsigned sign = (u >> 24) & 0x80u;
  const unsigned a = u & 0x7fffffffu;
  if (a >= 0x43f00000u) return (int)(sign | 0x7fu);
  if (a < 0x3c800000u) return (int)(sign | (unsigned)rintf(fabsf(v) * 512.f));  // multiples of 2^-9
  const unsigned mant = a & 0x7fffffu;
  unsigned h = (((a >> 23) - 120u) << 3) | (mant >> 20);
  const unsigned rest = mant & 0xfffffu;
  if (rest > 0x80000u || (rest == 0x80000u && (h & 1u))) h += 1u;
  return (int)(sign | h);
}

__device__ __forceinline__ float e4m3_value(int b) {
  const int e = (b >> 3) & 0xf, m = b & 7;
  if (e == 15 && m == 7) return __int_as_float(0x7fc00000);
  const float v = e == 0 ? (float)m * (1.f / 512.f) : ldexpf((float)(8 + m), e - 10);
  return (b & 0x80) ? -v : v;
}

// quantizeValue: the stored code of x.
__device__ __forceinline__ int quantize_value(float x, float scale, int zp, QRange r) {
  const float v = x / scale;
  if (r.fp8) return e4m3_code(v > 448.f ? 448.f : v < -448.f ? -448.f : v);
  double s = (double)v + (double)zp;
  s = s < (double)r.qmin ? (double)r.qmin : s > (double)r.qmax ? (double)r.qmax : s;
  return (int)rint(s);
}

// dequantizeValue, rounded to f32 (the exact product rounded once).
__device__ __forceinline__ float dequantize_value(int code, float scale, int zp, QRange r) {
  return r.fp8 ? e4m3_value(code) * scale : (float)(code - zp) * scale;
}

// dequantizeValue in f64 (exact: a few-bit value times an f32 scale), as the MSE observer sums it.
__device__ __forceinline__ double dequantize_value_f64(int code, float scale, int zp, QRange r) {
  return r.fp8 ? (double)e4m3_value(code) * (double)scale : (double)(code - zp) * (double)scale;
}

// Scale dtypes: 0 = F32, 1 = BF16, 2 = F16.
__device__ __forceinline__ float round_to_dtype(double x, int dtype) {
  const float f = (float)x;
  if (dtype == 1) return to_float(from_float<bf16_t>(f));
  if (dtype == 2) return to_float(from_float<f16_t>(f));
  return f;
}

__device__ __forceinline__ float dtype_eps(int dtype) {
  return dtype == 1 ? 0.0078125f : dtype == 2 ? 0.0009765625f : 1.1920928955078125e-7f;
}

// calculateQParam(min, max): scale and zero point.
__device__ __forceinline__ void calc_qparam(double mn, double mx, QRange r, int symmetric, int scaleDtype, float* scale, int* zp) {
  const double lo = mn < 0.0 ? mn : 0.0;
  const double hi = mx > 0.0 ? mx : 0.0;
  const double qmin = r.qmin, qmax = r.qmax;
  float s;
  int z = 0;
  if (symmetric) {
    const double a = -lo > hi ? -lo : hi;
    s = round_to_dtype(a / ((qmax - qmin) / 2.0), scaleDtype);
  } else {
    s = round_to_dtype((hi - lo) / (qmax - qmin), scaleDtype);
    if (s != 0.f) {
      double t = qmin - lo / (double)s;
      t = t < qmin ? qmin : t > qmax ? qmax : t;
      z = (int)rint(t);
    }
  }
  if (s == 0.f) s = dtype_eps(scaleDtype);
  *scale = s;
  *zp = z;
}

// paramIndex: strategy 0 = tensor, 1 = channel, 2 = group.
__device__ __forceinline__ int param_index(int strategy, int r, int c, int groupSize, int groupsPerRow) {
  return strategy == 0 ? 0 : strategy == 1 ? r : r * groupsPerRow + c / groupSize;
}

// ---- observers ---------------------------------------------------------------------------------
// Group k is the contiguous run w[k·len, (k+1)·len). Blocks: (k = blockIdx.x, chunk blockIdx.y).

extern "C" __global__ void group_minmax(const float* w, long long len, int chunk, float* mn, float* mx) { pdl_start();
  const long long k = blockIdx.x;
  const long long start = k * len + (long long)blockIdx.y * chunk;
  const long long end = start + chunk < (k + 1) * len ? start + chunk : (k + 1) * len;
  float lo = INF_F, hi = -INF_F;
  for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
    const float v = w[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  __shared__ float plo[32], phi[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(FULL_MASK, lo, o));
    hi = fmaxf(hi, __shfl_xor_sync(FULL_MASK, hi, o));
  }
  if (lane == 0) {
    plo[warp] = lo;
    phi[warp] = hi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 1; i < warps; i++) {
      lo = fminf(lo, plo[i]);
      hi = fmaxf(hi, phi[i]);
    }
    if (lo <= hi) {
      atomic_min_f32(&mn[k], lo + 0.f);
      atomic_max_f32(&mx[k], hi + 0.f);
    }
  }
}

extern "C" __global__ void qparams_minmax(const float* mn, const float* mx, int count, int qmin, int qmax, int fp8, int symmetric,
                                          int scaleDtype, float* scale, int* zp) { pdl_start();
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= count) return;
  const QRange r = {qmin, qmax, fp8};
  calc_qparam(mn[k], mx[k], r, symmetric, scaleDtype, &scale[k], &zp[k]);
}

// partial[(c·count + k)·splits + chunk] = Σ |fake_quant(x) − x|^norm over the block's chunk of group
// k, for each shrink candidate c: p = 1 − c/steps on (p·min, p·max).
extern "C" __global__ void mse_errors(const float* w, long long len, int chunk, int splits, const float* mn, const float* mx, int count,
                                      int candidates, int steps, double norm, int qmin, int qmax, int fp8, int symmetric, int scaleDtype,
                                      double* partial) { pdl_start();
  const long long k = blockIdx.x;
  const long long start = k * len + (long long)blockIdx.y * chunk;
  const long long end = start + chunk < (k + 1) * len ? start + chunk : (k + 1) * len;
  const QRange r = {qmin, qmax, fp8};
  __shared__ double scratch[32];
  for (int c = 0; c < candidates; c++) {
    const double p = 1.0 - (double)c / (double)steps;
    float s;
    int z;
    calc_qparam(p * (double)mn[k], p * (double)mx[k], r, symmetric, scaleDtype, &s, &z);
    double err = 0.0;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
      const float x = w[i];
      const double q = dequantize_value_f64(quantize_value(x, s, z, r), s, z, r);
      err += pow(fabs(q - (double)x), norm);
    }
    err = block_sum_f64(err, scratch);
    if (threadIdx.x == 0) partial[((long long)c * count + k) * splits + blockIdx.y] = err;
  }
}

// err[c·count + k] = Σ over chunks; improved[c] = 1 where candidate c lowers some group's best.
extern "C" __global__ void mse_improved(const double* partial, int count, int splits, int candidates, double* err, int* improved) { pdl_start();
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= count) return;
  double best = 1.7976931348623157e308;  // Number.MAX_VALUE
  for (int c = 0; c < candidates; c++) {
    double e = 0.0;
    for (int s = 0; s < splits; s++) e += partial[((long long)c * count + k) * splits + s];
    err[(long long)c * count + k] = e;
    if (e < best) {
      best = e;
      improved[c] = 1;
    }
  }
}

// Per group: the first candidate ≤ last with the least error (initially (1, 0), as the cpu) → qparams.
extern "C" __global__ void mse_select(const double* err, const float* mn, const float* mx, int count, int last, int steps, int qmin, int qmax,
                                      int fp8, int symmetric, int scaleDtype, float* scale, int* zp) { pdl_start();
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= count) return;
  double best = 1.7976931348623157e308, bmin = 1.0, bmax = 0.0;
  for (int c = 0; c <= last; c++) {
    const double e = err[(long long)c * count + k];
    if (e < best) {
      const double p = 1.0 - (double)c / (double)steps;
      best = e;
      bmin = p * (double)mn[k];
      bmax = p * (double)mx[k];
    }
  }
  const QRange r = {qmin, qmax, fp8};
  calc_qparam(bmin, bmax, r, symmetric, scaleDtype, &scale[k], &zp[k]);
}

// ---- round to nearest --------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void rtn_quantize(const float* w, int rows, int cols, const float* scale, const int* zp, int strategy, int groupSize,
                                             int groupsPerRow, QRange r, int* codes, T* deq) {
  const long long n = (long long)rows * cols;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const int row = (int)(i / cols), col = (int)(i % cols);
    const int k = param_index(strategy, row, col, groupSize, groupsPerRow);
    const int code = quantize_value(w[i], scale[k], zp[k], r);
    codes[i] = code;
    deq[i] = from_float<T>(dequantize_value(code, scale[k], zp[k], r));
  }
}

// ---- GPTQ: Hessian preparation -----------------------------------------------------------------
// Matrices are padded to np (a multiple of CHOL_NB) with the identity, so every Cholesky block is
// full and every GEMM pointer aligned; padding changes no value of the n×n part.

#define CHOL_NB 64

// out[i, j] = h[perm[i], perm[j]] for i, j < n, identity elsewhere ([np, np]).
extern "C" __global__ void gather_sym(const float* h, const int* perm, int n, int np, float* out) { pdl_start();
  const long long total = (long long)np * np;
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
    const int i = (int)(t / np), j = (int)(t % np);
    out[t] = (i < n && j < n) ? h[(long long)perm[i] * n + perm[j]] : (i == j ? 1.f : 0.f);
  }
}

// out[i, j] = a[i, j] for i, j < n ([n, n] → [np, np], identity padding), or back (unpad = 1).
extern "C" __global__ void pad_square(const float* a, int n, int np, float* out, int unpad) { pdl_start();
  const long long total = unpad ? (long long)n * n : (long long)np * np;
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
    if (unpad) {
      const int i = (int)(t / n), j = (int)(t % n);
      out[t] = a[(long long)i * np + j];
    } else {
      const int i = (int)(t / np), j = (int)(t % np);
      out[t] = (i < n && j < n) ? a[(long long)i * n + j] : (i == j ? 1.f : 0.f);
    }
  }
}

// One block: dead columns (diagonal 0 → 1, dead[j] = 1), then diag += dampening · mean(diag) over
// the first n columns of a [np, np].
extern "C" __global__ void gptq_damp(float* a, int n, int np, double dampening, unsigned char* dead) { pdl_start();
  __shared__ double partial[32];
  double sum = 0.0;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    float d = a[(long long)j * np + j];
    dead[j] = d == 0.f ? 1 : 0;
    if (d == 0.f) {
      d = 1.f;
      a[(long long)j * np + j] = 1.f;
    }
    sum += (double)d;
  }
  sum = block_sum_f64(sum, partial);
  __shared__ double damp;
  if (threadIdx.x == 0) damp = dampening * sum / (double)n;
  __syncthreads();
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const long long at = (long long)j * np + j;
    a[at] = (float)((double)a[at] + damp);
  }
}

// Inverse of the lower-triangular CHOL_NB × CHOL_NB matrix L (shared, stride CHOL_NB + 1) into Li.
__device__ __forceinline__ void invert_lower_block(const float (*L)[CHOL_NB + 1], float (*Li)[CHOL_NB + 1]) {
  const int j = threadIdx.x;
  if (j < CHOL_NB) {
    for (int i = 0; i < j; i++) Li[i][j] = 0.f;
    Li[j][j] = 1.f / L[j][j];
    for (int i = j + 1; i < CHOL_NB; i++) {
      float s = 0.f;
      for (int t = j; t < i; t++) s += L[i][t] * Li[t][j];
      Li[i][j] = -s / L[i][i];
    }
  }
  __syncthreads();
}

// The diagonal block [k0, k0 + CHOL_NB) of a [np, np] (already updated by the earlier panels):
// factored in place (lower, block's upper part zeroed), its inverse written to inv[k0 .. k0+NB, NB].
// fail[0] = 1 when a pivot is not positive (or NaN); the factorization then continues with pivot 1.
extern "C" __global__ void chol_diag(float* a, int np, int k0, float* inv, int* fail) { pdl_start();
  __shared__ float L[CHOL_NB][CHOL_NB + 1];
  __shared__ float Li[CHOL_NB][CHOL_NB + 1];
  const int tid = threadIdx.x, threads = blockDim.x;
  for (int t = tid; t < CHOL_NB * CHOL_NB; t += threads) {
    const int i = t / CHOL_NB, j = t % CHOL_NB;
    L[i][j] = a[(long long)(k0 + i) * np + k0 + j];
  }
  __syncthreads();
  for (int j = 0; j < CHOL_NB; j++) {
    if (tid == 0) {
      float d = L[j][j];
      if (!(d > 0.f)) {
        fail[0] = 1;
        d = 1.f;
      }
      L[j][j] = sqrtf(d);
    }
    __syncthreads();
    for (int i = j + 1 + tid; i < CHOL_NB; i += threads) L[i][j] /= L[j][j];
    __syncthreads();
    const int m = CHOL_NB - 1 - j;
    for (int t = tid; t < m * m; t += threads) {
      const int i = j + 1 + t / m, k = j + 1 + t % m;
      if (k <= i) L[i][k] -= L[i][j] * L[k][j];
    }
    __syncthreads();
  }
  for (int t = tid; t < CHOL_NB * CHOL_NB; t += threads) {
    const int i = t / CHOL_NB, j = t % CHOL_NB;
    if (j > i) L[i][j] = 0.f;
  }
  __syncthreads();
  invert_lower_block(L, Li);
  for (int t = tid; t < CHOL_NB * CHOL_NB; t += threads) {
    const int i = t / CHOL_NB, j = t % CHOL_NB;
    a[(long long)(k0 + i) * np + k0 + j] = L[i][j];
    inv[(long long)(k0 + i) * CHOL_NB + j] = Li[i][j];
  }
}

// inv[b·NB .. (b+1)·NB, NB] = inverse of the lower-triangular diagonal block b of l [np, np]; block b = blockIdx.x.
extern "C" __global__ void tri_inv_diag(const float* l, int np, float* inv) { pdl_start();
  __shared__ float L[CHOL_NB][CHOL_NB + 1];
  __shared__ float Li[CHOL_NB][CHOL_NB + 1];
  const int k0 = blockIdx.x * CHOL_NB;
  for (int t = threadIdx.x; t < CHOL_NB * CHOL_NB; t += blockDim.x) {
    const int i = t / CHOL_NB, j = t % CHOL_NB;
    L[i][j] = j <= i ? l[(long long)(k0 + i) * np + k0 + j] : 0.f;
  }
  __syncthreads();
  invert_lower_block(L, Li);
  for (int t = threadIdx.x; t < CHOL_NB * CHOL_NB; t += blockDim.x) {
    const int i = t / CHOL_NB, j = t % CHOL_NB;
    inv[(long long)(k0 + i) * CHOL_NB + j] = Li[i][j];
  }
}

// dst[i, j] = src[i, j] for a rows × cols block (leading dimensions ldd, lds).
extern "C" __global__ void copy_block(float* dst, int ldd, const float* src, int lds, int rows, int cols) { pdl_start();
  const long long total = (long long)rows * cols;
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
    const int i = (int)(t / cols), j = (int)(t % cols);
    dst[(long long)i * ldd + j] = src[(long long)i * lds + j];
  }
}

// a[i, j] = 0 for j > i ([np, np]).
extern "C" __global__ void zero_upper(float* a, int np) { pdl_start();
  const long long total = (long long)np * np;
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
    if (t % np > t / np) a[t] = 0.f;
  }
}

// ---- GPTQ: the column loop ---------------------------------------------------------------------

// out[r, j] = w[r, perm[j]], or 0 for a dead column ([rows, cols], visiting order).
extern "C" __global__ void gather_cols(const float* w, const int* perm, const unsigned char* deadVisit, int rows, int cols, float* out) { pdl_start();
  const long long total = (long long)rows * cols;
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += (long long)gridDim.x * blockDim.x) {
    const long long r = t / cols;
    const int j = (int)(t % cols);
    out[t] = deadVisit[j] ? 0.f : w[r * cols + perm[j]];
  }
}

#define GPTQ_MAX_BLOCK 128
#define GPTQ_WARPS 8

// Columns [i1, i1 + count) of W (visiting order, [rows, cols]), one warp per row: lane l holds the
// row's columns l, l+32, l+64, l+96 of the block. Column i is quantized with its original column's
// group scale, its error e = (x − q) / U_ii spread over the block's later columns (W_j −= e·U_ij),
// and e kept in E[r, i] for the trailing GEMM. U_ij = l2[i1+j, i1+i] (l2 = chol(H⁻¹), lower) is
// staged in shared memory as U[i·(count+1) + j]. Codes and deq go to the original column.
// lossRows[r] += Σ (x − q)² / (2 U_ii²) over the block.
template <typename T>
__device__ __forceinline__ void gptq_block(float* W, int rows, int cols, int i1, int count, const float* l2, int np, const float* scale,
                                           const int* zp, int strategy, int groupSize, int groupsPerRow, QRange qr, const int* perm,
                                           int* codes, T* deq, float* E, int ldE, double* lossRows) {
  extern __shared__ float smem[];
  const int stride = count + 1;
  float* U = smem;
  int* sperm = (int*)(smem + count * stride);
  for (int t = threadIdx.x; t < count * count; t += blockDim.x) {
    const int i = t % count, j = t / count;  // consecutive threads: consecutive i = consecutive l2 addresses
    U[i * stride + j] = l2[(long long)(i1 + j) * np + i1 + i];
  }
  for (int t = threadIdx.x; t < count; t += blockDim.x) sperm[t] = perm[i1 + t];
  __syncthreads();

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int r = blockIdx.x * GPTQ_WARPS + warp; r < rows; r += gridDim.x * GPTQ_WARPS) {
    float* row = W + (long long)r * cols + i1;
    float w[4];
#pragma unroll
    for (int t = 0; t < 4; t++) {
      const int j = lane + 32 * t;
      w[t] = j < count ? row[j] : 0.f;
    }
    double loss = 0.0;
#pragma unroll
    for (int t = 0; t < 4; t++) {
      if (32 * t >= count) break;
      const int lanes = count - 32 * t < 32 ? count - 32 * t : 32;
      for (int l = 0; l < lanes; l++) {
        const int i = 32 * t + l;
        const float x = __shfl_sync(FULL_MASK, w[t], l);
        const int orig = sperm[i];
        const int k = param_index(strategy, r, orig, groupSize, groupsPerRow);
        const float s = scale[k];
        const int z = zp[k];
        const int code = quantize_value(x, s, z, qr);
        const float q = dequantize_value(code, s, z, qr);
        const float d = U[i * stride + i];
        const float e = (x - q) / d;
        if (lane == l) {
          const long long at = (long long)r * cols + orig;
          codes[at] = code;
          deq[at] = from_float<T>(q);
          E[(long long)r * ldE + i] = e;
          const double dx = (double)x - (double)q, dd = d;
          loss += dx * dx / (dd * dd) / 2.0;
        }
#pragma unroll
        for (int t2 = t; t2 < 4; t2++) {
          const int j = lane + 32 * t2;
          if (j > i && j < count) w[t2] -= e * U[i * stride + j];
        }
      }
    }
    loss = warp_sum_f64(loss);
    if (lane == 0) lossRows[r] += loss;
  }
}

#define DEF_WQUANT(T, S)                                                                                                       \
  extern "C" __global__ void rtn_quantize_##S(const float* w, int rows, int cols, const float* scale, const int* zp, int strategy, \
                                              int groupSize, int groupsPerRow, int qmin, int qmax, int fp8, int* codes, T* deq) { pdl_start();   \
    const QRange r = {qmin, qmax, fp8};                                                                                        \
    rtn_quantize<T>(w, rows, cols, scale, zp, strategy, groupSize, groupsPerRow, r, codes, deq);                               \
  }                                                                                                                            \
  extern "C" __global__ void gptq_block_##S(float* W, int rows, int cols, int i1, int count, const float* l2, int np,           \
                                            const float* scale, const int* zp, int strategy, int groupSize, int groupsPerRow, \
                                            int qmin, int qmax, int fp8, const int* perm, int* codes, T* deq, float* E, int ldE,  \
                                            double* lossRows) { pdl_start();                                                               \
    const QRange r = {qmin, qmax, fp8};                                                                                        \
    gptq_block<T>(W, rows, cols, i1, count, l2, np, scale, zp, strategy, groupSize, groupsPerRow, r, perm, codes, deq, E, ldE,  \
                  lossRows);                                                                                                   \
  }
FOR_EACH_DTYPE(DEF_WQUANT)
