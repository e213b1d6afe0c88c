// Tiny generated models for training tests: a ModelSpec with small dims, random Hugging Face tensors
// for it, and a WeightSource over them (TrainableDecoder.fromWeights). Used by train-model.test.ts
// (cpu, against finite differences) and cuda-train-cases.ts (cuda against cpu).

import type { ModelSpec } from '../../src/model/spec.js';
import type { WeightSource } from '../../src/model/weights.js';
import { seededRandom } from '../../src/random.js';

export function baseSpec(over: Partial<ModelSpec>): ModelSpec {
  return {
    architecture: 'llama', vocabSize: 37, hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 6,
    maxPositionEmbeddings: 64, norm: 'rms', normEps: 1e-5, activation: 'silu', positions: 'rope', ropeTheta: 10000,
    ropeScaling: { type: 'default' }, partialRotaryFactor: 1, tieWordEmbeddings: false, qkvBias: false, oBias: false, mlpBias: false,
    qkNorm: false, rawConfig: {}, ...over,
  };
}

/** HF tensors of a random model of `spec` (GPT-2: Conv1D layouts, fused c_attn). */
export function randomTensors(spec: ModelSpec, seed: number): Map<string, { shape: number[]; data: Float32Array }> {
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

export function sourceOf(tensors: Map<string, { shape: number[]; data: Float32Array }>): WeightSource {
  return {
    has: (n) => tensors.has(n),
    info: (n) => ({ shape: tensors.get(n)!.shape, dtype: 'F32' }),
    readFloat32: (n) => tensors.get(n)!.data.slice(),
    readBytes: (n) => new Uint8Array(tensors.get(n)!.data.buffer.slice(0)),
    files: () => ['(generated)'],
  };
}
