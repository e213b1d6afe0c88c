// Decode attention µs at Llama-3.2-1B shape (32 q heads, 8 KV heads, head dim 64, bf16): the fused
// split-KV kernel, batch 1/8/32 × kvLen 64/576/2048/8192, each configuration one warm-up call, then
// 200 calls captured in one CUDA graph, replayed once to warm up and once timed with CUDA events (what
// a replayed decode step sees, without JS launch gaps), and 200 eager calls timed the same way; then a
// sweep of the split count (decodeSplitsMax caps the planner). The split + combine pair it replaced
// measured 1.9-3.5x slower (bench/results/2026-12-01-h200-s2-call5/attn.log).
// Usage: node .gpu/attn-timings.mjs   (writes $OUT/attn-timings.json when $OUT is set)

import fs from 'node:fs';
import path from 'node:path';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { AttentionShape } from '../../src/tensor/device.js';

const dev = new CudaDevice({ dtype: 'bf16' });
const NH = 32, NKV = 8, HD = 64, REPS = 200;
const rows: { batch: number; kvLen: number; splits: number; graphUs: number; eagerUs: number }[] = [];

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296 - 0.5) * 2;
  }
  return a;
}

/** Mean µs per call of `fn`, over REPS calls inside one graph and REPS eager calls. */
function time(fn: () => void): { graphUs: number; eagerUs: number } {
  fn();
  dev.synchronize();
  const graph = dev.captureGraph(() => {
    for (let i = 0; i < REPS; i++) fn();
  });
  graph.launch();
  const g0 = dev.recordEvent();
  graph.launch();
  const g1 = dev.recordEvent();
  const graphUs = (dev.elapsedMs(g0, g1) * 1000) / REPS;
  graph.destroy();
  const e0 = dev.recordEvent();
  for (let i = 0; i < REPS; i++) fn();
  const e1 = dev.recordEvent();
  const eagerUs = (dev.elapsedMs(e0, e1) * 1000) / REPS;
  for (const e of [g0, g1, e0, e1]) dev.destroyEvent(e);
  return { graphUs, eagerUs };
}

/** One decode step's attention inputs: batch × 1 query rows over kvLen cached keys (random, seeded). */
function problem(batch: number, kvLen: number) {
  const shape: AttentionShape = { batch, seqQ: 1, kvLen, kvStride: kvLen, nHead: NH, nKvHead: NKV, headDim: HD, scale: 1 / Math.sqrt(HD) };
  return {
    shape,
    q: dev.upload(rand(batch * NH * HD, 7), [batch, NH * HD]),
    k: dev.upload(rand(batch * kvLen * NKV * HD, 11), [batch * kvLen, NKV * HD]),
    v: dev.upload(rand(batch * kvLen * NKV * HD, 13), [batch * kvLen, NKV * HD]),
    out: dev.empty([batch, NH * HD]),
  };
}

console.log(`${dev.info.name}: decode attention h${NH}/${NKV} d${HD} bf16, ${REPS} calls per timing`);
console.log('batch  kvLen  splits   graph µs   eager µs');
for (const batch of [1, 8, 32]) {
  for (const kvLen of [64, 576, 2048, 8192]) {
    const { shape, q, k, v, out } = problem(batch, kvLen);
    const r = time(() => dev.attention(out, q, k, v, shape));
    const splits = dev.decodeAttentionPlan(shape).splits;
    console.log(`${String(batch).padStart(5)}  ${String(kvLen).padStart(5)}  ${String(splits).padStart(6)}  ${r.graphUs.toFixed(2).padStart(9)}  ${r.eagerUs.toFixed(2).padStart(9)}`);
    rows.push({ batch, kvLen, splits, ...r });
    for (const t of [q, k, v, out]) dev.free(t);
  }
}

// Split-count sweep of the fused kernel (decodeSplitsMax caps the planner's choice): µs per call in a graph.
const sweep: { batch: number; kvLen: number; splitsMax: number; splits: number; graphUs: number }[] = [];
const defaultSplitsMax = dev.decodeSplitsMax;
console.log('\nfused kernel, split cap sweep (graph µs): batch kvLen | cap → splits: µs');
for (const [batch, kvLen] of [[1, 576], [1, 2048], [1, 8192], [8, 576], [8, 2048], [32, 576]] as const) {
  const { shape, q, k, v, out } = problem(batch, kvLen);
  const cells: string[] = [];
  for (const cap of [1, 2, 3, 4, 6, 8, 12, 16, 24, 33, 64]) {
    dev.decodeSplitsMax = cap;
    const splits = dev.decodeAttentionPlan(shape).splits;
    if (sweep.some((r) => r.batch === batch && r.kvLen === kvLen && r.splits === splits)) continue;
    const { graphUs } = time(() => dev.attention(out, q, k, v, shape));
    sweep.push({ batch, kvLen, splitsMax: cap, splits, graphUs });
    cells.push(`${splits}: ${graphUs.toFixed(2)}`);
  }
  dev.decodeSplitsMax = defaultSplitsMax;
  console.log(`${String(batch).padStart(5)} ${String(kvLen).padStart(5)} | ${cells.join('  ')}`);
  for (const t of [q, k, v, out]) dev.free(t);
}
if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'attn-splits.json'), JSON.stringify({ device: dev.info.name, sweep }, null, 1));
if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'attn-timings.json'), JSON.stringify({ device: dev.info.name, reps: REPS, rows }, null, 1));
