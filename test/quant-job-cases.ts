// Quantization-job ops (Device.quantJob) on the GPU against the cpu reference, on seeded random
// inputs of awkward shapes. Shared by test/quant-job-cuda.test.ts (vitest, where a GPU exists) and
// scripts/gpu/run-cuda-tests.ts (the bundled runner on the GPU machine).
//
// deq outputs are compared after rounding to the GPU device's own dtype (in --self-test the "GPU"
// is a second cpu device, f32 in every pass).
// Both devices get identical inputs (activations rounded to the GPU dtype first; Hessians built once
// on the cpu and uploaded to both). Statistics, observers and RTN must match exactly; the float64
// cpu and the float32 GPU differ in the linear algebra by rounding only, so Cholesky, the inverse
// and U compare with relative tolerances, and GPTQ by the codes (fraction that differ, largest
// difference in quantization steps) and its loss.

import type { ComputeDType, Device, Tensor } from '../src/tensor/device.js';
import { seededRandom } from '../src/random.js';
import { weightGrid, type QuantJobOps, type QuantValueArgs, type WeightQParams } from '../src/tensor/quant-job.js';
import { dequantizeValue, quantRange } from '../src/tensor/quant-math.js';
import { roundTo, runCaseList, type CaseRun, type Check } from './cuda-cases.js';

export interface QuantJobCase {
  name: string;
  /** Runs once (f32 pass) when its inputs and outputs do not depend on the device dtype. */
  f32Only?: boolean;
  run(cpu: Device, gpu: Device, dtype: ComputeDType): Check[];
}

/** Largest share of GPTQ codes the f32 GPU may quantize differently from the f64 cpu (a rounding at a decision boundary then propagates along the row). */
export const GPTQ_CODE_MISMATCH_TOL = 0.03;
/** Largest difference of one GPTQ code, in quantization steps. */
export const GPTQ_CODE_STEP_TOL = 3;
/** Largest relative difference of GPTQ's loss. */
export const GPTQ_LOSS_TOL = 0.02;

function qjOf(d: Device): QuantJobOps {
  if (d.quantJob === undefined) throw new Error(`the ${d.kind} device has no quantJob`);
  return d.quantJob;
}

function normals(seed: number): () => number {
  const u = seededRandom(seed);
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

/** max |got − want| / max |want| (or max |Δ| when want is all zeros, which then fails). */
function relCheck(name: string, dtype: ComputeDType, got: ArrayLike<number>, want: ArrayLike<number>, tol: number, extra?: string): Check {
  if (got.length !== want.length) return { case: name, dtype, error: Infinity, tol, ok: false, note: `length ${got.length} vs ${want.length}` };
  let maxRef = 0, maxDiff = 0, worst = -1;
  for (let i = 0; i < want.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want[i]!));
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= maxDiff)) {
      maxDiff = Number.isNaN(d) ? Infinity : d;
      worst = i;
    }
  }
  const error = maxRef > 0 ? maxDiff / maxRef : maxDiff;
  const ok = error <= tol && maxRef > 0;
  const note = maxRef === 0 ? 'reference is all zeros' : !ok ? `worst at ${worst}: gpu ${got[worst]} cpu ${want[worst]}` : extra;
  return { case: name, dtype, error, tol, ok, note };
}

/** Count of positions where got ≠ want (bitwise for floats). */
function exactCheck(name: string, dtype: ComputeDType, got: ArrayLike<number>, want: ArrayLike<number>): Check {
  if (got.length !== want.length) return { case: name, dtype, error: Infinity, tol: 0, ok: false, note: `length ${got.length} vs ${want.length}` };
  let bad = 0, first = -1;
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i]) && !(got[i] === 0 && want[i] === 0)) {
      bad++;
      if (first < 0) first = i;
    }
  }
  return { case: name, dtype, error: bad, tol: 0, ok: bad === 0 && want.length > 0, note: bad ? `${bad}/${want.length} differ, first at ${first}: gpu ${got[first]} cpu ${want[first]}` : undefined };
}

/** A quantization code's position on its grid: the integer itself, or the E4M3 value's rank. */
function codeStep(code: number, float: boolean): number {
  if (!float) return code;
  const mag = code & 0x7f;
  return code & 0x80 ? -mag : mag;
}

function both(cpu: Device, gpu: Device, data: Float32Array, shape: number[], f32: boolean): [Tensor, Tensor] {
  return f32 ? [qjOf(cpu).uploadF32(data, shape), qjOf(gpu).uploadF32(data, shape)] : [cpu.upload(data, shape), gpu.upload(data, shape)];
}

function freeAll(d: Device, ...ts: Tensor[]): void {
  for (const t of ts) d.free(t);
}

/** Activations [rows, K] with per-channel scales, a few outlier channels and shared latent directions (correlated, like a layer's inputs). */
function activations(rows: number, K: number, seed: number, deadCols = 0): Float32Array {
  const g = normals(seed);
  const latent = Array.from({ length: 6 }, () => Float32Array.from({ length: K }, () => g()));
  const colScale = Float32Array.from({ length: K }, (_, c) => (c % 17 === 3 ? 8 : 0.5 + ((c * 7919) % 13) / 13));
  const x = new Float32Array(rows * K);
  for (let r = 0; r < rows; r++) {
    const a = latent.map(() => g() * 2);
    for (let c = 0; c < K; c++) {
      let v = g() * colScale[c]!;
      for (let l = 0; l < latent.length; l++) v += a[l]! * latent[l]![c]!;
      x[r * K + c] = c < deadCols ? 0 : v;
    }
  }
  return x;
}

/** A random SPD matrix [n, n]: XᵀX/rows of correlated activations (cpu op) plus 0.05·mean(diag)·I. */
function spd(cpu: Device, n: number, seed: number): Float32Array {
  const qj = qjOf(cpu);
  const rows = Math.min(2 * n, 1500);
  const h = qj.zerosF32([n, n]);
  const x = cpu.upload(activations(rows, n, seed), [rows, n]);
  qj.hessianAccumulate(h, x, 1 / rows);
  const a = cpu.download(h);
  let mean = 0;
  for (let i = 0; i < n; i++) mean += a[i * n + i]! / n;
  for (let i = 0; i < n; i++) a[i * n + i] += 0.05 * mean;
  freeAll(cpu, h, x);
  return a;
}

// --- statistics -------------------------------------------------------------------------------

function hessianCase(K: number, rows: [number, number]): QuantJobCase {
  return {
    name: `quantJob.hessianAccumulate K${K} rows ${rows.join('+')}`,
    run(cpu, gpu, dtype) {
      const hs: Float32Array[] = [];
      const xs = rows.map((r, i) => roundTo(dtype, activations(r, K, K * 13 + i)));
      for (const d of [cpu, gpu]) {
        const qj = qjOf(d);
        const h = qj.zerosF32([K, K]);
        for (let i = 0; i < xs.length; i++) {
          const x = d.upload(xs[i]!, [rows[i]!, K]);
          qj.hessianAccumulate(h, x, 2 / 7);
          d.free(x);
        }
        hs.push(d.download(h));
        d.free(h);
      }
      return [relCheck(this.name, dtype, hs[1]!, hs[0]!, 2e-5)];
    },
  };
}

function statsCase(K: number, rows: number): QuantJobCase {
  return {
    name: `quantJob.channelRange/absMax/accumulateErrors K${K} rows ${rows}`,
    run(cpu, gpu, dtype) {
      const x = roundTo(dtype, activations(rows, K, K + rows));
      const y = roundTo(dtype, activations(rows, K, K + rows + 1));
      const yq = roundTo(dtype, y.map((v, i) => v + (i % 7 === 0 ? 0.01 * v : 0)));
      const out: { min: Float32Array; max: Float32Array; abs: number; sums: number[] }[] = [];
      for (const d of [cpu, gpu]) {
        const qj = qjOf(d);
        const min = qj.uploadF32(new Float32Array(K).fill(Infinity), [K]);
        const max = qj.uploadF32(new Float32Array(K).fill(-Infinity), [K]);
        const acc = qj.zerosF32([1]);
        const [tx, ty, tq] = [x, y, yq].map((v) => d.upload(v, [rows, K]));
        qj.channelRange(min, max, tx!);
        qj.channelRange(min, max, ty!);
        qj.absMax(acc, tx!);
        qj.absMax(acc, ty!);
        const sums = { diff2: 0, ref2: 0, update2: 0 };
        qj.accumulateErrors(sums, tq!, ty!, tx!);
        qj.accumulateErrors(sums, tq!, ty!, tx!);
        out.push({ min: d.download(min), max: d.download(max), abs: d.download(acc)[0]!, sums: [sums.diff2, sums.ref2, sums.update2] });
        freeAll(d, min, max, acc, tx!, ty!, tq!);
      }
      const [c, g] = out as [(typeof out)[0], (typeof out)[0]];
      return [
        exactCheck(`${this.name}: min`, dtype, g.min, c.min),
        exactCheck(`${this.name}: max`, dtype, g.max, c.max),
        exactCheck(`${this.name}: absMax`, dtype, [g.abs], [c.abs]),
        relCheck(`${this.name}: error sums`, dtype, g.sums, c.sums, 1e-9),
      ];
    },
  };
}

function scaleHessianCase(K: number): QuantJobCase {
  return {
    name: `quantJob.scaleHessian K${K}`,
    f32Only: true,
    run(cpu, gpu, dtype) {
      const h = spd(cpu, K, K);
      const u = seededRandom(K);
      const s = Float64Array.from({ length: K }, () => 0.1 + 3 * u());
      const got = [cpu, gpu].map((d) => {
        const t = qjOf(d).uploadF32(h, [K, K]);
        qjOf(d).scaleHessian(t, s);
        const v = d.download(t);
        d.free(t);
        return v;
      });
      return [exactCheck(this.name, dtype, got[1]!, got[0]!)];
    },
  };
}

// --- linear algebra ---------------------------------------------------------------------------

function choleskyCase(n: number): QuantJobCase {
  return {
    name: `quantJob.cholesky + choleskyInverse n${n}`,
    f32Only: true,
    run(cpu, gpu, dtype) {
      const a = spd(cpu, n, 7 * n);
      const ls: Float32Array[] = [], invs: Float32Array[] = [], oks: boolean[] = [];
      for (const d of [cpu, gpu]) {
        const qj = qjOf(d);
        const t = qj.uploadF32(a, [n, n]);
        oks.push(qj.cholesky(t));
        ls.push(d.download(t));
        const inv = qj.zerosF32([n, n]);
        qj.choleskyInverse(t, inv);
        invs.push(d.download(inv));
        freeAll(d, t, inv);
      }
      // A non-positive-definite matrix: both devices say so.
      const bad = Float32Array.from(a);
      bad[(n >> 1) * n + (n >> 1)] = -1;
      const badOk = [cpu, gpu].map((d) => {
        const t = qjOf(d).uploadF32(bad, [n, n]);
        const ok = qjOf(d).cholesky(t);
        d.free(t);
        return ok;
      });
      return [
        { case: `${this.name}: positive definite`, dtype, error: oks[0] && oks[1] ? 0 : 1, tol: 0, ok: oks[0] === true && oks[1] === true },
        relCheck(`${this.name}: L`, dtype, ls[1]!, ls[0]!, 1e-4),
        relCheck(`${this.name}: (L Lᵀ)⁻¹`, dtype, invs[1]!, invs[0]!, 2e-3),
        { case: `${this.name}: not positive definite → false`, dtype, error: badOk[0] || badOk[1] ? 1 : 0, tol: 0, ok: !badOk[0] && !badOk[1] },
      ];
    },
  };
}

// --- weights ----------------------------------------------------------------------------------

type SchemeArgs = QuantValueArgs & { strategy: 'tensor' | 'channel' | 'group'; group_size: number | null };
const INT4 = (group: number | 'channel', symmetric = true): SchemeArgs => ({
  num_bits: 4, type: 'int', symmetric, strategy: group === 'channel' ? 'channel' : 'group', group_size: group === 'channel' ? null : group,
});
const INT8_CHANNEL: SchemeArgs = { num_bits: 8, type: 'int', symmetric: true, strategy: 'channel', group_size: null };
const FP8_TENSOR: SchemeArgs = { num_bits: 8, type: 'float', symmetric: true, strategy: 'tensor', group_size: null };
const FP8_CHANNEL: SchemeArgs = { ...FP8_TENSOR, strategy: 'channel' };

function describe(a: SchemeArgs): string {
  const kind = a.type === 'float' ? 'fp8' : `int${a.num_bits}`;
  return `${kind} ${a.strategy === 'group' ? `g${a.group_size}` : a.strategy}${a.symmetric ? '' : ' asym'}`;
}

function weights(rows: number, cols: number, seed: number): Float32Array {
  const g = normals(seed);
  // Heavier tails in a few rows/columns, so clipping (MSE) and group scales matter.
  return Float32Array.from({ length: rows * cols }, (_, i) => g() * 0.05 * ((i % cols) % 11 === 0 ? 4 : 1) * (Math.floor(i / cols) % 9 === 0 ? 3 : 1));
}

function observerRtnCase(rows: number, cols: number, args: SchemeArgs, observer: 'minmax' | 'mse'): QuantJobCase {
  return {
    name: `quantJob.observeWeight(${observer}) + quantizeRtn [${rows},${cols}] ${describe(args)}`,
    run(cpu, gpu, dtype) {
      const w = weights(rows, cols, rows * 31 + cols);
      const grid = weightGrid(rows, cols, args);
      const res = [cpu, gpu].map((d) => {
        const qj = qjOf(d);
        const wt = qj.uploadF32(w, [rows, cols]);
        const qp = qj.observeWeight(wt, grid, args, observer, 'BF16');
        const deq = d.empty([rows, cols]);
        const codes = qj.quantizeRtn(wt, qp, args, deq);
        const deqHost = d.download(deq);
        freeAll(d, wt, deq);
        return { qp, codes, deq: deqHost };
      });
      const [c, g] = res as [(typeof res)[0], (typeof res)[0]];
      const checks = [
        exactCheck(`${this.name}: scales`, dtype, g.qp.scale, c.qp.scale),
        exactCheck(`${this.name}: zero points`, dtype, g.qp.zeroPoint, c.qp.zeroPoint),
      ];
      // RTN with the cpu's own scales on both sides: codes exact, deq exact after the dtype's rounding.
      const rtn = [cpu, gpu].map((d) => {
        const qj = qjOf(d);
        const wt = qj.uploadF32(w, [rows, cols]);
        const deq = d.empty([rows, cols]);
        const codes = qj.quantizeRtn(wt, c.qp, args, deq);
        const v = d.download(deq);
        freeAll(d, wt, deq);
        return { codes, deq: v };
      });
      checks.push(exactCheck(`${this.name}: RTN codes`, dtype, rtn[1]!.codes, rtn[0]!.codes));
      checks.push(exactCheck(`${this.name}: RTN deq`, dtype, rtn[1]!.deq, roundTo(gpu.dtype, rtn[0]!.deq)));
      return checks;
    },
  };
}

/** everyDtype: also run in the bf16/f16 passes (deq is written in the device dtype). */
function gptqCase(rows: number, cols: number, args: SchemeArgs, actorder: boolean, deadCols: number, blockSize = 128, everyDtype = false): QuantJobCase {
  return {
    name: `quantJob.gptq [${rows},${cols}] ${describe(args)}${actorder ? ' act-order' : ''}${deadCols ? ` ${deadCols} dead` : ''}${blockSize !== 128 ? ` block ${blockSize}` : ''}`,
    f32Only: !everyDtype,
    run(cpu, gpu, dtype) {
      const samples = 9;
      const tokens = Math.min(2 * cols, 1500);
      const cq = qjOf(cpu);
      const ht = cq.zerosF32([cols, cols]);
      const xt = cpu.upload(activations(tokens, cols, cols + rows, deadCols), [tokens, cols]);
      cq.hessianAccumulate(ht, xt, 2 / samples);
      const h = cpu.download(ht);
      freeAll(cpu, ht, xt);
      const w = weights(rows, cols, rows + 3 * cols);
      const grid = weightGrid(rows, cols, args);
      const range = quantRange(args);
      let qp: WeightQParams | undefined;
      const res = [cpu, gpu].map((d) => {
        const qj = qjOf(d);
        const hd = qj.uploadF32(h, [cols, cols]);
        const wt = qj.uploadF32(w, [rows, cols]);
        const factor = qj.gptqPrepare(hd, { dampening: 0.01, actorder });
        qp ??= qj.observeWeight(wt, grid, args, 'minmax', 'F32'); // the cpu's scales for both
        const deq = d.empty([rows, cols]);
        const r = qj.gptqQuantize(wt, factor, qp, args, blockSize, deq);
        const out = { ok: factor.ok, perm: factor.perm, dead: factor.dead, u: factor.readU(), codes: r.codes, loss: r.loss, deq: d.download(deq) };
        factor.free();
        freeAll(d, hd, wt, deq);
        return out;
      });
      const [c, g] = res as [(typeof res)[0], (typeof res)[0]];
      let differ = 0, maxStep = 0;
      for (let i = 0; i < c.codes.length; i++) {
        const s = Math.abs(codeStep(g.codes[i]!, range.float) - codeStep(c.codes[i]!, range.float));
        if (s > 0) differ++;
        maxStep = Math.max(maxStep, s);
      }
      const share = differ / c.codes.length;
      // The GPU's deq must be its own codes dequantized (then rounded to the dtype).
      const own = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        for (let col = 0; col < cols; col++) {
          const k = grid.strategy === 'tensor' ? 0 : grid.strategy === 'channel' ? r : r * grid.groupsPerRow + Math.floor(col / grid.groupSize);
          own[r * cols + col] = dequantizeValue(g.codes[r * cols + col]!, qp!.scale[k]!, qp!.zeroPoint[k]!, range);
        }
      }
      const lossDiff = Math.abs(g.loss - c.loss) / Math.abs(c.loss);
      return [
        { case: `${this.name}: factor ok`, dtype, error: c.ok && g.ok ? 0 : 1, tol: 0, ok: c.ok && g.ok },
        exactCheck(`${this.name}: act-order permutation`, dtype, g.perm, c.perm),
        exactCheck(`${this.name}: dead columns`, dtype, g.dead, c.dead),
        relCheck(`${this.name}: U = chol(H⁻¹)ᵀ`, dtype, g.u, c.u, 2e-3),
        { case: `${this.name}: codes that differ (share)`, dtype, error: share, tol: GPTQ_CODE_MISMATCH_TOL, ok: share <= GPTQ_CODE_MISMATCH_TOL, note: `${differ}/${c.codes.length}, largest ${maxStep} step(s)` },
        { case: `${this.name}: largest code difference (steps)`, dtype, error: maxStep, tol: GPTQ_CODE_STEP_TOL, ok: maxStep <= GPTQ_CODE_STEP_TOL },
        { case: `${this.name}: loss`, dtype, error: lossDiff, tol: GPTQ_LOSS_TOL, ok: lossDiff <= GPTQ_LOSS_TOL && c.loss > 0, note: `gpu ${g.loss.toPrecision(6)} cpu ${c.loss.toPrecision(6)}` },
        exactCheck(`${this.name}: deq = its codes dequantized`, dtype, g.deq, roundTo(gpu.dtype, own)),
      ];
    },
  };
}

export function quantJobCases(): QuantJobCase[] {
  return [
    hessianCase(37, [301, 77]),
    hessianCase(200, [129, 1003]),
    hessianCase(1000, [333, 65]),
    hessianCase(2056, [130, 17]),
    statsCase(37, 301),
    statsCase(200, 1003),
    statsCase(1000, 77),
    statsCase(2056, 130),
    scaleHessianCase(37),
    scaleHessianCase(1000),
    choleskyCase(37),
    choleskyCase(200),
    choleskyCase(1000),
    choleskyCase(2056),
    observerRtnCase(37, 256, INT4(32), 'minmax'),
    observerRtnCase(37, 256, INT4(32, false), 'mse'),
    observerRtnCase(101, 1152, INT4(128), 'mse'),
    observerRtnCase(200, 1000, INT4('channel'), 'minmax'),
    observerRtnCase(77, 2056, INT8_CHANNEL, 'mse'),
    observerRtnCase(300, 200, FP8_CHANNEL, 'mse'),
    observerRtnCase(37, 1000, FP8_TENSOR, 'minmax'),
    observerRtnCase(129, 2056, FP8_TENSOR, 'mse'),
    gptqCase(37, 37, INT4('channel'), false, 0, 128, true),
    gptqCase(101, 200, INT4('channel'), true, 3),
    gptqCase(300, 1000, INT4('channel'), false, 0, 100),
    gptqCase(53, 2056, INT4('channel'), true, 5),
    gptqCase(77, 1152, INT4(128), false, 0),
    gptqCase(77, 1152, INT4(128), true, 2),
    gptqCase(45, 480, INT4(32, false), true, 0),
    gptqCase(45, 480, INT4(32), false, 0, 40),
    gptqCase(61, 200, INT8_CHANNEL, true, 0, 128, true),
    gptqCase(61, 200, FP8_CHANNEL, false, 0),
  ];
}

/** The cases for one device dtype (dtype-independent ones only in the f32 pass). */
export function runQuantJobCases(cpu: Device, gpu: Device, dtype: ComputeDType, filter?: (name: string) => boolean): CaseRun {
  return runCaseList(quantJobCases().filter((c) => !c.f32Only || dtype === 'f32'), cpu, gpu, dtype, filter);
}
