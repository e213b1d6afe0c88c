// Weight observers on the host (the cpu device's observeWeight): the (min, max) each scale is
// computed from, per tensor, output channel or row group, as llm-compressor's observers choose them.
//   minmax — the plain min and max (observers/min_max.py; weights are observed once, no averaging)
//   mse    — grid search of a shrink factor p = 1 − i/grid, i < maxshrink·grid, on (p·min, p·max),
//            keeping per group the candidate with the least Σ|fake_quant(x) − x|^norm; stops after
//            `patience` candidates without improvement in any group (observers/mse.py defaults:
//            maxshrink 0.2, grid 100, norm 2.4, patience 5)

import { MSE_DEFAULTS, paramIndex, type ObserverName, type QuantValueArgs, type ScaleDType, type WeightGrid, type WeightQParams } from '../../quant-job.js';
import { calculateQParam, fakeQuantizeValue, quantRange } from '../../quant-math.js';

function minMaxPerGroup(w: Float32Array, grid: WeightGrid): { min: Float64Array; max: Float64Array } {
  const min = new Float64Array(grid.count).fill(Infinity);
  const max = new Float64Array(grid.count).fill(-Infinity);
  for (let r = 0; r < grid.rows; r++) {
    for (let c = 0; c < grid.cols; c++) {
      const k = paramIndex(grid, r, c);
      const v = w[r * grid.cols + c]!;
      if (v < min[k]!) min[k] = v;
      if (v > max[k]!) max[k] = v;
    }
  }
  return { min, max };
}

function qparamsFrom(min: ArrayLike<number>, max: ArrayLike<number>, grid: WeightGrid, args: QuantValueArgs, scaleDtype: ScaleDType): WeightQParams {
  const scale = new Float32Array(grid.count);
  const zeroPoint = new Int32Array(grid.count);
  for (let k = 0; k < grid.count; k++) {
    const p = calculateQParam(min[k]!, max[k]!, args, scaleDtype);
    scale[k] = p.scale;
    zeroPoint[k] = p.zeroPoint;
  }
  return { grid, scale, zeroPoint };
}

/** Scales (and zero points) for weight w [rows, cols] under `args`, chosen by `observer`. */
export function observeWeight(w: Float32Array, grid: WeightGrid, args: QuantValueArgs, observer: ObserverName, scaleDtype: ScaleDType): WeightQParams {
  const { min, max } = minMaxPerGroup(w, grid);
  if (observer === 'minmax') return qparamsFrom(min, max, grid, args, scaleDtype);

  const { maxshrink, grid: steps, norm, patience } = MSE_DEFAULTS;
  const range = quantRange(args);
  const best = new Float64Array(grid.count).fill(Number.MAX_VALUE);
  const bestMin = new Float64Array(grid.count).fill(1);
  const bestMax = new Float64Array(grid.count).fill(0);
  const candMin = new Float64Array(grid.count);
  const candMax = new Float64Array(grid.count);
  const err = new Float64Array(grid.count);
  let noImprove = 0;
  for (let i = 0; i < Math.floor(maxshrink * steps); i++) {
    const p = 1 - i / steps;
    for (let k = 0; k < grid.count; k++) {
      candMin[k] = p * min[k]!;
      candMax[k] = p * max[k]!;
    }
    const qp = qparamsFrom(candMin, candMax, grid, args, scaleDtype);
    err.fill(0);
    for (let r = 0; r < grid.rows; r++) {
      for (let c = 0; c < grid.cols; c++) {
        const k = paramIndex(grid, r, c);
        const x = w[r * grid.cols + c]!;
        err[k] += Math.abs(fakeQuantizeValue(x, qp.scale[k]!, qp.zeroPoint[k]!, range) - x) ** norm;
      }
    }
    let improved = false;
    for (let k = 0; k < grid.count; k++) {
      if (err[k]! < best[k]!) {
        best[k] = err[k]!;
        bestMin[k] = candMin[k]!;
        bestMax[k] = candMax[k]!;
        improved = true;
      }
    }
    if (improved) noImprove = 0;
    else if (++noImprove >= patience) break;
  }
  return qparamsFrom(bestMin, bestMax, grid, args, scaleDtype);
}
