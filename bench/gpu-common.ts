// Shared by the GPU benchmarks (bench/gpu-bench.ts, bench/quant-bench.ts, bench/distill-bench.ts):
// the shapes (configs and random checkpoints in random-checkpoint.ts), device copy bandwidth, and
// per-kernel decode-step breakdowns.

import { LLAMA_3_1_8B, LLAMA_3_2_1B } from './random-checkpoint.js';
import { Workspace, type DecodeStepAt } from '../src/model/decoder.js';
import type { LoadedModel } from '../src/model/load.js';
import type { CudaDevice, CudaInts, ProfiledOp } from '../src/tensor/cuda/index.js';

export function flag(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/** --shape 1b (default) | 8b: which real config the random checkpoint takes. */
export const SHAPES = {
  '1b': { label: 'Llama-3.2-1B', config: LLAMA_3_2_1B },
  '8b': { label: 'Llama-3.1-8B', config: LLAMA_3_1_8B },
} as const;
export type ShapeName = keyof typeof SHAPES;

export { writeRandomCheckpoint } from './random-checkpoint.js';

export const log = (line: string) => console.log(line);

/** Median event-timed µs of fn over 20 runs (after one warm-up). */
export function timeUs(dev: CudaDevice, fn: () => void): number {
  fn();
  const ms: number[] = [];
  for (let r = 0; r < 20; r++) {
    const e0 = dev.recordEvent();
    fn();
    const e1 = dev.recordEvent();
    ms.push(dev.elapsedMs(e0, e1));
    dev.destroyEvent(e0);
    dev.destroyEvent(e1);
  }
  return ms.sort((a, b) => a - b)[10]! * 1000;
}

/** Device-to-device copy bandwidth (read + write bytes per second), best of 5. */
export function copyBandwidth(dev: CudaDevice): number {
  const n = 256 * 1024 * 1024; // elements of 2 bytes: 512 MiB
  const a = dev.empty([n]);
  const b = dev.empty([n]);
  let best = Infinity;
  dev.copy(b, a);
  for (let i = 0; i < 5; i++) {
    const e0 = dev.recordEvent();
    dev.copy(b, a);
    const e1 = dev.recordEvent();
    best = Math.min(best, dev.elapsedMs(e0, e1));
    dev.destroyEvent(e0);
    dev.destroyEvent(e1);
  }
  dev.free(a);
  dev.free(b);
  return (2 * n * 2) / (best / 1000);
}

/** One eager decode step (batch B, kv ≈ ctx) under the profiler: time per kernel, summed by name. */
export function decodeBreakdown(model: LoadedModel, dev: CudaDevice, batch: number, ctx: number): { ops: { name: string; ms: number; count: number }[]; totalMs: number } {
  const d = model.decoder;
  const cache = d.newCache(batch, ctx + 2);
  const ws = new Workspace(dev, d.spec, batch, 1);
  const logits = dev.empty([batch, d.spec.vocabSize]);
  const ids = dev.allocInts(batch), positions = dev.allocInts(batch), kvLens = dev.allocInts(batch), step = dev.allocInts(1);
  dev.setInts(positions, new Int32Array(batch).fill(ctx));
  dev.setInts(kvLens, new Int32Array(batch).fill(ctx + 1));
  const at: DecodeStepAt<CudaInts> = { ops: dev, ids, positions, kvLens };
  const stepOnce = () => {
    dev.matmul(logits, d.decodeStepAt(ws, at, cache), d.weights.lmHead);
    dev.sampleAt(logits, { temperature: 0, topK: 0, seed: 0 }, ids, step);
  };
  stepOnce(); // warm: kernels loaded, plans made
  const raw: ProfiledOp[] = dev.profile(stepOnce);
  cache.free();
  ws.free();
  dev.free(logits);
  for (const t of [ids, positions, kvLens, step]) dev.freeInts(t);
  return summarize(raw);
}

export function summarize(raw: ProfiledOp[]): { ops: { name: string; ms: number; count: number }[]; totalMs: number } {
  const byName = new Map<string, { ms: number; count: number }>();
  for (const op of raw) {
    const e = byName.get(op.name) ?? { ms: 0, count: 0 };
    e.ms += op.ms;
    e.count++;
    byName.set(op.name, e);
  }
  const ops = [...byName.entries()].map(([name, e]) => ({ name, ...e })).sort((a, b) => b.ms - a.ms);
  return { ops, totalMs: raw.reduce((a, o) => a + o.ms, 0) };
}


/** The GPU's name as a file-name slug ("h200", "h100-80gb-hbm3"). */
export function gpuSlug(dev: CudaDevice): string {
  return dev.info.name.toLowerCase().replace(/nvidia\s*/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}
