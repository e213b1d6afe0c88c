// Training-op comparison cases: every TrainingOps op of a GPU device against the cpu reference
// device's, on seeded random inputs of awkward shapes, plus whole-model checks (TrainableDecoder
// gradients on cuda vs cpu, AdamW steps lowering a distillation loss). Shared by
// test/cuda-train.test.ts (vitest, where a GPU exists) and scripts/gpu/run-cuda-tests.ts.
//
// As in cuda-cases.ts, compute-dtype inputs are rounded to the GPU dtype on the host, so both devices
// see the same values; f32 inputs (master weights, gradients being accumulated) are not rounded.
// Errors are max |gpu − cpu| / max |cpu| unless a case says otherwise.
// Tolerances: compute-dtype outputs as the inference ops (tolerance(dtype)); f32 outputs from
// 16-bit inputs 1e-4 (f32 device 2e-5); attention backward bf16 3e-2, f16 1e-2, f32 1e-4 (P and dS
// are rounded to the compute dtype before their GEMMs); loss values 1e-4; AdamW, embedding
// backward and topK ids/values exact; whole models (relative L2 over each gradient): f32 1e-4,
// bf16 1.5e-1, f16 3e-2 (loose: every activation is rounded to 16 bits on the GPU, not on the cpu; see tolModel).

import { TrainableDecoder } from '../src/model/train/index.js';
import type { ModelSpec } from '../src/model/spec.js';
import { seededRandom } from '../src/random.js';
import type { AttentionShape, ComputeDType, Device, DistillLossKind, Tensor, TeacherTopK, TrainingOps } from '../src/tensor/device.js';
import { CudaTrainingOps } from '../src/tensor/cuda/train-ops.js';
import { Inputs, both, compare, freeAll, ropeTestTables, roundTo, tolerance, type CaseRun, type Check, runCaseList, type OpCase } from './cuda-cases.js';
import { baseSpec, randomTensors, sourceOf } from './helpers/tiny-models.js';

function ops(d: Device): TrainingOps {
  if (d.training === undefined) throw new Error(`the ${d.kind} device has no training ops`);
  return d.training;
}

/** Tolerance of f32 outputs computed from compute-dtype inputs (f32 accumulation on both sides). */
function tolF32Out(dtype: ComputeDType): number {
  return dtype === 'f32' ? 2e-5 : 1e-4;
}

function tolAttentionBackward(dtype: ComputeDType): number {
  return dtype === 'f32' ? 1e-4 : dtype === 'bf16' ? 3e-2 : 1e-2;
}

const TOL_LOSS = 1e-4;

/** f32 uniform(−scale, scale), not rounded (masters, f32 gradients). */
function f32Values(seed: number, n: number, scale = 1): Float32Array {
  const next = seededRandom(seed);
  return Float32Array.from({ length: n }, () => (next() * 2 - 1) * scale);
}

function bothF32(cpu: Device, gpu: Device, data: Float32Array, shape: number[]): [Tensor, Tensor] {
  return [ops(cpu).uploadF32(data, shape), ops(gpu).uploadF32(data, shape)];
}

function f64(a: Float64Array): Float32Array {
  return Float32Array.from(a);
}

// --- elementwise, linear, norms, rotary --------------------------------------------------------

function castFillScaleCase(): OpCase {
  const name = 'castCopy f32→compute→f32, fill, scale [13,77]';
  return {
    name,
    run(cpu, gpu, dtype) {
      const data = f32Values(1, 13 * 77, 3);
      const checks: Check[] = [];
      const results = [cpu, gpu].map((d) => {
        const t = ops(d);
        const f = t.uploadF32(data, [13, 77]);
        const c = d.empty([13, 77]);
        t.castCopy(c, f);
        const back = t.emptyF32([13, 77]);
        t.castCopy(back, c);
        const roundTrip = d.download(back);
        t.fill(c, 0.3);
        const filled = d.download(c);
        t.scale(f, -1.5);
        const scaled = d.download(f);
        freeAll(d, f, c, back);
        return { roundTrip, filled, scaled };
      });
      const [c, g] = results as [typeof results[0], typeof results[0]];
      checks.push(compare(`${name}: castCopy round trip`, dtype, g.roundTrip, roundTo(gpu.dtype, c.roundTrip), 0));
      checks.push(compare(`${name}: fill 0.3`, dtype, g.filled, roundTo(gpu.dtype, c.filled), 0));
      checks.push(compare(`${name}: scale −1.5 (f32)`, dtype, g.scaled, c.scaled, 0));
      return checks;
    },
  };
}

function matmulGradCase(M: number, N: number, K: number): OpCase {
  const name = `matmulGradInput/Weight dy [${M},${N}] w [${N},${K}]`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(M * 7 + N * 3 + K, dtype);
      const dy = inp.floats(M * N), w = inp.floats(N * K, 0.5), x = inp.floats(M * K), dx0 = inp.floats(M * K);
      const dw0 = f32Values(M + N + K, N * K);
      const run = (d: Device) => {
        const t = ops(d);
        const [tdy, tw, tx] = [d.upload(dy, [M, N]), d.upload(w, [N, K]), d.upload(x, [M, K])];
        const dx = d.upload(dx0, [M, K]);
        t.matmulGradInput(dx, tdy, tw, false);
        const fresh = d.download(dx);
        const acc = d.upload(dx0, [M, K]);
        t.matmulGradInput(acc, tdy, tw, true);
        const accumulated = d.download(acc);
        const dw = t.uploadF32(dw0, [N, K]);
        t.matmulGradWeight(dw, tdy, tx);
        const weight = d.download(dw);
        freeAll(d, tdy, tw, tx, dx, acc, dw);
        return { fresh, accumulated, weight };
      };
      const c = run(cpu), g = run(gpu);
      return [
        compare(`${name}: dx = dy·w`, dtype, g.fresh, c.fresh),
        compare(`${name}: dx += dy·w`, dtype, g.accumulated, c.accumulated),
        compare(`${name}: dw += dyᵀ·x (f32)`, dtype, g.weight, c.weight, tolF32Out(dtype)),
      ];
    },
  };
}

function biasGradCase(M: number, N: number): OpCase {
  const name = `biasGrad dy [${M},${N}]`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const dy = new Inputs(M + N, dtype).floats(M * N);
      const db0 = f32Values(N, N);
      const run = (d: Device) => {
        const [tdy, db] = [d.upload(dy, [M, N]), ops(d).uploadF32(db0, [N])];
        ops(d).biasGrad(db, tdy);
        const out = d.download(db);
        freeAll(d, tdy, db);
        return out;
      };
      return [compare(name, dtype, run(gpu), run(cpu), tolF32Out(dtype))];
    },
  };
}

function normBackwardCase(kind: 'rms' | 'layer', rows: number, cols: number): OpCase {
  const name = `${kind}NormBackward [${rows},${cols}]`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(rows * 13 + cols, dtype);
      const x = inp.floats(rows * cols, 3), w = inp.floats(cols, 2), b = inp.floats(cols), dy = inp.floats(rows * cols), dx0 = inp.floats(rows * cols);
      const dw0 = f32Values(cols, cols), db0 = f32Values(cols + 1, cols);
      const run = (d: Device, accumulate: boolean) => {
        const t = ops(d);
        const [tx, tw, tb, tdy, dx] = [d.upload(x, [rows, cols]), d.upload(w, [cols]), d.upload(b, [cols]), d.upload(dy, [rows, cols]), d.upload(dx0, [rows, cols])];
        const [dw, db] = [t.uploadF32(dw0, [cols]), t.uploadF32(db0, [cols])];
        if (kind === 'rms') t.rmsNormBackward(dx, dw, tdy, tx, tw, 1e-5, accumulate);
        else t.layerNormBackward(dx, dw, db, tdy, tx, tw, tb, 1e-5, accumulate);
        const out = { dx: d.download(dx), dw: d.download(dw), db: d.download(db) };
        freeAll(d, tx, tw, tb, tdy, dx, dw, db);
        return out;
      };
      const checks: Check[] = [];
      for (const accumulate of [false, true]) {
        const c = run(cpu, accumulate), g = run(gpu, accumulate);
        const tag = `${name}${accumulate ? ' (dx +=)' : ''}`;
        checks.push(compare(`${tag}: dx`, dtype, g.dx, c.dx, 2 * tolerance(dtype)));
        checks.push(compare(`${tag}: dw (f32)`, dtype, g.dw, c.dw, tolF32Out(dtype)));
        if (kind === 'layer') checks.push(compare(`${tag}: db (f32)`, dtype, g.db, c.db, tolF32Out(dtype)));
      }
      return checks;
    },
  };
}

function ropeBackwardCase(rows: number, nHeads: number, headDim: number, rotaryDim: number): OpCase {
  const name = `ropeBackward rows ${rows} heads ${nHeads} headDim ${headDim} rotary ${rotaryDim}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(rows * 29 + rotaryDim, dtype);
      const maxPos = 50, half = rotaryDim / 2;
      const { cos, sin } = ropeTestTables(maxPos, rotaryDim);
      const x = inp.floats(rows * nHeads * headDim, 2);
      const positions = inp.ints(rows, maxPos);
      positions[0] = maxPos - 1;
      const [cx, gx] = both(cpu, gpu, x, [rows, nHeads * headDim]);
      const [cc, gc] = both(cpu, gpu, roundTo(dtype, cos), [maxPos, half]);
      const [cs, gs] = both(cpu, gpu, roundTo(dtype, sin), [maxPos, half]);
      ops(cpu).ropeBackward(cx, positions, cc, cs, nHeads, headDim, rotaryDim);
      ops(gpu).ropeBackward(gx, positions, gc, gs, nHeads, headDim, rotaryDim);
      const check = compare(name, dtype, gpu.download(gx), cpu.download(cx));
      freeAll(gpu, gx, gc, gs);
      return [check];
    },
  };
}

function activationBackwardCases(): OpCase[] {
  return [
    {
      name: 'siluMulBackward [3,1111]',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(31, dtype);
        const [g, u, da] = [inp.floats(3 * 1111, 6), inp.floats(3 * 1111, 2), inp.floats(3 * 1111)];
        const run = (d: Device) => {
          const [tg, tu, tda, dg, du] = [d.upload(g, [3, 1111]), d.upload(u, [3, 1111]), d.upload(da, [3, 1111]), d.empty([3, 1111]), d.empty([3, 1111])];
          ops(d).siluMulBackward(dg, du, tda, tg, tu);
          const out = { dg: d.download(dg), du: d.download(du) };
          freeAll(d, tg, tu, tda, dg, du);
          return out;
        };
        const c = run(cpu), gg = run(gpu);
        return [compare('siluMulBackward: dGate', dtype, gg.dg, c.dg), compare('siluMulBackward: dUp', dtype, gg.du, c.du)];
      },
    },
    {
      name: 'geluTanhBackward [4,999]',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(32, dtype);
        const [x, dy] = [inp.floats(4 * 999, 4), inp.floats(4 * 999)];
        const run = (d: Device) => {
          const [tx, tdy, dx] = [d.upload(x, [4, 999]), d.upload(dy, [4, 999]), d.empty([4, 999])];
          ops(d).geluTanhBackward(dx, tdy, tx);
          const out = d.download(dx);
          freeAll(d, tx, tdy, dx);
          return out;
        };
        return [compare('geluTanhBackward', dtype, run(gpu), run(cpu))];
      },
    },
    {
      name: 'embeddingBackward dTable [517,71] += 300 rows (repeated ids)',
      run(cpu, gpu, dtype) {
        const inp = new Inputs(33, dtype);
        const dOut = inp.floats(300 * 71);
        const ids = inp.ints(300, 40);
        ids[0] = 516;
        ids[299] = 516;
        const table0 = f32Values(34, 517 * 71, 0.1);
        const run = (d: Device) => {
          const [tb, o] = [ops(d).uploadF32(table0, [517, 71]), d.upload(dOut, [300, 71])];
          ops(d).embeddingBackward(tb, o, ids);
          const out = d.download(tb);
          freeAll(d, tb, o);
          return out;
        };
        // Rows of an id are added in row order on both devices: the same f32 sums.
        return [compare('embeddingBackward (f32, exact)', dtype, run(gpu), run(cpu), 0)];
      },
    },
  ];
}

// --- attention ------------------------------------------------------------------------------------

function attentionTrainCase(label: string, s: Omit<AttentionShape, 'scale'>): OpCase {
  const name = `attention train ${label}: b${s.batch} q${s.seqQ} kv${s.kvLen}/${s.kvStride} h${s.nHead}/${s.nKvHead} d${s.headDim}` +
    (s.window !== undefined ? ` win${s.window}` : '');
  return {
    name,
    run(cpu, gpu, dtype) {
      const shape: AttentionShape = { ...s, scale: 1 / Math.sqrt(s.headDim) };
      const inp = new Inputs(s.batch * 977 + s.seqQ * 11 + s.headDim, dtype);
      const qShape = [s.batch * s.seqQ, s.nHead * s.headDim], kvShape = [s.batch * s.kvStride, s.nKvHead * s.headDim];
      const lseShape = [s.batch * s.seqQ, s.nHead];
      const q = inp.floats(qShape[0]! * qShape[1]!, 2), k = inp.floats(kvShape[0]! * kvShape[1]!, 2), v = inp.floats(kvShape[0]! * kvShape[1]!);
      const dOut = inp.floats(qShape[0]! * qShape[1]!);
      const [cq, gq] = both(cpu, gpu, q, qShape);
      const [ck, gk] = both(cpu, gpu, k, kvShape);
      const [cv, gv] = both(cpu, gpu, v, kvShape);
      const checks: Check[] = [];
      // forward: out and lse
      const [co, go] = [cpu.empty(qShape), gpu.empty(qShape)];
      const [cl, gl] = [ops(cpu).emptyF32(lseShape), ops(gpu).emptyF32(lseShape)];
      ops(cpu).attentionForward(co, cl, cq, ck, cv, shape);
      ops(gpu).attentionForward(go, gl, gq, gk, gv, shape);
      const outRef = cpu.download(co), lseRef = cpu.download(cl);
      checks.push(compare(`${name}: forward out`, dtype, gpu.download(go), outRef));
      checks.push(compare(`${name}: forward lse (f32)`, dtype, gpu.download(gl), lseRef, 1e-5));
      // backward, from the same out (rounded to the dtype) and lse on both devices
      const [co2, go2] = both(cpu, gpu, roundTo(dtype, outRef), qShape);
      const [cl2, gl2] = bothF32(cpu, gpu, lseRef, lseShape);
      const [cdo, gdo] = both(cpu, gpu, dOut, qShape);
      const grads = (d: Device, o: Tensor, l: Tensor, dO: Tensor, qq: Tensor, kk: Tensor, vv: Tensor) => {
        const [dq, dk, dv] = [d.empty(qShape), d.empty(kvShape), d.empty(kvShape)];
        ops(d).attentionBackward(dq, dk, dv, dO, o, l, qq, kk, vv, shape);
        const out = { dq: d.download(dq), dk: d.download(dk), dv: d.download(dv) };
        freeAll(d, dq, dk, dv);
        return out;
      };
      const c = grads(cpu, co2, cl2, cdo, cq, ck, cv);
      const tol = tolAttentionBackward(dtype);
      // On cuda with a 16-bit dtype, both backward paths (the fused mma kernel where it applies, and the GEMM one).
      const cudaOps = gpu.training instanceof CudaTrainingOps ? gpu.training : undefined;
      const paths = cudaOps !== undefined && gpu.dtype !== 'f32' ? [true, false] : [undefined];
      for (const fused of paths) {
        if (cudaOps !== undefined && fused !== undefined) cudaOps.fusedAttentionBackward = fused;
        const g = grads(gpu, go2, gl2, gdo, gq, gk, gv);
        const tag = fused === undefined ? '' : fused ? ' (fused if it applies)' : ' (gemm path)';
        checks.push(compare(`${name}: dq${tag}`, dtype, g.dq, c.dq, tol));
        checks.push(compare(`${name}: dk${tag}`, dtype, g.dk, c.dk, tol));
        checks.push(compare(`${name}: dv${tag}`, dtype, g.dv, c.dv, tol));
      }
      if (cudaOps !== undefined) cudaOps.fusedAttentionBackward = true;
      freeAll(gpu, gq, gk, gv, go, gl, go2, gl2, gdo);
      return checks;
    },
  };
}

// --- loss and top-k -------------------------------------------------------------------------------

interface LossOpts {
  /** 'none': CE only; 'full': teacher logits; a number: the teacher's top-k of that k. */
  teacher: 'none' | 'full' | number;
  kind: DistillLossKind;
  T: number;
  alpha: number;
  lambda?: number;
  /** dLogits = logits (overwritten in place). */
  inPlace?: boolean;
}

function lossCase(rows: number, V: number, o: LossOpts): OpCase {
  const teacherLabel = o.teacher === 'none' ? 'CE only' : o.teacher === 'full' ? `${o.kind} full teacher` : `${o.kind} top-${o.teacher}`;
  const name = `distillLoss ${teacherLabel} rows ${rows} V ${V} T ${o.T} alpha ${o.alpha}` +
    `${o.lambda !== undefined ? ` lambda ${o.lambda}` : ''}${o.inPlace ? ' in place' : ''}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const inp = new Inputs(rows * 101 + V + Math.round(o.T * 10), dtype);
      const logits = inp.floats(rows * V, 6);
      const noise = inp.floats(rows * V, 3);
      const teacher = roundTo(dtype, logits.map((x, i) => 0.7 * x + noise[i]!));
      const targets = inp.ints(rows, V);
      if (rows > 1) targets[1] = -1;
      targets[0] = V - 1;
      let topK: TeacherTopK | undefined;
      if (typeof o.teacher === 'number') {
        const t = cpu.upload(teacher, [rows, V]);
        topK = ops(cpu).topK(t, o.teacher, o.T);
        cpu.free(t);
      }
      const run = (d: Device) => {
        const l = d.upload(logits, [rows, V]);
        const dl = o.inPlace ? l : d.empty([rows, V]);
        const t = o.teacher === 'full' ? d.upload(teacher, [rows, V]) : undefined;
        const res = ops(d).distillLoss({
          logits: l, dLogits: dl, targets, kind: o.kind, temperature: o.T, alpha: o.alpha, skewLambda: o.lambda, gradScale: 0.37,
          teacher: t !== undefined ? { logits: t } : topK !== undefined ? { topK } : undefined,
        });
        const grad = d.download(dl);
        freeAll(d, ...[l, dl, t].filter((x): x is Tensor => x !== undefined && !(x === dl && o.inPlace)));
        return { grad, ...res };
      };
      const c = run(cpu), g = run(gpu);
      const checks = [
        compare(`${name}: dLogits`, dtype, g.grad, c.grad, dtype === 'f32' ? 5e-5 : tolerance(dtype)),
        compare(`${name}: loss`, dtype, f64(g.loss), f64(c.loss), TOL_LOSS),
        compare(`${name}: ce`, dtype, f64(g.ce), f64(c.ce), TOL_LOSS),
      ];
      if (o.teacher !== 'none') checks.push(compare(`${name}: distill`, dtype, f64(g.distill), f64(c.distill), TOL_LOSS));
      return checks;
    },
  };
}

function topKCase(rows: number, V: number, k: number, T: number, ties: boolean): OpCase {
  const name = `topK rows ${rows} V ${V} k ${k} T ${T}${ties ? ' (many ties)' : ''}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      let x = new Inputs(rows * 7 + V + k, dtype).floats(rows * V, 5);
      if (ties) x = x.map((v) => Math.round(v * 2) / 2);
      const [cl, gl] = both(cpu, gpu, x, [rows, V]);
      const c = ops(cpu).topK(cl, k, T), g = ops(gpu).topK(gl, k, T);
      let idMismatch = 0;
      for (let i = 0; i < c.ids.length; i++) if (c.ids[i] !== g.ids[i]) idMismatch++;
      freeAll(gpu, gl);
      return [
        { case: `${name}: ids (mismatches)`, dtype, error: idMismatch, tol: 0, ok: idMismatch === 0 && g.ids.length === rows * k },
        compare(`${name}: logits`, dtype, g.logits, c.logits, 0),
        compare(`${name}: lse`, dtype, g.lse, c.lse, 1e-6),
      ];
    },
  };
}

// --- optimizer ------------------------------------------------------------------------------------

function sumSquaresCase(): OpCase {
  const name = 'sumSquares over [1], [7,9], [1000], [100003] (f32)';
  return {
    name,
    run(cpu, gpu, dtype) {
      const shapes = [[1], [7, 9], [1000], [100003]];
      const data = shapes.map((s, i) => f32Values(40 + i, s.reduce((a, b) => a * b, 1), 2));
      const run = (d: Device) => {
        const ts = shapes.map((s, i) => ops(d).uploadF32(data[i]!, s));
        const sum = ops(d).sumSquares(ts);
        freeAll(d, ...ts);
        return sum;
      };
      const c = run(cpu), g = run(gpu);
      const error = Math.abs(g - c) / Math.abs(c);
      return [{ case: name, dtype, error, tol: 1e-12, ok: error <= 1e-12 && c > 0, note: `gpu ${g} cpu ${c}` }];
    },
  };
}

function adamwCase(n: number): OpCase {
  const name = `adamw ${n} values, 3 steps (wd 0.1, gradScale 0.5)`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const master0 = f32Values(50, n), m0 = f32Values(51, n, 0.01), v0 = f32Values(52, n, 1e-4).map(Math.abs);
      const grads = [53, 54, 55].map((s) => f32Values(s, n, 0.3));
      const run = (d: Device) => {
        const t = ops(d);
        const [master, m, v] = [t.uploadF32(master0, [n]), t.uploadF32(m0, [n]), t.uploadF32(v0, [n])];
        const compute = d.empty([n]);
        for (let step = 1; step <= 3; step++) {
          const grad = t.uploadF32(grads[step - 1]!, [n]);
          t.adamw({ master, grad, m, v, compute }, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, gradScale: 0.5 });
          d.free(grad);
        }
        const out = { master: d.download(master), m: d.download(m), v: d.download(v), compute: d.download(compute) };
        freeAll(d, master, m, v, compute);
        return out;
      };
      const c = run(cpu), g = run(gpu);
      // Same f64 operation order on both devices, no fused multiply-adds: bit-identical f32 results.
      return [
        compare(`${name}: master`, dtype, g.master, c.master, 0),
        compare(`${name}: m`, dtype, g.m, c.m, 0),
        compare(`${name}: v`, dtype, g.v, c.v, 0),
        compare(`${name}: compute copy`, dtype, g.compute, roundTo(gpu.dtype, c.compute), 0),
      ];
    },
  };
}

// --- whole models ---------------------------------------------------------------------------------

// Whole-model gradients on 16-bit devices against the f32 cpu. Measured on the H200 (2026-12-01): the
// llama-style head-dim-64 model 1.13e-1 in bf16 and 2.08e-2 in f16, every parameter off by about the
// same amount and in the ratio of the two dtypes' precision, with both attention-backward paths
// (fused kernel and GEMMs) giving the same error; the qwen3- and gpt2-style models under 6e-2 / 2e-2;
// every op on its own within the dtype's tolerance, and the f32 GPU device within 1e-4 of the cpu.
// So the bounds are 1.5e-1 / 3e-2: they catch a broken backward (O(1)), not bf16's own rounding.
function tolModel(dtype: ComputeDType): number {
  return dtype === 'f32' ? 1e-4 : dtype === 'bf16' ? 1.5e-1 : 3e-2;
}

/** ‖got − want‖₂ / ‖want‖₂ */
function relL2(got: Float32Array, want: Float32Array): number {
  let d = 0, w = 0;
  for (let i = 0; i < want.length; i++) {
    d += (got[i]! - want[i]!) ** 2;
    w += want[i]! ** 2;
  }
  return w > 0 ? Math.sqrt(d / w) : Number.NaN;
}

const MODEL_SPECS: [string, ModelSpec, number, number][] = [
  ['qwen3-style (GQA, qk norm, biases, window, partial rotary)', baseSpec({
    architecture: 'qwen3', vocabSize: 301, hiddenSize: 64, intermediateSize: 96, numHeads: 4, numKvHeads: 2, headDim: 16,
    partialRotaryFactor: 0.5, qkNorm: true, qkvBias: true, oBias: true, mlpBias: true, slidingWindow: 9, slidingWindowLayers: [false, true],
  }), 2, 37],
  ['llama-style (tied, head dim 64)', baseSpec({
    vocabSize: 500, hiddenSize: 128, intermediateSize: 192, numHeads: 4, numKvHeads: 2, headDim: 64, maxPositionEmbeddings: 128,
    tieWordEmbeddings: true,
  }), 2, 70],
  ['gpt2-style (LayerNorm, GELU, learned positions, tied)', baseSpec({
    architecture: 'gpt2', vocabSize: 257, hiddenSize: 48, intermediateSize: 80, numHeads: 4, numKvHeads: 4, headDim: 12,
    maxPositionEmbeddings: 64, norm: 'layer', activation: 'gelu_tanh', positions: 'learned', ropeTheta: 0, tieWordEmbeddings: true,
    qkvBias: true, oBias: true, mlpBias: true,
  }), 3, 29],
];

function modelGradientCase(label: string, spec: ModelSpec, batch: number, seq: number): OpCase {
  const name = `model gradients ${label} b${batch} s${seq}`;
  return {
    name,
    run(cpu, gpu, dtype) {
      const tensors = randomTensors(spec, 4321);
      const rand = seededRandom(98);
      const ids = Int32Array.from({ length: batch * seq }, () => Math.floor(rand() * spec.vocabSize));
      const R = roundTo(dtype, Float32Array.from({ length: batch * seq * spec.vocabSize }, () => rand() * 2 - 1));
      const run = (d: Device) => {
        const model = TrainableDecoder.fromWeights(spec, sourceOf(tensors), d);
        try {
          const logits = d.download(model.forward(ids, batch, seq));
          const dl = d.upload(R, [batch * seq, spec.vocabSize]);
          model.backward(dl);
          d.free(dl);
          return { logits, grads: new Map(model.params.map((p) => [p.name, d.download(p.grad)])) };
        } finally {
          model.dispose();
        }
      };
      const c = run(cpu), g = run(gpu);
      const tol = tolModel(dtype);
      let worst = 0, worstName = '(all exact)';
      let diff2 = 0, want2 = 0;
      const perParam: [string, number, number][] = [];
      for (const [pname, want] of c.grads) {
        const got = g.grads.get(pname)!;
        const e = relL2(got, want);
        perParam.push([pname, e, Math.sqrt(want.reduce((a, v) => a + v * v, 0))]);
        for (let i = 0; i < want.length; i++) {
          diff2 += (got[i]! - want[i]!) ** 2;
          want2 += want[i]! ** 2;
        }
        if (!(e <= worst)) {
          worst = Number.isNaN(e) ? Infinity : e;
          worstName = pname;
        }
      }
      const all = want2 > 0 ? Math.sqrt(diff2 / want2) : Number.NaN;
      // The bound holds for all gradients together; a single (small) parameter may be 3× as far off.
      const worstTol = dtype === 'f32' ? tol : 3 * tol;
      const logitsError = relL2(g.logits, c.logits);
      return [
        { case: `${name}: logits (rel L2)`, dtype, error: logitsError, tol, ok: logitsError <= tol },
        { case: `${name}: all ${c.grads.size} gradients (rel L2)`, dtype, error: all, tol, ok: all <= tol && c.grads.size > 0,
          note: perParam.sort((a, b) => b[1] * b[2] - a[1] * a[2]).slice(0, 6).map(([n, e, norm]) => `${n.replace('model.', '')} ${e.toExponential(1)} (‖g‖ ${norm.toExponential(1)})`).join('; ') },
        { case: `${name}: worst single gradient (rel L2)`, dtype, error: worst, tol: worstTol, ok: worst <= worstTol, note: `worst ${worstName}` },
      ];
    },
  };
}

/** A few AdamW steps of forward-KL distillation (T 2, alpha 0.1, clipping) on a fixed batch. */
function adamwTrainingCase(): OpCase {
  const [, spec, batch, seq] = MODEL_SPECS[1]!;
  const name = `AdamW distillation steps lower the loss (llama-style d64, kl T 2, b${batch} s${seq})`;
  const steps = 6;
  return {
    name,
    run(cpu, gpu, dtype) {
      const tensors = randomTensors(spec, 77);
      const rand = seededRandom(5);
      const rows = batch * seq, V = spec.vocabSize;
      const ids = Int32Array.from({ length: rows }, () => Math.floor(rand() * V));
      const targets = Int32Array.from({ length: rows }, (_, r) => (r % seq === seq - 1 ? -1 : ids[r + 1]!));
      const teacher = roundTo(dtype, Float32Array.from({ length: rows * V }, () => (rand() * 2 - 1) * 4));
      const scored = targets.filter((t) => t >= 0).length;
      const run = (d: Device) => {
        const t = ops(d);
        const model = TrainableDecoder.fromWeights(spec, sourceOf(tensors), d);
        const state = model.params.map((p) => ({ m: t.emptyF32(p.shape), v: t.emptyF32(p.shape) }));
        const teacherT = d.upload(teacher, [rows, V]);
        const losses: number[] = [];
        try {
          for (let step = 1; step <= steps; step++) {
            model.zeroGrads();
            const logits = model.forward(ids, batch, seq);
            const res = t.distillLoss({ logits, dLogits: logits, teacher: { logits: teacherT }, targets, kind: 'kl', temperature: 2, alpha: 0.1, gradScale: 1 / scored });
            losses.push(res.loss.reduce((a, b) => a + b, 0) / scored);
            model.backward(logits);
            const norm = Math.sqrt(t.sumSquares(model.params.map((p) => p.grad)));
            const clip = Math.min(1, 1 / (norm + 1e-6));
            model.params.forEach((p, i) => t.adamw({ master: p.master, grad: p.grad, m: state[i]!.m, v: state[i]!.v, compute: p.compute },
              { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: p.noDecay ? 0 : 0.01, step, gradScale: clip }));
          }
        } finally {
          for (const s of state) freeAll(d, s.m, s.v);
          d.free(teacherT);
          model.dispose();
        }
        return losses;
      };
      const c = run(cpu), g = run(gpu);
      const ratio = g[steps - 1]! / g[0]!;
      const curve = relL2(Float32Array.from(g), Float32Array.from(c));
      const curveTol = dtype === 'f32' ? 1e-3 : 5e-2;
      return [
        { case: `${name}: gpu loss last/first`, dtype, error: ratio, tol: 0.9, ok: ratio <= 0.9, note: `gpu ${g.map((x) => x.toFixed(4)).join(' → ')}` },
        { case: `${name}: gpu vs cpu loss curve (rel L2)`, dtype, error: curve, tol: curveTol, ok: curve <= curveTol, note: `cpu ${c.map((x) => x.toFixed(4)).join(' → ')}` },
      ];
    },
  };
}

// --- the list -------------------------------------------------------------------------------------

export function trainCases(): OpCase[] {
  return [
    castFillScaleCase(),
    matmulGradCase(37, 53, 29),
    matmulGradCase(129, 257, 66),
    matmulGradCase(1000, 17, 9),
    biasGradCase(301, 77),
    normBackwardCase('rms', 37, 1000),
    normBackwardCase('rms', 600, 64),
    normBackwardCase('rms', 3, 4097),
    normBackwardCase('layer', 29, 771),
    normBackwardCase('layer', 5, 33),
    ropeBackwardCase(9, 5, 24, 24),
    ropeBackwardCase(13, 3, 64, 16),
    ...activationBackwardCases(),
    attentionTrainCase('GQA', { batch: 2, seqQ: 37, kvLen: 37, kvStride: 37, nHead: 6, nKvHead: 2, headDim: 24 }),
    attentionTrainCase('short', { batch: 1, seqQ: 5, kvLen: 5, kvStride: 5, nHead: 2, nKvHead: 1, headDim: 8 }),
    attentionTrainCase('two query blocks d64', { batch: 1, seqQ: 300, kvLen: 300, kvStride: 300, nHead: 4, nKvHead: 1, headDim: 64 }),
    attentionTrainCase('sliding window blocks', { batch: 2, seqQ: 517, kvLen: 517, kvStride: 517, nHead: 4, nKvHead: 2, headDim: 32, window: 100 }),
    attentionTrainCase('past keys, padded stride', { batch: 2, seqQ: 20, kvLen: 50, kvStride: 56, nHead: 4, nKvHead: 2, headDim: 16 }),
    attentionTrainCase('MHA d128', { batch: 2, seqQ: 70, kvLen: 70, kvStride: 70, nHead: 3, nKvHead: 3, headDim: 128 }),
    attentionTrainCase('d64 GQA 4, sliding window', { batch: 2, seqQ: 517, kvLen: 517, kvStride: 517, nHead: 8, nKvHead: 2, headDim: 64, window: 100 }),
    attentionTrainCase('d64 past keys, padded stride', { batch: 2, seqQ: 70, kvLen: 200, kvStride: 208, nHead: 4, nKvHead: 1, headDim: 64 }),
    attentionTrainCase('d64 three query blocks', { batch: 3, seqQ: 600, kvLen: 600, kvStride: 600, nHead: 4, nKvHead: 2, headDim: 64 }),
    attentionTrainCase('d128 window past keys', { batch: 1, seqQ: 150, kvLen: 181, kvStride: 181, nHead: 2, nKvHead: 2, headDim: 128, window: 64 }),
    attentionTrainCase('window 2', { batch: 1, seqQ: 33, kvLen: 33, kvStride: 33, nHead: 2, nKvHead: 1, headDim: 8, window: 2 }),
    lossCase(5, 1000, { teacher: 'none', kind: 'kl', T: 1, alpha: 0 }),
    lossCase(6, 1000, { teacher: 'full', kind: 'kl', T: 1, alpha: 0, inPlace: true }),
    lossCase(3, 50257, { teacher: 'full', kind: 'kl', T: 2, alpha: 0.3 }),
    lossCase(4, 1000, { teacher: 'full', kind: 'reverse-kl', T: 0.7, alpha: 0 }),
    lossCase(4, 1000, { teacher: 'full', kind: 'skew-kl', T: 1.5, alpha: 0.2, lambda: 0.3 }),
    lossCase(2, 128256, { teacher: 'full', kind: 'kl', T: 1, alpha: 0, inPlace: true }),
    lossCase(5, 1000, { teacher: 20, kind: 'kl', T: 1, alpha: 0 }),
    lossCase(3, 1000, { teacher: 1, kind: 'kl', T: 2, alpha: 0.5 }),
    lossCase(3, 1000, { teacher: 1000, kind: 'kl', T: 2, alpha: 0.5 }),
    lossCase(3, 50257, { teacher: 50, kind: 'reverse-kl', T: 1, alpha: 0 }),
    lossCase(4, 1000, { teacher: 8, kind: 'skew-kl', T: 2, alpha: 1 }),
    lossCase(2, 128256, { teacher: 64, kind: 'kl', T: 1, alpha: 0.1, inPlace: true }),
    topKCase(6, 1000, 1, 1, false),
    topKCase(6, 1000, 7, 1, true),
    topKCase(4, 1000, 1000, 2, false),
    topKCase(3, 50257, 100, 2, true),
    topKCase(2, 50257, 3000, 1, false),
    topKCase(3, 999, 513, 1, true), // the k-th value among ties of -0 and +0
    sumSquaresCase(),
    adamwCase(1001),
    ...MODEL_SPECS.map(([label, spec, batch, seq]) => modelGradientCase(label, spec, batch, seq)),
    adamwTrainingCase(),
  ];
}

/** Runs every training case on one GPU device against the cpu device; exceptions become failed checks. */
export function runTrainCases(cpu: Device, gpu: Device, dtype: ComputeDType, filter?: (name: string) => boolean): CaseRun {
  return runCaseList(trainCases(), cpu, gpu, dtype, filter);
}
