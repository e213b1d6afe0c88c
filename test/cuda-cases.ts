// Op-by-op comparison cases: every Device op on the GPU against the cpu reference device, on seeded
// random inputs of awkward shapes. Shared by test/cuda-ops.test.ts (vitest, where a GPU exists) and
// scripts/gpu/run-cuda-tests.ts (the bundled runner used on the GPU machine).
//
// Inputs are rounded to the GPU dtype on the host first, so both devices see identical values and
// the only differences are the GPU's arithmetic and its output rounding. Errors are measured as
// max |gpu - cpu| / max |cpu| over the output.

import type { CudaDevice } from '../src/tensor/cuda/index.js';
import type { AttentionShape, ComputeDType, Device, Tensor } from '../src/tensor/device.js';

export interface Check {
  case: string;
  dtype: ComputeDType;
  /** max |gpu - cpu| / max |cpu| (or a mismatch count for integer outputs). */
  error: number;
  tol: number;
  ok: boolean;
  note?: string;
}

export interface OpCase {
  name: string;
  run(cpu: Device, gpu: Device, dtype: ComputeDType): Check[];
}

/** Tolerance on the normalized max error: a few units of the dtype's last place. */
export function tolerance(dtype: ComputeDType): number {
  return dtype === 'f32' ? 1e-5 : dtype === 'bf16' ? 8e-3 : 2e-3;
}

// --- deterministic inputs ---------------------------------------------------------------------

function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Round-to-nearest-even of x to `mantissaBits` explicit bits, with subnormals below 2^minExp. */
function roundToBits(x: number, mantissaBits: number, minExp: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const a = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(a)), minExp);
  const spacing = 2 ** (e - mantissaBits);
  const q = a / spacing;
  const f = Math.floor(q);
  const diff = q - f;
  const r = diff > 0.5 ? f + 1 : diff < 0.5 ? f : f % 2 === 0 ? f : f + 1;
  return Math.sign(x) * r * spacing;
}

export function roundTo(dtype: ComputeDType, data: Float32Array): Float32Array {
  if (dtype === 'f32') return data;
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) {
    out[i] = dtype === 'bf16' ? roundToBits(data[i], 7, -126) : roundToBits(data[i], 10, -14);
  }
  return out;
}

class Inputs {
  private readonly next: () => number;
  constructor(
    seed: number,
    private readonly dtype: ComputeDType,
  ) {
    this.next = mulberry32(seed);
  }
  /** Uniform in (-scale, scale), rounded to the dtype. */
  floats(n: number, scale = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.next() * 2 - 1) * scale;
    return roundTo(this.dtype, out);
  }
  ints(n: number, max: number): Int32Array {
    const out = new Int32Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * max);
    return out;
  }
}

function compare(name: string, dtype: ComputeDType, got: Float32Array, want: Float32Array, tol = tolerance(dtype)): Check {
  if (got.length !== want.length) {
    return { case: name, dtype, error: Infinity, tol, ok: false, note: `length ${got.length} vs ${want.length}` };
  }
  let maxRef = 0;
  let maxDiff = 0;
  let worst = -1;
  for (let i = 0; i < want.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want[i]));
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= maxDiff)) {
      maxDiff = Number.isNaN(d) ? Infinity : d;
      worst = i;
    }
  }
  const error = maxRef > 0 ? maxDiff / maxRef : maxDiff;
  const note = worst >= 0 && error > tol ? `worst at ${worst}: gpu ${got[worst]} cpu ${want[worst]}` : undefined;
  const nonZero = maxRef > 0 ? undefined : 'reference is all zeros';
  return { case: name, dtype, error, tol, ok: error <= tol && maxRef > 0, note: note ?? nonZero };
}

/** Uploads the same host data to both devices. */
function both(cpu: Device, gpu: Device, data: Float32Array, shape: number[]): [Tensor, Tensor] {
  return [cpu.upload(data, shape), gpu.upload(data, shape)];
}

function freeAll(dev: Device, ...ts: Tensor[]): void {
  for (const t of ts) dev.free(t);
}

// --- cases ------------------------------------------------------------------------------------

function matmulCase(M: number, N: number, K: number, bias: boolean, xRowOffset = 0): OpCase {
  const name = `matmul M${M} N${N} K${K}${bias ? ' +bias' : ''}${xRowOffset ? ` x=rows(+${xRowOffset})` : ''}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(M * 131 + N * 7 + K, dtype);
      const xAll = inp.floats((M + xRowOffset) * K);
      const w = inp.floats(N * K, 0.5);
      const b = inp.floats(N);
      const [cxAll, gxAll] = both(cpu, gpu, xAll, [M + xRowOffset, K]);
      const [cw, gw] = both(cpu, gpu, w, [N, K]);
      const [cb, gb] = both(cpu, gpu, b, [N]);
      const [co, go] = [cpu.empty([M, N]), gpu.empty([M, N])];
      cpu.matmul(co, cpu.rows(cxAll, xRowOffset, M), cw, bias ? cb : undefined);
      gpu.matmul(go, gpu.rows(gxAll, xRowOffset, M), gw, bias ? gb : undefined);
      const check = compare(name, dtype, gpu.download(go), cpu.download(co));
      freeAll(gpu, gxAll, gw, gb, go);
      return [check];
    },
  };
}

function elementwiseCases(): OpCase[] {
  return [
    {
      name: 'addInPlace [7,1001]',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(11, dtype);
        const [x, y] = [inp.floats(7 * 1001), inp.floats(7 * 1001)];
        const [cx, gx] = both(cpu, gpu, x, [7, 1001]);
        const [cy, gy] = both(cpu, gpu, y, [7, 1001]);
        cpu.addInPlace(cx, cy);
        gpu.addInPlace(gx, gy);
        const check = compare('addInPlace [7,1001]', dtype, gpu.download(gx), cpu.download(cx));
        freeAll(gpu, gx, gy);
        return [check];
      },
    },
    {
      name: 'siluMul [3,1111]',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(12, dtype);
        const [g, u] = [inp.floats(3 * 1111, 6), inp.floats(3 * 1111, 2)];
        const [cg, gg] = both(cpu, gpu, g, [3, 1111]);
        const [cu, gu] = both(cpu, gpu, u, [3, 1111]);
        const [co, go] = [cpu.empty([3, 1111]), gpu.empty([3, 1111])];
        cpu.siluMul(co, cg, cu);
        gpu.siluMul(go, gg, gu);
        const check = compare('siluMul [3,1111]', dtype, gpu.download(go), cpu.download(co));
        freeAll(gpu, gg, gu, go);
        return [check];
      },
    },
    {
      name: 'geluTanh [4,999]',
      run(cpu, gpu, dtype) {
        const x = new Inputs(13, dtype).floats(4 * 999, 4);
        const [cx, gx] = both(cpu, gpu, x, [4, 999]);
        const [co, go] = [cpu.empty([4, 999]), gpu.empty([4, 999])];
        cpu.geluTanh(co, cx);
        gpu.geluTanh(go, gx);
        const check = compare('geluTanh [4,999]', dtype, gpu.download(go), cpu.download(co));
        freeAll(gpu, gx, go);
        return [check];
      },
    },
  ];
}

function normCase(kind: 'rms' | 'layer', rows: number, cols: number): OpCase {
  const name = `${kind}Norm [${rows},${cols}]`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(rows * 17 + cols, dtype);
      const x = inp.floats(rows * cols, 3);
      const w = inp.floats(cols, 2);
      const b = inp.floats(cols);
      const [cx, gx] = both(cpu, gpu, x, [rows, cols]);
      const [cw, gw] = both(cpu, gpu, w, [cols]);
      const [cb, gb] = both(cpu, gpu, b, [cols]);
      const [co, go] = [cpu.empty([rows, cols]), gpu.empty([rows, cols])];
      if (kind === 'rms') {
        cpu.rmsNorm(co, cx, cw, 1e-5);
        gpu.rmsNorm(go, gx, gw, 1e-5);
      } else {
        cpu.layerNorm(co, cx, cw, cb, 1e-5);
        gpu.layerNorm(go, gx, gw, gb, 1e-5);
      }
      const check = compare(name, dtype, gpu.download(go), cpu.download(co));
      freeAll(gpu, gx, gw, gb, go);
      return [check];
    },
  };
}

function gatherCases(): OpCase[] {
  return [
    {
      name: 'embedding + addEmbedding table [517,71], 13 ids',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(21, dtype);
        const table = inp.floats(517 * 71);
        const pos = inp.floats(64 * 71);
        const ids = inp.ints(13, 517);
        ids[0] = 516;
        const posIds = inp.ints(13, 64);
        const [ct, gt] = both(cpu, gpu, table, [517, 71]);
        const [cp, gp] = both(cpu, gpu, pos, [64, 71]);
        const [co, go] = [cpu.empty([13, 71]), gpu.empty([13, 71])];
        cpu.embedding(co, ct, ids);
        gpu.embedding(go, gt, ids);
        const first = compare('embedding', dtype, gpu.download(go), cpu.download(co), 0);
        cpu.addEmbedding(co, cp, posIds);
        gpu.addEmbedding(go, gp, posIds);
        const second = compare('addEmbedding', dtype, gpu.download(go), cpu.download(co));
        freeAll(gpu, gt, gp, go);
        return [first, second];
      },
    },
    {
      name: 'writeKv cache [2*20,48] src [2*3,48] start 5',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(22, dtype);
        const cache = inp.floats(40 * 48);
        const src = inp.floats(6 * 48);
        const [cc, gc] = both(cpu, gpu, cache, [40, 48]);
        const [cs, gs] = both(cpu, gpu, src, [6, 48]);
        cpu.writeKv(cc, cs, 2, 3, 5, 20);
        gpu.writeKv(gc, gs, 2, 3, 5, 20);
        const check = compare('writeKv', dtype, gpu.download(gc), cpu.download(cc), 0);
        freeAll(gpu, gc, gs);
        return [check];
      },
    },
    {
      name: 'upload/download/view/rows round trip [13,7]',
      run(cpu, gpu, dtype) {
        const data = new Inputs(23, dtype).floats(13 * 7, 100);
        const t = gpu.upload(data, [13, 7]);
        const whole = compare('round trip', dtype, gpu.download(t), data, 0);
        const part = compare('rows(4,3)', dtype, gpu.download(gpu.rows(t, 4, 3)), data.slice(4 * 7, 7 * 7), 0);
        const viewed = compare('view [91]', dtype, gpu.download(gpu.view(t, [91])), data, 0);
        gpu.free(t);
        void cpu;
        return [whole, part, viewed];
      },
    },
  ];
}

function ropeCase(rows: number, nHeads: number, headDim: number, rotaryDim: number): OpCase {
  const name = `rope rows ${rows} heads ${nHeads} headDim ${headDim} rotary ${rotaryDim}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(rows * 31 + rotaryDim, dtype);
      const maxPos = 50;
      const half = rotaryDim / 2;
      const cos = new Float32Array(maxPos * half);
      const sin = new Float32Array(maxPos * half);
      for (let p = 0; p < maxPos; p++) {
        for (let i = 0; i < half; i++) {
          const angle = p / 10000 ** ((2 * i) / rotaryDim);
          cos[p * half + i] = Math.cos(angle);
          sin[p * half + i] = Math.sin(angle);
        }
      }
      const x = inp.floats(rows * nHeads * headDim, 2);
      const positions = inp.ints(rows, maxPos);
      positions[0] = maxPos - 1;
      const [cx, gx] = both(cpu, gpu, x, [rows, nHeads * headDim]);
      const [cc, gc] = both(cpu, gpu, roundTo(dtype, cos), [maxPos, half]);
      const [cs, gs] = both(cpu, gpu, roundTo(dtype, sin), [maxPos, half]);
      cpu.rope(cx, positions, cc, cs, nHeads, headDim, rotaryDim);
      gpu.rope(gx, positions, gc, gs, nHeads, headDim, rotaryDim);
      const check = compare(name, dtype, gpu.download(gx), cpu.download(cx));
      freeAll(gpu, gx, gc, gs);
      return [check];
    },
  };
}

function attentionCase(label: string, s: Omit<AttentionShape, 'scale'>): OpCase {
  const name = `attention ${label}: b${s.batch} q${s.seqQ} kv${s.kvLen}/${s.kvStride} h${s.nHead}/${s.nKvHead} d${s.headDim}` +
    (s.window !== undefined ? ` win${s.window}` : '');
  return {
    name,
    run(cpu, gpu, dtype) {
      const shape: AttentionShape = { ...s, scale: 1 / Math.sqrt(s.headDim) };
      const inp = new Inputs(s.batch * 1000 + s.seqQ * 10 + s.headDim, dtype);
      const qShape = [s.batch * s.seqQ, s.nHead * s.headDim];
      const kvShape = [s.batch * s.kvStride, s.nKvHead * s.headDim];
      const q = inp.floats(qShape[0] * qShape[1], 2);
      const k = inp.floats(kvShape[0] * kvShape[1], 2);
      const v = inp.floats(kvShape[0] * kvShape[1]);
      const [cq, gq] = both(cpu, gpu, q, qShape);
      const [ck, gk] = both(cpu, gpu, k, kvShape);
      const [cv, gv] = both(cpu, gpu, v, kvShape);
      const [co, go] = [cpu.empty(qShape), gpu.empty(qShape)];
      cpu.attention(co, cq, ck, cv, shape);
      gpu.attention(go, gq, gk, gv, shape);
      const check = compare(name, dtype, gpu.download(go), cpu.download(co));
      freeAll(gpu, gq, gk, gv, go);
      return [check];
    },
  };
}

/** Baseline = logits + uniform noise of ±noise: small noise is the quantized-vs-original case (tiny KLD). */
function scoreCase(rows: number, V: number, noiseScale = 1): OpCase {
  const name = `scoreLogits rows ${rows} V ${V} noise ${noiseScale}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(rows + V, dtype);
      const logits = inp.floats(rows * V, 8);
      const noise = inp.floats(rows * V, noiseScale);
      const base = roundTo(dtype, logits.map((x, i) => x + noise[i]));
      const targets = inp.ints(rows, V);
      targets[1] = -1;
      targets[2] = V - 1;
      const [cl, gl] = both(cpu, gpu, logits, [rows, V]);
      const [cb, gb] = both(cpu, gpu, base, [rows, V]);
      const want = cpu.scoreLogits(cl, targets, cb);
      const got = gpu.scoreLogits(gl, targets, gb);
      const plain = gpu.scoreLogits(gl, targets);
      // Identical inputs on both sides and f64 sums on the GPU: tight in every dtype.
      const f64 = (a: Float64Array | undefined) => Float32Array.from(a ?? []);
      const checks = [
        compare(`${name} nll`, dtype, f64(got.nll), f64(want.nll), 1e-6),
        compare(`${name} nll (no baseline)`, dtype, f64(plain.nll), f64(want.nll), 1e-6),
        compare(`${name} kld`, dtype, f64(got.kld), f64(want.kld), noiseScale < 0.1 ? 1e-4 : 1e-6),
      ];
      // argmax: the same logit value (ties can pick either index only if values are equal)
      let argBad = 0;
      let topBad = 0;
      for (let r = 0; r < rows; r++) {
        if (logits[r * V + got.argmax[r]] !== logits[r * V + want.argmax[r]]) argBad++;
        if (got.argmax[r] === want.argmax[r] && (got.top1?.[r] ?? -1) !== (want.top1?.[r] ?? -2)) topBad++;
      }
      checks.push({ case: `${name} argmax`, dtype, error: argBad, tol: 0, ok: argBad === 0 });
      checks.push({ case: `${name} top1`, dtype, error: topBad, tol: 0, ok: topBad === 0 });
      freeAll(gpu, gl, gb);
      return checks;
    },
  };
}

/** Every case, in a fixed order. */
export function opCases(): OpCase[] {
  return [
    ...gatherCases(),
    matmulCase(1, 37, 53, false),
    matmulCase(7, 129, 65, true),
    matmulCase(33, 64, 1000, true),
    matmulCase(130, 257, 96, false),
    matmulCase(17, 40, 24, true, 3),
    matmulCase(5, 3, 1, false),
    ...elementwiseCases(),
    normCase('rms', 5, 4097),
    normCase('rms', 3, 64),
    normCase('rms', 2, 1),
    normCase('layer', 6, 768),
    normCase('layer', 2, 33),
    ropeCase(9, 5, 24, 24),
    ropeCase(4, 3, 64, 16),
    attentionCase('prefill', { batch: 2, seqQ: 37, kvLen: 37, kvStride: 40, nHead: 6, nKvHead: 2, headDim: 24 }),
    attentionCase('stories', { batch: 2, seqQ: 64, kvLen: 64, kvStride: 64, nHead: 8, nKvHead: 4, headDim: 8 }),
    attentionCase('chunked prefill', { batch: 1, seqQ: 19, kvLen: 51, kvStride: 64, nHead: 8, nKvHead: 2, headDim: 128 }),
    attentionCase('decode', { batch: 3, seqQ: 1, kvLen: 29, kvStride: 33, nHead: 4, nKvHead: 4, headDim: 64 }),
    attentionCase('decode GQA', { batch: 2, seqQ: 3, kvLen: 300, kvStride: 310, nHead: 8, nKvHead: 2, headDim: 96 }),
    attentionCase('decode window', { batch: 2, seqQ: 1, kvLen: 300, kvStride: 300, nHead: 4, nKvHead: 1, headDim: 64, window: 100 }),
    attentionCase('long', { batch: 1, seqQ: 1000, kvLen: 1000, kvStride: 1000, nHead: 2, nKvHead: 1, headDim: 64 }),
    attentionCase('sliding window', { batch: 1, seqQ: 600, kvLen: 600, kvStride: 608, nHead: 4, nKvHead: 2, headDim: 32, window: 257 }),
    attentionCase('head 256', { batch: 1, seqQ: 45, kvLen: 45, kvStride: 45, nHead: 2, nKvHead: 1, headDim: 256 }),
    scoreCase(11, 1037),
    scoreCase(6, 32000),
    scoreCase(5, 50000, 0.02),
  ];
}

export interface CaseRun {
  checks: Check[];
  failures: string[];
}

/** Runs every case on one GPU device against the cpu device; exceptions become failed checks. */
export function runCases(cpu: Device, gpu: Device, dtype: ComputeDType, filter?: (name: string) => boolean): CaseRun {
  const checks: Check[] = [];
  for (const c of opCases()) {
    if (filter && !filter(c.name)) continue;
    try {
      checks.push(...c.run(cpu, gpu, dtype));
    } catch (e) {
      checks.push({ case: c.name, dtype, error: Infinity, tol: 0, ok: false, note: `threw: ${(e as Error).message}` });
    }
  }
  return { checks, failures: checks.filter((c) => !c.ok).map((c) => `${c.dtype} ${c.case}: ${c.note ?? `error ${c.error}`}`) };
}

// --- GPU-only extras: the *At ops (per-step values read on the device) against the plain ops -----

/** Runs on the GPU alone: each *At op must equal the plain op (already checked against cpu) bit for bit. */
export function runAtCases(gpu: CudaDevice, dtype: ComputeDType): CaseRun {
  const checks: Check[] = [];
  const exact = (name: string, got: Float32Array, want: Float32Array) => checks.push(compare(name, dtype, got, want, 0));
  const guard = (name: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      checks.push({ case: name, dtype, error: Infinity, tol: 0, ok: false, note: `threw: ${(e as Error).message}` });
    }
  };
  const inp = new Inputs(77, dtype);

  for (const [seqQ, kvLens, kvStride] of [[1, [29, 17, 5], 33], [3, [29, 3, 12], 33], [9, [40, 9, 23], 40]] as const) {
    const name = `attentionAt ragged seqQ ${seqQ} kvLens [${kvLens.join(',')}] stride ${kvStride}`;
    guard(name, () => {
      const batch = kvLens.length, nHead = 4, nKvHead = 2, headDim = 64;
      const q = gpu.upload(inp.floats(batch * seqQ * nHead * headDim, 2), [batch * seqQ, nHead * headDim]);
      const k = gpu.upload(inp.floats(batch * kvStride * nKvHead * headDim, 2), [batch * kvStride, nKvHead * headDim]);
      const v = gpu.upload(inp.floats(batch * kvStride * nKvHead * headDim), [batch * kvStride, nKvHead * headDim]);
      const got = gpu.empty([batch * seqQ, nHead * headDim]);
      const want = gpu.empty([batch * seqQ, nHead * headDim]);
      const lens = gpu.allocInts(batch);
      gpu.setInts(lens, Int32Array.from(kvLens));
      const base = { seqQ, kvStride, nHead, nKvHead, headDim, scale: 0.125 };
      gpu.attentionAt(got, q, k, v, { ...base, batch, kvLen: Math.max(...kvLens) }, lens);
      kvLens.forEach((kvLen, b) => {
        gpu.attention(gpu.rows(want, b * seqQ, seqQ), gpu.rows(q, b * seqQ, seqQ), gpu.rows(k, b * kvStride, kvStride),
          gpu.rows(v, b * kvStride, kvStride), { ...base, batch: 1, kvLen });
      });
      exact(name, gpu.download(got), gpu.download(want));
      gpu.freeInts(lens);
      for (const t of [q, k, v, got, want]) gpu.free(t);
    });
  }

  guard('writeKvAt starts [5,0,17]', () => {
    const starts = [5, 0, 17], seq = 2, kvStride = 20, D = 24;
    const init = inp.floats(starts.length * kvStride * D);
    const src = gpu.upload(inp.floats(starts.length * seq * D), [starts.length * seq, D]);
    const got = gpu.upload(init, [starts.length * kvStride, D]);
    const want = gpu.upload(init, [starts.length * kvStride, D]);
    const s = gpu.allocInts(3);
    gpu.setInts(s, Int32Array.from(starts));
    gpu.writeKvAt(got, src, starts.length, seq, s, kvStride);
    starts.forEach((start, b) => {
      gpu.writeKv(gpu.rows(want, b * kvStride, kvStride), gpu.rows(src, b * seq, seq), 1, seq, start, kvStride);
    });
    exact('writeKvAt starts [5,0,17]', gpu.download(got), gpu.download(want));
    gpu.freeInts(s);
    for (const t of [src, got, want]) gpu.free(t);
  });

  guard('embeddingAt + ropeAt', () => {
    const ids = Int32Array.from([3, 99, 0, 57]), pos = Int32Array.from([7, 0, 31, 12]);
    const table = gpu.upload(inp.floats(100 * 48), [100, 48]);
    const cos = gpu.upload(inp.floats(32 * 8), [32, 8]);
    const sin = gpu.upload(inp.floats(32 * 8), [32, 8]);
    const got = gpu.empty([4, 48]), want = gpu.empty([4, 48]);
    const idsDev = gpu.allocInts(4), posDev = gpu.allocInts(4);
    gpu.setInts(idsDev, ids);
    gpu.setInts(posDev, pos);
    gpu.embeddingAt(got, table, idsDev);
    gpu.embedding(want, table, ids);
    exact('embeddingAt', gpu.download(got), gpu.download(want));
    gpu.ropeAt(got, posDev, 4, cos, sin, 3, 16, 16);
    gpu.rope(want, pos, cos, sin, 3, 16, 16);
    exact('ropeAt', gpu.download(got), gpu.download(want));
    gpu.freeInts(idsDev);
    gpu.freeInts(posDev);
    for (const t of [table, cos, sin, got, want]) gpu.free(t);
  });
  return { checks, failures: checks.filter((c) => !c.ok).map((c) => `${c.dtype} ${c.case}: ${c.note ?? `error ${c.error}`}`) };
}
