// Importance scores + counts → which units every layer keeps. The lowest-scoring units go (ties:
// the higher index goes first, so equal scores keep the original leading units). Kept indices are
// in their original order, so heads stay grouped with their KV group the way HF GQA maps them
// (query head h uses KV head h / (heads per group)).

import type { ImportanceScores } from './importance.js';
import type { PruneCounts } from './plan.js';

export interface LayerSelection {
  /** Original layer index. */
  layer: number;
  keptKvGroups: number[];
  removedKvGroups: number[];
  /** Original query head indices kept (grouped by kept KV group, ascending). */
  keptHeads: number[];
  removedHeads: number[];
  keptChannels: number[];
  removedChannels: number[];
}

export interface Selection {
  keptLayers: number[];
  removedLayers: number[];
  /** One per kept layer, in kept order. */
  layers: LayerSelection[];
  keptHidden: number[];
  removedHidden: number[];
}

/** Indices of the `keep` highest scores among `candidates`, ascending; and the rest, ascending. */
export function keepTop(scores: ArrayLike<number>, candidates: readonly number[], keep: number): { kept: number[]; removed: number[] } {
  const byImportance = [...candidates].sort((a, b) => scores[b]! - scores[a]! || a - b);
  const kept = byImportance.slice(0, keep).sort((a, b) => a - b);
  const removed = byImportance.slice(keep).sort((a, b) => a - b);
  return { kept, removed };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

export function selectUnits(counts: PruneCounts, scores: ImportanceScores): Selection {
  const nLayers = counts.layers.from;
  const { kept: keptLayers, removed: removedLayers } = keepTop(scores.layers, range(nLayers), counts.layers.to);
  const P = counts.headsPerGroup.from;
  const layers = keptLayers.map((l): LayerSelection => {
    const groups = keepTop(scores.kvGroups[l]!, range(counts.kvGroups.from), counts.kvGroups.to);
    const keptHeads: number[] = [];
    for (const g of groups.kept) {
      const inGroup = range(P).map((j) => g * P + j);
      keptHeads.push(...keepTop(scores.heads[l]!, inGroup, counts.headsPerGroup.to).kept);
    }
    const keptSet = new Set(keptHeads);
    const channels = keepTop(scores.channels[l]!, range(counts.mlpChannels.from), counts.mlpChannels.to);
    return {
      layer: l,
      keptKvGroups: groups.kept,
      removedKvGroups: groups.removed,
      keptHeads,
      removedHeads: range(counts.heads.from).filter((h) => !keptSet.has(h)),
      keptChannels: channels.kept,
      removedChannels: channels.removed,
    };
  });
  const hidden = keepTop(scores.hidden, range(counts.hiddenChannels.from), counts.hiddenChannels.to);
  return { keptLayers, removedLayers, layers, keptHidden: hidden.kept, removedHidden: hidden.removed };
}
