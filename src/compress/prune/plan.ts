// What a structured prune removes, as counts: the user's ratios → how many query heads, KV groups,
// MLP channels, hidden channels and layers every layer keeps. Counts are uniform across layers so
// the pruned config.json stays a standard one. Every impossible request is an LlmoptError (exit 1)
// that says what is wrong and, where it helps, which values would work.
//
// Rounding rules (the report lists every rounding that happened):
// - MLP and hidden channels: the kept count is rounded to the nearest multiple of --multiple-of
//   (default 8, so GEMMs stay on fast tiles).
// - KV groups (and heads of a model without GQA, where each head is its own group): the removed
//   count is R × groups rounded to the nearest integer. Never rounded to a multiple: head counts are
//   small and every count is a valid GEMM shape (n × head_dim).
// - Query heads of a GQA model are removed inside every KV group alike, so R × (heads per group)
//   must be a whole number; otherwise the request is refused with the nearest valid ratios.

import { LlmoptError } from '../../errors.js';
import type { ModelSpec } from '../../model/spec.js';

export interface PruneRequest {
  /** Fraction of query heads to remove per layer (within KV groups). */
  heads?: number;
  /** Fraction of KV groups to remove per layer, with their query heads. */
  kvHeads?: number;
  /** Fraction of MLP intermediate channels to remove per layer. */
  mlp?: number;
  /** Number of whole decoder layers to remove. */
  layers?: number;
  /** Fraction of embedding (hidden) channels to remove, Minitron-style. */
  hidden?: number;
  /** Kept channel counts (MLP, hidden) are rounded to a multiple of this. Default 8. */
  multipleOf?: number;
  /**
   * Llama only: allow a query-head count that does not divide hidden_size. transformers ≥ 5's
   * LlamaConfig refuses such a config (its validate_architecture checks hidden_size %
   * num_attention_heads even when head_dim is explicit); llmopt loads it.
   */
  allowIndivisibleHeads?: boolean;
}

export interface PruneCounts {
  /** Query heads per layer, before → after. */
  heads: { from: number; to: number };
  kvGroups: { from: number; to: number };
  /** Query heads per KV group, before → after. */
  headsPerGroup: { from: number; to: number };
  mlpChannels: { from: number; to: number };
  hiddenChannels: { from: number; to: number };
  layers: { from: number; to: number };
  /** One sentence per rounding or reinterpretation the plan applied. */
  rounding: string[];
  multipleOf: number;
}

export const DEFAULT_MULTIPLE_OF = 8;

/** A ratio flag must be a number in [0, 1). */
export function checkRatio(flag: string, r: number | undefined): void {
  if (r === undefined) return;
  if (!Number.isFinite(r) || r < 0 || r >= 1) {
    throw new LlmoptError(`${flag} ${r}: a ratio must be in [0, 1) (the fraction to remove; 0.25 removes a quarter)`);
  }
}

const fmt = (x: number): string => String(Number(x.toFixed(6)));

/** Whole units removed for `ratio` of `n`, rounded to nearest; refuses removing none (for R > 0) or all. */
function wholeUnitsRemoved(flag: string, ratio: number, n: number, what: string, rounding: string[]): number {
  const exact = ratio * n;
  const removed = Math.round(exact);
  if (ratio > 0 && removed === 0) {
    throw new LlmoptError(`${flag} ${fmt(ratio)}: ${fmt(exact)} of ${n} ${what} rounds to none removed; the smallest ratio that removes one is ${fmt(1 / n)}`);
  }
  if (removed >= n) {
    throw new LlmoptError(`${flag} ${fmt(ratio)}: removes ${removed} of ${n} ${what}, leaving none; the largest valid ratio is ${fmt((n - 1) / n)}`);
  }
  if (Math.abs(exact - removed) > 1e-9) rounding.push(`${flag} ${fmt(ratio)}: ${fmt(exact)} of ${n} ${what} rounded to ${removed} removed`);
  return removed;
}

/** Kept channels for removing `ratio` of `n`, rounded to the nearest multiple of m. */
function channelsKept(flag: string, ratio: number, n: number, m: number, what: string, rounding: string[]): number {
  if (ratio === 0) return n;
  const exact = n * (1 - ratio);
  const kept = Math.round(exact / m) * m;
  const by = m === 1 ? 'rounded to' : `rounded to a multiple of ${m}:`;
  if (kept <= 0) {
    throw new LlmoptError(`${flag} ${fmt(ratio)}: keeps ${fmt(exact)} of ${n} ${what}, which ${by} 0, leaving none; lower the ratio or --multiple-of`);
  }
  if (kept >= n) {
    throw new LlmoptError(`${flag} ${fmt(ratio)}: keeps ${fmt(exact)} of ${n} ${what}, which ${by} ${kept}: nothing would be removed; raise the ratio or lower --multiple-of`);
  }
  if (Math.abs(exact - kept) > 1e-9) {
    rounding.push(`${flag} ${fmt(ratio)}: ${fmt(exact)} of ${n} ${what} kept, ${by} ${kept} (${fmt((n - kept) / n)} removed)`);
  }
  return kept;
}

/** Ratios k/d (k = 0 … d-1) nearest to r: the one below and the one above. */
function nearestValidRatios(r: number, d: number): string {
  const below = Math.floor(r * d) / d;
  const above = Math.ceil(r * d) / d;
  const valid = [below, above].filter((x, i, a) => x < 1 && a.indexOf(x) === i).map(fmt);
  return valid.join(' and ');
}

/** Counts for `req` on `spec`, or an LlmoptError naming the flag that cannot be honoured. */
export function planCounts(spec: ModelSpec, req: PruneRequest): PruneCounts {
  checkRatio('--heads', req.heads);
  checkRatio('--kv-heads', req.kvHeads);
  checkRatio('--mlp', req.mlp);
  checkRatio('--hidden', req.hidden);
  const m = req.multipleOf ?? DEFAULT_MULTIPLE_OF;
  if (!Number.isInteger(m) || m < 1) throw new LlmoptError(`--multiple-of ${m}: expected an integer ≥ 1`);
  const layersRemoved = req.layers ?? 0;
  if (!Number.isInteger(layersRemoved) || layersRemoved < 0) throw new LlmoptError(`--layers ${layersRemoved}: expected a whole number of layers ≥ 0`);
  if (layersRemoved >= spec.numLayers) {
    throw new LlmoptError(`--layers ${layersRemoved}: the model has ${spec.numLayers} layers, so at most ${spec.numLayers - 1} can be removed (pruning must leave at least one)`);
  }

  const rounding: string[] = [];
  const G = spec.numKvHeads;
  const P = spec.numHeads / G;
  let groupsRemoved = 0;
  let perGroupRemoved = 0;
  const headsRatio = req.heads ?? 0;
  const kvRatio = req.kvHeads ?? 0;
  if (P === 1 && headsRatio > 0) {
    // Without GQA every query head is its own KV group: a head goes with its key and value.
    if (kvRatio > 0) throw new LlmoptError(`--heads and --kv-heads: this model has no GQA (${spec.numHeads} heads, each with its own K/V), so they mean the same; give one`);
    groupsRemoved = wholeUnitsRemoved('--heads', headsRatio, G, 'heads', rounding);
    rounding.push(`no GQA (num_key_value_heads = num_attention_heads): --heads removes whole heads with their K/V, like --kv-heads`);
  } else {
    groupsRemoved = kvRatio > 0 ? wholeUnitsRemoved('--kv-heads', kvRatio, G, 'KV groups', rounding) : 0;
    if (headsRatio > 0) {
      const exact = headsRatio * P;
      perGroupRemoved = Math.round(exact);
      if (Math.abs(exact - perGroupRemoved) > 1e-9 || perGroupRemoved === 0) {
        throw new LlmoptError(
          `--heads ${fmt(headsRatio)}: ${spec.numHeads} query heads in ${G} KV groups of ${P}; every group must keep the same number of heads, ` +
            `so the ratio must be a multiple of 1/${P}: nearest valid ratios ${nearestValidRatios(headsRatio, P)}`,
        );
      }
    }
  }

  const headsPerGroupKept = P - perGroupRemoved;
  const groupsKept = G - groupsRemoved;
  const counts: PruneCounts = {
    heads: { from: spec.numHeads, to: groupsKept * headsPerGroupKept },
    kvGroups: { from: G, to: groupsKept },
    headsPerGroup: { from: P, to: headsPerGroupKept },
    mlpChannels: { from: spec.intermediateSize, to: channelsKept('--mlp', req.mlp ?? 0, spec.intermediateSize, m, 'MLP channels', rounding) },
    hiddenChannels: { from: spec.hiddenSize, to: channelsKept('--hidden', req.hidden ?? 0, spec.hiddenSize, m, 'hidden channels', rounding) },
    layers: { from: spec.numLayers, to: spec.numLayers - layersRemoved },
    rounding,
    multipleOf: m,
  };
  checkLlamaHeadsDivideHidden(spec, counts, req.allowIndivisibleHeads ?? false);
  return counts;
}

/** Kept head counts g·p (g ≤ groups, p ≤ heads per group) that divide `hidden`, with flags that give them. */
function headCountsDividing(spec: ModelSpec, hidden: number): string[] {
  const G = spec.numKvHeads;
  const P = spec.numHeads / G;
  const ways = new Map<number, string[]>();
  for (let g = G; g >= 1; g--) {
    for (let p = P; p >= 1; p--) {
      const k = g * p;
      if (k === spec.numHeads || hidden % k !== 0) continue;
      const flags = [...(g < G ? [`--kv-heads ${fmt((G - g) / G)}`] : []), ...(p < P ? [`--heads ${fmt((P - p) / P)}`] : [])];
      ways.set(k, [...(ways.get(k) ?? []), flags.join(' ')]);
    }
  }
  return [...ways.entries()].sort((a, b) => b[0] - a[0]).map(([k, w]) => `${k} (${w.join(' or ')})`);
}

/**
 * transformers ≥ 5 refuses a LlamaConfig whose hidden_size is not a multiple of
 * num_attention_heads, even with an explicit head_dim (Mistral, Qwen2 and Qwen3 have no such rule).
 * A Llama model that satisfied it must still satisfy it after pruning, unless the user opts out.
 */
function checkLlamaHeadsDivideHidden(spec: ModelSpec, c: PruneCounts, allow: boolean): void {
  if (spec.architecture !== 'llama' || allow) return;
  if (spec.hiddenSize % spec.numHeads !== 0 || c.hiddenChannels.to % c.heads.to === 0) return;
  const valid = headCountsDividing(spec, c.hiddenChannels.to);
  throw new LlmoptError(
    `pruning keeps ${c.heads.to} query heads, which do not divide hidden_size ${c.hiddenChannels.to}: transformers' LlamaConfig refuses that ` +
      `(hidden_size % num_attention_heads must be 0, even with head_dim set). Head counts that work: ${valid.length > 0 ? valid.join(', ') : 'none'}; ` +
      `or pass --allow-indivisible-heads to write it anyway (llmopt loads it, transformers ≥ 5 does not)`,
  );
}

/** True when the counts change nothing. */
export function prunesNothing(c: PruneCounts): boolean {
  return c.heads.to === c.heads.from && c.kvGroups.to === c.kvGroups.from && c.mlpChannels.to === c.mlpChannels.from &&
    c.hiddenChannels.to === c.hiddenChannels.from && c.layers.to === c.layers.from;
}
