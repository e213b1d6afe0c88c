// config.json of the pruned model: the input's config with the pruned dimensions rewritten, in the
// standard keys a stock transformers/vLLM loader reads. Everything else is kept as it was.

import { LlmoptError } from '../../errors.js';
import { parseModelConfig } from '../../model/config.js';
import type { ModelSpec } from '../../model/spec.js';
import type { PruneCounts } from './plan.js';
import type { Selection } from './select.js';

/**
 * Qwen2/Qwen3 pick sliding-window layers by index (layer_types, or index >= max_window_layers), so
 * removing layers rewrites both: layer_types is sliced to the kept layers; max_window_layers becomes
 * the number of kept layers below the old threshold, which keeps "index >= max_window_layers"
 * meaning the same layers.
 */
function rewriteLayerKeys(cfg: Record<string, unknown>, keptLayers: readonly number[]): void {
  if (Array.isArray(cfg.layer_types)) cfg.layer_types = keptLayers.map((l) => (cfg.layer_types as unknown[])[l]);
  if (typeof cfg.max_window_layers === 'number') {
    const mwl = cfg.max_window_layers;
    cfg.max_window_layers = keptLayers.filter((l) => l < mwl).length;
  }
}

export function prunedConfig(spec: ModelSpec, counts: PruneCounts, sel: Selection, configFile: string): Record<string, unknown> {
  const cfg: Record<string, unknown> = structuredClone(spec.rawConfig);
  cfg.num_attention_heads = counts.heads.to;
  cfg.num_key_value_heads = counts.kvGroups.to;
  // Explicit: fewer heads (or a narrower hidden size) no longer give head_dim as hidden_size / heads.
  cfg.head_dim = spec.headDim;
  cfg.intermediate_size = counts.mlpChannels.to;
  cfg.hidden_size = counts.hiddenChannels.to;
  cfg.num_hidden_layers = counts.layers.to;
  if (counts.layers.to !== counts.layers.from) rewriteLayerKeys(cfg, sel.keptLayers);

  // The result must parse back into exactly the spec the pruned tensors have.
  const check = parseModelConfig(cfg, `${configFile} (pruned)`);
  const want: [string, number, number][] = [
    ['num_attention_heads', check.numHeads, counts.heads.to],
    ['num_key_value_heads', check.numKvHeads, counts.kvGroups.to],
    ['head_dim', check.headDim, spec.headDim],
    ['intermediate_size', check.intermediateSize, counts.mlpChannels.to],
    ['hidden_size', check.hiddenSize, counts.hiddenChannels.to],
    ['num_hidden_layers', check.numLayers, counts.layers.to],
  ];
  for (const [key, got, expected] of want) {
    if (got !== expected) throw new LlmoptError(`${configFile}: the pruned config reads ${key} = ${got}, expected ${expected}`);
  }
  const slidingBefore = sel.keptLayers.map((l) => spec.slidingWindowLayers?.[l] ?? spec.slidingWindow !== undefined);
  const slidingAfter = sel.keptLayers.map((_, i) => check.slidingWindowLayers?.[i] ?? check.slidingWindow !== undefined);
  if (slidingBefore.some((s, i) => s !== slidingAfter[i])) {
    throw new LlmoptError(`${configFile}: the pruned config would change which layers use sliding-window attention`);
  }
  return cfg;
}
