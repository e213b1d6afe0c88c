// TrainableDecoder: forward = Decoder.forward on every architecture fixture; whole-model gradients
// of tiny generated models against central finite differences of a float64 reference decoder
// (test/helpers/train-reference.ts); recompute on/off identical; AdamW steps on stories260K lower
// the loss on a fixed batch.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CheckpointTensors } from '../src/io/checkpoint.js';
import { loadModel } from '../src/model/load.js';
import type { ModelSpec } from '../src/model/spec.js';
import { TextTokenizer } from '../src/model/tokenizer.js';
import { TrainableDecoder } from '../src/model/train/index.js';
import type { WeightSource } from '../src/model/weights.js';
import { seededRandom } from '../src/random.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';
import { refDecoderLogits } from './helpers/train-reference.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixtures = path.join(here, 'fixtures/arch');
const stories = path.resolve(here, '../../shared/models/stories260K');
const ARCHS = ['llama', 'llama-linear', 'llama3-rope', 'mistral', 'qwen2', 'qwen2-sliding', 'qwen3', 'gpt2'];

let dev: CpuDevice;
beforeAll(() => {
  dev = createCpuDevice({ threads: 1 });
});
afterAll(() => dev?.close());

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return d / m;
}

describe.each(ARCHS)('%s fixture', (name) => {
  test('TrainableDecoder.forward = Decoder.forward, and decoder() shares the weights', async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(fixtures, name, 'logits.json'), 'utf8')) as { input_ids: number[] };
    const one = Int32Array.from(ref.input_ids);
    const seq = one.length;
    const ids = new Int32Array(2 * seq);
    ids.set(one);
    ids.set(one.map((t, i) => one[(i + 3) % seq]), seq);
    const model = await loadModel(path.join(fixtures, name), dev);
    const trainable = await TrainableDecoder.load(path.join(fixtures, name), dev);
    try {
      const expected = dev.download(model.decoder.forward(ids, 2, seq));
      const got = dev.download(trainable.forward(ids, 2, seq));
      expect(maxRelDiff(got, expected)).toBeLessThanOrEqual(1e-6);
      expect(maxRelDiff(dev.download(trainable.decoder().forward(ids, 2, seq)), expected)).toBeLessThanOrEqual(1e-6);
      // exportWeights round-trips the checkpoint's tensors (GPT-2: Conv1D layout again).
      const exported = new Map(trainable.exportWeights().map((w) => [w.name, w]));
      const checkpoint = CheckpointTensors.open(path.join(fixtures, name));
      try {
        for (const tensorName of checkpoint.names()) {
          if (tensorName === 'lm_head.weight' && model.spec.tieWordEmbeddings) continue;
          if (/\.attn\.(masked_)?bias$/.test(tensorName)) continue; // GPT-2's causal-mask buffers
          expect(exported.get(tensorName)?.shape, tensorName).toEqual([...checkpoint.info(tensorName).shape]);
          expect(Array.from(exported.get(tensorName)!.data), tensorName).toEqual(Array.from(checkpoint.readFloat32(tensorName)));
        }
      } finally {
        checkpoint.close();
      }
      expect(exported.size).toBe(trainable.params.length);
    } finally {
      trainable.dispose();
      model.decoder.dispose({ weights: true });
    }
  });
});

// --- tiny generated models --------------------------------------------------------------------------

function baseSpec(over: Partial<ModelSpec>): ModelSpec {
  return {
    architecture: 'llama', vocabSize: 37, hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 6,
    maxPositionEmbeddings: 64, norm: 'rms', normEps: 1e-5, activation: 'silu', positions: 'rope', ropeTheta: 10000,
    ropeScaling: { type: 'default' }, partialRotaryFactor: 1, tieWordEmbeddings: false, qkvBias: false, oBias: false, mlpBias: false,
    qkNorm: false, rawConfig: {}, ...over,
  };
}

const TINY: [string, ModelSpec][] = [
  // GQA, head_dim ≠ hidden/heads, partial rotary, q/k norm, every bias, sliding window on layer 1, untied.
  ['llama-style (GQA, qk norm, biases, window, partial rotary)', baseSpec({
    architecture: 'qwen3', partialRotaryFactor: 2 / 3, qkNorm: true, qkvBias: true, oBias: true, mlpBias: true,
    slidingWindow: 3, slidingWindowLayers: [false, true],
  })],
  ['llama-style (tied, MHA)', baseSpec({ tieWordEmbeddings: true, numKvHeads: 4, headDim: 4 })],
  ['gpt2-style (LayerNorm, GELU, learned positions, tied)', baseSpec({
    architecture: 'gpt2', intermediateSize: 40, numKvHeads: 4, headDim: 4, maxPositionEmbeddings: 9, norm: 'layer', activation: 'gelu_tanh',
    positions: 'learned', ropeTheta: 0, tieWordEmbeddings: true, qkvBias: true, oBias: true, mlpBias: true,
  })],
];

/** HF tensors of a random model of `spec` (GPT-2: Conv1D layouts, fused c_attn). */
function randomTensors(spec: ModelSpec, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
  const rand = seededRandom(seed);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = offset + (rand() * 2 - 1) * scale;
    out.set(name, { shape, data });
  };
  const H = spec.hiddenSize, I = spec.intermediateSize, V = spec.vocabSize;
  const qDim = spec.numHeads * spec.headDim, kvDim = spec.numKvHeads * spec.headDim;
  const normW = (name: string, n: number) => add(name, [n], 0.3, 1);
  if (spec.architecture === 'gpt2') {
    add('transformer.wte.weight', [V, H], 0.5);
    add('transformer.wpe.weight', [spec.maxPositionEmbeddings, H], 0.3);
    for (let i = 0; i < spec.numLayers; i++) {
      const l = `transformer.h.${i}.`;
      normW(`${l}ln_1.weight`, H); add(`${l}ln_1.bias`, [H], 0.2);
      add(`${l}attn.c_attn.weight`, [H, 3 * H], 0.4); add(`${l}attn.c_attn.bias`, [3 * H], 0.2);
      add(`${l}attn.c_proj.weight`, [H, H], 0.3); add(`${l}attn.c_proj.bias`, [H], 0.2);
      normW(`${l}ln_2.weight`, H); add(`${l}ln_2.bias`, [H], 0.2);
      add(`${l}mlp.c_fc.weight`, [H, I], 0.3); add(`${l}mlp.c_fc.bias`, [I], 0.2);
      add(`${l}mlp.c_proj.weight`, [I, H], 0.3); add(`${l}mlp.c_proj.bias`, [H], 0.2);
    }
    normW('transformer.ln_f.weight', H); add('transformer.ln_f.bias', [H], 0.2);
  } else {
    add('model.embed_tokens.weight', [V, H], 0.5);
    for (let i = 0; i < spec.numLayers; i++) {
      const l = `model.layers.${i}.`;
      const linear = (name: string, outF: number, inF: number, bias: boolean) => {
        add(`${l}${name}.weight`, [outF, inF], 0.35);
        if (bias) add(`${l}${name}.bias`, [outF], 0.2);
      };
      normW(`${l}input_layernorm.weight`, H);
      linear('self_attn.q_proj', qDim, H, spec.qkvBias);
      linear('self_attn.k_proj', kvDim, H, spec.qkvBias);
      linear('self_attn.v_proj', kvDim, H, spec.qkvBias);
      linear('self_attn.o_proj', H, qDim, spec.oBias);
      if (spec.qkNorm) {
        normW(`${l}self_attn.q_norm.weight`, spec.headDim);
        normW(`${l}self_attn.k_norm.weight`, spec.headDim);
      }
      normW(`${l}post_attention_layernorm.weight`, H);
      linear('mlp.gate_proj', I, H, spec.mlpBias);
      linear('mlp.up_proj', I, H, spec.mlpBias);
      linear('mlp.down_proj', H, I, spec.mlpBias);
    }
    normW('model.norm.weight', H);
  }
  if (!spec.tieWordEmbeddings) add('lm_head.weight', [V, H], 0.5);
  return out;
}

function sourceOf(tensors: Map<string, { shape: number[]; data: Float32Array }>): WeightSource {
  return {
    has: (n) => tensors.has(n),
    info: (n) => ({ shape: tensors.get(n)!.shape, dtype: 'F32' }),
    readFloat32: (n) => tensors.get(n)!.data.slice(),
    readBytes: (n) => new Uint8Array(tensors.get(n)!.data.buffer.slice(0)),
    files: () => ['(generated)'],
  };
}

describe.each(TINY)('%s: whole-model gradient', (_name, spec) => {
  const batch = 2, seq = 7;
  const tensors = randomTensors(spec, 1234);
  const rand = seededRandom(99);
  const ids = Int32Array.from({ length: batch * seq }, () => Math.floor(rand() * spec.vocabSize));
  const R = Float32Array.from({ length: batch * seq * spec.vocabSize }, () => rand() * 2 - 1);

  /** Gradients of L = Σ R·logits, by param name, in the checkpoint's layout. */
  function engineGrads(recompute: boolean): Map<string, Float32Array> {
    const model = TrainableDecoder.fromWeights(spec, sourceOf(tensors), dev, { recompute });
    try {
      const logits = dev.download(model.forward(ids, batch, seq));
      const ref = refDecoderLogits(spec, new Map([...tensors].map(([n, t]) => [n, Float64Array.from(t.data)])), ids, batch, seq);
      expect(maxRelDiff(logits, ref)).toBeLessThan(1e-5);
      model.backward(dev.upload(R, [batch * seq, spec.vocabSize]));
      // Export the gradients in checkpoint layout by swapping them into the masters.
      for (const p of model.params) dev.training!.castCopy(p.master, p.grad);
      return new Map(model.exportWeights().map((w) => [w.name, w.data]));
    } finally {
      model.dispose();
    }
  }

  test('matches finite differences of the float64 reference; recompute gives identical gradients', () => {
    const grads = engineGrads(false);
    expect([...grads.keys()].sort()).toEqual([...tensors.keys()].sort());
    const W = new Map([...tensors].map(([n, t]) => [n, Float64Array.from(t.data)]));
    const loss = () => {
      const logits = refDecoderLogits(spec, W, ids, batch, seq);
      let s = 0;
      for (let i = 0; i < logits.length; i++) s += R[i] * logits[i];
      return s;
    };
    const pick = seededRandom(7);
    const h = 1e-5;
    for (const [name, w] of W) {
      const g = grads.get(name)!;
      // Every coordinate of small tensors, 24 random ones of larger.
      const coords = w.length <= 48 ? [...w.keys()] : Array.from({ length: 24 }, () => Math.floor(pick() * w.length));
      let maxDiff = 0, maxRef = 0;
      for (const i of coords) {
        const w0 = w[i];
        w[i] = w0 + h;
        const lp = loss();
        w[i] = w0 - h;
        const lm = loss();
        w[i] = w0;
        const fd = (lp - lm) / (2 * h);
        maxDiff = Math.max(maxDiff, Math.abs(g[i] - fd));
        maxRef = Math.max(maxRef, Math.abs(fd));
      }
      expect(maxRef, name).toBeGreaterThan(0);
      expect(maxDiff / maxRef, name).toBeLessThan(2e-4);
    }
    const again = engineGrads(true);
    for (const [name, g] of grads) expect(Buffer.from(again.get(name)!.buffer).equals(Buffer.from(g.buffer)), name).toBe(true);
  });
});

test('gradients accumulate across backward calls until zeroGrads', () => {
  const spec = TINY[1][1];
  const model = TrainableDecoder.fromWeights(spec, sourceOf(randomTensors(spec, 5)), dev);
  try {
    const ids = Int32Array.from([1, 5, 9, 36, 0, 2]);
    const dLogits = dev.upload(Float32Array.from({ length: 6 * spec.vocabSize }, (_, i) => Math.sin(i)), [6, spec.vocabSize]);
    model.forward(ids, 2, 3);
    model.backward(dLogits);
    const once = model.params.map((p) => dev.download(p.grad));
    model.backward(dLogits);
    model.params.forEach((p, j) => {
      const twice = dev.download(p.grad);
      for (let i = 0; i < twice.length; i++) expect(twice[i]).toBeCloseTo(2 * once[j][i], 5);
    });
    model.zeroGrads();
    for (const p of model.params) expect(dev.download(p.grad).every((x) => x === 0)).toBe(true);
    expect(model.params.find((p) => p.name.endsWith('norm.weight'))?.noDecay).toBe(true);
    expect(model.params.find((p) => p.name.endsWith('q_proj.weight'))?.noDecay).toBe(false);
  } finally {
    model.dispose();
  }
});

test('refuses a quantized checkpoint and a device without training ops', async () => {
  const spec = { ...TINY[1][1], rawConfig: { quantization_config: { quant_method: 'compressed-tensors' } } };
  expect(() => TrainableDecoder.fromWeights(spec, sourceOf(randomTensors(TINY[1][1], 5)), dev)).toThrow(/quantized/);
  const noTraining = Object.create(dev, { training: { value: undefined } }) as CpuDevice;
  expect(() => TrainableDecoder.fromWeights(TINY[1][1], sourceOf(randomTensors(TINY[1][1], 5)), noTraining)).toThrow(/cannot train/);
});

// --- stories260K -------------------------------------------------------------------------------------

test('AdamW steps on stories260K lower the cross-entropy of a fixed batch', async () => {
  const tok = await TextTokenizer.load(stories);
  const text = fs.readFileSync(path.resolve(here, '../../shared/data/tinystories-valid.txt'), 'utf8').slice(0, 4000);
  const stream = tok.encode(text);
  const batch = 2, seq = 64;
  const ids = Int32Array.from(stream.slice(0, batch * seq));
  const targets = new Int32Array(batch * seq);
  for (let r = 0; r < batch * seq; r++) targets[r] = r % seq === seq - 1 ? -1 : ids[r + 1];
  const model = await TrainableDecoder.load(stories, dev);
  const t = dev.training!;
  const state = model.params.map((p) => ({ m: t.emptyF32(p.shape), v: t.emptyF32(p.shape) }));
  const losses: number[] = [];
  try {
    for (let step = 1; step <= 6; step++) {
      const logits = model.forward(ids, batch, seq);
      const rows = t.distillLoss({ logits, dLogits: logits, targets, kind: 'kl', temperature: 1, alpha: 1, gradScale: 1 / (batch * (seq - 1)) });
      losses.push(rows.loss.reduce((a, b) => a + b, 0) / (batch * (seq - 1)));
      model.backward(logits);
      model.params.forEach((p, i) => t.adamw({ master: p.master, grad: p.grad, m: state[i].m, v: state[i].v, compute: p.compute },
        { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01, step, gradScale: 1 }));
      model.zeroGrads();
    }
    console.log(`stories260K fixed-batch CE over 6 AdamW steps: ${losses.map((l) => l.toFixed(4)).join(' → ')}`);
    for (let i = 1; i < losses.length; i++) expect(losses[i]).toBeLessThan(losses[i - 1]);
    expect(losses[5]).toBeLessThan(losses[0] - 0.05);
    // The inference decoder sees the trained weights.
    const trained = dev.download(model.forward(ids, batch, seq));
    expect(maxRelDiff(dev.download(model.decoder().forward(ids, batch, seq)), trained)).toBeLessThanOrEqual(1e-6);
  } finally {
    model.dispose();
  }
});
