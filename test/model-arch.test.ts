// Every architecture variant against transformers: tiny random checkpoints made by
// scripts/make-arch-fixtures.py (transformers 5.17, float64 forward), loaded by loadModel and run by
// the float32 CPU decoder. Tolerance: max |ours - reference| over all logits ≤ 1e-4 × max |reference|.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { loadModel } from '../src/model/load.js';
import { Decoder } from '../src/model/decoder.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/arch');
const NAMES = ['llama', 'llama-linear', 'llama3-rope', 'mistral', 'qwen2', 'qwen2-sliding', 'qwen3', 'gpt2'];

interface Reference {
  input_ids: number[];
  logits: number[][];
  transformers_version: string;
  max_abs_logit: number;
}

function readRef(name: string): Reference {
  return JSON.parse(fs.readFileSync(path.join(fixtures, name, 'logits.json'), 'utf8')) as Reference;
}

/** max |a - b| / max |b|. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < b.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    maxRef = Math.max(maxRef, Math.abs(b[i]!));
  }
  return maxDiff / maxRef;
}

let device: CpuDevice;
beforeAll(() => {
  device = createCpuDevice({ threads: 1 });
});
afterAll(() => device?.close());

describe.each(NAMES)('%s fixture vs transformers', (name) => {
  test('logits within 1e-4 relative; KV-cache decoding agrees', async () => {
    const ref = readRef(name);
    expect(ref.transformers_version).toBe('5.17.0');
    const model = await loadModel(path.join(fixtures, name), device);
    try {
      const ids = Int32Array.from(ref.input_ids);
      const expected = ref.logits.flat();
      const logits = device.download(model.decoder.forward(ids, 1, ids.length));
      const err = relErr(logits, expected);
      console.log(`${name}: max rel logit error ${err.toExponential(2)} (max |logit| ${ref.max_abs_logit.toFixed(3)})`);
      expect(err).toBeLessThan(1e-4);

      // Incremental decoding (prefill 5, then 1 by 1) through the same windows and positions.
      const cache = model.decoder.newCache(1, ids.length);
      const steps = [device.download(model.decoder.forward(ids.subarray(0, 5), 1, 5, { cache }))];
      for (let t = 5; t < ids.length; t++) steps.push(device.download(model.decoder.forward(ids.subarray(t, t + 1), 1, 1, { cache })));
      const merged = new Float32Array(logits.length);
      let off = 0;
      for (const s of steps) {
        merged.set(s, off);
        off += s.length;
      }
      expect(relErr(merged, expected)).toBeLessThan(1e-4);
      cache.free();
    } finally {
      model.decoder.dispose({ weights: true });
    }
  });
});

describe('the fixtures exercise what they claim', () => {
  async function errWith(name: string, patch: (spec: Decoder['spec']) => Decoder['spec']): Promise<number> {
    const ref = readRef(name);
    const model = await loadModel(path.join(fixtures, name), device);
    const patched = new Decoder(patch(model.spec), model.decoder.weights, device);
    const ids = Int32Array.from(ref.input_ids);
    const err = relErr(device.download(patched.forward(ids, 1, ids.length)), ref.logits.flat());
    patched.dispose();
    model.decoder.dispose({ weights: true });
    return err;
  }

  test('the sliding window matters (mistral, qwen2-sliding)', async () => {
    expect(await errWith('mistral', (s) => ({ ...s, slidingWindow: undefined }))).toBeGreaterThan(1e-2);
    expect(await errWith('qwen2-sliding', (s) => ({ ...s, slidingWindowLayers: undefined }))).toBeGreaterThan(1e-2);
    expect(await errWith('qwen2-sliding', (s) => ({ ...s, slidingWindow: undefined, slidingWindowLayers: undefined }))).toBeGreaterThan(1e-2);
  });

  test('rope scaling matters (linear, llama3)', async () => {
    expect(await errWith('llama-linear', (s) => ({ ...s, ropeScaling: { type: 'default' } }))).toBeGreaterThan(1e-2);
    expect(await errWith('llama3-rope', (s) => ({ ...s, ropeScaling: { type: 'default' } }))).toBeGreaterThan(1e-2);
    expect(await errWith('llama3-rope', (s) => ({ ...s, ropeScaling: { type: 'linear', factor: 8 } }))).toBeGreaterThan(1e-2);
  });
});
