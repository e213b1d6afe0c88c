// CudaDevice: the Device interface on an NVIDIA GPU. Tensors live in device memory in the device
// dtype (bf16 by default; f16 or f32), every op is one of our NVRTC-compiled kernels or a cuBLASLt
// GEMM, queued on one stream. Nothing waits for the GPU except download, scoreLogits and
// synchronize. Host integer inputs (ids, positions, targets) are staged through pinned memory.

import type { AttentionShape, ComputeDType, DecodeLayerAtArgs, Device, FakeQuantSpec, QuantizedLinearData, ScoredRows, Tensor, TrainingOps } from '../device.js';
import { CublasLt } from './cublaslt.js';
import { CudaDriver, type DevicePtr, type GpuInfo, type Handle } from './driver.js';
import { CudaError } from './errors.js';
import { KernelLibrary, type ArgSignature, type Kernel, type KernelArg } from './kernels.js';
import { Nvrtc, gpuArchitecture } from './nvrtc.js';
import { DECODE_COUNTERS, FUSED_SPLIT_MAX, launchFusedDecode, planFusedDecode, type FusedDecodePlan } from './decode-attention.js';
import { DECODE_LAYER_SYNC_WORDS, launchDecodeLayer } from './decode-layer.js';
import { CudaQuantLinear, QGEMV_ROW_MAX_M, QuantLinearOps } from './quant-linear.js';
import { CudaQuantJob } from './quant-job-ops.js';
import { CudaTensor, Storage, elementBytes, shapeSize } from './tensor.js';
import { CudaTrainingOps } from './train-ops.js';

export interface CudaDeviceOptions {
  /** Storage/compute dtype of weights and activations (accumulation is f32). Default bf16. */
  dtype?: ComputeDType;
  /** GPU ordinal. Default 0. */
  ordinal?: number;
}

export interface CudaDeviceInfo extends GpuInfo {
  arch: string;
  nvrtcVersion: [number, number];
  nvrtcPath: string;
  cublasLtVersion: number;
  cublasLtPath: string;
  kernelDir: string;
}

export interface CudaMemoryStats {
  /** Bytes held by live tensors this device allocated. */
  tensorBytes: number;
  /** High-water mark of tensorBytes since creation or resetPeakMemory(). */
  peakTensorBytes: number;
  deviceFreeBytes: number;
  deviceTotalBytes: number;
}

/** A recorded CUDA event (for timing GPU work). */
export class CudaEvent {
  constructor(readonly handle: Handle) {}
}

/** A device buffer of int32 values (token ids, positions, KV lengths) for the *At ops. */
export class CudaInts {
  freed = false;
  constructor(
    readonly device: CudaDevice,
    readonly ptr: DevicePtr,
    readonly length: number,
  ) {}
}

/** A captured, instantiated CUDA graph: replays the captured launches with one call. */
export class CudaGraph {
  private destroyed = false;
  constructor(
    private readonly device: CudaDevice,
    private readonly graph: Handle,
    private readonly exec: Handle,
  ) {}

  launch(): void {
    if (this.destroyed) throw new Error('CudaGraph: launched after destroy()');
    this.device.driver.launchGraph(this.exec);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.device.driver.destroyGraph(this.graph, this.exec);
  }
}

/** Next-token choice on the device (sampleAt): temperature 0 or topK 1 = greedy. */
export interface DeviceSampling {
  temperature: number;
  /** Keep tokens whose logit is ≥ the topK-th largest; 0 = all. */
  topK: number;
  /** 32-bit seed of the per-(step, row) uniform draws. */
  seed: number;
}

/** One op's GPU time from profile(): its kernel (or GEMM) name and milliseconds between its events. */
export interface ProfiledOp {
  name: string;
  ms: number;
}

/** A device → host read of int32 values in flight (readIntsAsync); wait() returns them. */
export class PendingInts {
  constructor(
    private readonly device: CudaDevice,
    private readonly event: Handle,
    private readonly host: Int32Array,
  ) {}

  wait(): Int32Array {
    this.device.driver.synchronizeEvent(this.event);
    return this.host.slice();
  }
}

const STAGING_BYTES = 4 * 1024 * 1024;
/** Pinned slots for readIntsAsync (each a step's tokens). */
const READBACK_SLOTS = 8;
const READBACK_SLOT_BYTES = 64 * 1024;
/** Split-KV decode attention partials (per split: normalized output + max + sum per row and head). */
const ATTENTION_SCRATCH_BYTES = 32 * 1024 * 1024;
const GEMV_WARPS = 8;
/** Threads per row of the norm kernels: many rows (prefill) → 256, each thread a few values; a few rows (decode) → up to 1024, for latency. */
function normThreads(rows: number): number {
  return rows >= 512 ? 256 : 1024;
}
const UPLOAD_CHUNK_ELEMENTS = 16 * 1024 * 1024;
const DECODE_MAX_SEQ_Q = 8;
const PREFILL_QUERY_TILE = 16;
const PREFILL_KEY_TILE = 32;

/** Pinned host memory mirrored by device memory: small host arrays go up without a pageable copy. */
class IntStaging {
  private offset = 0;
  private readonly host: Int32Array;
  constructor(
    private readonly driver: CudaDriver,
    private readonly hostAddress: bigint,
    hostBuffer: ArrayBuffer,
    private readonly deviceAddress: DevicePtr,
    private readonly capacity: number,
  ) {
    this.host = new Int32Array(hostBuffer);
  }

  /** Copies `values` to the device (queued on the stream); returns their device address. */
  stage(values: Int32Array, capturing: boolean): DevicePtr {
    const at = this.reserve(values, capturing);
    this.driver.copyToDevice(this.deviceAddress + BigInt(at), this.hostAddress + BigInt(at), values.length * 4);
    return this.deviceAddress + BigInt(at);
  }

  /** Copies `values` to `dst` on the device (queued on the stream). */
  copyTo(dst: DevicePtr, values: Int32Array): void {
    const at = this.reserve(values, false);
    this.driver.copyToDevice(dst, this.hostAddress + BigInt(at), values.length * 4);
  }

  /** A pinned slot holding `values`; returns its byte offset. */
  private reserve(values: Int32Array, capturing: boolean): number {
    const bytes = Math.ceil((values.length * 4) / 256) * 256;
    if (bytes > this.capacity) throw new Error(`IntStaging: ${values.length} values exceed the ${this.capacity}-byte staging area`);
    if (this.offset + bytes > this.capacity) {
      if (capturing) throw new CudaError('staging area full while capturing a CUDA graph');
      this.driver.synchronize(); // earlier copies have read their slots
      this.offset = 0;
    }
    const at = this.offset;
    this.host.set(values, at / 4);
    this.offset += bytes;
    return at;
  }
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

function fmtShape(t: Tensor): string {
  return `[${t.shape.join(',')}]`;
}

export class CudaDevice implements Device {
  readonly kind = 'cuda' as const;
  readonly dtype: ComputeDType;
  readonly driver: CudaDriver;
  readonly info: CudaDeviceInfo;
  private readonly nvrtc: Nvrtc;
  /** @internal cuBLASLt, for the op-family modules beside this file. */
  readonly blas: CublasLt;
  /** @internal the kernel library, for the op-family modules beside this file. */
  readonly kernels: KernelLibrary;
  private readonly staging: IntStaging;
  /** @internal Kernel name suffix of the device dtype (f32, bf16, f16). */
  readonly suffix: string;
  private capturing = false;
  private tensorBytes = 0;
  private peakTensorBytes = 0;
  private readonly attentionScratch: DevicePtr;
  private readonly readback: { address: bigint; view: Int32Array; events: Handle[]; next: number };
  /** LLMOPT_CUDA_SIMPLE_ATTENTION=1: the CUDA-core attention kernels only (A/B comparisons). */
  private readonly simpleAttention = process.env.LLMOPT_CUDA_SIMPLE_ATTENTION === '1';
  /** Upper bound on the fused decode attention's key splits (LLMOPT_CUDA_DECODE_SPLITS_MAX; timing sweeps). */
  decodeSplitsMax = Number(process.env.LLMOPT_CUDA_DECODE_SPLITS_MAX ?? FUSED_SPLIT_MAX);
  /** Arrival counters of the fused decode attention (DECODE_COUNTERS int32, zeroed once; each launch leaves them 0). */
  private readonly attentionCounters: DevicePtr;
  /** The fused decode layer's grid barrier: arrival count and generation (zeroed once; each barrier leaves the count 0). */
  private readonly decodeLayerSync: DevicePtr;
  /**
   * Opt-in (LLMOPT_CUDA_DECODE_LAYER=1): batch-1 decode steps run each decoder layer as one decode_layer
   * launch where it applies (decode-layer.ts). Off by default: at the Llama-3.2-1B shape on the H200 it
   * measured slower than the per-op fused layers for every format (BF16 0.978 against 0.934 ms/step,
   * FP8 0.894 against 0.837; bench/results/2026-12-01-h200-s6-call7/).
   */
  fusedDecodeLayer = process.env.LLMOPT_CUDA_DECODE_LAYER === '1';
  /**
   * @internal Profiling aid (scripts/gpu/decode-layer-stamps.ts): a device buffer of DECODE_LAYER_STAMPS u64 per SM
   * that decode_layer launches fill with per-stage globaltimer stamps; 0 = none.
   */
  decodeLayerStamps: DevicePtr = 0n;
  /** Largest M that goes to the GEMV kernels instead of cuBLASLt (LLMOPT_CUDA_GEMV_MAX_M, default 4 — at 8 cuBLASLt wins on large weights; 0 = never; benchmarks change it). */
  gemvMaxM = Math.min(8, Number(process.env.LLMOPT_CUDA_GEMV_MAX_M ?? 4));
  private profileEvents: { name: string; start: Handle; end: Handle }[] | undefined;
  private readonly quant = new QuantLinearOps(this);

  constructor(opts: CudaDeviceOptions = {}) {
    this.dtype = opts.dtype ?? 'bf16';
    if (!['f32', 'bf16', 'f16'].includes(this.dtype)) throw new Error(`CudaDevice: unknown dtype ${String(this.dtype)}`);
    this.suffix = this.dtype;
    this.driver = new CudaDriver(opts.ordinal ?? 0);
    this.nvrtc = new Nvrtc();
    this.blas = new CublasLt(this.driver);
    const [major, minor] = this.driver.info.computeCapability;
    const arch = gpuArchitecture(major, minor);
    this.kernels = new KernelLibrary(this.driver, this.nvrtc, arch);
    const pinned = this.driver.allocPinned(STAGING_BYTES);
    this.staging = new IntStaging(this.driver, pinned.address, pinned.buffer, this.driver.allocPermanent(STAGING_BYTES), STAGING_BYTES);
    this.attentionScratch = this.driver.allocPermanent(ATTENTION_SCRATCH_BYTES);
    this.attentionCounters = this.driver.allocPermanent(DECODE_COUNTERS * 4);
    this.driver.memsetZero(this.attentionCounters, DECODE_COUNTERS * 4);
    this.decodeLayerSync = this.driver.allocPermanent(DECODE_LAYER_SYNC_WORDS * 4);
    this.driver.memsetZero(this.decodeLayerSync, DECODE_LAYER_SYNC_WORDS * 4);
    const rb = this.driver.allocPinned(READBACK_SLOTS * READBACK_SLOT_BYTES);
    this.readback = { address: rb.address, view: new Int32Array(rb.buffer), events: [], next: 0 };
    const self = this;
    this.kernels.profiler = {
      begin(name: string) {
        if (self.profileEvents === undefined) return;
        const start = self.driver.createEvent();
        self.driver.recordEvent(start);
        self.profileEvents.push({ name, start, end: start });
      },
      end() {
        const last = self.profileEvents?.[self.profileEvents.length - 1];
        if (last === undefined) return;
        last.end = self.driver.createEvent();
        self.driver.recordEvent(last.end);
      },
    };
    this.info = {
      ...this.driver.info,
      arch,
      nvrtcVersion: this.nvrtc.version,
      nvrtcPath: this.nvrtc.path,
      cublasLtVersion: this.blas.version,
      cublasLtPath: this.blas.path,
      kernelDir: this.kernels.dir,
    };
  }

  // --- memory ---------------------------------------------------------------------------------

  /** @internal A new tensor of `dtype` (default the device's), contents undefined; counted in memoryStats. */
  allocate(shape: readonly number[], dtype: ComputeDType = this.dtype): CudaTensor {
    this.noCapture('allocating a tensor');
    const bytes = shapeSize(shape) * elementBytes(dtype);
    const ptr = bytes > 0 ? this.driver.allocAsync(bytes) : 0n;
    this.tensorBytes += bytes;
    this.peakTensorBytes = Math.max(this.peakTensorBytes, this.tensorBytes);
    return new CudaTensor(this, dtype, ptr, shape, new Storage(ptr, bytes), true);
  }

  /** @internal Raw device bytes (packed/quantized data, scratch) counted in memoryStats; release with releaseBytes. */
  allocateBytes(bytes: number): DevicePtr {
    this.noCapture('allocating device memory');
    const ptr = bytes > 0 ? this.driver.allocAsync(bytes) : 0n;
    this.tensorBytes += bytes;
    this.peakTensorBytes = Math.max(this.peakTensorBytes, this.tensorBytes);
    return ptr;
  }

  /** @internal Frees what allocateBytes returned. */
  releaseBytes(ptr: DevicePtr, bytes: number): void {
    this.noCapture('freeing device memory');
    if (bytes > 0) this.driver.freeAsync(ptr);
    this.tensorBytes -= bytes;
  }

  upload(data: Float32Array, shape: readonly number[]): CudaTensor {
    return this.uploadAs(data, shape, this.dtype);
  }

  /** upload into a tensor of `dtype` (f32 tensors on a bf16 device: Hessians, master weights). */
  uploadAs(data: Float32Array, shape: readonly number[], dtype: ComputeDType): CudaTensor {
    const n = shapeSize(shape);
    if (data.length !== n) throw new Error(`upload: ${data.length} values for shape [${shape.join(',')}] (${n})`);
    const t = this.allocate(shape, dtype);
    if (dtype === 'f32') {
      this.driver.copyToDevice(t.ptr, data, n * 4);
      return t;
    }
    const chunk = Math.min(n, UPLOAD_CHUNK_ELEMENTS);
    if (chunk === 0) return t;
    const staging = this.driver.allocAsync(chunk * 4);
    const convert = this.kernel('convert', `convert_f32_to_${dtype}`, 'ppq');
    for (let off = 0; off < n; off += chunk) {
      const len = Math.min(chunk, n - off);
      this.driver.copyToDevice(staging, data.subarray(off, off + len), len * 4);
      this.launch1d(convert, len, [t.ptr + BigInt(off * 2), staging, len]);
    }
    this.driver.freeAsync(staging);
    return t;
  }

  /** A new tensor, zero-filled (like the cpu device's). */
  empty(shape: readonly number[]): CudaTensor {
    return this.emptyAs(shape, this.dtype);
  }

  /** empty() for a tensor of `dtype` (zero-filled). */
  emptyAs(shape: readonly number[], dtype: ComputeDType): CudaTensor {
    const t = this.allocate(shape, dtype);
    this.driver.memsetZero(t.ptr, t.bytes);
    return t;
  }

  download(t: Tensor): Float32Array {
    const c = this.tensor(t, 'download', 't', 'any');
    this.noCapture('download');
    const out = new Float32Array(c.size);
    if (c.size === 0) return out;
    if (c.dtype === 'f32') {
      this.driver.copyToHost(out, c.ptr, c.size * 4);
      return out;
    }
    const tmp = this.driver.allocAsync(c.size * 4);
    this.launch1d(this.kernel('convert', `convert_${c.dtype}_to_f32`, 'ppq'), c.size, [tmp, c.ptr, c.size]);
    this.driver.copyToHost(out, tmp, c.size * 4);
    this.driver.freeAsync(tmp);
    return out;
  }

  view(t: Tensor, shape: readonly number[]): CudaTensor {
    const c = this.tensor(t, 'view', 't', 'any');
    const n = shapeSize(shape);
    if (n !== c.size) throw new Error(`view: ${fmtShape(c)} has ${c.size} elements, [${shape.join(',')}] has ${n}`);
    return new CudaTensor(this, c.dtype, c.ptr, shape, c.storage, false);
  }

  rows(t: Tensor, start: number, count: number): CudaTensor {
    const c = this.tensor(t, 'rows', 't', 'any');
    if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > c.rowCount) {
      throw new Error(`rows: [${start}, ${start + count}) out of ${c.rowCount} rows of ${fmtShape(c)}`);
    }
    const ptr = c.ptr + BigInt(start * c.cols * elementBytes(c.dtype));
    return new CudaTensor(this, c.dtype, ptr, [count, c.cols], c.storage, false);
  }

  /** Frees the storage of a tensor made by upload/empty (stream-ordered); views are left alone. */
  free(t: Tensor): void {
    if (t instanceof CudaQuantLinear) return this.quant.free(t);
    const c = this.tensor(t, 'free', 't', 'any');
    if (!c.owner || c.storage.freed) return;
    this.noCapture('free');
    c.storage.freed = true;
    if (c.storage.bytes > 0) this.driver.freeAsync(c.storage.ptr);
    this.tensorBytes -= c.storage.bytes;
  }

  synchronize(): void {
    this.noCapture('synchronize');
    this.driver.synchronize();
  }

  // --- ops ------------------------------------------------------------------------------------

  embedding(out: Tensor, table: Tensor, ids: Int32Array): void {
    this.gather('embedding', 'embedding', out, table, ids);
  }

  addEmbedding(out: Tensor, table: Tensor, ids: Int32Array): void {
    this.gather('addEmbedding', 'add_embedding', out, table, ids);
  }

  private gather(op: string, kernelName: string, out: Tensor, table: Tensor, ids: Int32Array): void {
    const o = this.tensor(out, op, 'out');
    const tb = this.tensor(table, op, 'table');
    if (o.cols !== tb.cols || o.rowCount !== ids.length) {
      throw new Error(`${op}: shape mismatch: out ${fmtShape(o)}, table ${fmtShape(tb)}, ${ids.length} ids`);
    }
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < tb.rowCount)) throw new Error(`${op}: id ${ids[i]} at ${i} outside table of ${tb.rowCount} rows`);
    }
    if (ids.length === 0) return;
    const idsPtr = this.staging.stage(ids, this.capturing);
    const k = this.kernel('embedding', `${kernelName}_${this.suffix}`, 'pppi');
    this.kernels.launch(k, [ids.length], [rowThreads(tb.cols, 256)], 0, [o.ptr, tb.ptr, idsPtr, tb.cols]);
  }

  matmul(out: Tensor, x: Tensor, w: Tensor, bias?: Tensor): void {
    if (w instanceof CudaQuantLinear) return this.quant.matmul(out, x, w, bias);
    const o = this.tensor(out, 'matmul', 'out');
    const xc = this.tensor(x, 'matmul', 'x');
    const wc = this.tensor(w, 'matmul', 'w');
    const bc = bias !== undefined ? this.tensor(bias, 'matmul', 'bias') : undefined;
    const M = xc.rowCount, K = xc.cols, N = wc.rowCount;
    if (wc.cols !== K || o.rowCount !== M || o.cols !== N || (bc !== undefined && bc.size !== N)) {
      throw new Error(
        `matmul: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, w ${fmtShape(wc)}${bc ? `, bias ${fmtShape(bc)}` : ''} ` +
          '(expects x [M,K], w [N,K], out [M,N], bias [N])',
      );
    }
    if (overlaps(o, xc) || overlaps(o, wc)) throw new Error('matmul: out overlaps an input');
    if (K === 0) {
      // Empty sum: out = bias (or 0).
      this.driver.memsetZero(o.ptr, o.bytes);
      if (bc) for (let m = 0; m < M; m++) this.addInPlace(this.rows(o, m, 1), this.view(bc, [1, N]));
      return;
    }
    if (M <= this.gemvMaxM) {
      const vec = this.dtype === 'f32' ? 4 : 8;
      const vectorized = K % vec === 0 && xc.ptr % 16n === 0n && wc.ptr % 16n === 0n ? 1 : 0;
      const k = this.kernel('gemv', `gemv_${this.suffix}_m${M}`, 'ppppiii');
      this.kernels.launch(k, [Math.ceil(N / GEMV_WARPS)], [GEMV_WARPS * 32], 0, [o.ptr, xc.ptr, wc.ptr, bc?.ptr ?? 0n, N, K, vectorized]);
      return;
    }
    this.kernels.profiler?.begin(`cublasLt gemm M${M} N${N} K${K}`);
    this.blas.matmul(this.dtype, M, N, K, o.ptr, xc.ptr, wc.ptr, bc?.ptr);
    this.kernels.profiler?.end();
  }

  addInPlace(x: Tensor, y: Tensor): void {
    const xc = this.tensor(x, 'addInPlace', 'x');
    const yc = this.tensor(y, 'addInPlace', 'y');
    if (xc.size !== yc.size) throw new Error(`addInPlace: shape mismatch: x ${fmtShape(xc)}, y ${fmtShape(yc)}`);
    this.launch1d(this.kernel('elementwise', `add_inplace_${this.suffix}`, 'ppq'), xc.size, [xc.ptr, yc.ptr, xc.size]);
  }

  /**
   * Fused x += y, then out = rmsNorm(x) (the same values as addInPlace + rmsNorm): the residual add
   * of one block and the norm that opens the next, in one kernel.
   */
  addRmsNorm(out: Tensor, x: Tensor, y: Tensor, weight: Tensor, eps: number): void {
    const o = this.tensor(out, 'addRmsNorm', 'out');
    const xc = this.tensor(x, 'addRmsNorm', 'x');
    const yc = this.tensor(y, 'addRmsNorm', 'y');
    const wc = this.tensor(weight, 'addRmsNorm', 'weight');
    const C = xc.cols;
    if (o.size !== xc.size || yc.size !== xc.size || o.cols !== C || wc.size !== C) {
      throw new Error(`addRmsNorm: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, y ${fmtShape(yc)}, weight ${fmtShape(wc)}`);
    }
    const k = this.kernel('norm', `add_rms_norm_${this.suffix}`, 'ppppif');
    this.kernels.launch(k, [xc.rowCount], [rowThreads(C, normThreads(xc.rowCount))], 0, [o.ptr, xc.ptr, yc.ptr, wc.ptr, C, eps]);
  }

  /**
   * outs[i] = x · weights[i]ᵀ (+ biases[i]) for two or three weights sharing x (q/k/v): one GEMV launch
   * for small M, separate GEMMs otherwise.
   */
  matmulMany(outs: readonly Tensor[], x: Tensor, weights: readonly Tensor[], biases: readonly (Tensor | undefined)[] = []): void {
    if (outs.length !== weights.length || outs.length < 1 || outs.length > 3) throw new Error(`matmulMany: ${outs.length} outputs for ${weights.length} weights (1 to 3)`);
    if (weights.some((w) => w instanceof CudaQuantLinear)) return this.quant.matmulMany(outs, x, weights, biases);
    const xc = this.tensor(x, 'matmulMany', 'x');
    const M = xc.rowCount, K = xc.cols;
    const os = outs.map((t, i) => this.tensor(t, 'matmulMany', `outs[${i}]`));
    const ws = weights.map((t, i) => this.tensor(t, 'matmulMany', `weights[${i}]`));
    const bs = weights.map((_, i) => (biases[i] !== undefined ? this.tensor(biases[i]!, 'matmulMany', `biases[${i}]`) : undefined));
    const fits = ws.every((w, i) => w.cols === K && os[i]!.rowCount === M && os[i]!.cols === w.rowCount && !overlaps(os[i]!, xc) &&
      (bs[i] === undefined || bs[i]!.size === w.rowCount));
    if (!fits || M > this.gemvMaxM || K === 0) {
      for (let i = 0; i < outs.length; i++) this.matmul(outs[i]!, x, weights[i]!, biases[i]);
      return;
    }
    const vec = this.dtype === 'f32' ? 4 : 8;
    const vectorized = K % vec === 0 && xc.ptr % 16n === 0n && ws.every((w) => w.ptr % 16n === 0n) ? 1 : 0;
    const N = [0, 1, 2].map((i) => ws[i]?.rowCount ?? 0);
    const ptr = (arr: (CudaTensor | undefined)[], i: number) => arr[i]?.ptr ?? 0n;
    const k = this.kernel('gemv', `gemv3_${this.suffix}_m${M}`, 'ppppppppppiiiii');
    this.kernels.launch(k, [Math.ceil((N[0]! + N[1]! + N[2]!) / GEMV_WARPS)], [GEMV_WARPS * 32], 0, [
      ptr(os, 0), ptr(os, 1), ptr(os, 2), xc.ptr, ptr(ws, 0), ptr(ws, 1), ptr(ws, 2), ptr(bs, 0), ptr(bs, 1), ptr(bs, 2), N[0]!, N[1]!, N[2]!, K, vectorized,
    ]);
  }

  /**
   * out = silu(x · wGateᵀ) * (x · wUpᵀ): one GEMV launch for small M (f32 until the store), else two
   * GEMMs into gate/up (scratch of out's shape) and siluMul.
   */
  matmulSiluMul(out: Tensor, x: Tensor, wGate: Tensor, wUp: Tensor, gate: Tensor, up: Tensor): void {
    if (wGate instanceof CudaQuantLinear || wUp instanceof CudaQuantLinear) return this.quant.matmulSiluMul(out, x, wGate, wUp, gate, up);
    const o = this.tensor(out, 'matmulSiluMul', 'out');
    const xc = this.tensor(x, 'matmulSiluMul', 'x');
    const g = this.tensor(wGate, 'matmulSiluMul', 'wGate');
    const u = this.tensor(wUp, 'matmulSiluMul', 'wUp');
    const M = xc.rowCount, K = xc.cols, N = g.rowCount;
    if (g.cols !== K || u.cols !== K || u.rowCount !== N || o.rowCount !== M || o.cols !== N) {
      throw new Error(`matmulSiluMul: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, wGate ${fmtShape(g)}, wUp ${fmtShape(u)}`);
    }
    if (M > this.gemvMaxM || K === 0) {
      this.matmul(gate, x, wGate);
      this.matmul(up, x, wUp);
      this.siluMul(out, gate, up);
      return;
    }
    const vec = this.dtype === 'f32' ? 4 : 8;
    const vectorized = K % vec === 0 && xc.ptr % 16n === 0n && g.ptr % 16n === 0n && u.ptr % 16n === 0n ? 1 : 0;
    const k = this.kernel('gemv', `gemv_silu_mul_${this.suffix}_m${M}`, 'ppppiii');
    this.kernels.launch(k, [Math.ceil(N / GEMV_WARPS)], [GEMV_WARPS * 32], 0, [o.ptr, xc.ptr, g.ptr, u.ptr, N, K, vectorized]);
  }

  /**
   * One decode step's q/k/v (seq 1, M = batch ≤ gemvMaxM sequences) in one GEMV launch, with rope and
   * the K/V append of ropeWriteKvAt in its epilogue (rotaryDim = headDim): q ← rope(x·Wqᵀ + bq) into
   * `q`, rope(x·Wkᵀ + bk) and x·Wvᵀ + bv into the caches at row b·kvStride + positions[b]; the same
   * values as matmulMany + ropeWriteKvAt. Returns false, queueing nothing, when the shapes or weights
   * do not allow it (the caller runs those two ops).
   */
  qkvRopeKvAt(a: {
    q: Tensor; cacheK: Tensor; cacheV: Tensor; x: Tensor; wq: Tensor; wk: Tensor; wv: Tensor; bq?: Tensor; bk?: Tensor; bv?: Tensor;
    positions: CudaInts; cos: Tensor; sin: Tensor; nHeads: number; nKvHeads: number; headDim: number; rotaryDim: number; kvStride: number;
  }): boolean {
    const live = (t: Tensor | undefined) =>
      t === undefined || (t instanceof CudaTensor && t.device === this && t.dtype === this.dtype && !t.storage.freed);
    const ws = [a.wq, a.wk, a.wv];
    const quantized = ws.filter((w) => w instanceof CudaQuantLinear && !w.freed).length === 3;
    if (!(quantized || ws.every(live)) || ![a.q, a.cacheK, a.cacheV, a.x, a.bq, a.bk, a.bv, a.cos, a.sin].every(live)) return false;
    const [q, ck, cv, x, cos, sin] = [a.q, a.cacheK, a.cacheV, a.x, a.cos, a.sin] as CudaTensor[];
    // [rows, cols] of each weight, stored as a tensor or quantized
    const [dq, dk, dv] = ws.map((w) => (w instanceof CudaQuantLinear ? [w.N, w.K] : [(w as CudaTensor).rowCount, (w as CudaTensor).cols]));
    const M = x!.rowCount, K = x!.cols, hd = a.headDim, half = hd / 2;
    const qDim = a.nHeads * hd, D = a.nKvHeads * hd;
    const size = (t: Tensor | undefined) => (t === undefined ? -1 : (t as CudaTensor).size);
    const ok = M >= 1 && M <= 4 && a.rotaryDim === hd && hd % 2 === 0 && K > 0 &&
      dq![0] === qDim && dk![0] === D && dv![0] === D && dq![1] === K && dk![1] === K && dv![1] === K &&
      q!.size === M * qDim && ck!.cols === D && cv!.cols === D && ck!.rowCount >= M * a.kvStride && cv!.rowCount >= M * a.kvStride &&
      a.positions.length >= M && cos!.cols === half && sin!.cols === half &&
      (a.bq === undefined || size(a.bq) === qDim) && (a.bk === undefined || size(a.bk) === D) && (a.bv === undefined || size(a.bv) === D);
    if (!ok) return false;
    if (quantized) return this.quant.qkvRopeKvAt(a, ws as CudaQuantLinear[]);
    if (M > this.gemvMaxM) return false;
    const [wq, wk, wv] = ws as CudaTensor[];
    this.ints(a.positions, 'qkvRopeKvAt', 'positions');
    const vec = this.dtype === 'f32' ? 4 : 8;
    const vectorized = K % vec === 0 && [x!, wq!, wk!, wv!].every((t) => t.ptr % 16n === 0n) ? 1 : 0;
    const warps = a.nHeads * half + a.nKvHeads * half + D;
    const p = (t: Tensor | undefined) => (t === undefined ? 0n : (t as CudaTensor).ptr);
    const k = this.kernel('gemv', `gemv_qkv_rope_kv_${this.suffix}_m${M}`, 'pppppppppppppiiiiii');
    this.kernels.launch(k, [Math.ceil(warps / GEMV_WARPS)], [GEMV_WARPS * 32], 0, [
      q!.ptr, ck!.ptr, cv!.ptr, x!.ptr, wq!.ptr, wk!.ptr, wv!.ptr, p(a.bq), p(a.bk), p(a.bv), a.positions.ptr, p(a.cos), p(a.sin),
      a.nHeads, a.nKvHeads, hd, a.kvStride, K, vectorized,
    ]);
    return true;
  }

  decodeLayerAt(a: DecodeLayerAtArgs<CudaInts>): boolean {
    if (!this.fusedDecodeLayer) return false;
    return launchDecodeLayer(this, a, this.decodeLayerSync, { ptr: this.attentionScratch, bytes: ATTENTION_SCRATCH_BYTES },
      this.decodeLayerStamps);
  }

  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, eps: number): void {
    const o = this.tensor(out, 'rmsNorm', 'out');
    const xc = this.tensor(x, 'rmsNorm', 'x');
    const wc = this.tensor(weight, 'rmsNorm', 'weight');
    const C = xc.cols;
    if (o.size !== xc.size || o.cols !== C || wc.size !== C) {
      throw new Error(`rmsNorm: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, weight ${fmtShape(wc)}`);
    }
    const k = this.kernel('norm', `rms_norm_${this.suffix}`, 'pppif');
    this.kernels.launch(k, [xc.rowCount], [rowThreads(C, normThreads(xc.rowCount))], 0, [o.ptr, xc.ptr, wc.ptr, C, eps]);
  }

  layerNorm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: number): void {
    const o = this.tensor(out, 'layerNorm', 'out');
    const xc = this.tensor(x, 'layerNorm', 'x');
    const wc = this.tensor(weight, 'layerNorm', 'weight');
    const bc = this.tensor(bias, 'layerNorm', 'bias');
    const C = xc.cols;
    if (o.size !== xc.size || o.cols !== C || wc.size !== C || bc.size !== C) {
      throw new Error(`layerNorm: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}, weight ${fmtShape(wc)}, bias ${fmtShape(bc)}`);
    }
    const k = this.kernel('norm', `layer_norm_${this.suffix}`, 'ppppif');
    this.kernels.launch(k, [xc.rowCount], [rowThreads(C, normThreads(xc.rowCount))], 0, [o.ptr, xc.ptr, wc.ptr, bc.ptr, C, eps]);
  }

  rope(x: Tensor, positions: Int32Array, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void {
    const xc = this.tensor(x, 'rope', 'x');
    const cc = this.tensor(cos, 'rope', 'cos');
    const sc = this.tensor(sin, 'rope', 'sin');
    const half = rotaryDim / 2;
    const rows = positions.length;
    if (!Number.isInteger(half) || half < 0 || rotaryDim > headDim || xc.size !== rows * nHeads * headDim ||
      cc.cols !== half || sc.cols !== half || cc.rowCount !== sc.rowCount) {
      throw new Error(`rope: shape mismatch: x ${fmtShape(xc)}, ${rows} positions, cos ${fmtShape(cc)}, sin ${fmtShape(sc)}, ` +
        `nHeads ${nHeads}, headDim ${headDim}, rotaryDim ${rotaryDim}`);
    }
    const maxPos = cc.rowCount;
    for (let r = 0; r < rows; r++) {
      const pos = positions[r];
      if (!(pos >= 0 && pos < maxPos)) throw new Error(`rope: position ${pos} at row ${r} outside the [0, ${maxPos}) table`);
    }
    if (rows === 0 || half === 0) return;
    const posPtr = this.staging.stage(positions, this.capturing);
    const k = this.kernel('rope', `rope_${this.suffix}`, 'ppppiii');
    this.kernels.launch(k, [rows], [rowThreads(nHeads * half, 256)], 0, [xc.ptr, posPtr, cc.ptr, sc.ptr, nHeads, headDim, rotaryDim]);
  }

  attention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
    this.launchAttention('attention', out, q, k, v, shape, 0n);
  }

  private launchAttention(op: string, out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape, kvLens: DevicePtr): void {
    const o = this.tensor(out, op, 'out');
    const qc = this.tensor(q, op, 'q');
    const kc = this.tensor(k, op, 'k');
    const vc = this.tensor(v, op, 'v');
    const { batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale } = shape;
    const window = shape.window ?? 0;
    const qLen = batch * seqQ * nHead * headDim;
    const kvTotal = batch * kvStride * nKvHead * headDim;
    const ints = [batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim];
    if (!ints.every((n) => Number.isInteger(n) && n >= 0) || nKvHead < 1 || nHead % nKvHead !== 0 ||
      seqQ > kvLen || kvLen > kvStride || o.size !== qLen || qc.size !== qLen ||
      kc.size !== kvTotal || vc.size !== kvTotal ||
      (shape.window !== undefined && !(Number.isInteger(shape.window) && shape.window >= 1))) {
      throw new Error(`${op}: shape mismatch: out ${fmtShape(o)}, q ${fmtShape(qc)}, k ${fmtShape(kc)}, v ${fmtShape(vc)}, ` +
        `shape ${JSON.stringify(shape)} (expects q/out [batch*seqQ, nHead*headDim], k/v [batch*kvStride, nKvHead*headDim], ` +
        'seqQ ≤ kvLen ≤ kvStride, nHead % nKvHead = 0)');
    }
    if (headDim > 256) throw new Error(`${op}: headDim ${headDim} > 256 is not supported on cuda`);
    if (overlaps(o, kc) || overlaps(o, vc)) throw new Error(`${op}: out overlaps k or v`);
    if (batch === 0 || seqQ === 0 || nHead === 0) return;
    const D = headDim <= 32 ? 32 : headDim <= 64 ? 64 : headDim <= 128 ? 128 : 256;
    const args: KernelArg[] = [o.ptr, qc.ptr, kc.ptr, vc.ptr, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale, window, kvLens];
    const sig = 'ppppiiiiiifip';
    if (seqQ < DECODE_MAX_SEQ_Q && !this.simpleAttention) {
      launchFusedDecode(this, shape, D, args, { partials: this.attentionScratch, bytes: ATTENTION_SCRATCH_BYTES, counters: this.attentionCounters }, this.decodeSplitsMax);
    } else if (seqQ < DECODE_MAX_SEQ_Q) {
      const kern = this.kernel('attention', `attention_decode_${this.suffix}_d${D}`, sig);
      this.kernels.launch(kern, [batch * seqQ, nHead], [256], 0, args);
    } else if (!this.simpleAttention && this.dtype !== 'f32' && (headDim === 64 || headDim === 128) &&
      [o, qc, kc, vc].every((t) => t.ptr % 16n === 0n)) {
      const kern = this.kernel('flash', `attention_prefill_mma_${this.suffix}_d${headDim}`, sig);
      const shared = 5 * 64 * (headDim + 8) * 2; // Q tile + double-buffered K and V tiles
      this.kernels.launch(kern, [Math.ceil(seqQ / 64), nHead, batch], [128], shared, args);
    } else {
      const kern = this.kernel('attention', `attention_prefill_${this.suffix}_d${D}`, sig);
      const shared = (PREFILL_KEY_TILE * (D + 1) + PREFILL_KEY_TILE * D + PREFILL_QUERY_TILE * D) * 4;
      this.kernels.launch(kern, [Math.ceil(seqQ / PREFILL_QUERY_TILE), nHead, batch], [128], shared, args);
    }
  }

  /** @internal The fused decode attention's plan (splits, head groups) for a shape, as attention() launches it. */
  decodeAttentionPlan(shape: AttentionShape): FusedDecodePlan {
    return planFusedDecode(shape, this.info.multiprocessors, ATTENTION_SCRATCH_BYTES, this.decodeSplitsMax);
  }

  writeKv(cache: Tensor, src: Tensor, batch: number, seq: number, start: number, kvStride: number): void {
    this.launchWriteKv('writeKv', cache, src, batch, seq, start, kvStride, 0n);
  }

  private launchWriteKv(op: string, cache: Tensor, src: Tensor, batch: number, seq: number, start: number, kvStride: number, starts: DevicePtr): void {
    const cc = this.tensor(cache, op, 'cache');
    const sc = this.tensor(src, op, 'src');
    const D = cc.cols;
    if (sc.cols !== D || sc.size !== batch * seq * D || start < 0 || start + seq > kvStride || cc.rowCount < batch * kvStride) {
      throw new Error(`${op}: shape mismatch: cache ${fmtShape(cc)}, src ${fmtShape(sc)}, batch ${batch}, seq ${seq}, ` +
        `start ${start}, kvStride ${kvStride}`);
    }
    const k = this.kernel('embedding', `write_kv_${this.suffix}`, 'ppiiiip');
    this.kernels.launch(k, [batch * seq], [rowThreads(D, 256)], 0, [cc.ptr, sc.ptr, seq, start, kvStride, D, starts]);
  }

  siluMul(out: Tensor, gate: Tensor, up: Tensor): void {
    const o = this.tensor(out, 'siluMul', 'out');
    const g = this.tensor(gate, 'siluMul', 'gate');
    const u = this.tensor(up, 'siluMul', 'up');
    if (o.size !== g.size || u.size !== g.size) {
      throw new Error(`siluMul: shape mismatch: out ${fmtShape(o)}, gate ${fmtShape(g)}, up ${fmtShape(u)}`);
    }
    this.launch1d(this.kernel('elementwise', `silu_mul_${this.suffix}`, 'pppq'), o.size, [o.ptr, g.ptr, u.ptr, o.size]);
  }

  geluTanh(out: Tensor, x: Tensor): void {
    const o = this.tensor(out, 'geluTanh', 'out');
    const xc = this.tensor(x, 'geluTanh', 'x');
    if (o.size !== xc.size) throw new Error(`geluTanh: shape mismatch: out ${fmtShape(o)}, x ${fmtShape(xc)}`);
    this.launch1d(this.kernel('elementwise', `gelu_tanh_${this.suffix}`, 'ppq'), o.size, [o.ptr, xc.ptr, o.size]);
  }

  fakeQuantRows(x: Tensor, spec: FakeQuantSpec): void {
    const xc = this.tensor(x, 'fakeQuantRows', 'x');
    if (spec.format !== 'int8' && spec.format !== 'fp8_e4m3') throw new Error(`fakeQuantRows: unknown format ${String(spec.format)}`);
    if (spec.scale !== undefined && !(spec.scale > 0 && Number.isFinite(spec.scale))) {
      throw new Error(`fakeQuantRows: static scale must be a positive finite number, got ${spec.scale}`);
    }
    if (xc.size === 0) return;
    const k = this.kernel('fakequant', `fake_quant_rows_${this.suffix}`, 'piid');
    this.kernels.launch(k, [xc.rowCount], [rowThreads(xc.cols, 1024)], 0, [xc.ptr, xc.cols, spec.format === 'fp8_e4m3' ? 1 : 0, spec.scale ?? 0]);
  }

  scoreLogits(logits: Tensor, targets: Int32Array, baseline?: Tensor): ScoredRows {
    const l = this.tensor(logits, 'scoreLogits', 'logits');
    const b = baseline !== undefined ? this.tensor(baseline, 'scoreLogits', 'baseline') : undefined;
    this.noCapture('scoreLogits');
    const rows = l.rowCount, V = l.cols;
    if (targets.length !== rows || V < 1 || (b !== undefined && (b.rowCount !== rows || b.cols !== V))) {
      throw new Error(`scoreLogits: shape mismatch: logits ${fmtShape(l)}, ${targets.length} targets` +
        `${b ? `, baseline ${fmtShape(b)}` : ''}`);
    }
    for (let r = 0; r < rows; r++) {
      if (targets[r] >= V) throw new Error(`scoreLogits: target ${targets[r]} at row ${r} ≥ vocab ${V}`);
    }
    const nll = new Float64Array(rows);
    const argmax = new Int32Array(rows);
    const scored: ScoredRows = { nll, argmax };
    if (rows === 0) {
      if (b) [scored.kld, scored.top1] = [new Float64Array(0), new Uint8Array(0)];
      return scored;
    }
    const targetPtr = this.staging.stage(targets, false);
    // One allocation: rows × {nll, kld} as f64, then rows × {argmax, baseline argmax} as int32.
    const res = this.driver.allocAsync(rows * 24);
    const resArg = res + BigInt(rows * 16);
    const k = this.kernel('score', `score_logits_${this.suffix}`, 'pppppi');
    this.kernels.launch(k, [rows], [V >= 4096 ? 1024 : 256], 0, [res, resArg, l.ptr, b?.ptr ?? 0n, targetPtr, V]);
    const host = new ArrayBuffer(rows * 24);
    this.driver.copyToHost(new Uint8Array(host), res, rows * 24);
    this.driver.freeAsync(res);
    const values = new Float64Array(host, 0, rows * 2);
    const args = new Int32Array(host, rows * 16, rows * 2);
    for (let r = 0; r < rows; r++) {
      nll[r] = values[2 * r];
      argmax[r] = args[2 * r];
    }
    if (b) {
      const kld = new Float64Array(rows);
      const top1 = new Uint8Array(rows);
      for (let r = 0; r < rows; r++) {
        if (targets[r] < 0) continue; // skipped rows score 0, as on cpu
        kld[r] = Math.max(0, values[2 * r + 1]);
        top1[r] = args[2 * r] === args[2 * r + 1] ? 1 : 0;
      }
      scored.kld = kld;
      scored.top1 = top1;
    }
    return scored;
  }

  // --- extras (not in Device) -----------------------------------------------------------------

  /** A device buffer of n int32 (zero-filled): per-step inputs read by the *At ops. */
  allocInts(n: number): CudaInts {
    this.noCapture('allocInts');
    if (!Number.isInteger(n) || n < 1) throw new Error(`allocInts: n must be an integer ≥ 1, got ${n}`);
    const ptr = this.driver.allocAsync(n * 4);
    this.driver.memsetZero(ptr, n * 4);
    return new CudaInts(this, ptr, n);
  }

  /** Queues a copy of `values` into `dst` (stream-ordered: a graph launched after it sees them). */
  setInts(dst: CudaInts, values: Int32Array): void {
    this.noCapture('setInts');
    this.ints(dst, 'setInts', 'dst');
    if (values.length > dst.length) throw new Error(`setInts: ${values.length} values for a buffer of ${dst.length}`);
    this.staging.copyTo(dst.ptr, values);
  }

  freeInts(t: CudaInts): void {
    this.noCapture('freeInts');
    if (t.freed) return;
    t.freed = true;
    this.driver.freeAsync(t.ptr);
  }

  /** embedding with the ids read on the device (ids[0..out rows)); ids must be valid table rows. */
  embeddingAt(out: Tensor, table: Tensor, ids: CudaInts): void {
    const o = this.tensor(out, 'embeddingAt', 'out');
    const tb = this.tensor(table, 'embeddingAt', 'table');
    this.ints(ids, 'embeddingAt', 'ids');
    if (o.cols !== tb.cols || o.rowCount > ids.length) {
      throw new Error(`embeddingAt: shape mismatch: out ${fmtShape(o)}, table ${fmtShape(tb)}, ${ids.length} ids`);
    }
    const k = this.kernel('embedding', `embedding_${this.suffix}`, 'pppi');
    this.kernels.launch(k, [o.rowCount], [rowThreads(tb.cols, 256)], 0, [o.ptr, tb.ptr, ids.ptr, tb.cols]);
  }

  /** addEmbedding with the ids read on the device (GPT-2 learned positions in a replayed step). */
  addEmbeddingAt(out: Tensor, table: Tensor, ids: CudaInts): void {
    const o = this.tensor(out, 'addEmbeddingAt', 'out');
    const tb = this.tensor(table, 'addEmbeddingAt', 'table');
    this.ints(ids, 'addEmbeddingAt', 'ids');
    if (o.cols !== tb.cols || o.rowCount > ids.length) {
      throw new Error(`addEmbeddingAt: shape mismatch: out ${fmtShape(o)}, table ${fmtShape(tb)}, ${ids.length} ids`);
    }
    const k = this.kernel('embedding', `add_embedding_${this.suffix}`, 'pppi');
    this.kernels.launch(k, [o.rowCount], [rowThreads(tb.cols, 256)], 0, [o.ptr, tb.ptr, ids.ptr, tb.cols]);
  }

  /**
   * The next token of each row of logits [rows, V], chosen on the device (kernels/sample.cu): written
   * to ids[row] and, when given, history[step * rows + row] (step read from step[0]; rows past
   * historyCap steps are not recorded).
   */
  sampleAt(logits: Tensor, sampling: DeviceSampling, ids: CudaInts, step: CudaInts, history?: CudaInts): void {
    const l = this.tensor(logits, 'sampleAt', 'logits');
    this.ints(ids, 'sampleAt', 'ids');
    this.ints(step, 'sampleAt', 'step');
    if (history !== undefined) this.ints(history, 'sampleAt', 'history');
    const rows = l.rowCount;
    if (ids.length < rows) throw new Error(`sampleAt: ${ids.length} ids for ${rows} rows`);
    const { temperature, topK, seed } = sampling;
    if (!(temperature >= 0 && Number.isFinite(temperature)) || !Number.isInteger(topK) || topK < 0) {
      throw new Error(`sampleAt: bad sampling ${JSON.stringify(sampling)}`);
    }
    const k = this.kernel('sample', `sample_rows_${this.suffix}`, 'pifiipppi');
    const invTemp = temperature === 0 ? 0 : 1 / temperature;
    const cap = history !== undefined ? Math.floor(history.length / Math.max(rows, 1)) : 0;
    this.kernels.launch(k, [rows], [1024], 0, [l.ptr, l.cols, invTemp, topK, seed | 0, ids.ptr, history?.ptr ?? 0n, step.ptr, cap]);
  }

  /** positions[b] += 1 and kvLens[b] += 1 for b < batch, step[0] += 1 (the end of a replayed decode step). */
  decodeAdvance(positions: CudaInts, kvLens: CudaInts, step: CudaInts, batch: number): void {
    this.ints(positions, 'decodeAdvance', 'positions');
    this.ints(kvLens, 'decodeAdvance', 'kvLens');
    this.ints(step, 'decodeAdvance', 'step');
    if (positions.length < batch || kvLens.length < batch) throw new Error(`decodeAdvance: buffers shorter than batch ${batch}`);
    const k = this.kernel('sample', 'decode_advance', 'pppi');
    this.kernels.launch(k, [1], [Math.min(1024, roundUp(Math.max(batch, 1), 32))], 0, [positions.ptr, kvLens.ptr, step.ptr, batch]);
  }

  /**
   * Queues a copy of src[offset, offset + count) to pinned host memory; wait() on the result blocks
   * until it has arrived (work queued after it keeps running). At most 8 reads may be pending.
   */
  readIntsAsync(src: CudaInts, offset: number, count: number): PendingInts {
    this.noCapture('readIntsAsync');
    this.ints(src, 'readIntsAsync', 'src');
    if (!(offset >= 0 && count >= 0 && offset + count <= src.length) || count * 4 > READBACK_SLOT_BYTES) {
      throw new Error(`readIntsAsync: [${offset}, ${offset + count}) of ${src.length} values (at most ${READBACK_SLOT_BYTES / 4})`);
    }
    const rb = this.readback;
    const slot = rb.next;
    rb.next = (slot + 1) % READBACK_SLOTS;
    rb.events[slot] ??= this.driver.createEvent();
    const hostAddress = rb.address + BigInt(slot * READBACK_SLOT_BYTES);
    this.driver.copyToHostAsync(hostAddress, src.ptr + BigInt(offset * 4), count * 4);
    this.driver.recordEvent(rb.events[slot]);
    const start = (slot * READBACK_SLOT_BYTES) / 4;
    return new PendingInts(this, rb.events[slot], rb.view.subarray(start, start + count));
  }

  /**
   * Runs `record` eagerly with an event pair around every kernel launch and GEMM, then returns each
   * op's GPU time in launch order (a per-kernel breakdown; JS gaps between ops are not counted).
   */
  profile(record: () => void): ProfiledOp[] {
    this.noCapture('profile');
    this.driver.synchronize();
    const events: { name: string; start: Handle; end: Handle }[] = [];
    this.profileEvents = events;
    try {
      record();
    } finally {
      this.profileEvents = undefined;
    }
    this.driver.synchronize();
    const ops = events.map((e) => ({ name: e.name, ms: e.end === e.start ? 0 : this.driver.elapsedMs(e.start, e.end) }));
    for (const e of events) {
      this.driver.destroyEvent(e.start);
      if (e.end !== e.start) this.driver.destroyEvent(e.end);
    }
    return ops;
  }

  /** rope with row r's position read on the device (positions[r]); positions must be < cos rows. */
  ropeAt(x: Tensor, positions: CudaInts, rows: number, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void {
    const xc = this.tensor(x, 'ropeAt', 'x');
    const cc = this.tensor(cos, 'ropeAt', 'cos');
    const sc = this.tensor(sin, 'ropeAt', 'sin');
    this.ints(positions, 'ropeAt', 'positions');
    const half = rotaryDim / 2;
    if (!Number.isInteger(half) || half < 0 || rotaryDim > headDim || xc.size !== rows * nHeads * headDim || rows > positions.length ||
      cc.cols !== half || sc.cols !== half || cc.rowCount !== sc.rowCount) {
      throw new Error(`ropeAt: shape mismatch: x ${fmtShape(xc)}, ${rows} rows of ${positions.length} positions, cos ${fmtShape(cc)}, ` +
        `sin ${fmtShape(sc)}, nHeads ${nHeads}, headDim ${headDim}, rotaryDim ${rotaryDim}`);
    }
    if (rows === 0 || half === 0) return;
    const k = this.kernel('rope', `rope_${this.suffix}`, 'ppppiii');
    this.kernels.launch(k, [rows], [rowThreads(nHeads * half, 256)], 0, [xc.ptr, positions.ptr, cc.ptr, sc.ptr, nHeads, headDim, rotaryDim]);
  }

  /**
   * rope on q and k (rows [batch*seq]) with positions[b] + t read on the device, then k and v appended
   * to the caches at rows b*kvStride + positions[b] + t: ropeAt(q), ropeAt(k), writeKvAt(k), writeKvAt(v)
   * in one kernel, with the same results.
   */
  ropeWriteKvAt(q: Tensor, k: Tensor, v: Tensor, cacheK: Tensor, cacheV: Tensor, positions: CudaInts, batch: number, seq: number,
    cos: Tensor, sin: Tensor, nHeads: number, nKvHeads: number, headDim: number, rotaryDim: number, kvStride: number): void {
    const qc = this.tensor(q, 'ropeWriteKvAt', 'q');
    const kc = this.tensor(k, 'ropeWriteKvAt', 'k');
    const vc = this.tensor(v, 'ropeWriteKvAt', 'v');
    const ck = this.tensor(cacheK, 'ropeWriteKvAt', 'cacheK');
    const cv = this.tensor(cacheV, 'ropeWriteKvAt', 'cacheV');
    const cc = this.tensor(cos, 'ropeWriteKvAt', 'cos');
    const sc = this.tensor(sin, 'ropeWriteKvAt', 'sin');
    this.ints(positions, 'ropeWriteKvAt', 'positions');
    const rows = batch * seq, half = rotaryDim / 2, D = nKvHeads * headDim;
    if (!Number.isInteger(half) || rotaryDim > headDim || qc.size !== rows * nHeads * headDim || kc.size !== rows * D || vc.size !== rows * D ||
      ck.cols !== D || cv.cols !== D || ck.rowCount < batch * kvStride || cv.rowCount < batch * kvStride || positions.length < batch ||
      cc.cols !== half || sc.cols !== half) {
      throw new Error(`ropeWriteKvAt: shape mismatch: q ${fmtShape(qc)}, k ${fmtShape(kc)}, v ${fmtShape(vc)}, caches ${fmtShape(ck)}/${fmtShape(cv)}, ` +
        `batch ${batch} × seq ${seq}, heads ${nHeads}/${nKvHeads}, headDim ${headDim}, rotaryDim ${rotaryDim}, kvStride ${kvStride}`);
    }
    if (rows === 0) return;
    const kern = this.kernel('rope', `rope_write_kv_${this.suffix}`, 'ppppppppiiiiii');
    this.kernels.launch(kern, [rows], [rowThreads(Math.max((nHeads + nKvHeads) * Math.max(half, 1), D), 256)], 0, [
      qc.ptr, kc.ptr, vc.ptr, ck.ptr, cv.ptr, positions.ptr, cc.ptr, sc.ptr, nHeads, nKvHeads, headDim, rotaryDim, seq, kvStride,
    ]);
  }

  /** writeKv with sequence b's start row read on the device (starts[b]); starts[b] + seq ≤ kvStride. */
  writeKvAt(cache: Tensor, src: Tensor, batch: number, seq: number, starts: CudaInts, kvStride: number): void {
    this.ints(starts, 'writeKvAt', 'starts');
    if (starts.length < batch) throw new Error(`writeKvAt: ${starts.length} starts for batch ${batch}`);
    this.launchWriteKv('writeKvAt', cache, src, batch, seq, 0, kvStride, starts.ptr);
  }

  /**
   * attention with sequence b's kvLen read on the device (kvLens[b], ragged batches allowed);
   * shape.kvLen is the largest any sequence may have (checked against kvStride on the host).
   */
  attentionAt(out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape, kvLens: CudaInts): void {
    this.ints(kvLens, 'attentionAt', 'kvLens');
    if (kvLens.length < shape.batch) throw new Error(`attentionAt: ${kvLens.length} kvLens for batch ${shape.batch}`);
    this.launchAttention('attentionAt', out, q, k, v, shape, kvLens.ptr);
  }

  /**
   * Captures the launches `record` queues into a CUDA graph (nothing runs during capture), then
   * instantiates it. Replaying it with launch() re-runs the same kernels on the same tensors.
   * Inside `record`: no download/synchronize/scoreLogits, and no allocation of tensors that must
   * outlive the graph. Host arrays passed to ops (ids, positions) are re-read from their staging
   * slot at each replay, so captured steps should take such inputs from device tensors.
   */
  captureGraph(record: () => void): CudaGraph {
    this.noCapture('captureGraph');
    this.driver.beginCapture();
    this.capturing = true;
    try {
      record();
    } catch (e) {
      this.capturing = false;
      this.driver.abortCapture();
      throw e;
    }
    this.capturing = false;
    const [graph, exec] = this.driver.endCapture();
    return new CudaGraph(this, graph, exec);
  }

  /** Records an event on the stream now (for timing with elapsedMs). */
  recordEvent(event?: CudaEvent): CudaEvent {
    const e = event ?? new CudaEvent(this.driver.createEvent());
    this.driver.recordEvent(e.handle);
    return e;
  }

  /** GPU milliseconds between two recorded events; waits for `end`. */
  elapsedMs(start: CudaEvent, end: CudaEvent): number {
    return this.driver.elapsedMs(start.handle, end.handle);
  }

  destroyEvent(event: CudaEvent): void {
    this.driver.destroyEvent(event.handle);
  }

  /** Copies src into dst (same element count) on the stream. */
  copy(dst: Tensor, src: Tensor): void {
    const d = this.tensor(dst, 'copy', 'dst');
    const s = this.tensor(src, 'copy', 'src');
    if (d.size !== s.size) throw new Error(`copy: dst ${fmtShape(d)} and src ${fmtShape(s)} differ in size`);
    this.driver.copyDeviceToDevice(d.ptr, s.ptr, d.bytes);
  }

  memoryStats(): CudaMemoryStats {
    const { freeBytes, totalBytes } = this.driver.memoryInfo();
    return { tensorBytes: this.tensorBytes, peakTensorBytes: this.peakTensorBytes, deviceFreeBytes: freeBytes, deviceTotalBytes: totalBytes };
  }

  resetPeakMemory(): void {
    this.peakTensorBytes = this.tensorBytes;
  }

  /** Kernel compiles vs. disk-cache hits in this process, and cached GEMM plans. */
  compileStats(): { compiled: number; cached: number; gemmPlans: number } {
    return { ...this.nvrtc.stats, gemmPlans: this.blas.planCount };
  }

  // --- quantized linears (kernels/qgemv.cu, quant-linear.ts) ---------------------------------

  /** Largest M of quantized Linears that runs the warp-per-row-pair kernels (kernels/qgemv_row.cu) instead of qgemv's tiles (LLMOPT_CUDA_QGEMV_ROW_MAX_M, default 4 = all they serve; 0 = never; benchmarks and tests change it). */
  qgemvRowMaxM = Math.min(QGEMV_ROW_MAX_M, Number(process.env.LLMOPT_CUDA_QGEMV_ROW_MAX_M ?? QGEMV_ROW_MAX_M));
  /** Longest weight rows (K) the row kernels take (LLMOPT_CUDA_QGEMV_ROW_MAX_K, default 4096): longer go to qgemv's tiles. */
  qgemvRowMaxK = Number(process.env.LLMOPT_CUDA_QGEMV_ROW_MAX_K ?? 4096);
  /**
   * Single Linears (o_proj, down_proj) with rows of up to 8192 stored bytes through qgemvr3, a row pair of 3–4
   * rounds split between 4 warps (quant-linear.ts rowSplit; LLMOPT_CUDA_QGEMV_ROW_SPLIT=0: one warp per pair
   * and K ≤ qgemvRowMaxK only, as before).
   */
  qgemvRowSplit = process.env.LLMOPT_CUDA_QGEMV_ROW_SPLIT !== '0';
  /** 4-bit weights through the row kernels too (LLMOPT_CUDA_QGEMV_ROW_4BIT=1; off: the tiles measured faster). */
  qgemvRow4Bit = process.env.LLMOPT_CUDA_QGEMV_ROW_4BIT === '1';

  /** Keep quantized Linears quantized (LLMOPT_CUDA_NATIVE_QUANT=0: dequantize them, for A/B comparisons). */
  nativeQuantizedLinears = process.env.LLMOPT_CUDA_NATIVE_QUANT !== '0';

  /** Keeps a quantized Linear as stored (quant-linear.ts says which layouts); undefined: dequantize it instead. */
  uploadQuantizedLinear(weight: QuantizedLinearData, activations?: FakeQuantSpec): CudaQuantLinear | undefined {
    return this.nativeQuantizedLinears ? this.quant.upload(weight, activations) : undefined;
  }

  /** @internal True while captureGraph records (ops that would allocate pick allocation-free paths). */
  get capturingGraph(): boolean {
    return this.capturing;
  }

  // --- quantization jobs: Hessians, GPTQ on the device ------------------------------------------

  /** Calibration statistics, GPTQ, observers and RTN (quant-job-ops.ts, kernels/calibstats.cu, kernels/gptq.cu). */
  readonly quantJob: CudaQuantJob = new CudaQuantJob(this);

  // --- training (distill): backward ops, loss, optimizer ----------------------------------------

  /** Backward ops, loss and optimizer on this GPU (train-ops.ts). */
  readonly training: TrainingOps = new CudaTrainingOps(this);

  /** @internal Host int32 values copied to the device through the pinned ring, for the next queued work. */
  stageInts(values: Int32Array): DevicePtr {
    return this.staging.stage(values, this.capturing);
  }

  // --- helpers --------------------------------------------------------------------------------

  /** @internal A CudaTensor of this device, alive; errors name the op and argument. */
  tensor(t: Tensor, op: string, name: string, dtype: ComputeDType | 'any' = this.dtype): CudaTensor {
    if (!(t instanceof CudaTensor)) throw new Error(`${op}: ${name} is not a cuda tensor`);
    if (t.device !== this) throw new Error(`${op}: ${name} belongs to another CudaDevice`);
    if (t.storage.freed) throw new Error(`${op}: ${name} was freed`);
    if (dtype !== 'any' && t.dtype !== dtype) throw new Error(`${op}: ${name} is ${t.dtype}, expected ${dtype}`);
    return t;
  }

  /** @internal */
  ints(t: CudaInts, op: string, name: string): CudaInts {
    if (!(t instanceof CudaInts) || t.device !== this) throw new Error(`${op}: ${name} is not an int buffer of this device`);
    if (t.freed) throw new Error(`${op}: ${name} was freed`);
    return t;
  }

  /** @internal Throws when called during graph capture. */
  noCapture(op: string): void {
    if (this.capturing) throw new CudaError(`${op} is not allowed while capturing a CUDA graph`);
  }

  /** @internal Kernel `name` of kernels/<family>.cu (compiled on first use). */
  kernel(family: string, name: string, signature: ArgSignature): Kernel {
    return this.kernels.get(family, name, signature);
  }

  /** @internal Grid-stride elementwise launch over n elements. */
  launch1d(k: Kernel, n: number, args: KernelArg[]): void {
    if (n === 0) return;
    const threads = 256;
    const blocks = Math.min(Math.ceil(n / threads), this.info.multiprocessors * 16);
    this.kernels.launch(k, [blocks], [threads], 0, args);
  }
}

/** Threads for a one-block-per-row kernel: enough for the row (a multiple of 32), at most `max`. */
function rowThreads(cols: number, max: number): number {
  return Math.min(max, Math.max(32, roundUp(cols, 32)));
}

function overlaps(a: CudaTensor, b: CudaTensor): boolean {
  return a.storage === b.storage && a.ptr < b.ptr + BigInt(b.bytes) && b.ptr < a.ptr + BigInt(a.bytes);
}

export function createCudaDevice(opts?: CudaDeviceOptions): CudaDevice {
  return new CudaDevice(opts);
}
