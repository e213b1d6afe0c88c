// Per-op GPU times at Llama-3.2-1B shapes (bf16), timed with CUDA events, and one synthetic decode
// step (16 layers of device ops, random weights) run eagerly and as a replayed CUDA graph: how far
// the kernels are from the bandwidth floor, and how much of a step is JS launch cost.
// Usage: node .gpu/op-timings.mjs   (writes $OUT/op-timings.json when $OUT is set)

import fs from 'node:fs';
import path from 'node:path';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { AttentionShape, Tensor } from '../../src/tensor/device.js';

const dev = new CudaDevice({ dtype: 'bf16' });
const H = 2048, FFN = 8192, NH = 32, NKV = 8, HD = 64, VOCAB = 128256, LAYERS = 16, CTX = 2048;
const rows: { op: string; shape: string; ms: number; gbps?: number; tflops?: number }[] = [];

function rand(n: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296 - 0.5) * scale;
  }
  return a;
}
const tensor = (shape: number[], scale = 0.02) => dev.upload(rand(shape.reduce((a, b) => a * b, 1), scale), shape);

/** Mean GPU ms of fn over reps (after one warm-up call). */
function time(op: string, shape: string, fn: () => void, bytes?: number, flops?: number, reps = 20): number {
  fn();
  const start = dev.recordEvent();
  for (let i = 0; i < reps; i++) fn();
  const end = dev.recordEvent();
  const ms = dev.elapsedMs(start, end) / reps;
  rows.push({ op, shape, ms, gbps: bytes ? bytes / ms / 1e6 : undefined, tflops: flops ? flops / ms / 1e9 : undefined });
  console.log(`${op.padEnd(22)} ${shape.padEnd(34)} ${(ms * 1000).toFixed(1).padStart(9)} us` +
    (bytes ? `  ${(bytes / ms / 1e6).toFixed(0).padStart(5)} GB/s` : '') + (flops ? `  ${(flops / ms / 1e9).toFixed(0).padStart(4)} TFLOP/s` : ''));
  return ms;
}

// Weights of one layer (shared by all 16 synthetic layers: timing only) and the lm_head.
const w = {
  q: tensor([NH * HD, H]), k: tensor([NKV * HD, H]), v: tensor([NKV * HD, H]), o: tensor([H, NH * HD]),
  gate: tensor([FFN, H]), up: tensor([FFN, H]), down: tensor([H, FFN]), norm: tensor([H], 1), head: tensor([VOCAB, H]),
};
const cosSin = { cos: tensor([CTX + 64, HD / 2], 1), sin: tensor([CTX + 64, HD / 2], 1) };

for (const M of [1, 32, 8192]) {
  const x = tensor([M, H], 1);
  const big = tensor([M, FFN], 1);
  const out = dev.empty([M, FFN]);
  const qOut = dev.empty([M, NH * HD]);
  const label = `M=${M}`;
  time('matmul q', `${label} ${NH * HD}x${H}`, () => dev.matmul(qOut, x, w.q), 2 * NH * HD * H, 2 * M * NH * HD * H);
  time('matmul gate', `${label} ${FFN}x${H}`, () => dev.matmul(out, x, w.gate), 2 * FFN * H, 2 * M * FFN * H);
  const down = dev.empty([M, H]);
  time('matmul down', `${label} ${H}x${FFN}`, () => dev.matmul(down, big, w.down), 2 * FFN * H, 2 * M * FFN * H);
  if (M <= 2048) {
    const logits = dev.empty([M, VOCAB]);
    time('matmul lm_head', `${label} ${VOCAB}x${H}`, () => dev.matmul(logits, x, w.head), 2 * VOCAB * H, 2 * M * VOCAB * H, 5);
    const targets = new Int32Array(M).fill(7);
    time('scoreLogits', `${label} V=${VOCAB}`, () => void dev.scoreLogits(logits, targets), 2 * M * VOCAB, undefined, 3);
    dev.free(logits);
  }
  time('rmsNorm', `${label} ${H}`, () => dev.rmsNorm(down, x, w.norm, 1e-5), 4 * M * H);
  time('siluMul', `${label} ${FFN}`, () => dev.siluMul(out, big, big), 6 * M * FFN);
  time('addInPlace', `${label} ${H}`, () => dev.addInPlace(down, x), 6 * M * H);
  const pos = new Int32Array(M).map((_, i) => i % CTX);
  time('rope q', `${label} ${NH}x${HD}`, () => dev.rope(qOut, pos, cosSin.cos, cosSin.sin, NH, HD, HD), 4 * M * NH * HD);
  for (const t of [x, big, out, down, qOut]) dev.free(t);
}

// Attention: decode over a 2048-token cache (batch 1 and 32) and prefill of 4 × 2048 tokens.
for (const [batch, seqQ] of [[1, 1], [32, 1], [4, CTX]] as const) {
  const shape: AttentionShape = { batch, seqQ, kvLen: CTX, kvStride: CTX, nHead: NH, nKvHead: NKV, headDim: HD, scale: 1 / Math.sqrt(HD) };
  const q = tensor([batch * seqQ, NH * HD], 1);
  const k = tensor([batch * CTX, NKV * HD], 1);
  const v = tensor([batch * CTX, NKV * HD], 1);
  const o = dev.empty([batch * seqQ, NH * HD]);
  const kvBytes = 2 * 2 * batch * CTX * NKV * HD;
  const flops = seqQ === 1 ? 4 * batch * NH * CTX * HD : 2 * batch * NH * seqQ * CTX * HD; // causal: half of 4·b·h·s²·d
  time(seqQ === 1 ? 'attention decode' : 'attention prefill', `b${batch} q${seqQ} kv${CTX} h${NH}/${NKV} d${HD}`, () => dev.attention(o, q, k, v, shape), kvBytes, flops, seqQ === 1 ? 20 : 3);
  for (const t of [q, k, v, o]) dev.free(t);
}

// One synthetic decode step (batch 1, kvLen = CTX): eager enqueue time vs GPU time vs graph replay.
{
  const B = 1;
  const cacheK = Array.from({ length: LAYERS }, () => tensor([B * (CTX + 64), NKV * HD], 1));
  const cacheV = Array.from({ length: LAYERS }, () => tensor([B * (CTX + 64), NKV * HD], 1));
  const hidden = tensor([B, H], 1), xn = dev.empty([B, H]), qb = dev.empty([B, NH * HD]), kb = dev.empty([B, NKV * HD]);
  const vb = dev.empty([B, NKV * HD]), att = dev.empty([B, NH * HD]), proj = dev.empty([B, H]);
  const g = dev.empty([B, FFN]), u = dev.empty([B, FFN]), act = dev.empty([B, FFN]), logits = dev.empty([B, VOCAB]);
  const embed = w.head;
  const ids = new Int32Array([42]);
  const pos = new Int32Array([CTX - 1]);
  const shape: AttentionShape = { batch: B, seqQ: 1, kvLen: CTX, kvStride: CTX + 64, nHead: NH, nKvHead: NKV, headDim: HD, scale: 1 / Math.sqrt(HD) };
  const step = () => {
    dev.embedding(hidden, embed, ids);
    for (let l = 0; l < LAYERS; l++) {
      dev.rmsNorm(xn, hidden, w.norm, 1e-5);
      dev.matmul(qb, xn, w.q);
      dev.matmul(kb, xn, w.k);
      dev.matmul(vb, xn, w.v);
      dev.rope(qb, pos, cosSin.cos, cosSin.sin, NH, HD, HD);
      dev.rope(kb, pos, cosSin.cos, cosSin.sin, NKV, HD, HD);
      dev.writeKv(cacheK[l], kb, B, 1, CTX - 1, CTX + 64);
      dev.writeKv(cacheV[l], vb, B, 1, CTX - 1, CTX + 64);
      dev.attention(att, qb, cacheK[l], cacheV[l], shape);
      dev.matmul(proj, att, w.o);
      dev.addInPlace(hidden, proj);
      dev.rmsNorm(xn, hidden, w.norm, 1e-5);
      dev.matmul(g, xn, w.gate);
      dev.matmul(u, xn, w.up);
      dev.siluMul(act, g, u);
      dev.matmul(proj, act, w.down);
      dev.addInPlace(hidden, proj);
    }
    dev.rmsNorm(xn, hidden, w.norm, 1e-5);
    dev.matmul(logits, xn, w.head);
  };
  const weightBytes = 2 * (LAYERS * (2 * NH * HD * H + 2 * NKV * HD * H + 3 * FFN * H) + VOCAB * H);
  step();
  dev.synchronize();
  const reps = 20;
  const t0 = performance.now();
  const s = dev.recordEvent();
  for (let i = 0; i < reps; i++) step();
  const enqueueMs = (performance.now() - t0) / reps;
  const e = dev.recordEvent();
  const eagerMs = dev.elapsedMs(s, e) / reps;
  const graph = dev.captureGraph(step);
  graph.launch();
  const s2 = dev.recordEvent();
  const t1 = performance.now();
  for (let i = 0; i < reps; i++) graph.launch();
  const launchMs = (performance.now() - t1) / reps;
  const e2 = dev.recordEvent();
  const graphMs = dev.elapsedMs(s2, e2) / reps;
  const floorMs = weightBytes / 3.0e9;
  const summary = { weightBytes, floorMsAt3TBs: floorMs, eagerGpuMs: eagerMs, eagerEnqueueMs: enqueueMs, graphGpuMs: graphMs, graphLaunchMs: launchMs };
  console.log(`decode step (synthetic Llama-3.2-1B, batch 1, kv ${CTX}): ${JSON.stringify(summary)}`);
  rows.push({ op: 'decode step eager', shape: 'b1', ms: eagerMs });
  rows.push({ op: 'decode step graph', shape: 'b1', ms: graphMs });
  graph.destroy();
}

if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'op-timings.json'), JSON.stringify({ device: dev.info.name, rows }, null, 1));
