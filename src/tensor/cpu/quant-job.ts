// The cpu device's QuantJobOps: the reference. Statistics accumulate into f32 tensors from float64
// arithmetic; Cholesky, the inverse, GPTQ and the observers run in float64 on the host
// (src/tensor/cpu/quant/*), as llmopt's quantize always did.

import type { Tensor } from '../device.js';
import type { ErrorSums, GptqFactor, GptqOptions, ObserverName, QuantJobOps, QuantValueArgs, ScaleDType, WeightGrid, WeightQParams } from '../quant-job.js';
import type { CpuDevice } from './cpu-device.js';
import { cholesky, choleskyInverse, gptqPrepareHost, gptqQuantizeColumns, type HostGptqFactor } from './quant/gptq.js';
import { observeWeight } from './quant/observers.js';
import { quantizeRtn } from './quant/rtn.js';
import { CpuTensor, fmtShape } from './tensor.js';

class CpuGptqFactor implements GptqFactor {
  readonly cols: number;
  readonly ok: boolean;
  readonly perm: Int32Array;
  readonly dead: Uint8Array;
  constructor(readonly host: HostGptqFactor) {
    this.cols = host.n;
    this.ok = host.lInv !== undefined;
    this.perm = host.perm;
    this.dead = host.dead;
  }

  readU(): Float32Array {
    const n = this.cols;
    const u = new Float32Array(n * n);
    const l = this.host.lInv;
    if (l === undefined) throw new Error('gptq factor: not positive definite, no U');
    for (let i = 0; i < n; i++) for (let j = i; j < n; j++) u[i * n + j] = l[j * n + i]!;
    return u;
  }

  free(): void {}
}

export class CpuQuantJob implements QuantJobOps {
  constructor(private readonly device: CpuDevice) {}

  uploadF32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.device.upload(data, shape);
  }

  zerosF32(shape: readonly number[]): Tensor {
    return this.device.empty(shape);
  }

  copy(dst: Tensor, src: Tensor): void {
    const d = this.cpu(dst, 'copy', 'dst');
    const s = this.cpu(src, 'copy', 'src');
    if (d.length !== s.length) throw new Error(`copy: dst ${fmtShape(d)} and src ${fmtShape(s)} differ in size`);
    d.data.set(s.data);
  }

  hessianAccumulate(h: Tensor, x: Tensor, scale: number): void {
    const hc = this.cpu(h, 'hessianAccumulate', 'h');
    const xc = this.cpu(x, 'hessianAccumulate', 'x');
    const n = xc.cols;
    const rows = xc.rowCount;
    if (hc.rowCount !== n || hc.cols !== n) throw new Error(`hessianAccumulate: h ${fmtShape(hc)} for x ${fmtShape(xc)} (expects h [K,K], x [rows,K])`);
    if (rows === 0) return;
    // xᵀx = matmul(x = xᵀ, w = xᵀ) on this device's kernels.
    const host = xc.data;
    const xt = new Float32Array(n * rows);
    for (let r = 0; r < rows; r++) for (let c = 0; c < n; c++) xt[c * rows + r] = host[r * n + c]!;
    const xtDev = this.device.upload(xt, [n, rows]);
    const out = this.device.empty([n, n]);
    this.device.matmul(out, xtDev, xtDev);
    const prod = out.data;
    const hd = hc.data;
    for (let i = 0; i < n * n; i++) hd[i] = hd[i]! + scale * prod[i]!;
  }

  channelRange(min: Tensor, max: Tensor, x: Tensor): void {
    const mn = this.cpu(min, 'channelRange', 'min');
    const mx = this.cpu(max, 'channelRange', 'max');
    const xc = this.cpu(x, 'channelRange', 'x');
    const n = xc.cols;
    if (mn.length !== n || mx.length !== n) throw new Error(`channelRange: min ${fmtShape(mn)}, max ${fmtShape(mx)} for x ${fmtShape(xc)}`);
    const lo = mn.data, hi = mx.data, v = xc.data;
    for (let i = 0; i < v.length; i++) {
      const c = i % n;
      const a = v[i]!;
      if (a < lo[c]!) lo[c] = a;
      if (a > hi[c]!) hi[c] = a;
    }
  }

  absMax(acc: Tensor, x: Tensor): void {
    const a = this.cpu(acc, 'absMax', 'acc');
    const xc = this.cpu(x, 'absMax', 'x');
    if (a.length !== 1) throw new Error(`absMax: acc ${fmtShape(a)} must hold one value`);
    const v = xc.data;
    let m = a.data[0]!;
    for (let i = 0; i < v.length; i++) {
      const b = Math.abs(v[i]!);
      if (b > m) m = b;
    }
    a.data[0] = m;
  }

  scaleHessian(h: Tensor, s: Float64Array): void {
    const hc = this.cpu(h, 'scaleHessian', 'h');
    const n = s.length;
    if (hc.rowCount !== n || hc.cols !== n) throw new Error(`scaleHessian: h ${fmtShape(hc)} for ${n} scales`);
    const hd = hc.data;
    for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) hd[r * n + c] = hd[r * n + c]! / (s[r]! * s[c]!);
  }

  accumulateErrors(acc: ErrorSums, yq: Tensor, y: Tensor, x: Tensor): void {
    const q = this.cpu(yq, 'accumulateErrors', 'yq').data;
    const r = this.cpu(y, 'accumulateErrors', 'y').data;
    const xi = this.cpu(x, 'accumulateErrors', 'x').data;
    if (q.length !== r.length || xi.length !== r.length) throw new Error(`accumulateErrors: yq, y and x differ in size (${q.length}, ${r.length}, ${xi.length})`);
    let { diff2, ref2, update2 } = acc;
    for (let k = 0; k < q.length; k++) {
      const v = r[k]!;
      diff2 += (q[k]! - v) ** 2;
      ref2 += v ** 2;
      update2 += (v - xi[k]!) ** 2;
    }
    acc.diff2 = diff2;
    acc.ref2 = ref2;
    acc.update2 = update2;
  }

  cholesky(a: Tensor): boolean {
    const ac = this.square(a, 'cholesky', 'a');
    const l = cholesky(Float64Array.from(ac.data), ac.cols);
    if (l === undefined) return false;
    ac.data.set(l);
    return true;
  }

  choleskyInverse(l: Tensor, out: Tensor): void {
    const lc = this.square(l, 'choleskyInverse', 'l');
    const oc = this.square(out, 'choleskyInverse', 'out');
    if (oc.cols !== lc.cols) throw new Error(`choleskyInverse: out ${fmtShape(oc)} for l ${fmtShape(lc)}`);
    oc.data.set(choleskyInverse(Float64Array.from(lc.data), lc.cols));
  }

  observeWeight(w: Tensor, grid: WeightGrid, args: QuantValueArgs, observer: ObserverName, scaleDtype: ScaleDType): WeightQParams {
    const wc = this.weight(w, grid, 'observeWeight');
    return observeWeight(wc.data, grid, args, observer, scaleDtype);
  }

  quantizeRtn(w: Tensor, qparams: WeightQParams, args: QuantValueArgs, deq: Tensor): Int32Array {
    const wc = this.weight(w, qparams.grid, 'quantizeRtn');
    const dc = this.weight(deq, qparams.grid, 'quantizeRtn');
    const r = quantizeRtn(wc.data, qparams, args);
    dc.data.set(r.dequantized);
    return r.codes;
  }

  gptqPrepare(h: Tensor, opts: GptqOptions): GptqFactor {
    const hc = this.square(h, 'gptqPrepare', 'h');
    return new CpuGptqFactor(gptqPrepareHost(Float64Array.from(hc.data), hc.cols, opts));
  }

  gptqQuantize(w: Tensor, factor: GptqFactor, qparams: WeightQParams, args: QuantValueArgs, blockSize: number, deq: Tensor): { codes: Int32Array; loss: number } {
    if (!(factor instanceof CpuGptqFactor)) throw new Error('gptqQuantize: factor was not made by this device');
    const wc = this.weight(w, qparams.grid, 'gptqQuantize');
    const dc = this.weight(deq, qparams.grid, 'gptqQuantize');
    const r = gptqQuantizeColumns(wc.data, factor.host, qparams, args, blockSize);
    dc.data.set(r.weight.dequantized);
    return { codes: r.weight.codes, loss: r.loss };
  }

  private cpu(t: Tensor, op: string, name: string): CpuTensor {
    if (!(t instanceof CpuTensor) || t.device !== this.device) throw new Error(`${op}: ${name} is not a tensor of this cpu device`);
    return t;
  }

  private square(t: Tensor, op: string, name: string): CpuTensor {
    const c = this.cpu(t, op, name);
    if (c.rowCount !== c.cols) throw new Error(`${op}: ${name} ${fmtShape(c)} is not square`);
    return c;
  }

  private weight(t: Tensor, grid: WeightGrid, op: string): CpuTensor {
    const c = this.cpu(t, op, 'weight');
    if (c.rowCount !== grid.rows || c.cols !== grid.cols) throw new Error(`${op}: tensor ${fmtShape(c)} for a [${grid.rows},${grid.cols}] weight grid`);
    return c;
  }
}
