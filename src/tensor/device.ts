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
  /** Device bytes when they are not shape × dtype size (a quantized Linear weight kept as stored). */
  readonly storedBytes?: number;
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

/** The stored codes of a quantized Linear weight [out, in], as a compressed-tensors checkpoint holds them. */
export type QuantizedCodes =
  /** E4M3 bytes, row-major [out, in]. */
  | { type: 'fp8_e4m3'; bytes: Uint8Array }
  /** int8 values, row-major [out, in]. */
  | { type: 'int8'; values: Int8Array }
  /** pack-quantized: rows of ⌈in·bits/32⌉ int32 words, values offset by 2^(bits−1), packed LSB first. */
  | { type: 'packed'; bits: 4 | 8; words: Int32Array };

/** A quantized Linear weight [outFeatures, inFeatures]: w[r, c] = (code − zeroPoint) · scale of (r, group of c). */
export interface QuantizedLinearData {
  outFeatures: number;
  inFeatures: number;
  codes: QuantizedCodes;
  /** Scales per row group, row-major [outFeatures, groups]; length 1 for a per-tensor scale. */
  scale: Float32Array;
  /** Scales per row: 1 for per-tensor and per-channel; in groups of inFeatures / groups columns otherwise. */
  groups: number;
  /** Signed zero points, the scale's layout (asymmetric weights only). */
  zeroPoint?: Int32Array;
  /** Act-order: the group of each input column [inFeatures]; absent = column c is in group ⌊c · groups / inFeatures⌋. */
  gIdx?: Int32Array;
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

  // --- training -------------------------------------------------------------------------------
  /** Backward ops, loss and optimizer (distill); absent on a device that cannot train. */
  readonly training?: TrainingOps;
  // --- quantized Linears (optional) -------------------------------------------------------------
  /**
   * Keeps a quantized Linear weight as stored on the device; the returned tensor ([out, in]) is a
   * weight for matmul (and, where the device has them, matmulMany / matmulSiluMul) and nothing else.
   * With `activations`, those matmuls also quantize x as the spec says (the caller must then not
   * simulate it with fakeQuantRows). undefined: the device cannot run this layout natively (the
   * caller dequantizes and uploads the float weight instead).
   */
  uploadQuantizedLinear?(weight: QuantizedLinearData, activations?: FakeQuantSpec): Tensor | undefined;
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

// --- training (distill): see TrainingOps ---------------------------------------------------------

/**
 * What training needs beyond the inference ops: explicit backward ops, the fused distillation loss and
 * AdamW. "f32" marks tensors that are float32 whatever the device dtype (on the CPU every tensor is).
 * Gradients into weights accumulate (+=); gradients into activations overwrite unless `accumulate`.
 */
export interface TrainingOps {
  /** f32 tensor, zero-filled, whatever the device dtype. */
  emptyF32(shape: readonly number[]): Tensor;
  uploadF32(data: Float32Array, shape: readonly number[]): Tensor;
  /** dst ← src converted to dst's dtype (same element count; f32 ↔ compute dtype, or same dtype). */
  castCopy(dst: Tensor, src: Tensor): void;
  fill(t: Tensor, value: number): void;
  /** t *= s */
  scale(t: Tensor, s: number): void;

  /** dx[M,K] = dy[M,N] · w[N,K]  (accumulate: dx += …) */
  matmulGradInput(dx: Tensor, dy: Tensor, w: Tensor, accumulate: boolean): void;
  /** dw[N,K] (f32) += dy[M,N]ᵀ · x[M,K] */
  matmulGradWeight(dw: Tensor, dy: Tensor, x: Tensor): void;
  /** db[N] (f32) += Σ_m dy[m, :] */
  biasGrad(db: Tensor, dy: Tensor): void;
  /** y = x / rms(x) * w per row. dx (=, or += when accumulate); dw (f32) += … */
  rmsNormBackward(dx: Tensor, dw: Tensor, dy: Tensor, x: Tensor, w: Tensor, eps: number, accumulate: boolean): void;
  /** y = (x − mean)/std * w + b. dx (=/+=), dw, db (f32) += … */
  layerNormBackward(dx: Tensor, dw: Tensor, db: Tensor, dy: Tensor, x: Tensor, w: Tensor, b: Tensor, eps: number, accumulate: boolean): void;
  /** In place on dx seen as [rows, nHeads, headDim]: the transpose of Device.rope (rotation by −θ). */
  ropeBackward(dx: Tensor, positions: Int32Array, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void;
  /** Device.attention plus the softmax log-sum-exp per (query row, head): lse f32 [batch*seqQ, nHead]. */
  attentionForward(out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void;
  /**
   * Gradients of attention (causal, GQA, sliding window as in AttentionShape; seqQ = kvLen = kvStride in
   * training): dq [batch*seqQ, nHead*hd], dk/dv [batch*kvStride, nKvHead*hd] overwritten (dk/dv summed over
   * the query heads of each KV group). out/lse from attentionForward.
   */
  attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void;
  /** act = silu(gate) * up; dGate, dUp overwritten. */
  siluMulBackward(dGate: Tensor, dUp: Tensor, dAct: Tensor, gate: Tensor, up: Tensor): void;
  /** y = gelu_tanh(x); dx overwritten. */
  geluTanhBackward(dx: Tensor, dy: Tensor, x: Tensor): void;
  /** dTable[ids[i], :] (f32) += dOut[i, :] */
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array): void;

  /** Fused softmax + distillation loss + gradient over the vocabulary; see DistillLossArgs. */
  distillLoss(args: DistillLossArgs): DistillLossRows;
  /** The teacher's top-k per row (ids and raw logits, largest first) and logsumexp(logits / temperature). */
  topK(logits: Tensor, k: number, temperature: number): TeacherTopK;

  /** Σ x² over f32 tensors, summed in f64 (one host sync). For global-norm clipping. */
  sumSquares(tensors: readonly Tensor[]): number;
  /**
   * Fused AdamW on one parameter: g = grad·gradScale; m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²;
   * master −= lr·(m̂/(√v̂ + eps) + weightDecay·master) with bias corrections for `step` (1-based);
   * then compute ← master in the compute dtype when `compute` is given. master/grad/m/v f32.
   */
  adamw(p: { master: Tensor; grad: Tensor; m: Tensor; v: Tensor; compute?: Tensor }, o: AdamWOptions): void;
}

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based optimizer step (bias corrections 1 − β^step). */
  step: number;
  gradScale: number;
}

export type DistillLossKind = 'kl' | 'reverse-kl' | 'skew-kl';

/** A teacher's top-k per row: ids/logits [rows * k] (largest first), lse [rows] = logsumexp(logits / T). */
export interface TeacherTopK {
  ids: Int32Array;
  logits: Float32Array;
  lse: Float32Array;
  k: number;
}

export interface DistillLossArgs {
  /** Student logits [rows, V] (compute dtype). */
  logits: Tensor;
  /** Gradient output [rows, V]; may be the logits tensor itself (overwritten in place). */
  dLogits: Tensor;
  /** Full teacher logits [rows, V], or its top-k (rest of the teacher mass treated exactly as one bucket). Absent: CE only. */
  teacher?: { logits: Tensor } | { topK: TeacherTopK };
  /** Hard labels per row (−1: row not scored). Rows with target −1 get zero gradient from every term. */
  targets: Int32Array;
  kind: DistillLossKind;
  /** Softmax temperature T of both distributions in the distillation term; that term is multiplied by T². */
  temperature: number;
  /** Weight of the hard-label cross-entropy (unsoftened student logits): loss = (1−alpha)·T²·D + alpha·CE. */
  alpha: number;
  /** skew-kl only: KL(p_t ‖ λ p_t + (1−λ) p_s), default 0.1. */
  skewLambda?: number;
  /** dLogits are multiplied by this (e.g. 1 / scored rows of the optimizer step). */
  gradScale: number;
}

export interface DistillLossRows {
  /** Per row, the combined loss (0 for unscored rows), f64 on the host. */
  loss: Float64Array;
  /**
   * Per row, the distillation term alone and the CE alone (for logging), f64: distill is D itself
   * (the divergence at temperature T, before the T² and 1−alpha factors; 0 without a teacher), ce
   * the hard-label cross-entropy. Without a teacher, loss = ce whatever alpha.
   */
  distill: Float64Array;
  ce: Float64Array;
}

/**
 * Operands of a fused batch-1 decode layer (CUDA's decodeLayerAt, see src/model/decoder.ts StepAtOps):
 * the step's hidden row, scratch for q and the SwiGLU output, the layer's cache and
 * weights; positions[0] / kvLens[0] in device buffers of type I.
 */
export interface DecodeLayerAtArgs<I> {
  hidden: Tensor; q: Tensor; act: Tensor; cacheK: Tensor; cacheV: Tensor;
  positions: I; kvLens: I; cos: Tensor; sin: Tensor;
  attnNorm: Tensor; mlpNorm: Tensor; wq: Tensor; wk: Tensor; wv: Tensor; wo: Tensor; wg: Tensor; wu: Tensor; wd: Tensor;
  eps: number; nHeads: number; nKvHeads: number; headDim: number; rotaryDim: number; scale: number; window: number | undefined;
}
