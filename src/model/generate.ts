// Text generation with the KV cache: a prefill of the prompts, then one decode step per token.
//
// A DecodeSession holds `batch` sequences. On a CUDA device every decode step is the same fixed
// launch sequence (embedding → layers → lm_head → next-token choice → positions + 1) reading its
// ids/positions/lengths from device buffers, so it is run eagerly once, captured as a CUDA graph,
// and then replayed per token: the host only launches the graph and reads the chosen ids back, one
// step behind (the next step is already queued), so per-token cost is not bound by JavaScript.
// Elsewhere (cpu) the step is the plain forward() with a cache and the choice runs on the host.
//
// Token choice (the same algorithm on both paths, see kernels/sample.cu):
//   greedy (temperature 0 or topK 1): argmax, lowest index on ties;
//   sampling: candidates = tokens whose logit ≥ the topK-th largest (all when topK is 0), weights
//   exp((logit − max) / T), u = uniform01(seed, step, row), the first candidate in index order whose
//   running weight sum exceeds u · total.

import { LlmoptError } from '../errors.js';
import { CudaDevice, type CudaGraph, type CudaInts, type PendingInts } from '../tensor/cuda/index.js';
import type { Tensor } from '../tensor/device.js';
import { Workspace, type Decoder, type DecodeStepAt, type KVCache } from './decoder.js';
import type { TextTokenizer } from './tokenizer.js';

export interface SamplingOptions {
  /** 0 (default) = greedy. */
  temperature?: number;
  /** Keep only tokens whose logit is ≥ the k-th largest; 0 (default) = all. */
  topK?: number;
  /** Seed of the sampling draws (default 0). */
  seed?: number;
}

interface Sampling {
  temperature: number;
  topK: number;
  seed: number;
}

function normalizeSampling(opts: SamplingOptions): Sampling {
  const temperature = opts.temperature ?? 0;
  const topK = opts.topK ?? 0;
  const seed = (opts.seed ?? 0) >>> 0;
  if (!(temperature >= 0 && Number.isFinite(temperature))) throw new LlmoptError(`temperature ${temperature}: expected a number ≥ 0`);
  if (!Number.isInteger(topK) || topK < 0) throw new LlmoptError(`top-k ${topK}: expected an integer ≥ 0`);
  return { temperature, topK, seed };
}

function isGreedy(s: Sampling): boolean {
  return s.temperature === 0 || s.topK === 1;
}

// --- the token choice on the host (mirrors kernels/sample.cu) ------------------------------------

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The uniform draw in [0, 1) for (seed, step, row): the same 24-bit value as the CUDA kernel's. */
export function uniform01(seed: number, step: number, row: number): number {
  const inner = mix32((Math.imul(step, 0x9e3779b9) + Math.imul(row, 0x85ebca6b) + 0x632be5ab) >>> 0);
  return (mix32((seed ^ inner) >>> 0) >>> 8) / 16777216;
}

/** argmax of x[offset, offset + V), lowest index on ties. */
function argmaxRow(x: Float32Array, offset: number, V: number): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let c = 0; c < V; c++) {
    const v = x[offset + c]!;
    if (v > bestValue) {
      bestValue = v;
      best = c;
    }
  }
  return best;
}

/** The next token for row `row` of logits (x[offset, offset + V)) at generation step `step`. */
export function chooseToken(x: Float32Array, offset: number, V: number, sampling: SamplingOptions, step: number, row: number): number {
  const s = normalizeSampling(sampling);
  const best = argmaxRow(x, offset, V);
  const max = x[offset + best]!;
  if (isGreedy(s) || max === -Infinity) return best;
  let threshold = -Infinity;
  if (s.topK > 0 && s.topK < V) {
    const sorted = Float32Array.from(x.subarray(offset, offset + V)).sort();
    threshold = sorted[V - s.topK]!;
  }
  const invTemp = Math.fround(1 / s.temperature);
  const weights = new Float32Array(V);
  let total = 0;
  for (let c = 0; c < V; c++) {
    const v = x[offset + c]!;
    if (v >= threshold) {
      weights[c] = Math.exp(Math.fround((v - max) * invTemp));
      total += weights[c]!;
    }
  }
  const target = uniform01(s.seed, step, row) * total;
  let acc = 0;
  let last = best;
  for (let c = 0; c < V; c++) {
    if (!(x[offset + c]! >= threshold)) continue;
    last = c;
    acc += weights[c]!;
    if (acc > target) return c;
  }
  return last;
}

// --- decode sessions ----------------------------------------------------------------------------

/** Tokens chosen by one step, possibly still being computed. */
export interface PendingTokens {
  wait(): Int32Array;
}

export interface DecodeSession {
  readonly batch: number;
  readonly maxLen: number;
  /** True when decode steps replay a CUDA graph. */
  readonly usesGraph: boolean;
  /** Prefills `prompts` [batch, promptLen] (row-major) and chooses each sequence's first new token. */
  prefill(prompts: Int32Array, promptLen: number): PendingTokens;
  /** Queues one decode step on the last chosen tokens; the result holds the next ones. */
  step(): PendingTokens;
  /** Forgets the sequences (buffers and graph are kept for the next prefill of the same batch). */
  reset(): void;
  dispose(): void;
}

export interface SessionOptions extends SamplingOptions {
  /** Use the eager path even on CUDA (tests, comparisons). */
  noGraph?: boolean;
}

/** A decode session for `batch` sequences of up to `maxLen` positions on the decoder's device. */
export function createDecodeSession(decoder: Decoder, batch: number, maxLen: number, opts: SessionOptions = {}): DecodeSession {
  if (maxLen > decoder.spec.maxPositionEmbeddings) {
    throw new LlmoptError(`${maxLen} positions exceed the model's context (max_position_embeddings ${decoder.spec.maxPositionEmbeddings})`);
  }
  const sampling = normalizeSampling(opts);
  if (decoder.device instanceof CudaDevice && !opts.noGraph) return new GraphDecodeSession(decoder, decoder.device, batch, maxLen, sampling);
  return new EagerDecodeSession(decoder, batch, maxLen, sampling);
}

const done = (ids: Int32Array): PendingTokens => ({ wait: () => ids });

/** Plain forward() per step; tokens chosen on the host (greedy through scoreLogits' argmax). */
class EagerDecodeSession implements DecodeSession {
  readonly usesGraph = false;
  private readonly cache: KVCache;
  private last: Int32Array;
  private stepIndex = 0;

  constructor(
    private readonly decoder: Decoder,
    readonly batch: number,
    readonly maxLen: number,
    private readonly sampling: Sampling,
  ) {
    this.cache = decoder.newCache(batch, maxLen);
    this.last = new Int32Array(batch);
  }

  prefill(prompts: Int32Array, promptLen: number): PendingTokens {
    if (prompts.length !== this.batch * promptLen || promptLen < 1) throw new Error(`prefill: ${prompts.length} ids for batch ${this.batch} × ${promptLen}`);
    this.reset();
    const hidden = this.decoder.forwardHidden(prompts, this.batch, promptLen, { cache: this.cache });
    const next = new Int32Array(this.batch);
    for (let b = 0; b < this.batch; b++) next[b] = this.choose(this.decoder.logitsForRows(hidden, b * promptLen + promptLen - 1, 1), 0);
    return this.advance(next);
  }

  step(): PendingTokens {
    const hidden = this.decoder.forwardHidden(this.last, this.batch, 1, { cache: this.cache });
    const logits = this.decoder.logitsForRows(hidden, 0, this.batch);
    const next = new Int32Array(this.batch);
    if (isGreedy(this.sampling)) {
      next.set(this.decoder.device.scoreLogits(logits, new Int32Array(this.batch).fill(-1)).argmax);
    } else {
      const x = this.decoder.device.download(logits);
      const V = this.decoder.spec.vocabSize;
      for (let b = 0; b < this.batch; b++) next[b] = chooseToken(x, b * V, V, this.sampling, this.stepIndex, b);
    }
    return this.advance(next);
  }

  private choose(logitsRow: Tensor, row: number): number {
    if (isGreedy(this.sampling)) return this.decoder.device.scoreLogits(logitsRow, new Int32Array([-1])).argmax[0]!;
    return chooseToken(this.decoder.device.download(logitsRow), 0, this.decoder.spec.vocabSize, this.sampling, this.stepIndex, row);
  }

  private advance(next: Int32Array): PendingTokens {
    this.last = next;
    this.stepIndex++;
    return done(next);
  }

  reset(): void {
    this.cache.reset();
    this.stepIndex = 0;
  }

  dispose(): void {
    this.cache.free();
  }
}

/**
 * CUDA: ids/positions/kvLens/step live on the device; the step (decoder.decodeStepAt → lm_head →
 * sampleAt → decodeAdvance) runs eagerly once, then is captured and replayed. Each step's ids are
 * also written to a history buffer row, read back asynchronously.
 */
class GraphDecodeSession implements DecodeSession {
  readonly usesGraph = true;
  private readonly cache: KVCache;
  private readonly ws: Workspace;
  private readonly lastHidden: Tensor;
  private readonly logits: Tensor;
  private readonly ids: CudaInts;
  private readonly positions: CudaInts;
  private readonly kvLens: CudaInts;
  private readonly stepCounter: CudaInts;
  private readonly history: CudaInts;
  private graph: CudaGraph | undefined;
  private steps = 0;

  constructor(
    private readonly decoder: Decoder,
    private readonly dev: CudaDevice,
    readonly batch: number,
    readonly maxLen: number,
    private readonly sampling: Sampling,
  ) {
    const spec = decoder.spec;
    this.cache = decoder.newCache(batch, maxLen);
    this.ws = new Workspace(dev, spec, batch, 1);
    this.lastHidden = dev.empty([batch, spec.hiddenSize]);
    this.logits = dev.empty([batch, spec.vocabSize]);
    this.ids = dev.allocInts(batch);
    this.positions = dev.allocInts(batch);
    this.kvLens = dev.allocInts(batch);
    this.stepCounter = dev.allocInts(1);
    this.history = dev.allocInts(batch * (maxLen + 1));
  }

  prefill(prompts: Int32Array, promptLen: number): PendingTokens {
    if (prompts.length !== this.batch * promptLen || promptLen < 1) throw new Error(`prefill: ${prompts.length} ids for batch ${this.batch} × ${promptLen}`);
    if (promptLen >= this.maxLen) throw new LlmoptError(`prompt of ${promptLen} tokens leaves no room in a ${this.maxLen}-position cache`);
    this.reset();
    const d = this.dev;
    const hidden = this.decoder.forwardHidden(prompts, this.batch, promptLen, { cache: this.cache });
    for (let b = 0; b < this.batch; b++) d.copy(d.rows(this.lastHidden, b, 1), d.rows(hidden, b * promptLen + promptLen - 1, 1));
    d.matmul(this.logits, this.lastHidden, this.decoder.weights.lmHead);
    // positions/kvLens one behind: the advance after the choice moves them to promptLen / promptLen + 1
    d.setInts(this.positions, new Int32Array(this.batch).fill(promptLen - 1));
    d.setInts(this.kvLens, new Int32Array(this.batch).fill(promptLen));
    d.setInts(this.stepCounter, new Int32Array(1));
    this.chooseAndAdvance();
    return this.read(0);
  }

  step(): PendingTokens {
    if (this.cache.length + 1 > this.maxLen) throw new LlmoptError(`KV cache full: ${this.cache.length} positions of ${this.maxLen}`);
    if (this.graph === undefined) {
      this.record(); // eager once: compiles kernels and makes GEMM plans outside the capture
      this.graph = this.dev.captureGraph(() => this.record());
    } else {
      this.graph.launch();
    }
    this.cache.length++;
    this.steps++;
    return this.read(this.steps);
  }

  private record(): void {
    const d = this.dev;
    const at: DecodeStepAt<CudaInts> = { ops: d, ids: this.ids, positions: this.positions, kvLens: this.kvLens };
    const normed = this.decoder.decodeStepAt(this.ws, at, this.cache);
    d.matmul(this.logits, normed, this.decoder.weights.lmHead);
    this.chooseAndAdvance();
  }

  private chooseAndAdvance(): void {
    this.dev.sampleAt(this.logits, this.sampling, this.ids, this.stepCounter, this.history);
    this.dev.decodeAdvance(this.positions, this.kvLens, this.stepCounter, this.batch);
  }

  private read(step: number): PendingTokens {
    const pending: PendingInts = this.dev.readIntsAsync(this.history, step * this.batch, this.batch);
    return pending;
  }

  reset(): void {
    this.cache.reset();
    this.steps = 0;
  }

  dispose(): void {
    this.graph?.destroy();
    this.graph = undefined;
    this.cache.free();
    this.ws.free();
    for (const t of [this.lastHidden, this.logits]) this.dev.free(t);
    for (const t of [this.ids, this.positions, this.kvLens, this.stepCounter, this.history]) this.dev.freeInts(t);
  }
}

// --- generation -----------------------------------------------------------------------------------

export interface GenerateOptions extends SessionOptions {
  maxNewTokens: number;
  /** Stop after emitting one of these ids (it is included in the output). */
  eosTokenId?: number | readonly number[];
  /** Called with each new id as soon as it is known (streaming). */
  onToken?: (id: number) => void;
}

export interface GenerateResult {
  tokens: Int32Array;
  stopReason: 'eos' | 'length';
  /** Wall-clock milliseconds: prompt prefill up to the first token known on the host, then the rest. */
  firstTokenMs: number;
  decodeMs: number;
  usesGraph: boolean;
}

/** Generates up to maxNewTokens ids after `prompt` (one sequence); streams them to onToken. */
export function generate(decoder: Decoder, prompt: Int32Array, opts: GenerateOptions): GenerateResult {
  if (prompt.length === 0) throw new Error('generate: the prompt needs at least one token');
  const n = opts.maxNewTokens;
  if (!Number.isInteger(n) || n < 0) throw new Error(`generate: maxNewTokens must be an integer ≥ 0, got ${n}`);
  const eos = new Set(opts.eosTokenId === undefined ? [] : typeof opts.eosTokenId === 'number' ? [opts.eosTokenId] : opts.eosTokenId);
  const out: number[] = [];
  if (n === 0) return { tokens: new Int32Array(0), stopReason: 'length', firstTokenMs: 0, decodeMs: 0, usesGraph: false };
  // +1: the graph path queues one step past the last token it needs (kept in flight while reading).
  const session = createDecodeSession(decoder, 1, Math.min(decoder.spec.maxPositionEmbeddings, prompt.length + n + 1), opts);
  if (prompt.length + n > session.maxLen) {
    session.dispose();
    throw new LlmoptError(`prompt (${prompt.length} tokens) + ${n} new tokens exceed the model's context (max_position_embeddings ${decoder.spec.maxPositionEmbeddings})`);
  }
  let stopReason: GenerateResult['stopReason'] = 'length';
  const t0 = performance.now();
  let firstTokenMs = 0;
  try {
    let pending = session.prefill(prompt, prompt.length);
    for (let i = 0; i < n; i++) {
      // Queue the next step before reading this one, so the GPU never waits for the host.
      const next = i + 1 < n ? session.step() : undefined;
      const id = pending.wait()[0]!;
      if (i === 0) firstTokenMs = performance.now() - t0;
      out.push(id);
      opts.onToken?.(id);
      if (eos.has(id)) {
        stopReason = 'eos';
        next?.wait();
        break;
      }
      if (next === undefined) break;
      pending = next;
    }
  } finally {
    session.dispose();
  }
  const total = performance.now() - t0;
  return { tokens: Int32Array.from(out), stopReason, firstTokenMs, decodeMs: total - firstTokenMs, usesGraph: session.usesGraph };
}

/** Greedy decoding (kept for callers of the first API): the argmax token, one step at a time. */
export interface GreedyOptions {
  /** Stop after emitting one of these ids (it is included in the output). */
  eosTokenId?: number | readonly number[];
}

/** Generates up to maxNewTokens ids after `prompt` (one sequence); returns only the new ids. */
export function generateGreedy(decoder: Decoder, prompt: Int32Array, maxNewTokens: number, opts: GreedyOptions = {}): Int32Array {
  return generate(decoder, prompt, { maxNewTokens, eosTokenId: opts.eosTokenId }).tokens;
}

// --- streaming text -------------------------------------------------------------------------------

/**
 * Incremental detokenization (as vLLM's): each new id yields the text it adds. Decoding a short window
 * of ids before it keeps word-boundary spaces right (SentencePiece's "▁" and a decoder's leading-space
 * strip), and text ending in U+FFFD is held back until the byte-fallback tokens of a UTF-8 character
 * are complete.
 */
export class TextStream {
  private readonly ids: number[];
  private prefixOffset: number;
  private readOffset: number;

  constructor(
    private readonly tokenizer: TextTokenizer,
    promptIds: ArrayLike<number>,
  ) {
    this.ids = Array.from(promptIds);
    this.readOffset = this.ids.length;
    this.prefixOffset = Math.max(0, this.ids.length - 6);
  }

  /** The text added by `id` (possibly empty while a multi-byte character is incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const decode = (from: number, to: number) => this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: true });
    const prefix = decode(this.prefixOffset, this.readOffset);
    const full = decode(this.prefixOffset, this.ids.length);
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }

  /** Whatever is still held back (an incomplete character at the end), as decoded. */
  flush(): string {
    const decode = (from: number, to: number) => this.tokenizer.decode(this.ids.slice(from, to), { skipSpecialTokens: true });
    const prefix = decode(this.prefixOffset, this.readOffset);
    const full = decode(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    return full.length > prefix.length ? full.slice(prefix.length) : '';
  }
}
