// Parameter counts by component, from tensor names (Hugging Face naming: Llama family and GPT-2).

export const COMPONENTS = ['embeddings', 'attention', 'mlp', 'norms', 'lm_head', 'other'] as const;
export type Component = (typeof COMPONENTS)[number];
export type ParameterCounts = Record<Component, number> & { total: number };

/** Which part of the model a tensor belongs to. Norms are matched first: q_norm/k_norm sit inside self_attn. */
export function componentOf(name: string): Component {
  if (/(^|\.)lm_head\./.test(name)) return 'lm_head';
  if (/(^|\.)(embed_tokens|embed_positions|wte|wpe)\./.test(name)) return 'embeddings';
  if (/(norm|(^|\.)ln_\w*)\./.test(name)) return 'norms';
  if (/\.(self_attn|attn|attention)\./.test(name)) return 'attention';
  if (/\.mlp\./.test(name)) return 'mlp';
  return 'other';
}

/**
 * Stored tensors that are not parameters: RoPE frequencies (older Llama conversions), and what
 * compressed-tensors stores beside a quantized weight (scales, zero points, the packed weight's shape).
 */
export function isNonParameter(name: string): boolean {
  return (
    name.endsWith('rotary_emb.inv_freq') ||
    /\.(weight_scale|weight_zero_point|weight_g_idx|weight_global_scale|weight_shape|input_scale|input_zero_point|input_global_scale|output_scale|k_scale|v_scale)$/.test(name)
  );
}

/** A pack-quantized weight (several 4/8-bit values per int32): its parameters are those of `<p>.weight_shape`. */
export function isPackedWeight(name: string): boolean {
  return name.endsWith('.weight_packed');
}

/**
 * Counts parameters per component: elements of `shape` (for a packed quantized weight, pass its
 * logical [out, in] shape). With tied embeddings the output projection is the embedding matrix, so
 * a stored lm_head copy is not counted again (lm_head reads 0). Non-parameters are skipped.
 */
export function countParameters(tensors: Iterable<{ name: string; shape: readonly number[] }>, tiedEmbeddings: boolean): ParameterCounts {
  const counts: ParameterCounts = { embeddings: 0, attention: 0, mlp: 0, norms: 0, lm_head: 0, other: 0, total: 0 };
  for (const t of tensors) {
    const component = componentOf(t.name);
    if ((component === 'lm_head' && tiedEmbeddings) || isNonParameter(t.name)) continue;
    const elements = t.shape.reduce((a, b) => a * b, 1);
    counts[component] += elements;
    counts.total += elements;
  }
  return counts;
}
