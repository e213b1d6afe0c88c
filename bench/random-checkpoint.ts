// Random-weight Hugging Face checkpoints with real model configs, for the GPU benchmarks
// (bench:gpu, bench:distill): the config.json of a model and bf16 weights of its shapes (uniform with
// std 0.02, norms 1), written through the normal io writer. Nothing here is model math.

import fs from 'node:fs';
import path from 'node:path';
import { writeCheckpointTensors, type TensorToWrite } from '../src/io/index.js';

export const LLAMA_3_2_1B = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  tie_word_embeddings: true,
  vocab_size: 128256,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  attention_bias: false,
  mlp_bias: false,
  torch_dtype: 'bfloat16',
  initializer_range: 0.02,
  use_cache: true,
};

export const LLAMA_3_1_8B = {
  ...LLAMA_3_2_1B,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  rope_scaling: { ...LLAMA_3_2_1B.rope_scaling, factor: 8.0 },
  tie_word_embeddings: false,
};

export type LlamaConfig = typeof LLAMA_3_2_1B;

/** bf16 bytes of uniform(-a, a) values (a fast LCG; a = std·√3). */
function randomBf16(n: number, std: number, seed: number): Uint8Array {
  const out = new Uint16Array(n);
  const a = std * Math.sqrt(3);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    f[0] = ((s >>> 8) / 16777216 - 0.5) * 2 * a;
    out[i] = (u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

function onesBf16(n: number): Uint8Array {
  return new Uint8Array(new Uint16Array(n).fill(0x3f80).buffer);
}

/**
 * Writes config.json and model.safetensors of a random model with config `c` into `dir`. qkStd: the
 * q/k projections' std instead of 0.02 (tests that want peaked attention).
 */
export function writeRandomCheckpoint(dir: string, c: LlamaConfig, seed = 1, opts: { qkStd?: number } = {}): void {
  const H = c.hidden_size, I = c.intermediate_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const tensors: TensorToWrite[] = [];
  const rand = (name: string, shape: number[], std: number) => {
    const s = seed++;
    tensors.push({ name, dtype: 'BF16', shape, data: () => randomBf16(shape[0]! * (shape[1] ?? 1), std, s) });
  };
  const ones = (name: string, n: number) => tensors.push({ name, dtype: 'BF16', shape: [n], data: () => onesBf16(n) });
  rand('model.embed_tokens.weight', [c.vocab_size, H], 0.02);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    ones(`${p}.input_layernorm.weight`, H);
    rand(`${p}.self_attn.q_proj.weight`, [q, H], opts.qkStd ?? 0.02);
    rand(`${p}.self_attn.k_proj.weight`, [kv, H], opts.qkStd ?? 0.02);
    rand(`${p}.self_attn.v_proj.weight`, [kv, H], 0.02);
    rand(`${p}.self_attn.o_proj.weight`, [H, q], 0.02);
    ones(`${p}.post_attention_layernorm.weight`, H);
    rand(`${p}.mlp.gate_proj.weight`, [I, H], 0.02);
    rand(`${p}.mlp.up_proj.weight`, [I, H], 0.02);
    rand(`${p}.mlp.down_proj.weight`, [H, I], 0.02);
  }
  ones('model.norm.weight', H);
  if (!c.tie_word_embeddings) rand('lm_head.weight', [c.vocab_size, H], 0.02);
  writeCheckpointTensors(dir, tensors);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(c, null, 2));
}
