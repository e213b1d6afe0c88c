// Op-by-op comparison cases: every Device op on the GPU against the cpu reference device, on seeded
// random inputs of awkward shapes. Shared by test/cuda-ops.test.ts (vitest, where a GPU exists) and
// scripts/gpu/run-cuda-tests.ts (the bundled runner used on the GPU machine).
//
// Inputs are rounded to the GPU dtype on the host first, so both devices see identical values and
// the only differences are the GPU's arithmetic and its output rounding. Errors are measured as
// max |gpu - cpu| / max |cpu| over the output.

import type { CudaDevice } from '../src/tensor/cuda/index.js';
import type { AttentionShape, ComputeDType, Device, Tensor } from '../src/tensor/device.js';
import { seededRandom as mulberry32 } from '../src/random.js';

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

export class Inputs {
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

export function compare(name: string, dtype: ComputeDType, got: Float32Array, want: Float32Array, tol = tolerance(dtype)): Check {
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
export function both(cpu: Device, gpu: Device, data: Float32Array, shape: number[]): [Tensor, Tensor] {
  return [cpu.upload(data, shape), gpu.upload(data, shape)];
}

/** cos/sin tables [maxPos, rotaryDim/2] of plain RoPE (theta 10000), for the rope cases. */
export function ropeTestTables(maxPos: number, rotaryDim: number): { cos: Float32Array; sin: Float32Array } {
  const half = rotaryDim / 2;
  const cos = new Float32Array(maxPos * half), sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p / 10000 ** ((2 * i) / rotaryDim);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

export function freeAll(dev: Device, ...ts: Tensor[]): void {
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
      const { cos, sin } = ropeTestTables(maxPos, rotaryDim);
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

export function attentionCase(label: string, s: Omit<AttentionShape, 'scale'>): OpCase {
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

/** fakeQuantRows: dynamic per-row and static scales, int8 and fp8 (a zero row; tiny values → fp8 subnormals). */
function fakeQuantCase(format: 'int8' | 'fp8_e4m3', scale?: number): OpCase {
  const name = `fakeQuantRows ${format} ${scale === undefined ? 'dynamic' : `static ${scale}`} [6,333]`;
  return {
    name,
    run(cpu, gpu, dtype) {
      if (cpu.fakeQuantRows === undefined || gpu.fakeQuantRows === undefined) throw new Error('fakeQuantRows missing');
      const inp = new Inputs(format.length * 7 + (scale ?? 0) * 1000, dtype);
      const x = inp.floats(6 * 333, 3);
      for (let c = 0; c < 333; c++) x[333 + c] = 0; // a zero row: the epsilon scale
      for (let c = 0; c < 333; c++) x[666 + c] = roundTo(dtype, Float32Array.of(x[666 + c]! * 1e-3))[0]!;
      x[3] = 40; // one large value: everything else in row 0 is small against its scale
      const [cx, gx] = both(cpu, gpu, x, [6, 333]);
      cpu.fakeQuantRows(cx, { format, scale });
      gpu.fakeQuantRows(gx, { format, scale });
      // f32: bit-exact; bf16/f16: the cpu result rounded once more to the dtype
      const want = roundTo(dtype, cpu.download(cx));
      const check = compare(name, dtype, gpu.download(gx), want, dtype === 'f32' ? 0 : tolerance(dtype));
      freeAll(gpu, gx);
      return [check];
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
    matmulCase(1, 300, 512, true), // GEMV, 16-byte vectors
    matmulCase(4, 515, 1024, false),
    matmulCase(1, 131, 2056, true), // GEMV M=1: a full 8-load chunk, then one vector (lane 0 only)
    matmulCase(1, 64, 4096, false, 1), // GEMV M=1: two full chunks, x a row view
    matmulCase(8, 64, 2056, true),
    matmulCase(9, 70, 256, false), // just past the GEMV range: cuBLASLt
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
    attentionCase('decode split b1', { batch: 1, seqQ: 1, kvLen: 2000, kvStride: 2048, nHead: 32, nKvHead: 8, headDim: 64 }),
    attentionCase('decode split b32', { batch: 32, seqQ: 1, kvLen: 576, kvStride: 600, nHead: 32, nKvHead: 8, headDim: 64 }),
    attentionCase('decode split b16 seqQ 2 d40', { batch: 16, seqQ: 2, kvLen: 700, kvStride: 709, nHead: 6, nKvHead: 3, headDim: 40 }),
    attentionCase('decode MQA group 12', { batch: 2, seqQ: 2, kvLen: 700, kvStride: 701, nHead: 12, nKvHead: 1, headDim: 32 }),
    attentionCase('decode d128 window', { batch: 4, seqQ: 1, kvLen: 900, kvStride: 1000, nHead: 8, nKvHead: 2, headDim: 128, window: 300 }),
    attentionCase('tensor-core prefill d64', { batch: 2, seqQ: 130, kvLen: 130, kvStride: 130, nHead: 8, nKvHead: 2, headDim: 64 }),
    attentionCase('tensor-core chunked d64', { batch: 1, seqQ: 70, kvLen: 300, kvStride: 320, nHead: 4, nKvHead: 4, headDim: 64 }),
    attentionCase('tensor-core window d128', { batch: 1, seqQ: 200, kvLen: 200, kvStride: 200, nHead: 4, nKvHead: 1, headDim: 128, window: 77 }),
    scoreCase(11, 1037),
    scoreCase(6, 32000),
    scoreCase(5, 50000, 0.02),
    fakeQuantCase('int8'),
    fakeQuantCase('fp8_e4m3'),
    fakeQuantCase('int8', 0.0123),
    fakeQuantCase('fp8_e4m3', 0.01),
  ];
}

export interface CaseRun {
  checks: Check[];
  failures: string[];
}

/** Runs the cases `filter` keeps on one GPU device against the cpu device; an exception becomes a failed check. */
export function runCaseList(cases: readonly OpCase[], cpu: Device, gpu: Device, dtype: ComputeDType, filter?: (name: string) => boolean): CaseRun {
  const checks: Check[] = [];
  for (const c of cases) {
    if (filter && !filter(c.name)) continue;
    try {
      checks.push(...c.run(cpu, gpu, dtype));
    } catch (e) {
      checks.push({ case: c.name, dtype, error: Infinity, tol: 0, ok: false, note: `threw: ${(e as Error).message}` });
    }
  }
  return { checks, failures: checks.filter((c) => !c.ok).map((c) => `${c.dtype} ${c.case}: ${c.note ?? `error ${c.error}`}`) };
}

/** Runs every case on one GPU device against the cpu device; exceptions become failed checks. */
export function runCases(cpu: Device, gpu: Device, dtype: ComputeDType, filter?: (name: string) => boolean): CaseRun {
  return runCaseList(opCases(), cpu, gpu, dtype, filter);
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
  guard('sampleAt', () => {
    const rows = 5, V = 3001;
    const logits = gpu.upload(inp.floats(rows * V, 6), [rows, V]);
    const want = gpu.scoreLogits(logits, new Int32Array(rows).fill(-1)).argmax;
    const ids = gpu.allocInts(rows), step = gpu.allocInts(1), history = gpu.allocInts(rows * 4);
    const read = () => gpu.readIntsAsync(ids, 0, rows).wait();
    let bad = 0;
    gpu.sampleAt(logits, { temperature: 0, topK: 0, seed: 0 }, ids, step, history);
    const greedy = read();
    gpu.sampleAt(logits, { temperature: 0.7, topK: 1, seed: 5 }, ids, step);
    const k1 = read();
    for (let r = 0; r < rows; r++) if (greedy[r] !== want[r] || k1[r] !== want[r]) bad++;
    checks.push({ case: 'sampleAt greedy and top-k 1 = scoreLogits argmax', dtype, error: bad, tol: 0, ok: bad === 0 });
    {
      // Rows the vectorized argmax takes (V a multiple of the 16-byte vector), with a planted tie: lowest index wins.
      const Vv = 8200;
      const data = inp.floats(rows * Vv, 6);
      for (let r = 0; r < rows; r++) data[r * Vv + 7 + 1000 * r] = data[r * Vv + Vv - 3 - r] = 7;
      const lv = gpu.upload(data, [rows, Vv]);
      const wantV = gpu.scoreLogits(lv, new Int32Array(rows).fill(-1)).argmax;
      gpu.sampleAt(lv, { temperature: 0, topK: 0, seed: 0 }, ids, step);
      const gotV = read();
      let badV = 0;
      for (let r = 0; r < rows; r++) if (gotV[r] !== wantV[r] || gotV[r] !== 7 + 1000 * r) badV++;
      checks.push({ case: `sampleAt greedy V ${Vv} (vector loads), ties → lowest index`, dtype, error: badV, tol: 0, ok: badV === 0 });
      gpu.free(lv);
    }
    const host = gpu.download(logits);
    const draws: Int32Array[] = [];
    for (let s = 0; s < 3; s++) {
      gpu.setInts(step, Int32Array.of(s));
      gpu.sampleAt(logits, { temperature: 1.5, topK: 20, seed: 99 }, ids, step, history);
      draws.push(read());
    }
    gpu.setInts(step, Int32Array.of(0));
    gpu.sampleAt(logits, { temperature: 1.5, topK: 20, seed: 99 }, ids, step, history);
    const again = read();
    let outside = 0, differ = 0;
    for (let r = 0; r < rows; r++) {
      const row = host.subarray(r * V, (r + 1) * V);
      const kth = Float32Array.from(row).sort()[V - 20]!;
      for (const d of draws) if (!(row[d[r]!]! >= kth)) outside++;
      if (again[r] !== draws[0]![r]) differ++;
    }
    const distinct = new Set(draws.flatMap((d) => [...d])).size;
    checks.push({ case: 'sampleAt top-k 20: draws in the top 20, same seed+step = same ids', dtype, error: outside + differ, tol: 0, ok: outside + differ === 0 && distinct > rows, note: `distinct ${distinct}` });
    const hist = gpu.readIntsAsync(history, 0, rows * 3).wait();
    let histBad = 0;
    for (let s = 0; s < 3; s++) for (let r = 0; r < rows; r++) if (hist[s * rows + r] !== (s === 0 ? again[r] : draws[s]![r])) histBad++;
    checks.push({ case: 'sampleAt history rows by step', dtype, error: histBad, tol: 0, ok: histBad === 0 });
    gpu.free(logits);
    for (const t of [ids, step, history]) gpu.freeInts(t);
  });

  guard('decodeAdvance', () => {
    const pos = gpu.allocInts(3), lens = gpu.allocInts(3), step = gpu.allocInts(1);
    gpu.setInts(pos, Int32Array.of(4, 9, 0));
    gpu.setInts(lens, Int32Array.of(5, 10, 1));
    gpu.setInts(step, Int32Array.of(7));
    gpu.decodeAdvance(pos, lens, step, 3);
    gpu.decodeAdvance(pos, lens, step, 3);
    const got = [...gpu.readIntsAsync(pos, 0, 3).wait(), ...gpu.readIntsAsync(lens, 0, 3).wait(), ...gpu.readIntsAsync(step, 0, 1).wait()];
    const want = [6, 11, 2, 7, 12, 3, 9];
    const bad = got.filter((v, i) => v !== want[i]).length;
    checks.push({ case: 'decodeAdvance twice', dtype, error: bad, tol: 0, ok: bad === 0, note: bad ? `got ${got.join(',')}` : undefined });
    for (const t of [pos, lens, step]) gpu.freeInts(t);
  });
  guard('fused decode ops = their unfused compositions', () => {
    // addRmsNorm: exact
    const rows = 3, C = 1000;
    const x0 = inp.floats(rows * C, 2), y0 = inp.floats(rows * C, 2), w0 = inp.floats(C, 1.5);
    const xa = gpu.upload(x0, [rows, C]), xb = gpu.upload(x0, [rows, C]), y = gpu.upload(y0, [rows, C]), w = gpu.upload(w0, [C]);
    const oa = gpu.empty([rows, C]), ob = gpu.empty([rows, C]);
    gpu.addRmsNorm(oa, xa, y, w, 1e-5);
    gpu.addInPlace(xb, y);
    gpu.rmsNorm(ob, xb, w, 1e-5);
    exact('addRmsNorm = addInPlace + rmsNorm (norm)', gpu.download(oa), gpu.download(ob));
    exact('addRmsNorm = addInPlace + rmsNorm (residual)', gpu.download(xa), gpu.download(xb));
    for (const t of [xa, xb, y, w, oa, ob]) gpu.free(t);

    // matmulMany: exact against separate matmuls (GEMV path at M 1 and 3, cuBLASLt at M 12)
    for (const M of [1, 3, 12]) {
      const K = 256, Ns = [96, 32, 32];
      const x = gpu.upload(inp.floats(M * K), [M, K]);
      const ws = Ns.map((n) => gpu.upload(inp.floats(n * K, 0.5), [n, K]));
      const bs = [gpu.upload(inp.floats(96), [96]), undefined, gpu.upload(inp.floats(32), [32])];
      const got = Ns.map((n) => gpu.empty([M, n])), want = Ns.map((n) => gpu.empty([M, n]));
      gpu.matmulMany(got, x, ws, bs);
      Ns.forEach((_, i) => gpu.matmul(want[i]!, x, ws[i]!, bs[i]));
      Ns.forEach((_, i) => exact(`matmulMany M${M} output ${i}`, gpu.download(got[i]!), gpu.download(want[i]!)));
      for (const t of [x, ...ws, ...got, ...want, bs[0]!, bs[2]!]) gpu.free(t);
    }

    // matmulSiluMul: f32 inside vs gate/up rounded to the dtype first → the dtype's tolerance
    for (const [M, K] of [[1, 512], [1, 1304], [5, 512], [11, 512]] as const) {
      const N = 300;
      const x = gpu.upload(inp.floats(M * K), [M, K]);
      const wg = gpu.upload(inp.floats(N * K, 0.2), [N, K]), wu = gpu.upload(inp.floats(N * K, 0.2), [N, K]);
      const gate = gpu.empty([M, N]), up = gpu.empty([M, N]), got = gpu.empty([M, N]), want = gpu.empty([M, N]);
      gpu.matmulSiluMul(got, x, wg, wu, gate, up);
      gpu.matmul(gate, x, wg);
      gpu.matmul(up, x, wu);
      gpu.siluMul(want, gate, up);
      checks.push(compare(`matmulSiluMul M${M} K${K} = matmul, matmul, siluMul`, dtype, gpu.download(got), gpu.download(want), 2 * tolerance(dtype)));
      for (const t of [x, wg, wu, gate, up, got, want]) gpu.free(t);
    }

    // ropeWriteKvAt: exact against ropeAt ×2 + writeKvAt ×2
    {
      const batch = 3, nH = 4, nKv = 2, hd = 32, rot = 16, stride = 20, D = nKv * hd;
      const pos = Int32Array.of(5, 0, 19);
      const posDev = gpu.allocInts(batch);
      gpu.setInts(posDev, pos);
      const q0 = inp.floats(batch * nH * hd), k0 = inp.floats(batch * D), v0 = inp.floats(batch * D), c0 = inp.floats(batch * stride * D);
      const cos = gpu.upload(inp.floats(32 * (rot / 2)), [32, rot / 2]), sin = gpu.upload(inp.floats(32 * (rot / 2)), [32, rot / 2]);
      const mk = () => ({ q: gpu.upload(q0, [batch, nH * hd]), k: gpu.upload(k0, [batch, D]), v: gpu.upload(v0, [batch, D]),
        ck: gpu.upload(c0, [batch * stride, D]), cv: gpu.upload(c0, [batch * stride, D]) });
      const a = mk(), b = mk();
      gpu.ropeWriteKvAt(a.q, a.k, a.v, a.ck, a.cv, posDev, batch, 1, cos, sin, nH, nKv, hd, rot, stride);
      gpu.ropeAt(b.q, posDev, batch, cos, sin, nH, hd, rot);
      gpu.ropeAt(b.k, posDev, batch, cos, sin, nKv, hd, rot);
      gpu.writeKvAt(b.ck, b.k, batch, 1, posDev, stride);
      gpu.writeKvAt(b.cv, b.v, batch, 1, posDev, stride);
      exact('ropeWriteKvAt q', gpu.download(a.q), gpu.download(b.q));
      exact('ropeWriteKvAt cacheK', gpu.download(a.ck), gpu.download(b.ck));
      exact('ropeWriteKvAt cacheV', gpu.download(a.cv), gpu.download(b.cv));
      for (const t of [cos, sin, ...Object.values(a), ...Object.values(b)]) gpu.free(t);
      gpu.freeInts(posDev);
    }

    // qkvRopeKvAt (q/k/v GEMV + rope + KV append in one launch) against matmulMany + ropeWriteKvAt:
    // the same sums and roundings (bit-equal on the H200 in bf16/f16; f32 within an ulp, FMA placement).
    for (const [M, K, withBias] of [[1, 256, false], [3, 200, true], [1, 2056, true], [4, 1000, false]] as const) {
      const nH = 6, nKv = 2, hd = 32, stride = 23, D = nKv * hd;
      const pos = Int32Array.from({ length: M }, (_, b) => [5, 0, 22, 11][b]!);
      const posDev = gpu.allocInts(M);
      gpu.setInts(posDev, pos);
      const cos = gpu.upload(inp.floats(32 * (hd / 2)), [32, hd / 2]), sin = gpu.upload(inp.floats(32 * (hd / 2)), [32, hd / 2]);
      const x = gpu.upload(inp.floats(M * K), [M, K]);
      const wq = gpu.upload(inp.floats(nH * hd * K, 0.3), [nH * hd, K]), wk = gpu.upload(inp.floats(D * K, 0.3), [D, K]), wv = gpu.upload(inp.floats(D * K, 0.3), [D, K]);
      const bq = withBias ? gpu.upload(inp.floats(nH * hd), [nH * hd]) : undefined, bv = withBias ? gpu.upload(inp.floats(D), [D]) : undefined;
      const c0 = inp.floats(M * stride * D);
      const mk = () => ({ q: gpu.empty([M, nH * hd]), k: gpu.empty([M, D]), v: gpu.empty([M, D]), ck: gpu.upload(c0, [M * stride, D]), cv: gpu.upload(c0, [M * stride, D]) });
      const a = mk(), b = mk();
      const did = gpu.qkvRopeKvAt({ q: a.q, cacheK: a.ck, cacheV: a.cv, x, wq, wk, wv, bq, bv, positions: posDev, cos, sin,
        nHeads: nH, nKvHeads: nKv, headDim: hd, rotaryDim: hd, kvStride: stride });
      gpu.matmulMany([b.q, b.k, b.v], x, [wq, wk, wv], [bq, undefined, bv]);
      gpu.ropeWriteKvAt(b.q, b.k, b.v, b.ck, b.cv, posDev, M, 1, cos, sin, nH, nKv, hd, hd, stride);
      const label = `qkvRopeKvAt M${M} K${K}${withBias ? ' +bias' : ''}`;
      checks.push({ case: `${label}: applies`, dtype, error: did ? 0 : 1, tol: 0, ok: did });
      const tol = dtype === 'f32' ? 1e-6 : 0;
      checks.push(compare(`${label} q`, dtype, gpu.download(a.q), gpu.download(b.q), tol));
      checks.push(compare(`${label} cacheK`, dtype, gpu.download(a.ck), gpu.download(b.ck), tol));
      checks.push(compare(`${label} cacheV`, dtype, gpu.download(a.cv), gpu.download(b.cv), tol));
      for (const t of [cos, sin, x, wq, wk, wv, ...(bq ? [bq] : []), ...(bv ? [bv] : []), ...Object.values(a), ...Object.values(b)]) gpu.free(t);
      gpu.freeInts(posDev);
    }
  });

  return { checks, failures: checks.filter((c) => !c.ok).map((c) => `${c.dtype} ${c.case}: ${c.note ?? `error ${c.error}`}`) };
}

