// stories260K (a real Llama) against transformers/llama2.c references: prompt logits, 200 greedy
// tokens, and the decoder's own consistency (KV cache = full forward, layer-wise API, hooks).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hookNames, type ActivationHooks } from '../src/model/decoder.js';
import { generateGreedy } from '../src/model/generate.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
const modelDir = path.join(shared, 'models/stories260K');
const ref = JSON.parse(fs.readFileSync(path.join(shared, 'references/stories260K-greedy.json'), 'utf8')) as {
  prompt: string;
  prompt_token_ids: number[];
  prompt_logits: number[][];
  greedy_from_bos_200_steps: { token_ids: number[]; text: string };
};

let device: CpuDevice;
let model: LoadedModel;

beforeAll(async () => {
  device = createCpuDevice({ threads: 1 });
  model = await loadModel(modelDir, device);
});
afterAll(() => {
  model?.decoder.dispose({ weights: true });
  device?.close();
});

/** max |a-b| / max |b| over all elements. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < b.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
  }
  return maxDiff / maxRef;
}

describe('stories260K', () => {
  test('spec from config.json', () => {
    const s = model.spec;
    expect([s.architecture, s.hiddenSize, s.numLayers, s.numHeads, s.numKvHeads, s.headDim, s.intermediateSize, s.vocabSize]).toEqual([
      'llama', 64, 5, 8, 4, 8, 172, 512,
    ]);
    expect(s.tieWordEmbeddings).toBe(true);
    expect(model.tokenizer?.bosTokenId).toBe(1);
  });

  test('prompt logits match the float64 reference within 1e-4 relative', () => {
    const ids = model.tokenizer!.encode(ref.prompt);
    expect(Array.from(ids)).toEqual(ref.prompt_token_ids);
    const logits = device.download(model.decoder.forward(ids, 1, ids.length));
    const expected = ref.prompt_logits.flat();
    expect(logits.length).toBe(expected.length);
    const err = relErr(logits, expected);
    console.log(`stories260K prompt logits: max rel error ${err.toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
  });

  test('200 greedy tokens from BOS equal llama2.c / transformers', () => {
    const expected = ref.greedy_from_bos_200_steps.token_ids;
    const generated = generateGreedy(model.decoder, new Int32Array([1]), expected.length - 1);
    expect([1, ...generated]).toEqual(expected);
    expect(model.tokenizer!.decode(generated)).toBe(ref.greedy_from_bos_200_steps.text);
  });

  test('KV-cache decoding gives the same logits as one full forward (batch 2)', () => {
    const d = model.decoder;
    const seq = 12;
    const ids = new Int32Array(2 * seq);
    for (let i = 0; i < ids.length; i++) ids[i] = (i * 37 + 5) % 512;
    const full = device.download(d.forward(ids, 2, seq));
    const cache = d.newCache(2, seq);
    const rows: Float32Array[] = [];
    // Prefill 7 tokens, then one at a time.
    const split = 7;
    const take = (from: number, n: number) => {
      const out = new Int32Array(2 * n);
      for (let b = 0; b < 2; b++) out.set(ids.subarray(b * seq + from, b * seq + from + n), b * n);
      return out;
    };
    rows.push(device.download(d.forward(take(0, split), 2, split, { cache })));
    for (let t = split; t < seq; t++) rows.push(device.download(d.forward(take(t, 1), 2, 1, { cache })));
    expect(cache.length).toBe(seq);
    const V = 512;
    let maxDiff = 0;
    for (let b = 0; b < 2; b++) {
      for (let t = 0; t < seq; t++) {
        const got = t < split ? rows[0]!.subarray((b * split + t) * V, (b * split + t + 1) * V) : rows[t - split + 1]!.subarray(b * V, (b + 1) * V);
        const want = full.subarray((b * seq + t) * V, (b * seq + t + 1) * V);
        for (let v = 0; v < V; v++) maxDiff = Math.max(maxDiff, Math.abs(got[v]! - want[v]!));
      }
    }
    expect(maxDiff).toBeLessThan(1e-4);
    cache.free();
  });

  test('layer-wise API and logitsForRows reproduce forward', () => {
    const d = model.decoder;
    const ids = new Int32Array([1, 403, 407, 261, 378, 432]);
    const full = device.download(d.forward(ids, 1, ids.length));
    // The calibration pattern: the activations live in a caller-owned tensor, layers run one by one.
    const emb = device.download(d.embed(ids, 1, ids.length));
    const own = device.upload(emb, [ids.length, model.spec.hiddenSize]);
    for (let i = 0; i < model.spec.numLayers; i++) d.layer(i, own, 1, ids.length);
    const normed = d.finalNorm(own, 1, ids.length);
    const last2 = device.download(d.logitsForRows(normed, 4, 2));
    expect(relErr(last2, full.subarray(4 * 512))).toBeLessThan(1e-6);
    device.free(own);
  });

  test('hooks see every hook point with its shape, in order', () => {
    const seen: string[] = [];
    const shapes = new Map<string, readonly number[]>();
    const names = [
      ...Array.from({ length: model.spec.numLayers }, (_, i) => [
        hookNames.layerInput(i), hookNames.qProjInput(i), hookNames.oProjInput(i),
        hookNames.gateProjInput(i), hookNames.downProjInput(i), hookNames.layerOutput(i),
      ]).flat(),
      hookNames.finalNormOutput,
    ];
    const hooks: ActivationHooks = {};
    for (const n of names) hooks[n] = (t) => { seen.push(n); shapes.set(n, t.shape); };
    let q0: Float32Array = new Float32Array();
    hooks['layers.0.self_attn.q_proj.input'] = (t) => { seen.push('layers.0.self_attn.q_proj.input'); shapes.set('layers.0.self_attn.q_proj.input', t.shape); q0 = device.download(t); };
    model.decoder.forward(new Int32Array([1, 403, 407]), 1, 3, { hooks });
    expect(seen).toEqual(names);
    expect(shapes.get('layers.2.mlp.down_proj.input')).toEqual([3, 172]);
    expect(shapes.get('layers.4.self_attn.o_proj.input')).toEqual([3, 64]);
    expect(shapes.get('final_norm.output')).toEqual([3, 64]);
    // The q_proj input is the RMS-normed embedding: each row has RMS ≈ |weight| scale, not all zero.
    expect(q0.some((x) => Math.abs(x) > 0.1)).toBe(true);
  });
});
