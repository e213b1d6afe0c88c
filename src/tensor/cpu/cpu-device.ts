// CpuDevice: the float32 reference Device. Validates every op's shapes, then runs the kernels of
// kernels.ts on this thread or, for ops large enough to pay for the hand-off, split across a
// WorkerPool (storages are then SharedArrayBuffers).

import { availableParallelism } from 'node:os';
import type { AttentionShape, Device, FakeQuantSpec, ScoredRows, Tensor, TrainingOps } from '../device.js';
import { fakeQuantRowsKernel } from './fake-quant.js';
import {
  OP_ADD, OP_ATTENTION, OP_ATTENTION_SIMD, OP_GELU, OP_LAYERNORM, OP_MATMUL, OP_MATMUL_SIMD, OP_RMSNORM, OP_SCORE,
  OP_SILUMUL, OP_SILUMUL_SIMD, OP_ADD_SIMD, OP_RMSNORM_SIMD, OP_SCORE_SIMD, createSimdContext, runKernel, type SimdContext,
} from './kernels.js';
import { simdModuleBytes } from './wasm/simd-kernels.js';
import { WorkerPool } from './pool.js';
import { CpuTensor, fmtShape, shapeSize } from './tensor.js';
import { CpuTrainingOps } from './train-ops.js';

export interface CpuDeviceOptions {
  /** Threads that compute, the calling one included. Default: the core count, at most 8. 1 = no workers. */
  threads?: number;
  /** Run matmul and attention through the WebAssembly SIMD kernels where they apply. Default true. */
  simd?: boolean;
}

/** Fewest matmul rows for the SIMD path (it copies and packs w per call). */
const SIMD_MATMUL_MIN_ROWS = 8;

/**
 * Work below which an op runs on the calling thread only (a hand-off to the pool costs a few
 * µs and a thread wake-up): ≈ multiply-adds, or elements × a per-element cost, for the JS
 * kernels. The SIMD kernels do the same work ~4× faster, so they need 4× more.
 */
const PARALLEL_MIN_WORK = 65536;
const SIMD_PARALLEL_MIN_WORK = 4 * PARALLEL_MIN_WORK;
/**
 * Chunks per thread of a split op: threads take chunks as they come, so one that wakes late or
 * is descheduled (2 cores shared with other processes) holds up the op less.
 */
const CHUNKS_PER_THREAD = 4;
/** Fewest rows per chunk of the SIMD matmul, which packs w once per chunk. */
const SIMD_MATMUL_CHUNK_ROWS = 256;
/** Largest tensor: kernels index storages with int32 arithmetic. */
const MAX_ELEMENTS = 2 ** 31 - 1;

export class CpuDevice implements Device {
  readonly kind = 'cpu' as const;
  readonly dtype = 'f32' as const;
  readonly threads: number;
  readonly simd: boolean;
  private readonly pool: WorkerPool | null;
  private readonly simdContext: SimdContext | null;
  private readonly params = new Float64Array(32);
  private scratch = new Float32Array(4096);
  private readonly noFloats = new Float32Array(0);
  private readonly noInts = new Int32Array(0);
  private readonly noDoubles = new Float64Array(0);
  /** Backward ops, loss and optimizer (train-ops.ts). */
  readonly training: TrainingOps = new CpuTrainingOps(this);

  constructor(opts: CpuDeviceOptions = {}) {
    const threads = opts.threads ?? Math.min(availableParallelism(), 8);
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`CpuDevice: threads must be an integer ≥ 1, got ${threads}`);
    this.threads = threads;
    this.simd = opts.simd ?? true;
    const bytes = this.simd ? simdModuleBytes() : null;
    this.simdContext = bytes !== null ? createSimdContext(bytes) : null;
    this.pool = threads > 1 ? new WorkerPool(threads, this.simdContext, bytes) : null;
  }

  /** Stops the worker threads (they never keep a process alive, but tests may want them gone). */
  close(): void {
    this.pool?.close();
  }

  // --- memory ---------------------------------------------------------------------------------

  private alloc(n: number): Float32Array {
    if (n > MAX_ELEMENTS) throw new Error(`cpu device: a tensor of ${n} elements exceeds the ${MAX_ELEMENTS} supported`);
    return this.pool !== null ? new Float32Array(new SharedArrayBuffer(n * 4)) : new Float32Array(n);
  }

  upload(data: Float32Array, shape: readonly number[]): CpuTensor {
    const n = shapeSize(shape);
    if (data.length !== n) throw new Error(`upload: ${data.length} values for shape [${shape.join(',')}] (${n})`);
    const base = this.alloc(n);
    base.set(data);
    return new CpuTensor(this, base, 0, n, shape);
  }

  empty(shape: readonly number[]): CpuTensor {
    const n = shapeSize(shape);
    return new CpuTensor(this, this.alloc(n), 0, n, shape);
  }

  download(t: Tensor): Float32Array {
    const c = this.cpu(t, 'download', 't');
    return c.base.slice(c.offset, c.offset + c.length);
  }

  view(t: Tensor, shape: readonly number[]): CpuTensor {
    const c = this.cpu(t, 'view', 't');
    const n = shapeSize(shape);
    if (n !== c.length) throw new Error(`view: ${fmtShape(c)} has ${c.length} elements, [${shape.join(',')}] has ${n}`);
    return new CpuTensor(this, c.base, c.offset, c.length, shape);
  }

  rows(t: Tensor, start: number, count: number): CpuTensor {
    const c = this.cpu(t, 'rows', 't');
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > c.rowCount) {
      throw new Error(`rows: [${start}, ${start + count}) out of ${c.rowCount} rows of ${fmtShape(c)}`);
    }
    return new CpuTensor(this, c.base, c.offset + start * c.cols, count * c.cols, [count, c.cols]);
  }

  free(t: Tensor): void {
    this.cpu(t, 'free', 't');
  }

  synchronize(): void {}

  // --- ops ------------------------------------------------------------------------------------

  embedding(out: Tensor, table: Tensor, ids: Int32Array): void {
    const [o, tb] = [this.cpu(out, 'embedding', 'out'), this.cpu(table, 'embedding', 'table')];
    this.checkGather('embedding', o, tb, ids);
    const C = tb.cols;
    for (let i = 0; i < ids.length; i++) {
      const src = tb.offset + ids[i] * C;
      o.base.set(tb.base.subarray(src, src + C), o.offset + i * C);
    }
  }

  addEmbedding(out: Tensor, table: Tensor, ids: Int32Array): void {
    const [o, tb] = [this.cpu(out, 'addEmbedding', 'out'), this.cpu(table, 'addEmbedding', 'table')];
    this.checkGather('addEmbedding', o, tb, ids);
    const C = tb.cols;
    const ob = o.base, tbase = tb.base;
    for (let i = 0; i < ids.length; i++) {
      const src = tb.offset + ids[i] * C;
      const dst = o.offset + i * C;
      for (let c = 0; c < C; c++) ob[dst + c] += tbase[src + c];
    }
  }

  matmul(out: Tensor, x: Tensor, w: Tensor, bias?: Tensor): void {
    const o = this.cpu(out, 'matmul', 'out');
    const xc = this.cpu(x, 'matmul', 'x');
    const wc = this.cpu(w, 'matmul', 'w');
    const bc = bias !== undefined ? this.cpu(bias, 'matmul', 'bias') : undefined;
    const M = xc.rowCount, K = xc.cols, N = wc.rowCount;
    const where = () => `out ${fmtShape(o)}, x ${fmtShape(xc)}, w ${fmtShape(wc)}${bc ? `, bias ${fmtShape(bc)}` : ''}`;
    if (wc.cols !== K || o.rowCount !== M || o.cols !== N || (bc !== undefined && bc.length !== N)) {
      throw new Error(`matmul: shape mismatch: ${where()} (expects x [M,K], w [N,K], out [M,N], bias [N])`);
    }
    if (overlaps(o, xc) || overlaps(o, wc)) throw new Error(`matmul: out overlaps an input: ${where()}`);
    const p = [o.offset, xc.offset, wc.offset, bc?.offset ?? 0, bc ? 1 : 0, N, K];
    const arrays = [o.base, xc.base, wc.base, bc?.base ?? this.noFloats];
    const pool = this.pool;
    const op = this.simd && M >= SIMD_MATMUL_MIN_ROWS ? OP_MATMUL_SIMD : OP_MATMUL;
    if (pool === null || !worthSplitting(op, M * N * K)) {
      this.runHere(op, arrays, p, 0, M, 0, N, 0);
      return;
    }
    // Split rows in multiples of the 4-row block; few rows (decode): split columns instead.
    const P = pool.size;
    let ranges: Int32Array;
    if (op === OP_MATMUL_SIMD) {
      ranges = chunkRange(M, Math.max(P, Math.min(P * CHUNKS_PER_THREAD, Math.floor(M / SIMD_MATMUL_CHUNK_ROWS))), 4);
    } else if (M >= 8 * P) {
      ranges = chunkRange(M, P * CHUNKS_PER_THREAD, 4);
      for (let i = 0; i < ranges.length; i += 4) ranges[i + 3] = N;
    } else {
      ranges = chunkRange(N, P * CHUNKS_PER_THREAD, 4);
      for (let i = 0; i < ranges.length; i += 4) ranges.set([0, M, ranges[i], ranges[i + 1]], i);
    }
    pool.run(op, arrays, null, null, p, ranges, 0);
  }

  addInPlace(x: Tensor, y: Tensor): void {
    const xc = this.cpu(x, 'addInPlace', 'x');
    const yc = this.cpu(y, 'addInPlace', 'y');
    if (xc.length !== yc.length) throw new Error(`addInPlace: shape mismatch: x ${fmtShape(xc)}, y ${fmtShape(yc)}`);
    this.elementwise(this.simd ? OP_ADD_SIMD : OP_ADD, [xc.base, yc.base], [xc.offset, yc.offset], xc.length, 1);
  }

  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, eps: number): void {
    const o = this.cpu(out, 'rmsNorm', 'out');
    const xc = this.cpu(x, 'rmsNorm', 'x');
    const wc = this.cpu(weight, 'rmsNorm', 'weight');
    const C = xc.cols;
    if (o.length !== xc.length || o.cols !== C || wc.length !== C) {
      throw new Error(`rmsNorm: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, weight ${fmtShape(wc)}`);
    }
    this.byRows(this.simd ? OP_RMSNORM_SIMD : OP_RMSNORM, [o.base, xc.base, wc.base], [o.offset, xc.offset, wc.offset, C, eps], xc.rowCount, 3 * C);
  }

  layerNorm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: number): void {
    const o = this.cpu(out, 'layerNorm', 'out');
    const xc = this.cpu(x, 'layerNorm', 'x');
    const wc = this.cpu(weight, 'layerNorm', 'weight');
    const bc = this.cpu(bias, 'layerNorm', 'bias');
    const C = xc.cols;
    if (o.length !== xc.length || o.cols !== C || wc.length !== C || bc.length !== C) {
      throw new Error(`layerNorm: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, weight ${fmtShape(wc)}, bias ${fmtShape(bc)}`);
    }
    this.byRows(OP_LAYERNORM, [o.base, xc.base, wc.base, bc.base], [o.offset, xc.offset, wc.offset, bc.offset, C, eps], xc.rowCount, 4 * C);
  }

  rope(x: Tensor, positions: Int32Array, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void {
    const xc = this.cpu(x, 'rope', 'x');
    const cc = this.cpu(cos, 'rope', 'cos');
    const sc = this.cpu(sin, 'rope', 'sin');
    const half = rotaryDim / 2;
    const rows = positions.length;
    if (!Number.isInteger(half) || half < 0 || rotaryDim > headDim || xc.length !== rows * nHeads * headDim ||
      cc.cols !== half || sc.cols !== half || cc.rowCount !== sc.rowCount) {
      throw new Error(`rope: shape mismatch: x ${fmtShape(xc)}, ${rows} positions, cos ${fmtShape(cc)}, sin ${fmtShape(sc)}, ` +
        `nHeads ${nHeads}, headDim ${headDim}, rotaryDim ${rotaryDim}`);
    }
    const maxPos = cc.rowCount;
    const xb = xc.base, cb = cc.base, sb = sc.base;
    for (let r = 0; r < rows; r++) {
      const pos = positions[r];
      if (!(pos >= 0 && pos < maxPos)) throw new Error(`rope: position ${pos} at row ${r} outside the [0, ${maxPos}) table`);
      const ca = cc.offset + pos * half;
      const sa = sc.offset + pos * half;
      for (let h = 0; h < nHeads; h++) {
        const a = xc.offset + (r * nHeads + h) * headDim;
        for (let i = 0; i < half; i++) {
          const x1 = xb[a + i];
          const x2 = xb[a + i + half];
          const cv = cb[ca + i];
          const sv = sb[sa + i];
          xb[a + i] = x1 * cv - x2 * sv;
          xb[a + i + half] = x2 * cv + x1 * sv;
        }
      }
    }
  }

  attention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
    this.runAttention(out, q, k, v, shape, null);
  }

  /**
   * @internal attention() that, where the SIMD kernel runs, also writes each query's softmax
   * log-sum-exp to lse (f32 [batch*seqQ, nHead]); returns whether it did (CpuTrainingOps).
   */
  attentionWithLse(out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): boolean {
    const l = this.cpu(lse, 'attention', 'lse');
    if (l.length !== shape.batch * shape.seqQ * shape.nHead) {
      throw new Error(`attention: lse ${fmtShape(l)} should hold batch*seqQ*nHead = ${shape.batch * shape.seqQ * shape.nHead} values`);
    }
    return this.runAttention(out, q, k, v, shape, l);
  }

  private runAttention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape, lse: CpuTensor | null): boolean {
    const o = this.cpu(out, 'attention', 'out');
    const qc = this.cpu(q, 'attention', 'q');
    const kc = this.cpu(k, 'attention', 'k');
    const vc = this.cpu(v, 'attention', 'v');
    const { batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale } = shape;
    const window = shape.window ?? 0;
    const qLen = batch * seqQ * nHead * headDim;
    const kvLenTotal = batch * kvStride * nKvHead * headDim;
    const ints = [batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim];
    if (!ints.every((n) => Number.isInteger(n) && n >= 0) || nKvHead < 1 || nHead % nKvHead !== 0 ||
      seqQ > kvLen || kvLen > kvStride || o.length !== qLen || qc.length !== qLen ||
      kc.length !== kvLenTotal || vc.length !== kvLenTotal ||
      (shape.window !== undefined && !(Number.isInteger(shape.window) && shape.window >= 1))) {
      throw new Error(`attention: shape mismatch: out ${fmtShape(o)}, q ${fmtShape(qc)}, k ${fmtShape(kc)}, v ${fmtShape(vc)}, ` +
        `shape ${JSON.stringify(shape)} (expects q/out [batch*seqQ, nHead*headDim], k/v [batch*kvStride, nKvHead*headDim], ` +
        `seqQ ≤ kvLen ≤ kvStride, nHead % nKvHead = 0)`);
    }
    if (overlaps(o, kc) || overlaps(o, vc)) throw new Error('attention: out overlaps k or v');
    const units = batch * nHead * ((seqQ + 3) >> 2);
    const op = this.simd && headDim % 4 === 0 ? OP_ATTENTION_SIMD : OP_ATTENTION;
    const withLse = lse !== null && op === OP_ATTENTION_SIMD;
    const p = [o.offset, qc.offset, kc.offset, vc.offset, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale, window,
      withLse ? lse.offset : 0, withLse ? 1 : 0];
    const arrays = [o.base, qc.base, kc.base, vc.base, withLse ? lse.base : this.noFloats];
    const keysPerQuery = window > 0 ? Math.min(window, kvLen) : kvLen;
    const work = batch * nHead * seqQ * keysPerQuery * headDim * 2;
    const scratch = 4 * Math.max(1, kvLen);
    const pool = this.pool;
    if (pool === null || !worthSplitting(op, work) || units < 2) this.runHere(op, arrays, p, 0, units, 0, 0, scratch);
    else pool.run(op, arrays, null, null, p, chunkRange(units, pool.size * CHUNKS_PER_THREAD, 1), scratch);
    return withLse;
  }

  writeKv(cache: Tensor, src: Tensor, batch: number, seq: number, start: number, kvStride: number): void {
    const cc = this.cpu(cache, 'writeKv', 'cache');
    const sc = this.cpu(src, 'writeKv', 'src');
    const D = cc.cols;
    if (sc.cols !== D || sc.length !== batch * seq * D || start < 0 || start + seq > kvStride || cc.rowCount < batch * kvStride) {
      throw new Error(`writeKv: shape mismatch: cache ${fmtShape(cc)}, src ${fmtShape(sc)}, batch ${batch}, seq ${seq}, ` +
        `start ${start}, kvStride ${kvStride}`);
    }
    for (let b = 0; b < batch; b++) {
      const from = sc.offset + b * seq * D;
      cc.base.set(sc.base.subarray(from, from + seq * D), cc.offset + (b * kvStride + start) * D);
    }
  }

  siluMul(out: Tensor, gate: Tensor, up: Tensor): void {
    const o = this.cpu(out, 'siluMul', 'out');
    const g = this.cpu(gate, 'siluMul', 'gate');
    const u = this.cpu(up, 'siluMul', 'up');
    if (o.length !== g.length || u.length !== g.length) {
      throw new Error(`siluMul: shape mismatch: out ${fmtShape(o)}, gate ${fmtShape(g)}, up ${fmtShape(u)}`);
    }
    this.elementwise(this.simd ? OP_SILUMUL_SIMD : OP_SILUMUL, [o.base, g.base, u.base], [o.offset, g.offset, u.offset], o.length, 8);
  }

  geluTanh(out: Tensor, x: Tensor): void {
    const o = this.cpu(out, 'geluTanh', 'out');
    const xc = this.cpu(x, 'geluTanh', 'x');
    if (o.length !== xc.length) throw new Error(`geluTanh: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}`);
    this.elementwise(OP_GELU, [o.base, xc.base], [o.offset, xc.offset], o.length, 10);
  }

  scoreLogits(logits: Tensor, targets: Int32Array, baseline?: Tensor): ScoredRows {
    const l = this.cpu(logits, 'scoreLogits', 'logits');
    const b = baseline !== undefined ? this.cpu(baseline, 'scoreLogits', 'baseline') : undefined;
    const rows = l.rowCount, V = l.cols;
    if (targets.length !== rows || V < 1 || (b !== undefined && (b.rowCount !== rows || b.cols !== V))) {
      throw new Error(`scoreLogits: shape mismatch: logits ${fmtShape(l)}, ${targets.length} targets` +
        `${b ? `, baseline ${fmtShape(b)}` : ''}`);
    }
    for (let r = 0; r < rows; r++) {
      if (targets[r] >= V) throw new Error(`scoreLogits: target ${targets[r]} at row ${r} ≥ vocab ${V}`);
    }
    const pool = this.pool;
    const parallel = pool !== null && rows >= 2 && rows * V * (b ? 3 : 1) >= PARALLEL_MIN_WORK / 8;
    const ints = parallel ? pool.ints(rows) : targets;
    if (parallel) ints.set(targets);
    const res = parallel ? pool.doubles(4 * rows) : new Float64Array(4 * rows);
    const p = [l.offset, b?.offset ?? 0, b ? 1 : 0, 0, 0, rows, V];
    const arrays = [l.base, b?.base ?? this.noFloats];
    const op = this.simd ? OP_SCORE_SIMD : OP_SCORE;
    if (parallel) pool.run(op, arrays, ints, res, p, chunkRange(rows, pool.size * CHUNKS_PER_THREAD, 1), 0);
    else this.runHere(op, arrays, p, 0, rows, 0, 0, 0, ints, res);
    const argmax = new Int32Array(rows);
    for (let r = 0; r < rows; r++) argmax[r] = res[2 * rows + r];
    const scored: ScoredRows = { nll: res.slice(0, rows), argmax };
    if (b !== undefined) {
      scored.kld = res.slice(rows, 2 * rows);
      const top1 = new Uint8Array(rows);
      for (let r = 0; r < rows; r++) top1[r] = res[3 * rows + r];
      scored.top1 = top1;
    }
    return scored;
  }

  fakeQuantRows(x: Tensor, spec: FakeQuantSpec): void {
    const c = this.cpu(x, 'fakeQuantRows', 'x');
    fakeQuantRowsKernel(c.data, c.rowCount, c.cols, spec);
  }

  /**
   * @internal Runs kernel `op` of kernels.ts over work units [0, units), split across the worker
   * pool when `work` (≈ multiply-adds) pays for it (CpuTrainingOps' attention kernels).
   */
  runUnits(op: number, arrays: Float32Array[], params: readonly number[], units: number, work: number): void {
    const pool = this.pool;
    if (pool === null || units < 2 || work < PARALLEL_MIN_WORK) this.runHere(op, arrays, params, 0, units, 0, 0, 0);
    else pool.run(op, arrays, null, null, params, chunkRange(units, pool.size * CHUNKS_PER_THREAD, 1), 0);
  }

  // --- helpers --------------------------------------------------------------------------------

  private cpu(t: Tensor, op: string, name: string): CpuTensor {
    if (!(t instanceof CpuTensor)) throw new Error(`${op}: ${name} is not a cpu tensor`);
    if (t.device !== this) throw new Error(`${op}: ${name} belongs to another CpuDevice`);
    return t;
  }

  private checkGather(op: string, o: CpuTensor, tb: CpuTensor, ids: Int32Array): void {
    if (o.cols !== tb.cols || o.rowCount !== ids.length) {
      throw new Error(`${op}: shape mismatch: out ${fmtShape(o)}, table ${fmtShape(tb)}, ${ids.length} ids`);
    }
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < tb.rowCount)) throw new Error(`${op}: id ${ids[i]} at ${i} outside table of ${tb.rowCount} rows`);
    }
  }

  /** Runs a kernel over [lo, hi) (and columns [c0, c1)) on this thread. */
  private runHere(
    op: number, arrays: Float32Array[], params: readonly number[], lo: number, hi: number, c0: number, c1: number,
    scratch: number, ints: Int32Array = this.noInts, doubles: Float64Array = this.noDoubles,
  ): void {
    const p = this.params;
    for (let i = 0; i < params.length; i++) p[i] = params[i];
    if (this.scratch.length < scratch) this.scratch = new Float32Array(scratch);
    runKernel(op, arrays, ints, doubles, this.scratch, this.simdContext, p, lo, hi, c0, c1);
  }

  private byRows(op: number, arrays: Float32Array[], params: readonly number[], rows: number, costPerRow: number): void {
    const pool = this.pool;
    if (pool === null || rows < 2 || !worthSplitting(op, rows * costPerRow)) this.runHere(op, arrays, params, 0, rows, 0, 0, 0);
    else pool.run(op, arrays, null, null, params, chunkRange(rows, pool.size * CHUNKS_PER_THREAD, 1), 0);
  }

  private elementwise(op: number, arrays: Float32Array[], params: readonly number[], n: number, cost: number): void {
    const pool = this.pool;
    if (pool === null || !worthSplitting(op, n * cost)) this.runHere(op, arrays, params, 0, n, 0, 0, 0);
    else pool.run(op, arrays, null, null, params, chunkRange(n, pool.size * CHUNKS_PER_THREAD, 16), 0);
  }
}

function worthSplitting(op: number, work: number): boolean {
  return work >= (op >= OP_MATMUL_SIMD ? SIMD_PARALLEL_MIN_WORK : PARALLEL_MIN_WORK);
}

/** [lo, hi, 0, 0] per chunk: n units in at most `parts` near-equal chunks, boundaries multiples of align. */
function chunkRange(n: number, parts: number, align: number): Int32Array {
  const step = Math.max(align, Math.ceil(n / parts / align) * align);
  const count = Math.ceil(n / step);
  const chunks = new Int32Array(count * 4);
  for (let i = 0; i < count; i++) {
    const lo = i * step;
    const hi = Math.min(n, (i + 1) * step);
    chunks[i * 4] = lo;
    chunks[i * 4 + 1] = hi;
  }
  return chunks;
}

function overlaps(a: CpuTensor, b: CpuTensor): boolean {
  return a.base.buffer === b.base.buffer && a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

export function createCpuDevice(opts?: CpuDeviceOptions): CpuDevice {
  return new CpuDevice(opts);
}
