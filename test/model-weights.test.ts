// Weight loading: dtype conversion, sharded checkpoints, name variants, and the errors.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { LlmoptError } from '../src/errors.js';
import { CheckpointTensors, writeCheckpointTensors } from '../src/io/checkpoint.js';
import { bf16BitsToF32, encodeFromFloat32, f32ToBf16Bits, type DType } from '../src/io/dtypes.js';
import { loadModel } from '../src/model/load.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/arch');

interface Src {
  name: string;
  shape: number[];
  data: Float32Array;
}

function readFixture(name: string): Src[] {
  const ck = CheckpointTensors.open(path.join(fixtures, name));
  try {
    return ck.names().map((n) => ({ name: n, shape: [...ck.info(n).shape], data: ck.readFloat32(n) }));
  } finally {
    ck.close();
  }
}

const refLogits = (name: string) => {
  const r = JSON.parse(fs.readFileSync(path.join(fixtures, name, 'logits.json'), 'utf8')) as { input_ids: number[]; logits: number[][] };
  return { ids: Int32Array.from(r.input_ids), logits: r.logits.flat() };
};

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return d / m;
}

let device: CpuDevice;
let tmp: string;
let counter = 0;
beforeAll(() => {
  device = createCpuDevice({ threads: 1 });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-weights-'));
});
afterAll(() => {
  device?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A copy of fixture `name` with tensors transformed, written as `dtype`, maybe sharded. */
function variant(
  name: string,
  opts: { dtype?: DType; edit?: (t: Src[]) => Src[]; config?: (c: Record<string, unknown>) => void; maxShardBytes?: number } = {},
): string {
  const dir = path.join(tmp, `${name}-${counter++}`);
  const tensors = (opts.edit ?? ((t) => t))(readFixture(name));
  writeCheckpointTensors(
    dir,
    tensors.map((t) => ({ name: t.name, dtype: opts.dtype ?? 'F32', shape: t.shape, data: encodeFromFloat32(opts.dtype ?? 'F32', t.data) })),
    { maxShardBytes: opts.maxShardBytes },
  );
  const config = JSON.parse(fs.readFileSync(path.join(fixtures, name, 'config.json'), 'utf8')) as Record<string, unknown>;
  opts.config?.(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

async function loadError(dir: string): Promise<Error> {
  try {
    const m = await loadModel(dir, device);
    m.decoder.dispose({ weights: true });
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected loadModel to fail');
}

describe('loading', () => {
  test('BF16 weights are converted to float32 on load (exact bf16 values), logits stay close', async () => {
    const dir = variant('llama', { dtype: 'BF16' });
    const m = await loadModel(dir, device);
    try {
      const embed = device.download(m.decoder.weights.embed);
      const orig = readFixture('llama').find((t) => t.name === 'model.embed_tokens.weight')!.data;
      expect(Array.from(embed.subarray(0, 50))).toEqual(Array.from(orig.subarray(0, 50), (x) => bf16BitsToF32(f32ToBf16Bits(x))));
      const ref = refLogits('llama');
      const err = relErr(device.download(m.decoder.forward(ref.ids, 1, ref.ids.length)), ref.logits);
      expect(err).toBeGreaterThan(1e-5); // the weights really changed
      expect(err).toBeLessThan(5e-2);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('F16 sharded checkpoint (index + 3+ shards) loads', async () => {
    const dir = variant('qwen3', { dtype: 'F16', maxShardBytes: 12000 });
    expect(fs.existsSync(path.join(dir, 'model.safetensors.index.json'))).toBe(true);
    const m = await loadModel(dir, device);
    try {
      expect(m.paths.weightFiles.length).toBeGreaterThan(2);
      const ref = refLogits('qwen3');
      expect(relErr(device.download(m.decoder.forward(ref.ids, 1, ref.ids.length)), ref.logits)).toBeLessThan(1e-2);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('GPT-2 names without the "transformer." prefix (original hub files)', async () => {
    const dir = variant('gpt2', { edit: (ts) => ts.map((t) => ({ ...t, name: t.name.replace(/^transformer\./, '') })) });
    const m = await loadModel(dir, device);
    try {
      const ref = refLogits('gpt2');
      expect(relErr(device.download(m.decoder.forward(ref.ids, 1, ref.ids.length)), ref.logits)).toBeLessThan(1e-4);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });
});

describe('errors', () => {
  test('a missing tensor names the tensor and the checkpoint file', async () => {
    const dir = variant('llama', { edit: (ts) => ts.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight') });
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(LlmoptError);
    expect(e.message).toContain(path.join(dir, 'model.safetensors'));
    expect(e.message).toContain('missing tensor "model.layers.1.mlp.up_proj.weight"');
  });

  test('an untied model without lm_head.weight', async () => {
    const e = await loadError(variant('llama', { edit: (ts) => ts.filter((t) => t.name !== 'lm_head.weight') }));
    expect(e.message).toMatch(/missing tensor "lm_head\.weight"/);
  });

  test('a wrong shape names tensor, expected and actual shape', async () => {
    const dir = variant('llama', {
      edit: (ts) => ts.map((t) => (t.name === 'model.layers.0.self_attn.k_proj.weight' ? { ...t, shape: [32, 24] } : t)),
    });
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(LlmoptError);
    expect(e.message).toContain('tensor "model.layers.0.self_attn.k_proj.weight" has shape [32, 24], expected [24, 32]');
  });

  test('a sharded checkpoint names its shard folder', async () => {
    const dir = variant('mistral', { maxShardBytes: 20000, edit: (ts) => ts.filter((t) => t.name !== 'model.norm.weight') });
    const e = await loadError(dir);
    expect(e.message).toMatch(new RegExp(`shards in ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: missing tensor "model.norm.weight"`));
  });

  test('quantization configs that cannot be run are refused clearly', async () => {
    const dir = variant('llama', { config: (c) => { c.quantization_config = { quant_method: 'compressed-tensors' }; } });
    const e = await loadError(dir);
    expect(e).toBeInstanceOf(LlmoptError);
    expect(e.message).toMatch(/config\.json: quantization_config has no config_groups/);
    const gptq = variant('llama', { config: (c) => { c.quantization_config = { quant_method: 'gptq', bits: 4 }; } });
    expect((await loadError(gptq)).message).toMatch(/quant_method "gptq" is not supported; llmopt runs compressed-tensors checkpoints/);
  });

  test('token ids outside the vocabulary', async () => {
    const m = await loadModel(path.join(fixtures, 'llama'), device);
    try {
      expect(() => m.decoder.forward(new Int32Array([1, 96]), 1, 2)).toThrow(/token id 96 \(row 1\) is outside the vocabulary \[0, 96\)/);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });

  test('GPT-2 positions beyond n_positions', async () => {
    const m = await loadModel(path.join(fixtures, 'gpt2'), device);
    try {
      expect(() => m.decoder.forward(new Int32Array(65), 1, 65)).toThrow(/exceed the model's 64 learned positions/);
    } finally {
      m.decoder.dispose({ weights: true });
    }
  });
});
