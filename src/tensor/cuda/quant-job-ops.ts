// The cuda device's QuantJobOps (CudaDevice.quantJob): kernels/calibstats.cu and kernels/gptq.cu,
// plus cuBLASLt GEMMs (f32 compute, no TF32) for the big products: Hessians (H += s·XᵀX), the
// blocked Cholesky's panel and trailing updates, the triangular inverse, H⁻¹ = L⁻ᵀL⁻¹, and GPTQ's
// lazy trailing update W[:, i2:] −= E·U[i1:i2, i2:].
//
// GPTQ's linear algebra runs in f32 on matrices padded to a multiple of CHOL_NB with the identity
// (every block full, every GEMM operand aligned; the n×n part is unchanged): Cholesky of H → L,
// X = L⁻¹ block row by block row, H⁻¹ = XᵀX, Cholesky of H⁻¹ → L2, and U = L2ᵀ is read transposed
// (U_ij = L2[j, i]). The column loop: per block of ≤ 128 columns one gptq_block launch (a warp per
// row, the block of U in shared memory) and one GEMM. Differences from the cpu reference come only
// from f32 rounding (the cpu runs GPTQ in float64).

import type { Tensor } from '../device.js';
import { MSE_DEFAULTS, type ErrorSums, type GptqFactor, type GptqOptions, type ObserverName, type QuantJobOps, type QuantValueArgs, type ScaleDType, type WeightGrid, type WeightQParams } from '../quant-job.js';
import { quantRange } from '../quant-math.js';
import type { GemmArgs } from './cublaslt.js';
import type { CudaDevice } from './device.js';
import type { DevicePtr } from './driver.js';
import type { KernelArg } from './kernels.js';
import type { CudaTensor } from './tensor.js';

/** Cholesky block size (kernels/gptq.cu CHOL_NB). */
const CHOL_NB = 64;
/** Largest GPTQ block (kernels/gptq.cu GPTQ_MAX_BLOCK: 4 registers of 32 lanes per row). */
export const GPTQ_MAX_BLOCK = 128;
const GPTQ_WARPS = 8;
const THREADS = 256;
/** Elements of one group a block reduces (observers). */
const OBSERVER_CHUNK = 8192;

const SCALE_DTYPE_CODE: Record<ScaleDType, number> = { F32: 0, BF16: 1, F16: 2 };
const STRATEGY_CODE: Record<WeightGrid['strategy'], number> = { tensor: 0, channel: 1, group: 2 };

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

function shapeOf(t: CudaTensor): string {
  return `[${t.shape.join(',')}]`;
}

/** Device bytes counted in the device's memory stats. */
class DeviceBuffer {
  readonly ptr: DevicePtr;
  private freed = false;
  constructor(
    private readonly dev: CudaDevice,
    readonly bytes: number,
  ) {
    this.ptr = dev.allocateBytes(bytes);
  }

  /** ptr + offset elements of `elementBytes`. */
  at(offset: number, elementBytes = 4): DevicePtr {
    return this.ptr + BigInt(offset * elementBytes);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.dev.releaseBytes(this.ptr, this.bytes);
  }
}

class CudaGptqFactor implements GptqFactor {
  constructor(
    private readonly dev: CudaDevice,
    readonly cols: number,
    /** Padded size of l2. */
    readonly np: number,
    readonly ok: boolean,
    readonly perm: Int32Array,
    readonly dead: Uint8Array,
    /** L2 = chol(H⁻¹) lower, [np, np] (U = L2ᵀ); undefined when not ok. */
    readonly l2: DeviceBuffer | undefined,
    readonly permDev: DeviceBuffer,
    /** dead flags in visiting order (bytes). */
    readonly deadVisitDev: DeviceBuffer,
  ) {}

  readU(): Float32Array {
    if (this.l2 === undefined) throw new Error('gptq factor: not positive definite, no U');
    const { np, cols: n } = this;
    const l = new Float32Array(np * np);
    this.dev.driver.copyToHost(l, this.l2.ptr, np * np * 4);
    const u = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) u[i * n + j] = l[j * np + i]!;
    return u;
  }

  free(): void {
    this.l2?.free();
    this.permDev.free();
    this.deadVisitDev.free();
  }
}

export class CudaQuantJob implements QuantJobOps {
  constructor(private readonly dev: CudaDevice) {}

  // --- tensors ------------------------------------------------------------------------------

  uploadF32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.dev.uploadAs(data, shape, 'f32');
  }

  zerosF32(shape: readonly number[]): Tensor {
    return this.dev.emptyAs(shape, 'f32');
  }

  copy(dst: Tensor, src: Tensor): void {
    const d = this.dev.tensor(dst, 'copy', 'dst', 'any');
    const s = this.dev.tensor(src, 'copy', 'src', 'any');
    if (d.dtype !== s.dtype || d.size !== s.size) throw new Error(`copy: dst ${d.dtype} ${shapeOf(d)} and src ${s.dtype} ${shapeOf(s)} differ`);
    this.dev.driver.copyDeviceToDevice(d.ptr, s.ptr, d.bytes);
  }

  // --- calibration statistics ---------------------------------------------------------------

  hessianAccumulate(h: Tensor, x: Tensor, scale: number): void {
    const hc = this.dev.tensor(h, 'hessianAccumulate', 'h', 'f32');
    const xc = this.dev.tensor(x, 'hessianAccumulate', 'x', 'any');
    const n = xc.cols;
    if (hc.rowCount !== n || hc.cols !== n) throw new Error(`hessianAccumulate: h ${shapeOf(hc)} for x ${shapeOf(xc)} (expects h [K,K], x [rows,K])`);
    if (xc.rowCount === 0) return;
    this.gemm({
      M: n, N: n, K: xc.rowCount,
      a: { ptr: xc.ptr, type: xc.dtype, trans: true, ld: n },
      b: { ptr: xc.ptr, type: xc.dtype, trans: false, ld: n },
      d: { ptr: hc.ptr, type: 'f32', ld: n },
      alpha: scale,
      beta: 1,
    }, 'hessian');
  }

  channelRange(min: Tensor, max: Tensor, x: Tensor): void {
    const mn = this.dev.tensor(min, 'channelRange', 'min', 'f32');
    const mx = this.dev.tensor(max, 'channelRange', 'max', 'f32');
    const xc = this.dev.tensor(x, 'channelRange', 'x', 'any');
    const cols = xc.cols, rows = xc.rowCount;
    if (mn.size !== cols || mx.size !== cols) throw new Error(`channelRange: min ${shapeOf(mn)}, max ${shapeOf(mx)} for x ${shapeOf(xc)}`);
    if (rows === 0 || cols === 0) return;
    const rowsPerBlock = Math.max(64, Math.ceil(rows / 65535));
    const k = this.dev.kernel('calibstats', `channel_range_${xc.dtype}`, 'pqiipp');
    this.dev.kernels.launch(k, [Math.ceil(cols / THREADS), Math.ceil(rows / rowsPerBlock)], [THREADS], 0, [xc.ptr, rows, cols, rowsPerBlock, mn.ptr, mx.ptr]);
  }

  absMax(acc: Tensor, x: Tensor): void {
    const a = this.dev.tensor(acc, 'absMax', 'acc', 'f32');
    const xc = this.dev.tensor(x, 'absMax', 'x', 'any');
    if (a.size !== 1) throw new Error(`absMax: acc ${shapeOf(a)} must hold one value`);
    if (xc.size === 0) return;
    const k = this.dev.kernel('calibstats', `abs_max_${xc.dtype}`, 'pqp');
    this.dev.kernels.launch(k, [this.blocks(xc.size, 8)], [THREADS], 0, [xc.ptr, xc.size, a.ptr]);
  }

  scaleHessian(h: Tensor, s: Float64Array): void {
    const hc = this.dev.tensor(h, 'scaleHessian', 'h', 'f32');
    const n = s.length;
    if (hc.rowCount !== n || hc.cols !== n) throw new Error(`scaleHessian: h ${shapeOf(hc)} for ${n} scales`);
    if (n === 0) return;
    const sDev = this.upload(s);
    try {
      this.dev.launch1d(this.dev.kernel('calibstats', 'scale_hessian', 'ppi'), n * n, [hc.ptr, sDev.ptr, n]);
    } finally {
      sDev.free();
    }
  }

  accumulateErrors(acc: ErrorSums, yq: Tensor, y: Tensor, x: Tensor): void {
    const q = this.dev.tensor(yq, 'accumulateErrors', 'yq', 'any');
    const r = this.dev.tensor(y, 'accumulateErrors', 'y', q.dtype);
    const xi = this.dev.tensor(x, 'accumulateErrors', 'x', q.dtype);
    if (r.size !== q.size || xi.size !== q.size) throw new Error(`accumulateErrors: yq ${shapeOf(q)}, y ${shapeOf(r)}, x ${shapeOf(xi)} differ in size`);
    if (q.size === 0) return;
    const blocks = this.blocks(q.size, 4);
    const partials = new DeviceBuffer(this.dev, blocks * 3 * 8);
    try {
      const k = this.dev.kernel('calibstats', `error_sums_${q.dtype}`, 'pppqp');
      this.dev.kernels.launch(k, [blocks], [THREADS], 0, [q.ptr, r.ptr, xi.ptr, q.size, partials.ptr]);
      const host = new Float64Array(blocks * 3);
      this.dev.driver.copyToHost(host, partials.ptr, host.byteLength);
      for (let b = 0; b < blocks; b++) {
        acc.diff2 += host[3 * b]!;
        acc.ref2 += host[3 * b + 1]!;
        acc.update2 += host[3 * b + 2]!;
      }
    } finally {
      partials.free();
    }
  }

  // --- linear algebra -----------------------------------------------------------------------

  cholesky(a: Tensor): boolean {
    const ac = this.square(a, 'cholesky', 'a');
    const n = ac.cols;
    if (n === 0) return true;
    const np = roundUp(n, CHOL_NB);
    const p = new DeviceBuffer(this.dev, np * np * 4);
    const work = this.choleskyWork(np);
    try {
      this.padSquare(ac.ptr, n, np, p.ptr, false);
      this.choleskyPadded(p, np, work);
      this.padSquare(p.ptr, n, np, ac.ptr, true);
      return !this.failed(work);
    } finally {
      p.free();
      this.freeWork(work);
    }
  }

  choleskyInverse(l: Tensor, out: Tensor): void {
    const lc = this.square(l, 'choleskyInverse', 'l');
    const oc = this.square(out, 'choleskyInverse', 'out');
    const n = lc.cols;
    if (oc.cols !== n) throw new Error(`choleskyInverse: out ${shapeOf(oc)} for l ${shapeOf(lc)}`);
    if (n === 0) return;
    const np = roundUp(n, CHOL_NB);
    const p = new DeviceBuffer(this.dev, np * np * 4);
    const x = new DeviceBuffer(this.dev, np * np * 4);
    const work = this.choleskyWork(np);
    try {
      this.padSquare(lc.ptr, n, np, p.ptr, false);
      const k = this.dev.kernel('gptq', 'tri_inv_diag', 'pip');
      this.dev.kernels.launch(k, [np / CHOL_NB], [THREADS], 0, [p.ptr, np, work.inv.ptr]);
      this.inversePadded(p, np, work, x);
      this.padSquare(p.ptr, n, np, oc.ptr, true);
    } finally {
      p.free();
      x.free();
      this.freeWork(work);
    }
  }

  // --- weights ------------------------------------------------------------------------------

  observeWeight(w: Tensor, grid: WeightGrid, args: QuantValueArgs, observer: ObserverName, scaleDtype: ScaleDType): WeightQParams {
    const wc = this.weight(w, grid, 'observeWeight', 'f32');
    if (args.type === 'float' && !args.symmetric) throw new Error('asymmetric float quantization is not supported');
    const range = quantRange(args);
    const count = grid.count;
    const len = (grid.rows * grid.cols) / count;
    const chunk = Math.min(len, OBSERVER_CHUNK);
    const splits = Math.ceil(len / chunk);
    const threads = Math.min(THREADS, roundUp(Math.max(chunk, 1), 32));
    const value: KernelArg[] = [range.qmin, range.qmax, range.float ? 1 : 0, args.symmetric ? 1 : 0, SCALE_DTYPE_CODE[scaleDtype]];
    const mn = this.upload(new Float32Array(count).fill(Infinity));
    const mx = this.upload(new Float32Array(count).fill(-Infinity));
    const scale = new DeviceBuffer(this.dev, count * 4);
    const zp = new DeviceBuffer(this.dev, count * 4);
    const scratch: DeviceBuffer[] = [];
    try {
      if (len > 0) {
        const k = this.dev.kernel('gptq', 'group_minmax', 'pqipp');
        this.dev.kernels.launch(k, [count, splits], [threads], 0, [wc.ptr, len, chunk, mn.ptr, mx.ptr]);
      }
      if (observer === 'minmax') {
        const k = this.dev.kernel('gptq', 'qparams_minmax', 'ppiiiiiipp');
        this.dev.kernels.launch(k, [Math.ceil(count / THREADS)], [THREADS], 0, [mn.ptr, mx.ptr, count, ...value, scale.ptr, zp.ptr]);
      } else {
        const { maxshrink, grid: steps, norm, patience } = MSE_DEFAULTS;
        const candidates = Math.floor(maxshrink * steps);
        const partial = new DeviceBuffer(this.dev, candidates * count * splits * 8);
        const err = new DeviceBuffer(this.dev, candidates * count * 8);
        const improved = new DeviceBuffer(this.dev, candidates * 4);
        scratch.push(partial, err, improved);
        this.dev.driver.memsetZero(improved.ptr, improved.bytes);
        if (len > 0) {
          const k = this.dev.kernel('gptq', 'mse_errors', 'pqiippiiidiiiiip');
          this.dev.kernels.launch(k, [count, splits], [threads], 0, [wc.ptr, len, chunk, splits, mn.ptr, mx.ptr, count, candidates, steps, norm, ...value, partial.ptr]);
        } else {
          this.dev.driver.memsetZero(partial.ptr, partial.bytes);
        }
        const ki = this.dev.kernel('gptq', 'mse_improved', 'piiipp');
        this.dev.kernels.launch(ki, [Math.ceil(count / THREADS)], [THREADS], 0, [partial.ptr, count, splits, candidates, err.ptr, improved.ptr]);
        const flags = new Int32Array(candidates);
        this.dev.driver.copyToHost(flags, improved.ptr, flags.byteLength);
        // The cpu's loop: candidate i is evaluated, then the search stops after `patience` in a row without improvement.
        let last = 0;
        let noImprove = 0;
        for (let i = 0; i < candidates; i++) {
          last = i;
          if (flags[i]) noImprove = 0;
          else if (++noImprove >= patience) break;
        }
        const ks = this.dev.kernel('gptq', 'mse_select', 'pppiiiiiiiipp');
        this.dev.kernels.launch(ks, [Math.ceil(count / THREADS)], [THREADS], 0, [err.ptr, mn.ptr, mx.ptr, count, last, steps, ...value, scale.ptr, zp.ptr]);
      }
      const qp: WeightQParams = { grid, scale: new Float32Array(count), zeroPoint: new Int32Array(count) };
      this.dev.driver.copyToHost(qp.scale, scale.ptr, count * 4);
      this.dev.driver.copyToHost(qp.zeroPoint, zp.ptr, count * 4);
      return qp;
    } finally {
      for (const b of [mn, mx, scale, zp, ...scratch]) b.free();
    }
  }

  quantizeRtn(w: Tensor, qparams: WeightQParams, args: QuantValueArgs, deq: Tensor): Int32Array {
    const grid = qparams.grid;
    const wc = this.weight(w, grid, 'quantizeRtn', 'f32');
    const dc = this.weight(deq, grid, 'quantizeRtn', this.dev.dtype);
    const range = quantRange(args);
    const n = grid.rows * grid.cols;
    const scale = this.upload(qparams.scale);
    const zp = this.upload(qparams.zeroPoint);
    const codes = new DeviceBuffer(this.dev, n * 4);
    try {
      const k = this.dev.kernel('gptq', `rtn_quantize_${dc.dtype}`, 'piippiiiiiipp');
      this.dev.launch1d(k, n, [wc.ptr, grid.rows, grid.cols, scale.ptr, zp.ptr, STRATEGY_CODE[grid.strategy], grid.groupSize, grid.groupsPerRow,
        range.qmin, range.qmax, range.float ? 1 : 0, codes.ptr, dc.ptr]);
      const host = new Int32Array(n);
      this.dev.driver.copyToHost(host, codes.ptr, n * 4);
      return host;
    } finally {
      for (const b of [scale, zp, codes]) b.free();
    }
  }

  gptqPrepare(h: Tensor, opts: GptqOptions): GptqFactor {
    const hc = this.square(h, 'gptqPrepare', 'h');
    const n = hc.cols;
    const np = roundUp(Math.max(n, 1), CHOL_NB);
    let perm = Int32Array.from({ length: n }, (_, i) => i);
    if (opts.actorder) {
      // Descending diagonal, ties in index order (as the cpu); the diagonal is read with one strided copy.
      const diag = new DeviceBuffer(this.dev, n * 4);
      const host = new Float32Array(n);
      try {
        this.copyBlock(diag.ptr, 1, hc.ptr, n + 1, n, 1);
        this.dev.driver.copyToHost(host, diag.ptr, n * 4);
      } finally {
        diag.free();
      }
      perm = Int32Array.from(Array.from({ length: n }, (_, i) => i).sort((a, b) => host[b]! - host[a]! || a - b));
    }
    const permDev = this.upload(perm);
    const deadVisitDev = new DeviceBuffer(this.dev, Math.max(n, 1));
    const a = new DeviceBuffer(this.dev, np * np * 4);
    const work = this.choleskyWork(np);
    let ok = false;
    try {
      this.dev.launch1d(this.dev.kernel('gptq', 'gather_sym', 'ppiip'), np * np, [hc.ptr, permDev.ptr, n, np, a.ptr]);
      this.dev.kernels.launch(this.dev.kernel('gptq', 'gptq_damp', 'piidp'), [1], [1024], 0, [a.ptr, n, np, opts.dampening, deadVisitDev.ptr]);
      this.choleskyPadded(a, np, work);
      const x = new DeviceBuffer(this.dev, np * np * 4);
      try {
        this.inversePadded(a, np, work, x);
      } finally {
        x.free();
      }
      this.choleskyPadded(a, np, work);
      ok = !this.failed(work);
      const deadVisit = new Uint8Array(Math.max(n, 1));
      this.dev.driver.copyToHost(deadVisit, deadVisitDev.ptr, deadVisit.byteLength);
      const dead = new Uint8Array(n);
      for (let j = 0; j < n; j++) dead[perm[j]!] = deadVisit[j]!;
      return new CudaGptqFactor(this.dev, n, np, ok, perm, dead, ok ? a : undefined, permDev, deadVisitDev);
    } catch (e) {
      permDev.free();
      deadVisitDev.free();
      ok = false;
      throw e;
    } finally {
      if (!ok) a.free();
      this.freeWork(work);
    }
  }

  gptqQuantize(w: Tensor, factor: GptqFactor, qparams: WeightQParams, args: QuantValueArgs, blockSize: number, deq: Tensor): { codes: Int32Array; loss: number } {
    if (!(factor instanceof CudaGptqFactor)) throw new Error('gptqQuantize: factor was not made by this device');
    const grid = qparams.grid;
    const wc = this.weight(w, grid, 'gptqQuantize', 'f32');
    const dc = this.weight(deq, grid, 'gptqQuantize', this.dev.dtype);
    const { rows: m, cols: n } = grid;
    if (factor.cols !== n || !factor.ok || factor.l2 === undefined) throw new Error(`gptqQuantize: factor for ${factor.cols} columns${factor.ok ? '' : ' (not positive definite)'} used on ${n}`);
    if (!(Number.isInteger(blockSize) && blockSize >= 1)) throw new Error(`gptqQuantize: block size must be a positive integer, got ${blockSize}`);
    if (blockSize > GPTQ_MAX_BLOCK) throw new Error(`GPTQ block size ${blockSize} is not supported on cuda (at most ${GPTQ_MAX_BLOCK})`);
    const range = quantRange(args);
    const B = blockSize;
    const wp = new DeviceBuffer(this.dev, m * n * 4);
    const scale = this.upload(qparams.scale);
    const zp = this.upload(qparams.zeroPoint);
    const codes = new DeviceBuffer(this.dev, m * n * 4);
    const e = new DeviceBuffer(this.dev, m * B * 4);
    const lossRows = new DeviceBuffer(this.dev, m * 8);
    try {
      this.dev.driver.memsetZero(lossRows.ptr, lossRows.bytes);
      this.dev.launch1d(this.dev.kernel('gptq', 'gather_cols', 'pppiip'), m * n, [wc.ptr, factor.permDev.ptr, factor.deadVisitDev.ptr, m, n, wp.ptr]);
      const k = this.dev.kernel('gptq', `gptq_block_${dc.dtype}`, 'piiiipippiiiiiippppip');
      const blocks = Math.max(1, Math.min(Math.ceil(m / GPTQ_WARPS), 3 * this.dev.info.multiprocessors));
      const np = factor.np;
      const l2 = factor.l2;
      for (let i1 = 0; i1 < n; i1 += B) {
        const i2 = Math.min(i1 + B, n);
        const count = i2 - i1;
        const shared = count * (count + 1) * 4 + count * 4;
        this.dev.kernels.launch(k, [blocks], [GPTQ_WARPS * 32], shared, [
          wp.ptr, m, n, i1, count, l2.ptr, np, scale.ptr, zp.ptr, STRATEGY_CODE[grid.strategy], grid.groupSize, grid.groupsPerRow,
          range.qmin, range.qmax, range.float ? 1 : 0, factor.permDev.ptr, codes.ptr, dc.ptr, e.ptr, B, lossRows.ptr,
        ]);
        if (i2 < n) {
          // W[:, i2:] −= E[:, :count] · U[i1:i2, i2:], with U[i, j] = L2[j, i]: B stored [N, K] = L2[i2:, i1:i2].
          this.gemm({
            M: m, N: n - i2, K: count,
            a: { ptr: e.ptr, type: 'f32', trans: false, ld: B },
            b: { ptr: l2.at(i2 * np + i1), type: 'f32', trans: true, ld: np },
            d: { ptr: wp.at(i2), type: 'f32', ld: n },
            alpha: -1,
            beta: 1,
          }, 'gptq trailing update');
        }
      }
      const host = new Int32Array(m * n);
      this.dev.driver.copyToHost(host, codes.ptr, m * n * 4);
      const losses = new Float64Array(m);
      this.dev.driver.copyToHost(losses, lossRows.ptr, m * 8);
      let loss = 0;
      for (let r = 0; r < m; r++) loss += losses[r]!;
      return { codes: host, loss };
    } finally {
      for (const b of [wp, scale, zp, codes, e, lossRows]) b.free();
    }
  }

  // --- internals ----------------------------------------------------------------------------

  private gemm(g: GemmArgs, what: string): void {
    this.dev.kernels.profiler?.begin(`cublasLt gemm (${what}) M${g.M} N${g.N} K${g.K}`);
    this.dev.blas.gemm(g);
    this.dev.kernels.profiler?.end();
  }

  /** Blocks for a grid-stride kernel over n elements, at most `perSm` per SM. */
  private blocks(n: number, perSm: number): number {
    return Math.max(1, Math.min(Math.ceil(n / THREADS), this.dev.info.multiprocessors * perSm));
  }

  private upload(data: Float32Array | Int32Array | Float64Array): DeviceBuffer {
    const b = new DeviceBuffer(this.dev, Math.max(data.byteLength, 4));
    this.dev.driver.copyToDevice(b.ptr, data, data.byteLength);
    return b;
  }

  private copyBlock(dst: DevicePtr, ldd: number, src: DevicePtr, lds: number, rows: number, cols: number): void {
    this.dev.launch1d(this.dev.kernel('gptq', 'copy_block', 'pipiii'), rows * cols, [dst, ldd, src, lds, rows, cols]);
  }

  private padSquare(src: DevicePtr, n: number, np: number, dst: DevicePtr, unpad: boolean): void {
    this.dev.launch1d(this.dev.kernel('gptq', 'pad_square', 'piipi'), unpad ? n * n : np * np, [src, n, np, dst, unpad ? 1 : 0]);
  }

  private choleskyWork(np: number): { inv: DeviceBuffer; scratch: DeviceBuffer; fail: DeviceBuffer } {
    const work = {
      inv: new DeviceBuffer(this.dev, np * CHOL_NB * 4),
      scratch: new DeviceBuffer(this.dev, np * CHOL_NB * 4),
      fail: new DeviceBuffer(this.dev, 4),
    };
    this.dev.driver.memsetZero(work.fail.ptr, 4);
    return work;
  }

  private freeWork(work: { inv: DeviceBuffer; scratch: DeviceBuffer; fail: DeviceBuffer }): void {
    work.inv.free();
    work.scratch.free();
    work.fail.free();
  }

  private failed(work: { fail: DeviceBuffer }): boolean {
    const flag = new Int32Array(1);
    this.dev.driver.copyToHost(flag, work.fail.ptr, 4);
    return flag[0] !== 0;
  }

  /**
   * Right-looking blocked Cholesky of a [np, np] in place (lower; upper zeroed): per block, the
   * diagonal factor and its inverse (chol_diag), the panel L21 = A21·L11⁻ᵀ and A22 −= L21·L21ᵀ
   * (GEMMs). The diagonal blocks' inverses are left in work.inv. Failure → work.fail.
   */
  private choleskyPadded(a: DeviceBuffer, np: number, work: { inv: DeviceBuffer; scratch: DeviceBuffer; fail: DeviceBuffer }): void {
    const diag = this.dev.kernel('gptq', 'chol_diag', 'piipp');
    for (let k0 = 0; k0 < np; k0 += CHOL_NB) {
      this.dev.kernels.launch(diag, [1], [THREADS], 0, [a.ptr, np, k0, work.inv.ptr, work.fail.ptr]);
      const rest = np - k0 - CHOL_NB;
      if (rest === 0) continue;
      const panel = a.at((k0 + CHOL_NB) * np + k0);
      this.gemm({
        M: rest, N: CHOL_NB, K: CHOL_NB,
        a: { ptr: panel, type: 'f32', trans: false, ld: np },
        b: { ptr: work.inv.at(k0 * CHOL_NB), type: 'f32', trans: true, ld: CHOL_NB },
        d: { ptr: work.scratch.ptr, type: 'f32', ld: CHOL_NB },
      }, 'cholesky panel');
      this.copyBlock(panel, np, work.scratch.ptr, CHOL_NB, rest, CHOL_NB);
      this.gemm({
        M: rest, N: rest, K: CHOL_NB,
        a: { ptr: work.scratch.ptr, type: 'f32', trans: false, ld: CHOL_NB },
        b: { ptr: work.scratch.ptr, type: 'f32', trans: true, ld: CHOL_NB },
        d: { ptr: a.at((k0 + CHOL_NB) * np + k0 + CHOL_NB), type: 'f32', ld: np },
        alpha: -1,
        beta: 1,
      }, 'cholesky trailing update');
    }
    this.dev.launch1d(this.dev.kernel('gptq', 'zero_upper', 'pi'), np * np, [a.ptr, np]);
  }

  /**
   * a (= L, lower, [np, np], with its diagonal blocks' inverses in work.inv) ← (L Lᵀ)⁻¹ = XᵀX for
   * X = L⁻¹, built block row by block row: X_ii = L_ii⁻¹, X_i,<i = −L_ii⁻¹ · (L_i,<i · X_<i,<i).
   */
  private inversePadded(a: DeviceBuffer, np: number, work: { inv: DeviceBuffer; scratch: DeviceBuffer }, x: DeviceBuffer): void {
    this.dev.driver.memsetZero(x.ptr, x.bytes);
    for (let i0 = 0; i0 < np; i0 += CHOL_NB) {
      this.copyBlock(x.at(i0 * np + i0), np, work.inv.at(i0 * CHOL_NB), CHOL_NB, CHOL_NB, CHOL_NB);
      if (i0 === 0) continue;
      this.gemm({
        M: CHOL_NB, N: i0, K: i0,
        a: { ptr: a.at(i0 * np), type: 'f32', trans: false, ld: np },
        b: { ptr: x.ptr, type: 'f32', trans: false, ld: np },
        d: { ptr: work.scratch.ptr, type: 'f32', ld: np },
      }, 'triangular inverse');
      this.gemm({
        M: CHOL_NB, N: i0, K: CHOL_NB,
        a: { ptr: work.inv.at(i0 * CHOL_NB), type: 'f32', trans: false, ld: CHOL_NB },
        b: { ptr: work.scratch.ptr, type: 'f32', trans: false, ld: np },
        d: { ptr: x.at(i0 * np), type: 'f32', ld: np },
        alpha: -1,
      }, 'triangular inverse');
    }
    this.gemm({
      M: np, N: np, K: np,
      a: { ptr: x.ptr, type: 'f32', trans: true, ld: np },
      b: { ptr: x.ptr, type: 'f32', trans: false, ld: np },
      d: { ptr: a.ptr, type: 'f32', ld: np },
    }, 'inverse XᵀX');
  }

  private square(t: Tensor, op: string, name: string): CudaTensor {
    const c = this.dev.tensor(t, op, name, 'f32');
    if (c.rowCount !== c.cols) throw new Error(`${op}: ${name} ${shapeOf(c)} is not square`);
    return c;
  }

  private weight(t: Tensor, grid: WeightGrid, op: string, dtype: CudaTensor['dtype']): CudaTensor {
    const c = this.dev.tensor(t, op, 'weight', dtype);
    if (c.rowCount !== grid.rows || c.cols !== grid.cols) throw new Error(`${op}: tensor ${shapeOf(c)} for a [${grid.rows},${grid.cols}] weight grid`);
    return c;
  }
}
