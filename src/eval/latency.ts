// Serving latency of a decoder: prefill, time to first token, per-token decode time and memory.
//
// One run = `batch` sequences of `promptLen` random token ids (seeded), a prefill, then `genLen`
// tokens chosen greedily, through the same decode session as `llmopt generate` (on CUDA: the decode
// step replayed from a CUDA graph, tokens read back one step behind). A warm-up run of the same
// shape goes first (kernel loading, GEMM plans, graph capture), then the measured run.
//
// Clocks: prefill = the prompts' forward and first-token choice (median of 3), on CUDA timed by
// events on the stream; time to first token = wall clock from the prefill call until the first ids
// are on the host; decode ms/token = the time between consecutive step-end events (CUDA events; any
// host stall between steps counts), or the wall clock per step on the cpu.
// Memory: on CUDA, the device's tensor accounting (weights, KV cache, and activations = peak −
// weights − KV cache); on the cpu, bytes of the tensors involved, computed from their shapes.

import { createDecodeSession, type PendingTokens } from '../model/generate.js';
import type { Decoder } from '../model/decoder.js';
import type { ModelSpec } from '../model/spec.js';
import type { DecoderWeights } from '../model/weights.js';
import { CudaDevice, type CudaEvent } from '../tensor/cuda/index.js';
import type { Tensor } from '../tensor/device.js';
import { quantile } from './stats.js';

export interface LatencyOptions {
  decoder: Decoder;
  promptLen: number;
  genLen: number;
  batch: number;
  /** Seed of the random prompt ids (default 0). */
  seed?: number;
  /** Skip the warm-up run (tests). */
  noWarmup?: boolean;
}

export interface LatencyResult {
  batch: number;
  promptLen: number;
  genLen: number;
  clock: 'cuda events' | 'wall clock';
  cudaGraph: boolean;
  prefillMs: number;
  /** Prompt tokens (all sequences) per second of prefill. */
  prefillTokensPerS: number;
  timeToFirstTokenMs: number;
  decodeMsMedian: number;
  decodeMsP90: number;
  /** Generated tokens (all sequences, after the first) per second of decode. */
  decodeTokensPerS: number;
  /** Per-step times (ms), in order. */
  stepMs: number[];
  memory: {
    source: 'cuda tensor accounting' | 'tensor shapes';
    weightsBytes: number;
    kvCacheBytes: number;
    activationsBytes: number;
    peakBytes: number;
  };
}

/** Stream-ordered marks (CUDA events) or wall-clock marks. */
interface Clock {
  readonly name: LatencyResult['clock'];
  mark(): unknown;
  ms(from: unknown, to: unknown): number;
  release(): void;
}

function cudaClock(dev: CudaDevice): Clock {
  const events: CudaEvent[] = [];
  return {
    name: 'cuda events',
    mark: () => {
      const e = dev.recordEvent();
      events.push(e);
      return e;
    },
    ms: (a, b) => dev.elapsedMs(a as CudaEvent, b as CudaEvent),
    release: () => {
      for (const e of events) dev.destroyEvent(e);
      events.length = 0;
    },
  };
}

const wallClock: Clock = {
  name: 'wall clock',
  mark: () => performance.now(),
  ms: (a, b) => (b as number) - (a as number),
  release: () => undefined,
};

function elementBytes(t: Tensor): number {
  return t.dtype === 'f32' ? 4 : 2;
}

function tensorBytes(t: Tensor): number {
  return t.storedBytes ?? t.shape.reduce((a, b) => a * b, 1) * elementBytes(t);
}

/** Bytes of every distinct weight tensor (a tied lm_head counts once). */
export function weightBytes(w: DecoderWeights): number {
  const seen = new Set<Tensor>();
  const add = (t: Tensor | undefined) => {
    if (t !== undefined) seen.add(t);
  };
  add(w.embed);
  add(w.positions);
  for (const l of w.layers) for (const t of Object.values(l)) add(t as Tensor | undefined);
  add(w.finalNorm);
  add(w.finalNormBias);
  add(w.lmHead);
  let bytes = 0;
  for (const t of seen) bytes += tensorBytes(t);
  return bytes;
}

/** Bytes of one decoder Workspace of `rows` rows (mirrors its columns) plus `logitsRows` of logits. */
function activationBytes(spec: ModelSpec, rows: number, logitsRows: number, bytes: number): number {
  const q = spec.numHeads * spec.headDim;
  const kv = spec.numKvHeads * spec.headDim;
  let cols = 3 * spec.hiddenSize + 2 * q + 2 * kv + 2 * spec.intermediateSize;
  if (spec.qkNorm) cols += q + kv;
  if (spec.activation === 'silu') cols += spec.intermediateSize;
  return (rows * cols + logitsRows * spec.vocabSize) * bytes;
}

function randomPrompts(n: number, vocab: number, seed: number): Int32Array {
  let s = (seed ^ 0x9e3779b9) >>> 0;
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids[i] = s % vocab;
  }
  return ids;
}

export function measureLatency(opts: LatencyOptions): LatencyResult {
  const { decoder, promptLen, genLen, batch } = opts;
  const spec = decoder.spec;
  for (const [name, v, min] of [['promptLen', promptLen, 1], ['genLen', genLen, 1], ['batch', batch, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new RangeError(`measureLatency: ${name} must be an integer ≥ ${min}, got ${v}`);
  }
  const device = decoder.device;
  const cuda = device instanceof CudaDevice ? device : undefined;
  const clock = cuda ? cudaClock(cuda) : wallClock;
  const prompts = randomPrompts(batch * promptLen, spec.vocabSize, opts.seed ?? 0);
  const maxLen = promptLen + genLen;
  const session = createDecodeSession(decoder, batch, maxLen);
  try {
    const run = (measure: boolean) => {
      cuda?.synchronize();
      if (measure) cuda?.resetPeakMemory();
      const t0 = performance.now();
      const first = session.prefill(prompts, promptLen);
      const firstChosen = clock.mark();
      first.wait();
      const ttftMs = performance.now() - t0;
      const ends: unknown[] = [firstChosen];
      let pending: PendingTokens | undefined;
      for (let s = 1; s < genLen; s++) {
        const next = session.step();
        ends.push(clock.mark());
        pending?.wait(); // one step behind, as generate streams
        pending = next;
      }
      pending?.wait();
      cuda?.synchronize();
      return { ttftMs, ends };
    };
    if (!opts.noWarmup) run(false);
    const prefillOnly = measurePrefill(session, prompts, promptLen, clock, cuda);
    const { ttftMs, ends } = run(true);
    const stepMs: number[] = [];
    for (let i = 1; i < ends.length; i++) stepMs.push(clock.ms(ends[i - 1], ends[i]));
    const decodeTotal = stepMs.reduce((a, b) => a + b, 0);
    const wBytes = weightBytes(decoder.weights);
    const eb = device.dtype === 'f32' ? 4 : 2;
    const kvBytes = 2 * spec.numLayers * batch * maxLen * spec.numKvHeads * spec.headDim * eb;
    let memory: LatencyResult['memory'];
    if (cuda) {
      const peak = cuda.memoryStats().peakTensorBytes;
      memory = { source: 'cuda tensor accounting', weightsBytes: wBytes, kvCacheBytes: kvBytes, activationsBytes: Math.max(0, peak - wBytes - kvBytes), peakBytes: peak };
    } else {
      const act = activationBytes(spec, batch * promptLen, 1, eb) + activationBytes(spec, batch, batch, eb);
      memory = { source: 'tensor shapes', weightsBytes: wBytes, kvCacheBytes: kvBytes, activationsBytes: act, peakBytes: wBytes + kvBytes + act };
    }
    const sorted = Float64Array.from(stepMs);
    return {
      batch,
      promptLen,
      genLen,
      clock: clock.name,
      cudaGraph: session.usesGraph,
      prefillMs: prefillOnly,
      prefillTokensPerS: (batch * promptLen * 1000) / prefillOnly,
      timeToFirstTokenMs: ttftMs,
      decodeMsMedian: stepMs.length > 0 ? quantile(sorted, 0.5) : 0,
      decodeMsP90: stepMs.length > 0 ? quantile(sorted, 0.9) : 0,
      decodeTokensPerS: stepMs.length > 0 ? (batch * stepMs.length * 1000) / decodeTotal : 0,
      stepMs,
      memory,
    };
  } finally {
    clock.release();
    session.dispose();
  }
}

/** Prefill alone (the forward over the prompts, without the token choice), median of 3. */
function measurePrefill(session: ReturnType<typeof createDecodeSession>, prompts: Int32Array, promptLen: number, clock: Clock, cuda?: CudaDevice): number {
  const times: number[] = [];
  for (let r = 0; r < 3; r++) {
    cuda?.synchronize();
    const a = clock.mark();
    session.prefill(prompts, promptLen).wait();
    const b = clock.mark();
    times.push(clock.ms(a, b));
  }
  return quantile(Float64Array.from(times), 0.5);
}
