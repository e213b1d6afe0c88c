// Quantized Linears at small M (decode, M ≤ 8): out[M,N] = x[M,K] · W[N,K]ᵀ (+ bias) with W read as
// stored (quant.cuh: FP8 / int8 / 4-bit) and dequantized in registers. Memory-bound on the weight
// bytes, so each lane keeps several 16-byte weight loads in flight and the math runs on tensor cores
// (mma.sync, M padded to the 8 columns of the n8 side), which leaves the issue slots to the dequant.
//
// Block = one 16-row tile of one weight matrix, its warps splitting K (chunks of 64 bytes per row:
// warp w takes chunks w, w + warps, …) and summing through shared memory. Lane (g, t) = (lane/4,
// lane%4) holds rows g and g+8 of the tile and loads 16 bytes of each per chunk: stored words
// 4t..4t+3 = original words t, t+4, t+8, t+12, so for each u the quad covers 16 consecutive words and
// the mma k-slots of lane t map to its own columns (any consistent permutation of k leaves the dot
// product unchanged). x is staged once per block in shared memory in the form the mma reads:
//   ACT 0 (weights only):  f16 (bf16 inputs converted, saturated), m16n8k16 f16 → f32; weights → f16
//                           exactly (E4M3 by cvt, int8/int4 by the 0x6400 magic-number trick minus
//                           1024 + offset + zero point); scales applied in f32 per group to the mma
//                           accumulators (a group is a whole number of 32 (4-bit) / 16 (8-bit) columns)
//   ACT 1 (W8A8):          x quantized per token (dynamic: block-wide absmax) or with the static
//                           scale, to E4M3 (m16n8k32 e4m3 → f32) or int8 (m16n8k32 s8 → s32); the
//                           result is × x scale × per-row weight scale.
// Kernels: qgemv3 (up to three matrices sharing x, e.g. q/k/v; blocks index their concatenated
// tiles) and qgemv_silu (gate and up: out = silu(x·Wgᵀ) · (x·Wuᵀ), f32 until the store).
// PDL: a block's first weight loads (registers) go out before griddepcontrol.wait — the weights are
// no kernel's output — so they overlap the tail of the kernel before; x is read only after it. The
// dependents' launch is triggered after the math, as in qgemv_row.cu (see there why).
#include "quant.cuh"
// llmopt:pdl

constexpr int QG_UNROLL = 4;      // chunks per lane loaded before any math
constexpr int QG_MAX_THREADS = 512;

__device__ __forceinline__ void mma_f16(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_e4m3(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
#if __CUDA_ARCH__ >= 890
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ void mma_s8(int* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Bytes between staged rows of x: f16 (ACT 0) or 1-byte codes (ACT 1), padded so that the rows a
// warp reads at once fall in different banks (see qgemv_smem_bytes in quant-linear.ts).
__device__ __forceinline__ int qg_stride(int fmt, int act, int Kp) {
  return act ? Kp + 16 : 2 * Kp + (fmt == QFMT_U4 ? 64 : 32);
}

__device__ __forceinline__ u16 f16_bits(bf16_t v) { return f16_sat(to_float(v)); }
__device__ __forceinline__ u16 f16_bits(f16_t v) { return v.x; }

// Stages x [M, K] (row stride K) into shared memory as the mma reads it (see the header); columns
// [K, Kp) are zeros. With perm, staged column j is x[:, perm[j]]. vec: K % 8 == 0, x 16-byte aligned
// and no perm (16-byte loads). ACT 1 also writes the per-token scales sx[0..M).
template <typename T, int FMT, int ACT>
__device__ __forceinline__ void qg_stage_x(unsigned char* xs, float* sx, float* amaxw, const T* x, int M, int K, int Kp, int stride,
                                           const int* perm, int vec, float staticScale) {
  const int tid = threadIdx.x, nt = blockDim.x;
  if (ACT == 0) {
    if (vec) {
      const int nv = Kp / 8;
      for (int m = 0; m < M; ++m) {
        const uint4* xr = reinterpret_cast<const uint4*>(x + (long long)m * K);
        uint4* row = reinterpret_cast<uint4*>(xs + m * stride);
        for (int j = tid; j < nv; j += nt) {
          uint4 v = make_uint4(0u, 0u, 0u, 0u);
          if (8 * j < K) v = xr[j];
          const T* e = reinterpret_cast<const T*>(&v);
          u16 h[8];
#pragma unroll
          for (int i = 0; i < 8; ++i) h[FMT == QFMT_U4 ? u4_pair_pos(i) : i] = f16_bits(e[i]);
          row[j] = make_uint4(h[0] | ((unsigned)h[1] << 16), h[2] | ((unsigned)h[3] << 16), h[4] | ((unsigned)h[5] << 16),
                              h[6] | ((unsigned)h[7] << 16));
        }
      }
    } else {
      for (int m = 0; m < M; ++m) {
        const T* xr = x + (long long)m * K;
        u16* row = reinterpret_cast<u16*>(xs + m * stride);
        for (int k = tid; k < Kp; k += nt) {
          const u16 h = k < K ? f16_bits(xr[perm != nullptr ? perm[k] : k]) : (u16)0;
          row[FMT == QFMT_U4 ? ((k & ~7) | u4_pair_pos(k & 7)) : k] = h;
        }
      }
    }
    return;
  }
  const int fp8 = FMT == QFMT_FP8;
  qx_token_scales<T>(sx, amaxw, x, M, K, staticScale, fp8, vec);
  for (int m = 0; m < M; ++m) {
    const T* xr = x + (long long)m * K;
    const float s = sx[m];
    unsigned char* row = xs + m * stride;
    if (vec) {
      for (int j = tid; j < Kp / 8; j += nt) {
        reinterpret_cast<uint2*>(row)[j] = qx_codes8(xr, j, K, s, fp8);
      }
    } else {
      for (int k = tid; k < Kp; k += nt) {
        const unsigned b = qx_code(xr, k, K, s, fp8);
        row[k] = (unsigned char)b;
      }
    }
  }
}

// One warp's share (chunks warp, warp + nw, …) of a 16-row tile: acc[0..1] = rows g, acc[2..3] =
// rows g+8, tokens 2t and 2t+1, scaled by the weight scales (not by the x scale).
template <int FMT, int ACT>
struct QTile {
  static constexpr int KW = QFmt<FMT>::KW, CK = QFmt<FMT>::CK;
  const unsigned char* wa;
  const unsigned char* wb;
  const float* scale;
  const int* zero;
  int G, rA, rB, nChunks;
  unsigned long long gmagic;
  uint4 ra[QG_UNROLL], rb[QG_UNROLL];

  __device__ __forceinline__ QTile(const unsigned char* w, int rowBytes, const float* scale_, const int* zero_, int G_, unsigned long long gmagic_,
                                   int row0, int nChunks_)
      : scale(scale_), zero(zero_), G(G_), nChunks(nChunks_), gmagic(gmagic_) {
    const int lane = threadIdx.x & 31;
    rA = row0 + (lane >> 2);
    rB = rA + 8;
    wa = w + (long long)rA * rowBytes + 16 * (lane & 3);
    wb = w + (long long)rB * rowBytes + 16 * (lane & 3);
  }

  __device__ __forceinline__ void load(int c0, int nw) {
#pragma unroll
    for (int i = 0; i < QG_UNROLL; ++i) {
      const int c = c0 + i * nw;
      if (c < nChunks) {
        ra[i] = ld_stream(wa + (long long)c * 64);
        rb[i] = ld_stream(wb + (long long)c * 64);
      }
    }
  }

  // 1024 + stored offset + zero point, as f16x2 (what the magic-number conversion subtracts).
  __device__ __forceinline__ unsigned bias(int row, int grp) const {
    const float off = (FMT == QFMT_U4 ? 1032.f : 1152.f) + (zero != nullptr ? (float)zero[row * G + grp] : 0.f);
    return f16x2_of(off, off);
  }

  // State of the group being accumulated (weights only): mma partial cf, its scales and zero biases.
  int grp;
  float sA, sB;
  unsigned biasA, biasB;
  float cf[4];
  int ci[4];

  __device__ __forceinline__ void flush(float* acc) {
    acc[0] += cf[0] * sA, acc[1] += cf[1] * sA, acc[2] += cf[2] * sB, acc[3] += cf[3] * sB;
    cf[0] = cf[1] = cf[2] = cf[3] = 0.f;
  }

  // W8A8: the chunk's two k32 mmas on words (0, 1) and (2, 3), x codes from shared memory.
  __device__ __forceinline__ void chunk_act(const unsigned* wA, const unsigned* wB, const unsigned char* xc, int t) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const unsigned b0 = *reinterpret_cast<const unsigned*>(xc + (t + 8 * h) * 4);
      const unsigned b1 = *reinterpret_cast<const unsigned*>(xc + (t + 8 * h + 4) * 4);
      if constexpr (FMT == QFMT_FP8) mma_e4m3(cf, wA[2 * h], wB[2 * h], wA[2 * h + 1], wB[2 * h + 1], b0, b1);
      else mma_s8(ci, wA[2 * h], wB[2 * h], wA[2 * h + 1], wB[2 * h + 1], b0, b1);
    }
  }

  // Weights only: per word u, dequantize to f16 pairs and run the k16 mma(s); a new group flushes first.
  __device__ __forceinline__ void chunk_w(float* acc, int c, const unsigned* wA, const unsigned* wB, const unsigned char* xc, int t) {
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (gmagic != 0ull) {
        // clamped: the last chunk's padding words (x = 0) would map past the row's last group (qrow.cuh)
        const int ng = min(G - 1, (int)(((unsigned long long)(4 * c + u) * gmagic) >> 32));
        if (ng != grp) {
          flush(acc);
          grp = ng;
          sA = scale[rA * G + grp];
          sB = scale[rB * G + grp];
          if (zero != nullptr) biasA = bias(rA, grp), biasB = bias(rB, grp);
        }
      }
      const int kw = (t + 4 * u) * KW;  // first column of this lane's word u within the chunk
      if constexpr (FMT == QFMT_U4) {
        unsigned pa[4], pb[4];
        u4x8_to_f16x2(wA[u], biasA, pa);
        u4x8_to_f16x2(wB[u], biasB, pb);
        const uint4 xv = *reinterpret_cast<const uint4*>(xc + kw * 2);
        mma_f16(cf, pa[0], pb[0], pa[1], pb[1], xv.x, xv.y);
        mma_f16(cf, pa[2], pb[2], pa[3], pb[3], xv.z, xv.w);
      } else {
        unsigned aLo, aHi, bLo, bHi;
        if constexpr (FMT == QFMT_FP8) {
          aLo = e4m3x2_to_f16x2(wA[u] & 0xffffu), aHi = e4m3x2_to_f16x2(wA[u] >> 16);
          bLo = e4m3x2_to_f16x2(wB[u] & 0xffffu), bHi = e4m3x2_to_f16x2(wB[u] >> 16);
        } else {
          s8x4_to_f16x2(wA[u], biasA, aLo, aHi);
          s8x4_to_f16x2(wB[u], biasB, bLo, bHi);
        }
        const uint2 xv = *reinterpret_cast<const uint2*>(xc + kw * 2);
        mma_f16(cf, aLo, bLo, aHi, bHi, xv.x, xv.y);
      }
    }
  }

  // Processes every batch of chunks; the first must already be loaded (load(warp, nw)).
  __device__ __forceinline__ void run(float* acc, const unsigned char* xr, int nw) {
    const int t = threadIdx.x & 3, warp = threadIdx.x >> 5;
    grp = 0;
    sA = scale[rA * G], sB = scale[rB * G];
    biasA = bias(rA, 0), biasB = bias(rB, 0);
    cf[0] = cf[1] = cf[2] = cf[3] = 0.f;
    ci[0] = ci[1] = ci[2] = ci[3] = 0;
    acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
    for (int c0 = warp; c0 < nChunks; c0 += nw * QG_UNROLL) {
      if (c0 != warp) load(c0, nw);
#pragma unroll
      for (int i = 0; i < QG_UNROLL; ++i) {
        const int c = c0 + i * nw;
        if (c >= nChunks) break;
        const unsigned wA[4] = {ra[i].x, ra[i].y, ra[i].z, ra[i].w};
        const unsigned wB[4] = {rb[i].x, rb[i].y, rb[i].z, rb[i].w};
        const unsigned char* xc = xr + c * CK * (ACT ? 1 : 2);
        if constexpr (ACT) chunk_act(wA, wB, xc, t);
        else chunk_w(acc, c, wA, wB, xc, t);
      }
    }
    if constexpr (ACT && FMT == QFMT_S8) {
#pragma unroll
      for (int i = 0; i < 4; ++i) cf[i] = (float)ci[i];
    }
    flush(acc);
  }
};

// Shared memory: staged x, then per-warp partial tiles [warps][16][8], a finished tile (silu's gate),
// the x scales [8] and absmax partials [16 warps][8].
struct QgSmem {
  unsigned char* xs;
  float* red;
  float* tile;
  float* sx;
  float* amaxw;
  int stride;
};

__device__ __forceinline__ QgSmem qg_smem(int fmt, int act, int M, int Kp) {
  extern __shared__ uint4 qg_shared[];
  unsigned char* base = reinterpret_cast<unsigned char*>(qg_shared);
  QgSmem s;
  s.stride = qg_stride(fmt, act, Kp);
  s.xs = base;
  const int offRed = (M * s.stride + 15) & ~15;
  const int nw = blockDim.x >> 5;
  s.red = reinterpret_cast<float*>(base + offRed);
  s.tile = s.red + nw * 128;
  s.sx = s.tile + 128;
  s.amaxw = s.sx + 8;
  return s;
}

// Sums the warps' partial tiles: after it, thread i < 128 holds (row i % 16, token i / 16) in *v (blocks
// have at least 4 warps).
__device__ __forceinline__ bool qg_reduce(const QgSmem& s, const float* acc, float* v, int* r, int* m) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  float* mine = s.red + warp * 128;
  mine[g * 8 + 2 * t] = acc[0];
  mine[g * 8 + 2 * t + 1] = acc[1];
  mine[(g + 8) * 8 + 2 * t] = acc[2];
  mine[(g + 8) * 8 + 2 * t + 1] = acc[3];
  __syncthreads();
  if (threadIdx.x >= 128) return false;
  *r = threadIdx.x & 15;
  *m = threadIdx.x >> 4;
  float sum = 0.f;
  for (int w = 0; w < nw; ++w) sum += s.red[w * 128 + *r * 8 + *m];
  *v = sum * s.sx[*m];
  return true;
}

template <typename T, int FMT, int ACT>
__device__ __forceinline__ void qgemv3(T* o0, T* o1, T* o2, const T* x, const unsigned char* w0, const unsigned char* w1,
                                       const unsigned char* w2, const float* s0, const float* s1, const float* s2, const int* z0,
                                       const int* z1, const int* z2, const T* b0, const T* b1, const T* b2, const int* perm, int N0,
                                       int N1, int N2, int M, int K, int Kp, int rowBytes, int G, int vec, long long gmagic,
                                       float staticScale) {
  int tile = blockIdx.x;
  const int t0 = (N0 + 15) >> 4, t1 = (N1 + 15) >> 4;
  T* out = o0;
  const unsigned char* w = w0;
  const float* sc = s0;
  const int* zp = z0;
  const T* bias = b0;
  int N = N0;
  if (tile >= t0 + t1) {
    tile -= t0 + t1, out = o2, w = w2, sc = s2, zp = z2, bias = b2, N = N2;
  } else if (tile >= t0) {
    tile -= t0, out = o1, w = w1, sc = s1, zp = z1, bias = b1, N = N1;
  }
  const int nw = blockDim.x >> 5;
  const QgSmem s = qg_smem(FMT, ACT, M, Kp);
  QTile<FMT, ACT> q(w, rowBytes, sc, zp, G, (unsigned long long)gmagic, tile * 16, Kp / QFmt<FMT>::CK);
  q.load(threadIdx.x >> 5, nw);  // in flight while the previous kernel ends and x is staged
  pdl_wait();
  qg_stage_x<T, FMT, ACT>(s.xs, s.sx, s.amaxw, x, M, K, Kp, s.stride, perm, vec, staticScale);
  if (ACT == 0 && threadIdx.x < 8) s.sx[threadIdx.x] = 1.f;
  __syncthreads();
  float acc[4];
  q.run(acc, s.xs + imin((threadIdx.x & 31) >> 2, M - 1) * s.stride, nw);
  pdl_launch();  // the math is done: the next kernel may launch
  float v;
  int r, m;
  if (!qg_reduce(s, acc, &v, &r, &m)) return;
  const int n = tile * 16 + r;
  if (m < M && n < N) out[(long long)m * N + n] = from_float<T>(v + (bias != nullptr ? to_float(bias[n]) : 0.f));
}

template <typename T, int FMT, int ACT>
__device__ __forceinline__ void qgemv_silu(T* out, const T* x, const unsigned char* wg, const unsigned char* wu, const float* sg,
                                           const float* su, const int* zg, const int* zu, const int* perm, int N, int M, int K, int Kp,
                                           int rowBytes, int G, int vec, long long gmagic, float staticScale) {
  const int nw = blockDim.x >> 5, tile = blockIdx.x, nChunks = Kp / QFmt<FMT>::CK;
  const QgSmem s = qg_smem(FMT, ACT, M, Kp);
  QTile<FMT, ACT> qg(wg, rowBytes, sg, zg, G, (unsigned long long)gmagic, tile * 16, nChunks);
  QTile<FMT, ACT> qu(wu, rowBytes, su, zu, G, (unsigned long long)gmagic, tile * 16, nChunks);
  qg.load(threadIdx.x >> 5, nw);  // both first batches in flight while the previous kernel ends and x is staged
  qu.load(threadIdx.x >> 5, nw);
  pdl_wait();
  qg_stage_x<T, FMT, ACT>(s.xs, s.sx, s.amaxw, x, M, K, Kp, s.stride, perm, vec, staticScale);
  if (ACT == 0 && threadIdx.x < 8) s.sx[threadIdx.x] = 1.f;
  __syncthreads();
  const unsigned char* xr = s.xs + imin((threadIdx.x & 31) >> 2, M - 1) * s.stride;
  float acc[4];
  qg.run(acc, xr, nw);
  float gv, uv;
  int r, m;
  if (qg_reduce(s, acc, &gv, &r, &m)) s.tile[threadIdx.x] = gv;
  __syncthreads();  // red is reused below
  qu.run(acc, xr, nw);
  pdl_launch();
  if (!qg_reduce(s, acc, &uv, &r, &m)) return;
  gv = s.tile[threadIdx.x];
  const int n = tile * 16 + r;
  if (m < M && n < N) out[(long long)m * N + n] = from_float<T>(gv / (1.f + expf(-gv)) * uv);
}

#define DEF_QGEMV(T, S, FMT, F, ACT, A)                                                                                          \
  extern "C" __global__ void __launch_bounds__(QG_MAX_THREADS) qgemv3_##F##_##A##_##S(                                         \
      T* o0, T* o1, T* o2, const T* x, const unsigned char* w0, const unsigned char* w1, const unsigned char* w2, const float* s0, \
      const float* s1, const float* s2, const int* z0, const int* z1, const int* z2, const T* b0, const T* b1, const T* b2,        \
      const int* perm, int N0, int N1, int N2, int M, int K, int Kp, int rowBytes, int G, int vec, long long gmagic,              \
      float staticScale) {                                                                                                         \
    qgemv3<T, FMT, ACT>(o0, o1, o2, x, w0, w1, w2, s0, s1, s2, z0, z1, z2, b0, b1, b2, perm, N0, N1, N2, M, K, Kp, rowBytes, G,   \
                        vec, gmagic, staticScale);                                                                                 \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(QG_MAX_THREADS) qgemv_silu_##F##_##A##_##S(                                     \
      T* out, const T* x, const unsigned char* wg, const unsigned char* wu, const float* sg, const float* su, const int* zg,       \
      const int* zu, const int* perm, int N, int M, int K, int Kp, int rowBytes, int G, int vec, long long gmagic,               \
      float staticScale) {                                                                                                         \
    qgemv_silu<T, FMT, ACT>(out, x, wg, wu, sg, su, zg, zu, perm, N, M, K, Kp, rowBytes, G, vec, gmagic, staticScale);            \
  }
#define DEF_QGEMV_ALL(T, S)                                                                                                      \
  DEF_QGEMV(T, S, QFMT_FP8, fp8, 0, w) DEF_QGEMV(T, S, QFMT_FP8, fp8, 1, a) DEF_QGEMV(T, S, QFMT_S8, s8, 0, w)                  \
  DEF_QGEMV(T, S, QFMT_S8, s8, 1, a) DEF_QGEMV(T, S, QFMT_U4, u4, 0, w)
DEF_QGEMV_ALL(bf16_t, bf16)
DEF_QGEMV_ALL(f16_t, f16)
