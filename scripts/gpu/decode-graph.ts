// A decode step captured once as a CUDA graph and replayed per token, on a Llama-shaped stack built
// from CudaDevice ops (random or zero weights; the real decoder lives in src/model).
//  1. correctness: N teacher-forced decode steps after a prefill, eager (plain ops, host ids/positions/
//     kvLen) vs graph replay (the *At ops read ids/positions/kvLens set on the device before each
//     launch): logits must be identical, f32 and bf16.
//  2. speed at Llama-3.2-1B shape (bf16, zero weights, kv ~1024): ms/token eager vs graph, batch 1/8/32,
//     with the argmax read back every step (as greedy decoding does) and GPU-only time per step.
// Usage: node .gpu/decode-graph.mjs   (writes $OUT/decode-graph.json when $OUT is set)

import fs from 'node:fs';
import path from 'node:path';
import { CudaDevice, type CudaInts } from '../../src/tensor/cuda/index.js';
import type { AttentionShape, ComputeDType, Tensor } from '../../src/tensor/device.js';

interface Config { hidden: number; heads: number; kvHeads: number; headDim: number; ffn: number; vocab: number; layers: number; maxLen: number }

function randomArray(n: number, scale: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296 - 0.5) * 2 * scale;
  }
  return a;
}

class MiniLlama {
  readonly w: Record<string, Tensor>;
  readonly cacheK: Tensor[];
  readonly cacheV: Tensor[];
  readonly cos: Tensor;
  readonly sin: Tensor;
  private ws: Record<string, Tensor> = {};
  private wsRows = -1;

  constructor(readonly dev: CudaDevice, readonly c: Config, readonly batch: number, random: boolean) {
    let seed = 1;
    const t = (shape: number[], scale: number) =>
      random ? dev.upload(randomArray(shape.reduce((a, b) => a * b, 1), scale, seed++), shape) : dev.empty(shape);
    const qd = c.heads * c.headDim, kvd = c.kvHeads * c.headDim;
    this.w = {
      embed: t([c.vocab, c.hidden], 1), norm: t([c.hidden], 1), head: t([c.vocab, c.hidden], 1 / Math.sqrt(c.hidden)),
      q: t([qd, c.hidden], 1 / Math.sqrt(c.hidden)), k: t([kvd, c.hidden], 1 / Math.sqrt(c.hidden)),
      v: t([kvd, c.hidden], 1 / Math.sqrt(c.hidden)), o: t([c.hidden, qd], 1 / Math.sqrt(qd)),
      gate: t([c.ffn, c.hidden], 1 / Math.sqrt(c.hidden)), up: t([c.ffn, c.hidden], 1 / Math.sqrt(c.hidden)),
      down: t([c.hidden, c.ffn], 1 / Math.sqrt(c.ffn)),
    };
    this.cacheK = Array.from({ length: c.layers }, () => dev.empty([batch * c.maxLen, kvd]));
    this.cacheV = Array.from({ length: c.layers }, () => dev.empty([batch * c.maxLen, kvd]));
    const half = c.headDim / 2;
    const cos = new Float32Array(c.maxLen * half), sin = new Float32Array(c.maxLen * half);
    for (let p = 0; p < c.maxLen; p++) for (let i = 0; i < half; i++) {
      const a = p / 10000 ** ((2 * i) / c.headDim);
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
    this.cos = dev.upload(cos, [c.maxLen, half]);
    this.sin = dev.upload(sin, [c.maxLen, half]);
  }

  workspace(rows: number): Record<string, Tensor> {
    if (rows !== this.wsRows) {
      for (const t of Object.values(this.ws)) this.dev.free(t);
      const c = this.c, e = (cols: number) => this.dev.empty([rows, cols]);
      this.ws = {
        x: e(c.hidden), xn: e(c.hidden), q: e(c.heads * c.headDim), k: e(c.kvHeads * c.headDim), v: e(c.kvHeads * c.headDim),
        att: e(c.heads * c.headDim), proj: e(c.hidden), g: e(c.ffn), u: e(c.ffn), act: e(c.ffn), logits: e(c.vocab),
      };
      this.wsRows = rows;
    }
    return this.ws;
  }

  /**
   * One forward of `seq` tokens per sequence. Plain mode: host ids/positions, uniform start.
   * At mode (graph-capturable, seq = 1): ids/positions/kvLens from device buffers.
   */
  forward(seq: number, inputs: { ids: Int32Array; start: number } | { ids: CudaInts; pos: CudaInts; kvLens: CudaInts; maxKvLen: number }): Tensor {
    const d = this.dev, c = this.c, B = this.batch, rows = B * seq, w = this.w;
    const ws = this.workspace(rows);
    const plain = inputs.ids instanceof Int32Array;
    const hostPos = plain ? Int32Array.from({ length: rows }, (_, r) => (inputs as { start: number }).start + (r % seq)) : undefined;
    if (plain) d.embedding(ws.x, w.embed, inputs.ids as Int32Array);
    else d.embeddingAt(ws.x, w.embed, inputs.ids as CudaInts);
    for (let l = 0; l < c.layers; l++) {
      d.rmsNorm(ws.xn, ws.x, w.norm, 1e-5);
      d.matmul(ws.q, ws.xn, w.q);
      d.matmul(ws.k, ws.xn, w.k);
      d.matmul(ws.v, ws.xn, w.v);
      const shape: AttentionShape = {
        batch: B, seqQ: seq, kvLen: 0, kvStride: c.maxLen, nHead: c.heads, nKvHead: c.kvHeads, headDim: c.headDim, scale: 1 / Math.sqrt(c.headDim),
      };
      if (plain) {
        const start = (inputs as { start: number }).start;
        d.rope(ws.q, hostPos!, this.cos, this.sin, c.heads, c.headDim, c.headDim);
        d.rope(ws.k, hostPos!, this.cos, this.sin, c.kvHeads, c.headDim, c.headDim);
        d.writeKv(this.cacheK[l], ws.k, B, seq, start, c.maxLen);
        d.writeKv(this.cacheV[l], ws.v, B, seq, start, c.maxLen);
        d.attention(ws.att, ws.q, this.cacheK[l], this.cacheV[l], { ...shape, kvLen: start + seq });
      } else {
        const at = inputs as { pos: CudaInts; kvLens: CudaInts; maxKvLen: number };
        d.ropeAt(ws.q, at.pos, rows, this.cos, this.sin, c.heads, c.headDim, c.headDim);
        d.ropeAt(ws.k, at.pos, rows, this.cos, this.sin, c.kvHeads, c.headDim, c.headDim);
        d.writeKvAt(this.cacheK[l], ws.k, B, seq, at.pos, c.maxLen);
        d.writeKvAt(this.cacheV[l], ws.v, B, seq, at.pos, c.maxLen);
        d.attentionAt(ws.att, ws.q, this.cacheK[l], this.cacheV[l], { ...shape, kvLen: at.maxKvLen }, at.kvLens);
      }
      d.matmul(ws.proj, ws.att, w.o);
      d.addInPlace(ws.x, ws.proj);
      d.rmsNorm(ws.xn, ws.x, w.norm, 1e-5);
      d.matmul(ws.g, ws.xn, w.gate);
      d.matmul(ws.u, ws.xn, w.up);
      d.siluMul(ws.act, ws.g, ws.u);
      d.matmul(ws.proj, ws.act, w.down);
      d.addInPlace(ws.x, ws.proj);
    }
    d.rmsNorm(ws.xn, ws.x, w.norm, 1e-5);
    d.matmul(ws.logits, ws.xn, w.head);
    return ws.logits;
  }
}

const report: Record<string, unknown> = {};

// 1. correctness: eager vs graph replay, identical logits.
for (const dtype of ['f32', 'bf16'] as ComputeDType[]) {
  const dev = new CudaDevice({ dtype });
  const cfg: Config = { hidden: 256, heads: 8, kvHeads: 2, headDim: 32, ffn: 688, vocab: 1000, layers: 4, maxLen: 64 };
  const B = 3, P = 10, N = 12;
  const m = new MiniLlama(dev, cfg, B, true);
  const prompt = Int32Array.from({ length: B * P }, (_, i) => (i * 37 + 11) % cfg.vocab);
  const stepIds = Array.from({ length: N }, (_, s) => Int32Array.from({ length: B }, (_, b) => (s * 101 + b * 13 + 5) % cfg.vocab));
  m.forward(P, { ids: prompt, start: 0 });
  const saved = [...m.cacheK, ...m.cacheV].map((t) => {
    const copy = dev.empty(t.shape);
    dev.copy(copy, t);
    return copy;
  });
  const eager: Float32Array[] = [];
  for (let s = 0; s < N; s++) eager.push(dev.download(m.forward(1, { ids: stepIds[s], start: P + s })));
  [...m.cacheK, ...m.cacheV].forEach((t, i) => dev.copy(t, saved[i]));

  const ids = dev.allocInts(B), pos = dev.allocInts(B), kvLens = dev.allocInts(B);
  m.workspace(B);
  dev.synchronize();
  let logits: Tensor | undefined;
  const graph = dev.captureGraph(() => {
    logits = m.forward(1, { ids, pos, kvLens, maxKvLen: cfg.maxLen });
  });
  let maxDiff = 0;
  for (let s = 0; s < N; s++) {
    dev.setInts(ids, stepIds[s]);
    dev.setInts(pos, new Int32Array(B).fill(P + s));
    dev.setInts(kvLens, new Int32Array(B).fill(P + s + 1));
    graph.launch();
    const got = dev.download(logits!);
    for (let i = 0; i < got.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i] - eager[s][i]));
  }
  graph.destroy();
  const ok = maxDiff === 0;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${dtype} graph replay of ${N} decode steps (batch ${B}, after a ${P}-token prefill) = eager: max |diff| ${maxDiff}`);
  report[`correctness_${dtype}`] = { steps: N, batch: B, maxAbsDiff: maxDiff, ok };
}

// 2. speed at Llama-3.2-1B shape.
{
  const dev = new CudaDevice({ dtype: 'bf16' });
  const cfg: Config = { hidden: 2048, heads: 32, kvHeads: 8, headDim: 64, ffn: 8192, vocab: 128256, layers: 16, maxLen: 1280 };
  const CTX = 1024, steps = 30;
  // Llama-3.2-1B ties lm_head to the embedding: a decode step reads it once.
  const weightBytes = 2 * (cfg.layers * (2 * 2048 * 2048 + 2 * 512 * 2048 + 3 * 8192 * 2048) + cfg.vocab * 2048);
  const rows: Record<string, unknown>[] = [];
  for (const B of [1, 8, 32]) {
    const m = new MiniLlama(dev, cfg, B, false);
    const noTarget = new Int32Array(B).fill(-1);
    // eager: plain ops, argmax read back every step
    m.forward(1, { ids: new Int32Array(B), start: CTX });
    dev.synchronize();
    let t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      const logits = m.forward(1, { ids: new Int32Array(B).fill(s), start: CTX + s });
      dev.scoreLogits(logits, noTarget);
    }
    const eagerMs = (performance.now() - t0) / steps;
    // graph: captured once, inputs set on the device, argmax read back every step
    const ids = dev.allocInts(B), pos = dev.allocInts(B), kvLens = dev.allocInts(B);
    let logits: Tensor | undefined;
    const graph = dev.captureGraph(() => {
      logits = m.forward(1, { ids, pos, kvLens, maxKvLen: cfg.maxLen });
    });
    const stepInputs = (s: number) => {
      dev.setInts(ids, new Int32Array(B).fill(s));
      dev.setInts(pos, new Int32Array(B).fill(CTX + s));
      dev.setInts(kvLens, new Int32Array(B).fill(CTX + s + 1));
    };
    stepInputs(0);
    graph.launch();
    dev.synchronize();
    t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      stepInputs(s);
      graph.launch();
      dev.scoreLogits(logits!, noTarget);
    }
    const graphMs = (performance.now() - t0) / steps;
    // GPU time of the replayed step alone
    const e0 = dev.recordEvent();
    for (let s = 0; s < steps; s++) {
      stepInputs(s);
      graph.launch();
    }
    const e1 = dev.recordEvent();
    const graphGpuMs = dev.elapsedMs(e0, e1) / steps;
    graph.destroy();
    const row = { batch: B, kv: CTX, eagerMsPerStep: eagerMs, graphMsPerStep: graphMs, graphGpuMsPerStep: graphGpuMs,
      graphTokensPerSecond: Math.round((B * 1000) / graphMs), floorMsAt3TBs: weightBytes / 3e9 };
    console.log(JSON.stringify(row));
    rows.push(row);
    dev.freeInts(ids);
    dev.freeInts(pos);
    dev.freeInts(kvLens);
    for (const t of [...Object.values(m.w), ...m.cacheK, ...m.cacheV, m.cos, m.sin]) dev.free(t);
    m.workspace(0);
  }
  report.speed = { shape: 'Llama-3.2-1B (zero weights, bf16)', weightBytes, rows };
}
if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'decode-graph.json'), JSON.stringify(report, null, 1));
