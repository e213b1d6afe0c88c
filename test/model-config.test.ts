// config.json → ModelSpec for every architecture and both rope styles, and the errors.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { ConfigError } from '../src/errors.js';
import { layerSlidingWindow, parseModelConfig } from '../src/model/config.js';
import type { ModelSpec } from '../src/model/spec.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixtures = path.join(here, 'fixtures/arch');
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
const withoutRaw = ({ rawConfig: _raw, ...rest }: ModelSpec) => rest;

const llama = {
  model_type: 'llama',
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 11008,
  num_hidden_layers: 32,
  num_attention_heads: 32,
};

function fails(json: unknown, pattern: RegExp): void {
  let err: unknown;
  try {
    parseModelConfig(json, '/m/config.json');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as Error).message).toMatch(/^\/m\/config\.json: /);
  expect((err as Error).message).toMatch(pattern);
}

describe('fixture configs: hub style and transformers-5 serialization parse to the same spec', () => {
  for (const name of fs.readdirSync(fixtures)) {
    const hf = path.join(fixtures, name, 'config.transformers5.json');
    if (!fs.existsSync(hf)) continue;
    test(name, () => {
      const a = parseModelConfig(readJson(path.join(fixtures, name, 'config.json')), 'config.json');
      const b = parseModelConfig(readJson(hf), 'config.transformers5.json');
      expect(withoutRaw(b)).toEqual(withoutRaw(a));
    });
  }
});

describe('per architecture', () => {
  test('llama: transformers defaults (kv heads = heads, head_dim derived, untied, rope default)', () => {
    const s = parseModelConfig(llama, 'c');
    expect(s).toMatchObject({
      architecture: 'llama', numKvHeads: 32, headDim: 128, maxPositionEmbeddings: 2048, normEps: 1e-6, norm: 'rms',
      activation: 'silu', positions: 'rope', ropeTheta: 10000, ropeScaling: { type: 'default' }, partialRotaryFactor: 1,
      tieWordEmbeddings: false, qkvBias: false, oBias: false, mlpBias: false, qkNorm: false, bosTokenId: 1, eosTokenId: 2,
    });
    expect(s.slidingWindow).toBeUndefined();
    expect(s.rawConfig.vocab_size).toBe(32000);
  });

  test('llama 3.1 classic rope_scaling (rope_type llama3), GQA, eos list, biases', () => {
    const s = parseModelConfig({
      ...llama, num_key_value_heads: 8, rope_theta: 500000, max_position_embeddings: 131072, eos_token_id: [128001, 128008],
      bos_token_id: 128000, attention_bias: true, mlp_bias: true, tie_word_embeddings: true,
      rope_scaling: { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 },
    }, 'c');
    expect(s).toMatchObject({
      numKvHeads: 8, ropeTheta: 500000, eosTokenId: [128001, 128008], bosTokenId: 128000, qkvBias: true, oBias: true, mlpBias: true,
      tieWordEmbeddings: true,
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    });
  });

  test('transformers-5 rope_parameters; llama3 original_max_position_embeddings falls back to max_position_embeddings', () => {
    const s = parseModelConfig({
      ...llama, max_position_embeddings: 4096,
      rope_parameters: { rope_type: 'llama3', rope_theta: 250000, factor: 4, low_freq_factor: 1, high_freq_factor: 4 },
    }, 'c');
    expect(s.ropeTheta).toBe(250000);
    expect(s.ropeScaling).toEqual({ type: 'llama3', factor: 4, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4096 });
    // rope_theta inside rope_parameters wins over a top-level one; linear via the old "type" key.
    const t = parseModelConfig({ ...llama, rope_theta: 1, rope_parameters: { type: 'linear', factor: 2, rope_theta: 9 } }, 'c');
    expect([t.ropeTheta, t.ropeScaling]).toEqual([9, { type: 'linear', factor: 2 }]);
    // A non-empty rope_scaling wins over rope_parameters (transformers' convert_rope_params_to_dict).
    const u = parseModelConfig({ ...llama, rope_scaling: { type: 'linear', factor: 3 }, rope_parameters: { rope_type: 'default' } }, 'c');
    expect(u.ropeScaling).toEqual({ type: 'linear', factor: 3 });
  });

  test('mistral: sliding window on every layer; 4096 when absent, none when null; kv heads default 8', () => {
    const base = { ...llama, model_type: 'mistral' };
    expect(parseModelConfig(base, 'c')).toMatchObject({ slidingWindow: 4096, numKvHeads: 8, maxPositionEmbeddings: 131072 });
    const s = parseModelConfig({ ...base, sliding_window: 64 }, 'c');
    expect([layerSlidingWindow(s, 0), layerSlidingWindow(s, 31), s.slidingWindowLayers]).toEqual([64, 64, undefined]);
    expect(parseModelConfig({ ...base, sliding_window: null }, 'c').slidingWindow).toBeUndefined();
    // Mistral has no attention biases even when the config says so (MistralAttention uses bias=False).
    expect(parseModelConfig({ ...base, attention_bias: true }, 'c').qkvBias).toBe(false);
  });

  test('qwen2: q/k/v bias only; sliding window only with use_sliding_window, from max_window_layers', () => {
    const base = { ...llama, model_type: 'qwen2', num_hidden_layers: 4, sliding_window: 32768, max_window_layers: 28 };
    const s = parseModelConfig(base, 'c');
    expect(s).toMatchObject({ qkvBias: true, oBias: false, mlpBias: false, tieWordEmbeddings: false, normEps: 1e-6, maxPositionEmbeddings: 32768 });
    expect(s.slidingWindow).toBeUndefined();
    expect(parseModelConfig({ ...base, use_sliding_window: true }, 'c').slidingWindow).toBeUndefined(); // 4 layers < 28
    const w = parseModelConfig({ ...base, use_sliding_window: true, sliding_window: 16, max_window_layers: 2 }, 'c');
    expect([0, 1, 2, 3].map((i) => layerSlidingWindow(w, i))).toEqual([undefined, undefined, 16, 16]);
    const all = parseModelConfig({ ...base, use_sliding_window: true, sliding_window: 16, max_window_layers: 0 }, 'c');
    expect([all.slidingWindow, all.slidingWindowLayers]).toEqual([16, undefined]);
    const lt = parseModelConfig({ ...base, use_sliding_window: true, sliding_window: 8, layer_types: ['sliding_attention', 'full_attention', 'full_attention', 'sliding_attention'] }, 'c');
    expect([0, 1, 2, 3].map((i) => layerSlidingWindow(lt, i))).toEqual([8, undefined, undefined, 8]);
    fails({ ...base, layer_types: ['sliding_attention', 'full_attention', 'full_attention', 'full_attention'] }, /no sliding window is in effect/);
    fails({ ...base, layer_types: ['full_attention'] }, /layer_types: expected 4 entries/);
  });

  test('qwen3: q/k norm, head_dim 128 by default, attention_bias on all four projections', () => {
    const base = { ...llama, model_type: 'qwen3', hidden_size: 1024, num_attention_heads: 16, num_key_value_heads: 8 };
    expect(parseModelConfig(base, 'c')).toMatchObject({ qkNorm: true, headDim: 128, qkvBias: false, oBias: false });
    expect(parseModelConfig({ ...base, head_dim: 64, attention_bias: true }, 'c')).toMatchObject({ headDim: 64, qkvBias: true, oBias: true });
    fails({ ...base, head_dim: null }, /head_dim: null is not allowed for qwen3/);
  });

  test('gpt2: hub config names, n_inner default 4*n_embd, tied, layer norm, learned positions', () => {
    const s = parseModelConfig({ model_type: 'gpt2', vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12, n_head: 12, n_inner: null }, 'c');
    expect(s).toMatchObject({
      architecture: 'gpt2', hiddenSize: 768, intermediateSize: 3072, numLayers: 12, numHeads: 12, numKvHeads: 12, headDim: 64,
      maxPositionEmbeddings: 1024, norm: 'layer', normEps: 1e-5, activation: 'gelu_tanh', positions: 'learned', tieWordEmbeddings: true,
      qkvBias: true, oBias: true, mlpBias: true, bosTokenId: 50256, eosTokenId: 50256,
    });
    fails({ model_type: 'gpt2', vocab_size: 10, n_positions: 8, n_embd: 10, n_layer: 1, n_head: 3 }, /n_embd \(10\) is not a multiple of n_head \(3\)/);
    fails({ model_type: 'gpt2', vocab_size: 10, n_positions: 8, n_embd: 12, n_layer: 1, n_head: 3, activation_function: 'relu' }, /activation_function "relu"/);
    fails({ model_type: 'gpt2', vocab_size: 10, n_positions: 8, n_embd: 12, n_layer: 1, n_head: 3, scale_attn_by_inverse_layer_idx: true }, /scale_attn_by_inverse_layer_idx/);
  });
});

describe('errors name the file and the field', () => {
  test('unknown or missing model_type lists the supported ones', () => {
    fails({ ...llama, model_type: 'falcon' }, /model_type "falcon" is not supported \(supported: llama, mistral, qwen2, qwen3, gpt2\)/);
    fails({ hidden_size: 8 }, /model_type: missing .*supported: llama, mistral, qwen2, qwen3, gpt2/);
    fails([1, 2], /expected a JSON object/);
  });

  test('missing or invalid required fields', () => {
    const { hidden_size: _h, ...noHidden } = llama;
    fails(noHidden, /hidden_size: missing \(required\)/);
    fails({ ...llama, vocab_size: -3 }, /vocab_size: expected a positive integer, got -3/);
    fails({ ...llama, num_hidden_layers: 2.5 }, /num_hidden_layers: expected a positive integer, got 2.5/);
    fails({ ...llama, rms_norm_eps: '1e-5' }, /rms_norm_eps: expected a number, got "1e-5"/);
    fails({ ...llama, tie_word_embeddings: 'yes' }, /tie_word_embeddings: expected true or false/);
    fails({ ...llama, num_key_value_heads: 5 }, /num_attention_heads \(32\) is not a multiple of num_key_value_heads \(5\)/);
    fails({ ...llama, hidden_size: 100, num_attention_heads: 3 }, /head_dim: missing, and hidden_size \(100\) is not a multiple/);
    fails({ ...llama, hidden_act: 'gelu' }, /hidden_act "gelu" is not supported/);
  });

  test('unsupported rope types and bad rope fields', () => {
    fails({ ...llama, rope_scaling: { type: 'dynamic', factor: 2 } }, /rope_scaling: rope type "dynamic" is not supported \(supported: default, linear, llama3\)/);
    fails({ ...llama, rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 10000 } }, /rope_parameters: rope type "yarn" is not supported/);
    fails({ ...llama, rope_scaling: { type: 'linear' } }, /rope_scaling\.factor: missing \(required\)/);
    fails({ ...llama, rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1 } }, /rope_scaling\.high_freq_factor: missing/);
    fails({ ...llama, rope_scaling: 'linear' }, /rope_scaling: expected an object or null/);
    fails({ ...llama, rope_parameters: { full_attention: { rope_type: 'default' } } }, /per-layer-type rope parameters/);
    fails({ ...llama, partial_rotary_factor: 0.5 }, /partial_rotary_factor 0.5: transformers' llama rotates the whole head/);
    fails({ ...llama, rope_parameters: { rope_type: 'default', partial_rotary_factor: 0.25 } }, /partial_rotary_factor 0.25/);
  });
});
