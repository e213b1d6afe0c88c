// Loading compressed-tensors checkpoints laid out as llm-compressor writes them (not only as llmopt
// does): int-quantized / naive-quantized I8 weights with asymmetric zero points, "re:" targets and an
// ignore list, static input scales that differ across q/k/v (fused: the max is used, as vLLM does),
// the older KV-cache names k_proj.output_scale / v_proj.output_scale, and act-order g_idx.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CheckpointTensors, writeCheckpointTensors } from '../src/io/checkpoint.js';
import { encodeFromFloat32 } from '../src/io/dtypes.js';
import type { TensorToWrite } from '../src/io/safetensors.js';
import { packInt32, unpackInt32 } from '../src/model/compressed-tensors.js';
import { loadModel } from '../src/model/load.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
const stories = path.join(shared, 'models/stories260K');
const LINEARS = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];

let device: CpuDevice;
let tmp: string;
const src = CheckpointTensors.open(stories);

beforeAll(() => {
  device = createCpuDevice({ threads: 1 });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-ct-load-'));
});
afterAll(() => {
  device?.close();
  src.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const halfEven = (x: number): number => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x));

/** int8 asymmetric per-channel, written out by hand from the compressed-tensors formulas. */
function int8Asym(w: Float32Array, rows: number, cols: number): { q: Int8Array; scale: Float32Array; zp: Int8Array } {
  const q = new Int8Array(rows * cols);
  const scale = new Float32Array(rows);
  const zp = new Int8Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    const lo = Math.min(0, ...row);
    const hi = Math.max(0, ...row);
    scale[r] = (hi - lo) / 255;
    zp[r] = Math.max(-128, Math.min(127, halfEven(-128 - lo / scale[r]!)));
    for (let c = 0; c < cols; c++) q[r * cols + c] = Math.max(-128, Math.min(127, halfEven(row[c]! / scale[r]! + zp[r]!)));
  }
  return { q, scale, zp };
}

function args(extra: Record<string, unknown>): Record<string, unknown> {
  return { num_bits: 8, type: 'int', symmetric: true, group_size: null, strategy: 'channel', block_structure: null, dynamic: false, actorder: null, observer: 'minmax', observer_kwargs: {}, ...extra };
}

describe('llm-compressor layouts', () => {
  test('naive-quantized int8 asymmetric weights, re: targets, ignore list, static input scales, k_proj.output_scale', async () => {
    const dir = path.join(tmp, 'llmc-int8');
    fs.mkdirSync(dir);
    const tensors: TensorToWrite[] = [];
    const expected = new Map<string, Float32Array>();
    for (const name of src.names()) {
      const info = src.info(name);
      const module = LINEARS.find((l) => name.endsWith(`${l}.weight`)) ? name.slice(0, -'.weight'.length) : undefined;
      if (module === undefined || module === 'model.layers.2.mlp.down_proj') {
        tensors.push({ name, dtype: info.dtype, shape: [...info.shape], data: src.readBytes(name) });
        continue;
      }
      const [rows, cols] = info.shape as [number, number];
      const { q, scale, zp } = int8Asym(src.readFloat32(name), rows, cols);
      tensors.push(
        { name: `${module}.weight`, dtype: 'I8', shape: [rows, cols], data: new Uint8Array(q.buffer) },
        { name: `${module}.weight_scale`, dtype: 'F32', shape: [rows, 1], data: new Uint8Array(scale.buffer) },
        { name: `${module}.weight_zero_point`, dtype: 'I8', shape: [rows, 1], data: new Uint8Array(zp.buffer) },
      );
      const inputScale = module.endsWith('k_proj') ? 0.03 : 0.01;
      tensors.push({ name: `${module}.input_scale`, dtype: 'F32', shape: [1], data: encodeFromFloat32('F32', Float32Array.of(inputScale)) });
      expected.set(module, Float32Array.from({ length: rows * cols }, (_, k) => (q[k]! - zp[Math.floor(k / cols)]!) * scale[Math.floor(k / cols)]!));
    }
    for (let i = 0; i < 5; i++) {
      tensors.push({ name: `model.layers.${i}.self_attn.k_proj.output_scale`, dtype: 'F32', shape: [1], data: encodeFromFloat32('F32', Float32Array.of(0.05 + i)) });
      tensors.push({ name: `model.layers.${i}.self_attn.v_proj.output_scale`, dtype: 'F32', shape: [1], data: encodeFromFloat32('F32', Float32Array.of(0.01)) });
    }
    writeCheckpointTensors(dir, tensors);
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(stories, f), path.join(dir, f));
    const config = JSON.parse(fs.readFileSync(path.join(stories, 'config.json'), 'utf8'));
    config.quantization_config = {
      quant_method: 'compressed-tensors',
      format: 'naive-quantized',
      quantization_status: 'compressed',
      config_groups: {
        group_0: {
          targets: ['re:.*self_attn\\.(q|k|v|o)_proj$', 're:.*mlp\\..*_proj$'],
          weights: args({ symmetric: false }),
          input_activations: args({ strategy: 'tensor' }),
          output_activations: null,
        },
      },
      ignore: ['lm_head', 'model.layers.2.mlp.down_proj'],
      kv_cache_scheme: args({ type: 'float', strategy: 'tensor' }),
      global_compression_ratio: null,
      version: '0.10.2',
    };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));

    const m = await loadModel(dir, device);
    try {
      const w = m.decoder.weights;
      for (const [module, values] of expected) {
        const [, i, block, proj] = /^model\.layers\.(\d)\.(self_attn|mlp)\.(\w+)_proj$/.exec(module)!;
        const t = (w.layers[Number(i)] as unknown as Record<string, Parameters<CpuDevice['download']>[0]>)[proj!]!;
        const got = device.download(t);
        expect(got.length, `${block}.${proj}`).toBe(values.length);
        for (let k = 0; k < values.length; k += 7) expect(got[k]).toBe(values[k]);
      }
      // The ignored Linear is the original float weight.
      expect(Array.from(device.download(w.layers[2]!.down))).toEqual(Array.from(src.readFloat32('model.layers.2.mlp.down_proj.weight')));
      const q = w.quant![2]!;
      expect(q.qkvInput).toEqual({ format: 'int8', scale: Math.fround(0.03) });
      expect(q.oInput).toEqual({ format: 'int8', scale: Math.fround(0.01) });
      expect(q.downInput).toBeUndefined();
      expect(w.quant![3]!.downInput).toEqual({ format: 'int8', scale: Math.fround(0.01) });
      expect(w.quant![4]!.kvCache).toEqual({ kScale: Math.fround(4.05), vScale: Math.fround(0.01) });
      const ids = m.tokenizer!.encode('Once upon a time');
      const logits = device.download(m.decoder.forward(ids, 1, ids.length));
      expect(logits.every(Number.isFinite)).toBe(true);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('act-order g_idx: each column uses the group g_idx names', async () => {
    const dir = path.join(tmp, 'gidx');
    fs.mkdirSync(dir);
    const tensors: TensorToWrite[] = [];
    const module = 'model.layers.0.self_attn.o_proj';
    const groups = 16;
    const gIdx = Float32Array.from({ length: 64 }, (_, c) => groups - 1 - Math.floor(c / 4));
    let codes: Int32Array | undefined;
    let scales: Float32Array | undefined;
    for (const name of src.names()) {
      const info = src.info(name);
      const mod = LINEARS.find((l) => name.endsWith(`${l}.weight`)) ? name.slice(0, -'.weight'.length) : undefined;
      if (mod !== module) {
        tensors.push({ name, dtype: info.dtype, shape: [...info.shape], data: src.readBytes(name) });
        continue;
      }
      const w = src.readFloat32(name);
      scales = new Float32Array(64 * groups);
      codes = new Int32Array(64 * 64);
      for (let r = 0; r < 64; r++) {
        for (let g = 0; g < groups; g++) {
          let a = 0;
          for (let c = 0; c < 64; c++) if (gIdx[c] === g) a = Math.max(a, Math.abs(w[r * 64 + c]!));
          scales[r * groups + g] = a / 7.5 || 1e-6;
        }
        for (let c = 0; c < 64; c++) codes[r * 64 + c] = Math.max(-8, Math.min(7, halfEven(w[r * 64 + c]! / scales[r * groups + gIdx[c]!]!)));
      }
      const packed = packInt32(codes, 64, 64, 4);
      tensors.push(
        { name: `${module}.weight_packed`, dtype: 'I32', shape: [64, 8], data: new Uint8Array(packed.buffer) },
        { name: `${module}.weight_scale`, dtype: 'F32', shape: [64, groups], data: new Uint8Array(scales.buffer) },
        { name: `${module}.weight_shape`, dtype: 'I64', shape: [2], data: encodeFromFloat32('I64', Float32Array.of(64, 64)) },
        { name: `${module}.weight_g_idx`, dtype: 'I32', shape: [64], data: encodeFromFloat32('I32', gIdx) },
      );
    }
    writeCheckpointTensors(dir, tensors);
    const config = JSON.parse(fs.readFileSync(path.join(stories, 'config.json'), 'utf8'));
    config.quantization_config = {
      quant_method: 'compressed-tensors',
      format: 'pack-quantized',
      config_groups: { group_0: { targets: [module], weights: args({ num_bits: 4, strategy: 'group', group_size: 4, actorder: 'group' }) } },
      ignore: ['lm_head'],
    };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    const packedBytes = tensors.find((t) => t.name.endsWith('weight_packed'))!.data as Uint8Array;
    expect(Array.from(unpackInt32(new Int32Array(packedBytes.slice().buffer), 64, 64, 4))).toEqual(Array.from(codes!));

    const m = await loadModel(dir, device);
    try {
      const got = device.download(m.decoder.weights.layers[0]!.o);
      for (let r = 0; r < 64; r++) for (let c = 0; c < 64; c++) expect(got[r * 64 + c]).toBe(Math.fround(codes![r * 64 + c]! * scales![r * groups + gIdx[c]!]!));
      // Not targeted: the rest load as plain float weights, with no activation simulation.
      expect(Array.from(device.download(m.decoder.weights.layers[0]!.q))).toEqual(Array.from(src.readFloat32('model.layers.0.self_attn.q_proj.weight')));
      expect(m.decoder.weights.quant![0]).toEqual({ qkvInput: undefined, oInput: undefined, gateUpInput: undefined, downInput: undefined });
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('what the CPU cannot simulate is refused with the reason', async () => {
    const dir = path.join(tmp, 'asym-acts');
    fs.mkdirSync(dir);
    for (const f of ['model.safetensors', 'tokenizer.json']) fs.copyFileSync(path.join(stories, f), path.join(dir, f));
    const config = JSON.parse(fs.readFileSync(path.join(stories, 'config.json'), 'utf8'));
    config.quantization_config = {
      quant_method: 'compressed-tensors',
      format: 'dense',
      config_groups: { group_0: { targets: ['Linear'], input_activations: args({ strategy: 'token', dynamic: true, symmetric: false }) } },
    };
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    await expect(loadModel(dir, device)).rejects.toThrow(/input activations of model\.layers\.0\.self_attn\.q_proj: asymmetric activation quantization is not supported/);
  });
});
