import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { inspectModel, renderInspect } from '../src/cli/inspect.js';
import { componentOf, countParameters } from '../src/eval/params.js';
import { CheckpointTensors, writeSafetensors, type TensorToWrite } from '../src/io/index.js';

const stories = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/models/stories260K');

describe('inspect stories260K', () => {
  const report = inspectModel(stories);

  it('counts 260,032 parameters, tied embeddings once', () => {
    // embed 512·64; per layer q 64·64, k,v 32·64, o 64·64, mlp 3·172·64, 2 norms of 64; final norm 64.
    expect(report.parameters).toEqual({
      embeddings: 32768,
      attention: 5 * (4096 + 2048 + 2048 + 4096),
      mlp: 5 * 3 * 172 * 64,
      norms: 5 * 2 * 64 + 64,
      lm_head: 0,
      other: 0,
      total: 260032,
    });
  });

  it('summarizes the config', () => {
    expect(report.config).toMatchObject({
      model_type: 'llama',
      layers: 5,
      hidden_size: 64,
      heads: 8,
      kv_heads: 4,
      head_dim: 8,
      intermediate_size: 172,
      vocab_size: 512,
      max_position_embeddings: 512,
      rope_theta: 10000,
      tie_word_embeddings: true,
    });
    expect(report.quantization_config).toBeNull();
  });

  it('lists every tensor with dtype, shape and bytes, in natural layer order', () => {
    expect(report.totals.tensors).toBe(47); // 5 layers × 9 + embeddings + final norm
    expect(report.totals.tensor_bytes).toBe(260032 * 4);
    expect(report.totals.file_bytes).toBe(1044992);
    expect(report.tensors[0]).toEqual({ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [512, 64], bytes: 131072, file: 'model.safetensors' });
    const layerOrder = report.tensors.map((t) => /layers\.(\d+)\./.exec(t.name)?.[1]).filter((x) => x !== undefined).map(Number);
    expect(layerOrder).toEqual([...layerOrder].sort((a, b) => a - b));
  });

  it('renders a human summary', () => {
    const text = renderInspect(report).join('\n');
    expect(text).toMatch(/total\s+260,032/);
    expect(text).toMatch(/model\.layers\.4\.mlp\.down_proj\.weight\s+F32\s+\[64, 172\]\s+44,032/);
    expect(text).toMatch(/quantization_config: none/);
  });
});

describe('parameter components', () => {
  it('classifies Llama, Qwen3 and GPT-2 names', () => {
    expect(componentOf('model.layers.0.self_attn.q_norm.weight')).toBe('norms');
    expect(componentOf('model.layers.0.self_attn.q_proj.bias')).toBe('attention');
    expect(componentOf('model.norm.weight')).toBe('norms');
    expect(componentOf('lm_head.weight')).toBe('lm_head');
    expect(componentOf('transformer.wpe.weight')).toBe('embeddings');
    expect(componentOf('transformer.h.3.attn.c_attn.weight')).toBe('attention');
    expect(componentOf('transformer.h.3.mlp.c_fc.bias')).toBe('mlp');
    expect(componentOf('transformer.h.3.ln_2.weight')).toBe('norms');
    expect(componentOf('transformer.ln_f.bias')).toBe('norms');
  });

  it('does not count RoPE frequency buffers or quantization scales as parameters', () => {
    const stored = ['self_attn.rotary_emb.inv_freq', 'mlp.up_proj.weight_scale', 'mlp.up_proj.weight_zero_point', 'mlp.up_proj.weight_shape', 'self_attn.q_proj.input_scale', 'self_attn.k_scale'];
    expect(countParameters(stored.map((n) => ({ name: `model.layers.0.${n}`, shape: [32] })), false).total).toBe(0);
    expect(countParameters([{ name: 'model.layers.0.mlp.up_proj.weight', shape: [172, 64] }], false).mlp).toBe(172 * 64);
  });

  it('counts an untied lm_head, and skips a stored copy of a tied one', () => {
    const tensors = [
      { name: 'model.embed_tokens.weight', shape: [10, 4] },
      { name: 'lm_head.weight', shape: [10, 4] },
    ];
    expect(countParameters(tensors, false)).toMatchObject({ embeddings: 40, lm_head: 40, total: 80 });
    expect(countParameters(tensors, true)).toMatchObject({ embeddings: 40, lm_head: 0, total: 40 });
  });
});

describe('inspect a pack-quantized (compressed-tensors) checkpoint', () => {
  it('counts the logical weights from weight_shape, not the int32 words or the scales', () => {
    // stories260K with every Linear stored as W8A16 pack-quantized: weight_packed I32 [out, in/4],
    // weight_scale F32 [out, 1], weight_shape I64 [2]. inspect reads headers and weight_shape only.
    const dir = mkdtempSync(path.join(tmpdir(), 'llmopt-inspect-packed-'));
    try {
      const source = CheckpointTensors.open(stories);
      const tensors: TensorToWrite[] = [];
      for (const name of source.names()) {
        const info = source.info(name);
        const bytes = source.readBytes(name);
        if (!/_proj\.weight$/.test(name)) {
          tensors.push({ name, dtype: info.dtype, shape: info.shape, data: bytes });
          continue;
        }
        const [out, inF] = info.shape as [number, number];
        const prefix = name.replace(/\.weight$/, '');
        const words = Math.ceil(inF / 4);
        tensors.push({ name: `${prefix}.weight_packed`, dtype: 'I32', shape: [out, words], data: bytes.slice(0, out * words * 4) });
        tensors.push({ name: `${prefix}.weight_scale`, dtype: 'F32', shape: [out, 1], data: new Uint8Array(new Float32Array(out).fill(0.01).buffer) });
        tensors.push({ name: `${prefix}.weight_shape`, dtype: 'I64', shape: [2], data: new Uint8Array(new BigInt64Array([BigInt(out), BigInt(inF)]).buffer) });
      }
      source.close();
      writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
      const config = JSON.parse(readFileSync(path.join(stories, 'config.json'), 'utf8'));
      config.quantization_config = {
        quant_method: 'compressed-tensors',
        format: 'pack-quantized',
        config_groups: { group_0: { targets: ['Linear'], weights: { num_bits: 8, type: 'int', symmetric: true, strategy: 'channel', group_size: null } } },
        ignore: ['lm_head'],
      };
      writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
      copyFileSync(path.join(stories, 'tokenizer.json'), path.join(dir, 'tokenizer.json'));

      const report = inspectModel(dir);
      expect(report.parameters).toMatchObject({ attention: 61440, mlp: 165120, total: 260032 });
      expect(report.totals.tensors).toBe(47 + 2 * 35);
      expect(report.tensors.find((t) => t.name === 'model.layers.0.mlp.down_proj.weight_packed')).toMatchObject({ dtype: 'I32', shape: [64, 43] });
      expect(report.quantization_config).toMatchObject({ quant_method: 'compressed-tensors', format: 'pack-quantized' });
      expect(renderInspect(report).join('\n')).toMatch(/"quant_method": "compressed-tensors"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
