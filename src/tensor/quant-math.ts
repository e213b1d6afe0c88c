// The reference value math of quantization (both devices implement it; the cpu one is this code):
// scales and zero points exactly as compressed-tensors computes them (quantization/utils/helpers.py
// calculate_qparams, lifecycle/forward.py _quantize/_dequantize), for one value range at a time.
//
//   range:      int b bits → [−2^(b−1), 2^(b−1) − 1];  fp8 E4M3 → [−448, 448]
//   min, max:   widened to include 0
//   symmetric:  scale = max(|min|, |max|) / ((qmax − qmin) / 2),  zero point 0
//   asymmetric: scale = (max − min) / (qmax − qmin),  zp = round(clamp(qmin − min / scale, qmin, qmax))
//   scale = 0 → the scale dtype's epsilon
//   quantize:   q = round(clamp(x / scale + zp, qmin, qmax))   (fp8: cast with RNE instead of round)
//   dequantize: x' = (q − zp) · scale

import { clampFp8E4M3, decodeToFloat32, encodeFromFloat32, f32ToFp8E4M3, fp8E4M3ToF32, roundHalfEven } from '../io/dtypes.js';
import type { QuantValueArgs, ScaleDType } from './quant-job.js';

export type { ScaleDType } from './quant-job.js';

export interface QuantRange {
  qmin: number;
  qmax: number;
  float: boolean;
}

export function quantRange(args: Pick<QuantValueArgs, 'num_bits' | 'type'>): QuantRange {
  if (args.type === 'float') {
    if (args.num_bits !== 8) throw new Error(`float quantization supports 8 bits (E4M3), got ${args.num_bits}`);
    return { qmin: -448, qmax: 448, float: true };
  }
  const half = 2 ** (args.num_bits - 1);
  return { qmin: -half, qmax: half - 1, float: false };
}

/** torch.finfo(dtype).eps. */
export function dtypeEps(dtype: ScaleDType): number {
  return dtype === 'F32' ? 2 ** -23 : dtype === 'BF16' ? 2 ** -7 : 2 ** -10;
}

/** x rounded to what `dtype` stores (so the scale used to quantize is the scale written). */
export function roundToDtype(x: number, dtype: ScaleDType): number {
  if (dtype === 'F32') return Math.fround(x);
  return decodeToFloat32(dtype, encodeFromFloat32(dtype, Float32Array.of(x)))[0]!;
}

export interface QParam {
  scale: number;
  zeroPoint: number;
}

/** calculate_qparams for one (min, max) pair; the scale is rounded to `scaleDtype`. */
export function calculateQParam(min: number, max: number, args: QuantValueArgs, scaleDtype: ScaleDType): QParam {
  const { qmin, qmax } = quantRange(args);
  const lo = Math.min(min, 0);
  const hi = Math.max(max, 0);
  let scale: number;
  let zeroPoint = 0;
  if (args.symmetric) {
    scale = roundToDtype(Math.max(-lo, hi) / ((qmax - qmin) / 2), scaleDtype);
  } else {
    if (args.type === 'float') throw new Error('asymmetric float quantization is not supported');
    scale = roundToDtype((hi - lo) / (qmax - qmin), scaleDtype);
    if (scale !== 0) zeroPoint = roundHalfEven(Math.min(qmax, Math.max(qmin, qmin - lo / scale)));
  }
  if (scale === 0) scale = dtypeEps(scaleDtype);
  return { scale, zeroPoint };
}

/** The stored code of x: an integer in [qmin, qmax], or an E4M3 byte for fp8. */
export function quantizeValue(x: number, scale: number, zeroPoint: number, range: QuantRange): number {
  const scaled = Math.fround(x / scale) + zeroPoint;
  if (range.float) return f32ToFp8E4M3(clampFp8E4M3(scaled));
  return roundHalfEven(scaled < range.qmin ? range.qmin : scaled > range.qmax ? range.qmax : scaled);
}

export function dequantizeValue(code: number, scale: number, zeroPoint: number, range: QuantRange): number {
  return range.float ? fp8E4M3ToF32(code) * scale : (code - zeroPoint) * scale;
}

/** quantize then dequantize (the value the quantized model computes with). */
export function fakeQuantizeValue(x: number, scale: number, zeroPoint: number, range: QuantRange): number {
  return dequantizeValue(quantizeValue(x, scale, zeroPoint, range), scale, zeroPoint, range);
}
