// GPTQ's Hessian of a Linear layer, H = 2 Σ x xᵀ over its calibration inputs (rows of [tokens, in]),
// accumulated in float64 on the host from one device matmul per batch: Xᵀ·X = matmul(x = Xᵀ, w = Xᵀ).
// (llm-compressor averages by the sample count, H·2/N; GPTQ's damping is relative to mean(diag H),
// so the result is the same.)

import type { Device, Tensor } from '../../tensor/device.js';

export class HessianAccumulator {
  readonly h: Float64Array;
  /** Input rows (tokens) seen. */
  rows = 0;

  constructor(readonly n: number) {
    this.h = new Float64Array(n * n);
  }

  /** Adds 2 XᵀX for x [rows, n] (a device tensor, read during the call only). */
  add(device: Device, x: Tensor): void {
    const n = this.n;
    const host = device.download(x);
    const rows = host.length / n;
    if (!Number.isInteger(rows)) throw new Error(`HessianAccumulator: input has ${host.length} values, not a multiple of ${n}`);
    const xt = new Float32Array(n * rows);
    for (let r = 0; r < rows; r++) for (let c = 0; c < n; c++) xt[c * rows + r] = host[r * n + c]!;
    const xtDev = device.upload(xt, [n, rows]);
    const out = device.empty([n, n]);
    try {
      device.matmul(out, xtDev, xtDev);
      const prod = device.download(out);
      for (let i = 0; i < n * n; i++) this.h[i] += 2 * prod[i]!;
    } finally {
      device.free(xtDev);
      device.free(out);
    }
    this.rows += rows;
  }
}
