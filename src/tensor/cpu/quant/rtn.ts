// Round-to-nearest on the host (the cpu device's quantizeRtn): every weight quantized with its
// group's scale, independently.

import { paramIndex, type QuantValueArgs, type WeightQParams } from '../../quant-job.js';
import { dequantizeValue, quantizeValue, quantRange } from '../../quant-math.js';

/** A quantized Linear weight: stored codes plus the float values the quantized model computes with. */
export interface QuantizedWeight {
  rows: number;
  cols: number;
  args: QuantValueArgs;
  qparams: WeightQParams;
  /** Row-major codes: integers in [qmin, qmax], or E4M3 bytes for fp8. */
  codes: Int32Array;
  /** (code − zero point) · scale, row-major. */
  dequantized: Float32Array;
}

export function quantizeRtn(w: Float32Array, qparams: WeightQParams, args: QuantValueArgs): QuantizedWeight {
  const { rows, cols } = qparams.grid;
  const range = quantRange(args);
  const codes = new Int32Array(rows * cols);
  const dequantized = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const k = paramIndex(qparams.grid, r, c);
      const s = qparams.scale[k]!;
      const z = qparams.zeroPoint[k]!;
      const code = quantizeValue(w[r * cols + c]!, s, z, range);
      codes[r * cols + c] = code;
      dequantized[r * cols + c] = dequantizeValue(code, s, z, range);
    }
  }
  return { rows, cols, args, qparams, codes, dequantized };
}
