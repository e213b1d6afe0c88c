// stories260K on tinystories-valid.txt (CPU, float32) against the float64 transformers reference.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { countScored, makeWindows, protocolName, type Protocol } from '../src/eval/windows.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
const reference = JSON.parse(readFileSync(path.join(shared, 'references/stories260K-perplexity.json'), 'utf8'));
const expected = reference['data/tinystories-valid.txt'] as Record<string, { nll_sum: number; tokens_scored: number; ppl: number }> & {
  tokens: number;
  first_ids: number[];
};

let device: CpuDevice;
let model: LoadedModel;
let tokens: Int32Array;

beforeAll(async () => {
  device = createCpuDevice();
  model = await loadModel(path.join(shared, 'models/stories260K'), device);
  tokens = model.tokenizer!.encode(readFileSync(path.join(shared, 'data/tinystories-valid.txt'), 'utf8'));
});

afterAll(() => device?.close());

describe('stories260K perplexity on the whole of tinystories-valid.txt', () => {
  it('tokenizes to the reference stream', () => {
    expect(tokens.length).toBe(expected.tokens);
    expect(Array.from(tokens.subarray(0, 16))).toEqual(expected.first_ids);
  });

  const protocols: Protocol[] = [
    { kind: 'chunks', window: 512, keepLast: false },
    { kind: 'chunks', window: 128, keepLast: false },
    { kind: 'stride', window: 512, stride: 256 },
  ];
  for (const protocol of protocols) {
    const name = protocolName(protocol);
    it(`${name}: ppl within 1e-4 relative of the reference`, async () => {
      const result = await evaluatePerplexity({ device, model: model.decoder, tokens, windows: makeWindows(protocol, tokens.length), batch: 8, vocabSize: 512 });
      expect(result.tokensScored).toBe(expected[name]!.tokens_scored);
      expect(Math.abs(result.ppl / expected[name]!.ppl - 1)).toBeLessThan(1e-4);
      expect(Math.abs(result.nllSum / expected[name]!.nll_sum - 1)).toBeLessThan(1e-4);
    });
  }

  it('batching and logits chunking do not change the result (first 20k tokens)', async () => {
    for (const protocol of [{ kind: 'chunks', window: 128, keepLast: true }, { kind: 'stride', window: 128, stride: 48 }] as Protocol[]) {
      const windows = makeWindows(protocol, 20_000);
      const one = await evaluatePerplexity({ device, model: model.decoder, tokens, windows, batch: 1, vocabSize: 512 });
      const seven = await evaluatePerplexity({ device, model: model.decoder, tokens, windows, batch: 7, vocabSize: 512, logitsChunkRows: 5 });
      expect(one.tokensScored).toBe(countScored(windows));
      expect(seven.tokensScored).toBe(one.tokensScored);
      expect(Math.abs(seven.nllSum / one.nllSum - 1)).toBeLessThan(1e-6);
    }
  });
});

describe('self-baseline', () => {
  it('KLD is 0, top-1 agreement 1, ppl ratio 1', async () => {
    const twin = await loadModel(path.join(shared, 'models/stories260K'), device);
    const windows = makeWindows({ kind: 'stride', window: 256, stride: 128 }, 30_000);
    const r = await evaluatePerplexity({ device, model: model.decoder, baseline: twin.decoder, tokens, windows, batch: 8, vocabSize: 512 });
    expect(r.tokensScored).toBe(29_999);
    expect(r.baseline).toBeDefined();
    expect(r.baseline!.kldMean).toBeLessThanOrEqual(1e-9);
    expect(r.baseline!.kldP99).toBeLessThanOrEqual(1e-9);
    expect(r.baseline!.top1).toBe(1);
    expect(r.baseline!.pplRatio).toBe(1);
    expect(r.baseline!.ppl).toBe(r.ppl);
    expect(r.ppl).toBeGreaterThan(2); // real text, real model: far from a degenerate 1
  });

  it('a perturbed baseline gives a positive KLD and top-1 below 1', async () => {
    const other = await loadModel(path.join(shared, 'models/stories260K'), device);
    // Scale one layer's down projection: the same architecture, a measurably different model.
    const w = other.decoder.weights.layers[2]!.down;
    const values = device.download(w).map((x) => x * 1.5);
    other.decoder.weights.layers[2]!.down = device.upload(values, w.shape);
    const windows = makeWindows({ kind: 'chunks', window: 256, keepLast: false }, 10_000);
    const r = await evaluatePerplexity({ device, model: other.decoder, baseline: model.decoder, tokens, windows, batch: 8, vocabSize: 512 });
    expect(r.baseline!.kldMean).toBeGreaterThan(1e-4);
    expect(r.baseline!.kldP99).toBeGreaterThan(r.baseline!.kldMean);
    expect(r.baseline!.top1).toBeLessThan(1);
    expect(r.baseline!.top1).toBeGreaterThan(0.5);
    expect(r.baseline!.pplRatio).toBeCloseTo(r.ppl / r.baseline!.ppl, 12);
  });
});
