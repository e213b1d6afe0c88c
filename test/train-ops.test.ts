// The CPU training ops (CpuDevice.training) against central finite differences of float64
// reference forwards written here, on seeded random inputs of awkward shapes; AdamW against a
// scalar reference; the GEMM backward bit-identical with 1 and 2 threads.

import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { seededRandom } from '../src/random.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';
import type { AttentionShape, DistillLossKind, TeacherTopK, Tensor, TrainingOps } from '../src/tensor/device.js';
import { refAttention, refLayerNorm, refLinear, refRmsNorm, refRope } from './helpers/train-reference.js';

let dev: CpuDevice;
let dev2: CpuDevice;
let devNoSimd: CpuDevice;
let ops: TrainingOps;
beforeAll(() => {
  dev = createCpuDevice({ threads: 1 });
  dev2 = createCpuDevice({ threads: 2 });
  devNoSimd = createCpuDevice({ threads: 1, simd: false });
  ops = dev.training!;
});
afterAll(() => {
  dev?.close();
  dev2?.close();
  devNoSimd?.close();
});

function randu(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const r = seededRandom(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = offset + (r() * 2 - 1) * scale;
  return out;
}

function up(data: Float32Array, shape: number[]): Tensor {
  return dev.upload(data, shape);
}

function down(t: Tensor): Float32Array {
  return dev.download(t);
}

/** max |a − b| ≤ rtol · max |b| (and b is not all zeros). */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, what = ''): void {
  expect(actual.length).toBe(expected.length);
  let maxRef = 0, maxDiff = 0, at = -1;
  for (let i = 0; i < expected.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(expected[i]));
    const d = Math.abs(actual[i] - expected[i]);
    if (!(d <= maxDiff)) {
      maxDiff = d;
      at = i;
    }
  }
  expect(maxRef, `${what}: reference is all zeros`).toBeGreaterThan(0);
  if (!(maxDiff <= rtol * maxRef)) {
    throw new Error(`${what}: max diff ${maxDiff} at ${at} (got ${actual[at]}, expected ${expected[at]}), max |ref| ${maxRef}, rtol ${rtol}`);
  }
}

/**
 * ∂/∂inputs[which] of Σ dy·f(inputs) by central differences in float64 (f reads the inputs as
 * doubles; they start as the float32 test values).
 */
function numericGrad(f: (xs: Float64Array[]) => Float64Array, inputs: Float32Array[], which: number, dy: ArrayLike<number>, h = 1e-5): Float64Array {
  const xs = inputs.map((x) => Float64Array.from(x));
  const x = xs[which];
  const g = new Float64Array(x.length);
  const dot = (y: Float64Array) => {
    let s = 0;
    for (let i = 0; i < y.length; i++) s += dy[i] * y[i];
    return s;
  };
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i];
    x[i] = x0 + h;
    const lp = dot(f(xs));
    x[i] = x0 - h;
    const lm = dot(f(xs));
    x[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

// --- linear ----------------------------------------------------------------------------------

describe('linear backward', () => {
  test('matmulGradInput / matmulGradWeight / biasGrad against finite differences (accumulating)', () => {
    const M = 7, N = 5, K = 9;
    const x = randu(M * K, 1), w = randu(N * K, 2), b = randu(N, 3), dy = randu(M * N, 4);
    const f = (xs: Float64Array[]) => refLinear(xs[0], xs[1], xs[2], M, N, K);
    const gx = numericGrad(f, [x, w, b], 0, dy);
    const gw = numericGrad(f, [x, w, b], 1, dy);
    const gb = numericGrad(f, [x, w, b], 2, dy);
    const dyT = up(dy, [M, N]);
    const dx = up(randu(M * K, 5), [M, K]);
    ops.matmulGradInput(dx, dyT, up(w, [N, K]), false);
    expectClose(down(dx), gx, 1e-6, 'dx');
    const before = randu(M * K, 6);
    const dxAcc = up(before, [M, K]);
    ops.matmulGradInput(dxAcc, dyT, up(w, [N, K]), true);
    expectClose(down(dxAcc), gx.map((g, i) => g + before[i]), 1e-6, 'dx accumulated');
    const dw0 = randu(N * K, 7), db0 = randu(N, 8);
    const dw = up(dw0, [N, K]), db = up(db0, [N]);
    ops.matmulGradWeight(dw, dyT, up(x, [M, K]));
    ops.biasGrad(db, dyT);
    expectClose(down(dw), gw.map((g, i) => g + dw0[i]), 1e-6, 'dw');
    expectClose(down(db), gb.map((g, i) => g + db0[i]), 1e-6, 'db');
  });

  test('large GEMM backward: bit-identical on 1 and 2 threads, and right', () => {
    const M = 301, N = 67, K = 45;
    const x = randu(M * K, 11), w = randu(N * K, 12), dy = randu(M * N, 13);
    const results = [dev, dev2].map((d) => {
      const t = d.training!;
      const dx = d.empty([M, K]);
      const dw = t.emptyF32([N, K]);
      t.matmulGradInput(dx, d.upload(dy, [M, N]), d.upload(w, [N, K]), false);
      t.matmulGradWeight(dw, d.upload(dy, [M, N]), d.upload(x, [M, K]));
      t.matmulGradWeight(dw, d.upload(dy, [M, N]), d.upload(x, [M, K]));
      return { dx: d.download(dx), dw: d.download(dw) };
    });
    expect(Buffer.from(results[1].dx.buffer).equals(Buffer.from(results[0].dx.buffer))).toBe(true);
    expect(Buffer.from(results[1].dw.buffer).equals(Buffer.from(results[0].dw.buffer))).toBe(true);
    const refDx = new Float64Array(M * K), refDw = new Float64Array(N * K);
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) {
      refDx[m * K + k] += dy[m * N + n] * w[n * K + k];
      refDw[n * K + k] += 2 * dy[m * N + n] * x[m * K + k];
    }
    expectClose(results[0].dx, refDx, 1e-5, 'dx');
    expectClose(results[0].dw, refDw, 1e-5, 'dw');
  });
});

// --- norms, rope, activations, embedding ------------------------------------------------------

describe('norm backward', () => {
  test.each([false, true])('rmsNormBackward (accumulate %s)', (accumulate) => {
    const rows = 5, C = 13, eps = 1e-5;
    const x = randu(rows * C, 21), w = randu(C, 22, 0.5, 1), dy = randu(rows * C, 23);
    const f = (xs: Float64Array[]) => refRmsNorm(xs[0], xs[1], C, eps);
    const gx = numericGrad(f, [x, w], 0, dy);
    const gw = numericGrad(f, [x, w], 1, dy);
    const dx0 = randu(rows * C, 24), dw0 = randu(C, 25);
    const dx = up(dx0, [rows, C]), dw = up(dw0, [C]);
    ops.rmsNormBackward(dx, dw, up(dy, [rows, C]), up(x, [rows, C]), up(w, [C]), eps, accumulate);
    expectClose(down(dx), gx.map((g, i) => g + (accumulate ? dx0[i] : 0)), 1e-5, 'dx');
    expectClose(down(dw), gw.map((g, i) => g + dw0[i]), 1e-5, 'dw');
  });

  test.each([false, true])('layerNormBackward (accumulate %s)', (accumulate) => {
    const rows = 6, C = 11, eps = 1e-5;
    const x = randu(rows * C, 31, 2, 0.3), w = randu(C, 32, 0.5, 1), b = randu(C, 33), dy = randu(rows * C, 34);
    const f = (xs: Float64Array[]) => refLayerNorm(xs[0], xs[1], xs[2], C, eps);
    const [gx, gw, gb] = [0, 1, 2].map((i) => numericGrad(f, [x, w, b], i, dy));
    const dx0 = randu(rows * C, 35), dw0 = randu(C, 36), db0 = randu(C, 37);
    const dx = up(dx0, [rows, C]), dw = up(dw0, [C]), db = up(db0, [C]);
    ops.layerNormBackward(dx, dw, db, up(dy, [rows, C]), up(x, [rows, C]), up(w, [C]), up(b, [C]), eps, accumulate);
    expectClose(down(dx), gx.map((g, i) => g + (accumulate ? dx0[i] : 0)), 1e-5, 'dx');
    expectClose(down(dw), gw.map((g, i) => g + dw0[i]), 1e-5, 'dw');
    expectClose(down(db), gb.map((g, i) => g + db0[i]), 1e-5, 'db');
  });
});

test('ropeBackward (rotaryDim < headDim) is the transpose of rope', () => {
  const rows = 6, nHeads = 3, hd = 10, rot = 6, half = 3, maxPos = 17;
  const angles = randu(maxPos * half, 41, 3);
  const cos = angles.map(Math.cos), sin = angles.map(Math.sin);
  const pos = Int32Array.from([0, 16, 3, 3, 9, 11]);
  const x = randu(rows * nHeads * hd, 42), dy = randu(rows * nHeads * hd, 43);
  const g = numericGrad((xs) => refRope(xs[0], pos, cos, sin, nHeads, hd, rot), [x], 0, dy);
  const dx = up(dy, [rows, nHeads * hd]);
  ops.ropeBackward(dx, pos, up(cos, [maxPos, half]), up(sin, [maxPos, half]), nHeads, hd, rot);
  expectClose(down(dx), g, 1e-6, 'dx');
});

test.each([true, false])('siluMulBackward (simd %s) and geluTanhBackward', (simd) => {
  const d = simd ? dev : devNoSimd;
  const n = 37;
  const gate = randu(n, 51, 4), upv = randu(n, 52, 2), dAct = randu(n, 53);
  const silu = (xs: Float64Array[]) => xs[0].map((gv, i) => (gv / (1 + Math.exp(-gv))) * xs[1][i]);
  const dGate = d.empty([n]), dUp = d.empty([n]);
  d.training!.siluMulBackward(dGate, dUp, d.upload(dAct, [n]), d.upload(gate, [n]), d.upload(upv, [n]));
  expectClose(d.download(dGate), numericGrad(silu, [gate, upv], 0, dAct), 1e-6, 'dGate');
  expectClose(d.download(dUp), numericGrad(silu, [gate, upv], 1, dAct), 1e-6, 'dUp');
  const c = Math.sqrt(2 / Math.PI);
  const gelu = (xs: Float64Array[]) => xs[0].map((x) => 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x ** 3))));
  const dx = dev.empty([n]);
  ops.geluTanhBackward(dx, up(dAct, [n]), up(gate, [n]));
  expectClose(down(dx), numericGrad(gelu, [gate], 0, dAct), 1e-6, 'gelu dx');
});

test('siluMulBackward: bit-identical on 1 and 2 threads (split across the pool)', () => {
  const n = 40_003;
  const inputs = [randu(n, 54, 5), randu(n, 55), randu(n, 56)];
  const [a, b] = [dev, dev2].map((d) => {
    const dg = d.empty([n]), du = d.empty([n]);
    d.training!.siluMulBackward(dg, du, d.upload(inputs[2], [n]), d.upload(inputs[0], [n]), d.upload(inputs[1], [n]));
    return [d.download(dg), d.download(du)];
  });
  for (let i = 0; i < 2; i++) expect(Buffer.from(b[i].buffer).equals(Buffer.from(a[i].buffer))).toBe(true);
  const s = 1 / (1 + Math.exp(-inputs[0][7]));
  expect(a[0][7]).toBeCloseTo(inputs[2][7] * inputs[1][7] * s * (1 + inputs[0][7] * (1 - s)), 5);
});

test('embeddingBackward sums repeated ids', () => {
  const V = 9, C = 5, ids = Int32Array.from([3, 0, 3, 8, 3, 1, 0]);
  const dOut = randu(ids.length * C, 61), t0 = randu(V * C, 62);
  const dTable = up(t0, [V, C]);
  ops.embeddingBackward(dTable, up(dOut, [ids.length, C]), ids);
  const ref = Float64Array.from(t0);
  ids.forEach((id, i) => { for (let c = 0; c < C; c++) ref[id * C + c] += dOut[i * C + c]; });
  expectClose(down(dTable), ref, 1e-6, 'dTable');
});

// --- attention --------------------------------------------------------------------------------

const ATTENTION_SHAPES: [string, AttentionShape][] = [
  ['GQA 6/2, hd 5', { batch: 2, seqQ: 7, kvLen: 7, kvStride: 7, nHead: 6, nKvHead: 2, headDim: 5, scale: 1 / Math.sqrt(5) }],
  ['MHA, hd 8, window 3', { batch: 1, seqQ: 9, kvLen: 9, kvStride: 9, nHead: 4, nKvHead: 4, headDim: 8, scale: 1 / Math.sqrt(8), window: 3 }],
  ['MQA 3/1, window 4, odd seq', { batch: 3, seqQ: 11, kvLen: 11, kvStride: 11, nHead: 3, nKvHead: 1, headDim: 3, scale: 0.7, window: 4 }],
  ['past keys, kvStride > kvLen', { batch: 2, seqQ: 4, kvLen: 6, kvStride: 7, nHead: 2, nKvHead: 1, headDim: 4, scale: 0.5 }],
  ['GQA 4/2, hd 12 (generic SIMD), window 5', { batch: 1, seqQ: 10, kvLen: 10, kvStride: 10, nHead: 4, nKvHead: 2, headDim: 12, scale: 0.3, window: 5 }],
];

describe.each(ATTENTION_SHAPES)('attention (%s)', (_name, s) => {
  test('forward lse, and backward against finite differences', () => {
    const qn = s.batch * s.seqQ * s.nHead * s.headDim;
    const kvn = s.batch * s.kvStride * s.nKvHead * s.headDim;
    const q = randu(qn, 71, 1.5), k = randu(kvn, 72, 1.5), v = randu(kvn, 73), dOut = randu(qn, 74);
    const qT = up(q, [s.batch * s.seqQ, s.nHead * s.headDim]);
    const kT = up(k, [s.batch * s.kvStride, s.nKvHead * s.headDim]);
    const vT = up(v, [s.batch * s.kvStride, s.nKvHead * s.headDim]);
    const out = dev.empty(qT.shape), lse = ops.emptyF32([s.batch * s.seqQ, s.nHead]);
    ops.attentionForward(out, lse, qT, kT, vT, s);
    const ref = refAttention(Float64Array.from(q), Float64Array.from(k), Float64Array.from(v), s);
    expectClose(down(out), ref.out, 1e-5, 'out');
    expectClose(down(lse), ref.lse, 1e-6, 'lse');
    const dq = dev.empty(qT.shape), dk = dev.empty(kT.shape), dv = dev.empty(vT.shape);
    dev.training!.fill(dk, 7); // overwritten, including rows no query sees
    ops.attentionBackward(dq, dk, dv, up(dOut, [...qT.shape]), out, lse, qT, kT, vT, s);
    const f = (xs: Float64Array[]) => refAttention(xs[0], xs[1], xs[2], s).out;
    expectClose(down(dq), numericGrad(f, [q, k, v], 0, dOut), 1e-5, 'dq');
    expectClose(down(dk), numericGrad(f, [q, k, v], 1, dOut), 1e-5, 'dk');
    expectClose(down(dv), numericGrad(f, [q, k, v], 2, dOut), 1e-5, 'dv');
  });
});

test('attention forward lse and backward: bit-identical on 1 and 2 threads (split across the pool)', () => {
  const s: AttentionShape = { batch: 3, seqQ: 37, kvLen: 37, kvStride: 37, nHead: 4, nKvHead: 2, headDim: 8, scale: 1 / Math.sqrt(8), window: 29 };
  const qn = s.batch * s.seqQ * s.nHead * s.headDim, kvn = s.batch * s.kvStride * s.nKvHead * s.headDim;
  const inputs = [randu(qn, 75), randu(kvn, 76), randu(kvn, 77), randu(qn, 78)];
  const results = [dev, dev2].map((d) => {
    const t = d.training!;
    const [q, k, v, dOut] = inputs.map((x, i) => d.upload(x, [x.length / (i === 1 || i === 2 ? s.nKvHead * 8 : s.nHead * 8), i === 1 || i === 2 ? s.nKvHead * 8 : s.nHead * 8]));
    const out = d.empty(q.shape), lse = t.emptyF32([s.batch * s.seqQ, s.nHead]);
    t.attentionForward(out, lse, q, k, v, s);
    const dq = d.empty(q.shape), dk = d.empty(k.shape), dv = d.empty(v.shape);
    t.attentionBackward(dq, dk, dv, dOut, out, lse, q, k, v, s);
    return [lse, dq, dk, dv].map((x) => d.download(x));
  });
  const ref = refAttention(Float64Array.from(inputs[0]), Float64Array.from(inputs[1]), Float64Array.from(inputs[2]), s);
  expectClose(results[0][0], ref.lse, 1e-6, 'lse');
  for (let i = 0; i < 4; i++) expect(Buffer.from(results[1][i].buffer).equals(Buffer.from(results[0][i].buffer))).toBe(true);
});

// --- distillation loss -----------------------------------------------------------------------

/** Loss per row in float64, straight from the definitions (top-k: the coarsened distributions). */
function refLossRows(
  z: Float64Array, rows: number, V: number, targets: Int32Array, kind: DistillLossKind, T: number, alpha: number, lambda: number,
  teacher: Float32Array | null, top: TeacherTopK | null,
): { loss: number[]; distill: number[]; ce: number[] } {
  const res = { loss: [] as number[], distill: [] as number[], ce: [] as number[] };
  const lse = (x: number[]) => {
    const m = Math.max(...x);
    return m + Math.log(x.reduce((a, v) => a + Math.exp(v - m), 0));
  };
  for (let r = 0; r < rows; r++) {
    if (targets[r] < 0) {
      res.loss.push(0); res.distill.push(0); res.ce.push(0);
      continue;
    }
    const zr = Array.from(z.subarray(r * V, (r + 1) * V));
    const ce = lse(zr) - zr[targets[r]];
    let D = 0;
    if (teacher !== null || top !== null) {
      const u = zr.map((x) => x / T);
      const lu = lse(u);
      const q = u.map((x) => Math.exp(x - lu));
      let P: number[], Q: number[];
      if (teacher !== null) {
        const t = Array.from(teacher.subarray(r * V, (r + 1) * V)).map((x) => x / T);
        const lt = lse(t);
        P = t.map((x) => Math.exp(x - lt));
        Q = q;
      } else {
        const ids = Array.from(top!.ids.subarray(r * top!.k, (r + 1) * top!.k));
        P = ids.map((_, c) => Math.exp(top!.logits[r * top!.k + c] / T - top!.lse[r]));
        Q = ids.map((id) => q[id]);
        if (top!.k < V) {
          P.push(1 - P.reduce((a, b) => a + b, 0));
          Q.push(q.filter((_, i) => !ids.includes(i)).reduce((a, b) => a + b, 0));
        }
      }
      for (let c = 0; c < P.length; c++) {
        if (kind === 'kl') D += P[c] * Math.log(P[c] / Q[c]);
        else if (kind === 'reverse-kl') D += Q[c] * Math.log(Q[c] / P[c]);
        else D += P[c] * Math.log(P[c] / (lambda * P[c] + (1 - lambda) * Q[c]));
      }
      res.loss.push((1 - alpha) * T * T * D + alpha * ce);
    } else {
      res.loss.push(ce);
    }
    res.distill.push(D);
    res.ce.push(ce);
  }
  return res;
}

interface LossCase {
  kind: DistillLossKind;
  teacher: 'full' | 'topk' | 'topk-all' | 'none';
  T: number;
  alpha: number;
}

const LOSS_CASES: LossCase[] = [];
for (const kind of ['kl', 'reverse-kl', 'skew-kl'] as const) {
  for (const teacher of ['full', 'topk'] as const) {
    LOSS_CASES.push({ kind, teacher, T: 1, alpha: 0 }, { kind, teacher, T: 2.5, alpha: 0.3 });
  }
  LOSS_CASES.push({ kind, teacher: 'topk-all', T: 0.7, alpha: 0.6 });
}
LOSS_CASES.push({ kind: 'kl', teacher: 'none', T: 1, alpha: 0 });

describe('distillLoss', () => {
  const rows = 5, V = 23, K = 6, lambda = 0.25, gradScale = 0.37;
  const targets = Int32Array.from([4, -1, 0, 22, 17]);
  const z = randu(rows * V, 81, 3);
  const teacher = randu(rows * V, 82, 4);

  test.each(LOSS_CASES)('$kind, teacher $teacher, T $T, alpha $alpha: loss rows and gradient', ({ kind, teacher: tk, T, alpha }) => {
    const tT = up(teacher, [rows, V]);
    const top = tk === 'topk' ? ops.topK(tT, K, T) : tk === 'topk-all' ? ops.topK(tT, V, T) : null;
    const full = tk === 'full' ? teacher : null;
    const args = {
      targets, kind, temperature: T, alpha, skewLambda: lambda, gradScale,
      teacher: tk === 'full' ? { logits: tT } : top !== null ? { topK: top } : undefined,
    };
    const logits = up(z, [rows, V]);
    const dLogits = dev.empty([rows, V]);
    const res = ops.distillLoss({ ...args, logits, dLogits });
    const ref = refLossRows(Float64Array.from(z), rows, V, targets, kind, T, alpha, lambda, full, top);
    expectClose(res.loss, ref.loss, 1e-6, 'loss');
    expectClose(res.ce, ref.ce, 1e-6, 'ce');
    if (tk !== 'none') expectClose(res.distill, ref.distill, 1e-6, 'distill');
    expect(res.loss[1]).toBe(0);
    const f = (xs: Float64Array[]) => Float64Array.of(
      refLossRows(xs[0], rows, V, targets, kind, T, alpha, lambda, full, top).loss.reduce((a, b) => a + b, 0) * gradScale);
    const g = numericGrad(f, [z], 0, [1]);
    const dz = down(dLogits);
    expectClose(dz, g, 1e-6, 'dLogits');
    expect(dz.subarray(V, 2 * V).every((x) => x === 0)).toBe(true);
    // In place (dLogits = logits) gives the same.
    const inPlace = up(z, [rows, V]);
    ops.distillLoss({ ...args, logits: inPlace, dLogits: inPlace });
    expect(Array.from(down(inPlace))).toEqual(Array.from(dz));
  });

  test('top-k KL is the full KL when k = V, and at most it when k < V', () => {
    const tT = up(teacher, [rows, V]);
    const run = (teacherArg: { logits: Tensor } | { topK: TeacherTopK }) => ops.distillLoss({
      logits: up(z, [rows, V]), dLogits: dev.empty([rows, V]), teacher: teacherArg, targets, kind: 'kl', temperature: 1.5, alpha: 0, gradScale: 1,
    }).distill;
    const fullD = run({ logits: tT });
    const allD = run({ topK: ops.topK(tT, V, 1.5) });
    const fewD = run({ topK: ops.topK(tT, 3, 1.5) });
    expectClose(allD, fullD, 1e-6, 'k = V');
    for (let r = 0; r < rows; r++) {
      if (targets[r] < 0) continue;
      expect(fewD[r]).toBeGreaterThan(0);
      expect(fewD[r]).toBeLessThanOrEqual(fullD[r] + 1e-9);
    }
  });
});

test('topK: ids and logits largest first, lse of logits / T', () => {
  const rows = 4, V = 31, k = 7, T = 1.7;
  const x = randu(rows * V, 91, 5);
  x[2 * V + 5] = x[2 * V + 9] = 10; // a tie: the lower id first
  const res = ops.topK(up(x, [rows, V]), k, T);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(x.subarray(r * V, (r + 1) * V));
    const order = row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k);
    expect(Array.from(res.ids.subarray(r * k, (r + 1) * k))).toEqual(order.map((o) => o[1]));
    expect(Array.from(res.logits.subarray(r * k, (r + 1) * k))).toEqual(order.map((o) => o[0]));
    const m = Math.max(...row) / T;
    expect(res.lse[r]).toBeCloseTo(m + Math.log(row.reduce((a, v) => a + Math.exp(v / T - m), 0)), 5);
  }
  expect(Array.from(res.ids.subarray(2 * k, 2 * k + 2))).toEqual([5, 9]);
});

// --- optimizer -------------------------------------------------------------------------------

test('sumSquares in float64 over several tensors', () => {
  const a = randu(101, 95), b = randu(7, 96, 3);
  let ref = 0;
  for (const x of [...a, ...b]) ref += x * x;
  expect(ops.sumSquares([up(a, [101]), up(b, [7])])).toBeCloseTo(ref, 10);
});

test('adamw against a scalar reference over three steps', () => {
  const n = 29;
  const w0 = randu(n, 97), o = { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradScale: 0.5 };
  const master = up(w0, [n]), m = ops.emptyF32([n]), v = ops.emptyF32([n]), compute = dev.empty([n]);
  const ref = { w: Array.from(w0), m: new Array<number>(n).fill(0), v: new Array<number>(n).fill(0) };
  for (let step = 1; step <= 3; step++) {
    const g = randu(n, 97 + step);
    ops.adamw({ master, grad: up(g, [n]), m, v, compute }, { ...o, step });
    for (let i = 0; i < n; i++) {
      const gi = g[i] * o.gradScale;
      ref.m[i] = o.beta1 * ref.m[i] + (1 - o.beta1) * gi;
      ref.v[i] = o.beta2 * ref.v[i] + (1 - o.beta2) * gi * gi;
      const mh = ref.m[i] / (1 - o.beta1 ** step), vh = ref.v[i] / (1 - o.beta2 ** step);
      ref.w[i] -= o.lr * (mh / (Math.sqrt(vh) + o.eps) + o.weightDecay * ref.w[i]);
    }
  }
  expectClose(down(master), ref.w, 1e-6, 'master');
  expectClose(down(m), ref.m, 1e-6, 'm');
  expectClose(down(v), ref.v, 1e-6, 'v');
  expect(Array.from(down(compute))).toEqual(Array.from(down(master)));
});
