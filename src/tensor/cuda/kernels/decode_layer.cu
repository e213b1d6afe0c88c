// One decoder layer of a batch-1 decode step in one launch (Llama family: RMSNorm, rope, GQA
// attention, SwiGLU, no biases), for every weight format the row kernels read (qgemv_row.cu:
// FP8 / int8 / 4-bit, x as is or quantized) and for dense weights in the storage type:
//
//   A  xn = rmsnorm(h) · attnNorm;  q, k, v = xn · Wq/Wk/Wvᵀ; rope(q, k); k, v → the caches at pos
//   B  att = softmax(q·Kᵀ·scale)·V over the kvLen cached keys (flash-decoding splits)
//   C  h += att · Woᵀ
//   D  xn = rmsnorm(h) · mlpNorm;  act = silu(xn · Wgᵀ) · (xn · Wuᵀ)
//   E  h += act · Wdᵀ
//
// The grid is one block of 16 warps per SM, all resident, and the stages are separated by grid-wide
// barriers (dl_arrive / dl_wait). What the per-op decode step (7 launches a layer) spends on launch ramps,
// on the norms' own launches and on re-reading x, this spends on 4 barriers — and before each barrier
// every warp has already issued the loads of its first weights of the stage after it (they are no
// stage's output), so the barrier's wait overlaps the weight stream, as programmatic dependent launch
// does between kernels. Opt-in (LLMOPT_CUDA_DECODE_LAYER=1): on the H200 it measured 5–14% slower than
// the per-op path at the Llama-3.2-1B shape and 1–2% faster at 8B (NOTES.md "Fused decode layer").
//
// Row stages (A, C, D, E): a warp (or kSplit consecutive warps of a block, each summing its slice of the
// row's 512-byte spans, added in warp order through shared memory) takes a pair of output rows, as the
// row kernels do: two rows of one matrix (i and i + headDim/2 of a head for q and k, so the rope pair is
// in one warp), or gate row n and up row n. x of the stage sits in shared memory (T; W8A8 also its codes
// in the weights' interleaved order, quantized as qgemv_row.cu does), written by every block from the
// global vector the stage before produced (ld.global.cg: L1 is not coherent between SMs).
// Dense weights: lane L reads bytes [16L, 16L + 16) of each 512-byte span of both rows, i.e. columns
// 8L … 8L + 8 of each 256, with x's same bytes from shared memory.
//
// Attention (stage B): blocks take (KV head, split of 4 32-key tiles) items; a warp scores one tile
// (lane j key j) for one query head of the group, keeping a running max, per-lane sums and P·V (lane l:
// dims l·D/32 …); the block's 4 tile slots merge in shared memory and the block writes its split's
// normalized partial, which the next stage merges while it reads its x (every block reads the few KB of
// partials from L2): no arrival counters, no last-block merge. Splits: ⌈tiles / 4⌉ up to DL_MAX_SPLITS,
// then warps take several tiles.
//
// Rounding is the per-op path's: q/k rounded to T before rope, the projections to T before the residual
// add, the norms' outputs to T; SwiGLU from the f32 sums. Sums are in other orders (tolerance tests).
#include "qrow.cuh"
// llmopt:pdl

constexpr int DL_WARPS = 16;
constexpr int DL_THREADS = DL_WARPS * 32;
constexpr int DL_FMT_DENSE = 3;  // weights in the storage type T: rows of K values
constexpr int DL_MAX_GQ = 8;     // query heads per KV head
constexpr int DL_MAX_SPLITS = 32;
// attention: a block's warps as DL_HEAD_SLOTS query-head slots × DL_TILE_SLOTS tile slots
constexpr int DL_HEAD_SLOTS = 4;
constexpr int DL_TILE_SLOTS = DL_WARPS / DL_HEAD_SLOTS;

__device__ __forceinline__ uint4 dl_cg4(const void* p) {
  uint4 r;
  asm volatile("ld.global.cg.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}
__device__ __forceinline__ unsigned dl_cg1(const void* p) {
  unsigned r;
  asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ uint2 dl_cg2(const void* p) {
  uint2 r;
  asm volatile("ld.global.cg.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
  return r;
}
__device__ __forceinline__ float dl_cgf(const float* p) { return __uint_as_float(dl_cg1(p)); }
template <typename T>
__device__ __forceinline__ T dl_cgT(const T* p) {
  unsigned short r;
  asm volatile("ld.global.cg.u16 %0, [%1];" : "=h"(r) : "l"(p));
  return T{r};
}

// Every block of the grid meets at a barrier in two halves (the grid is one resident block per SM):
// dl_arrive, then work that needs nobody's results (the next stage's first weight loads), then dl_wait —
// so thread 0 arrives before it issues those loads and nothing waits on them. bar[0] counts arrivals,
// bar[1] is the generation: the last block to arrive resets the count and bumps the generation
// (release), the others poll it (acquire), as CUTLASS's generic barrier does; the state is ready for
// the next barrier and the next launch (graph replays included).
__device__ __forceinline__ unsigned dl_arrive(unsigned* bar) {
  __syncthreads();
  unsigned gen = 0;
  if (threadIdx.x == 0) {
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(gen) : "l"(bar + 1) : "memory");
    unsigned old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(old) : "l"(bar) : "memory");
    if (old == gridDim.x - 1) {
      asm volatile("st.relaxed.gpu.global.u32 [%0], 0;" ::"l"(bar) : "memory");
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar + 1) : "memory");
    }
  }
  return gen;
}
__device__ __forceinline__ void dl_wait(const unsigned* bar, unsigned gen) {
  if (threadIdx.x == 0) {
    unsigned now;
    do {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(bar + 1) : "memory");
    } while (now == gen);
  }
  __syncthreads();
}

// Stage timestamps (globaltimer, ns) of every block when the launch is given a buffer: stamps[block · 10 + i]
// (decode-layer.ts DECODE_LAYER_STAMPS), a profiling aid; nullptr in normal runs.
__device__ __forceinline__ void dl_stamp(unsigned long long* stamps, int i) {
  if (stamps == nullptr || threadIdx.x != 0) return;
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  stamps[blockIdx.x * 10 + i] = t;
}
// The same once every warp of the block is there (stage ends).
__device__ __forceinline__ void dl_stamp_block(unsigned long long* stamps, int i) {
  if (stamps == nullptr) return;
  __syncthreads();
  dl_stamp(stamps, i);
}

__device__ __forceinline__ void dl_bar(int id, int threads) { asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory"); }

// The geometry of one stage's rows: stored row bytes, its 64-byte chunks and 512-byte spans, scale
// groups per row.
struct DlGeom {
  int rowBytes, nChunks, nSpans, G;
};
// A pair's two rows: weights, scales and zero points (nullptr) at the rows.
struct DlRows {
  const unsigned char *wa, *wb;
  const float *sa, *sb;
  const int *za, *zb;
};
__device__ __forceinline__ DlRows dl_rows(const unsigned char* w, const float* s, const int* z, int ra, int rb, const DlGeom& g) {
  DlRows r;
  r.wa = w + (long long)ra * g.rowBytes, r.wb = w + (long long)rb * g.rowBytes;
  r.sa = s != nullptr ? s + (long long)ra * g.G : nullptr, r.sb = s != nullptr ? s + (long long)rb * g.G : nullptr;
  r.za = z != nullptr ? z + (long long)ra * g.G : nullptr, r.zb = z != nullptr ? z + (long long)rb * g.G : nullptr;
  return r;
}

// The warp's share of a row stage: its group of kSplit warps (tasks group, group + groups, …) and its
// slice [sBegin, sEnd) of the spans.
struct DlSlice {
  int group, groups, slice, sBegin, sEnd;
};
__device__ __forceinline__ DlSlice dl_slice(int kSplit, int nSpans) {
  DlSlice s;
  const int gw = blockIdx.x * DL_WARPS + (threadIdx.x >> 5);
  s.group = gw / kSplit, s.groups = gridDim.x * DL_WARPS / kSplit, s.slice = gw % kSplit;
  const int per = (nSpans + kSplit - 1) / kSplit;
  s.sBegin = min(nSpans, s.slice * per), s.sEnd = min(nSpans, s.sBegin + per);
  return s;
}

// The lane's 16-byte loads of the round (QR_SPANS spans) starting at span s0 of both rows, zeros at and
// past sEnd.
template <int FMT>
__device__ __forceinline__ void dl_load(uint4 (&v)[2][QR_SPANS], const DlRows& r, int s0, int sEnd, const DlGeom& g) {
  if constexpr (FMT == DL_FMT_DENSE) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < QR_SPANS; ++j) {
      const int off = 512 * (s0 + j) + 16 * lane;
      const bool ok = s0 + j < sEnd && off < g.rowBytes;
      v[0][j] = ok ? ld_stream(r.wa + off) : make_uint4(0u, 0u, 0u, 0u);
      v[1][j] = ok ? ld_stream(r.wb + off) : make_uint4(0u, 0u, 0u, 0u);
    }
  } else {
    qr_load(v, r.wa, r.wb, s0, min(g.nChunks, 8 * sEnd));
  }
}

// Both rows' dot products with x over spans [sBegin, sEnd), reduced over the warp (every lane holds
// them) and scaled; v holds the first round (dl_load) and is spent on return.
template <typename T, int FMT, int ACT>
__device__ __forceinline__ void dl_dot(float (&acc)[2], uint4 (&v)[2][QR_SPANS], const DlRows& r, const QrIn<T>& in, const T* xs,
                                       const DlGeom& g, unsigned long long gmagic, int chunkGroups, int sBegin, int sEnd) {
  if constexpr (FMT == DL_FMT_DENSE) {
    const int lane = threadIdx.x & 31;
    float f[2] = {0.f, 0.f};
    for (int s0 = sBegin; s0 < sEnd; s0 += QR_SPANS) {
#pragma unroll
      for (int j = 0; j < QR_SPANS; ++j) {
        const int off = 512 * (s0 + j) + 16 * lane;
        if (s0 + j >= sEnd || off >= g.rowBytes) break;
        float xf[8], wf[8];
        unpack16(*reinterpret_cast<const uint4*>(reinterpret_cast<const unsigned char*>(xs) + off), xf, xs);
#pragma unroll
        for (int q = 0; q < 2; ++q) {
          unpack16(v[q][j], wf, xs);
#pragma unroll
          for (int i = 0; i < 8; ++i) f[q] = fmaf(wf[i], xf[i], f[q]);
        }
      }
      if (s0 + QR_SPANS < sEnd) dl_load<FMT>(v, r, s0 + QR_SPANS, sEnd, g);
    }
    acc[0] = warp_sum(f[0]), acc[1] = warp_sum(f[1]);
  } else {
    float a[2][1];
    qr_pair<T, FMT, ACT, 1>(a, v, r.wa, r.wb, nullptr, nullptr, r.sa, r.sb, r.za, r.zb, in, g.rowBytes, min(g.nChunks, 8 * sEnd), g.G, gmagic,
                            chunkGroups, sBegin, sEnd);
    acc[0] = a[0][0], acc[1] = a[1][0];
  }
}

// Loads the warp's first round of a row stage of P tasks (rows(p) → DlRows) into v.
template <int FMT, typename Rows>
__device__ __forceinline__ void dl_first(uint4 (&v)[2][QR_SPANS], int P, int kSplit, const DlGeom& g, Rows rows) {
  const DlSlice s = dl_slice(kSplit, g.nSpans);
  if (s.group < P) dl_load<FMT>(v, rows(s.group), s.sBegin, s.sEnd, g);
}

// A row stage: every task's two sums (the slices' added in warp order), handed to store(p, acc) by the
// group's first warp. v holds the warp's first round (dl_first); part: 2 floats per warp of shared memory.
template <typename T, int FMT, int ACT, typename Rows, typename Store>
__device__ __forceinline__ void dl_stage(uint4 (&v)[2][QR_SPANS], int P, int kSplit, const DlGeom& g, const QrIn<T>& in, const T* xs,
                                         unsigned long long gmagic, int chunkGroups, float* part, Rows rows, Store store) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const DlSlice s = dl_slice(kSplit, g.nSpans);
  for (int p = s.group; p < P; p += s.groups) {
    float acc[2];
    dl_dot<T, FMT, ACT>(acc, v, rows(p), in, xs, g, gmagic, chunkGroups, s.sBegin, s.sEnd);
    if (p + s.groups < P) dl_load<FMT>(v, rows(p + s.groups), s.sBegin, s.sEnd, g);
    if (kSplit > 1) {
      if (lane == 0) part[2 * warp] = acc[0], part[2 * warp + 1] = acc[1];
      dl_bar(1 + warp / kSplit, 32 * kSplit);
      if (s.slice == 0) {
        acc[0] = part[2 * warp], acc[1] = part[2 * warp + 1];
        for (int j = 1; j < kSplit; ++j) acc[0] += part[2 * (warp + j)], acc[1] += part[2 * (warp + j) + 1];
      }
      dl_bar(1 + warp / kSplit, 32 * kSplit);
    }
    if (s.slice == 0) store(p, acc);
  }
}

// xs = x (K values of a vector another block wrote: read from L2). K % 8 == 0.
template <typename T>
__device__ __forceinline__ void dl_copy_x(T* xs, const T* x, int K) {
  for (int j = threadIdx.x; j < K / 8; j += DL_THREADS) reinterpret_cast<uint4*>(xs)[j] = dl_cg4(x + 8 * j);
  __syncthreads();
}

// xs = rmsnorm(h) · w as norm.cu computes it (1 / sqrt(mean(h²) + eps), then h · inv · w rounded to T).
// The norm weights are loaded with h (both in flight), kept in registers for the first 4 rounds.
template <typename T>
__device__ __forceinline__ void dl_norm_x(T* xs, const T* h, const T* w, int K, float eps) {
  constexpr int KEPT = 4;
  float ss = 0.f;
  uint4 wk[KEPT];
#pragma unroll
  for (int r = 0; r < KEPT; ++r) {
    const int j = threadIdx.x + r * DL_THREADS;
    if (j < K / 8) wk[r] = *reinterpret_cast<const uint4*>(w + 8 * j);
  }
  for (int j = threadIdx.x; j < K / 8; j += DL_THREADS) {
    const uint4 u = dl_cg4(h + 8 * j);
    reinterpret_cast<uint4*>(xs)[j] = u;
    float f[8];
    unpack16(u, f, h);
#pragma unroll
    for (int i = 0; i < 8; ++i) ss += f[i] * f[i];
  }
  const float inv = 1.f / sqrtf(block_sum(ss) / K + eps);
  for (int j = threadIdx.x, r = 0; j < K / 8; j += DL_THREADS, ++r) {
    float f[8], wf[8];
    unpack16(reinterpret_cast<const uint4*>(xs)[j], f, h);
    uint4 wu;
    if (r < KEPT) {
      wu = wk[0];
#pragma unroll
      for (int q = 1; q < KEPT; ++q)
        if (r == q) wu = wk[q];
    } else {
      wu = *reinterpret_cast<const uint4*>(w + 8 * j);
    }
    unpack16(wu, wf, w);
    T o[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = from_float<T>(f[i] * inv * wf[i]);
    reinterpret_cast<uint4*>(xs)[j] = *reinterpret_cast<const uint4*>(o);
  }
  __syncthreads();
}

// What the row math reads: x as is (T in shared memory), or for ACT 1 its codes and scale.
template <typename T, int FMT, int ACT>
__device__ __forceinline__ QrIn<T> dl_input(const T* xs, unsigned char* codes, float* sx, float* amaxw, int K, int Kp, float staticScale) {
  QrIn<T> in;
  in.x = xs, in.codes = nullptr, in.sx = nullptr;
  if (ACT == 1) {
    qr_quantize_x<T, FMT>(codes, sx, amaxw, xs, 1, K, Kp, 1, staticScale);
    in.stride = Kp, in.lim = Kp, in.vec = 0, in.codes = codes, in.sx = sx;
  } else {
    in.stride = K, in.lim = K, in.vec = 1;
  }
  return in;
}

// Attention splits of kvLen keys: 32-key tiles, DL_TILE_SLOTS · tilesPerWarp of them per split, at most
// DL_MAX_SPLITS splits.
struct DlSplits {
  int nTiles, tilesPerWarp, tilesPerSplit, nSplits;
};
__device__ __forceinline__ DlSplits dl_splits(int kvLen) {
  DlSplits p;
  p.nTiles = (kvLen + 31) / 32;
  p.tilesPerWarp = (p.nTiles + DL_TILE_SLOTS * DL_MAX_SPLITS - 1) / (DL_TILE_SLOTS * DL_MAX_SPLITS);
  p.tilesPerSplit = p.tilesPerWarp * DL_TILE_SLOTS;
  p.nSplits = (p.nTiles + p.tilesPerSplit - 1) / p.tilesPerSplit;
  return p;
}

// Stage B (see the header): every split of every KV head writes its partial — per query head the
// split's normalized output, max and sum — to scratch [split][head][D + 2]; stage C merges them
// (dl_merge_att). A block's warps are DL_HEAD_SLOTS query-head slots × DL_TILE_SLOTS tile slots: warp w
// scores its tiles for query heads w % DL_HEAD_SLOTS (+ DL_HEAD_SLOTS …) of the group, lane j key j of a
// tile (its K row and, D = 64, the tile's V loaded before any math), so a warp holds one head's state
// and the chain from the barrier to the partial is short. smem floats: DL_MAX_GQ · D (q) +
// DL_WARPS · 32 (probabilities) + DL_TILE_SLOTS · DL_MAX_GQ · (D + 2) (the tile slots' partials).
template <typename T, int D>
__device__ __forceinline__ void dl_attention(const T* qbuf, const T* cacheK, const T* cacheV, float* scratch, const int* kvLens, int nHeads,
                                             int nKvHeads, float qScale, float* smem) {
  constexpr int DV = D / 32;  // a lane's dims of V
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int hs = warp % DL_HEAD_SLOTS, ts = warp / DL_HEAD_SLOTS;
  const int gq = nHeads / nKvHeads, Nkv = nKvHeads * D;
  const int kvLen = (int)dl_cg1(kvLens);
  const DlSplits sp = dl_splits(kvLen);
  float* qs = smem;                                  // [gq][D], scaled by scale · log2 e
  float* pw = qs + DL_MAX_GQ * D;                    // [warp][32]: the tile's probabilities
  float* wp = pw + DL_WARPS * 32;                    // [tile slot][head][D + 2]: o, max, sum
  for (int item = blockIdx.x; item < nKvHeads * sp.nSplits; item += gridDim.x) {
    const int g = item % nKvHeads, split = item / nKvHeads;
    const int t0 = split * sp.tilesPerSplit + ts * sp.tilesPerWarp, t1 = min(sp.nTiles, t0 + sp.tilesPerWarp);
    const bool busy = hs < gq && t0 < t1;
    uint4 kv[8];  // the key's first 64 dims (the rest: loaded in the score loop)
    unsigned vv[32];
    const auto loads = [&](int t) {
      const int key = t * 32 + lane;
      const T* kr = cacheK + (long long)(key < kvLen ? key : 0) * Nkv + g * D;
#pragma unroll
      for (int i = 0; i < 8; ++i) kv[i] = dl_cg4(kr + 8 * i);
      if constexpr (D == 64) {
#pragma unroll
        for (int j = 0; j < 32; ++j) {
          const int kk = t * 32 + j;
          vv[j] = dl_cg1(cacheV + (long long)(kk < kvLen ? kk : 0) * Nkv + g * D + 2 * lane);
        }
      }
    };
    if (busy) loads(t0);  // before q is staged: they do not depend on it
    for (int i = tid; i < gq * D; i += DL_THREADS) qs[i] = to_float(dl_cgT(qbuf + (long long)g * gq * D + i)) * qScale;
    __syncthreads();
    for (int h = hs; h < gq; h += DL_HEAD_SLOTS) {
      float m = -INF_F, l = 0.f, o[DV];
#pragma unroll
      for (int e = 0; e < DV; ++e) o[e] = 0.f;
      for (int t = t0; t < t1; ++t) {
        if (t > t0 || h > hs) loads(t);
        const int key = t * 32 + lane;
        const bool valid = key < kvLen;
        float s = 0.f;
#pragma unroll
        for (int c = 0; c < D / 64; ++c) {
          if (c > 0) {
            const T* kr = cacheK + (long long)(valid ? key : 0) * Nkv + g * D + 64 * c;
#pragma unroll
            for (int i = 0; i < 8; ++i) kv[i] = dl_cg4(kr + 8 * i);
          }
          const float* qh = qs + h * D + 64 * c;
#pragma unroll
          for (int i = 0; i < 8; ++i) {
            float kf[8];
            unpack16(kv[i], kf, cacheK);
#pragma unroll
            for (int e = 0; e < 8; ++e) s = fmaf(qh[8 * i + e], kf[e], s);
          }
        }
        const float sv = valid ? s : -INF_F;
        const float nm = fmaxf(m, warp_max(sv));
        const float corr = exp2f(m - nm);
        const float p = valid ? exp2f(sv - nm) : 0.f;
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < DV; ++e) o[e] *= corr;
        m = nm;
        pw[warp * 32 + lane] = p;
        __syncwarp();
        if constexpr (D == 64) {
#pragma unroll
          for (int j = 0; j < 32; ++j) {
            const T lo{(u16)(vv[j] & 0xffffu)}, hi{(u16)(vv[j] >> 16)};
            const float pj = pw[warp * 32 + j];  // 0 past kvLen
            o[0] = fmaf(pj, to_float(lo), o[0]), o[1] = fmaf(pj, to_float(hi), o[1]);
          }
        } else {
          // head dim 128: V here, 16 keys at a time (lane l: dims 4l … 4l + 3)
#pragma unroll
          for (int j0 = 0; j0 < 32; j0 += 16) {
            uint2 v2[16];
#pragma unroll
            for (int j = 0; j < 16; ++j) {
              const int kk = t * 32 + j0 + j;
              v2[j] = dl_cg2(cacheV + (long long)(kk < kvLen ? kk : 0) * Nkv + g * D + DV * lane);
            }
#pragma unroll
            for (int j = 0; j < 16; ++j) {
              const float pj = pw[warp * 32 + j0 + j];
              const unsigned wv[2] = {v2[j].x, v2[j].y};
#pragma unroll
              for (int e = 0; e < 4; e += 2) {
                const T lo{(u16)(wv[e / 2] & 0xffffu)}, hi{(u16)(wv[e / 2] >> 16)};
                o[e] = fmaf(pj, to_float(lo), o[e]), o[e + 1] = fmaf(pj, to_float(hi), o[e + 1]);
              }
            }
          }
        }
        __syncwarp();
      }
      // this tile slot's partial for head h (max −inf, sum 0 when the slot had no tiles)
      const float sum = warp_sum(l);
      float* w = wp + (ts * DL_MAX_GQ + h) * (D + 2);
#pragma unroll
      for (int e = 0; e < DV; ++e) w[DV * lane + e] = o[e];
      if (lane == 0) w[D] = m, w[D + 1] = sum;
    }
    __syncthreads();
    // the tile slots merged: thread per (head, dim)
    for (int i = tid; i < gq * D; i += DL_THREADS) {
      const int h = i / D, d = i % D;
      float M = -INF_F;
      for (int w = 0; w < DL_TILE_SLOTS; ++w) M = fmaxf(M, wp[(w * DL_MAX_GQ + h) * (D + 2) + D]);
      float L = 0.f, O = 0.f;
      for (int w = 0; w < DL_TILE_SLOTS; ++w) {
        const float* e = wp + (w * DL_MAX_GQ + h) * (D + 2);
        const float f = exp2f(e[D] - M);
        L = fmaf(f, e[D + 1], L), O = fmaf(f, e[d], O);
      }
      float* out = scratch + ((long long)split * nHeads + g * gq + h) * (D + 2);
      out[d] = O / L;
      if (d == 0) out[D] = M, out[D + 1] = L;
    }
    __syncthreads();  // shared memory is reused by the next item
  }
}

// xs = the attention output, T [nHeads · D]: the splits' partials (dl_attention) merged, rounded to T.
// ml: nHeads · DL_MAX_SPLITS · 2 floats of shared memory for the splits' max and sum.
template <typename T, int D>
__device__ __forceinline__ void dl_merge_att(T* xs, const float* scratch, const int* kvLens, int nHeads, float* ml) {
  const int nSplits = dl_splits((int)dl_cg1(kvLens)).nSplits;
  for (int i = threadIdx.x; i < nHeads * nSplits; i += DL_THREADS) {
    const uint2 u = dl_cg2(scratch + (long long)i * (D + 2) + D);  // i = split · nHeads + head
    ml[2 * i] = __uint_as_float(u.x), ml[2 * i + 1] = __uint_as_float(u.y);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nHeads * D; e += DL_THREADS) {
    const int h = e / D, d = e % D;
    float M = -INF_F;
    for (int s = 0; s < nSplits; ++s) M = fmaxf(M, ml[2 * (s * nHeads + h)]);
    float L = 0.f, O = 0.f;
    for (int s = 0; s < nSplits; ++s) {
      const float f = exp2f(ml[2 * (s * nHeads + h)] - M) * ml[2 * (s * nHeads + h) + 1];
      L += f, O = fmaf(f, dl_cgf(scratch + ((long long)s * nHeads + h) * (D + 2) + d), O);
    }
    xs[e] = from_float<T>(O / L);
  }
  __syncthreads();
}

// The residual rows of a warp's first task of a residual stage (rows 2p, 2p + 1), loaded when the stage
// starts so the store does not wait for them (dl_residual reloads them for later tasks).
template <typename T>
struct DlResidual {
  int p;
  float r[2];
};
template <typename T>
__device__ __forceinline__ DlResidual<T> dl_residual_first(const T* h, int P, int kSplit, int nSpans) {
  const DlSlice s = dl_slice(kSplit, nSpans);
  DlResidual<T> res;
  res.p = s.group < P && s.slice == 0 && (threadIdx.x & 31) == 0 ? s.group : -1;
  res.r[0] = res.r[1] = 0.f;
  if (res.p >= 0) res.r[0] = to_float(dl_cgT(h + 2 * res.p)), res.r[1] = to_float(dl_cgT(h + 2 * res.p + 1));
  return res;
}
// h[2p + i] = T(h + T(acc[i])): the residual add of the per-op path (matmul rounded, then added).
template <typename T>
__device__ __forceinline__ void dl_residual(T* h, int p, const float (&acc)[2], const DlResidual<T>& first) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float r = p == first.p ? first.r[i] : to_float(dl_cgT(h + 2 * p + i));
    h[2 * p + i] = from_float<T>(r + to_float(from_float<T>(acc[i])));
  }
}

// Shared memory (dynamic, bytes; decode-layer.ts decodeLayerSmemBytes): xs T [xsElems] | codes [codesBytes] |
// sx [8] amaxw [DL_WARPS · 8] part [2 · DL_WARPS] ml [nHeads · DL_MAX_SPLITS · 2] f32 — the attention stage
// reuses it from 0.
template <typename T, int FMT, int ACT, int D>
__device__ __forceinline__ void decode_layer(
    T* h, T* qbuf, T* act, float* scratch, unsigned* sync, T* cacheK, T* cacheV, const int* pos, const int* kvLens, const T* cosT,
    const T* sinT, const T* attnNorm, const T* mlpNorm, const unsigned char* wq, const unsigned char* wk, const unsigned char* wv,
    const unsigned char* wo, const unsigned char* wg, const unsigned char* wu, const unsigned char* wd, const float* sq, const float* sk,
    const float* sv, const float* so, const float* sg, const float* su, const float* sd, const int* zq, const int* zk, const int* zv,
    const int* zo, const int* zg, const int* zu, const int* zd, int H, int I, int nHeads, int nKvHeads, int xsElems, int codesBytes,
    int KpH, int rbH, int KpA, int rbA, int KpI, int rbI, int GH, int GA, int GI, long long gmagic, int chunkGroups, int splitO,
    int splitD, float eps, float qScale, float ssQkv, float ssO, float ssGu, float ssD, unsigned long long* stamps) {
  pdl_launch();  // the next layer's blocks need this one's SMs: they become resident as its blocks exit
  extern __shared__ uint4 dl_shared[];
  unsigned char* base = reinterpret_cast<unsigned char*>(dl_shared);
  T* xs = reinterpret_cast<T*>(base);
  unsigned char* codes = base + ((2 * xsElems + 15) & ~15);
  float* sx = reinterpret_cast<float*>(codes + ((codesBytes + 15) & ~15));
  float* amaxw = sx + 8;
  float* part = amaxw + DL_WARPS * 8;
  float* ml = part + 2 * DL_WARPS;  // the attention splits' max and sum (dl_merge_att)
  unsigned* bar = sync;
  const int lane = threadIdx.x & 31;
  const int qDim = nHeads * D, half = D / 2, Nkv = nKvHeads * D;
  constexpr int CK = FMT == DL_FMT_DENSE ? 256 : QFmt<FMT == DL_FMT_DENSE ? QFMT_FP8 : FMT>::CK;
  const auto geom = [&](int Kp, int rb, int G) {
    DlGeom g;
    g.rowBytes = rb, g.G = G;
    g.nChunks = FMT == DL_FMT_DENSE ? (rb + 63) / 64 : Kp / CK;
    g.nSpans = (rb + 511) / 512;
    return g;
  };
  // Geometry and row lambdas are recomputed where used: kept live across the stages they cost registers
  // the attention stage needs.
  const auto gH = [&]() { return geom(KpH, rbH, GH); };
  const auto gA = [&]() { return geom(KpA, rbA, GA); };
  const auto gI = [&]() { return geom(KpI, rbI, GI); };
  const unsigned long long gm = (unsigned long long)gmagic;

  // A: tasks [0, Pq) q pairs (rows i, i + half of a head), [Pq, Pq + Pk) k pairs, then v row pairs.
  const int Pq = nHeads * half, Pk = nKvHeads * half, Pqkv = Pq + Pk + Nkv / 2;
  const auto qkvRows = [&](int p) {
    const DlGeom g = gH();
    if (p < Pq) {
      const int ra = (p / half) * D + p % half;
      return dl_rows(wq, sq, zq, ra, ra + half, g);
    }
    if (p < Pq + Pk) {
      const int ra = ((p - Pq) / half) * D + (p - Pq) % half;
      return dl_rows(wk, sk, zk, ra, ra + half, g);
    }
    const int ra = 2 * (p - Pq - Pk);
    return dl_rows(wv, sv, zv, ra, ra + 1, g);
  };
  const auto oRows = [&](int p) { return dl_rows(wo, so, zo, 2 * p, 2 * p + 1, gA()); };
  const auto guRows = [&](int p) {  // gate row p and up row p
    const DlGeom g = gH();
    DlRows r = dl_rows(wg, sg, zg, p, p, g);
    const DlRows u = dl_rows(wu, su, zu, p, p, g);
    r.wb = u.wb, r.sb = u.sb, r.zb = u.zb;
    return r;
  };
  const auto dRows = [&](int p) { return dl_rows(wd, sd, zd, 2 * p, 2 * p + 1, gI()); };

  uint4 v[2][QR_SPANS];
  dl_first<FMT>(v, Pqkv, 1, gH(), qkvRows);
  pdl_wait();
  dl_stamp(stamps, 0);
  const int at = pos[0];
  // the rope factors of the warp's first task (q or k pair), loaded while x is normed
  int ropeP = -1;
  float ropeC = 0.f, ropeS = 0.f;
  {
    const DlSlice s0 = dl_slice(1, gH().nSpans);
    if (s0.group < Pq + Pk && lane == 0) {
      const int d = (s0.group < Pq ? s0.group : s0.group - Pq) % half;
      ropeP = s0.group, ropeC = to_float(cosT[(long long)at * half + d]), ropeS = to_float(sinT[(long long)at * half + d]);
    }
  }

  dl_norm_x(xs, h, attnNorm, H, eps);
  {
    const QrIn<T> in = dl_input<T, FMT, ACT>(xs, codes, sx, amaxw, H, KpH, ssQkv);
    dl_stage<T, FMT, ACT>(v, Pqkv, 1, gH(), in, xs, gm, chunkGroups, part, qkvRows, [&](int p, const float (&acc)[2]) {
      if (lane != 0) return;
      if (p >= Pq + Pk) {
        const int ra = 2 * (p - Pq - Pk);
        T* row = cacheV + (long long)at * Nkv;
        row[ra] = from_float<T>(acc[0]), row[ra + 1] = from_float<T>(acc[1]);
        return;
      }
      const bool isK = p >= Pq;
      const int pp = isK ? p - Pq : p, d = pp % half, ra = (pp / half) * D + d;
      const float c = p == ropeP ? ropeC : to_float(cosT[(long long)at * half + d]);
      const float s = p == ropeP ? ropeS : to_float(sinT[(long long)at * half + d]);
      const float x1 = to_float(from_float<T>(acc[0])), x2 = to_float(from_float<T>(acc[1]));
      T* row = isK ? cacheK + (long long)at * Nkv : qbuf;
      row[ra] = from_float<T>(x1 * c - x2 * s), row[ra + half] = from_float<T>(x2 * c + x1 * s);
    });
  }
  dl_stamp_block(stamps, 1);
  dl_wait(bar, dl_arrive(bar));
  dl_stamp(stamps, 2);

  // B
  dl_attention<T, D>(qbuf, cacheK, cacheV, scratch, kvLens, nHeads, nKvHeads, qScale, reinterpret_cast<float*>(base));
  dl_stamp_block(stamps, 3);
  unsigned gen = dl_arrive(bar);
  dl_first<FMT>(v, H / 2, splitO, gA(), oRows);
  dl_wait(bar, gen);
  dl_stamp(stamps, 4);

  // C
  const DlResidual<T> resO = dl_residual_first(h, H / 2, splitO, gA().nSpans);
  dl_merge_att<T, D>(xs, scratch, kvLens, nHeads, ml);
  {
    const QrIn<T> in = dl_input<T, FMT, ACT>(xs, codes, sx, amaxw, qDim, KpA, ssO);
    dl_stage<T, FMT, ACT>(v, H / 2, splitO, gA(), in, xs, gm, chunkGroups, part, oRows, [&](int p, const float (&acc)[2]) {
      if (lane == 0) dl_residual(h, p, acc, resO);
    });
  }
  dl_stamp_block(stamps, 5);
  gen = dl_arrive(bar);
  dl_first<FMT>(v, I, 1, gH(), guRows);
  dl_wait(bar, gen);
  dl_stamp(stamps, 6);

  // D
  dl_norm_x(xs, h, mlpNorm, H, eps);
  {
    const QrIn<T> in = dl_input<T, FMT, ACT>(xs, codes, sx, amaxw, H, KpH, ssGu);
    dl_stage<T, FMT, ACT>(v, I, 1, gH(), in, xs, gm, chunkGroups, part, guRows, [&](int p, const float (&acc)[2]) {
      if (lane == 0) act[p] = from_float<T>(acc[0] / (1.f + expf(-acc[0])) * acc[1]);
    });
  }
  dl_stamp_block(stamps, 7);
  gen = dl_arrive(bar);
  dl_first<FMT>(v, H / 2, splitD, gI(), dRows);
  dl_wait(bar, gen);
  dl_stamp(stamps, 8);

  // E
  const DlResidual<T> resD = dl_residual_first(h, H / 2, splitD, gI().nSpans);
  dl_copy_x(xs, act, I);
  {
    const QrIn<T> in = dl_input<T, FMT, ACT>(xs, codes, sx, amaxw, I, KpI, ssD);
    dl_stage<T, FMT, ACT>(v, H / 2, splitD, gI(), in, xs, gm, chunkGroups, part, dRows, [&](int p, const float (&acc)[2]) {
      if (lane == 0) dl_residual(h, p, acc, resD);
    });
  }
  dl_stamp_block(stamps, 9);
}

#define DEF_DECODE_LAYER(T, S, FMT, F, ACT, A, D)                                                                                   \
  extern "C" __global__ void __launch_bounds__(DL_THREADS, 1) decode_layer_##F##_##A##_##S##_d##D(                                 \
      T* h, T* qbuf, T* act, float* scratch, unsigned* sync, T* cacheK, T* cacheV, const int* pos, const int* kvLens,          \
      const T* cosT, const T* sinT, const T* attnNorm, const T* mlpNorm, const unsigned char* wq, const unsigned char* wk,            \
      const unsigned char* wv, const unsigned char* wo, const unsigned char* wg, const unsigned char* wu, const unsigned char* wd,     \
      const float* sq, const float* sk, const float* sv, const float* so, const float* sg, const float* su, const float* sd,          \
      const int* zq, const int* zk, const int* zv, const int* zo, const int* zg, const int* zu, const int* zd, int H, int I,          \
      int nHeads, int nKvHeads, int xsElems, int codesBytes, int KpH, int rbH, int KpA, int rbA, int KpI, int rbI, int GH, int GA,    \
      int GI, long long gmagic, int chunkGroups, int splitO, int splitD, float eps, float qScale, float ssQkv, float ssO,            \
      float ssGu, float ssD, unsigned long long* stamps) {                                                    \
    decode_layer<T, FMT, ACT, D>(h, qbuf, act, scratch, sync, cacheK, cacheV, pos, kvLens, cosT, sinT, attnNorm, mlpNorm, wq, wk, \
                                 wv, wo, wg, wu, wd, sq, sk, sv, so, sg, su, sd, zq, zk, zv, zo, zg, zu, zd, H, I, nHeads, nKvHeads,  \
                                 xsElems, codesBytes, KpH, rbH, KpA, rbA, KpI, rbI, GH, GA, GI, gmagic, chunkGroups, splitO, splitD,  \
                                 eps, qScale, ssQkv, ssO, ssGu, ssD, stamps);                                                     \
  }
#define DEF_DECODE_LAYER_D(T, S, FMT, F, ACT, A) DEF_DECODE_LAYER(T, S, FMT, F, ACT, A, 64) DEF_DECODE_LAYER(T, S, FMT, F, ACT, A, 128)
#define DEF_DECODE_LAYER_ALL(T, S)                                                                                                  \
  DEF_DECODE_LAYER_D(T, S, DL_FMT_DENSE, dense, 0, w) DEF_DECODE_LAYER_D(T, S, QFMT_FP8, fp8, 0, w)                               \
  DEF_DECODE_LAYER_D(T, S, QFMT_FP8, fp8, 1, a) DEF_DECODE_LAYER_D(T, S, QFMT_S8, s8, 0, w) DEF_DECODE_LAYER_D(T, S, QFMT_S8, s8, 1, a) \
  DEF_DECODE_LAYER_D(T, S, QFMT_U4, u4, 0, w)
DEF_DECODE_LAYER_ALL(bf16_t, bf16)
DEF_DECODE_LAYER_ALL(f16_t, f16)
