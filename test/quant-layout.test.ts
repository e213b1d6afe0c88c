// The quantized-Linear device layout, checked without a GPU: which layouts run natively
// (planLayout), the host packing (packWeights) read back with the index arithmetic of the kernels
// (kernels/qgemv.cu, qgemm.cu, quant.cuh: word interleave, 4-bit pair order, group divide-by-multiply,
// act-order permutation) against the dequantized reference, and the loader choosing the native path
// (weights.ts: all-or-nothing per shared input when the GEMM quantizes activations, simulation cleared).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { quantizeModel } from '../src/compress/quant/index.js';
import { dequantizeQuantizedLinear } from '../src/model/compressed-tensors.js';
import { loadModel } from '../src/model/load.js';
import { simulatesQuantization } from '../src/model/weights.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';
import { decodeLayerSmemBytes, decodeLayerSplit } from '../src/tensor/cuda/decode-layer.js';
import { packWeights, planLayout, rowSplit, type QuantLayout } from '../src/tensor/cuda/quant-linear.js';
import type { FakeQuantSpec, QuantizedLinearData, Tensor } from '../src/tensor/device.js';
import { Inputs } from './cuda-cases.js';
import { QSCHEMES, activationSpec, randomQuantizedWeight, type QScheme } from './cuda-quant-cases.js';

const H100 = 90;

/** Reads the packed layout as the qgemv kernel does and returns x · Wᵀ for one row of x (f64). */
function emulateQgemv(p: QuantLayout, bytes: Uint8Array, scale: Float32Array, zero: Int32Array | undefined, x: Float32Array): Float64Array {
  const u4 = p.format === 'u4';
  const KW = u4 ? 8 : 4, CK = 16 * KW;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Staging: staged[pos(k)] = x[perm[k]]; the 4-bit pairs read staged[base + pairPos(i)] for nibble i.
  const pairPos = (i: number) => (i & 3) * 2 + (i >> 2);
  const staged = new Float64Array(p.Kp);
  for (let k = 0; k < p.K; k++) staged[u4 ? (k & ~7) | pairPos(k & 7) : k] = x[p.perm ? p.perm[k]! : k]!;
  const out = new Float64Array(p.N);
  const scales = (n: number, grp: number) => (scale.length === 1 ? scale[0]! : scale[n * p.G + grp]!);
  for (let n = 0; n < p.N; n++) {
    let acc = 0;
    for (let c = 0; c < p.Kp / CK; c++) {
      for (let u = 0; u < 4; u++) {
        const grp = p.gmagic ? Number((BigInt(4 * c + u) * BigInt(p.gmagic)) >> 32n) : 0;
        const z = zero ? (zero.length === 1 ? zero[0]! : zero[n * p.G + grp]!) : 0;
        for (let t = 0; t < 4; t++) {
          const word = view.getUint32(n * p.rowBytes + c * 64 + 16 * t + 4 * u, true);
          const base = c * CK + (t + 4 * u) * KW;
          for (let i = 0; i < KW; i++) {
            let q: number;
            if (u4) q = ((word >>> (4 * i)) & 15) - 8;
            else if (p.format === 's8') q = ((word >>> (8 * i)) << 24) >> 24;
            else q = fp8(((word >>> (8 * i)) & 255));
            acc += (q - z) * scales(n, grp) * staged[base + (u4 ? pairPos(i) : i)]!;
          }
        }
      }
    }
    out[n] = acc;
  }
  return out;
}

function fp8(code: number): number {
  const s = code & 0x80 ? -1 : 1, e = (code >> 3) & 15, m = code & 7;
  return s * (e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7));
}

/** The large-M dequant_weight kernel's index arithmetic: every stored word back to its columns. */
function emulateDequant(p: QuantLayout, bytes: Uint8Array, scale: Float32Array, zero: Int32Array | undefined): Float32Array {
  const u4 = p.format === 'u4';
  const KW = u4 ? 8 : 4, CK = 16 * KW;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(p.N * p.K);
  for (let n = 0; n < p.N; n++) {
    for (let w = 0; w < p.rowBytes / 4; w++) {
      const k0 = (w >> 4) * CK + (((w & 15) >> 2) + 4 * (w & 3)) * KW;
      if (k0 >= p.K) continue;
      const word = view.getUint32(n * p.rowBytes + 4 * w, true);
      const gi = p.G > 1 ? n * p.G + Math.floor(k0 / p.groupSize) : scale.length === 1 ? 0 : n;
      for (let i = 0; i < KW && k0 + i < p.K; i++) {
        const q = u4 ? ((word >>> (4 * i)) & 15) - 8 : p.format === 's8' ? ((word >>> (8 * i)) << 24) >> 24 : fp8((word >>> (8 * i)) & 255);
        const z = zero ? zero[zero.length === 1 ? 0 : gi]! : 0;
        out[n * p.K + (p.perm ? p.perm[k0 + i]! : k0 + i)] = (q - z) * scale[scale.length === 1 ? 0 : gi]!;
      }
    }
  }
  return out;
}

describe('planLayout: what runs natively', () => {
  const w = (s: QScheme, N = 48, K = 256) => randomQuantizedWeight(s, N, K, 5);
  const scheme = (label: string) => QSCHEMES.find((q) => q.label === label)!;
  test('every scheme of the GPU cases runs natively on bf16 and f16 at compute capability 9.0', () => {
    for (const s of QSCHEMES) {
      for (const dtype of ['bf16', 'f16'] as const) {
        expect(planLayout(w(s), activationSpec(s), dtype, H100), `${s.label} ${dtype}`).toBeDefined();
      }
    }
  });
  test('declined: the f32 device, FP8 before sm_89, anything before sm_80, int8 activations on fp8 weights, activations with 4-bit weights or zero points', () => {
    const fp8 = scheme('FP8_DYNAMIC');
    expect(planLayout(w(fp8), activationSpec(fp8), 'f32', H100)).toBeUndefined();
    expect(planLayout(w(fp8), activationSpec(fp8), 'bf16', 86)).toBeUndefined();
    expect(planLayout(w(scheme('W8A8 dynamic')), { format: 'int8' }, 'bf16', 86)).toBeDefined();
    expect(planLayout(w(scheme('W8A8 dynamic')), { format: 'int8' }, 'bf16', 75)).toBeUndefined();
    expect(planLayout(w(fp8), { format: 'int8' }, 'bf16', H100)).toBeUndefined();
    expect(planLayout(w(scheme('W4A16 channel')), { format: 'int8' }, 'bf16', H100)).toBeUndefined();
    expect(planLayout(w(scheme('int8 weights only, asym')), { format: 'int8' }, 'bf16', H100)).toBeUndefined();
    expect(planLayout(w(scheme('int8 weights only, asym')), undefined, 'bf16', H100)).toBeDefined();
    // a static scale that is not an f32 value (the kernels take it as one)
    expect(planLayout(w(scheme('W8A8 static')), { format: 'int8', scale: 0.1 }, 'bf16', H100)).toBeUndefined();
  });
  test('declined: groups that are not whole mma spans (4-bit: 32 columns, 8-bit: 16), act-order groups of unequal size', () => {
    expect(planLayout(randomQuantizedWeight({ label: 'g16', codes: 'packed4', groupSize: 16 }, 32, 256, 1), undefined, 'bf16', H100)).toBeUndefined();
    expect(planLayout(randomQuantizedWeight({ label: 'g16', codes: 'packed8', groupSize: 16 }, 32, 256, 1), undefined, 'bf16', H100)).toBeDefined();
    expect(planLayout(randomQuantizedWeight({ label: 'g8', codes: 'packed8', groupSize: 8 }, 32, 256, 1), undefined, 'bf16', H100)).toBeUndefined();
    const uneven = randomQuantizedWeight({ label: 'g', codes: 'packed4', groupSize: 64, gIdx: true }, 32, 256, 1);
    uneven.gIdx![0] = (uneven.gIdx![0]! + 1) % 4;
    expect(planLayout(uneven, undefined, 'bf16', H100)).toBeUndefined();
  });
});

describe('packWeights read back with the kernels’ index arithmetic', () => {
  const cases: [QScheme, number, number][] = [];
  for (const s of QSCHEMES) {
    const shapes: [number, number][] = s.groupSize ? [[37, 1152], [5, 256]] : [[37, 1000], [19, 1001], [16, 64], [3, 4104]];
    for (const [N, K] of shapes) cases.push([s, N, K]);
  }
  test.each(cases)('%s N%i K%i', (s, N, K) => {
    const w = randomQuantizedWeight(s, N, K, N + K);
    const p = planLayout(w, activationSpec(s), 'bf16', H100)!;
    expect(p).toBeDefined();
    const bytes = packWeights(w, p.format, p.Np, p.rowBytes, p.perm);
    expect(bytes.length).toBe(p.Np * p.rowBytes);
    const ref = dequantizeQuantizedLinear(w);
    // large-M dequantization: exact
    expect(Array.from(emulateDequant(p, bytes, w.scale, w.zeroPoint))).toEqual(Array.from(ref));
    // small-M GEMV: the same dot products (the reference's weights are rounded to f32; a misplaced
    // column would be off by a sizeable part of Σ|w·x|)
    const x = new Inputs(K, 'bf16').floats(K, 2);
    const got = emulateQgemv(p, bytes, w.scale, w.zeroPoint, x);
    for (let n = 0; n < N; n++) {
      let want = 0, size = 0;
      for (let k = 0; k < K; k++) {
        want += ref[n * K + k]! * x[k]!;
        size += Math.abs(ref[n * K + k]! * x[k]!);
      }
      expect(Math.abs(got[n]! - want)).toBeLessThan(1e-6 * size);
    }
    // padding rows and columns are zero bytes
    for (let n = N; n < p.Np; n++) for (let b = 0; b < p.rowBytes; b++) expect(bytes[n * p.rowBytes + b]).toBe(0);
  });

  test('W8A8 at large M: x codes placed by quantize_act (qcol8_pos) line up with the stored weight columns', () => {
    const K = 1000;
    const w = randomQuantizedWeight(QSCHEMES[3]!, 4, K, 9);
    const p = planLayout(w, { format: 'int8' }, 'bf16', H100)!;
    const bytes = packWeights(w, p.format, p.Np, p.rowBytes, p.perm);
    const codes = Int8Array.from(new Inputs(3, 'f32').ints(K, 256), (v) => v - 128);
    const storedWord = (wi: number) => 4 * (wi & 3) + (wi >> 2);
    const pos = (k: number) => (k & ~63) | (storedWord((k & 63) >> 2) << 2) | (k & 3);
    const xs = new Int8Array(p.Kp);
    for (let k = 0; k < K; k++) xs[pos(k)] = codes[k]!;
    const ws = new Int8Array(bytes.buffer);
    for (let n = 0; n < 4; n++) {
      let got = 0, want = 0;
      for (let j = 0; j < p.Kp; j++) got += xs[j]! * ws[n * p.rowBytes + j]!;
      for (let k = 0; k < K; k++) want += codes[k]! * (w.codes as { values: Int8Array }).values[n * K + k]!;
      expect(got).toBe(want);
    }
  });
});

// --- the loader's choice of the native path (a cpu device pretending to keep weights quantized) ---

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
const stories = path.join(shared, 'models/stories260K');

/** A cpu device with uploadQuantizedLinear: "native" weights are dequantized uploads, recorded with their activation spec. */
function nativeCpu(cpu: CpuDevice, decline: (w: QuantizedLinearData) => boolean) {
  const uploads: { N: number; K: number; act?: FakeQuantSpec; kept: boolean }[] = [];
  const native = new Set<Tensor>();
  const dev = Object.create(cpu) as CpuDevice & { uploadQuantizedLinear(w: QuantizedLinearData, act?: FakeQuantSpec): Tensor | undefined };
  dev.uploadQuantizedLinear = (w, act) => {
    const kept = !decline(w);
    uploads.push({ N: w.outFeatures, K: w.inFeatures, act, kept });
    if (!kept) return undefined;
    const t = dev.upload(dequantizeQuantizedLinear(w), [w.outFeatures, w.inFeatures]);
    native.add(t);
    return t;
  };
  return { dev, uploads, native };
}

describe('the loader keeps quantized Linears native where the device can', () => {
  let cpu: CpuDevice;
  let tmp: string;
  beforeAll(async () => {
    cpu = createCpuDevice({ threads: 1 });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-native-load-'));
    const calibration = { samples: 4, seqLen: 64, seed: 0 };
    await quantizeModel({ model: stories, output: path.join(tmp, 'w8a8'), scheme: 'W8A8', calibration, device: cpu });
    await quantizeModel({ model: stories, output: path.join(tmp, 'w4'), scheme: 'W4A16', groupSize: 'channel', calibration, device: cpu });
  }, 120_000);
  afterAll(() => {
    cpu?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('W8A8: every Linear native with its int8 activation spec, simulation cleared, so the fused decode applies', async () => {
    const { dev, uploads, native } = nativeCpu(cpu, () => false);
    const m = await loadModel(path.join(tmp, 'w8a8'), dev);
    try {
      expect(uploads).toHaveLength(35);
      expect(uploads.every((u) => u.act?.format === 'int8' && u.act.scale === undefined)).toBe(true);
      for (const l of m.decoder.weights.layers) for (const t of [l.q, l.k, l.v, l.o, l.gate!, l.up, l.down]) expect(native.has(t)).toBe(true);
      expect(m.decoder.weights.quant!.some(simulatesQuantization)).toBe(false);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('W8A8: one declined member of q/k/v dequantizes all three and keeps their input simulated; other inputs stay native', async () => {
    const { dev, native } = nativeCpu(cpu, (w) => w.outFeatures === 32 && w.inFeatures === 64); // k_proj and v_proj of stories260K
    const m = await loadModel(path.join(tmp, 'w8a8'), dev);
    try {
      const l0 = m.decoder.weights.layers[0]!;
      expect([l0.q, l0.k, l0.v].some((t) => native.has(t))).toBe(false);
      expect([l0.o, l0.gate!, l0.up, l0.down].every((t) => native.has(t))).toBe(true);
      const q = m.decoder.weights.quant![0]!;
      expect(q.qkvInput).toEqual({ format: 'int8' });
      expect(q.oInput ?? q.gateUpInput ?? q.downInput).toBeUndefined();
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('W4A16 (weights only): native Linears with no activation spec; a declined one alone is dequantized', async () => {
    const { dev, uploads, native } = nativeCpu(cpu, (w) => w.outFeatures === 172);
    const m = await loadModel(path.join(tmp, 'w4'), dev);
    try {
      expect(uploads.every((u) => u.act === undefined)).toBe(true);
      const l0 = m.decoder.weights.layers[0]!;
      expect(native.has(l0.gate!) || native.has(l0.up)).toBe(false);
      expect([l0.q, l0.k, l0.v, l0.o, l0.down].every((t) => native.has(t))).toBe(true);
      const ids = m.tokenizer!.encode('Once upon a time');
      expect(dev.download(m.decoder.forward(ids, 1, ids.length)).every(Number.isFinite)).toBe(true);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });
});

describe('qgemvr3 row split (quant-linear.ts rowSplit)', () => {
  test('4 warps per pair for rows of 3–4 rounds of 2048 bytes, one otherwise', () => {
    // 1B o_proj (2048 FP8 bytes), 8B o_proj (4096), K 5000 padded (5056), 1B down_proj (8192), 8B down_proj (14336)
    expect([2048, 4096, 5056, 6144, 8192, 8256, 14336].map(rowSplit)).toEqual([1, 1, 4, 4, 4, 1, 1]);
  });
});

describe('fused decode layer plan (decode-layer.ts)', () => {
  test('K split: warps per row pair fill the grid, never past the spans', () => {
    // 132 SMs × 16 warps = 2112 warps; 1B o_proj / down_proj have 1024 pairs
    expect(decodeLayerSplit(1024, 4, 2112)).toBe(2); // FP8 o_proj: 2048-byte rows
    expect(decodeLayerSplit(1024, 16, 2112)).toBe(2); // FP8 down_proj: 8192-byte rows
    expect(decodeLayerSplit(2048, 8, 2112)).toBe(1); // 8B: 4096 rows
    expect(decodeLayerSplit(160, 40, 2112)).toBe(8);
    expect(decodeLayerSplit(10, 1, 2112)).toBe(1); // one span: nothing to split
    expect(decodeLayerSplit(1, 64, 2112)).toBe(16);
  });
  test('shared memory: the larger of the row stages and the attention stage', () => {
    // 1B W8A8: x of 8192 bf16 + 8192 codes + the small arrays (and 32 splits' max and sum per head)
    expect(decodeLayerSmemBytes(8192, 8192, 64, 32)).toBe(2 * 8192 + 8192 + (8 + 128 + 32 + 32 * 32 * 2) * 4);
    // a narrow model: the attention stage's (8·D + 16·32 + 4·8·(D + 2)) floats exceed it
    expect(decodeLayerSmemBytes(256, 0, 128, 2)).toBe((8 * 128 + 16 * 32 + 4 * 8 * 130) * 4);
  });
});
