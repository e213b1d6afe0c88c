// Fake quantization of activation rows (Device.fakeQuantRows) on the CPU: the reference for how a
// quantized checkpoint's Linear inputs and FP8 KV cache are simulated in float32.
//
// Per compressed-tensors (quantization/lifecycle/forward.py, utils/helpers.py): with scale s,
//   int8: q = round_half_even(clamp(x / s, -128, 127)),  x' = q · s
//   fp8:  q = e4m3(clamp(x / s, -448, 448)),             x' = q · s
// and a dynamic per-token scale is max(|min(row, 0)|, max(row, 0)) / ((qmax − qmin) / 2).

import { clampFp8E4M3, f32ToFp8E4M3, fp8E4M3ToF32, roundHalfEven } from '../../io/dtypes.js';
import type { FakeQuantSpec } from '../device.js';

/** torch.finfo(torch.float32).eps: compressed-tensors' replacement for a zero scale. */
const FLOAT32_EPS = 2 ** -23;

/** (qmax − qmin) / 2 for the format. */
export function halfRange(format: FakeQuantSpec['format']): number {
  return format === 'int8' ? 127.5 : 448;
}

/** x [rows, cols] (row-major) in place. */
export function fakeQuantRowsKernel(x: Float32Array, rows: number, cols: number, spec: FakeQuantSpec): void {
  if (spec.scale !== undefined && !(spec.scale > 0 && Number.isFinite(spec.scale))) {
    throw new Error(`fakeQuantRows: static scale must be a positive finite number, got ${spec.scale}`);
  }
  const fp8 = spec.format === 'fp8_e4m3';
  const half = halfRange(spec.format);
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let scale = spec.scale;
    if (scale === undefined) {
      let absmax = 0;
      for (let c = 0; c < cols; c++) {
        const a = Math.abs(x[start + c]!);
        if (a > absmax) absmax = a;
      }
      scale = Math.fround(absmax / half);
      if (scale === 0) scale = FLOAT32_EPS;
    }
    for (let c = 0; c < cols; c++) {
      const v = Math.fround(x[start + c]! / scale); // float32 division, as torch computes it
      const q = fp8 ? fp8E4M3ToF32(f32ToFp8E4M3(clampFp8E4M3(v))) : roundHalfEven(v < -128 ? -128 : v > 127 ? 127 : v);
      x[start + c] = q * scale;
    }
  }
}
