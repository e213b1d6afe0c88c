// Quantization math against hand-computed values: compressed-tensors' scale/zero-point formulas, the
// minmax and MSE observers, fake quantization of activations, int32 packing, SmoothQuant's scales,
// and GPTQ beating round-to-nearest on a layer with correlated inputs.
import { describe, expect, test } from 'vitest';
import { resolveScheme } from '../src/compress/quant/scheme.js';
import { applySmoothing, smoothingScales, type ChannelRange } from '../src/compress/quant/smoothquant.js';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { gptqQuantize, cholesky, choleskyInverse } from '../src/tensor/cpu/quant/gptq.js';
import { observeWeight } from '../src/tensor/cpu/quant/observers.js';
import { quantizeRtn } from '../src/tensor/cpu/quant/rtn.js';
import { weightGrid } from '../src/tensor/quant-job.js';
import { calculateQParam, dequantizeValue, fakeQuantizeValue, quantizeValue, quantRange } from '../src/tensor/quant-math.js';
import { packInt32, packInt32Dim0, unpackInt32, unpackInt32Dim0 } from '../src/model/compressed-tensors.js';
import { fakeQuantRowsKernel } from '../src/tensor/cpu/fake-quant.js';

const INT8 = { num_bits: 8, type: 'int', symmetric: true } as const;
const INT4 = { num_bits: 4, type: 'int', symmetric: true } as const;
const FP8 = { num_bits: 8, type: 'float', symmetric: true } as const;

describe('calculate_qparams', () => {
  test('symmetric scale = absmax / ((qmax − qmin) / 2)', () => {
    expect(calculateQParam(-1, 0.5, INT8, 'F32')).toEqual({ scale: Math.fround(1 / 127.5), zeroPoint: 0 });
    expect(calculateQParam(-3, 2, INT4, 'F32').scale).toBe(Math.fround(0.4)); // 3 / 7.5
    expect(calculateQParam(-100, 896, FP8, 'F32').scale).toBe(2); // 896 / 448
  });

  test('the range always includes 0', () => {
    expect(calculateQParam(1, 2, INT8, 'F32').scale).toBe(Math.fround(2 / 127.5));
    const asym = calculateQParam(1, 2, { ...INT4, symmetric: false }, 'F32');
    expect(asym.scale).toBe(Math.fround(2 / 15)); // (2 − 0) / 15
    expect(asym.zeroPoint).toBe(-8); // qmin − 0 / scale
  });

  test('asymmetric: scale = (max − min) / (qmax − qmin), zp = round(qmin − min / scale)', () => {
    const p = calculateQParam(-1, 2, { ...INT4, symmetric: false }, 'F32');
    expect(p.scale).toBe(Math.fround(0.2));
    expect(p.zeroPoint).toBe(-3); // −8 − (−1 / 0.2)
    const range = quantRange(INT4);
    expect(quantizeValue(2, p.scale, p.zeroPoint, range)).toBe(7);
    expect(quantizeValue(-1, p.scale, p.zeroPoint, range)).toBe(-8);
    expect(dequantizeValue(7, p.scale, p.zeroPoint, range)).toBeCloseTo(2, 6);
  });

  test('a zero range gets the scale dtype epsilon', () => {
    expect(calculateQParam(0, 0, INT8, 'F32').scale).toBe(2 ** -23);
    expect(calculateQParam(0, 0, INT8, 'BF16').scale).toBe(2 ** -7);
  });

  test('scales are rounded to the dtype they are stored in', () => {
    // 1 / 127.5 = 2^-7 · 1.0039216; bfloat16 keeps 7 fraction bits: 2^-7 · (1 + 1/128) = 0.00787353515625
    expect(calculateQParam(-1, 1, INT8, 'BF16').scale).toBe(0.00787353515625);
  });

  test('quantize: clamp, then round half to even; fp8 rounds to the nearest E4M3 value', () => {
    const r8 = quantRange(INT8);
    expect([2.5, 3.5, -2.5, -128.6, 200].map((x) => quantizeValue(x, 1, 0, r8))).toEqual([2, 4, -2, -128, 127]);
    const f8 = quantRange(FP8);
    expect(fakeQuantizeValue(0.3, 1, 0, f8)).toBe(0.3125); // E4M3 neighbours 0.28125, 0.3125
    expect(fakeQuantizeValue(500, 1, 0, f8)).toBe(448); // saturates
    expect(fakeQuantizeValue(-3.3, 2, 0, f8)).toBe(-3.25); // −1.65 → −1.625 (step 1/8 in [1, 2))
  });
});

describe('observers', () => {
  test('minmax: per channel, per group, per tensor', () => {
    const w = Float32Array.of(1, -2, 0.5, 0.25, 0, 0, 0, 0);
    const channel = observeWeight(w, weightGrid(2, 4, { strategy: 'channel', group_size: null }), { ...resolveScheme({ scheme: 'W8A8' }).weights }, 'minmax', 'F32');
    expect(Array.from(channel.scale)).toEqual([Math.fround(2 / 127.5), 2 ** -23]);
    expect(channel.grid.scaleShape).toEqual([2, 1]);
    const w4 = resolveScheme({ scheme: 'W4A16', groupSize: 2 }).weights;
    const group = observeWeight(Float32Array.of(1, -1, 4, 2), weightGrid(1, 4, w4), w4, 'minmax', 'F32');
    expect(Array.from(group.scale)).toEqual([Math.fround(1 / 7.5), Math.fround(4 / 7.5)]);
    expect(group.grid.scaleShape).toEqual([1, 2]);
    const fp8 = resolveScheme({ scheme: 'FP8' }).weights;
    const tensor = observeWeight(w, weightGrid(2, 4, fp8), fp8, 'minmax', 'F32');
    expect(Array.from(tensor.scale)).toEqual([Math.fround(2 / 448)]);
    expect(tensor.grid.scaleShape).toEqual([1]);
  });

  test('mse: keeps the full range when clipping only hurts', () => {
    // int4 row [7.5, 3.25]: p = 1 gives errors 0.5 (clamp) and 0.25; every shrink is worse.
    const args = resolveScheme({ scheme: 'W4A16', groupSize: 'channel' }).weights;
    const qp = observeWeight(Float32Array.of(7.5, 3.25), weightGrid(1, 2, args), args, 'mse', 'F32');
    expect(qp.scale[0]).toBe(1);
  });

  test('mse: shrinks the range when that lowers Σ|error|^2.4 (hand-computed)', () => {
    // int4 row [7.5, 0.5 × 8]. p = 1: scale 1, each 0.5 rounds (half to even) to 0:
    //   E(1) = 0.5^2.4 + 8·0.5^2.4 = 1.70519.   p = 0.99: 7.5 → clamp 7 → 6.93, 0.5 → 1 → 0.99:
    //   E(.99) = 0.57^2.4 + 8·0.49^2.4 = 1.70350 (better).  p = 0.98: 0.64^2.4 + 8·0.48^2.4 = 1.71692,
    //   and worse from there on, so after 5 candidates without improvement the search stops at 0.99.
    const args = resolveScheme({ scheme: 'W4A16', groupSize: 'channel' }).weights;
    const w = Float32Array.of(7.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5);
    const mse = observeWeight(w, weightGrid(1, 9, args), args, 'mse', 'F32');
    expect(mse.scale[0]).toBe(Math.fround((0.99 * 7.5) / 7.5));
    expect(observeWeight(w, weightGrid(1, 9, args), args, 'minmax', 'F32').scale[0]).toBe(1);
  });
});

describe('fakeQuantRows (CPU)', () => {
  test('int8 dynamic per token: scale = absmax / 127.5 per row', () => {
    const x = Float32Array.of(1, -2, 0.5, 0, 0, 0);
    fakeQuantRowsKernel(x, 2, 3, { format: 'int8' });
    const s = Math.fround(2 / 127.5);
    // 1/s = 63.75 → 64; 0.5/s = 31.875 → 32; s rounds up in float32, so −2/s = −127.4999924 → −127
    expect(Array.from(x.subarray(0, 3))).toEqual([64, -127, 32].map((q) => Math.fround(q * s)));
    expect(Array.from(x.subarray(3))).toEqual([0, 0, 0]);
  });

  test('fp8 with a static scale saturates at ±448·scale', () => {
    const x = Float32Array.of(0.6, -3.3, 1000);
    fakeQuantRowsKernel(x, 1, 3, { format: 'fp8_e4m3', scale: 2 });
    expect(Array.from(x)).toEqual([0.625, -3.25, 896]); // 0.3 → 0.3125, −1.65 → −1.625, 500 → 448
  });
});

describe('int32 packing (compressed-tensors pack_to_int32)', () => {
  test('4-bit values are offset by 8 and packed LSB first', () => {
    const packed = packInt32(Int32Array.of(-8, -7, 0, 7, 1, 2, 3, 4, 5, -1, 0), 1, 11, 4);
    // nibbles 0,1,8,F,9,A,B,C → 0xCBA9F810; then 13, 7, 8 and zero padding → 0x0000087D
    expect(Array.from(packed)).toEqual([0xcba9f810 | 0, 0x0000087d]);
    expect(Array.from(unpackInt32(packed, 1, 11, 4))).toEqual([-8, -7, 0, 7, 1, 2, 3, 4, 5, -1, 0]);
  });

  test('8-bit values are offset by 128, four per word', () => {
    const packed = packInt32(Int32Array.of(-128, 127, 0, 1, 5), 1, 5, 8);
    expect(Array.from(packed)).toEqual([0x8180ff00 | 0, 0x85]);
    expect(Array.from(unpackInt32(packed, 1, 5, 8))).toEqual([-128, 127, 0, 1, 5]);
  });

  test('zero points pack along dim 0', () => {
    // [9 rows, 2 groups] → [2, 2]: column 0 holds rows 0..7 then row 8
    const zp = Int32Array.from({ length: 18 }, (_, i) => (i % 2 === 0 ? (i / 2) - 8 : 7 - (i - 1) / 2));
    const packed = packInt32Dim0(zp, 9, 2, 4);
    expect(packed.length).toBe(4);
    expect(packed[0]).toBe(0x76543210); // rows 0..7 of column 0: −8..−1 → 0..7
    expect(packed[2]).toBe(0x8); // row 8 of column 0: 0 → 8
    expect(Array.from(unpackInt32Dim0(packed, 9, 2, 4))).toEqual(Array.from(zp));
  });
});

describe('SmoothQuant', () => {
  /** Per-channel range of x [rows, n] through the cpu device's channelRange op. */
  function channelRange(x: Float32Array, n: number): ChannelRange {
    const cpu = createCpuDevice({ threads: 1 });
    const qj = cpu.quantJob;
    const min = qj.uploadF32(new Float32Array(n).fill(Infinity), [n]);
    const max = qj.uploadF32(new Float32Array(n).fill(-Infinity), [n]);
    qj.channelRange(min, max, cpu.upload(x, [x.length / n, n]));
    return { min: cpu.download(min), max: cpu.download(max) };
  }

  test('s_j = range_j^α / (2·max|W_:,j|)^(1−α), range_j where the weights are 0, at least 1e-5', () => {
    const range = channelRange(Float32Array.of(-2, 1, 0, 6, -1, 0), 3); // rows [−2, 1, 0], [6, −1, 0]
    const w1 = { data: Float32Array.of(0.5, 0, 0, -0.25, 0, 0), rows: 2, cols: 3 };
    const w2 = { data: Float32Array.of(0.1, 0, 0), rows: 1, cols: 3 };
    const s = smoothingScales(range, [w1, w2], 0.5);
    expect(s[0]).toBeCloseTo(Math.sqrt(8) / Math.sqrt(1), 12); // range 8, weights 2·0.5
    expect(s[1]).toBe(2); // range 2, no weight → s = range
    expect(s[2]).toBe(1e-5); // range 0 → clamped
  });

  test('smoothing preserves the layer function: (x/s)·(W·s)ᵀ = x·Wᵀ', () => {
    const x = Float32Array.of(3, -1, 0.5, 2);
    const norm = Float32Array.of(1, 1, 1, 1);
    const w = { data: Float32Array.of(0.2, -0.4, 1, 0.1, -0.3, 0.5, 0.25, 2), rows: 2, cols: 4 };
    const before = [0, 1].map((r) => x.reduce((a, xi, c) => a + xi * norm[c]! * w.data[r * 4 + c]!, 0));
    const range = channelRange(x, 4);
    applySmoothing(norm, [w], smoothingScales(range, [w], 0.8));
    const after = [0, 1].map((r) => x.reduce((a, xi, c) => a + xi * norm[c]! * w.data[r * 4 + c]!, 0));
    expect(after[0]).toBeCloseTo(before[0]!, 5);
    expect(after[1]).toBeCloseTo(before[1]!, 5);
  });
});

describe('GPTQ', () => {
  /** Deterministic standard normals. */
  function normals(seed: number): () => number {
    let s = seed;
    const u = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) + 0.5) / 4294967296;
    return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
  }

  const rows = 24;
  const cols = 48;
  const tokens = 400;
  const g = normals(7);
  // Correlated inputs: x = M z with a few strong latent directions, some channels much larger.
  const mix = Float64Array.from({ length: cols * cols }, () => g());
  const X = new Float64Array(tokens * cols);
  for (let t = 0; t < tokens; t++) {
    const z = Array.from({ length: cols }, (_, k) => g() * (k < 3 ? 6 : 1));
    for (let c = 0; c < cols; c++) {
      let v = 0;
      for (let k = 0; k < cols; k++) v += mix[c * cols + k]! * z[k]!;
      X[t * cols + c] = v * (c % 5 === 0 ? 3 : 1);
    }
  }
  const H = new Float64Array(cols * cols);
  for (let t = 0; t < tokens; t++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) H[i * cols + j] += 2 * X[t * cols + i]! * X[t * cols + j]!;
  const W = Float32Array.from({ length: rows * cols }, () => g());

  /** ‖X(W − Q)ᵀ‖ / ‖XWᵀ‖ */
  function outputError(Q: Float32Array): number {
    let e = 0;
    let r = 0;
    for (let t = 0; t < tokens; t++) {
      for (let o = 0; o < rows; o++) {
        let y = 0;
        let yq = 0;
        for (let c = 0; c < cols; c++) {
          y += X[t * cols + c]! * W[o * cols + c]!;
          yq += X[t * cols + c]! * Q[o * cols + c]!;
        }
        e += (y - yq) ** 2;
        r += y * y;
      }
    }
    return Math.sqrt(e / r);
  }

  test('Cholesky inverse inverts', () => {
    const n = 3;
    const a = Float64Array.of(4, 2, 0.6, 2, 5, 1, 0.6, 1, 3);
    const inv = choleskyInverse(cholesky(a, n)!, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += a[i * n + k]! * inv[k * n + j]!;
        expect(s).toBeCloseTo(i === j ? 1 : 0, 12);
      }
    }
    expect(cholesky(Float64Array.of(1, 2, 2, 1), 2)).toBeUndefined();
  });

  for (const groupSize of ['channel', 16] as const) {
    test(`W4A16 (${groupSize}): lower output error than RTN; act-order lower still; block size does not change the result`, () => {
      const args = resolveScheme({ scheme: 'W4A16', groupSize }).weights;
      const qp = observeWeight(W, weightGrid(rows, cols, args), args, 'minmax', 'F32');
      const rtn = outputError(quantizeRtn(W, qp, args).dequantized);
      const gptq = gptqQuantize(W, H, qp, args, { blockSize: 128, dampening: 0.01, actorder: false });
      const act = gptqQuantize(W, H, qp, args, { blockSize: 128, dampening: 0.01, actorder: true });
      const small = gptqQuantize(W, H, qp, args, { blockSize: 8, dampening: 0.01, actorder: false });
      expect(gptq.fellBackToRtn).toBe(false);
      expect(outputError(gptq.weight.dequantized)).toBeLessThan(0.75 * rtn);
      expect(outputError(act.weight.dequantized)).toBeLessThan(outputError(gptq.weight.dequantized));
      for (let i = 0; i < W.length; i++) expect(small.weight.codes[i]).toBe(gptq.weight.codes[i]);
      // Codes stay codes: every dequantized value is (code − zp) · scale of its group, codes in [−8, 7].
      expect(Math.min(...gptq.weight.codes)).toBeGreaterThanOrEqual(-8);
      expect(Math.max(...gptq.weight.codes)).toBeLessThanOrEqual(7);
    });
  }

  test('a Hessian that cannot be inverted falls back to round-to-nearest', () => {
    const args = resolveScheme({ scheme: 'W4A16', groupSize: 'channel' }).weights;
    const qp = observeWeight(W, weightGrid(rows, cols, args), args, 'minmax', 'F32');
    const bad = new Float64Array(cols * cols).fill(1); // rank 1, and no damping
    const r = gptqQuantize(W, bad, qp, args, { blockSize: 128, dampening: 0, actorder: false });
    expect(r.fellBackToRtn).toBe(true);
    expect(Array.from(r.weight.codes)).toEqual(Array.from(quantizeRtn(W, qp, args).codes));
  });
});
