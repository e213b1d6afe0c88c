// The Device interface: every op the decoder (and later quantize/prune/distill) runs.
// Two implementations give the same results: cpu/ (float32 TypeScript, the reference) and cuda/.
//
// Conventions (llm.c style):
// - Tensors are row-major. Ops see a tensor as a matrix [rows, cols] where cols = last dim.
// - Ops write into a caller-provided `out` (preallocated once per shape), so a device can capture
//   a fixed sequence of launches (CUDA graphs) and nothing allocates on the hot path.
// - Linear weights are [out_features, in_features] (PyTorch nn.Linear layout); y = x · Wᵀ + b.
// - Token ids and positions are host Int32Arrays; a device copies them where it needs them.

import type { QuantJobOps } from './quant-job.js';

export type { QuantJobOps } from './quant-job.js';

/** The dtype a device computes and stores activations/weights in. */
export type ComputeDType = 'f32' | 'bf16' | 'f16';

export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: ComputeDType;
  readonly device: Device;
}

/** Geometry of one attention call. Rows of q are [batch, seqQ]; of the K/V caches [batch, kvStride]. */
export interface AttentionShape {
  batch: number;
  /** Query tokens per sequence. Query t has absolute position kvLen - seqQ + t (causal). */
  seqQ: number;
  /** Valid key/value rows per sequence (cache length after this step's keys were written). */
  kvLen: number;
  /** Rows allocated per sequence in the K/V tensors (≥ kvLen). */
  kvStride: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  /** Softmax scale, normally 1/sqrt(headDim). */
  scale: number;
  /** Sliding window: a query at position p sees keys in (p - window, p]. Undefined = full causal. */
  window?: number;
}

/**
 * Simulated (fake) quantization of activations, x ← dequantize(quantize(x)), as compressed-tensors'
 * forward pass does for a Linear's input (symmetric, zero point 0).
 */
export interface FakeQuantSpec {
  /** 'int8': round half to even, saturate to [-128, 127]. 'fp8_e4m3': RNE to E4M3, saturate to ±448. */
  format: 'int8' | 'fp8_e4m3';
  /**
   * Static per-tensor scale. Absent: dynamic, one scale per row (per token) =
   * absmax(row) / ((qmax − qmin) / 2), i.e. /127.5 for int8 and /448 for fp8 (compressed-tensors'
   * calculate_qparams); a zero row gets the float32 epsilon as its scale.
   */
  scale?: number;
}

export interface Device {
  readonly kind: 'cpu' | 'cuda';
  /** Storage/compute dtype for weights and activations. Accumulation is always float32. */
  readonly dtype: ComputeDType;

  // --- memory -------------------------------------------------------------------------------
  /** Copies float32 host data to a new device tensor (converted to the device dtype). */
  upload(data: Float32Array, shape: readonly number[]): Tensor;
  /** New tensor with undefined contents. */
  empty(shape: readonly number[]): Tensor;
  /** Copies a tensor back to the host as float32. */
  download(t: Tensor): Float32Array;
  /** A tensor sharing t's storage with another shape of the same element count. */
  view(t: Tensor, shape: readonly number[]): Tensor;
  /** Rows [start, start + count) of t seen as [rows, cols]: shares storage. */
  rows(t: Tensor, start: number, count: number): Tensor;
  /** Releases device memory (no-op on cpu). */
  free(t: Tensor): void;
  /** Waits for all queued work (no-op on cpu). */
  synchronize(): void;

  // --- ops ----------------------------------------------------------------------------------
  /** out[i,:] = table[ids[i],:] */
  embedding(out: Tensor, table: Tensor, ids: Int32Array): void;
  /** out[i,:] += table[ids[i],:]  (GPT-2 learned positions) */
  addEmbedding(out: Tensor, table: Tensor, ids: Int32Array): void;
  /** out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]) */
  matmul(out: Tensor, x: Tensor, w: Tensor, bias?: Tensor): void;
  /** x += y, elementwise (residual add). */
  addInPlace(x: Tensor, y: Tensor): void;
  /** out = x / rms(x) * weight, per row. */
  rmsNorm(out: Tensor, x: Tensor, weight: Tensor, eps: number): void;
  /** out = (x - mean) / std * weight + bias, per row. */
  layerNorm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor, eps: number): void;
  /**
   * Rotary embedding in place, rotate-half (GPT-NeoX/HF Llama) layout, on x seen as
   * [rows, nHeads, headDim]; row r uses positions[r]. cos/sin are [maxPos, rotaryDim/2]; the first
   * rotaryDim dims of each head rotate, the rest pass through.
   */
  rope(x: Tensor, positions: Int32Array, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void;
  /** Causal GQA attention. out/q: [batch*seqQ, nHead*headDim]; k/v: [batch*kvStride, nKvHead*headDim]. */
  attention(out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void;
  /** Writes src [batch*seq, D] into cache rows [b*kvStride + start + t] (KV-cache append). */
  writeKv(cache: Tensor, src: Tensor, batch: number, seq: number, start: number, kvStride: number): void;
  /** out = silu(gate) * up */
  siluMul(out: Tensor, gate: Tensor, up: Tensor): void;
  /** out = gelu_tanh(x) (GPT-2's "gelu_new") */
  geluTanh(out: Tensor, x: Tensor): void;
  /**
   * Per row r of logits [rows, V]: nll[r] = logsumexp(logits[r]) - logits[r, targets[r]]; rows with
   * target < 0 are skipped (nll 0). When `baseline` logits are given, kld[r] = KL(baseline ‖ model)
   * = Σ p_base (log p_base − log p_model), and top1[r] = 1 if both argmaxes agree.
   * Sums run in float64 on the host side of the result.
   */
  scoreLogits(logits: Tensor, targets: Int32Array, baseline?: Tensor): ScoredRows;
  /**
   * In place on x seen as [rows, cols]: each value becomes its quantized-then-dequantized self
   * (quantized checkpoints' activation and FP8 KV-cache simulation).
   */
  fakeQuantRows(x: Tensor, spec: FakeQuantSpec): void;

  // --- quantization jobs (optional) ---------------------------------------------------------
  /** Calibration statistics, GPTQ, observers and RTN where the activations are (quant-job.ts). */
  readonly quantJob?: QuantJobOps;
}

export interface ScoredRows {
  nll: Float64Array;
  /** Present when a baseline was given. */
  kld?: Float64Array;
  top1?: Uint8Array;
  /** argmax of the model's logits per row (greedy decoding, top-1 agreement). */
  argmax: Int32Array;
}
