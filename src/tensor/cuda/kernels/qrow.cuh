// The warp-per-row-pair dot products of the quantized row kernels (qgemv_row.cu), shared with the
// fused decode layer (decode_layer.cu): loads of a row pair's stored bytes, their conversion to f32,
// and x quantized into the weights' interleaved order. See qgemv_row.cu's header for the layout a lane
// reads and the instruction counts.
#pragma once
#include "quant.cuh"

constexpr int QR_SPANS = 4;  // 512-byte spans of each of the 2 rows loaded per round

__device__ __forceinline__ int qr_dp4a(unsigned a, unsigned b, int c) {
  int r;
  asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// f16x2 → two f32 (low half first).
__device__ __forceinline__ void qr_h2f(unsigned h, float& lo, float& hi) {
  lo = to_float(f16_t{(u16)(h & 0xffffu)});
  hi = to_float(f16_t{(u16)(h >> 16)});
}

// Two storage values in a 32-bit word → f32.
__device__ __forceinline__ void qr_pair_f32(unsigned w, float* f, const bf16_t*) {
  f[0] = __uint_as_float(w << 16);
  f[1] = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void qr_pair_f32(unsigned w, float* f, const f16_t*) { qr_h2f(w, f[0], f[1]); }

// x[k … k + KW) of one row as f32 (zeros at and past lim). vec: whole 2·KW-byte vectors (lim % KW == 0,
// aligned rows).
template <typename T, int KW>
__device__ __forceinline__ void qr_x(float* f, const T* xr, int k, int lim, int vec) {
  if (vec) {
    if (k >= lim) {
#pragma unroll
      for (int i = 0; i < KW; ++i) f[i] = 0.f;
    } else if (KW == 4) {
      const uint2 v = *reinterpret_cast<const uint2*>(xr + k);
      qr_pair_f32(v.x, f, xr), qr_pair_f32(v.y, f + 2, xr);
    } else {
      const uint4 v = *reinterpret_cast<const uint4*>(xr + k);
      qr_pair_f32(v.x, f, xr), qr_pair_f32(v.y, f + 2, xr), qr_pair_f32(v.z, f + 4, xr), qr_pair_f32(v.w, f + 6, xr);
    }
  } else {
#pragma unroll
    for (int i = 0; i < KW; ++i) f[i] = k + i < lim ? to_float(xr[k + i]) : 0.f;
  }
}

// One stored word of weights → KW f32 values in column order. off: the f32 (8-bit) or f16x2 (4-bit)
// amount the magic-number conversion subtracts (see qr_offset).
template <int FMT>
__device__ __forceinline__ void qr_dequant(unsigned w, unsigned off, float* f) {
  if constexpr (FMT == QFMT_FP8) {
    qr_h2f(e4m3x2_to_f16x2(w & 0xffffu), f[0], f[1]);
    qr_h2f(e4m3x2_to_f16x2(w >> 16), f[2], f[3]);
  } else if constexpr (FMT == QFMT_S8) {
    const unsigned u = w ^ 0x80808080u;  // q + 128
    const float o = __uint_as_float(off);
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7540 + i)) - o;
  } else {
    unsigned p[4];
    u4x8_to_f16x2(w, off, p);  // p[i] = (column i, column i + 4)
#pragma unroll
    for (int i = 0; i < 4; ++i) qr_h2f(p[i], f[i], f[i + 4]);
  }
}

// What qr_dequant subtracts for zero point z: 8-bit 2^23 + 128 + z (f32 bits), 4-bit 1032 + z (f16x2).
template <int FMT>
__device__ __forceinline__ unsigned qr_offset(const int* zero, int at) {
  const float z = zero != nullptr ? (float)zero[at] : 0.f;
  if constexpr (FMT == QFMT_U4) return f16x2_of(1032.f + z, 1032.f + z);
  else return __float_as_uint(8388736.f + z);
}

// Where a pair's x comes from: global memory (row stride K, limit K) or shared memory (stride Kp, zeros
// staged up to Kp); ACT 1: codes in shared memory (stride Kp) and the per-token scales.
template <typename T>
struct QrIn {
  const T* x;
  int stride, lim, vec;
  const unsigned char* codes;
  const float* sx;
};

// The pair's dot products with the M rows of x: acc[r][m] for row r (0: wa's row, 1: wb's row), reduced
// over the warp, times the weight scale (and the x scale for ACT 1). Rows are < Np: padding rows are
// zero bytes with zero scales, so they are read like any other.
// 512-byte spans of a row of nChunks 64-byte chunks.
__device__ __forceinline__ int qr_spans(int nChunks) { return (nChunks + 7) >> 3; }

// The lane's 16-byte loads of round s0 (QR_SPANS spans) of rows wa and wb (zeros past nChunks).
__device__ __forceinline__ void qr_load(uint4 (&v)[2][QR_SPANS], const unsigned char* wa, const unsigned char* wb, int s0, int nChunks) {
  const int lane = threadIdx.x & 31, t = lane & 3;
#pragma unroll
  for (int j = 0; j < QR_SPANS; ++j) {
    const int c = 8 * (s0 + j) + (lane >> 2);
    v[0][j] = c < nChunks ? ld_stream(wa + (long long)c * 64 + 16 * t) : make_uint4(0u, 0u, 0u, 0u);
    v[1][j] = c < nChunks ? ld_stream(wb + (long long)c * 64 + 16 * t) : make_uint4(0u, 0u, 0u, 0u);
  }
}

// v: the pair's first round, already loaded (qr_load). After each round's math the next round's loads
// go out — the same rows' next one, or the first of the warp's next pair (na, nb; nullptr when there is
// none) — so on return v holds na/nb's first round, in flight during the reductions and the store.
// (Loading it before the math instead, into a second set of registers, measured slower: 2 blocks per
// SM instead of 4 for gate/up; H200 FP8 0.927 against 0.860 ms/step.)
template <typename T, int FMT, int ACT, int M>
__device__ __forceinline__ void qr_pair(float (&acc)[2][M], uint4 (&v)[2][QR_SPANS], const unsigned char* wa, const unsigned char* wb,
                                        const unsigned char* na, const unsigned char* nb, const float* sa,
                                        const float* sb, const int* za, const int* zb, const QrIn<T>& in, int rowBytes, int nChunks,
                                        int G, unsigned long long gmagic, int chunkGroups, int sBegin, int sEnd) {
  constexpr int KW = QFmt<FMT>::KW, CK = QFmt<FMT>::CK;
  const int lane = threadIdx.x & 31, t = lane & 3;
  const unsigned char* w[2] = {wa, wb};
  const float* sc[2] = {sa, sb};
  const int* zp[2] = {za, zb};
  float facc[2][M];
  int iacc[2][M];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) facc[r][m] = 0.f, iacc[r][m] = 0;
  // One group per row: its offset now, its scale at the end.
  unsigned off1[2] = {0u, 0u};
  if (ACT == 0 && G == 1) off1[0] = qr_offset<FMT>(za, 0), off1[1] = qr_offset<FMT>(zb, 0);
  for (int s0 = sBegin; s0 < sEnd; s0 += QR_SPANS) {
#pragma unroll
    for (int j = 0; j < QR_SPANS; ++j) {
      const int c = 8 * (s0 + j) + (lane >> 2);
      if (c >= nChunks) break;
      if constexpr (ACT == 1) {
        uint4 cv[M];  // the lane's 16 code bytes of each row of x, at its weight bytes' offset
#pragma unroll
        for (int m = 0; m < M; ++m) cv[m] = *reinterpret_cast<const uint4*>(in.codes + m * in.stride + c * 64 + 16 * t);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          unsigned ww[2];
#pragma unroll
          for (int r = 0; r < 2; ++r) ww[r] = u == 0 ? v[r][j].x : u == 1 ? v[r][j].y : u == 2 ? v[r][j].z : v[r][j].w;
          if constexpr (FMT == QFMT_S8) {
#pragma unroll
            for (int m = 0; m < M; ++m) {
              const unsigned cw = u == 0 ? cv[m].x : u == 1 ? cv[m].y : u == 2 ? cv[m].z : cv[m].w;
#pragma unroll
              for (int r = 0; r < 2; ++r) iacc[r][m] = qr_dp4a(ww[r], cw, iacc[r][m]);
            }
          } else {
            float wf[2][4];
#pragma unroll
            for (int r = 0; r < 2; ++r) qr_dequant<QFMT_FP8>(ww[r], 0u, wf[r]);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float xf[4];
              qr_dequant<QFMT_FP8>(u == 0 ? cv[m].x : u == 1 ? cv[m].y : u == 2 ? cv[m].z : cv[m].w, 0u, xf);
#pragma unroll
              for (int r = 0; r < 2; ++r)
#pragma unroll
                for (int i = 0; i < 4; ++i) facc[r][m] = fmaf(wf[r][i], xf[i], facc[r][m]);
            }
          }
        }
      } else {
        // Per word u: scale and offset of its group (G > 1), the row's otherwise.
        float sw[2][4];
        unsigned off[2][4];
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int u = 0; u < 4; ++u) sw[r][u] = 1.f, off[r][u] = off1[r];
        if (G > 1) {
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            if (u > 0 && chunkGroups) {
#pragma unroll
              for (int r = 0; r < 2; ++r) sw[r][u] = sw[r][0], off[r][u] = off[r][0];
              continue;
            }
            // Words past K (the last chunk's padding, x = 0 there) would map past the row's last group: a
            // real row's scale / zero point read out of bounds, whose garbage could make ∞ · 0 = NaN.
            const int grp = min(G - 1, (int)(((unsigned long long)(4 * c + u) * gmagic) >> 32));
#pragma unroll
            for (int r = 0; r < 2; ++r) sw[r][u] = sc[r][grp], off[r][u] = qr_offset<FMT>(zp[r], grp);
          }
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int k = c * CK + (t + 4 * u) * KW;
          float wf[2][KW];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const unsigned ww[4] = {v[r][j].x, v[r][j].y, v[r][j].z, v[r][j].w};
            qr_dequant<FMT>(ww[u], off[r][u], wf[r]);
          }
#pragma unroll
          for (int m = 0; m < M; ++m) {
            float xf[KW];
            qr_x<T, KW>(xf, in.x + (long long)m * in.stride, k, in.lim, in.vec);
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              float p = 0.f;
#pragma unroll
              for (int i = 0; i < KW; ++i) p = fmaf(wf[r][i], xf[i], p);
              facc[r][m] = fmaf(p, sw[r][u], facc[r][m]);
            }
          }
        }
      }
    }
    // v is spent: the next round (these rows' next, or the next pair's first) goes out before the
    // reductions and the store.
    if (s0 + QR_SPANS < sEnd) qr_load(v, w[0], w[1], s0 + QR_SPANS, nChunks);
    else if (na != nullptr) qr_load(v, na, nb, sBegin, nChunks);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float rowScale = G == 1 ? sc[r][0] : 1.f;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float a = ACT == 1 && FMT == QFMT_S8 ? (float)iacc[r][m] : facc[r][m];
      if (ACT == 1 && FMT == QFMT_S8) {
        int ia = iacc[r][m];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ia += __shfl_xor_sync(FULL_MASK, ia, o);
        a = (float)ia;
      } else {
        a = warp_sum(a);
      }
      acc[r][m] = a * rowScale * (ACT == 1 ? in.sx[m] : 1.f);
    }
  }
}

// qr_pair on rows ra and rb of one matrix (weights w, scales sc, zero points zp or nullptr); na, nb as qr_pair.
template <typename T, int FMT, int ACT, int M>
__device__ __forceinline__ void qr_rows(float (&acc)[2][M], uint4 (&v)[2][QR_SPANS], const unsigned char* w, const float* sc, const int* zp,
                                        int ra, int rb, const unsigned char* na, const unsigned char* nb, const QrIn<T>& in, int rowBytes,
                                        int nChunks, int G, unsigned long long gmagic, int chunkGroups, int sBegin, int sEnd) {
  qr_pair<T, FMT, ACT, M>(acc, v, w + (long long)ra * rowBytes, w + (long long)rb * rowBytes, na, nb, sc + (long long)ra * G,
                          sc + (long long)rb * G, zp != nullptr ? zp + (long long)ra * G : nullptr,
                          zp != nullptr ? zp + (long long)rb * G : nullptr, in, rowBytes, nChunks, G, gmagic, chunkGroups, sBegin, sEnd);
}

// x's M rows quantized per token (dynamic absmax, or the static scale) as qgemv.cu stages them:
// codes [M][Kp] in the weights' interleaved column order, scales sx [M]; amaxw holds 8 floats per warp.
// Ends with __syncthreads().
template <typename T, int FMT>
__device__ __forceinline__ void qr_quantize_x(unsigned char* codes, float* sx, float* amaxw, const T* x, int M, int K, int Kp, int vec,
                                              float staticScale) {
  const int tid = threadIdx.x, nt = blockDim.x;
  const int fp8 = FMT == QFMT_FP8;
  qx_token_scales<T>(sx, amaxw, x, M, K, staticScale, fp8, vec);
  for (int m = 0; m < M; ++m) {
    const T* xr = x + (long long)m * K;
    const float s = sx[m];
    unsigned char* row = codes + m * Kp;
    if (vec) {
      // 8 columns = original words 2j, 2j + 1, stored at their interleaved positions.
      for (int j = tid; j < Kp / 8; j += nt) {
        const uint2 q = qx_codes8(xr, j, K, s, fp8);
        const int w0 = 2 * j, w1 = 2 * j + 1;
        reinterpret_cast<unsigned*>(row)[(w0 & ~15) | qword_stored(w0 & 15)] = q.x;
        reinterpret_cast<unsigned*>(row)[(w1 & ~15) | qword_stored(w1 & 15)] = q.y;
      }
    } else {
      for (int k = tid; k < Kp; k += nt) {
        const unsigned b = qx_code(xr, k, K, s, fp8);
        row[(k & ~63) | (qword_stored((k & 63) >> 2) << 2) | (k & 3)] = (unsigned char)b;
      }
    }
  }
  __syncthreads();
}
