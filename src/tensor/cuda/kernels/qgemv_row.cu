// Quantized Linears at M = 1…4 (decode): out[M,N] = x[M,K] · W[N,K]ᵀ (+ bias), W read as stored
// (quant.cuh), one warp per pair of output rows (two consecutive rows, or gate row n and up row n),
// CUDA cores, f32 accumulation. The tile kernels of qgemv.cu serve M = 5…8 (and everything when
// qgemvRowMaxM is 0).
//
// A warp streams its two rows in 512-byte spans: lane L loads bytes [16L, 16L + 16) of a span, i.e.
// chunk 8s + L/4 (64 bytes), quad lane t = L % 4, stored words 4t..4t+3 = original words t, t+4, t+8,
// t+12 of the chunk (columns (t + 4u)·KW … + KW of the chunk for u = 0…3). QR_SPANS spans of both rows
// (8 16-byte loads per lane) are issued before any math, as gemv.cu does; a Llama-1B row (2048
// columns: 4 spans of FP8, 2 of 4-bit) is one such round.
//
// x: weights only → read from global memory as stored (T, L1-cached: a few KB every warp of the SM
// reads) for exactly the lane's columns and converted to f32 once for both rows; staging it per block
// instead would re-read x from L2 in every block (1 MB per q/k/v launch at M = 1, 4× that at M = 4,
// against 4 MB of FP8 weights). Act-order (perm) gathers x into shared memory once per block (T, in the
// weights' column order). W8A8 → x quantized per token in every block (dynamic absmax or static scale,
// quant.cuh: the codes of qgemv.cu / fakeQuantRows bit for bit) into shared memory in the weights'
// interleaved order, so a lane's 16 code bytes sit at the same offset as its 16 weight bytes (one
// conflict-free 16-byte shared load per row of x).
//
// PDL: every warp loads the first round of its first row pair into registers (qr_load) before
// griddepcontrol.wait — weights are no kernel's output — so at batch 1, where a launch's whole weight
// matrix is one or two rounds, the stream overlaps the tail of the kernel before; x is read after it.
// (Asking L2 for that round instead (prefetch.global.L2) and loading it after x was staged measured
// 0.892 against 0.860 ms per FP8 step on the H200.) Each later round is loaded right after the math of
// the one before (qr_pair).
// The dependents' launch is triggered after a warp's math, not at the start: triggered at the start,
// the next kernels' blocks sat resident while this one ran, and decode measured slower (H200: FP8
// 0.944 against 0.891 ms/step without PDL; triggered after the math 0.892, W4A16 0.872 against 0.910).
//
// Math, per lane and 16 loaded bytes of one row (instruction counts from the source; x loads and
// conversions are shared by the pair's two rows, so they count half; + 1 FFMA per word and row of x for
// the word's (group) scale):
//   fp8_w: 8 cvt.e4m3x2→f16x2 + 16 f16→f32 (HADD2.F32) + 20·M FFMA + x per row of it: 4 8-byte loads
//          + 16 bf16→f32 (shift / and), /2 → M = 1: ~54, M = 4: ~145
//   s8_w:  4 xor + 16 prmt into 0x4B0000xx (2^23 + q + 128 as f32) + 16 FADD (− 2^23 − 128 − zero,
//          exact) + 20·M FFMA + x as fp8 → M = 1: ~66, M = 4: ~155
//   u4_w:  per word 3 shifts + 4 lop3 into 0x6400-biased f16x2 + 4 HSUB2 (− 1032 − zero, exact) = 44,
//          + 32 f16→f32 + 36·M FFMA + x: 4 16-byte loads + 32 conversions, /2 → M = 1: ~130, M = 4:
//          ~290 (f16x2 HFMA2 would halve the FMAs but accumulates in f16, which overflows past 65504
//          on real activations: |x| · 15 > 65504 for |x| > 4.4k)
//   fp8_a: weights as fp8_w, codes the same way (/2), 16·M FFMA: products of two E4M3 values are exact
//          in f32 → M = 1: ~52
//   s8_a:  4·M dp4a (exact int32 sums) + M 16-byte shared loads (/2) → M = 1: ~6
// plus, when G > 1, the group scale and zero loads (one per chunk when groups span whole chunks, else
// per word). An H200 SM's share of ~4 TB/s is ~15 bytes per cycle: one 512-byte warp load per ~33
// cycles, in which its 4 schedulers issue ~130 warp instructions, i.e. ~130 instructions per lane and
// 16 loaded bytes. So M = 1 can stream near bandwidth (4-bit right at the issue limit), and M = 4 of
// the weights-only formats is issue-bound.
#include "qrow.cuh"
// llmopt:pdl

constexpr int QR_WARPS = 8;
// ≥ 2 blocks (16 warps, 32 rows × 8 16-byte loads per lane: 64 KB in flight) per SM: ≤ 128 registers
constexpr int QR_MIN_BLOCKS = 2;

// Shared memory: staged x (ACT 0 with perm: T [M][Kp]; ACT 1: codes [M][Kp]), then the x scales [8] and
// the absmax partials [QR_WARPS][8] (quant-linear.ts qgemvRowSmemBytes).
template <typename T, int FMT, int ACT>
__device__ __forceinline__ QrIn<T> qr_stage(const T* x, int M, int K, int Kp, const int* perm, int vec, float staticScale) {
  extern __shared__ uint4 qr_shared[];
  unsigned char* base = reinterpret_cast<unsigned char*>(qr_shared);
  QrIn<T> in;
  in.codes = nullptr, in.sx = nullptr;
  const int tid = threadIdx.x, nt = blockDim.x;
  if (ACT == 0) {
    if (perm == nullptr) {
      in.x = x, in.stride = K, in.lim = K, in.vec = vec;
      return in;
    }
    T* xs = reinterpret_cast<T*>(base);
    for (int m = 0; m < M; ++m)
      for (int j = tid; j < Kp; j += nt) xs[m * Kp + j] = j < K ? x[(long long)m * K + perm[j]] : from_float<T>(0.f);
    __syncthreads();
    in.x = xs, in.stride = Kp, in.lim = Kp, in.vec = 1;
    return in;
  }
  unsigned char* codes = base;
  float* sx = reinterpret_cast<float*>(base + ((M * Kp + 15) & ~15));
  float* amaxw = sx + 8;
  qr_quantize_x<T, FMT>(codes, sx, amaxw, x, M, K, Kp, vec, staticScale);
  in.x = x, in.stride = Kp, in.lim = Kp, in.vec = 0;
  in.codes = codes, in.sx = sx;
  return in;
}

// Stores a pair's results (+ bias) for rows n and n + 1 that are < N: row m of x's value for row n + r
// goes to rowOut(m)[n + r], written by lane 16r + m (the lanes warp_sum left the sums in).
template <typename T, int M, typename RowOut>
__device__ __forceinline__ void qr_store_pair(const float (&acc)[2][M], const T* bias, int n, int N, RowOut rowOut) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int nr = n + r;
    const float b = bias != nullptr && nr < N ? to_float(bias[nr]) : 0.f;
#pragma unroll
    for (int m = 0; m < M; ++m)
      if (lane == 16 * r + m && nr < N) rowOut(m)[nr] = from_float<T>(acc[r][m] + b);
  }
}

// Up to three matrices sharing x (q/k/v, or one: o_proj, down_proj): the grid's warps take row pairs of
// the concatenated matrices (⌈Ni / 2⌉ pairs each). kSplit warps (a divisor of 8; quant-linear.ts rowSplit
// picks 1 or 4) share a pair, each summing its own slice of the rows' rounds (kernel header: 2048 bytes of
// both rows per round), so rows of several rounds (down_proj: K 8192 of FP8 is 4) are all in flight at once
// instead of one round per warp after the other's math; the slices' sums (scaled, each with the row's
// scales) are added in warp order through shared memory. A block's 8 / kSplit pairs at a time, pairsPerWarp times (warp w of block b:
// pairs (b·pairsPerWarp + i)·(8 / kSplit) + w / kSplit).
template <typename T, int FMT, int ACT, int M>
__device__ __forceinline__ void qgemvr3(T* o0, T* o1, T* o2, const T* x, const unsigned char* w0, const unsigned char* w1,
                                        const unsigned char* w2, const float* s0, const float* s1, const float* s2, const int* z0,
                                        const int* z1, const int* z2, const T* b0, const T* b1, const T* b2, const int* perm, int N0,
                                        int N1, int N2, int K, int Kp, int rowBytes, int G, int vec, long long gmagic, int chunkGroups,
                                        float staticScale, int pairsPerWarp, int kSplit) {
  __shared__ float part[QR_WARPS][2][4];  // the slices' sums (kSplit > 1)
  const int P0 = (N0 + 1) >> 1, P1 = (N1 + 1) >> 1, P2 = (N2 + 1) >> 1;
  const int nChunks = Kp / QFmt<FMT>::CK, nSpans = qr_spans(nChunks);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, slice = warp % kSplit, perIter = QR_WARPS / kSplit;
  const int roundsPerSlice = ((nSpans + QR_SPANS - 1) / QR_SPANS + kSplit - 1) / kSplit;
  const int sBegin = min(nSpans, slice * roundsPerSlice * QR_SPANS), sEnd = min(nSpans, sBegin + roundsPerSlice * QR_SPANS);
  const int base = blockIdx.x * pairsPerWarp * perIter + warp / kSplit;  // the warp's pair i is base + perIter·i
  // Pair p → its matrix and first row; false past the last pair.
  const auto locate = [&](int p, int& which, int& n) {
    if (p >= P0 + P1 + P2) return false;
    which = p < P0 ? 0 : p < P0 + P1 ? 1 : 2;
    n = 2 * (p - (which == 0 ? 0 : which == 1 ? P0 : P0 + P1));
    return true;
  };
  const auto matrix = [&](int which) { return which == 0 ? w0 : which == 1 ? w1 : w2; };
  uint4 v[2][QR_SPANS];
  int which = 0, n = 0;
  bool has = locate(base, which, n);
  if (has) qr_load(v, matrix(which) + (long long)n * rowBytes, matrix(which) + (long long)(n + 1) * rowBytes, sBegin, nChunks);
  pdl_wait();
  const QrIn<T> in = qr_stage<T, FMT, ACT>(x, M, K, Kp, perm, vec, staticScale);
  // With kSplit > 1 every warp runs every iteration: the block meets at the slices' sums.
  if (!has && kSplit == 1) return;
  for (int i = 0; i < pairsPerWarp; ++i) {
    int nextWhich = 0, nextN = 0;
    const bool next = i + 1 < pairsPerWarp && locate(base + (i + 1) * perIter, nextWhich, nextN);
    const unsigned char* na = next ? matrix(nextWhich) + (long long)nextN * rowBytes : nullptr;
    T* out = which == 0 ? o0 : which == 1 ? o1 : o2;
    const float* sc = which == 0 ? s0 : which == 1 ? s1 : s2;
    const int* zp = which == 0 ? z0 : which == 1 ? z1 : z2;
    const T* bias = which == 0 ? b0 : which == 1 ? b1 : b2;
    const int N = which == 0 ? N0 : which == 1 ? N1 : N2;
    float acc[2][M];
    if (has)
      qr_rows<T, FMT, ACT, M>(acc, v, matrix(which), sc, zp, n, n + 1, na, next ? na + rowBytes : nullptr, in, rowBytes, nChunks, G,
                              (unsigned long long)gmagic, chunkGroups, sBegin, sEnd);
    pdl_launch();  // the math is done (see the header)
    if (kSplit > 1) {
      if (has && lane == 0) {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int m = 0; m < M; ++m) part[warp][r][m] = acc[r][m];
      }
      __syncthreads();
      if (has && slice == 0) {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
          for (int m = 0; m < M; ++m) {
            float a = part[warp][r][m];
            for (int j = 1; j < kSplit; ++j) a += part[warp + j][r][m];
            acc[r][m] = a;
          }
      }
      __syncthreads();
    }
    if (has && slice == 0) qr_store_pair<T, M>(acc, bias, n, N, [&](int m) { return out + (long long)m * N; });
    if (!next && kSplit == 1) return;
    has = next, which = nextWhich, n = nextN;
  }
}

// Gate/up + SwiGLU: a warp takes row n of wg and of wu (pairsPerWarp rows n each, as qgemvr3);
// out[m, n] = silu(x·wg[n]) · (x·wu[n]), f32 until the store.
template <typename T, int FMT, int ACT, int M>
__device__ __forceinline__ void qgemvr_silu(T* out, const T* x, const unsigned char* wg, const unsigned char* wu, const float* sg,
                                            const float* su, const int* zg, const int* zu, const int* perm, int N, int K, int Kp,
                                            int rowBytes, int G, int vec, long long gmagic, int chunkGroups, float staticScale,
                                            int pairsPerWarp) {
  const int lane = threadIdx.x & 31, nChunks = Kp / QFmt<FMT>::CK;
  const int base = blockIdx.x * pairsPerWarp * QR_WARPS + (threadIdx.x >> 5);  // the warp's row i is base + 8i
  uint4 v[2][QR_SPANS];
  if (base < N) qr_load(v, wg + (long long)base * rowBytes, wu + (long long)base * rowBytes, 0, nChunks);
  pdl_wait();
  const QrIn<T> in = qr_stage<T, FMT, ACT>(x, M, K, Kp, perm, vec, staticScale);
  for (int i = 0; i < pairsPerWarp; ++i) {
    const int n = base + i * QR_WARPS;
    if (n >= N) return;
    const bool next = i + 1 < pairsPerWarp && n + QR_WARPS < N;
    float acc[2][M];
    qr_pair<T, FMT, ACT, M>(acc, v, wg + (long long)n * rowBytes, wu + (long long)n * rowBytes,
                            next ? wg + (long long)(n + QR_WARPS) * rowBytes : nullptr, next ? wu + (long long)(n + QR_WARPS) * rowBytes : nullptr,
                            sg + (long long)n * G, su + (long long)n * G, zg != nullptr ? zg + (long long)n * G : nullptr,
                            zu != nullptr ? zu + (long long)n * G : nullptr, in, rowBytes, nChunks, G, (unsigned long long)gmagic, chunkGroups,
                            0, qr_spans(nChunks));
    pdl_launch();  // the math is done (see the header)
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float g = acc[0][m];
      if (lane == m) out[(long long)m * N + n] = from_float<T>(g / (1.f + expf(-g)) * acc[1][m]);
    }
  }
}

// q/k/v + rope + KV append of one decode step (seq 1, M sequences) in one launch, as gemv.cu's
// gemv_qkv_rope_kv does for 16-bit weights: warp tasks [0, Pq) are the q pairs (rows i and i + half of
// a head), [Pq, Pq + Pk) the k pairs, the rest consecutive v row pairs; q and k are rotated
// (rotate-half, rotaryDim = headDim) at position pos[m] after rounding to T (as matmul then rope
// would), q goes to qOut, k and v to the caches at row m * kvStride + pos[m].
template <typename T, int FMT, int ACT, int M>
__device__ __forceinline__ void qgemvr_qkv_rope(T* qOut, T* cacheK, T* cacheV, const T* x, const unsigned char* wq,
                                                const unsigned char* wk, const unsigned char* wv, const float* sq, const float* sk,
                                                const float* sv, const int* zq, const int* zk, const int* zv, const T* bq, const T* bk,
                                                const T* bv, const int* pos, const T* cosT, const T* sinT, int nHeads, int nKvHeads,
                                                int headDim, int kvStride, int K, int Kp, int rowBytes, int G, int vec, long long gmagic,
                                                int chunkGroups, float staticScale, int pairsPerWarp) {
  const int half = headDim / 2, Nv = nKvHeads * headDim;
  const int Pq = nHeads * half, Pk = nKvHeads * half, Pv = (Nv + 1) >> 1;
  const int lane = threadIdx.x & 31, nChunks = Kp / QFmt<FMT>::CK;
  // Task p → its matrix (kind 0 q, 1 k, 2 v) and rows ra, rb (rows past Nv are the layout's zero padding).
  const auto task = [&](int p, int& kind, int& ra, int& rb) {
    if (p < Pq) {
      kind = 0, ra = (p / half) * headDim + p % half;
    } else if (p < Pq + Pk) {
      p -= Pq;
      kind = 1, ra = (p / half) * headDim + p % half;
    } else {
      p -= Pq + Pk;
      kind = 2, ra = 2 * p;
    }
    rb = kind == 2 ? ra + 1 : ra + half;
  };
  const auto matrix = [&](int kind) { return kind == 0 ? wq : kind == 1 ? wk : wv; };
  const int base = blockIdx.x * pairsPerWarp * QR_WARPS + (threadIdx.x >> 5);  // the warp's task i is base + 8i
  uint4 v[2][QR_SPANS];
  int kind = 0, ra = 0, rb = 0;
  if (base < Pq + Pk + Pv) {
    task(base, kind, ra, rb);
    qr_load(v, matrix(kind) + (long long)ra * rowBytes, matrix(kind) + (long long)rb * rowBytes, 0, nChunks);
  }
  pdl_wait();
  const QrIn<T> in = qr_stage<T, FMT, ACT>(x, M, K, Kp, nullptr, vec, staticScale);
  for (int i = 0; i < pairsPerWarp; ++i) {
    if (base + i * QR_WARPS >= Pq + Pk + Pv) return;
    // Task i is derived again rather than kept from the last iteration: three more live registers
    // made the 4-bit M = 4 instantiations spill.
    if (i > 0) task(base + i * QR_WARPS, kind, ra, rb);
    const bool next = i + 1 < pairsPerWarp && base + (i + 1) * QR_WARPS < Pq + Pk + Pv;
    const unsigned char *na = nullptr, *nb = nullptr;
    if (next) {
      int nk, nra, nrb;
      task(base + (i + 1) * QR_WARPS, nk, nra, nrb);
      na = matrix(nk) + (long long)nra * rowBytes, nb = matrix(nk) + (long long)nrb * rowBytes;
    }
    const float* sc = kind == 0 ? sq : kind == 1 ? sk : sv;
    const int* zp = kind == 0 ? zq : kind == 1 ? zk : zv;
    const T* bias = kind == 0 ? bq : kind == 1 ? bk : bv;
    float acc[2][M];
    qr_rows<T, FMT, ACT, M>(acc, v, matrix(kind), sc, zp, ra, rb, na, nb, in, rowBytes, nChunks, G, (unsigned long long)gmagic, chunkGroups,
                            0, qr_spans(nChunks));
    pdl_launch();  // the math is done (see the header)
    if (kind == 2) {
      qr_store_pair<T, M>(acc, bias, ra, Nv, [&](int m) { return cacheV + ((long long)m * kvStride + pos[m]) * Nv; });
      continue;
    }
    const float ba = bias != nullptr ? to_float(bias[ra]) : 0.f, bb = bias != nullptr ? to_float(bias[rb]) : 0.f;
    const int d = ra % headDim;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (lane != m) continue;
      const long long at = pos[m];
      const float c = to_float(cosT[at * half + d]), s = to_float(sinT[at * half + d]);
      const float x1 = to_float(from_float<T>(acc[0][m] + ba)), x2 = to_float(from_float<T>(acc[1][m] + bb));
      const T o1 = from_float<T>(x1 * c - x2 * s), o2 = from_float<T>(x2 * c + x1 * s);
      if (kind == 0) {
        T* row = qOut + (long long)m * nHeads * headDim;
        row[ra] = o1;
        row[rb] = o2;
      } else {
        T* row = cacheK + ((long long)m * kvStride + at) * Nv;
        row[ra] = o1;
        row[rb] = o2;
      }
    }
  }
}

#define DEF_QGEMVR_M(T, S, FMT, F, ACT, A, M)                                                                                     \
  extern "C" __global__ void __launch_bounds__(QR_WARPS * 32, QR_MIN_BLOCKS) qgemvr3_##F##_##A##_##S##_m##M(                                    \
      T* o0, T* o1, T* o2, const T* x, const unsigned char* w0, const unsigned char* w1, const unsigned char* w2, const float* s0, \
      const float* s1, const float* s2, const int* z0, const int* z1, const int* z2, const T* b0, const T* b1, const T* b2,        \
      const int* perm, int N0, int N1, int N2, int K, int Kp, int rowBytes, int G, int vec, long long gmagic, int chunkGroups,    \
      float staticScale, int pairsPerWarp, int kSplit) {                                                                           \
    qgemvr3<T, FMT, ACT, M>(o0, o1, o2, x, w0, w1, w2, s0, s1, s2, z0, z1, z2, b0, b1, b2, perm, N0, N1, N2, K, Kp, rowBytes, G,  \
                            vec, gmagic, chunkGroups, staticScale, pairsPerWarp, kSplit);                                          \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(QR_WARPS * 32, QR_MIN_BLOCKS) qgemvr_silu_##F##_##A##_##S##_m##M(                                \
      T* out, const T* x, const unsigned char* wg, const unsigned char* wu, const float* sg, const float* su, const int* zg,       \
      const int* zu, const int* perm, int N, int K, int Kp, int rowBytes, int G, int vec, long long gmagic, int chunkGroups,     \
      float staticScale, int pairsPerWarp) {                                                                                       \
    qgemvr_silu<T, FMT, ACT, M>(out, x, wg, wu, sg, su, zg, zu, perm, N, K, Kp, rowBytes, G, vec, gmagic, chunkGroups,           \
                                staticScale, pairsPerWarp);                                                                        \
  }                                                                                                                                \
  extern "C" __global__ void __launch_bounds__(QR_WARPS * 32, QR_MIN_BLOCKS) qgemvr_qkv_rope_##F##_##A##_##S##_m##M(            \
      T* qOut, T* cacheK, T* cacheV, const T* x, const unsigned char* wq, const unsigned char* wk, const unsigned char* wv,         \
      const float* sq, const float* sk, const float* sv, const int* zq, const int* zk, const int* zv, const T* bq, const T* bk,   \
      const T* bv, const int* pos, const T* cosT, const T* sinT, int nHeads, int nKvHeads, int headDim, int kvStride, int K,      \
      int Kp, int rowBytes, int G, int vec, long long gmagic, int chunkGroups, float staticScale, int pairsPerWarp) {             \
    qgemvr_qkv_rope<T, FMT, ACT, M>(qOut, cacheK, cacheV, x, wq, wk, wv, sq, sk, sv, zq, zk, zv, bq, bk, bv, pos, cosT, sinT,     \
                                    nHeads, nKvHeads, headDim, kvStride, K, Kp, rowBytes, G, vec, gmagic, chunkGroups,            \
                                    staticScale, pairsPerWarp);                                                                    \
  }
#define DEF_QGEMVR(T, S, FMT, F, ACT, A)                                                                                          \
  DEF_QGEMVR_M(T, S, FMT, F, ACT, A, 1) DEF_QGEMVR_M(T, S, FMT, F, ACT, A, 2) DEF_QGEMVR_M(T, S, FMT, F, ACT, A, 3)             \
  DEF_QGEMVR_M(T, S, FMT, F, ACT, A, 4)
#define DEF_QGEMVR_ALL(T, S)                                                                                                      \
  DEF_QGEMVR(T, S, QFMT_FP8, fp8, 0, w) DEF_QGEMVR(T, S, QFMT_FP8, fp8, 1, a) DEF_QGEMVR(T, S, QFMT_S8, s8, 0, w)               \
  DEF_QGEMVR(T, S, QFMT_S8, s8, 1, a) DEF_QGEMVR(T, S, QFMT_U4, u4, 0, w)
DEF_QGEMVR_ALL(bf16_t, bf16)
DEF_QGEMVR_ALL(f16_t, f16)
