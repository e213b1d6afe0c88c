// Quantized Linear weights kept quantized on the GPU (Device.uploadQuantizedLinear), and the matmuls
// that read them: kernels/qgemv.cu at small M (decode), kernels/qgemm.cu around cuBLASLt at large M.
//
// Layout on the device (kernels/quant.cuh): FP8 E4M3 / int8 bytes or 4-bit nibbles, rows padded to
// whole 64-byte chunks (columns past K are zero) with the 16 words of each chunk interleaved, rows
// padded to a multiple of 16; f32 scales [Np, groups]; int32 zero points; act-order as a column
// permutation (columns sorted by group, so every group is contiguous).
//
// What runs natively (anything else: upload returns undefined and the caller dequantizes):
//   FP8 weights (per-tensor or per-channel scale), x as is or quantized to E4M3 (static or dynamic
//     per-token) — compute capability 8.9+;
//   int8 weights (per-tensor, per-channel or groups of 16k columns, zero points when weights only),
//     x as is or quantized to int8 (static or dynamic per-token; per-channel symmetric weights);
//   4-bit pack-quantized weights (per-channel or groups of 32k columns, zero points, act-order), x as is.
// The device dtype must be bf16 or f16 (the f32 device is the exact reference and dequantizes).
//
// Paths by M: M ≤ CudaDevice.qgemvRowMaxM (default 4) one kernels/qgemv_row.cu launch (a warp per
// row pair, CUDA cores); else M ≤ 8 one qgemv launch (tensor-core tiles; rows of x in chunks that fit
// shared memory); 8 < M ≤ 64, or while a CUDA graph is being captured, 8-row slices of those (the
// last slice may take the row kernels; no scratch memory, so a replayed graph never depends on a
// buffer that may move); otherwise W8A8 = quantize_act + cuBLASLt FP8/INT8
// GEMM into an f32/int32 scratch + rescale, weights only = dequant_weight into a scratch + the
// ordinary GEMM. Scratch buffers grow on demand and are kept (counted in memoryStats).

import type { ComputeDType, FakeQuantSpec, QuantizedLinearData, Tensor } from '../device.js';
import type { CudaDevice, CudaInts } from './device.js';
import type { DevicePtr } from './driver.js';
import type { CudaTensor } from './tensor.js';

export type QuantFormat = 'fp8' | 's8' | 'u4';

const FORMAT_CODE: Record<QuantFormat, number> = { fp8: 0, s8: 1, u4: 2 };
/** Columns per 32-bit word. */
const WORD_COLUMNS: Record<QuantFormat, number> = { fp8: 4, s8: 4, u4: 8 };
/** Columns per mma k-span (4 words): the granularity of a scale group. */
const GROUP_QUANTUM: Record<QuantFormat, number> = { fp8: 16, s8: 16, u4: 32 };

const QGEMV_MAX_M = 8;
/** Largest M that goes through (sliced) qgemv instead of the scratch-based large-M path. */
const SLICED_MAX_M = 64;
const QG_UNROLL = 4;
const QG_MAX_WARPS = 16;
/** Largest M the warp-per-row-pair kernels (kernels/qgemv_row.cu) are instantiated for. */
export const QGEMV_ROW_MAX_M = 4;
const QR_WARPS = 8;
/** Shared memory the row kernels may use (staged act-order x or W8A8 codes); beyond it the tile kernels run. */
const ROW_SMEM_BUDGET_BYTES = 200 * 1024;
/** Shared memory qgemv may use for staged x (the rest of the 227 KiB holds the partial tiles). */
const STAGE_BUDGET_BYTES = 160 * 1024;
/** Largest accumulator scratch of the W8A8 path; larger M runs in row slices. */
const ACC_BUDGET_BYTES = 64 * 1024 * 1024;

/** A quantized Linear weight [N, K] on the device (see the header for the layout). */
export class CudaQuantLinear implements Tensor {
  readonly shape: readonly number[];
  freed = false;

  constructor(
    readonly device: CudaDevice,
    readonly dtype: ComputeDType,
    readonly format: QuantFormat,
    /** x quantization the GEMM performs: none, or to the weights' format (fp8 → E4M3, s8 → int8). */
    readonly act: 'none' | 'quantize',
    /** Static per-tensor x scale; 0 = dynamic per token. */
    readonly staticScale: number,
    readonly N: number,
    readonly K: number,
    readonly Np: number,
    readonly Kp: number,
    readonly rowBytes: number,
    readonly groups: number,
    readonly groupSize: number,
    /** ⌈2^32 / (groupSize / group quantum)⌉, the kernels' divide-by-multiply constant; 0 = one group per row. */
    readonly gmagic: number,
    readonly weights: DevicePtr,
    readonly scales: DevicePtr,
    readonly zeros: DevicePtr,
    readonly perm: DevicePtr,
    /** Device bytes of weights + scales + zero points + permutation. */
    readonly storedBytes: number,
    private readonly allocations: { ptr: DevicePtr; bytes: number }[],
  ) {
    this.shape = Object.freeze([N, K]);
  }

  /** @internal */
  releaseAll(): { ptr: DevicePtr; bytes: number }[] {
    return this.allocations;
  }
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** Stored word index (inside a 16-word chunk) of original word w. */
function storedWord(w: number): number {
  return 4 * (w & 3) + (w >> 2);
}

/** Byte offset, in an 8-bit row, of column k (interleaved chunks). */
function bytePos(k: number): number {
  return (k & ~63) | (storedWord((k & 63) >> 2) << 2) | (k & 3);
}

/** qgemv's staged-x row stride in bytes (kernels/qgemv.cu qg_stride). */
function stageStride(format: QuantFormat, act: boolean, Kp: number): number {
  return act ? Kp + 16 : 2 * Kp + (format === 'u4' ? 64 : 32);
}

/** Dynamic shared memory of one qgemv launch (kernels/qgemv.cu qg_smem). */
function qgemvSmemBytes(rows: number, stride: number, warps: number): number {
  return roundUp(rows * stride, 16) + warps * 512 + 512 + 32 + 512;
}

/**
 * Warps sharing a row pair in qgemvr3 (kernels/qgemv_row.cu): 4 for rows of 3–4 rounds of 2048 bytes
 * (down_proj of the 1B shape: K 8192 of FP8), else 1. H200, batch-1 step (`…-s5-call{2,3}/`): 4-way at
 * the 1B shape FP8 0.860 → 0.850 ms, FP8_DYNAMIC 0.914 → 0.881, W8A8 0.835 → 0.817; 8-way on the 8B
 * shape's down_proj (7 rounds, K 14336) instead of the tiles: FP8 3.352 → 3.659 ms, so longer rows keep
 * the tiles (ROW_SPLIT_MAX_BYTES) and rows of 2 rounds the one warp they measured with.
 */
export function rowSplit(rowBytes: number): number {
  const rounds = Math.ceil(rowBytes / 2048);
  return rounds >= 3 && rounds <= 4 ? 4 : 1;
}
/** Longest stored rows qgemvr3 takes when qgemvRowSplit is on, whatever qgemvRowMaxK says. */
const ROW_SPLIT_MAX_BYTES = 8192;

/** Dynamic shared memory of one qgemv_row launch (kernels/qgemv_row.cu qr_stage): 0 unless x is staged. */
function qgemvRowSmemBytes(w: CudaQuantLinear, rows: number, elem: number): number {
  if (w.act === 'quantize') return roundUp(rows * w.Kp, 16) + 32 + QR_WARPS * 32;
  return w.perm !== 0n ? rows * w.Kp * elem : 0;
}

/**
 * Act-order: column permutation putting the columns of each group together (stable), or undefined
 * when gIdx is the plain layout. null: the groups are not all `groupSize` columns (not runnable).
 * @internal exported for test/quant-layout.test.ts
 */
export function groupPermutation(gIdx: Int32Array, groups: number, groupSize: number): Int32Array | undefined | null {
  let plain = true;
  const count = new Int32Array(groups);
  for (let c = 0; c < gIdx.length; c++) {
    const g = gIdx[c]!;
    if (!(g >= 0 && g < groups)) return null;
    count[g]!++;
    if (g !== Math.floor(c / groupSize)) plain = false;
  }
  if (plain) return undefined;
  if (count.some((n) => n !== groupSize)) return null;
  const next = Int32Array.from({ length: groups }, (_, g) => g * groupSize);
  const perm = new Int32Array(gIdx.length);
  for (let c = 0; c < gIdx.length; c++) perm[next[gIdx[c]!]!++] = c;
  return perm;
}

/** The weights in the device layout: [Np, rowBytes] bytes. @internal exported for test/quant-layout.test.ts */
export function packWeights(w: QuantizedLinearData, format: QuantFormat, Np: number, rowBytes: number, perm: Int32Array | undefined): Uint8Array {
  const N = w.outFeatures, K = w.inFeatures;
  const out = new Uint8Array(Np * rowBytes);
  const codes = w.codes;
  if (perm === undefined && format === 'u4' && codes.type === 'packed') {
    // whole words: copy with the chunk interleave
    const src = codes.words;
    const srcWords = Math.ceil(K / 8);
    const dst = new Uint32Array(out.buffer);
    const dstWords = rowBytes / 4;
    for (let n = 0; n < N; n++) {
      const s = n * srcWords, d = n * dstWords;
      for (let j = 0; j < srcWords; j++) dst[d + (j & ~15) + storedWord(j & 15)] = src[s + j]!;
    }
    return out;
  }
  if (perm === undefined && format !== 'u4' && (K % 4 === 0 || codes.type === 'packed')) {
    // 8-bit codes, whole 4-byte words per row
    let src: Uint32Array;
    let srcWords: number;
    let flip = 0;
    if (codes.type === 'packed') {
      src = new Uint32Array(codes.words.buffer, codes.words.byteOffset, codes.words.length);
      srcWords = Math.ceil(K / 4);
      flip = 0x80808080; // stored u = q + 128 → int8 q
    } else {
      const bytes = codes.type === 'fp8_e4m3' ? codes.bytes : new Uint8Array(codes.values.buffer, codes.values.byteOffset, codes.values.length);
      const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
      src = new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
      srcWords = K / 4;
    }
    const dst = new Uint32Array(out.buffer);
    const dstWords = rowBytes / 4;
    for (let n = 0; n < N; n++) {
      const s = n * srcWords, d = n * dstWords;
      for (let j = 0; j < srcWords; j++) dst[d + (j & ~15) + storedWord(j & 15)] = (src[s + j]! ^ flip) >>> 0;
    }
    return out;
  }
  // element by element (act-order permutation, or rows that are not whole words)
  const code = codeReader(w);
  for (let n = 0; n < N; n++) {
    const row = n * rowBytes;
    for (let j = 0; j < K; j++) {
      const c = code(n, perm !== undefined ? perm[j]! : j);
      if (format === 'u4') {
        const word = j >> 3;
        const at = row + 4 * ((word & ~15) + storedWord(word & 15)) + ((j & 7) >> 1);
        out[at] = out[at]! | (c << (4 * (j & 1)));
      } else {
        out[row + bytePos(j)] = c;
      }
    }
  }
  return out;
}

/** (row, column) → the stored code: an E4M3 byte, an int8 byte, or a 4-bit u = q + 8. */
function codeReader(w: QuantizedLinearData): (r: number, c: number) => number {
  const K = w.inFeatures;
  const codes = w.codes;
  switch (codes.type) {
    case 'fp8_e4m3':
      return (r, c) => codes.bytes[r * K + c]!;
    case 'int8':
      return (r, c) => codes.values[r * K + c]! & 0xff;
    case 'packed': {
      const bits = codes.bits, per = 32 / bits, words = Math.ceil(K / per), mask = (1 << bits) - 1;
      const half = 1 << (bits - 1);
      return (r, c) => {
        const u = (codes.words[r * words + Math.floor(c / per)]! >>> ((c % per) * bits)) & mask;
        return bits === 8 ? (u - half) & 0xff : u;
      };
    }
  }
}

/** How a quantized Linear is laid out on the device (see the header). */
export interface QuantLayout {
  format: QuantFormat;
  act: 'none' | 'quantize';
  staticScale: number;
  N: number;
  K: number;
  Np: number;
  Kp: number;
  rowBytes: number;
  G: number;
  groupSize: number;
  gmagic: number;
  perm?: Int32Array;
}

/**
 * The device layout of `w` when the kernels can run it natively on a device of `dtype` and compute
 * capability `cc` (major · 10 + minor), else undefined (see the header for what runs).
 */
export function planLayout(w: QuantizedLinearData, activations: FakeQuantSpec | undefined, dtype: ComputeDType, cc: number): QuantLayout | undefined {
  if (dtype === 'f32' || cc < 80) return undefined;
  const N = w.outFeatures, K = w.inFeatures, G = w.groups;
  if (!(Number.isInteger(N) && N > 0 && Number.isInteger(K) && K > 0 && Number.isInteger(G) && G >= 1 && K % G === 0)) return undefined;
  const format: QuantFormat = w.codes.type === 'fp8_e4m3' ? 'fp8' : w.codes.type === 'int8' || w.codes.bits === 8 ? 's8' : 'u4';
  if (format === 'fp8' && cc < 89) return undefined;
  const groupSize = K / G;
  if (G > 1 && groupSize % GROUP_QUANTUM[format] !== 0) return undefined;
  if (format === 'fp8' && (G > 1 || w.zeroPoint !== undefined)) return undefined;
  if (w.scale.length !== 1 && w.scale.length !== N * G) return undefined;
  if (w.zeroPoint !== undefined && w.zeroPoint.length !== w.scale.length) return undefined;
  let act: QuantLayout['act'] = 'none';
  let staticScale = 0;
  if (activations !== undefined) {
    const wants = format === 'fp8' ? 'fp8_e4m3' : format === 's8' ? 'int8' : undefined;
    if (activations.format !== wants || G > 1 || w.zeroPoint !== undefined) return undefined;
    const s = activations.scale;
    if (s !== undefined && !(s > 0 && Number.isFinite(s) && Math.fround(s) === s)) return undefined;
    act = 'quantize';
    staticScale = s ?? 0;
  }
  let perm: Int32Array | undefined;
  if (w.gIdx !== undefined && G > 1) {
    if (w.gIdx.length !== K) return undefined;
    const p = groupPermutation(w.gIdx, G, groupSize);
    if (p === null) return undefined;
    perm = p;
  }
  const Kp = roundUp(K, 16 * WORD_COLUMNS[format]);
  const span = groupSize / GROUP_QUANTUM[format];
  return {
    format, act, staticScale, N, K, Np: roundUp(N, 16), Kp, rowBytes: format === 'u4' ? Kp / 2 : Kp, G, groupSize,
    gmagic: G > 1 ? Math.ceil(2 ** 32 / span) : 0, perm,
  };
}

/** Device buffers that grow on demand and are kept (large-M scratch). */
class Scratch {
  private ptr: DevicePtr = 0n;
  private bytes = 0;
  constructor(private readonly dev: CudaDevice) {}

  get(bytes: number): DevicePtr {
    if (bytes > this.bytes) {
      if (this.bytes > 0) this.dev.releaseBytes(this.ptr, this.bytes);
      this.bytes = roundUp(bytes, 1 << 20);
      this.ptr = this.dev.allocateBytes(this.bytes);
    }
    return this.ptr;
  }
}

export class QuantLinearOps {
  private readonly dequantized: Scratch;
  private readonly codes: Scratch;
  private readonly tokenScales: Scratch;
  private readonly accumulators: Scratch;

  constructor(private readonly dev: CudaDevice) {
    this.dequantized = new Scratch(dev);
    this.codes = new Scratch(dev);
    this.tokenScales = new Scratch(dev);
    this.accumulators = new Scratch(dev);
  }

  /** Device.uploadQuantizedLinear: the weight in the device layout, or undefined when not runnable natively. */
  upload(w: QuantizedLinearData, activations?: FakeQuantSpec): CudaQuantLinear | undefined {
    const dev = this.dev;
    const [major, minor] = dev.info.computeCapability;
    const plan = planLayout(w, activations, dev.dtype, major * 10 + minor);
    if (plan === undefined) return undefined;
    const { format, N, Np, G, rowBytes } = plan;
    const packed = packWeights(w, format, Np, rowBytes, plan.perm);
    const scales = new Float32Array(Np * G);
    if (w.scale.length === 1) scales.fill(w.scale[0]!, 0, N * G);
    else scales.set(w.scale);
    const zeros = w.zeroPoint !== undefined ? new Int32Array(Np * G) : undefined;
    if (zeros !== undefined) {
      if (w.zeroPoint!.length === 1) zeros.fill(w.zeroPoint![0]!, 0, N * G);
      else zeros.set(w.zeroPoint!);
    }
    const allocations: { ptr: DevicePtr; bytes: number }[] = [];
    const put = (data: ArrayBufferView | undefined): DevicePtr => {
      if (data === undefined) return 0n;
      const ptr = dev.allocateBytes(data.byteLength);
      allocations.push({ ptr, bytes: data.byteLength });
      dev.driver.copyToDevice(ptr, data, data.byteLength);
      return ptr;
    };
    const wPtr = put(packed);
    const sPtr = put(scales);
    const zPtr = put(zeros);
    const pPtr = put(plan.perm);
    const bytes = allocations.reduce((a, x) => a + x.bytes, 0);
    return new CudaQuantLinear(dev, dev.dtype, format, plan.act, plan.staticScale, N, plan.K, Np, plan.Kp, rowBytes, G, plan.groupSize, plan.gmagic,
      wPtr, sPtr, zPtr, pPtr, bytes, allocations);
  }

  free(t: CudaQuantLinear): void {
    if (t.freed) return;
    this.dev.noCapture('free');
    t.freed = true;
    for (const a of t.releaseAll()) this.dev.releaseBytes(a.ptr, a.bytes);
  }

  /** out[M,N] = x[M,K] · wᵀ (+ bias). */
  matmul(out: Tensor, x: Tensor, w: CudaQuantLinear, bias?: Tensor): void {
    const { o, xc, bc } = this.check('matmul', out, x, w, bias);
    const M = xc.rowCount;
    if (M === 0) return;
    if (M <= SLICED_MAX_M || this.dev.capturingGraph) {
      this.sliced(M, (r0, rows) => this.gemv(this.dev.rows(xc, r0, rows), [this.dev.rows(o, r0, rows)], [w], [bc]));
      return;
    }
    if (w.act === 'quantize') this.largeW8A8(o, xc, w, bc);
    else this.largeDequantized(o, xc, w, bc);
  }

  /** matmulMany with quantized weights: one qgemv launch for compatible weights at small M, else one matmul each. */
  matmulMany(outs: readonly Tensor[], x: Tensor, weights: readonly Tensor[], biases: readonly (Tensor | undefined)[]): void {
    const xc = this.dev.tensor(x, 'matmulMany', 'x');
    const M = xc.rowCount;
    const qs = weights.filter((w): w is CudaQuantLinear => w instanceof CudaQuantLinear);
    if (qs.length !== weights.length || !this.compatible(qs) || M > SLICED_MAX_M || M === 0 || outs.length !== weights.length) {
      for (let i = 0; i < weights.length; i++) this.dev.matmul(outs[i]!, x, weights[i]!, biases[i]);
      return;
    }
    const checked = qs.map((w, i) => this.check('matmulMany', outs[i]!, x, w, biases[i]));
    this.sliced(M, (r0, rows) =>
      this.gemv(this.dev.rows(xc, r0, rows), checked.map((c) => this.dev.rows(c.o, r0, rows)), qs, checked.map((c) => c.bc)));
  }

  /** out = silu(x · wGateᵀ) · (x · wUpᵀ): one qgemv_silu launch at small M, else two matmuls and siluMul. */
  matmulSiluMul(out: Tensor, x: Tensor, wGate: Tensor, wUp: Tensor, gate: Tensor, up: Tensor): void {
    const xc = this.dev.tensor(x, 'matmulSiluMul', 'x');
    const M = xc.rowCount;
    const g = wGate instanceof CudaQuantLinear ? wGate : undefined;
    const u = wUp instanceof CudaQuantLinear ? wUp : undefined;
    if (g === undefined || u === undefined || !this.compatible([g, u]) || g.N !== u.N || M > SLICED_MAX_M || M === 0) {
      this.dev.matmul(gate, x, wGate);
      this.dev.matmul(up, x, wUp);
      this.dev.siluMul(out, gate, up);
      return;
    }
    const { o } = this.check('matmulSiluMul', out, x, g);
    if (this.rowKernels(g, M)) {
      const shape = this.rowLaunchShape(g, xc, M, g.N, 'qgemvr_silu', 'ppppppppp' + 'iiiiii' + 'q' + 'i' + 'f' + 'i');
      this.dev.kernels.launch(shape.kernel, [shape.blocks], [QR_WARPS * 32], shape.smem, [
        o.ptr, xc.ptr, g.weights, u.weights, g.scales, u.scales, g.zeros, u.zeros, g.perm,
        g.N, g.K, g.Kp, g.rowBytes, g.groups, shape.vec, g.gmagic, shape.chunkGroups, g.staticScale, shape.pairsPerWarp,
      ]);
      return;
    }
    this.sliced(M, (r0, rows) => {
      const xs = this.dev.rows(xc, r0, rows), os = this.dev.rows(o, r0, rows);
      const { kernel, threads, smem, vec } = this.launchShape(g, xs, rows, 'qgemv_silu', 'ppppppppp' + 'iiiiiii' + 'q' + 'f');
      this.dev.kernels.launch(kernel, [g.Np / 16], [threads], smem, [
        os.ptr, xs.ptr, g.weights, u.weights, g.scales, u.scales, g.zeros, u.zeros, g.perm,
        g.N, rows, g.K, g.Kp, g.rowBytes, g.groups, vec, g.gmagic, g.staticScale,
      ]);
    });
  }

  /**
   * CudaDevice.qkvRopeKvAt with quantized q/k/v weights (shapes already checked there): one
   * qgemvr_qkv_rope launch where the row kernels serve them (M ≤ 4, same layout, no act-order); false,
   * queueing nothing, otherwise.
   */
  qkvRopeKvAt(a: {
    q: Tensor; cacheK: Tensor; cacheV: Tensor; x: Tensor; bq?: Tensor; bk?: Tensor; bv?: Tensor;
    positions: CudaInts; cos: Tensor; sin: Tensor; nHeads: number; nKvHeads: number; headDim: number; kvStride: number;
  }, ws: CudaQuantLinear[]): boolean {
    const dev = this.dev;
    const [wq, wk, wv] = ws as [CudaQuantLinear, CudaQuantLinear, CudaQuantLinear];
    const x = dev.tensor(a.x, 'qkvRopeKvAt', 'x');
    const M = x.rowCount, hd = a.headDim;
    if (!this.compatible(ws) || !this.rowKernels(wq, M)) return false;
    dev.ints(a.positions, 'qkvRopeKvAt', 'positions');
    const pairs = a.nHeads * (hd / 2) + a.nKvHeads * (hd / 2) + Math.ceil((a.nKvHeads * hd) / 2);
    const shape = this.rowLaunchShape(wq, x, M, pairs, 'qgemvr_qkv_rope', 'ppppppppppppppppppp' + 'iiiiiiiii' + 'q' + 'i' + 'f' + 'i');
    const p = (t: Tensor | undefined) => (t === undefined ? 0n : dev.tensor(t, 'qkvRopeKvAt', 'bias').ptr);
    const t = (v: Tensor, name: string) => dev.tensor(v, 'qkvRopeKvAt', name).ptr;
    dev.kernels.launch(shape.kernel, [shape.blocks], [QR_WARPS * 32], shape.smem, [
      t(a.q, 'q'), t(a.cacheK, 'cacheK'), t(a.cacheV, 'cacheV'), x.ptr, wq.weights, wk.weights, wv.weights, wq.scales, wk.scales, wv.scales,
      wq.zeros, wk.zeros, wv.zeros, p(a.bq), p(a.bk), p(a.bv), a.positions.ptr, t(a.cos, 'cos'), t(a.sin, 'sin'),
      a.nHeads, a.nKvHeads, hd, a.kvStride, wq.K, wq.Kp, wq.rowBytes, wq.groups, shape.vec, wq.gmagic, shape.chunkGroups, wq.staticScale,
      shape.pairsPerWarp,
    ]);
    return true;
  }

  // --- small M ------------------------------------------------------------------------------

  /** Weights one qgemv launch can serve together: same format, x handling, K and groups, no permutation. */
  private compatible(ws: readonly CudaQuantLinear[]): boolean {
    const a = ws[0];
    if (a === undefined) return false;
    return ws.every((w) => w.format === a.format && w.act === a.act && w.staticScale === a.staticScale && w.K === a.K &&
      w.groups === a.groups && (ws.length === 1 || w.perm === 0n));
  }

  /** Runs fn over row slices of at most 8 (the qgemv kernels' M). */
  private sliced(M: number, fn: (r0: number, rows: number) => void): void {
    for (let r0 = 0; r0 < M; r0 += QGEMV_MAX_M) fn(r0, Math.min(QGEMV_MAX_M, M - r0));
  }

  private launchShape(w: CudaQuantLinear, x: CudaTensor, rows: number, family: string, signature: string) {
    const act = w.act === 'quantize';
    const nChunks = w.Kp / (16 * WORD_COLUMNS[w.format]);
    // ≥ 4 warps: the block's 128 first threads write the tile's 16 × 8 outputs
    const warps = Math.min(QG_MAX_WARPS, Math.max(4, Math.ceil(nChunks / QG_UNROLL)));
    const stride = stageStride(w.format, act, w.Kp);
    const smem = qgemvSmemBytes(rows, stride, warps);
    const vec = w.K % 8 === 0 && x.ptr % 16n === 0n && w.perm === 0n ? 1 : 0;
    const name = `${family}_${w.format}_${act ? 'a' : 'w'}_${this.dev.suffix}`;
    return { kernel: this.dev.kernel('qgemv', name, signature), threads: warps * 32, smem, vec };
  }

  /**
   * Whether M rows of x go to the row kernels: M ≤ qgemvRowMaxM, their staged x fits shared memory, and
   * the weights are ones the row kernels measured faster on (H200, bench:quant 2026-12-01, batch-1 step):
   * FP8 / int8 with K ≤ maxK (qgemvRowMaxK: q/k/v, o, gate/up, 1.03–1.39× the tile kernel per launch; single
   * Linears with rows of ≤ ROW_SPLIT_MAX_BYTES take qgemvr3 whatever K is, rows of 3–4 rounds split between
   * warps, see rowSplit), 4-bit only with qgemvRow4Bit (issue-bound: the whole step 1.103 ms vs 0.926 ms on
   * the tiles). The switches are CudaDevice fields for A/B runs and the tests.
   */
  private rowKernels(w: CudaQuantLinear, M: number, maxK = this.dev.qgemvRowMaxK): boolean {
    return M >= 1 && M <= Math.min(QGEMV_ROW_MAX_M, this.dev.qgemvRowMaxM) && (w.format !== 'u4' || this.dev.qgemvRow4Bit) && w.K <= maxK &&
      qgemvRowSmemBytes(w, M, this.dev.dtype === 'f32' ? 4 : 2) <= ROW_SMEM_BUDGET_BYTES;
  }

  /**
   * A qgemv_row launch over `pairs` warp tasks (row pairs). Blocks that stage x (W8A8 codes, act-order)
   * take up to 4 pairs per warp while that leaves ≥ 2 blocks per SM, so fewer blocks repeat the staging.
   */
  private rowLaunchShape(w: CudaQuantLinear, x: CudaTensor, M: number, pairs: number, family: string, signature: string, kSplit = 1) {
    const act = w.act === 'quantize';
    const smem = qgemvRowSmemBytes(w, M, this.dev.dtype === 'f32' ? 4 : 2);
    const blocks1 = Math.ceil(pairs / (QR_WARPS / kSplit));
    const fit = blocks1 / (2 * this.dev.info.multiprocessors);
    // Split pairs: as many per warp as keep the grid within 2 blocks per SM (one wave, every block's first
    // rounds in flight before the wait); otherwise only blocks that stage x take several.
    const pairsPerWarp = Math.max(1, Math.min(4, kSplit > 1 ? Math.ceil(fit) : smem > 0 ? Math.floor(fit) : 1));
    const vec = w.K % 8 === 0 && x.ptr % 16n === 0n ? 1 : 0;
    const chunkGroups = w.groups > 1 && w.groupSize % (16 * WORD_COLUMNS[w.format]) === 0 ? 1 : 0;
    const name = `${family}_${w.format}_${act ? 'a' : 'w'}_${this.dev.suffix}_m${M}`;
    return { kernel: this.dev.kernel('qgemv_row', name, signature), blocks: Math.ceil(pairs / ((QR_WARPS / kSplit) * pairsPerWarp)), smem, vec, chunkGroups, pairsPerWarp };
  }

  /** outs[i] = x · ws[i]ᵀ (+ biases[i]) for x of at most 8 rows, in launches whose staged x fits shared memory. */
  private gemv(x: CudaTensor, outs: CudaTensor[], ws: CudaQuantLinear[], biases: (CudaTensor | undefined)[]): void {
    const w0 = ws[0]!;
    const split = this.dev.qgemvRowSplit && w0.rowBytes <= ROW_SPLIT_MAX_BYTES;
    if (this.rowKernels(w0, x.rowCount, split ? Infinity : this.dev.qgemvRowMaxK)) {
      const M = x.rowCount;
      const pairs = ws.reduce((a, w) => a + Math.ceil(w.N / 2), 0);
      const kSplit = split ? rowSplit(w0.rowBytes) : 1;
      const shape = this.rowLaunchShape(w0, x, M, pairs, 'qgemvr3', 'ppppppppppppppppp' + 'iiiiiiii' + 'q' + 'i' + 'f' + 'ii', kSplit);
      const at = <T>(arr: T[], i: number, pick: (v: T) => DevicePtr): DevicePtr => (arr[i] !== undefined ? pick(arr[i]!) : 0n);
      const N = [0, 1, 2].map((i) => ws[i]?.N ?? 0);
      this.dev.kernels.launch(shape.kernel, [shape.blocks], [QR_WARPS * 32], shape.smem, [
        at(outs, 0, (t) => t.ptr), at(outs, 1, (t) => t.ptr), at(outs, 2, (t) => t.ptr), x.ptr,
        at(ws, 0, (t) => t.weights), at(ws, 1, (t) => t.weights), at(ws, 2, (t) => t.weights),
        at(ws, 0, (t) => t.scales), at(ws, 1, (t) => t.scales), at(ws, 2, (t) => t.scales),
        at(ws, 0, (t) => t.zeros), at(ws, 1, (t) => t.zeros), at(ws, 2, (t) => t.zeros),
        biases[0]?.ptr ?? 0n, biases[1]?.ptr ?? 0n, biases[2]?.ptr ?? 0n, w0.perm,
        N[0]!, N[1]!, N[2]!, w0.K, w0.Kp, w0.rowBytes, w0.groups, shape.vec, w0.gmagic, shape.chunkGroups, w0.staticScale, shape.pairsPerWarp,
        kSplit,
      ]);
      return;
    }
    const rowsPerLaunch = Math.max(1, Math.min(x.rowCount, Math.floor(STAGE_BUDGET_BYTES / stageStride(w0.format, w0.act === 'quantize', w0.Kp))));
    for (let r0 = 0; r0 < x.rowCount; r0 += rowsPerLaunch) {
      const rows = Math.min(rowsPerLaunch, x.rowCount - r0);
      const xs = rows === x.rowCount ? x : this.dev.rows(x, r0, rows);
      const os = outs.map((o) => (rows === x.rowCount ? o : this.dev.rows(o, r0, rows)));
      const { kernel, threads, smem, vec } = this.launchShape(w0, xs, rows, 'qgemv3', 'ppppppppppppppppp' + 'iiiiiiiii' + 'q' + 'f');
      const at = <T>(arr: T[], i: number, pick: (v: T) => DevicePtr): DevicePtr => (arr[i] !== undefined ? pick(arr[i]!) : 0n);
      const N = [0, 1, 2].map((i) => ws[i]?.N ?? 0);
      const tiles = [0, 1, 2].reduce((a, i) => a + (ws[i] !== undefined ? ws[i]!.Np / 16 : 0), 0);
      this.dev.kernels.launch(kernel, [tiles], [threads], smem, [
        at(os, 0, (t) => t.ptr), at(os, 1, (t) => t.ptr), at(os, 2, (t) => t.ptr), xs.ptr,
        at(ws, 0, (t) => t.weights), at(ws, 1, (t) => t.weights), at(ws, 2, (t) => t.weights),
        at(ws, 0, (t) => t.scales), at(ws, 1, (t) => t.scales), at(ws, 2, (t) => t.scales),
        at(ws, 0, (t) => t.zeros), at(ws, 1, (t) => t.zeros), at(ws, 2, (t) => t.zeros),
        biases[0]?.ptr ?? 0n, biases[1]?.ptr ?? 0n, biases[2]?.ptr ?? 0n, w0.perm,
        N[0]!, N[1]!, N[2]!, rows, w0.K, w0.Kp, w0.rowBytes, w0.groups, vec, w0.gmagic, w0.staticScale,
      ]);
    }
  }

  // --- large M ------------------------------------------------------------------------------

  /** W8A8: quantize x (codes in the weights' column order + per-token scales), FP8/INT8 GEMM, rescale (+ bias). */
  private largeW8A8(o: CudaTensor, x: CudaTensor, w: CudaQuantLinear, bias: CudaTensor | undefined): void {
    const dev = this.dev;
    const fp8 = w.format === 'fp8';
    const elem = dev.dtype === 'f32' ? 4 : 2;
    const quantize = dev.kernel('qgemm', `quantize_act_${dev.suffix}`, 'pppiiif');
    const rescale = dev.kernel('qgemm', `rescale_${fp8 ? 'f32' : 'i32'}_${dev.suffix}`, 'pppppii');
    const sliceRows = Math.max(1, Math.min(x.rowCount, 65535, Math.floor(ACC_BUDGET_BYTES / (w.Np * 4))));
    for (let r0 = 0; r0 < x.rowCount; r0 += sliceRows) {
      const rows = Math.min(sliceRows, x.rowCount - r0);
      const codes = this.codes.get(rows * w.Kp);
      const sx = this.tokenScales.get(rows * 4);
      const acc = this.accumulators.get(rows * w.Np * 4);
      dev.kernels.launch(quantize, [rows], [256], 0, [codes, sx, x.ptr + BigInt(r0 * w.K * elem), w.K, w.Kp, fp8 ? 1 : 0, w.staticScale]);
      dev.kernels.profiler?.begin(`cublasLt ${fp8 ? 'fp8' : 'int8'} gemm M${rows} N${w.Np} K${w.Kp}`);
      dev.blas.gemm({
        M: rows, N: w.Np, K: w.Kp,
        a: { ptr: codes, type: fp8 ? 'fp8e4m3' : 'i8', trans: false, ld: w.Kp },
        b: { ptr: w.weights, type: fp8 ? 'fp8e4m3' : 'i8', trans: true, ld: w.rowBytes },
        d: { ptr: acc, type: fp8 ? 'f32' : 'i32', ld: w.Np },
      });
      dev.kernels.profiler?.end();
      dev.kernels.launch(rescale, [Math.min(Math.ceil(w.N / 256), 64), rows], [256], 0, [
        o.ptr + BigInt(r0 * w.N * elem), acc, sx, w.scales, bias?.ptr ?? 0n, w.N, w.Np,
      ]);
    }
  }

  /** Weights only: dequantize into a scratch [N, K] of the device dtype, then the ordinary GEMM. */
  private largeDequantized(o: CudaTensor, x: CudaTensor, w: CudaQuantLinear, bias: CudaTensor | undefined): void {
    const dev = this.dev;
    const elem = dev.dtype === 'f32' ? 4 : 2;
    const wd = this.dequantized.get(w.N * w.K * elem);
    const k = dev.kernel('qgemm', `dequant_weight_${w.format}_${dev.suffix}`, 'pppppiiiii');
    const words = (w.N * w.rowBytes) / 4;
    dev.kernels.launch(k, [Math.min(Math.ceil(words / 256), dev.info.multiprocessors * 16)], [256], 0, [
      wd, w.weights, w.scales, w.zeros, w.perm, w.N, w.K, w.rowBytes, w.groups, w.groupSize,
    ]);
    dev.kernels.profiler?.begin(`cublasLt gemm M${x.rowCount} N${w.N} K${w.K}`);
    dev.blas.matmul(dev.dtype, x.rowCount, w.N, w.K, o.ptr, x.ptr, wd, bias?.ptr);
    dev.kernels.profiler?.end();
  }

  private check(op: string, out: Tensor, x: Tensor, w: CudaQuantLinear, bias?: Tensor): { o: CudaTensor; xc: CudaTensor; bc?: CudaTensor } {
    const dev = this.dev;
    if (w.device !== dev) throw new Error(`${op}: w belongs to another CudaDevice`);
    if (w.freed) throw new Error(`${op}: w was freed`);
    const o = dev.tensor(out, op, 'out');
    const xc = dev.tensor(x, op, 'x');
    const bc = bias !== undefined ? dev.tensor(bias, op, 'bias') : undefined;
    if (xc.cols !== w.K || o.rowCount !== xc.rowCount || o.cols !== w.N || (bc !== undefined && bc.size !== w.N)) {
      throw new Error(`${op}: shape mismatch: out [${o.shape.join(',')}], x [${xc.shape.join(',')}], quantized w [${w.N},${w.K}]` +
        `${bc ? `, bias [${bc.shape.join(',')}]` : ''} (expects x [M,K], out [M,N], bias [N])`);
    }
    if (o.storage === xc.storage && o.ptr < xc.ptr + BigInt(xc.bytes) && xc.ptr < o.ptr + BigInt(o.bytes)) throw new Error(`${op}: out overlaps x`);
    return { o, xc, bc };
  }
}
