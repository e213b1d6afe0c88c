// CudaTrainingOps: TrainingOps (device.ts) on the GPU, for CudaDevice.training. Compute tensors are
// in the device dtype (bf16 by default); gradients of weights, master weights and optimizer state
// are f32 (checked per argument). GEMMs go through cuBLASLt (16-bit inputs, f32 accumulation, an f32
// output accumulated in place with beta = 1); everything else is kernels/train_elementwise.cu,
// norm_backward.cu, attention_backward.cu (with train-attention.ts), loss.cu and adamw.cu.
// Every op is queued on the device's stream; distillLoss, topK and sumSquares wait for their result.

import type {
  AdamWOptions, AttentionShape, ComputeDType, DistillLossArgs, DistillLossRows, TeacherTopK, Tensor, TrainingOps,
} from '../device.js';
import type { GemmArgs } from './cublaslt.js';
import type { CudaDevice } from './device.js';
import { ScratchBuffers, attentionBackward, attentionForward } from './train-attention.js';
import type { CudaTensor } from './tensor.js';

/** Largest k of topK (and of a top-k teacher in distillLoss): the sort runs in one block's shared memory. */
export const CUDA_TOPK_MAX = 4096;
/** Blocks of sumSquares per tensor (f64 partials, added in a fixed order). */
const SUM_SQUARES_BLOCKS = 256;

function fmt(t: CudaTensor): string {
  return `[${t.shape.join(',')}]`;
}

function rowThreads(cols: number, max: number): number {
  return Math.min(max, Math.max(32, Math.ceil(cols / 32) * 32));
}

function overlaps(a: CudaTensor, b: CudaTensor): boolean {
  return a.storage === b.storage && a.ptr < b.ptr + BigInt(b.bytes) && b.ptr < a.ptr + BigInt(a.bytes);
}

const LOSS_KINDS = { kl: 0, 'reverse-kl': 1, 'skew-kl': 2 } as const;

export class CudaTrainingOps implements TrainingOps {
  private readonly scratch: ScratchBuffers;
  /**
   * @internal false: attentionBackward always takes the GEMM path (LLMOPT_CUDA_ATTENTION_BACKWARD=gemm; tests
   * compare both paths against the cpu).
   */
  fusedAttentionBackward = process.env.LLMOPT_CUDA_ATTENTION_BACKWARD !== 'gemm';

  constructor(private readonly dev: CudaDevice) {
    this.scratch = new ScratchBuffers(dev);
  }

  // --- memory and elementwise ---------------------------------------------------------------

  emptyF32(shape: readonly number[]): Tensor {
    return this.dev.emptyAs(shape, 'f32');
  }

  uploadF32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.dev.uploadAs(data, shape, 'f32');
  }

  castCopy(dst: Tensor, src: Tensor): void {
    const d = this.dev.tensor(dst, 'castCopy', 'dst', 'any');
    const s = this.dev.tensor(src, 'castCopy', 'src', 'any');
    if (d.size !== s.size) throw new Error(`castCopy: dst ${fmt(d)} and src ${fmt(s)} differ in size`);
    if (d.dtype === s.dtype) {
      if (d.ptr !== s.ptr) this.dev.driver.copyDeviceToDevice(d.ptr, s.ptr, d.bytes);
      return;
    }
    if (d.dtype !== 'f32' && s.dtype !== 'f32') throw new Error(`castCopy: ${s.dtype} → ${d.dtype} is not supported (one side must be f32)`);
    if (overlaps(d, s)) throw new Error('castCopy: dst overlaps src');
    const name = d.dtype === 'f32' ? `convert_${s.dtype}_to_f32` : `convert_f32_to_${d.dtype}`;
    this.dev.launch1d(this.dev.kernel('convert', name, 'ppq'), d.size, [d.ptr, s.ptr, d.size]);
  }

  fill(t: Tensor, value: number): void {
    const c = this.dev.tensor(t, 'fill', 't', 'any');
    this.dev.launch1d(this.dev.kernel('train_elementwise', `fill_${c.dtype}`, 'pfq'), c.size, [c.ptr, value, c.size]);
  }

  scale(t: Tensor, s: number): void {
    const c = this.dev.tensor(t, 'scale', 't', 'any');
    this.dev.launch1d(this.dev.kernel('train_elementwise', `scale_${c.dtype}`, 'pfq'), c.size, [c.ptr, s, c.size]);
  }

  // --- linear layers --------------------------------------------------------------------------

  matmulGradInput(dx: Tensor, dy: Tensor, w: Tensor, accumulate: boolean): void {
    const op = 'matmulGradInput';
    const dxc = this.dev.tensor(dx, op, 'dx');
    const dyc = this.dev.tensor(dy, op, 'dy');
    const wc = this.dev.tensor(w, op, 'w');
    const M = dyc.rowCount, N = dyc.cols, K = wc.cols;
    if (wc.rowCount !== N || dxc.rowCount !== M || dxc.cols !== K) {
      throw new Error(`${op}: shape mismatch: dx ${fmt(dxc)}, dy ${fmt(dyc)}, w ${fmt(wc)} (expects dy [M,N], w [N,K], dx [M,K])`);
    }
    if (overlaps(dxc, dyc) || overlaps(dxc, wc)) throw new Error(`${op}: dx overlaps an input`);
    if (M === 0 || K === 0) return;
    if (N === 0) {
      if (!accumulate) this.dev.driver.memsetZero(dxc.ptr, dxc.bytes);
      return;
    }
    const t = this.dev.dtype;
    this.gemm(`grad input M${M} N${K} K${N}`, {
      M, N: K, K: N,
      a: { ptr: dyc.ptr, type: t, trans: false, ld: N },
      b: { ptr: wc.ptr, type: t, trans: false, ld: K },
      d: { ptr: dxc.ptr, type: t, ld: K },
      beta: accumulate ? 1 : 0,
    });
  }

  matmulGradWeight(dw: Tensor, dy: Tensor, x: Tensor): void {
    const op = 'matmulGradWeight';
    const dwc = this.dev.tensor(dw, op, 'dw', 'f32');
    const dyc = this.dev.tensor(dy, op, 'dy');
    const xc = this.dev.tensor(x, op, 'x');
    const M = dyc.rowCount, N = dyc.cols, K = xc.cols;
    if (xc.rowCount !== M || dwc.rowCount !== N || dwc.cols !== K) {
      throw new Error(`${op}: shape mismatch: dw ${fmt(dwc)}, dy ${fmt(dyc)}, x ${fmt(xc)} (expects dy [M,N], x [M,K], dw [N,K] f32)`);
    }
    if (M === 0 || N === 0 || K === 0) return;
    const t = this.dev.dtype;
    this.gemm(`grad weight M${N} N${K} K${M}`, {
      M: N, N: K, K: M,
      a: { ptr: dyc.ptr, type: t, trans: true, ld: N },
      b: { ptr: xc.ptr, type: t, trans: false, ld: K },
      d: { ptr: dwc.ptr, type: 'f32', ld: K },
      beta: 1,
    });
  }

  biasGrad(db: Tensor, dy: Tensor): void {
    const dbc = this.dev.tensor(db, 'biasGrad', 'db', 'f32');
    const dyc = this.dev.tensor(dy, 'biasGrad', 'dy');
    if (dbc.size !== dyc.cols) throw new Error(`biasGrad: shape mismatch: db ${fmt(dbc)}, dy ${fmt(dyc)} (db [N] for dy [M,N])`);
    if (dyc.size === 0) return;
    const k = this.dev.kernel('train_elementwise', `bias_grad_${this.dev.suffix}`, 'ppii');
    this.dev.kernels.launch(k, [Math.ceil(dyc.cols / 32)], [32, 8], 0, [dbc.ptr, dyc.ptr, dyc.rowCount, dyc.cols]);
  }

  // --- norms, rotary, activations, embeddings ----------------------------------------------------

  rmsNormBackward(dx: Tensor, dw: Tensor, dy: Tensor, x: Tensor, w: Tensor, eps: number, accumulate: boolean): void {
    const op = 'rmsNormBackward';
    const dxc = this.dev.tensor(dx, op, 'dx');
    const dwc = this.dev.tensor(dw, op, 'dw', 'f32');
    const dyc = this.dev.tensor(dy, op, 'dy');
    const xc = this.dev.tensor(x, op, 'x');
    const wc = this.dev.tensor(w, op, 'w');
    const C = xc.cols, rows = xc.rowCount;
    if (dxc.size !== xc.size || dyc.size !== xc.size || dxc.cols !== C || dyc.cols !== C || wc.size !== C || dwc.size !== C) {
      throw new Error(`${op}: shape mismatch: dx ${fmt(dxc)}, dw ${fmt(dwc)}, dy ${fmt(dyc)}, x ${fmt(xc)}, w ${fmt(wc)}`);
    }
    if (rows === 0 || C === 0) return;
    const blocks = this.normBlocks(rows);
    const part = this.scratch.get('norm.partials', blocks * C * 4);
    const k = this.dev.kernel('norm_backward', `rms_norm_backward_${this.dev.suffix}`, 'pppppiifi');
    this.dev.kernels.launch(k, [blocks], [rowThreads(C, 256)], C * 4, [dxc.ptr, part, dyc.ptr, xc.ptr, wc.ptr, rows, C, eps, accumulate ? 1 : 0]);
    this.reducePartials(dwc, part, blocks, C);
  }

  layerNormBackward(dx: Tensor, dw: Tensor, db: Tensor, dy: Tensor, x: Tensor, w: Tensor, b: Tensor, eps: number, accumulate: boolean): void {
    const op = 'layerNormBackward';
    const dxc = this.dev.tensor(dx, op, 'dx');
    const dwc = this.dev.tensor(dw, op, 'dw', 'f32');
    const dbc = this.dev.tensor(db, op, 'db', 'f32');
    const dyc = this.dev.tensor(dy, op, 'dy');
    const xc = this.dev.tensor(x, op, 'x');
    const wc = this.dev.tensor(w, op, 'w');
    const bc = this.dev.tensor(b, op, 'b');
    const C = xc.cols, rows = xc.rowCount;
    if (dxc.size !== xc.size || dyc.size !== xc.size || dxc.cols !== C || dyc.cols !== C || wc.size !== C || bc.size !== C ||
      dwc.size !== C || dbc.size !== C) {
      throw new Error(`${op}: shape mismatch: dx ${fmt(dxc)}, dw ${fmt(dwc)}, db ${fmt(dbc)}, dy ${fmt(dyc)}, x ${fmt(xc)}, w ${fmt(wc)}, b ${fmt(bc)}`);
    }
    if (rows === 0 || C === 0) return;
    const blocks = this.normBlocks(rows);
    const part = this.scratch.get('norm.partials', 2 * blocks * C * 4);
    const k = this.dev.kernel('norm_backward', `layer_norm_backward_${this.dev.suffix}`, 'pppppiifi');
    this.dev.kernels.launch(k, [blocks], [rowThreads(C, 256)], 2 * C * 4, [dxc.ptr, part, dyc.ptr, xc.ptr, wc.ptr, rows, C, eps, accumulate ? 1 : 0]);
    this.reducePartials(dwc, part, blocks, C);
    this.reducePartials(dbc, part + BigInt(blocks * C * 4), blocks, C);
  }

  ropeBackward(dx: Tensor, positions: Int32Array, cos: Tensor, sin: Tensor, nHeads: number, headDim: number, rotaryDim: number): void {
    const op = 'ropeBackward';
    const xc = this.dev.tensor(dx, op, 'dx');
    const cc = this.dev.tensor(cos, op, 'cos');
    const sc = this.dev.tensor(sin, op, 'sin');
    const half = rotaryDim / 2;
    const rows = positions.length;
    if (!Number.isInteger(half) || half < 0 || rotaryDim > headDim || xc.size !== rows * nHeads * headDim ||
      cc.cols !== half || sc.cols !== half || cc.rowCount !== sc.rowCount) {
      throw new Error(`${op}: shape mismatch: dx ${fmt(xc)}, ${rows} positions, cos ${fmt(cc)}, sin ${fmt(sc)}, ` +
        `nHeads ${nHeads}, headDim ${headDim}, rotaryDim ${rotaryDim}`);
    }
    for (let r = 0; r < rows; r++) {
      if (!(positions[r] >= 0 && positions[r] < cc.rowCount)) throw new Error(`${op}: position ${positions[r]} at row ${r} outside the [0, ${cc.rowCount}) table`);
    }
    if (rows === 0 || half === 0) return;
    const posPtr = this.dev.stageInts(positions);
    const k = this.dev.kernel('train_elementwise', `rope_backward_${this.dev.suffix}`, 'ppppiii');
    this.dev.kernels.launch(k, [rows], [rowThreads(nHeads * half, 256)], 0, [xc.ptr, posPtr, cc.ptr, sc.ptr, nHeads, headDim, rotaryDim]);
  }

  attentionForward(out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
    attentionForward(this.dev, out, lse, q, k, v, shape);
  }

  attentionBackward(dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
    attentionBackward(this.dev, this.scratch, dq, dk, dv, dOut, out, lse, q, k, v, shape, this.fusedAttentionBackward);
  }

  siluMulBackward(dGate: Tensor, dUp: Tensor, dAct: Tensor, gate: Tensor, up: Tensor): void {
    const op = 'siluMulBackward';
    const [dg, du, da, g, u] = [
      this.dev.tensor(dGate, op, 'dGate'), this.dev.tensor(dUp, op, 'dUp'), this.dev.tensor(dAct, op, 'dAct'),
      this.dev.tensor(gate, op, 'gate'), this.dev.tensor(up, op, 'up'),
    ];
    if ([dg, du, da, u].some((t) => t.size !== g.size)) {
      throw new Error(`${op}: shape mismatch: dGate ${fmt(dg)}, dUp ${fmt(du)}, dAct ${fmt(da)}, gate ${fmt(g)}, up ${fmt(u)}`);
    }
    const k = this.dev.kernel('train_elementwise', `silu_mul_backward_${this.dev.suffix}`, 'pppppq');
    this.dev.launch1d(k, g.size, [dg.ptr, du.ptr, da.ptr, g.ptr, u.ptr, g.size]);
  }

  geluTanhBackward(dx: Tensor, dy: Tensor, x: Tensor): void {
    const op = 'geluTanhBackward';
    const [dxc, dyc, xc] = [this.dev.tensor(dx, op, 'dx'), this.dev.tensor(dy, op, 'dy'), this.dev.tensor(x, op, 'x')];
    if (dxc.size !== xc.size || dyc.size !== xc.size) throw new Error(`${op}: shape mismatch: dx ${fmt(dxc)}, dy ${fmt(dyc)}, x ${fmt(xc)}`);
    const k = this.dev.kernel('train_elementwise', `gelu_tanh_backward_${this.dev.suffix}`, 'pppq');
    this.dev.launch1d(k, xc.size, [dxc.ptr, dyc.ptr, xc.ptr, xc.size]);
  }

  /**
   * Rows are grouped by id on the host (counting order: rows of an id in increasing order) and each
   * id's rows are added by one block in that order: no atomics, so the result is deterministic and,
   * in f32, equal to the cpu reference's.
   */
  embeddingBackward(dTable: Tensor, dOut: Tensor, ids: Int32Array): void {
    const op = 'embeddingBackward';
    const tb = this.dev.tensor(dTable, op, 'dTable', 'f32');
    const oc = this.dev.tensor(dOut, op, 'dOut');
    if (oc.cols !== tb.cols || oc.rowCount !== ids.length) {
      throw new Error(`${op}: shape mismatch: dTable ${fmt(tb)}, dOut ${fmt(oc)}, ${ids.length} ids`);
    }
    const n = ids.length;
    for (let i = 0; i < n; i++) {
      if (!(ids[i] >= 0 && ids[i] < tb.rowCount)) throw new Error(`${op}: id ${ids[i]} at ${i} outside table of ${tb.rowCount} rows`);
    }
    if (n === 0 || tb.cols === 0) return;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => ids[a]! - ids[b]! || a - b);
    const uniq: number[] = [], start: number[] = [];
    for (let s = 0; s < n; s++) {
      if (s === 0 || ids[order[s]!] !== ids[order[s - 1]!]) {
        uniq.push(ids[order[s]!]!);
        start.push(s);
      }
    }
    start.push(n);
    const U = uniq.length;
    const packed = new Int32Array(U + U + 1 + n);
    packed.set(uniq, 0);
    packed.set(start, U);
    packed.set(order, 2 * U + 1);
    const base = this.dev.stageInts(packed);
    const k = this.dev.kernel('train_elementwise', `embedding_backward_${this.dev.suffix}`, 'pppppi');
    this.dev.kernels.launch(k, [U], [rowThreads(tb.cols, 256)], 0, [tb.ptr, oc.ptr, base, base + BigInt(U * 4), base + BigInt((2 * U + 1) * 4), tb.cols]);
  }

  // --- loss -----------------------------------------------------------------------------------

  distillLoss(args: DistillLossArgs): DistillLossRows {
    const op = 'distillLoss';
    this.dev.noCapture(op);
    const l = this.dev.tensor(args.logits, op, 'logits');
    const d = this.dev.tensor(args.dLogits, op, 'dLogits');
    const rows = l.rowCount, V = l.cols;
    if (d.rowCount !== rows || d.cols !== V || args.targets.length !== rows || V < 1) {
      throw new Error(`${op}: shape mismatch: logits ${fmt(l)}, dLogits ${fmt(d)}, ${args.targets.length} targets`);
    }
    if (d !== l && d.ptr !== l.ptr && overlaps(d, l)) throw new Error(`${op}: dLogits partly overlaps logits (it may only be the logits tensor itself)`);
    const kind = LOSS_KINDS[args.kind];
    if (kind === undefined) throw new Error(`${op}: unknown loss kind ${String(args.kind)} (kl, reverse-kl, skew-kl)`);
    const { temperature, alpha, gradScale } = args;
    const lambda = args.skewLambda ?? 0.1;
    if (!(temperature > 0 && Number.isFinite(temperature))) throw new Error(`${op}: temperature must be a positive number, got ${temperature}`);
    if (!(alpha >= 0 && alpha <= 1)) throw new Error(`${op}: alpha must be in [0, 1], got ${alpha}`);
    if (!(lambda >= 0 && lambda < 1)) throw new Error(`${op}: skewLambda must be in [0, 1), got ${lambda}`);
    if (!Number.isFinite(gradScale)) throw new Error(`${op}: gradScale must be finite, got ${gradScale}`);
    for (let r = 0; r < rows; r++) {
      const t = args.targets[r]!;
      if (!(t >= -1 && t < V)) throw new Error(`${op}: target ${t} at row ${r} outside [-1, ${V})`);
    }
    let mode = 0, teacherPtr = 0n, k = 0, tkIds = 0n, tkLogits = 0n, tkLse = 0n;
    if (args.teacher !== undefined && 'logits' in args.teacher) {
      const t = this.dev.tensor(args.teacher.logits, op, 'teacher.logits');
      if (t.rowCount !== rows || t.cols !== V) throw new Error(`${op}: teacher logits ${fmt(t)} do not match logits ${fmt(l)}`);
      if (overlaps(t, d)) throw new Error(`${op}: dLogits overlaps the teacher logits`);
      mode = 1;
      teacherPtr = t.ptr;
    } else if (args.teacher !== undefined) {
      const tk = args.teacher.topK;
      k = tk.k;
      if (!Number.isInteger(k) || k < 1 || k > Math.min(V, CUDA_TOPK_MAX) || tk.ids.length !== rows * k || tk.logits.length !== rows * k || tk.lse.length !== rows) {
        throw new Error(`${op}: teacher top-k of k ${k} with ${tk.ids.length} ids, ${tk.logits.length} logits, ${tk.lse.length} lse ` +
          `does not fit ${rows} rows of vocab ${V} (k ≤ ${CUDA_TOPK_MAX} on cuda)`);
      }
      for (let i = 0; i < tk.ids.length; i++) {
        if (!(tk.ids[i]! >= 0 && tk.ids[i]! < V)) throw new Error(`${op}: teacher top-k id ${tk.ids[i]} at ${i} outside vocab ${V}`);
      }
      mode = 2;
      const bytes = rows * k * 4;
      const buf = this.scratch.get('loss.topk', 2 * bytes + rows * 4);
      tkIds = buf;
      tkLogits = buf + BigInt(bytes);
      tkLse = buf + BigInt(2 * bytes);
      this.dev.driver.copyToDevice(tkIds, tk.ids, bytes);
      this.dev.driver.copyToDevice(tkLogits, tk.logits, bytes);
      this.dev.driver.copyToDevice(tkLse, tk.lse, rows * 4);
    }
    const loss = new Float64Array(rows), distill = new Float64Array(rows), ce = new Float64Array(rows);
    if (rows === 0) return { loss, distill, ce };
    const targets = this.dev.stageInts(args.targets);
    const res = this.scratch.get('loss.result', rows * 24);
    const shared = mode === 2 ? (Math.ceil(V / 32) + k) * 4 : 0;
    const kern = this.dev.kernel('loss', `distill_loss_${this.dev.suffix}`, 'pppppppipiiiddddf');
    this.dev.kernels.launch(kern, [rows], [V >= 4096 ? 1024 : 256], shared, [
      res, d.ptr, l.ptr, teacherPtr, tkIds, tkLogits, tkLse, k, targets, V, kind, mode, 1 / temperature, temperature, alpha, lambda, gradScale,
    ]);
    const host = new Float64Array(rows * 3);
    this.dev.driver.copyToHost(host, res, rows * 24);
    for (let r = 0; r < rows; r++) {
      loss[r] = host[3 * r]!;
      distill[r] = host[3 * r + 1]!;
      ce[r] = host[3 * r + 2]!;
    }
    return { loss, distill, ce };
  }

  topK(logits: Tensor, k: number, temperature: number): TeacherTopK {
    const op = 'topK';
    this.dev.noCapture(op);
    const l = this.dev.tensor(logits, op, 'logits');
    const rows = l.rowCount, V = l.cols;
    if (!Number.isInteger(k) || k < 1 || k > Math.min(V, CUDA_TOPK_MAX)) {
      throw new Error(`${op}: k must be an integer in [1, ${Math.min(V, CUDA_TOPK_MAX)}] (vocab ${V}; at most ${CUDA_TOPK_MAX} on cuda), got ${k}`);
    }
    if (!(temperature > 0 && Number.isFinite(temperature))) throw new Error(`${op}: temperature must be a positive number, got ${temperature}`);
    const ids = new Int32Array(rows * k), vals = new Float32Array(rows * k), lse = new Float32Array(rows);
    if (rows === 0) return { ids, logits: vals, lse, k };
    let P = 1;
    while (P < k) P *= 2;
    const buf = this.scratch.get('topk.result', rows * (2 * k + 1) * 4);
    const valsPtr = buf + BigInt(rows * k * 4), lsePtr = buf + BigInt(rows * k * 8);
    const kern = this.dev.kernel('loss', `top_k_${this.dev.suffix}`, 'ppppiiif');
    this.dev.kernels.launch(kern, [rows], [V >= 4096 ? 1024 : 256], 2 * P * 4, [buf, valsPtr, lsePtr, l.ptr, V, k, P, 1 / temperature]);
    this.dev.driver.copyToHost(ids, buf, rows * k * 4);
    this.dev.driver.copyToHost(vals, valsPtr, rows * k * 4);
    this.dev.driver.copyToHost(lse, lsePtr, rows * 4);
    return { ids, logits: vals, lse, k };
  }

  // --- optimizer ------------------------------------------------------------------------------

  sumSquares(tensors: readonly Tensor[]): number {
    this.dev.noCapture('sumSquares');
    const ts = tensors.map((t, i) => this.dev.tensor(t, 'sumSquares', `tensors[${i}]`, 'f32'));
    const blocks = ts.map((t) => Math.max(1, Math.min(SUM_SQUARES_BLOCKS, Math.ceil(t.size / 1024))));
    const total = blocks.reduce((a, b) => a + b, 0);
    const buf = this.scratch.get('sumSquares', (total + 1) * 8);
    const partial = this.dev.kernel('adamw', 'sum_squares_partial', 'ppq');
    let at = 0;
    for (let i = 0; i < ts.length; i++) {
      const t = ts[i]!;
      const slot = buf + BigInt((1 + at) * 8);
      if (t.size === 0) this.dev.driver.memsetZero(slot, 8);
      else this.dev.kernels.launch(partial, [blocks[i]!], [256], 0, [slot, t.ptr, t.size]);
      at += blocks[i]!;
    }
    if (total === 0) return 0;
    this.dev.kernels.launch(this.dev.kernel('adamw', 'sum_f64', 'ppi'), [1], [1024], 0, [buf, buf + 8n, total]);
    const out = new Float64Array(1);
    this.dev.driver.copyToHost(out, buf, 8);
    return out[0]!;
  }

  adamw(p: { master: Tensor; grad: Tensor; m: Tensor; v: Tensor; compute?: Tensor }, o: AdamWOptions): void {
    const op = 'adamw';
    const master = this.dev.tensor(p.master, op, 'master', 'f32');
    const grad = this.dev.tensor(p.grad, op, 'grad', 'f32');
    const m = this.dev.tensor(p.m, op, 'm', 'f32');
    const v = this.dev.tensor(p.v, op, 'v', 'f32');
    const compute = p.compute !== undefined ? this.dev.tensor(p.compute, op, 'compute', 'any') : undefined;
    const n = master.size;
    if (grad.size !== n || m.size !== n || v.size !== n || (compute !== undefined && compute.size !== n)) {
      throw new Error(`${op}: shape mismatch: master ${fmt(master)}, grad ${fmt(grad)}, m ${fmt(m)}, v ${fmt(v)}${compute ? `, compute ${fmt(compute)}` : ''}`);
    }
    if (!Number.isInteger(o.step) || o.step < 1) throw new Error(`${op}: step must be an integer ≥ 1, got ${o.step}`);
    const c1 = 1 - Math.pow(o.beta1, o.step), c2 = 1 - Math.pow(o.beta2, o.step);
    const dtype: ComputeDType = compute?.dtype ?? this.dev.dtype;
    const k = this.dev.kernel('adamw', `adamw_${dtype}`, 'pppppqdddddddddd');
    this.dev.launch1d(k, n, [
      master.ptr, grad.ptr, m.ptr, v.ptr, compute?.ptr ?? 0n, n,
      o.lr, o.beta1, 1 - o.beta1, o.beta2, 1 - o.beta2, o.eps, o.weightDecay, c1, c2, o.gradScale,
    ]);
  }

  // --- helpers --------------------------------------------------------------------------------

  private gemm(label: string, g: GemmArgs): void {
    this.dev.kernels.profiler?.begin(`cublasLt ${label}`);
    this.dev.blas.gemm(g);
    this.dev.kernels.profiler?.end();
  }

  /** Blocks of the norm backward kernels: a few per SM, each taking rows/blocks rows. */
  private normBlocks(rows: number): number {
    return Math.max(1, Math.min(rows, this.dev.info.multiprocessors * 4));
  }

  private reducePartials(grad: CudaTensor, part: bigint, blocks: number, cols: number): void {
    const k = this.dev.kernel('norm_backward', 'reduce_partials', 'ppii');
    this.dev.kernels.launch(k, [Math.ceil(cols / 256)], [256], 0, [grad.ptr, part, blocks, cols]);
  }
}
