// stories260K on tinystories-valid.txt (CPU, float32): against the float64 transformers reference,
// and against a naive transcription of Hugging Face's perplexity loop.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { makeWindows, protocolName, type Protocol } from '../src/eval/windows.js';
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

/**
 * Hugging Face's loop from "Perplexity of fixed-length models", literally, one window at a time:
 * begin every `stride`, end = min(begin + maxLength, L), the last trg_len = end − prev_end labels
 * are targets (after the shift, a window's first token never is). Chunks are stride = maxLength
 * without the HF overlap rule; `keepLast` keeps a short last chunk. Log-softmax in float64 here,
 * so neither windows.ts, batching, logits chunking nor device.scoreLogits is involved.
 */
function naiveNll(tokens: Int32Array, maxLength: number, stride: number, chunks: { keepLast: boolean } | undefined): { nllSum: number; count: number } {
  const L = tokens.length;
  const vocab = model.spec.vocabSize;
  let nllSum = 0;
  let count = 0;
  let prevEnd = 0;
  for (let begin = 0; begin < L; begin += stride) {
    const end = Math.min(begin + maxLength, L);
    if (chunks && end - begin < maxLength && !(chunks.keepLast && end - begin >= 2)) break;
    const trgLen = chunks ? end - begin : end - prevEnd;
    const ids = tokens.slice(begin, end);
    const logits = device.download(model.decoder.forward(ids, 1, ids.length));
    for (let p = Math.max(1, ids.length - trgLen); p < ids.length; p++) {
      const row = logits.subarray((p - 1) * vocab, p * vocab);
      let max = -Infinity;
      for (const x of row) max = Math.max(max, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - max);
      nllSum += max + Math.log(sum) - row[ids[p]!]!;
      count++;
    }
    prevEnd = end;
    if (end === L) break;
  }
  return { nllSum, count };
}

describe('stories260K perplexity on tinystories-valid.txt', () => {
  it('tokenizes to the reference stream', () => {
    expect(tokens.length).toBe(expected.tokens);
    expect(Array.from(tokens.subarray(0, 16))).toEqual(expected.first_ids);
  });

  // The whole file under each protocol the issue names, against transformers' float64 values.
  const wholeFile: [string, Protocol][] = [
    ['chunks512', { kind: 'chunks', window: 512, keepLast: false }],
    ['chunks128', { kind: 'chunks', window: 128, keepLast: false }],
    ['stride512_256', { kind: 'stride', window: 512, stride: 256 }],
  ];
  for (const [name, protocol] of wholeFile) {
    it(`${name}, whole file: ppl within 1e-4 relative of the reference`, async () => {
      expect(protocolName(protocol)).toBe(name);
      const result = await evaluatePerplexity({
        device, model: model.decoder, tokens, windows: makeWindows(protocol, tokens.length), batch: 8, vocabSize: 512,
      });
      expect(result.tokensScored).toBe(expected[name]!.tokens_scored);
      expect(Math.abs(result.ppl / expected[name]!.ppl - 1)).toBeLessThan(1e-4);
      expect(Math.abs(result.nllSum / expected[name]!.nll_sum - 1)).toBeLessThan(1e-4);
    });
  }

  const prefix = 12_000;
  const cases: [Protocol, number, number, { keepLast: boolean } | undefined][] = [
    [{ kind: 'chunks', window: 128, keepLast: false }, 128, 128, { keepLast: false }],
    [{ kind: 'chunks', window: 128, keepLast: true }, 128, 128, { keepLast: true }],
    [{ kind: 'stride', window: 512, stride: 256 }, 512, 256, undefined],
    [{ kind: 'stride', window: 200, stride: 77 }, 200, 77, undefined],
  ];
  for (const [protocol, maxLength, stride, chunks] of cases) {
    it(`${protocolName(protocol)}, first ${prefix} tokens: same as the naive HF loop, batched and with logits in pieces`, async () => {
      const head = tokens.subarray(0, prefix);
      const naive = naiveNll(head, maxLength, stride, chunks);
      const windows = makeWindows(protocol, prefix);
      const r = await evaluatePerplexity({ device, model: model.decoder, tokens: head, windows, batch: 7, vocabSize: 512, logitsChunkRows: 100 });
      expect(r.tokensScored).toBe(naive.count);
      expect(Math.abs(r.nllSum / naive.nllSum - 1)).toBeLessThan(1e-6);
    });
  }
});

describe('self-baseline', () => {
  it('KLD is 0, top-1 agreement 1, ppl ratio 1', async () => {
    const twin = await loadModel(path.join(shared, 'models/stories260K'), device);
    const windows = makeWindows({ kind: 'stride', window: 256, stride: 128 }, 10_000);
    const r = await evaluatePerplexity({ device, model: model.decoder, baseline: twin.decoder, tokens, windows, batch: 8, vocabSize: 512 });
    expect(r.tokensScored).toBe(9_999);
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
