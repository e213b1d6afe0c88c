// CpuTrainingOps: the float32 reference of TrainingOps (device.ts), as CpuDevice.training.
// Each op checks shapes, then runs a kernel of train-kernels.ts / distill-loss.ts on this thread.
// The GEMMs of the linear backward (dx = dy·w, dw += dyᵀ·x) go through the device's own matmul
// (WebAssembly SIMD, split over its worker threads by output rows; each output element is one
// fixed-order dot product, so the result does not depend on the split) on transposed copies.

import type {
  AdamWOptions, AttentionShape, DistillLossArgs, DistillLossRows, TeacherTopK, Tensor, TrainingOps,
} from '../device.js';
import type { CpuDevice } from './cpu-device.js';
import { distillLossKernel, LOSS_KL, LOSS_REVERSE_KL, LOSS_SKEW_KL, topKKernel } from './distill-loss.js';
import { CpuTensor, fmtShape } from './tensor.js';
import { OP_ATTENTION_BACKWARD, OP_ATTENTION_BACKWARD_SIMD, OP_ATTENTION_LSE, OP_SILUMUL_BACKWARD_SIMD } from './kernels.js';
import {
  adamwKernel, biasGradKernel, embeddingBackwardKernel, geluTanhBackwardKernel,
  layerNormBackwardKernel, ropeBackwardKernel, rmsNormBackwardKernel, siluMulBackwardKernel, sumSquaresKernel,
  transposeInto,
} from './train-kernels.js';

const LOSS_KINDS = { kl: LOSS_KL, 'reverse-kl': LOSS_REVERSE_KL, 'skew-kl': LOSS_SKEW_KL } as const;

export class CpuTrainingOps implements TrainingOps {
  /** Reusable scratch storages (transposed GEMM operands), grown on demand. */
  private readonly scratch: (CpuTensor | undefined)[] = [];

  constructor(readonly device: CpuDevice) {}

  // --- memory and elementwise -----------------------------------------------------------------

  emptyF32(shape: readonly number[]): Tensor {
    const t = this.device.empty(shape);
    t.data.fill(0);
    return t;
  }

  uploadF32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.device.upload(data, shape);
  }

  castCopy(dst: Tensor, src: Tensor): void {
    const d = this.cpu(dst, 'castCopy', 'dst');
    const s = this.cpu(src, 'castCopy', 'src');
    if (d.length !== s.length) throw new Error(`castCopy: dst ${fmtShape(d)} and src ${fmtShape(s)} differ in size`);
    if (d.base !== s.base || d.offset !== s.offset) d.data.set(s.data);
  }

  fill(t: Tensor, value: number): void {
    this.cpu(t, 'fill', 't').data.fill(value);
  }

  scale(t: Tensor, s: number): void {
    const x = this.cpu(t, 'scale', 't').data;
    for (let i = 0; i < x.length; i++) x[i] *= s;
  }

  // --- linear ---------------------------------------------------------------------------------

  matmulGradInput(dx: Tensor, dy: Tensor, w: Tensor, accumulate: boolean): void {
    const [dxc, dyc, wc] = [this.cpu(dx, 'matmulGradInput', 'dx'), this.cpu(dy, 'matmulGradInput', 'dy'), this.cpu(w, 'matmulGradInput', 'w')];
    const M = dyc.rowCount, N = dyc.cols, K = wc.cols;
    if (wc.rowCount !== N || dxc.rowCount !== M || dxc.cols !== K) {
      throw new Error(`matmulGradInput: shape mismatch: dx ${fmtShape(dxc)}, dy ${fmtShape(dyc)}, w ${fmtShape(wc)} (expects dy [M,N], w [N,K], dx [M,K])`);
    }
    const wT = this.scratchTensor(0, [K, N]);
    transposeInto(wT.data, wc.data, N, K);
    if (!accumulate) {
      this.device.matmul(dxc, dyc, wT);
      return;
    }
    const tmp = this.scratchTensor(1, [M, K]);
    this.device.matmul(tmp, dyc, wT);
    addInto(dxc.data, tmp.data);
  }

  matmulGradWeight(dw: Tensor, dy: Tensor, x: Tensor): void {
    const [dwc, dyc, xc] = [this.cpu(dw, 'matmulGradWeight', 'dw'), this.cpu(dy, 'matmulGradWeight', 'dy'), this.cpu(x, 'matmulGradWeight', 'x')];
    const M = dyc.rowCount, N = dyc.cols, K = xc.cols;
    if (xc.rowCount !== M || dwc.rowCount !== N || dwc.cols !== K) {
      throw new Error(`matmulGradWeight: shape mismatch: dw ${fmtShape(dwc)}, dy ${fmtShape(dyc)}, x ${fmtShape(xc)} (expects dy [M,N], x [M,K], dw [N,K])`);
    }
    const dyT = this.scratchTensor(0, [N, M]);
    const xT = this.scratchTensor(1, [K, M]);
    const tmp = this.scratchTensor(2, [N, K]);
    transposeInto(dyT.data, dyc.data, M, N);
    transposeInto(xT.data, xc.data, M, K);
    this.device.matmul(tmp, dyT, xT);
    addInto(dwc.data, tmp.data);
  }

  biasGrad(db: Tensor, dy: Tensor): void {
    const [dbc, dyc] = [this.cpu(db, 'biasGrad', 'db'), this.cpu(dy, 'biasGrad', 'dy')];
    if (dbc.length !== dyc.cols) throw new Error(`biasGrad: shape mismatch: db ${fmtShape(dbc)}, dy ${fmtShape(dyc)}`);
    biasGradKernel(dbc.data, dyc.data, dyc.rowCount, dyc.cols);
  }

  // --- norms, rotary, activations, embedding --------------------------------------------------

  rmsNormBackward(dx: Tensor, dw: Tensor, dy: Tensor, x: Tensor, w: Tensor, eps: number, accumulate: boolean): void {
    const op = 'rmsNormBackward';
    const [dxc, dwc, dyc, xc, wc] = [this.cpu(dx, op, 'dx'), this.cpu(dw, op, 'dw'), this.cpu(dy, op, 'dy'), this.cpu(x, op, 'x'), this.cpu(w, op, 'w')];
    const C = xc.cols;
    if (dxc.length !== xc.length || dyc.length !== xc.length || dxc.cols !== C || dyc.cols !== C || wc.length !== C || dwc.length !== C) {
      throw new Error(`${op}: shape mismatch: dx ${fmtShape(dxc)}, dw ${fmtShape(dwc)}, dy ${fmtShape(dyc)}, x ${fmtShape(xc)}, w ${fmtShape(wc)}`);
    }
    rmsNormBackwardKernel(dxc.data, dwc.data, dyc.data, xc.data, wc.data, xc.rowCount, C, eps, accumulate);
  }

  layerNormBackward(dx: Tensor, dw: Tensor, db: Tensor, dy: Tensor, x: Tensor, w: Tensor, b: Tensor, eps: number, accumulate: boolean): void {
    const op = 'layerNormBackward';
    const [dxc, dwc, dbc, dyc, xc, wc, bc] = [this.cpu(dx, op, 'dx'), this.cpu(dw, op, 'dw'), this.cpu(db, op, 'db'), this.cpu(dy, op, 'dy'),
      this.cpu(x, op, 'x'), this.cpu(w, op, 'w'), this.cpu(b, op, 'b')];
    const C = xc.cols;
    if (dxc.length !== xc.length || dyc.length !== xc.length || dxc.cols !== C || dyc.cols !== C ||
      wc.length !== C || bc.length !== C || dwc.length !== C || dbc.length !== C) {
      throw new Error(`${op}: shape mismatch: dx ${fmtShape(dxc)}, dw ${fmtShape(dwc)}, db ${fmtShape(dbc)}, dy ${fmtShape(dyc)}, ` +
        `x ${fmtShape(xc)}, w ${fmtShape(wc)}, b ${fmtShape(bc)}`);
    }
    layerNormBackwardKernel(dxc.data, dwc.data, dbc.data, dyc.data, xc.data, wc.data, xc.rowCount, C, eps, accumulate);
  }

  ropeBackward(dx: Tensor, positions: Int32Array, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void {
    const op = 'ropeBackward';
    const [xc, cc, sc] = [this.cpu(dx, op, 'dx'), this.cpu(cos, op, 'cos'), this.cpu(sin, op, 'sin')];
    const half = rotaryDim / 2;
    if (!Number.isInteger(half) || half < 0 || rotaryDim > headDim || xc.length !== positions.length * nHeads * headDim ||
      cc.cols !== half || sc.cols !== half || cc.rowCount !== sc.rowCount) {
      throw new Error(`${op}: shape mismatch: dx ${fmtShape(xc)}, ${positions.length} positions, cos ${fmtShape(cc)}, sin ${fmtShape(sc)}, ` +
        `nHeads ${nHeads}, headDim ${headDim}, rotaryDim ${rotaryDim}`);
    }
    for (let r = 0; r < positions.length; r++) {
      if (!(positions[r] >= 0 && positions[r] < cc.rowCount)) throw new Error(`${op}: position ${positions[r]} at row ${r} outside the [0, ${cc.rowCount}) table`);
    }
    ropeBackwardKernel(xc.data, positions, cc.data, sc.data, nHeads, headDim, half);
  }

  siluMulBackward(dGate: Tensor, dUp: Tensor, dAct: Tensor, gate: Tensor, up: Tensor): void {
    const op = 'siluMulBackward';
    const t = [this.cpu(dGate, op, 'dGate'), this.cpu(dUp, op, 'dUp'), this.cpu(dAct, op, 'dAct'), this.cpu(gate, op, 'gate'), this.cpu(up, op, 'up')];
    if (t.some((c) => c.length !== t[2].length)) throw new Error(`${op}: shape mismatch: ${t.map(fmtShape).join(', ')}`);
    if (!this.device.simd) {
      siluMulBackwardKernel(t[0].data, t[1].data, t[2].data, t[3].data, t[4].data);
      return;
    }
    this.device.runUnits(OP_SILUMUL_BACKWARD_SIMD, t.map((c) => c.base), t.map((c) => c.offset), t[2].length, 8 * t[2].length);
  }

  geluTanhBackward(dx: Tensor, dy: Tensor, x: Tensor): void {
    const op = 'geluTanhBackward';
    const [dxc, dyc, xc] = [this.cpu(dx, op, 'dx'), this.cpu(dy, op, 'dy'), this.cpu(x, op, 'x')];
    if (dxc.length !== xc.length || dyc.length !== xc.length) throw new Error(`${op}: shape mismatch: dx ${fmtShape(dxc)}, dy ${fmtShape(dyc)}, x ${fmtShape(xc)}`);
    geluTanhBackwardKernel(dxc.data, dyc.data, xc.data);
  }

  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array): void {
    const op = 'embeddingBackward';
    const [tc, oc] = [this.cpu(dTable, op, 'dTable'), this.cpu(dOut, op, 'dOut')];
    if (tc.cols !== oc.cols || oc.rowCount !== ids.length) throw new Error(`${op}: shape mismatch: dTable ${fmtShape(tc)}, dOut ${fmtShape(oc)}, ${ids.length} ids`);
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < tc.rowCount)) throw new Error(`${op}: id ${ids[i]} at ${i} outside table of ${tc.rowCount} rows`);
    }
    embeddingBackwardKernel(tc.data, oc.data, ids, tc.cols);
  }

  // --- attention ------------------------------------------------------------------------------

  attentionForward(out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
    // The inference kernel computes out (so training's forward is Decoder.forward's, bit for bit);
    // its SIMD version also gives the log-sum-exps, else they take one more pass over the scores.
    if (this.device.attentionWithLse(out, lse, q, k, v, shape)) return;
    const op = 'attentionForward';
    const [l, qc, kc] = [this.cpu(lse, op, 'lse'), this.cpu(q, op, 'q'), this.cpu(k, op, 'k')];
    this.device.runUnits(OP_ATTENTION_LSE, [l.base, qc.base, kc.base], [l.offset, qc.offset, kc.offset, ...attnParams(shape)],
      shape.batch * shape.nKvHead, attnWork(shape));
  }

  attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
    const op = 'attentionBackward';
    const { batch, seqQ, kvStride, nHead, nKvHead, headDim: hd } = shape;
    const qLen = batch * seqQ * nHead * hd;
    const kvLen = batch * kvStride * nKvHead * hd;
    const t = {
      dq: this.cpu(dq, op, 'dq'), dk: this.cpu(dk, op, 'dk'), dv: this.cpu(dv, op, 'dv'), dOut: this.cpu(dOut, op, 'dOut'),
      out: this.cpu(out, op, 'out'), lse: this.cpu(lse, op, 'lse'), q: this.cpu(q, op, 'q'), k: this.cpu(k, op, 'k'), v: this.cpu(v, op, 'v'),
    };
    const R = batch * seqQ * nHead;
    const ok = [t.dq, t.dOut, t.out, t.q].every((c) => c.length === qLen) && [t.dk, t.dv, t.k, t.v].every((c) => c.length === kvLen) &&
      t.lse.length === R;
    if (!ok || !validAttention(shape)) {
      throw new Error(`${op}: shape mismatch: ${Object.entries(t).map(([n, c]) => `${n} ${fmtShape(c)}`).join(', ')}, shape ${JSON.stringify(shape)}`);
    }
    // The kernel takes at most 6 storages: k|v and dk|dv share one scratch each, D|lse another.
    const kv = this.scratchTensor(3, [2 * kvLen]);
    const dkv = this.scratchTensor(4, [2 * kvLen]);
    const dl = this.scratchTensor(5, [2 * R]);
    kv.data.set(t.k.data);
    kv.data.set(t.v.data, kvLen);
    const dO = t.dOut.data, o = t.out.data, dld = dl.data;
    for (let r = 0; r < R; r++) {
      let s = 0;
      for (let d = r * hd; d < (r + 1) * hd; d++) s += dO[d] * o[d];
      dld[r] = s;
    }
    dld.set(t.lse.data, R);
    const kernel = this.device.simd && hd % 4 === 0 ? OP_ATTENTION_BACKWARD_SIMD : OP_ATTENTION_BACKWARD;
    this.device.runUnits(kernel, [t.dq.base, dkv.base, t.dOut.base, dl.base, t.q.base, kv.base],
      [t.dq.offset, 0, kvLen, t.dOut.offset, 0, R, t.q.offset, 0, kvLen, ...attnParams(shape)], batch * nKvHead, 2.5 * attnWork(shape));
    t.dk.data.set(dkv.data.subarray(0, kvLen));
    t.dv.data.set(dkv.data.subarray(kvLen, 2 * kvLen));
  }

  // --- loss -----------------------------------------------------------------------------------

  distillLoss(args: DistillLossArgs): DistillLossRows {
    const op = 'distillLoss';
    const l = this.cpu(args.logits, op, 'logits');
    const d = this.cpu(args.dLogits, op, 'dLogits');
    const rows = l.rowCount, V = l.cols;
    if (d.length !== l.length || d.cols !== V || args.targets.length !== rows) {
      throw new Error(`${op}: shape mismatch: logits ${fmtShape(l)}, dLogits ${fmtShape(d)}, ${args.targets.length} targets`);
    }
    if (d.base === l.base && d.offset !== l.offset && d.offset < l.offset + l.length && l.offset < d.offset + d.length) {
      throw new Error(`${op}: dLogits partly overlaps logits (it may be the logits tensor itself, or separate)`);
    }
    for (let r = 0; r < rows; r++) {
      const t = args.targets[r];
      if (!(t >= -1 && t < V)) throw new Error(`${op}: target ${t} at row ${r} outside [-1, ${V})`);
    }
    const kind = LOSS_KINDS[args.kind];
    if (kind === undefined) throw new Error(`${op}: unknown loss kind ${String(args.kind)}`);
    const T = args.temperature;
    const lambda = args.skewLambda ?? 0.1;
    if (!(T > 0) || !(args.alpha >= 0 && args.alpha <= 1) || !(lambda >= 0 && lambda < 1) || !Number.isFinite(args.gradScale)) {
      throw new Error(`${op}: need temperature > 0, alpha in [0, 1], skewLambda in [0, 1), a finite gradScale ` +
        `(got ${T}, ${args.alpha}, ${lambda}, ${args.gradScale})`);
    }
    let teacher: Float32Array | null = null;
    let top: TeacherTopK | null = null;
    if (args.teacher !== undefined && 'logits' in args.teacher) {
      const t = this.cpu(args.teacher.logits, op, 'teacher.logits');
      if (t.rowCount !== rows || t.cols !== V) throw new Error(`${op}: teacher logits ${fmtShape(t)} for student logits ${fmtShape(l)}`);
      teacher = t.data;
    } else if (args.teacher !== undefined) {
      top = args.teacher.topK;
      if (!(Number.isInteger(top.k) && top.k >= 1 && top.k <= V) || top.ids.length !== rows * top.k || top.logits.length !== rows * top.k || top.lse.length !== rows) {
        throw new Error(`${op}: teacher top-k (k ${top.k}, ${top.ids.length} ids, ${top.logits.length} logits, ${top.lse.length} lse) for ${rows} rows of ${V}`);
      }
      for (let i = 0; i < top.ids.length; i++) {
        if (!(top.ids[i] >= 0 && top.ids[i] < V)) throw new Error(`${op}: teacher top-k id ${top.ids[i]} at ${i} outside [0, ${V})`);
      }
    }
    const res: DistillLossRows = { loss: new Float64Array(rows), distill: new Float64Array(rows), ce: new Float64Array(rows) };
    distillLossKernel({
      z: l.data, dz: d.data, rows, V, teacher, topIds: top?.ids ?? null, topLogits: top?.logits ?? null, topLse: top?.lse ?? null,
      k: top?.k ?? 0, targets: args.targets, kind, temperature: T, alpha: args.alpha, lambda, gradScale: args.gradScale, ...res,
    });
    return res;
  }

  topK(logits: Tensor, k: number, temperature: number): TeacherTopK {
    const l = this.cpu(logits, 'topK', 'logits');
    const rows = l.rowCount, V = l.cols;
    if (!(Number.isInteger(k) && k >= 1 && k <= V)) throw new Error(`topK: k = ${k} outside [1, ${V}]`);
    if (!(temperature > 0)) throw new Error(`topK: temperature must be > 0, got ${temperature}`);
    const res: TeacherTopK = { ids: new Int32Array(rows * k), logits: new Float32Array(rows * k), lse: new Float32Array(rows), k };
    topKKernel(l.data, rows, V, k, temperature, res.ids, res.logits, res.lse);
    return res;
  }

  // --- optimizer ------------------------------------------------------------------------------

  sumSquares(tensors: readonly Tensor[]): number {
    let s = 0;
    for (let i = 0; i < tensors.length; i++) s += sumSquaresKernel(this.cpu(tensors[i], 'sumSquares', `tensors[${i}]`).data);
    return s;
  }

  adamw(p: { master: Tensor; grad: Tensor; m: Tensor; v: Tensor; compute?: Tensor }, o: AdamWOptions): void {
    const op = 'adamw';
    const [w, g, m, v] = [this.cpu(p.master, op, 'master'), this.cpu(p.grad, op, 'grad'), this.cpu(p.m, op, 'm'), this.cpu(p.v, op, 'v')];
    if (g.length !== w.length || m.length !== w.length || v.length !== w.length) {
      throw new Error(`${op}: shape mismatch: master ${fmtShape(w)}, grad ${fmtShape(g)}, m ${fmtShape(m)}, v ${fmtShape(v)}`);
    }
    if (!(Number.isInteger(o.step) && o.step >= 1)) throw new Error(`${op}: step must be an integer ≥ 1, got ${o.step}`);
    adamwKernel(w.data, g.data, m.data, v.data, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.step, o.gradScale);
    if (p.compute !== undefined) this.castCopy(p.compute, w);
  }

  // --- helpers --------------------------------------------------------------------------------

  private cpu(t: Tensor, op: string, name: string): CpuTensor {
    if (!(t instanceof CpuTensor)) throw new Error(`${op}: ${name} is not a cpu tensor`);
    if (t.device !== this.device) throw new Error(`${op}: ${name} belongs to another CpuDevice`);
    return t;
  }

  /** A scratch tensor of `shape` over reusable storage `slot` (contents undefined). */
  private scratchTensor(slot: number, shape: readonly number[]): CpuTensor {
    const n = shape.reduce((a, b) => a * b, 1);
    let s = this.scratch[slot];
    if (s === undefined || s.length < n) {
      s = this.device.empty([Math.max(n, 2 * (s?.length ?? 0))]);
      this.scratch[slot] = s;
    }
    return new CpuTensor(this.device, s.base, 0, n, shape);
  }
}

function addInto(dst: Float32Array, src: Float32Array): void {
  for (let i = 0; i < dst.length; i++) dst[i] += src[i];
}

function validAttention(s: AttentionShape): boolean {
  const ints = [s.batch, s.seqQ, s.kvLen, s.kvStride, s.nHead, s.nKvHead, s.headDim];
  return ints.every((n) => Number.isInteger(n) && n >= 0) && s.nKvHead >= 1 && s.nHead % s.nKvHead === 0 &&
    s.seqQ <= s.kvLen && s.kvLen <= s.kvStride && (s.window === undefined || (Number.isInteger(s.window) && s.window >= 1));
}

/** The geometry parameters of the attention kernels (kernels.ts), in their order. */
function attnParams(s: AttentionShape): number[] {
  return [s.seqQ, s.kvLen, s.kvStride, s.nHead, s.nKvHead, s.headDim, s.scale, s.window ?? 0];
}

/** ≈ multiply-adds of one pass over the scores. */
function attnWork(s: AttentionShape): number {
  const keys = s.window !== undefined ? Math.min(s.window, s.kvLen) : s.kvLen;
  return s.batch * s.nHead * s.seqQ * keys * s.headDim;
}
