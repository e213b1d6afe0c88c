// The decoder: one transformer implementation for every ModelSpec, built only from Device ops.
//
// llm.c style: the forward pass is spelled out layer by layer (embed → [attentionBlock, mlpBlock]
// × numLayers → finalNorm → lm_head) over preallocated buffers, so each block can get a matching
// backward function later and a CUDA device can capture the fixed launch sequence.
//
//   Llama family (pre-norm):                       GPT-2 (pre-norm):
//     h = embed[ids]                                 h = wte[ids] + wpe[pos]
//     a = rmsnorm(h); q,k,v = a·Wq,a·Wk,a·Wv (+b)    a = layernorm(h); q,k,v = split(a·c_attn + b)
//     [qwen3: q,k = rmsnorm per head]                  (no rope)
//     q,k = rope(q,k)
//     h += o_proj(attention(q,k,v))                  h += c_proj(attention(q,k,v))
//     m = rmsnorm(h); h += down(silu(gate m)·up m)   m = layernorm(h); h += proj(gelu_tanh(fc m))
//     logits = lm_head(rmsnorm(h))                   logits = wte·layernorm(h)
//
// Activation hook points (stable names, the same for every architecture; N = layer index):
//   layers.N.input                    residual stream entering layer N            [rows, hidden]
//   layers.N.self_attn.q_proj.input   normed input of q/k/v_proj (GPT-2: c_attn)  [rows, hidden]
//   layers.N.self_attn.o_proj.input   attention output, input of o_proj           [rows, heads*headDim]
//   layers.N.mlp.gate_proj.input      normed input of gate/up_proj (GPT-2: c_fc)  [rows, hidden]
//   layers.N.mlp.down_proj.input      silu(gate)*up (GPT-2: gelu(c_fc)), input of down_proj [rows, intermediate]
//   layers.N.self_attn.key_states     keys after rotary, as the KV cache stores them  [rows, kvHeads*headDim]
//   layers.N.self_attn.value_states   values, as the KV cache stores them            [rows, kvHeads*headDim]
//   layers.N.output                   residual stream leaving layer N             [rows, hidden]
//   final_norm.output                 final norm output, input of lm_head         [rows, hidden]
// A hook sees a device tensor that is only valid during the call (copy it out with device.download
// or a device op if it must be kept). Rows are [batch, seq] flattened. Hooks see activations before
// any simulated quantization (weights.quant), as calibration observers do.

import { LlmoptError } from '../errors.js';
import type { AttentionShape, DecodeLayerAtArgs, Device, FakeQuantSpec, Tensor } from '../tensor/device.js';
import { layerSlidingWindow, rotaryDim } from './config.js';
import { ropeTables } from './rope.js';
import type { ModelSpec } from './spec.js';
import { freeDecoderWeights, simulatesQuantization, type DecoderWeights, type LayerWeights } from './weights.js';

export type ActivationHook = (t: Tensor) => void;

/**
 * Ops that read per-step integers from device buffers of type I (CUDA's *At ops, CudaInts): what a
 * decode step needs so that its launches can be captured once as a CUDA graph and replayed.
 */
export interface StepAtOps<I> {
  embeddingAt(out: Tensor, table: Tensor, ids: I): void;
  addEmbeddingAt(out: Tensor, table: Tensor, positions: I): void;
  ropeAt(x: Tensor, positions: I, rows: number, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void;
  writeKvAt(cache: Tensor, src: Tensor, batch: number, seq: number, starts: I, kvStride: number): void;
  attentionAt(out: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape, kvLens: I): void;
  // Optional fusions (CUDA); decodeStepAt uses them for plain Llama-family layers when all are present.
  /** x += y, then out = rmsNorm(x). */
  addRmsNorm?(out: Tensor, x: Tensor, y: Tensor, weight: Tensor, eps: number): void;
  /** outs[i] = x · weights[i]ᵀ (+ biases[i]). */
  matmulMany?(outs: readonly Tensor[], x: Tensor, weights: readonly Tensor[], biases?: readonly (Tensor | undefined)[]): void;
  /** out = silu(x · wGateᵀ) * (x · wUpᵀ); gate/up are scratch of out's shape. */
  matmulSiluMul?(out: Tensor, x: Tensor, wGate: Tensor, wUp: Tensor, gate: Tensor, up: Tensor): void;
  /** rope(q), rope(k) at positions[b] + t, then k/v appended to the caches there. */
  ropeWriteKvAt?(q: Tensor, k: Tensor, v: Tensor, cacheK: Tensor, cacheV: Tensor, positions: I, batch: number, seq: number,
    cos: Tensor, sin: Tensor, nHeads: number, nKvHeads: number, headDim: number, rotaryDim: number, kvStride: number): void;
  /**
   * q/k/v + rope + KV append of one decode step in one launch (CUDA, small batches); false, queueing
   * nothing, where it does not apply (then matmulMany + ropeWriteKvAt run).
   */
  qkvRopeKvAt?(a: {
    q: Tensor; cacheK: Tensor; cacheV: Tensor; x: Tensor; wq: Tensor; wk: Tensor; wv: Tensor; bq?: Tensor; bk?: Tensor; bv?: Tensor;
    positions: I; cos: Tensor; sin: Tensor; nHeads: number; nKvHeads: number; headDim: number; rotaryDim: number; kvStride: number;
  }): boolean;
  /**
   * One whole decoder layer of a batch-1 decode step in one launch (CUDA): hidden += attention(norm(hidden))
   * · Woᵀ, then hidden += MLP(norm(hidden)), the new key/value appended at positions[0]; false, queueing
   * nothing, where it does not apply (then the per-op fused layer runs).
   */
  decodeLayerAt?(a: DecodeLayerAtArgs<I>): boolean;
}

/** Device-side inputs of one decode step: ids [batch]; positions[b] = sequence b's cache length before the step; kvLens[b] = positions[b] + 1. */
export interface DecodeStepAt<I> {
  ops: StepAtOps<I>;
  ids: I;
  positions: I;
  kvLens: I;
}
/** Hooks by hook point name (see the list at the top of decoder.ts). */
export type ActivationHooks = Partial<Record<string, ActivationHook>>;

export const hookNames = {
  layerInput: (i: number) => `layers.${i}.input`,
  qProjInput: (i: number) => `layers.${i}.self_attn.q_proj.input`,
  oProjInput: (i: number) => `layers.${i}.self_attn.o_proj.input`,
  gateProjInput: (i: number) => `layers.${i}.mlp.gate_proj.input`,
  downProjInput: (i: number) => `layers.${i}.mlp.down_proj.input`,
  keyStates: (i: number) => `layers.${i}.self_attn.key_states`,
  valueStates: (i: number) => `layers.${i}.self_attn.value_states`,
  layerOutput: (i: number) => `layers.${i}.output`,
  finalNormOutput: 'final_norm.output',
} as const;

/** Per-layer K/V for incremental decoding: [batch * maxLen, numKvHeads * headDim] each. */
export class KVCache {
  readonly k: Tensor[];
  readonly v: Tensor[];
  /** Positions already written (the same for every sequence of the batch). */
  length = 0;

  constructor(
    readonly device: Device,
    readonly batch: number,
    readonly maxLen: number,
    numLayers: number,
    kvDim: number,
  ) {
    this.k = Array.from({ length: numLayers }, () => device.empty([batch * maxLen, kvDim]));
    this.v = Array.from({ length: numLayers }, () => device.empty([batch * maxLen, kvDim]));
  }

  /** Forgets the cached positions (the buffers are reused). */
  reset(): void {
    this.length = 0;
  }

  free(): void {
    for (const t of [...this.k, ...this.v]) this.device.free(t);
    this.k.length = 0;
    this.v.length = 0;
  }
}

export interface ForwardOptions {
  hooks?: ActivationHooks;
  /** Continue from cache.length and append this call's keys/values (cache.length advances by seq). */
  cache?: KVCache;
}

export interface LayerOptions {
  hooks?: ActivationHooks;
  /** Keys/values are appended at cache.length (the caller advances cache.length after the last layer). */
  cache?: KVCache;
  /** Absolute position of the first token of each sequence; default cache.length, or 0 without a cache. */
  startPos?: number;
}

/** Activation buffers for one (batch, seq), allocated once and reused by every call of that shape. */
export class Workspace {
  readonly rows: number;
  /** The residual stream [rows, hidden] (embed writes it; forward runs the layers in place on it). */
  readonly x: Tensor;
  /** Norm output [rows, hidden]. */
  readonly xn: Tensor;
  readonly q: Tensor;
  readonly k: Tensor;
  readonly v: Tensor;
  /** q/k before the per-head norm (Qwen3 only). */
  readonly qRaw?: Tensor;
  readonly kRaw?: Tensor;
  readonly att: Tensor;
  /** o_proj / down_proj output [rows, hidden], added to the residual. */
  readonly proj: Tensor;
  readonly gate?: Tensor;
  readonly up: Tensor;
  readonly act: Tensor;
  readonly all: Tensor[] = [];

  constructor(
    readonly device: Device,
    spec: ModelSpec,
    readonly batch: number,
    readonly seq: number,
  ) {
    const rows = batch * seq;
    this.rows = rows;
    const t = (cols: number) => {
      const tensor = device.empty([rows, cols]);
      this.all.push(tensor);
      return tensor;
    };
    const qDim = spec.numHeads * spec.headDim;
    const kvDim = spec.numKvHeads * spec.headDim;
    this.x = t(spec.hiddenSize);
    this.xn = t(spec.hiddenSize);
    this.q = t(qDim);
    this.k = t(kvDim);
    this.v = t(kvDim);
    if (spec.qkNorm) {
      this.qRaw = t(qDim);
      this.kRaw = t(kvDim);
    }
    this.att = t(qDim);
    this.proj = t(spec.hiddenSize);
    if (spec.activation === 'silu') this.gate = t(spec.intermediateSize);
    this.up = t(spec.intermediateSize);
    this.act = t(spec.intermediateSize);
  }

  free(): void {
    for (const t of this.all) this.device.free(t);
  }
}

/** Workspaces kept alive at once (e.g. a prefill shape and the decode shape). */
const MAX_WORKSPACES = 3;

export class Decoder {
  private readonly workspaces = new Map<string, Workspace>();
  private logitsBuf: Tensor | undefined;
  private logitsCapacity = 0;
  private rope: { cos: Tensor; sin: Tensor; maxPos: number } | undefined;
  private readonly rotaryDim: number;

  constructor(
    readonly spec: ModelSpec,
    readonly weights: DecoderWeights,
    readonly device: Device,
  ) {
    if (weights.layers.length !== spec.numLayers) {
      throw new Error(`Decoder: ${weights.layers.length} layers of weights for a spec with ${spec.numLayers}`);
    }
    this.rotaryDim = rotaryDim(spec);
  }

  /** A KV cache for `batch` sequences of up to `maxLen` positions. */
  newCache(batch: number, maxLen: number): KVCache {
    checkCount('batch', batch);
    checkCount('maxLen', maxLen);
    return new KVCache(this.device, batch, maxLen, this.spec.numLayers, this.spec.numKvHeads * this.spec.headDim);
  }

  /**
   * Logits [batch*seq, vocab] for token ids [batch, seq] (row-major). The tensor belongs to the
   * decoder: valid until the next call. With a cache, positions continue from cache.length.
   */
  forward(ids: Int32Array, batch: number, seq: number, opts: ForwardOptions = {}): Tensor {
    const normed = this.forwardHidden(ids, batch, seq, opts);
    return this.logitsForRows(normed, 0, batch * seq);
  }

  /**
   * Everything but lm_head: the final-norm output [batch*seq, hidden] (decoder-owned, valid until
   * the next call). Use logitsForRows to get logits for a few rows at a time (large vocabularies).
   */
  forwardHidden(ids: Int32Array, batch: number, seq: number, opts: ForwardOptions = {}): Tensor {
    const { cache, hooks } = opts;
    if (cache !== undefined) checkCacheRoom(cache, batch, seq);
    const startPos = cache?.length ?? 0;
    const hidden = this.embed(ids, batch, seq, startPos);
    for (let i = 0; i < this.spec.numLayers; i++) this.layer(i, hidden, batch, seq, { hooks, cache, startPos });
    if (cache !== undefined) cache.length += seq;
    return this.finalNorm(hidden, batch, seq, hooks);
  }

  /**
   * The residual stream after the embedding, [batch*seq, hidden]: token embeddings (plus learned
   * positions startPos… for GPT-2). Decoder-owned (this shape's workspace).
   */
  embed(ids: Int32Array, batch: number, seq: number, startPos = 0): Tensor {
    checkCount('batch', batch);
    checkCount('seq', seq);
    if (ids.length !== batch * seq) throw new Error(`embed: ${ids.length} ids for batch ${batch} × seq ${seq}`);
    const vocab = this.spec.vocabSize;
    for (let r = 0; r < ids.length; r++) {
      const id = ids[r]!;
      if (id < 0 || id >= vocab) throw new LlmoptError(`token id ${id} (row ${r}) is outside the vocabulary [0, ${vocab})`);
    }
    const ws = this.workspace(batch, seq);
    this.device.embedding(ws.x, this.weights.embed, ids);
    if (this.spec.positions === 'learned') {
      if (startPos + seq > this.spec.maxPositionEmbeddings) {
        throw new LlmoptError(
          `positions up to ${startPos + seq - 1} exceed the model's ${this.spec.maxPositionEmbeddings} learned positions`,
        );
      }
      this.device.addEmbedding(ws.x, this.weights.positions!, positionIds(batch, seq, startPos));
    }
    return ws.x;
  }

  /**
   * Decoder layer i, in place on `hidden` [batch*seq, hidden] (any tensor of that shape, e.g. a
   * calibration sample's own activations). Scratch comes from the (batch, seq) workspace.
   */
  layer(i: number, hidden: Tensor, batch: number, seq: number, opts: LayerOptions = {}): void {
    const ws = this.workspace(batch, seq);
    const startPos = opts.startPos ?? opts.cache?.length ?? 0;
    opts.hooks?.[hookNames.layerInput(i)]?.(hidden);
    this.attentionBlock(i, hidden, ws, startPos, opts.cache, opts.hooks);
    this.mlpBlock(i, hidden, ws, opts.hooks);
    opts.hooks?.[hookNames.layerOutput(i)]?.(hidden);
  }

  /**
   * One decode step (a token per sequence) that reads ids, positions and KV lengths on the device
   * (`step`), so a CUDA graph can capture it once and replay it: the same blocks as forward(), in `ws`
   * (a Workspace(batch, 1) the caller owns, so eviction never frees it under a graph). Keys/values go
   * to cache rows positions[b]; attention reads kvLens[b] of them. Returns the final-norm output
   * ws.xn [batch, hidden]. cache.length is left to the caller. No hooks run.
   */
  decodeStepAt<I>(ws: Workspace, step: DecodeStepAt<I>, cache: KVCache): Tensor {
    if (ws.seq !== 1 || ws.batch !== cache.batch) throw new Error(`decodeStepAt: workspace ${ws.batch}x${ws.seq} for a cache of batch ${cache.batch}`);
    step.ops.embeddingAt(ws.x, this.weights.embed, step.ids);
    if (this.canFuseDecode(step.ops)) return this.fusedDecodeLayers(ws, step, cache);
    if (this.spec.positions === 'learned') step.ops.addEmbeddingAt(ws.x, this.weights.positions!, step.positions);
    for (let i = 0; i < this.spec.numLayers; i++) {
      this.attentionBlock(i, ws.x, ws, 0, cache, undefined, step as DecodeStepAt<unknown>);
      this.mlpBlock(i, ws.x, ws);
    }
    this.norm(ws.xn, ws.x, this.weights.finalNorm, this.weights.finalNormBias);
    return ws.xn;
  }

  /**
   * Plain Llama-family layers (rms norm, rope, SwiGLU, no q/k norm, no MLP bias, no simulated
   * activation/KV quantization; weights the device keeps quantized are fine) and a device with the fusions.
   */
  private canFuseDecode<I>(ops: StepAtOps<I>): boolean {
    const s = this.spec;
    const w = this.weights;
    return ops.addRmsNorm !== undefined && ops.matmulMany !== undefined && ops.matmulSiluMul !== undefined && ops.ropeWriteKvAt !== undefined &&
      s.norm === 'rms' && s.positions === 'rope' && s.activation === 'silu' && !s.qkNorm &&
      (w.quant === undefined || !w.quant.some(simulatesQuantization)) &&
      w.layers.every((l) => l.gateBias === undefined && l.upBias === undefined);
  }

  /**
   * decodeStepAt's layers with fused ops: the whole layer in one launch where the device has
   * decodeLayerAt and takes the layer (batch 1, no biases); else per layer norm+residual fused, q/k/v in
   * one launch with rope and the KV append in its epilogue where the device has qkvRopeKvAt (else a
   * second kernel), gate/up/SwiGLU in one launch (6 launches instead of 18).
   */
  private fusedDecodeLayers<I>(ws: Workspace, step: DecodeStepAt<I>, cache: KVCache): Tensor {
    const s = this.spec;
    const ops = step.ops;
    const rope = this.ropeFor(cache.maxLen);
    const layers = this.weights.layers;
    let normed = false; // ws.xn holds layer i's attention norm of ws.x
    for (let i = 0; i < s.numLayers; i++) {
      const w = layers[i]!;
      const biased = [w.qBias, w.kBias, w.vBias, w.oBias, w.downBias].some((b) => b !== undefined);
      if (!biased && ws.batch === 1 && ops.decodeLayerAt?.({
        hidden: ws.x, q: ws.q, act: ws.act, cacheK: cache.k[i]!, cacheV: cache.v[i]!, positions: step.positions, kvLens: step.kvLens,
        cos: rope.cos, sin: rope.sin, attnNorm: w.attnNorm, mlpNorm: w.mlpNorm, wq: w.q, wk: w.k, wv: w.v, wo: w.o, wg: w.gate!, wu: w.up, wd: w.down,
        eps: s.normEps, nHeads: s.numHeads, nKvHeads: s.numKvHeads, headDim: s.headDim, rotaryDim: this.rotaryDim, scale: 1 / Math.sqrt(s.headDim),
        window: layerSlidingWindow(s, i),
      })) {
        normed = false;
        continue;
      }
      if (!normed) this.device.rmsNorm(ws.xn, ws.x, w.attnNorm, s.normEps);
      const fused = ops.qkvRopeKvAt?.({
        q: ws.q, cacheK: cache.k[i]!, cacheV: cache.v[i]!, x: ws.xn, wq: w.q, wk: w.k, wv: w.v, bq: w.qBias, bk: w.kBias, bv: w.vBias,
        positions: step.positions, cos: rope.cos, sin: rope.sin, nHeads: s.numHeads, nKvHeads: s.numKvHeads, headDim: s.headDim,
        rotaryDim: this.rotaryDim, kvStride: cache.maxLen,
      }) ?? false;
      if (!fused) {
        ops.matmulMany!([ws.q, ws.k, ws.v], ws.xn, [w.q, w.k, w.v], [w.qBias, w.kBias, w.vBias]);
        ops.ropeWriteKvAt!(ws.q, ws.k, ws.v, cache.k[i]!, cache.v[i]!, step.positions, ws.batch, 1, rope.cos, rope.sin,
          s.numHeads, s.numKvHeads, s.headDim, this.rotaryDim, cache.maxLen);
      }
      ops.attentionAt(ws.att, ws.q, cache.k[i]!, cache.v[i]!, {
        batch: ws.batch, seqQ: 1, kvLen: cache.maxLen, kvStride: cache.maxLen, nHead: s.numHeads, nKvHead: s.numKvHeads,
        headDim: s.headDim, scale: 1 / Math.sqrt(s.headDim), window: layerSlidingWindow(s, i),
      }, step.kvLens);
      this.device.matmul(ws.proj, ws.att, w.o, w.oBias);
      ops.addRmsNorm!(ws.xn, ws.x, ws.proj, w.mlpNorm, s.normEps);
      ops.matmulSiluMul!(ws.act, ws.xn, w.gate!, w.up, ws.gate!, ws.up);
      this.device.matmul(ws.proj, ws.act, w.down, w.downBias);
      ops.addRmsNorm!(ws.xn, ws.x, ws.proj, i + 1 < s.numLayers ? layers[i + 1]!.attnNorm : this.weights.finalNorm, s.normEps);
      normed = true;
    }
    if (!normed) this.device.rmsNorm(ws.xn, ws.x, this.weights.finalNorm, s.normEps);
    return ws.xn;
  }

  /** hidden += o_proj(attention(norm(hidden))). With `at` (decodeStepAt), positions and lengths come from the device. */
  attentionBlock(i: number, hidden: Tensor, ws: Workspace, startPos: number, cache: KVCache | undefined, hooks?: ActivationHooks, at?: DecodeStepAt<unknown>): void {
    const d = this.device;
    const s = this.spec;
    const w = this.weights.layers[i]!;
    const quant = this.weights.quant?.[i];
    const { batch, seq, rows } = ws;
    this.norm(ws.xn, hidden, w.attnNorm, w.attnNormBias);
    hooks?.[hookNames.qProjInput(i)]?.(ws.xn);
    this.fakeQuant(ws.xn, quant?.qkvInput);

    if (s.qkNorm) {
      d.matmul(ws.qRaw!, ws.xn, w.q, w.qBias);
      d.matmul(ws.kRaw!, ws.xn, w.k, w.kBias);
      d.rmsNorm(d.view(ws.q, [rows * s.numHeads, s.headDim]), d.view(ws.qRaw!, [rows * s.numHeads, s.headDim]), w.qNorm!, s.normEps);
      d.rmsNorm(d.view(ws.k, [rows * s.numKvHeads, s.headDim]), d.view(ws.kRaw!, [rows * s.numKvHeads, s.headDim]), w.kNorm!, s.normEps);
    } else {
      d.matmul(ws.q, ws.xn, w.q, w.qBias);
      d.matmul(ws.k, ws.xn, w.k, w.kBias);
    }
    d.matmul(ws.v, ws.xn, w.v, w.vBias);

    if (s.positions === 'rope' && at !== undefined) {
      const rope = this.ropeFor(cache!.maxLen);
      at.ops.ropeAt(ws.q, at.positions, rows, rope.cos, rope.sin, s.numHeads, s.headDim, this.rotaryDim);
      at.ops.ropeAt(ws.k, at.positions, rows, rope.cos, rope.sin, s.numKvHeads, s.headDim, this.rotaryDim);
    } else if (s.positions === 'rope') {
      const rope = this.ropeFor(startPos + seq);
      const pos = positionIds(batch, seq, startPos);
      d.rope(ws.q, pos, rope.cos, rope.sin, s.numHeads, s.headDim, this.rotaryDim);
      d.rope(ws.k, pos, rope.cos, rope.sin, s.numKvHeads, s.headDim, this.rotaryDim);
    }
    hooks?.[hookNames.keyStates(i)]?.(ws.k);
    hooks?.[hookNames.valueStates(i)]?.(ws.v);
    if (quant?.kvCache !== undefined) {
      this.fakeQuant(ws.k, { format: 'fp8_e4m3', scale: quant.kvCache.kScale });
      this.fakeQuant(ws.v, { format: 'fp8_e4m3', scale: quant.kvCache.vScale });
    }

    let keys = ws.k;
    let values = ws.v;
    let kvLen = seq;
    let kvStride = seq;
    if (cache !== undefined && at !== undefined) {
      at.ops.writeKvAt(cache.k[i]!, ws.k, batch, seq, at.positions, cache.maxLen);
      at.ops.writeKvAt(cache.v[i]!, ws.v, batch, seq, at.positions, cache.maxLen);
      keys = cache.k[i]!;
      values = cache.v[i]!;
      kvLen = cache.maxLen; // the bound; each sequence attends to kvLens[b] keys
      kvStride = cache.maxLen;
    } else if (cache !== undefined) {
      d.writeKv(cache.k[i]!, ws.k, batch, seq, startPos, cache.maxLen);
      d.writeKv(cache.v[i]!, ws.v, batch, seq, startPos, cache.maxLen);
      keys = cache.k[i]!;
      values = cache.v[i]!;
      kvLen = startPos + seq;
      kvStride = cache.maxLen;
    }
    const shape: AttentionShape = {
      batch,
      seqQ: seq,
      kvLen,
      kvStride,
      nHead: s.numHeads,
      nKvHead: s.numKvHeads,
      headDim: s.headDim,
      scale: 1 / Math.sqrt(s.headDim),
      window: layerSlidingWindow(s, i),
    };
    if (at !== undefined) at.ops.attentionAt(ws.att, ws.q, keys, values, shape, at.kvLens);
    else d.attention(ws.att, ws.q, keys, values, shape);
    hooks?.[hookNames.oProjInput(i)]?.(ws.att);
    this.fakeQuant(ws.att, quant?.oInput);
    d.matmul(ws.proj, ws.att, w.o, w.oBias);
    d.addInPlace(hidden, ws.proj);
  }

  /** hidden += down(act(norm(hidden))). */
  mlpBlock(i: number, hidden: Tensor, ws: Workspace, hooks?: ActivationHooks): void {
    const d = this.device;
    const w: LayerWeights = this.weights.layers[i]!;
    const quant = this.weights.quant?.[i];
    this.norm(ws.xn, hidden, w.mlpNorm, w.mlpNormBias);
    hooks?.[hookNames.gateProjInput(i)]?.(ws.xn);
    this.fakeQuant(ws.xn, quant?.gateUpInput);
    if (this.spec.activation === 'silu') {
      d.matmul(ws.gate!, ws.xn, w.gate!, w.gateBias);
      d.matmul(ws.up, ws.xn, w.up, w.upBias);
      d.siluMul(ws.act, ws.gate!, ws.up);
    } else {
      d.matmul(ws.up, ws.xn, w.up, w.upBias);
      d.geluTanh(ws.act, ws.up);
    }
    hooks?.[hookNames.downProjInput(i)]?.(ws.act);
    this.fakeQuant(ws.act, quant?.downInput);
    d.matmul(ws.proj, ws.act, w.down, w.downBias);
    d.addInPlace(hidden, ws.proj);
  }

  /** The final norm of `hidden` [batch*seq, hidden] into the workspace; returns it. */
  finalNorm(hidden: Tensor, batch: number, seq: number, hooks?: ActivationHooks): Tensor {
    const ws = this.workspace(batch, seq);
    this.norm(ws.xn, hidden, this.weights.finalNorm, this.weights.finalNormBias);
    hooks?.[hookNames.finalNormOutput]?.(ws.xn);
    return ws.xn;
  }

  /** finalNorm + lm_head for every row: logits [batch*seq, vocab] (decoder-owned). */
  finalNormAndHead(hidden: Tensor, batch: number, seq: number, hooks?: ActivationHooks): Tensor {
    const normed = this.finalNorm(hidden, batch, seq, hooks);
    return this.logitsForRows(normed, 0, batch * seq);
  }

  /**
   * lm_head for rows [start, start+count) of a final-norm output: logits [count, vocab], in a
   * decoder-owned buffer that the next call overwrites.
   */
  logitsForRows(normed: Tensor, start: number, count: number): Tensor {
    checkCount('count', count);
    if (count > this.logitsCapacity) {
      if (this.logitsBuf !== undefined) this.device.free(this.logitsBuf);
      this.logitsBuf = this.device.empty([count, this.spec.vocabSize]);
      this.logitsCapacity = count;
    }
    const out = count === this.logitsCapacity ? this.logitsBuf! : this.device.rows(this.logitsBuf!, 0, count);
    this.device.matmul(out, this.device.rows(normed, start, count), this.weights.lmHead);
    return out;
  }

  /** Frees the decoder's buffers (workspaces, logits, rope tables), and the weights if asked. */
  dispose(opts: { weights?: boolean } = {}): void {
    for (const ws of this.workspaces.values()) ws.free();
    this.workspaces.clear();
    if (this.logitsBuf !== undefined) this.device.free(this.logitsBuf);
    this.logitsBuf = undefined;
    this.logitsCapacity = 0;
    if (this.rope !== undefined) {
      this.device.free(this.rope.cos);
      this.device.free(this.rope.sin);
      this.rope = undefined;
    }
    if (opts.weights) freeDecoderWeights(this.device, this.weights);
  }

  /** Simulated quantization of an activation in place (quantized checkpoints); no spec = nothing to do. */
  private fakeQuant(x: Tensor, spec: FakeQuantSpec | undefined): void {
    if (spec !== undefined) this.device.fakeQuantRows(x, spec);
  }

  private norm(out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | undefined): void {
    if (this.spec.norm === 'rms') this.device.rmsNorm(out, x, weight, this.spec.normEps);
    else this.device.layerNorm(out, x, weight, bias!, this.spec.normEps);
  }

  private workspace(batch: number, seq: number): Workspace {
    const key = `${batch}x${seq}`;
    let ws = this.workspaces.get(key);
    if (ws !== undefined) {
      // Most recently used last, so eviction drops the oldest shape.
      this.workspaces.delete(key);
      this.workspaces.set(key, ws);
      return ws;
    }
    if (this.workspaces.size >= MAX_WORKSPACES) {
      const [oldestKey, oldest] = this.workspaces.entries().next().value as [string, Workspace];
      oldest.free();
      this.workspaces.delete(oldestKey);
    }
    ws = new Workspace(this.device, this.spec, batch, seq);
    this.workspaces.set(key, ws);
    return ws;
  }

  /** cos/sin tables covering positions [0, needed), grown by doubling. */
  private ropeFor(needed: number): { cos: Tensor; sin: Tensor } {
    if (this.rope !== undefined && this.rope.maxPos >= needed) return this.rope;
    let maxPos = Math.max(this.rope?.maxPos ?? 0, Math.min(this.spec.maxPositionEmbeddings, 4096), 64);
    while (maxPos < needed) maxPos *= 2;
    const t = ropeTables(this.spec, maxPos);
    if (this.rope !== undefined) {
      this.device.free(this.rope.cos);
      this.device.free(this.rope.sin);
    }
    this.rope = {
      cos: this.device.upload(t.cos, [maxPos, t.half]),
      sin: this.device.upload(t.sin, [maxPos, t.half]),
      maxPos,
    };
    return this.rope;
  }
}

function positionIds(batch: number, seq: number, startPos: number): Int32Array {
  const pos = new Int32Array(batch * seq);
  for (let b = 0; b < batch; b++) for (let t = 0; t < seq; t++) pos[b * seq + t] = startPos + t;
  return pos;
}

function checkCount(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${n}`);
}

function checkCacheRoom(cache: KVCache, batch: number, seq: number): void {
  if (cache.batch !== batch) throw new Error(`KV cache is for batch ${cache.batch}, got batch ${batch}`);
  if (cache.length + seq > cache.maxLen) {
    throw new LlmoptError(`KV cache full: ${cache.length} + ${seq} positions exceed its ${cache.maxLen}`);
  }
}
