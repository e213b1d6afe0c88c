// GPTQ (Frantar et al. 2022, https://arxiv.org/abs/2210.17323) as llm-compressor's gptq_quantize.py
// runs it: scales come from the observer on the whole weight first; columns are then quantized one
// at a time, each column's error spread over the not-yet-quantized columns through the upper
// Cholesky factor of H⁻¹, in blocks of 128 columns (section 3.4, "lazy batch updates").
//
//   H = 2/N Σ x xᵀ over the Linear's inputs from N calibration samples (QuantJobOps.hessianAccumulate)
//   dead columns (H_jj = 0): H_jj = 1, W[:, j] = 0
//   H += dampening · mean(diag H) · I;  U = chol(H⁻¹) upper
//   act-order ("weight"): columns visited in descending diag(H) order; each keeps its own group's scale
// If H is not positive definite after damping, the module falls back to round-to-nearest (as
// llm-compressor does), and the result says so.
//
// Float64 throughout (llm-compressor uses float32 on the GPU, and so does the cuda device): the
// algorithm, not its rounding, is the contract. This is the cpu device's gptqPrepare/gptqQuantize.

import { paramIndex, type GptqOptions, type QuantValueArgs, type WeightQParams } from '../../quant-job.js';
import { dequantizeValue, quantizeValue, quantRange } from '../../quant-math.js';
import { quantizeRtn, type QuantizedWeight } from './rtn.js';

export interface GptqResult {
  weight: QuantizedWeight;
  /** Σ (w − q)² / (2 · U_jj²), llm-compressor's reported GPTQ loss. */
  loss: number;
  /** True when the Hessian could not be inverted and the module was quantized round-to-nearest. */
  fellBackToRtn: boolean;
}

/** Lower Cholesky factor of the SPD matrix a (n×n, row-major), or undefined when a is not positive definite. */
export function cholesky(a: Float64Array, n: number): Float64Array | undefined {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j]!;
    for (let k = 0; k < j; k++) d -= l[j * n + k]! ** 2;
    if (!(d > 0)) return undefined;
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let s = a[i * n + j]!;
      for (let k = 0; k < j; k++) s -= l[i * n + k]! * l[j * n + k]!;
      l[i * n + j] = s / ljj;
    }
  }
  return l;
}

/** Inverse of an SPD matrix from its lower Cholesky factor (torch.cholesky_inverse). */
export function choleskyInverse(l: Float64Array, n: number): Float64Array {
  // Linv: inverse of the lower-triangular factor, by forward substitution column by column.
  const linv = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    linv[j * n + j] = 1 / l[j * n + j]!;
    for (let i = j + 1; i < n; i++) {
      let s = 0;
      for (let k = j; k < i; k++) s -= l[i * n + k]! * linv[k * n + j]!;
      linv[i * n + j] = s / l[i * n + i]!;
    }
  }
  // A⁻¹ = Linvᵀ · Linv
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let s = 0;
      for (let k = j; k < n; k++) s += linv[k * n + i]! * linv[k * n + j]!;
      inv[i * n + j] = s;
      inv[j * n + i] = s;
    }
  }
  return inv;
}

/** Column order for act-order: indices by descending diagonal (ties keep index order). */
export function actOrderPermutation(h: Float64Array, n: number): Int32Array {
  const idx = Array.from({ length: n }, (_, i) => i);
  idx.sort((a, b) => h[b * n + b]! - h[a * n + a]! || a - b);
  return Int32Array.from(idx);
}

/** The host form of GptqFactor: everything gptqQuantizeColumns needs besides the weight. */
export interface HostGptqFactor {
  n: number;
  perm: Int32Array;
  /** dead[c] = 1 for original column c with H_cc = 0. */
  dead: Uint8Array;
  /** Lower Cholesky factor of H⁻¹ (permuted, damped); U = its transpose. Undefined: not positive definite. */
  lInv: Float64Array | undefined;
}

/** Act-order, dead columns, dampening, chol(H), H⁻¹ and chol(H⁻¹) for h [n, n] (float64, row-major; not modified). */
export function gptqPrepareHost(h: Float64Array, n: number, opts: GptqOptions): HostGptqFactor {
  if (h.length !== n * n) throw new Error(`gptq: Hessian has ${h.length} entries for ${n} columns`);
  const perm = opts.actorder ? actOrderPermutation(h, n) : Int32Array.from({ length: n }, (_, i) => i);
  const H = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) H[i * n + j] = h[perm[i]! * n + perm[j]!]!;
  const dead = new Uint8Array(n);
  for (let j = 0; j < n; j++) {
    if (H[j * n + j] === 0) {
      H[j * n + j] = 1;
      dead[perm[j]!] = 1;
    }
  }
  let mean = 0;
  for (let j = 0; j < n; j++) mean += H[j * n + j]!;
  const damp = (opts.dampening * mean) / n;
  for (let j = 0; j < n; j++) H[j * n + j] += damp;

  const l = cholesky(H, n);
  const lInv = l && cholesky(choleskyInverse(l, n), n);
  return { n, perm, dead, lInv };
}

/**
 * GPTQ's column loop for weight w [rows, cols] (float64 throughout) with a factor whose lInv is
 * defined, and scales chosen beforehand by the observer on w.
 */
export function gptqQuantizeColumns(w: Float32Array, f: HostGptqFactor, qparams: WeightQParams, args: QuantValueArgs, blockSize: number): { weight: QuantizedWeight; loss: number } {
  const { rows: m, cols: n } = qparams.grid;
  const { perm, dead, lInv } = f;
  if (f.n !== n || lInv === undefined) throw new Error(`gptq: factor for ${f.n} columns${lInv ? '' : ' (not positive definite)'} used on ${n}`);
  const range = quantRange(args);

  // W in visiting order, dead columns zeroed.
  const W = new Float64Array(m * n);
  for (let r = 0; r < m; r++) for (let j = 0; j < n; j++) W[r * n + j] = dead[perm[j]!] ? 0 : w[r * n + perm[j]!]!;
  // U = upper Cholesky factor of H⁻¹ = (lower factor)ᵀ: U[i][j] = lInv[j][i].
  const U = (i: number, j: number): number => lInv[j * n + i]!;

  const codes = new Int32Array(m * n);
  const dequantized = new Float32Array(m * n);
  let loss = 0;
  const B = Math.max(1, blockSize);
  for (let i1 = 0; i1 < n; i1 += B) {
    const i2 = Math.min(i1 + B, n);
    const count = i2 - i1;
    const err = new Float64Array(m * count);
    for (let i = 0; i < count; i++) {
      const col = i1 + i;
      const orig = perm[col]!;
      const d = U(col, col);
      for (let r = 0; r < m; r++) {
        const x = W[r * n + col]!;
        const k = paramIndex(qparams.grid, r, orig);
        const s = qparams.scale[k]!;
        const z = qparams.zeroPoint[k]!;
        const code = quantizeValue(x, s, z, range);
        const q = dequantizeValue(code, s, z, range);
        codes[r * n + orig] = code;
        dequantized[r * n + orig] = q;
        loss += (x - q) ** 2 / d ** 2 / 2;
        const e = (x - q) / d;
        err[r * count + i] = e;
        // Spread this column's error over the rest of the block.
        for (let j = col + 1; j < i2; j++) W[r * n + j] -= e * U(col, j);
      }
    }
    // Spread the block's errors over every later column.
    if (i2 < n) {
      for (let r = 0; r < m; r++) {
        for (let i = 0; i < count; i++) {
          const e = err[r * count + i]!;
          if (e === 0) continue;
          const row = i1 + i;
          for (let j = i2; j < n; j++) W[r * n + j] -= e * U(row, j);
        }
      }
    }
  }
  return { weight: { rows: m, cols: n, args, qparams, codes, dequantized }, loss };
}

/**
 * GPTQ for weight w [rows, cols] with Hessian h [cols, cols] (float64, row-major; not modified) and
 * scales chosen beforehand by the observer on w: prepare + the column loop, or RTN when h is not
 * positive definite after damping.
 */
export function gptqQuantize(w: Float32Array, h: Float64Array, qparams: WeightQParams, args: QuantValueArgs, opts: GptqOptions & { blockSize: number }): GptqResult {
  const f = gptqPrepareHost(h, qparams.grid.cols, opts);
  if (f.lInv === undefined) return { weight: quantizeRtn(w, qparams, args), loss: NaN, fellBackToRtn: true };
  return { ...gptqQuantizeColumns(w, f, qparams, args, opts.blockSize), fellBackToRtn: false };
}
