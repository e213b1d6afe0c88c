// Every CpuDevice op against a naive float64 reference, on seeded random inputs of awkward
// shapes, with 1 thread and with 2 (shapes large enough that the 2-thread device splits them),
// on the JS kernels (simd: false) and on the WebAssembly SIMD ones.

import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OP_ADD } from '../src/tensor/cpu/kernels.js';
import { WorkerPool } from '../src/tensor/cpu/pool.js';
import { CpuDevice, CpuTensor, createCpuDevice } from '../src/tensor/cpu/index.js';
import type { AttentionShape, Tensor } from '../src/tensor/device.js';
import { seededRandom as rng } from '../src/random.js';

/** n values uniform in [-scale, scale). */
function randu(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

function randInts(n: number, max: number, seed: number): Int32Array {
  const r = rng(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * max);
  return out;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-5, atol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) maxRef = Math.max(maxRef, Math.abs(expected[i]));
  expect(maxRef).toBeGreaterThan(0);
  for (let i = 0; i < expected.length; i++) {
    const tol = atol * Math.max(1, maxRef) + rtol * Math.abs(expected[i]);
    if (!(Math.abs(actual[i] - expected[i]) <= tol)) {
      throw new Error(`element ${i}: got ${actual[i]}, expected ${expected[i]} (tol ${tol})`);
    }
  }
}

// --- float64 references ---------------------------------------------------------------------

function refMatmul(x: Float32Array, w: Float32Array, b: Float32Array | null, M: number, N: number, K: number): Float64Array {
  const out = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      out[m * N + n] = s;
    }
  }
  return out;
}

function refRmsNorm(x: Float32Array, w: Float32Array, C: number, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / C; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c] ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) out[r * C + c] = x[r * C + c] * inv * w[c];
  }
  return out;
}

function refLayerNorm(x: Float32Array, w: Float32Array, b: Float32Array, C: number, eps: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / C; r++) {
    let mean = 0;
    for (let c = 0; c < C; c++) mean += x[r * C + c] / C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[r * C + c] - mean) ** 2 / C;
    for (let c = 0; c < C; c++) out[r * C + c] = ((x[r * C + c] - mean) / Math.sqrt(v + eps)) * w[c] + b[c];
  }
  return out;
}

function refRope(x: Float32Array, pos: Int32Array, cos: Float32Array, sin: Float32Array, nH: number, hd: number, rd: number): Float64Array {
  const out = Float64Array.from(x);
  const half = rd / 2;
  for (let r = 0; r < pos.length; r++) {
    for (let h = 0; h < nH; h++) {
      const a = (r * nH + h) * hd;
      for (let i = 0; i < half; i++) {
        const c = cos[pos[r] * half + i], s = sin[pos[r] * half + i];
        out[a + i] = x[a + i] * c - x[a + i + half] * s;
        out[a + i + half] = x[a + i + half] * c + x[a + i] * s;
      }
    }
  }
  return out;
}

function refAttention(q: Float32Array, k: Float32Array, v: Float32Array, s: AttentionShape): Float64Array {
  const { batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim: hd, scale, window } = s;
  const out = new Float64Array(batch * seqQ * nHead * hd);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < nHead; h++) {
      const g = Math.floor(h / (nHead / nKvHead));
      for (let t = 0; t < seqQ; t++) {
        const p = kvLen - seqQ + t;
        const lo = window !== undefined ? Math.max(0, p - window + 1) : 0;
        const scores: number[] = [];
        for (let j = lo; j <= p; j++) {
          let dot = 0;
          for (let d = 0; d < hd; d++) dot += q[((b * seqQ + t) * nHead + h) * hd + d] * k[((b * kvStride + j) * nKvHead + g) * hd + d];
          scores.push(dot * scale);
        }
        const m = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, c) => a + c, 0);
        for (let d = 0; d < hd; d++) {
          let acc = 0;
          for (let j = lo; j <= p; j++) acc += (e[j - lo] / sum) * v[((b * kvStride + j) * nKvHead + g) * hd + d];
          out[((b * seqQ + t) * nHead + h) * hd + d] = acc;
        }
      }
    }
  }
  return out;
}

function refLogSoftmax(row: ArrayLike<number>): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) m = Math.max(m, row[i]);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i] - m);
  const lse = m + Math.log(s);
  return Float64Array.from(row, (x) => x - lse);
}

function refArgmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

// --- tests ----------------------------------------------------------------------------------

const devices: CpuDevice[] = [];
afterAll(() => devices.forEach((d) => d.close()));

describe.each([
  { threads: 1, simd: false }, { threads: 1, simd: true }, { threads: 2, simd: false }, { threads: 2, simd: true },
])('CpuDevice threads=$threads simd=$simd', ({ threads, simd }) => {
  const dev = createCpuDevice({ threads, simd });
  devices.push(dev);
  const up = (data: Float32Array, shape: number[]): Tensor => dev.upload(data, shape);
  // Records which ops the 2-thread device actually split across the pool.
  const splitOps = new Set<number>();
  beforeAll(() => {
    const run = WorkerPool.prototype.run;
    vi.spyOn(WorkerPool.prototype, 'run').mockImplementation(function (this: WorkerPool, ...args) {
      splitOps.add(args[0]);
      return run.apply(this, args);
    });
  });
  afterAll(() => vi.restoreAllMocks());

  it('reports its kind, dtype and threads', () => {
    expect(dev.kind).toBe('cpu');
    expect(dev.dtype).toBe('f32');
    expect(dev.threads).toBe(threads);
    expect(dev.simd).toBe(simd);
  });

  it('upload/download/view/rows share and copy storage as documented', () => {
    const data = randu(5 * 3, 1);
    const t = dev.upload(data, [5, 3]);
    data[0] = 99; // upload copied
    expect(dev.download(t)[0]).not.toBe(99);
    const v = dev.view(t, [15]);
    expect(v.shape).toEqual([15]);
    const r = dev.rows(t, 2, 2);
    expect(r.shape).toEqual([2, 3]);
    expectClose(dev.download(r), dev.download(t).subarray(6, 12), 0, 0);
    dev.addInPlace(r, dev.upload(new Float32Array(6).fill(1), [2, 3]));
    const after = dev.download(t);
    expect(after[6]).toBeCloseTo(data[6] + 1, 6);
    expect(after[5]).toBe(data[5]);
    const d = dev.download(r);
    d[0] = 1234; // download copied
    expect(dev.download(r)[0]).not.toBe(1234);
    expect(() => dev.rows(t, 4, 2)).toThrow(/rows/);
    expect(() => dev.view(t, [4, 4])).toThrow(/view/);
    expect(() => dev.upload(new Float32Array(3), [2, 2])).toThrow(/upload/);
    expect(dev.empty([2, 7]).shape).toEqual([2, 7]);
    dev.free(t);
    dev.synchronize();
  });

  it('embedding and addEmbedding gather rows', () => {
    const table = randu(37 * 13, 2);
    const ids = randInts(19, 37, 3);
    const out = dev.empty([19, 13]);
    dev.embedding(out, up(table, [37, 13]), ids);
    const ref = new Float64Array(19 * 13);
    for (let i = 0; i < 19; i++) for (let c = 0; c < 13; c++) ref[i * 13 + c] = table[ids[i] * 13 + c];
    expectClose(dev.download(out), ref, 0, 0);
    const pos = randu(23 * 13, 4);
    const posIds = Int32Array.from({ length: 19 }, (_, i) => i + 3);
    dev.addEmbedding(out, up(pos, [23, 13]), posIds);
    for (let i = 0; i < 19; i++) for (let c = 0; c < 13; c++) ref[i * 13 + c] += pos[(i + 3) * 13 + c];
    expectClose(dev.download(out), ref);
    expect(() => dev.embedding(out, up(table, [37, 13]), Int32Array.from({ length: 19 }, () => 37))).toThrow(/embedding/);
  });

  const matmulShapes: [number, number, number, boolean][] = [
    [1, 1, 1, false], [1, 7, 5, true], [3, 77, 301, true], [5, 6, 9, false], [67, 45, 131, true], [130, 172, 64, false],
    [2048 / 16, 64, 172, false], [9, 300, 2048, true],
  ];
  it.each(matmulShapes)('matmul M=%i N=%i K=%i bias=%s', (M, N, K, bias) => {
    const x = randu(M * K, M * 7 + 1);
    const w = randu(N * K, N * 13 + 2);
    const b = bias ? randu(N, 5) : null;
    const out = dev.empty([M, N]);
    dev.matmul(out, up(x, [M, K]), up(w, [N, K]), b ? up(b, [N]) : undefined);
    expectClose(dev.download(out), refMatmul(x, w, b, M, N, K));
  });

  it('matmul reads and writes row views at an offset', () => {
    const M = 21, N = 19, K = 33;
    const xAll = randu((M + 4) * K, 8);
    const w = randu(N * K, 9);
    const outAll = dev.empty([M + 3, N]);
    const before = randu((M + 3) * N, 10);
    (outAll as CpuTensor).data.set(before);
    const xv = dev.rows(up(xAll, [M + 4, K]), 4, M);
    const ov = dev.rows(outAll, 1, M);
    dev.matmul(ov, xv, up(w, [N, K]));
    const got = dev.download(outAll);
    expectClose(got.subarray(N, (M + 1) * N), refMatmul(xAll.subarray(4 * K), w, null, M, N, K));
    expect(got.subarray(0, N)).toEqual(before.subarray(0, N));
    expect(got.subarray((M + 1) * N)).toEqual(before.subarray((M + 1) * N));
  });

  it('matmul rejects mismatched shapes naming the op and shapes', () => {
    expect(() => dev.matmul(dev.empty([3, 4]), dev.empty([3, 5]), dev.empty([4, 6]))).toThrow(/matmul.*\[3,5\].*\[4,6\]/);
    expect(() => dev.matmul(dev.empty([3, 4]), dev.empty([3, 5]), dev.empty([4, 5]), dev.empty([3]))).toThrow(/matmul/);
  });

  it.each([[1, 1], [3, 7], [4100, 65]])('addInPlace n=%i×%i', (R, C) => {
    const x = randu(R * C, 11), y = randu(R * C, 12);
    const xt = up(x, [R, C]);
    dev.addInPlace(xt, up(y, [R, C]));
    expectClose(dev.download(xt), Float64Array.from(x, (v, i) => v + y[i]));
    expect(() => dev.addInPlace(xt, dev.empty([R, C + 1]))).toThrow(/addInPlace/);
  });

  it.each([[1, 1], [3, 7], [517, 64], [1400, 64], [9, 301]])('rmsNorm rows=%i C=%i (also in place)', (R, C) => {
    const x = randu(R * C, 13, 3), w = randu(C, 14);
    const out = dev.empty([R, C]);
    dev.rmsNorm(out, up(x, [R, C]), up(w, [C]), 1e-5);
    const ref = refRmsNorm(x, w, C, 1e-5);
    expectClose(dev.download(out), ref);
    const inPlace = up(x, [R, C]);
    dev.rmsNorm(inPlace, inPlace, up(w, [C]), 1e-5);
    expectClose(dev.download(inPlace), ref);
    expect(() => dev.rmsNorm(out, up(x, [R, C]), dev.empty([C + 1]), 1e-5)).toThrow(/rmsNorm/);
  });

  it.each([[1, 2], [5, 7], [400, 96]])('layerNorm rows=%i C=%i', (R, C) => {
    const x = randu(R * C, 15, 2), w = randu(C, 16), b = randu(C, 17);
    for (let i = 0; i < x.length; i++) x[i] += 0.7; // a non-zero mean
    const out = dev.empty([R, C]);
    dev.layerNorm(out, up(x, [R, C]), up(w, [C]), up(b, [C]), 1e-5);
    expectClose(dev.download(out), refLayerNorm(x, w, b, C, 1e-5));
    expect(() => dev.layerNorm(out, up(x, [R, C]), up(w, [C]), dev.empty([1]), 1e-5)).toThrow(/layerNorm/);
  });

  it.each([
    [1, 1, 2, 2], [5, 3, 8, 8], [7, 2, 10, 6], [33, 8, 16, 16],
  ])('rope rows=%i heads=%i headDim=%i rotaryDim=%i', (rows, nH, hd, rd) => {
    const maxPos = 50;
    const x = randu(rows * nH * hd, 18);
    const pos = randInts(rows, maxPos, 19);
    const angles = Float64Array.from({ length: maxPos * (rd / 2) }, (_, i) => Math.floor(i / (rd / 2)) * 10000 ** (-(i % (rd / 2)) / (rd / 2)));
    const cos = Float32Array.from(angles, Math.cos), sin = Float32Array.from(angles, Math.sin);
    const xt = up(x, [rows, nH, hd]);
    dev.rope(xt, pos, up(cos, [maxPos, rd / 2]), up(sin, [maxPos, rd / 2]), nH, hd, rd);
    expectClose(dev.download(xt), refRope(x, pos, cos, sin, nH, hd, rd));
    expect(() => dev.rope(xt, pos, up(cos, [maxPos, rd / 2]), up(sin, [maxPos, rd / 2]), nH, hd, rd + 2)).toThrow(/rope/);
    expect(() => dev.rope(xt, pos.map(() => maxPos), up(cos, [maxPos, rd / 2]), up(sin, [maxPos, rd / 2]), nH, hd, rd)).toThrow(/rope/);
  });

  const attnCases: [string, AttentionShape][] = [
    ['single token', { batch: 1, seqQ: 1, kvLen: 1, kvStride: 1, nHead: 1, nKvHead: 1, headDim: 3, scale: 0.5 }],
    ['prefill MHA odd', { batch: 2, seqQ: 13, kvLen: 13, kvStride: 17, nHead: 3, nKvHead: 3, headDim: 5, scale: 1 / Math.sqrt(5) }],
    ['GQA 2 cache offset', { batch: 3, seqQ: 6, kvLen: 11, kvStride: 14, nHead: 4, nKvHead: 2, headDim: 8, scale: 0.35 }],
    ['GQA 4 decode', { batch: 2, seqQ: 1, kvLen: 29, kvStride: 32, nHead: 8, nKvHead: 2, headDim: 7, scale: 0.4 }],
    ['sliding window', { batch: 2, seqQ: 23, kvLen: 30, kvStride: 30, nHead: 4, nKvHead: 2, headDim: 6, scale: 0.4, window: 5 }],
    ['window 1', { batch: 1, seqQ: 9, kvLen: 9, kvStride: 9, nHead: 2, nKvHead: 1, headDim: 4, scale: 0.5, window: 1 }],
    ['stories-like window', { batch: 2, seqQ: 70, kvLen: 70, kvStride: 70, nHead: 8, nKvHead: 4, headDim: 8, scale: 1 / Math.sqrt(8) }],
    ['big parallel odd headDim', { batch: 2, seqQ: 40, kvLen: 45, kvStride: 45, nHead: 6, nKvHead: 2, headDim: 7, scale: 0.3 }],
    ['headDim 4 GQA 4 windowed decode', { batch: 3, seqQ: 2, kvLen: 40, kvStride: 41, nHead: 8, nKvHead: 2, headDim: 4, scale: 0.5, window: 7 }],
    ['headDim 64', { batch: 1, seqQ: 9, kvLen: 21, kvStride: 21, nHead: 4, nKvHead: 1, headDim: 64, scale: 0.125 }],
    ['big parallel', { batch: 2, seqQ: 37, kvLen: 50, kvStride: 53, nHead: 8, nKvHead: 4, headDim: 12, scale: 0.3, window: 40 }],
  ];
  it.each(attnCases)('attention %s', (_name, s) => {
    const q = randu(s.batch * s.seqQ * s.nHead * s.headDim, 20, 2);
    const k = randu(s.batch * s.kvStride * s.nKvHead * s.headDim, 21, 2);
    const v = randu(s.batch * s.kvStride * s.nKvHead * s.headDim, 22);
    const out = dev.empty([s.batch * s.seqQ, s.nHead * s.headDim]);
    dev.attention(out, up(q, [s.batch * s.seqQ, s.nHead * s.headDim]), up(k, [s.batch * s.kvStride, s.nKvHead * s.headDim]),
      up(v, [s.batch * s.kvStride, s.nKvHead * s.headDim]), s);
    expectClose(dev.download(out), refAttention(q, k, v, s));
  });

  it('attention is stable for large scores and rejects bad geometry', () => {
    const s: AttentionShape = { batch: 1, seqQ: 5, kvLen: 5, kvStride: 5, nHead: 2, nKvHead: 1, headDim: 4, scale: 1 };
    const q = randu(5 * 8, 23, 60), k = randu(5 * 4, 24, 60), v = randu(5 * 4, 25);
    const out = dev.empty([5, 8]);
    dev.attention(out, up(q, [5, 8]), up(k, [5, 4]), up(v, [5, 4]), s);
    const got = dev.download(out);
    expect(got.every(Number.isFinite)).toBe(true);
    expectClose(got, refAttention(q, k, v, s));
    expect(() => dev.attention(out, up(q, [5, 8]), up(k, [5, 4]), up(v, [5, 4]), { ...s, nKvHead: 3 })).toThrow(/attention/);
    expect(() => dev.attention(out, up(q, [5, 8]), up(k, [5, 4]), up(v, [5, 4]), { ...s, kvLen: 6 })).toThrow(/attention/);
  });

  it('writeKv appends rows per sequence at start', () => {
    const batch = 3, seq = 4, start = 2, kvStride = 9, D = 5;
    const cacheInit = randu(batch * kvStride * D, 26);
    const src = randu(batch * seq * D, 27);
    const cache = up(cacheInit, [batch * kvStride, D]);
    dev.writeKv(cache, up(src, [batch * seq, D]), batch, seq, start, kvStride);
    const ref = Float64Array.from(cacheInit);
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < seq; t++) for (let d = 0; d < D; d++) ref[((b * kvStride) + start + t) * D + d] = src[(b * seq + t) * D + d];
    }
    expectClose(dev.download(cache), ref, 0, 0);
    expect(() => dev.writeKv(cache, up(src, [batch * seq, D]), batch, seq, 6, kvStride)).toThrow(/writeKv/);
  });

  it.each([[1], [11], [40000]])('siluMul and geluTanh n=%i', (n) => {
    const g = randu(n, 28, 6), u = randu(n, 29);
    const out = dev.empty([n]);
    dev.siluMul(out, up(g, [n]), up(u, [n]));
    expectClose(dev.download(out), Float64Array.from(g, (x, i) => (x / (1 + Math.exp(-x))) * u[i]));
    dev.geluTanh(out, up(g, [n]));
    const c = Math.sqrt(2 / Math.PI);
    expectClose(dev.download(out), Float64Array.from(g, (x) => 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x ** 3)))));
    expect(() => dev.siluMul(out, up(g, [n]), dev.empty([n + 1]))).toThrow(/siluMul/);
  });

  it.each([[1, 3], [9, 17], [300, 512]])('scoreLogits rows=%i V=%i', (rows, V) => {
    const logits = randu(rows * V, 30, 8), base = randu(rows * V, 31, 8);
    for (let i = 0; i < rows * V; i += 3) base[i] = logits[i] + 0.01; // correlated, like a quantized model
    const targets = randInts(rows, V, 32);
    if (rows > 1) targets[1] = -1;
    if (rows > 2) {
      // A tie for the maximum: argmax is the lowest index.
      logits[2 * V + V - 1] = 100;
      logits[2 * V + 1] = 100;
    }
    const lt = up(logits, [rows, V]), bt = up(base, [rows, V]);
    const got = dev.scoreLogits(lt, targets, bt);
    const plain = dev.scoreLogits(lt, targets);
    expect(plain.kld).toBeUndefined();
    for (let r = 0; r < rows; r++) {
      const row = logits.subarray(r * V, (r + 1) * V), brow = base.subarray(r * V, (r + 1) * V);
      const lp = refLogSoftmax(row), lpb = refLogSoftmax(brow);
      expect(got.argmax[r]).toBe(refArgmax(row));
      if (targets[r] < 0) {
        expect(got.nll[r]).toBe(0);
        expect(got.kld![r]).toBe(0);
        continue;
      }
      let kl = 0;
      for (let i = 0; i < V; i++) kl += Math.exp(lpb[i]) * (lpb[i] - lp[i]);
      const nllTol = 1e-9;
      expect(Math.abs(got.nll[r] - -lp[targets[r]])).toBeLessThan(nllTol * (1 + Math.abs(lp[targets[r]])));
      expect(Math.abs(plain.nll[r] - got.nll[r])).toBeLessThan(nllTol);
      expect(Math.abs(got.kld![r] - kl)).toBeLessThan(1e-9 * (1 + kl));
      expect(got.top1![r]).toBe(refArgmax(row) === refArgmax(brow) ? 1 : 0);
    }
    if (rows > 2) expect(got.argmax[2]).toBe(1);
    expect(() => dev.scoreLogits(lt, targets.map(() => V))).toThrow(/scoreLogits/);
  });

  it('scoreLogits measures a small KL between close logits accurately', () => {
    const rows = 40, V = 1001;
    const logits = randu(rows * V, 33, 8);
    const noise = randu(rows * V, 34, 0.01);
    const base = logits.map((x, i) => x + noise[i]);
    const targets = randInts(rows, V, 35);
    const got = dev.scoreLogits(up(logits, [rows, V]), targets, up(base, [rows, V]));
    for (let r = 0; r < rows; r++) {
      const lp = refLogSoftmax(logits.subarray(r * V, (r + 1) * V)), lpb = refLogSoftmax(base.subarray(r * V, (r + 1) * V));
      let kl = 0;
      for (let i = 0; i < V; i++) kl += Math.exp(lpb[i]) * (lpb[i] - lp[i]);
      expect(kl).toBeGreaterThan(1e-6);
      expect(kl).toBeLessThan(1e-4);
      expect(Math.abs(got.kld![r] - kl) / kl).toBeLessThan(1e-6);
    }
  });

  it('split every parallel op across threads (threads=2 only)', () => {
    const ops = simd ? [1, 2, 4, 6, 9, 10, 11, 12, 13, 14] : [1, 2, 3, 4, 5, 6, 7, 8];
    expect([...splitOps].sort((a, b) => a - b)).toEqual(threads === 1 ? [] : ops);
  });
});

describe('CpuDevice', () => {
  it('rejects tensors of another device', () => {
    const a = createCpuDevice({ threads: 1 });
    const b = createCpuDevice({ threads: 1 });
    expect(() => a.addInPlace(b.empty([2]), a.empty([2]))).toThrow(/another CpuDevice/);
    expect(() => createCpuDevice({ threads: 0 })).toThrow(/threads/);
  });

  it('a failing job throws on the calling thread and leaves the pool usable', () => {
    const pool = new WorkerPool(2, null, null);
    try {
      const chunks = new Int32Array(8 * 4);
      expect(() => pool.run(999, [], null, null, [], chunks, 0)).toThrow(/unknown op 999/);
      expect(() => pool.run(999, [], null, null, [], chunks, 0)).toThrow(/unknown op 999/);
      const x = new Float32Array(new SharedArrayBuffer(64 * 4)).fill(1);
      const y = new Float32Array(new SharedArrayBuffer(64 * 4)).fill(2);
      for (let i = 0; i < 8; i++) chunks.set([i * 8, i * 8 + 8, 0, 0], i * 4);
      pool.run(OP_ADD, [x, y], null, null, [0, 0], chunks, 0);
      expect(Array.from(x)).toEqual(new Array(64).fill(3));
    } finally {
      pool.close();
    }
  });

  it('gives the same results with 1 and 2 threads on a stories260K-sized step', () => {
    const results = [1, 2].map((threads) => {
      const d = createCpuDevice({ threads, simd: true });
      const x = d.upload(randu(512 * 64, 40), [512, 64]);
      const w = d.upload(randu(172 * 64, 41), [172, 64]);
      const h = d.empty([512, 172]);
      d.matmul(h, x, w);
      d.siluMul(h, h, h);
      const r = d.download(h);
      d.close();
      return r;
    });
    expect(results[1]).toEqual(results[0]);
  });
});
