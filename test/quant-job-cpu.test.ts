// The cpu device's quantization-job ops (Device.quantJob, the reference the cuda ops are tested
// against) against straightforward float64 code written here: textbook Cholesky, Gauss–Jordan
// inverse, Σ xᵀx, column-at-a-time (unblocked) GPTQ, plain min/max loops.

import { afterAll, describe, expect, test } from 'vitest';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { seededRandom } from '../src/random.js';
import { paramIndex, weightGrid, type QuantValueArgs, type WeightQParams } from '../src/tensor/quant-job.js';
import { dequantizeValue, quantizeValue, quantRange } from '../src/tensor/quant-math.js';

const cpu = createCpuDevice({ threads: 2 });
const qj = cpu.quantJob;
afterAll(() => cpu.close());

function normals(seed: number): () => number {
  const u = seededRandom(seed);
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

/** XᵀX / rows + λI in float64, for X [rows, n] of correlated normals; also the f32 rounding the ops see. */
function spd(n: number, seed: number, lambda = 0.1): Float64Array {
  const g = normals(seed);
  const rows = n + 5;
  const latent = Array.from({ length: 3 }, () => Float64Array.from({ length: n }, () => g()));
  const x = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const a = latent.map(() => g());
    for (let c = 0; c < n; c++) x[r * n + c] = g() * (c % 7 === 0 ? 3 : 1) + latent.reduce((s, l, i) => s + a[i]! * l[c]!, 0);
  }
  const h = new Float64Array(n * n);
  for (let r = 0; r < rows; r++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) h[i * n + j] += (x[r * n + i]! * x[r * n + j]!) / rows;
  for (let i = 0; i < n; i++) h[i * n + i] += lambda;
  return Float64Array.from(Float32Array.from(h)); // exactly representable in f32, as the op's tensors
}

/** Textbook Cholesky–Banachiewicz, float64. */
function refCholesky(a: Float64Array, n: number): Float64Array {
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * n + j]!;
      for (let k = 0; k < j; k++) s -= l[i * n + k]! * l[j * n + k]!;
      l[i * n + j] = i === j ? Math.sqrt(s) : s / l[j * n + j]!;
    }
  }
  return l;
}

/** Gauss–Jordan inverse with partial pivoting, float64. */
function refInverse(a: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(a);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r * n + c]!) > Math.abs(m[p * n + c]!)) p = r;
    for (const t of [m, inv]) for (let k = 0; k < n; k++) [t[c * n + k], t[p * n + k]] = [t[p * n + k]!, t[c * n + k]!];
    const d = m[c * n + c]!;
    for (const t of [m, inv]) for (let k = 0; k < n; k++) t[c * n + k] = t[c * n + k]! / d;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r * n + c]!;
      if (f === 0) continue;
      for (const t of [m, inv]) for (let k = 0; k < n; k++) t[r * n + k] = t[r * n + k]! - f * t[c * n + k]!;
    }
  }
  return inv;
}

function maxRelDiff(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i]! - want[i]!));
    m = Math.max(m, Math.abs(want[i]!));
  }
  return d / m;
}

describe('cholesky and choleskyInverse (f32 tensors, float64 inside)', () => {
  for (const n of [1, 37, 200, 301]) {
    test(`n ${n}: L matches textbook Cholesky, (L Lᵀ)⁻¹ matches Gauss–Jordan`, () => {
      const a = spd(n, n);
      const t = qj.uploadF32(Float32Array.from(a), [n, n]);
      expect(qj.cholesky(t)).toBe(true);
      const l = cpu.download(t);
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) expect(l[i * n + j]).toBe(0);
      expect(maxRelDiff(l, refCholesky(a, n))).toBeLessThan(1e-6);
      const inv = qj.zerosF32([n, n]);
      qj.choleskyInverse(t, inv);
      expect(maxRelDiff(cpu.download(inv), refInverse(a, n))).toBeLessThan(1e-5);
    });
  }

  test('a matrix that is not positive definite is reported', () => {
    const a = spd(23, 5);
    a[11 * 23 + 11] = -0.5;
    expect(qj.cholesky(qj.uploadF32(Float32Array.from(a), [23, 23]))).toBe(false);
  });
});

describe('calibration statistics', () => {
  const K = 45;
  const g = normals(9);
  const batches = [37, 101].map((rows) => Float32Array.from({ length: rows * K }, (_, i) => g() * (i % K === 4 ? 20 : 1)));

  test('hessianAccumulate: Σ scale · xᵀx over batches', () => {
    const h = qj.zerosF32([K, K]);
    const ref = new Float64Array(K * K);
    for (const x of batches) {
      qj.hessianAccumulate(h, cpu.upload(x, [x.length / K, K]), 2 / 3);
      for (let r = 0; r < x.length / K; r++) for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) ref[i * K + j] += (2 / 3) * x[r * K + i]! * x[r * K + j]!;
    }
    expect(maxRelDiff(cpu.download(h), ref)).toBeLessThan(1e-6);
  });

  test('channelRange, absMax and accumulateErrors: the plain loops', () => {
    const min = qj.uploadF32(new Float32Array(K).fill(Infinity), [K]);
    const max = qj.uploadF32(new Float32Array(K).fill(-Infinity), [K]);
    const acc = qj.zerosF32([1]);
    const sums = { diff2: 0, ref2: 0, update2: 0 };
    const ref = { min: new Float64Array(K).fill(Infinity), max: new Float64Array(K).fill(-Infinity), abs: 0, diff2: 0, ref2: 0, update2: 0 };
    for (const x of batches) {
      const t = cpu.upload(x, [x.length / K, K]);
      const y = x.map((v) => v * 1.5 + 0.25);
      const yq = y.map((v, i) => v + (i % 3) * 0.01);
      qj.channelRange(min, max, t);
      qj.absMax(acc, t);
      qj.accumulateErrors(sums, cpu.upload(yq, [x.length / K, K]), cpu.upload(y, [x.length / K, K]), t);
      for (let i = 0; i < x.length; i++) {
        const c = i % K;
        ref.min[c] = Math.min(ref.min[c]!, x[i]!);
        ref.max[c] = Math.max(ref.max[c]!, x[i]!);
        ref.abs = Math.max(ref.abs, Math.abs(x[i]!));
        ref.diff2 += (yq[i]! - y[i]!) ** 2;
        ref.ref2 += y[i]! ** 2;
        ref.update2 += (y[i]! - x[i]!) ** 2;
      }
    }
    expect(Array.from(cpu.download(min))).toEqual(Array.from(ref.min));
    expect(Array.from(cpu.download(max))).toEqual(Array.from(ref.max));
    expect(cpu.download(acc)[0]).toBe(ref.abs);
    expect(sums.diff2).toBe(ref.diff2);
    expect(sums.ref2).toBe(ref.ref2);
    expect(sums.update2).toBe(ref.update2);
  });

  test('scaleHessian: h_ij / (s_i s_j), rounded once to f32', () => {
    const h = Float32Array.from(spd(K, 3));
    const s = Float64Array.from({ length: K }, (_, i) => 0.5 + i / 10);
    const t = qj.uploadF32(h, [K, K]);
    qj.scaleHessian(t, s);
    const got = cpu.download(t);
    for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) expect(got[i * K + j]).toBe(Math.fround(h[i * K + j]! / (s[i]! * s[j]!)));
  });
});

/**
 * GPTQ one column at a time over the whole row (no lazy blocks), from the textbook factor
 * U = chol(H⁻¹)ᵀ: q_j = Q(w_j), e = (w_j − q_j)/U_jj, w_k −= e·U_jk for k > j.
 */
function refGptq(w: Float32Array, h: Float64Array, qp: WeightQParams, args: QuantValueArgs, dampening: number, actorder: boolean): { codes: Int32Array; loss: number } {
  const { rows: m, cols: n } = qp.grid;
  const range = quantRange(args);
  const perm = Array.from({ length: n }, (_, i) => i);
  if (actorder) perm.sort((a, b) => h[b * n + b]! - h[a * n + a]! || a - b);
  const H = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] = h[perm[i]! * n + perm[j]!]!;
  const dead = perm.map((_, j) => H[j * n + j] === 0);
  dead.forEach((d, j) => d && (H[j * n + j] = 1));
  let mean = 0;
  for (let j = 0; j < n; j++) mean += H[j * n + j]!;
  for (let j = 0; j < n; j++) H[j * n + j] += (dampening * mean) / n;
  const L = refCholesky(refInverse(H, n), n); // U = Lᵀ
  const codes = new Int32Array(m * n);
  let loss = 0;
  for (let r = 0; r < m; r++) {
    const W = Float64Array.from(perm, (p, j) => (dead[j] ? 0 : w[r * n + p]!));
    for (let j = 0; j < n; j++) {
      const k = paramIndex(qp.grid, r, perm[j]!);
      const code = quantizeValue(W[j]!, qp.scale[k]!, qp.zeroPoint[k]!, range);
      const q = dequantizeValue(code, qp.scale[k]!, qp.zeroPoint[k]!, range);
      codes[r * n + perm[j]!] = code;
      const d = L[j * n + j]!;
      loss += (W[j]! - q) ** 2 / d ** 2 / 2;
      const e = (W[j]! - q) / d;
      for (let c = j + 1; c < n; c++) W[c] -= e * L[c * n + j]!;
    }
  }
  return { codes, loss };
}

describe('GPTQ (gptqPrepare + gptqQuantize)', () => {
  const rows = 29;
  const cols = 96;
  const g = normals(21);
  const w = Float32Array.from({ length: rows * cols }, () => g() * 0.1);
  const h = spd(cols, 77, 0.02);
  for (let j = 0; j < cols; j++) {
    // two dead input channels
    if (j !== 10 && j !== 50) continue;
    for (let i = 0; i < cols; i++) h[i * cols + j] = h[j * cols + i] = 0;
  }
  const cases: [string, QuantValueArgs & { strategy: 'channel' | 'group'; group_size: number | null }, boolean, number][] = [
    ['int4 channel', { num_bits: 4, type: 'int', symmetric: true, strategy: 'channel', group_size: null }, false, 128],
    ['int4 group 32, act-order', { num_bits: 4, type: 'int', symmetric: true, strategy: 'group', group_size: 32 }, true, 128],
    ['int4 group 16 asymmetric, block 20', { num_bits: 4, type: 'int', symmetric: false, strategy: 'group', group_size: 16 }, false, 20],
    ['int8 channel, act-order, block 7', { num_bits: 8, type: 'int', symmetric: true, strategy: 'channel', group_size: null }, true, 7],
    ['fp8 channel', { num_bits: 8, type: 'float', symmetric: true, strategy: 'channel', group_size: null }, false, 128],
  ];
  for (const [label, args, actorder, blockSize] of cases) {
    test(`${label}: the lazy-block GPTQ equals the unblocked textbook one`, () => {
      const grid = weightGrid(rows, cols, args);
      const wt = qj.uploadF32(w, [rows, cols]);
      const qp = qj.observeWeight(wt, grid, args, 'minmax', 'F32');
      const factor = qj.gptqPrepare(qj.uploadF32(Float32Array.from(h), [cols, cols]), { dampening: 0.01, actorder });
      expect(factor.ok).toBe(true);
      expect(Array.from(factor.dead).flatMap((d, i) => (d ? [i] : []))).toEqual([10, 50]);
      const deq = cpu.empty([rows, cols]);
      const got = qj.gptqQuantize(wt, factor, qp, args, blockSize, deq);
      const ref = refGptq(w, h, qp, args, 0.01, actorder);
      expect(Array.from(got.codes)).toEqual(Array.from(ref.codes));
      expect(got.loss).toBeCloseTo(ref.loss, 9);
      const range = quantRange(args);
      const d = cpu.download(deq);
      for (let i = 0; i < rows * cols; i++) {
        const k = paramIndex(grid, Math.floor(i / cols), i % cols);
        // (== so that a −0 from a code that rounded from −0.3 equals +0)
        expect(d[i]! == Math.fround(dequantizeValue(got.codes[i]!, qp.scale[k]!, qp.zeroPoint[k]!, range))).toBe(true);
      }
    });
  }

  test('readU: Uᵀ U is the inverse of the permuted, damped Hessian', () => {
    const n = 40;
    const a = spd(n, 3);
    const f = qj.gptqPrepare(qj.uploadF32(Float32Array.from(a), [n, n]), { dampening: 0.01, actorder: true });
    const p = Array.from(f.perm);
    expect(p).toEqual(Array.from({ length: n }, (_, i) => i).sort((x, y) => a[y * n + y]! - a[x * n + x]! || x - y));
    const H = new Float64Array(n * n);
    let mean = 0;
    for (let i = 0; i < n; i++) mean += a[i * n + i]! / n;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] = a[p[i]! * n + p[j]!]! + (i === j ? 0.01 * mean : 0);
    const u = f.readU();
    const utu = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k <= Math.min(i, j); k++) utu[i * n + j] += u[k * n + i]! * u[k * n + j]!;
    expect(maxRelDiff(utu, refInverse(H, n))).toBeLessThan(1e-6);
  });

  test('a Hessian that is not positive definite after damping gives a factor that is not ok', () => {
    const n = 12;
    const bad = new Float32Array(n * n).fill(1); // rank 1
    expect(qj.gptqPrepare(qj.uploadF32(bad, [n, n]), { dampening: 0, actorder: false }).ok).toBe(false);
  });
});
