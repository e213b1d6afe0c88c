// Importance scores on small seeded cases: magnitude against hand-computed norms, activation
// against statistics gathered independently from the decoder's hook points, random determinism.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { seededRandom } from '../src/random.js';
import { activationImportance, magnitudeImportance, randomImportance } from '../src/compress/prune/importance.js';
import { hookNames, type ActivationHooks } from '../src/model/decoder.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';
import type { ModelSpec } from '../src/model/spec.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/arch');

let device: CpuDevice;
let model: LoadedModel;
beforeAll(async () => {
  device = createCpuDevice({ threads: 1 });
  model = await loadModel(path.join(fixtures, 'llama'), device);
});
afterAll(() => {
  model?.decoder.dispose({ weights: true });
  device?.close();
});

describe('magnitude', () => {
  // 1 layer, hidden 2, 2 query heads of head_dim 1 in 1 KV group, 2 MLP channels.
  const spec = {
    architecture: 'llama', vocabSize: 3, hiddenSize: 2, intermediateSize: 2, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 1,
    tieWordEmbeddings: true,
  } as ModelSpec;
  const w: Record<string, number[]> = {
    'model.embed_tokens.weight': [1, 0, 0, 2, 3, 0],
    'model.norm.weight': [1, 1],
    'model.layers.0.input_layernorm.weight': [1, 1],
    'model.layers.0.post_attention_layernorm.weight': [1, 1],
    'model.layers.0.self_attn.q_proj.weight': [3, 4, 0, 1], // head 0 row [3,4], head 1 row [0,1]
    'model.layers.0.self_attn.k_proj.weight': [1, 1],
    'model.layers.0.self_attn.v_proj.weight': [2, 0],
    'model.layers.0.self_attn.o_proj.weight': [0, 2, 0, 2], // column 0 = [0,0], column 1 = [2,2]
    'model.layers.0.mlp.gate_proj.weight': [1, 0, 0, 0],
    'model.layers.0.mlp.up_proj.weight': [0, 2, 0, 0],
    'model.layers.0.mlp.down_proj.weight': [0, 0, 2, 0], // column 0 = [0,2]
  };
  const reader = { has: (n: string) => n in w, readFloat32: (n: string) => Float32Array.from(w[n]!) };

  test('norms of exactly the weights removed with each unit', () => {
    const s = magnitudeImportance(spec, reader, { attention: true, mlp: true, hidden: false, layers: true });
    expect(Array.from(s.heads[0]!)).toEqual([5, Math.sqrt(1 + 8)]);
    expect(s.kvGroups[0]![0]).toBeCloseTo(Math.sqrt(2 + 4 + 25 + 9), 12);
    expect(Array.from(s.channels[0]!)).toEqual([3, 0]); // gate row 1 + up row 4 + down column 4
    expect(s.layers[0]).toBeCloseTo(Math.sqrt(8 + 4), 12);
  });

  test('hidden channels: embedding column, norms, projection columns and rows', () => {
    const s = magnitudeImportance(spec, reader, { attention: false, mlp: false, hidden: true, layers: false });
    // channel 0: embed 1+9, norms 3×1, q 9+0, k 1, v 4, o rows: row 0 = [0,2] → 4, gate 1, up 0, down row 0 = 0
    // channel 1: embed 4, norms 3, q 16+1, k 1, v 0, o row 1 = 4, gate 0, up 4, down row 1 = 4
    expect(s.hidden[0]).toBeCloseTo(Math.sqrt(10 + 3 + 9 + 1 + 4 + 4 + 1), 12);
    expect(s.hidden[1]).toBeCloseTo(Math.sqrt(4 + 3 + 17 + 1 + 4 + 4 + 4), 12);
  });
});

describe('activation (llama fixture, seeded random token windows)', () => {
  test('per-head L2 norms, per-channel |act|, block influence and hidden |norm| means match hook statistics', async () => {
    const spec = model.spec;
    const rand = seededRandom(11);
    const windows = [17, 9, 24].map((len) => Int32Array.from({ length: len }, () => Math.floor(rand() * spec.vocabSize)));
    const scores = await activationImportance({ decoder: model.decoder, device, windows });
    expect(scores.tokens).toBe(50);

    // Independent statistics for layer 1 from the same hook points.
    const L = 1;
    const heads = new Float64Array(spec.numHeads);
    const channels = new Float64Array(spec.intermediateSize);
    let bi = 0;
    let input: Float32Array | undefined;
    const hooks: ActivationHooks = {
      [hookNames.layerInput(L)]: (t) => (input = device.download(t)),
      [hookNames.oProjInput(L)]: (t) => {
        const a = device.download(t);
        for (let r = 0; r < t.shape[0]!; r++) {
          for (let h = 0; h < spec.numHeads; h++) {
            const v = a.subarray(r * spec.numHeads * spec.headDim + h * spec.headDim, r * spec.numHeads * spec.headDim + (h + 1) * spec.headDim);
            heads[h]! += Math.hypot(...v);
          }
        }
      },
      [hookNames.downProjInput(L)]: (t) => device.download(t).forEach((v, i) => (channels[i % spec.intermediateSize]! += Math.abs(v))),
      [hookNames.layerOutput(L)]: (t) => {
        const o = device.download(t);
        const H = spec.hiddenSize;
        for (let r = 0; r < t.shape[0]!; r++) {
          const a = input!.subarray(r * H, (r + 1) * H);
          const b = o.subarray(r * H, (r + 1) * H);
          const dot = a.reduce((s, x, i) => s + x * b[i]!, 0);
          bi += 1 - dot / (Math.hypot(...a) * Math.hypot(...b));
        }
      },
    };
    for (const w of windows) model.decoder.forwardHidden(w, 1, w.length, { hooks });
    heads.forEach((v, h) => expect(scores.heads[L]![h]).toBeCloseTo(v / 50, 9));
    channels.forEach((v, c) => expect(scores.channels[L]![c]).toBeCloseTo(v / 50, 9));
    expect(scores.layers[L]).toBeCloseTo(bi / 50, 9);
    const P = spec.numHeads / spec.numKvHeads;
    for (let g = 0; g < spec.numKvHeads; g++) {
      let sum = 0;
      for (let j = 0; j < P; j++) sum += scores.heads[L]![g * P + j]!;
      expect(scores.kvGroups[L]![g]).toBeCloseTo(sum, 12);
    }
    expect(scores.hidden.every((v) => v > 0)).toBe(true);
    expect(scores.layers.every((v) => v > 0 && v < 2)).toBe(true);
  });
});

describe('random', () => {
  test('seeded: the same seed gives the same scores, another seed others', () => {
    const spec = model.spec;
    const a = randomImportance(spec, 5);
    const b = randomImportance(spec, 5);
    const c = randomImportance(spec, 6);
    expect(a.channels).toEqual(b.channels);
    expect(a.layers).toEqual(b.layers);
    expect(a.channels[0]).not.toEqual(c.channels[0]);
    expect(a.heads.flatMap((h) => Array.from(h)).every((v) => v >= 0 && v < 1)).toBe(true);
  });
});
