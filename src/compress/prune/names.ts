// Hugging Face tensor names of the Llama family (llama, mistral, qwen2, qwen3), the architectures
// structured pruning supports, and how each tensor is sliced along the pruned axes.

import { LlmoptError } from '../../errors.js';
import type { Architecture, ModelSpec } from '../../model/spec.js';

export const PRUNABLE_ARCHITECTURES: readonly Architecture[] = ['llama', 'mistral', 'qwen2', 'qwen3'];

/** Refuses architectures whose checkpoints prune cannot slice (or whose config cannot express the result). */
export function checkPrunable(spec: ModelSpec, configFile: string): void {
  if ((PRUNABLE_ARCHITECTURES as readonly string[]).includes(spec.architecture)) return;
  const why =
    spec.architecture === 'gpt2'
      ? ' (GPT-2 stores q/k/v fused in one Conv1D and its config derives head_dim from n_embd / n_head, so fewer heads cannot be expressed)'
      : '';
  throw new LlmoptError(`${configFile}: prune supports ${PRUNABLE_ARCHITECTURES.join(', ')}; model_type "${spec.architecture}" is not supported${why}`);
}

/**
 * The axes a weight can be pruned along. A tensor's rows (dim 0) and columns (dim 1, for 2-D
 * tensors) each follow one axis or none:
 * - heads:  query heads, head_dim elements each
 * - kv:     KV groups, head_dim elements each
 * - mlp:    intermediate channels
 * - hidden: embedding (residual stream) channels
 */
export type Axis = 'heads' | 'kv' | 'mlp' | 'hidden';

export interface SliceRule {
  rows?: Axis;
  cols?: Axis;
}

/** Tensors inside model.layers.N., by suffix. Anything else there is refused (prune cannot know its layout). */
export const LAYER_TENSORS: ReadonlyMap<string, SliceRule> = new Map<string, SliceRule>([
  ['input_layernorm.weight', { rows: 'hidden' }],
  ['self_attn.q_proj.weight', { rows: 'heads', cols: 'hidden' }],
  ['self_attn.q_proj.bias', { rows: 'heads' }],
  ['self_attn.k_proj.weight', { rows: 'kv', cols: 'hidden' }],
  ['self_attn.k_proj.bias', { rows: 'kv' }],
  ['self_attn.v_proj.weight', { rows: 'kv', cols: 'hidden' }],
  ['self_attn.v_proj.bias', { rows: 'kv' }],
  ['self_attn.o_proj.weight', { rows: 'hidden', cols: 'heads' }],
  ['self_attn.o_proj.bias', { rows: 'hidden' }],
  // Per-head norms are shared by every head ([head_dim]); RoPE buffers depend only on head_dim.
  ['self_attn.q_norm.weight', {}],
  ['self_attn.k_norm.weight', {}],
  ['self_attn.rotary_emb.inv_freq', {}],
  ['post_attention_layernorm.weight', { rows: 'hidden' }],
  ['mlp.gate_proj.weight', { rows: 'mlp', cols: 'hidden' }],
  ['mlp.gate_proj.bias', { rows: 'mlp' }],
  ['mlp.up_proj.weight', { rows: 'mlp', cols: 'hidden' }],
  ['mlp.up_proj.bias', { rows: 'mlp' }],
  ['mlp.down_proj.weight', { rows: 'hidden', cols: 'mlp' }],
  ['mlp.down_proj.bias', { rows: 'hidden' }],
]);

/** Tensors outside the layers (after the "model." prefix, except lm_head). */
export const GLOBAL_TENSORS: ReadonlyMap<string, SliceRule> = new Map<string, SliceRule>([
  ['embed_tokens.weight', { cols: 'hidden' }],
  ['norm.weight', { rows: 'hidden' }],
  ['lm_head.weight', { cols: 'hidden' }],
  ['rotary_emb.inv_freq', {}],
]);

/** "model." for LlamaForCausalLM checkpoints, "" for bare LlamaModel ones. */
export function modelPrefix(has: (name: string) => boolean): string {
  return !has('model.embed_tokens.weight') && has('embed_tokens.weight') ? '' : 'model.';
}

export interface ParsedName {
  /** Decoder layer index, or undefined for tensors outside the layers. */
  layer?: number;
  /** The name after "model.layers.N." (or after the prefix for global tensors). */
  suffix: string;
}

/** Splits a tensor name into layer index and suffix. */
export function parseTensorName(name: string, prefix: string): ParsedName {
  const layerPrefix = `${prefix}layers.`;
  if (name.startsWith(layerPrefix)) {
    const rest = name.slice(layerPrefix.length);
    const dot = rest.indexOf('.');
    const index = dot > 0 ? Number(rest.slice(0, dot)) : NaN;
    if (Number.isInteger(index) && index >= 0 && /^\d+$/.test(rest.slice(0, dot))) return { layer: index, suffix: rest.slice(dot + 1) };
  }
  if (name === 'lm_head.weight') return { suffix: name };
  return { suffix: name.startsWith(prefix) ? name.slice(prefix.length) : name };
}

export function layerTensorName(prefix: string, layer: number, suffix: string): string {
  return `${prefix}layers.${layer}.${suffix}`;
}
