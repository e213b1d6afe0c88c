// Device ops for quantization jobs (Device.quantJob): what `llmopt quantize` computes besides the
// forward passes — calibration statistics, GPTQ's linear algebra and column loop, observers and
// round-to-nearest — so that a job runs where its activations are. The cpu device implements them
// in float64 where the host code always did (the reference, src/tensor/cpu/quant-job.ts); the cuda
// device in float32 kernels and cuBLASLt GEMMs (src/tensor/cuda/quant-job-ops.ts), as GPTQ and
// llm-compressor do on GPUs.
//
// Conventions: Hessians, weights being quantized and statistics are f32 tensors whatever the
// device dtype (uploadF32/zerosF32); activations are the device's own tensors (device dtype).
// Small per-channel or per-group vectors travel as host arrays. Weight qparams are chosen once per
// weight by the observer (as llm-compressor's GPTQ does) and used as the columns are reached.

import type { Tensor } from './device.js';

/** How values are quantized: the part of compressed-tensors' QuantizationArgs the value math needs. */
export interface QuantValueArgs {
  num_bits: number;
  type: 'int' | 'float';
  symmetric: boolean;
}

/** Scale dtypes: the model's float dtype, as llm-compressor stores scales. */
export type ScaleDType = 'F32' | 'BF16' | 'F16';

export type ObserverName = 'minmax' | 'mse';

/** llm-compressor's MSE observer defaults (observers/mse.py). */
export const MSE_DEFAULTS = { maxshrink: 0.2, grid: 100, norm: 2.4, patience: 5 } as const;

/** How a [rows, cols] weight is split into groups that share a scale. */
export interface WeightGrid {
  rows: number;
  cols: number;
  strategy: 'tensor' | 'channel' | 'group';
  /** Columns per group (cols for tensor and channel). */
  groupSize: number;
  /** Scales per row (1 for tensor and channel). */
  groupsPerRow: number;
  /** Number of scales: 1, rows, or rows · groupsPerRow. */
  count: number;
  /** The scale tensor's shape as compressed-tensors stores it: [1], [rows, 1], [rows, cols/groupSize]. */
  scaleShape: number[];
}

export function weightGrid(rows: number, cols: number, args: { strategy: string | null; group_size: number | null }): WeightGrid {
  switch (args.strategy) {
    case 'tensor':
      return { rows, cols, strategy: 'tensor', groupSize: cols, groupsPerRow: 1, count: 1, scaleShape: [1] };
    case 'channel':
      return { rows, cols, strategy: 'channel', groupSize: cols, groupsPerRow: 1, count: rows, scaleShape: [rows, 1] };
    case 'group': {
      const g = args.group_size!;
      if (cols % g !== 0) throw new Error(`group size ${g} does not divide ${cols} columns`);
      return { rows, cols, strategy: 'group', groupSize: g, groupsPerRow: cols / g, count: rows * (cols / g), scaleShape: [rows, cols / g] };
    }
    default:
      throw new Error(`weight strategy ${args.strategy} is not supported`);
  }
}

/**
 * Index of the scale that element (r, c) uses. Every group is a contiguous run of the row-major
 * weight (the whole tensor, a row, or groupSize columns of a row): group k = elements
 * [k · len, (k + 1) · len) with len = rows · cols / count.
 */
export function paramIndex(grid: WeightGrid, r: number, c: number): number {
  if (grid.strategy === 'tensor') return 0;
  if (grid.strategy === 'channel') return r;
  return r * grid.groupsPerRow + ((c / grid.groupSize) | 0);
}

export interface WeightQParams {
  grid: WeightGrid;
  scale: Float32Array;
  zeroPoint: Int32Array;
}

export interface GptqOptions {
  /** Fraction of the mean Hessian diagonal added to the diagonal (llm-compressor: 0.01). */
  dampening: number;
  /** Visit columns in descending Hessian-diagonal order (compressed-tensors actorder "weight"). */
  actorder: boolean;
}

/**
 * GPTQ's per-input factor, shared by every Linear that reads the same input (q/k/v, gate/up):
 * the column order, the dead columns and U = chol(H⁻¹) upper of the permuted, damped Hessian.
 * Lives on the device until free().
 */
export interface GptqFactor {
  readonly cols: number;
  /** False when H (after damping) is not positive definite: such Linears fall back to RTN. */
  readonly ok: boolean;
  /** perm[j] = the original column visited j-th (identity without act-order). */
  readonly perm: Int32Array;
  /** Columns (original index) that were dead (H_jj = 0); GPTQ zeroes them before quantizing. */
  readonly dead: Uint8Array;
  /** U [cols, cols] (upper, row-major) as float32, for tests and inspection. */
  readU(): Float32Array;
  free(): void;
}

/** Σ (yq − y)², Σ y², Σ (y − x)² over every element (float64), for the layer errors of the report. */
export interface ErrorSums {
  diff2: number;
  ref2: number;
  update2: number;
}

export interface QuantJobOps {
  // --- tensors ------------------------------------------------------------------------------
  /** An f32 tensor holding `data` (whatever the device dtype). */
  uploadF32(data: Float32Array, shape: readonly number[]): Tensor;
  /** A zero-filled f32 tensor. */
  zerosF32(shape: readonly number[]): Tensor;
  /** dst ← src (same dtype and element count). */
  copy(dst: Tensor, src: Tensor): void;

  // --- calibration statistics ---------------------------------------------------------------
  /**
   * h (f32 [K, K]) += scale · xᵀx for activations x [rows, K] (device dtype): one GEMM with
   * transposed A and beta = 1. GPTQ's Hessian is H = 2/N Σ x xᵀ over N calibration samples, so
   * the pipeline passes scale = 2 / N for every batch (the running mean of GPTQ's add_batch, with
   * the sample count known up front).
   */
  hessianAccumulate(h: Tensor, x: Tensor, scale: number): void;
  /** Per column of x [rows, K]: min ← min(min, x[:, c]), max ← max(max, x[:, c]) (f32 [K] each; start at ±Infinity). */
  channelRange(min: Tensor, max: Tensor, x: Tensor): void;
  /** acc (f32 [1]) ← max(acc, max |x|). */
  absMax(acc: Tensor, x: Tensor): void;
  /** h[i, j] ← h[i, j] / (s[i] · s[j]): the Hessian of inputs divided by s per channel (SmoothQuant after calibration). */
  scaleHessian(h: Tensor, s: Float64Array): void;
  /** acc += the ErrorSums of the quantized layer's output yq against the float layer's y, whose input was x (all [rows, hidden]). */
  accumulateErrors(acc: ErrorSums, yq: Tensor, y: Tensor, x: Tensor): void;

  // --- linear algebra (f32 [n, n], row-major) ----------------------------------------------
  /** In place: a ← L, the lower Cholesky factor of the SPD matrix a (upper triangle zeroed); false when a is not positive definite. */
  cholesky(a: Tensor): boolean;
  /** out ← (L Lᵀ)⁻¹ for the lower factor l (torch.cholesky_inverse). */
  choleskyInverse(l: Tensor, out: Tensor): void;

  // --- weights (w: f32 [rows, cols]; deq: device dtype [rows, cols], the values the quantized model computes with) ---
  /** Scales and zero points of w under `args`, chosen by `observer` (minmax, or MSE clip search). */
  observeWeight(w: Tensor, grid: WeightGrid, args: QuantValueArgs, observer: ObserverName, scaleDtype: ScaleDType): WeightQParams;
  /** Round-to-nearest: returns the codes (row-major; integers, or E4M3 bytes for fp8) and writes deq. */
  quantizeRtn(w: Tensor, qparams: WeightQParams, args: QuantValueArgs, deq: Tensor): Int32Array;
  /** Dampening, dead columns, act-order, chol(H), H⁻¹ and its upper Cholesky factor, for h (f32 [cols, cols], not modified). */
  gptqPrepare(h: Tensor, opts: GptqOptions): GptqFactor;
  /**
   * GPTQ of w with a factor whose ok is true: columns in factor order, blockSize at a time (lazy
   * batch updates), each column's error spread over the later columns through U. Returns the codes
   * and llm-compressor's loss Σ (w − q)² / (2 U_jj²); writes deq. w is not modified.
   */
  gptqQuantize(w: Tensor, factor: GptqFactor, qparams: WeightQParams, args: QuantValueArgs, blockSize: number, deq: Tensor): { codes: Int32Array; loss: number };
}
