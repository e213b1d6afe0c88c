// Micro-benchmark of the CPU backend's hot ops on stories260K shapes, 1 thread vs the pool,
// plus a synthetic stories260K forward (the decoder's op sequence) in tokens/s.
// Run:
//   npx tsc -p tsconfig.json --noEmit false --outDir /tmp/cpu-bench
//   node /tmp/cpu-bench/bench/cpu-ops.js [matmul|attention|elementwise|forward]
// (env THREADS=1 or 2 runs one thread count; CPU_TIME=1 times by process CPU time).

import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';
import type { AttentionShape, Tensor } from '../src/tensor/device.js';

function rand(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 0.5;
  }
  return a;
}

/**
 * Seconds per call after a warm-up: the best of 5 rounds, by wall clock, or by this process's
 * CPU time when CPU_TIME=1 (steadier for threads=1 while other processes share the cores).
 */
function time(fn: () => void, minSeconds = 0.3): number {
  const byCpu = process.env.CPU_TIME === '1';
  const now = () => {
    if (!byCpu) return performance.now();
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  for (let i = 0; i < 3; i++) fn();
  let best = Infinity;
  for (let round = 0; round < 5; round++) {
    let reps = 0;
    const w0 = performance.now();
    const t0 = now();
    while (performance.now() - w0 < (minSeconds * 1000) / 5) {
      fn();
      reps++;
    }
    best = Math.min(best, (now() - t0) / 1000 / reps);
  }
  return best;
}

function benchMatmul(dev: CpuDevice, M: number, N: number, K: number): string {
  const x = dev.upload(rand(M * K, 1), [M, K]);
  const w = dev.upload(rand(N * K, 2), [N, K]);
  const out = dev.empty([M, N]);
  const s = time(() => dev.matmul(out, x, w));
  return `matmul [${M},${K}]x[${N},${K}]ᵀ: ${((2 * M * N * K) / s / 1e9).toFixed(2)} GFLOP/s (${(s * 1e3).toFixed(3)} ms)`;
}

function benchAttention(dev: CpuDevice, s: AttentionShape): string {
  const q = dev.upload(rand(s.batch * s.seqQ * s.nHead * s.headDim, 3), [s.batch * s.seqQ, s.nHead * s.headDim]);
  const k = dev.upload(rand(s.batch * s.kvStride * s.nKvHead * s.headDim, 4), [s.batch * s.kvStride, s.nKvHead * s.headDim]);
  const v = dev.upload(rand(s.batch * s.kvStride * s.nKvHead * s.headDim, 5), [s.batch * s.kvStride, s.nKvHead * s.headDim]);
  const out = dev.empty([s.batch * s.seqQ, s.nHead * s.headDim]);
  const sec = time(() => dev.attention(out, q, k, v, s));
  // QKᵀ and PV over the causal triangle: 2 · 2 · hd flops per (query, key) pair.
  const pairs = s.batch * s.nHead * ((s.seqQ * (s.seqQ + 1)) / 2 + s.seqQ * (s.kvLen - s.seqQ));
  return `attention b=${s.batch} T=${s.seqQ} heads=${s.nHead}/${s.nKvHead}x${s.headDim}: ` +
    `${((4 * s.headDim * pairs) / sec / 1e9).toFixed(2)} GFLOP/s (${(sec * 1e3).toFixed(3)} ms)`;
}

function benchElementwise(dev: CpuDevice, rows: number): string[] {
  const C = 64, F = 172, V = 512;
  const x = dev.upload(rand(rows * C, 6), [rows, C]);
  const w = dev.upload(rand(C, 7), [C]);
  const out = dev.empty([rows, C]);
  const g = dev.upload(rand(rows * F, 8), [rows, F]);
  const u = dev.upload(rand(rows * F, 9), [rows, F]);
  const h = dev.empty([rows, F]);
  const logits = dev.upload(rand(rows * V, 10), [rows, V]);
  const base = dev.upload(rand(rows * V, 11), [rows, V]);
  const targets = Int32Array.from({ length: rows }, (_, i) => i % V);
  const ms = (f: () => void) => (time(f) * 1e3).toFixed(3);
  return [
    `rmsNorm [${rows},${C}]: ${ms(() => dev.rmsNorm(out, x, w, 1e-5))} ms`,
    `addInPlace [${rows},${C}]: ${ms(() => dev.addInPlace(out, x))} ms`,
    `siluMul [${rows},${F}]: ${ms(() => dev.siluMul(h, g, u))} ms`,
    `scoreLogits [${rows},${V}]: ${ms(() => dev.scoreLogits(logits, targets))} ms, with baseline ` +
      `${ms(() => dev.scoreLogits(logits, targets, base))} ms`,
  ];
}

/** The stories260K decoder's op sequence over `batch` windows of T tokens (no weights loaded). */
function storiesForward(dev: CpuDevice, batch: number, T: number): string {
  const C = 64, F = 172, V = 512, L = 5, nH = 8, nKv = 4, hd = 8, rows = batch * T;
  const up = (n: number, shape: number[], seed: number): Tensor => dev.upload(rand(n, seed), shape);
  const emb = up(V * C, [V, C], 20);
  const layers = Array.from({ length: L }, (_, l) => ({
    norm1: up(C, [C], 30 + l), wq: up(C * C, [C, C], 40 + l), wk: up(C * C / 2, [C / 2, C], 50 + l),
    wv: up(C * C / 2, [C / 2, C], 60 + l), wo: up(C * C, [C, C], 70 + l), norm2: up(C, [C], 80 + l),
    wg: up(F * C, [F, C], 90 + l), wu: up(F * C, [F, C], 100 + l), wd: up(C * F, [C, F], 110 + l),
  }));
  const normF = up(C, [C], 120);
  const cos = up(T * hd / 2, [T, hd / 2], 121);
  const sin = up(T * hd / 2, [T, hd / 2], 122);
  const ids = Int32Array.from({ length: rows }, (_, i) => (i * 7) % V);
  const positions = Int32Array.from({ length: rows }, (_, i) => i % T);
  const x = dev.empty([rows, C]), xn = dev.empty([rows, C]), q = dev.empty([rows, C]), att = dev.empty([rows, C]);
  const k = dev.empty([rows, C / 2]), v = dev.empty([rows, C / 2]), o = dev.empty([rows, C]);
  const g = dev.empty([rows, F]), u = dev.empty([rows, F]), logits = dev.empty([rows, V]);
  const shape: AttentionShape = { batch, seqQ: T, kvLen: T, kvStride: T, nHead: nH, nKvHead: nKv, headDim: hd, scale: 1 / Math.sqrt(hd) };
  const forward = () => {
    dev.embedding(x, emb, ids);
    for (const ly of layers) {
      dev.rmsNorm(xn, x, ly.norm1, 1e-5);
      dev.matmul(q, xn, ly.wq);
      dev.matmul(k, xn, ly.wk);
      dev.matmul(v, xn, ly.wv);
      dev.rope(q, positions, cos, sin, nH, hd, hd);
      dev.rope(k, positions, cos, sin, nKv, hd, hd);
      dev.attention(att, q, k, v, shape);
      dev.matmul(o, att, ly.wo);
      dev.addInPlace(x, o);
      dev.rmsNorm(xn, x, ly.norm2, 1e-5);
      dev.matmul(g, xn, ly.wg);
      dev.matmul(u, xn, ly.wu);
      dev.siluMul(g, g, u);
      dev.matmul(o, g, ly.wd);
      dev.addInPlace(x, o);
    }
    dev.rmsNorm(xn, x, normF, 1e-5);
    dev.matmul(logits, xn, emb);
    dev.scoreLogits(logits, ids);
  };
  const s = time(forward, 2);
  return `stories260K forward ${batch}x${T}: ${(rows / s).toFixed(0)} tokens/s (${(s * 1e3).toFixed(1)} ms)`;
}

function main(): void {
  const which = process.argv[2] ?? 'all';
  const threadCounts = process.env.THREADS ? [Number(process.env.THREADS)] : [1, 2];
  for (const threads of threadCounts) {
    const dev = createCpuDevice({ threads });
    console.log(`--- threads=${threads}`);
    if (which === 'all' || which === 'matmul') {
      for (const [M, N, K] of [[2048, 172, 64], [2048, 64, 172], [2048, 512, 64], [2048, 64, 64], [4, 172, 64], [64, 2048, 2048]]) {
        console.log(benchMatmul(dev, M, N, K));
      }
    }
    if (which === 'all' || which === 'attention') {
      console.log(benchAttention(dev, { batch: 4, seqQ: 512, kvLen: 512, kvStride: 512, nHead: 8, nKvHead: 4, headDim: 8, scale: 0.35 }));
      console.log(benchAttention(dev, { batch: 1, seqQ: 512, kvLen: 512, kvStride: 512, nHead: 16, nKvHead: 4, headDim: 64, scale: 0.125 }));
    }
    if (which === 'all' || which === 'elementwise') for (const line of benchElementwise(dev, 2048)) console.log(line);
    if (which === 'all' || which === 'forward') console.log(storiesForward(dev, 4, 512));
    dev.close();
  }
}

main();
