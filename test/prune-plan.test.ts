// Structured pruning, the pure parts: ratios → counts (rounding, refusals), selection (GQA group
// uniformity, ordering), config rewrite, byte slicing.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { prunedConfig } from '../src/compress/prune/config.js';
import { randomImportance, type ImportanceScores } from '../src/compress/prune/importance.js';
import { planCounts } from '../src/compress/prune/plan.js';
import { keepTop, selectUnits } from '../src/compress/prune/select.js';
import { sliceMatrixBytes } from '../src/compress/prune/surgery.js';
import { readJsonFile } from '../src/io/index.js';
import { parseModelConfig } from '../src/model/config.js';
import type { ModelSpec } from '../src/model/spec.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');

function specOf(dir: string): ModelSpec {
  const file = path.join(dir, 'config.json');
  return parseModelConfig(readJsonFile(file), file);
}

const stories = specOf(path.join(shared, 'models/stories260K'));
const qwen2Sliding = specOf(path.join(root, 'test/fixtures/arch/qwen2-sliding'));

/** A GQA spec with 32 query heads in 8 groups (4 per group), 4096 hidden, 11008 channels. */
const big: ModelSpec = { ...stories, hiddenSize: 4096, numHeads: 32, numKvHeads: 8, headDim: 128, intermediateSize: 11008, numLayers: 32 };

describe('planCounts', () => {
  test('stories260K: the must-show configurations', () => {
    const c = planCounts(stories, { heads: 0.5 });
    expect([c.heads.to, c.kvGroups.to, c.headsPerGroup.to]).toEqual([4, 4, 1]);
    const kv = planCounts(stories, { kvHeads: 0.5 });
    expect([kv.heads.to, kv.kvGroups.to, kv.headsPerGroup.to]).toEqual([4, 2, 2]);
    expect(planCounts(stories, { kvHeads: 0.25, allowIndivisibleHeads: true }).heads.to).toBe(6);
    expect(planCounts(stories, { layers: 1 }).layers).toEqual({ from: 5, to: 4 });
  });

  test('MLP channels round to --multiple-of (default 8) and say so', () => {
    const c = planCounts(stories, { mlp: 0.25 });
    expect(c.mlpChannels).toEqual({ from: 172, to: 128 }); // 129 → 128
    expect(c.rounding.join('\n')).toMatch(/129 of 172 MLP channels kept, rounded to a multiple of 8: 128/);
    expect(planCounts(stories, { mlp: 0.5 }).mlpChannels.to).toBe(88); // 86 → 88
    const exact = planCounts(stories, { mlp: 0.25, multipleOf: 1 });
    expect(exact.mlpChannels.to).toBe(129);
    expect(exact.rounding).toEqual([]);
    expect(planCounts(stories, { mlp: 0.5, multipleOf: 1 }).mlpChannels.to).toBe(86);
    expect(planCounts(big, { mlp: 0.3, multipleOf: 64 }).mlpChannels.to).toBe(7680); // 7705.6 → 7680
    expect(planCounts(big, { hidden: 0.25 }).hiddenChannels.to).toBe(3072);
  });

  test('head counts are whole and uniform per group; GQA ratios must divide the group', () => {
    const c = planCounts(big, { heads: 0.25, allowIndivisibleHeads: true });
    expect([c.heads.to, c.headsPerGroup.to]).toEqual([24, 3]);
    expect(() => planCounts(stories, { heads: 0.25 })).toThrow(/every group must keep the same number of heads.*nearest valid ratios 0 and 0\.5/);
    expect(() => planCounts(big, { heads: 0.3 })).toThrow(/multiple of 1\/4: nearest valid ratios 0\.25 and 0\.5/);
    const both = planCounts(big, { heads: 0.5, kvHeads: 0.25, allowIndivisibleHeads: true });
    expect([both.kvGroups.to, both.headsPerGroup.to, both.heads.to]).toEqual([6, 2, 12]);
  });

  test('Llama: kept query heads must divide hidden_size (transformers 5 LlamaConfig), unless allowed', () => {
    expect(() => planCounts(stories, { kvHeads: 0.25 })).toThrow(
      /keeps 6 query heads, which do not divide hidden_size 64: .* Head counts that work: 4 \(--heads 0\.5 or --kv-heads 0\.5\), 2 \(--kv-heads 0\.5 --heads 0\.5 or --kv-heads 0\.75\), 1 \(--kv-heads 0\.75 --heads 0\.5\); or pass --allow-indivisible-heads/,
    );
    expect(() => planCounts(big, { heads: 0.25 })).toThrow(/keeps 24 query heads, which do not divide hidden_size 4096/);
    expect(() => planCounts(stories, { hidden: 0.25, heads: 0.5 })).not.toThrow(); // 48 % 4 = 0
    expect(() => planCounts({ ...stories, architecture: 'mistral' }, { kvHeads: 0.25 })).not.toThrow(); // no such rule there
    expect(() => planCounts({ ...stories, architecture: 'qwen3' }, { kvHeads: 0.25 })).not.toThrow();
  });

  test('KV groups round to the nearest whole group; without GQA --heads removes whole heads', () => {
    const c = planCounts(big, { kvHeads: 0.3, allowIndivisibleHeads: true });
    expect(c.kvGroups.to).toBe(6); // 2.4 → 2 removed
    expect(c.rounding[0]).toMatch(/2\.4 of 8 KV groups rounded to 2 removed/);
    const mha: ModelSpec = { ...stories, numKvHeads: 8 };
    const m = planCounts(mha, { heads: 0.25, allowIndivisibleHeads: true });
    expect([m.heads.to, m.kvGroups.to, m.headsPerGroup.to]).toEqual([6, 6, 1]);
    expect(m.rounding.join(' ')).toMatch(/no GQA/);
    expect(() => planCounts(mha, { heads: 0.25, kvHeads: 0.25 })).toThrow(/give one/);
  });

  test('refusals: ratios outside [0, 1), pruning to nothing, no-ops', () => {
    expect(() => planCounts(stories, { mlp: 1 })).toThrow(/--mlp 1: a ratio must be in \[0, 1\)/);
    expect(() => planCounts(stories, { heads: -0.5 })).toThrow(/--heads -0\.5: a ratio must be in \[0, 1\)/);
    expect(() => planCounts(stories, { kvHeads: Number.NaN })).toThrow(/ratio must be in/);
    expect(() => planCounts(stories, { layers: 5 })).toThrow(/at most 4 can be removed/);
    expect(() => planCounts(stories, { kvHeads: 0.9 })).toThrow(/removes 4 of 4 KV groups, leaving none; the largest valid ratio is 0\.75/);
    expect(() => planCounts(stories, { kvHeads: 0.1 })).toThrow(/rounds to none removed; the smallest ratio that removes one is 0\.25/);
    expect(() => planCounts(stories, { mlp: 0.99 })).toThrow(/which rounded to a multiple of 8: 0, leaving none/);
    expect(() => planCounts(stories, { mlp: 0.005, multipleOf: 4 })).toThrow(/171.14 of 172 MLP channels, which rounded to a multiple of 4: 172: nothing would be removed/);
    expect(() => planCounts(stories, { mlp: 0.2, multipleOf: 0 })).toThrow(/--multiple-of 0/);
  });
});

describe('selection', () => {
  test('keepTop keeps the highest scores, in index order; ties remove the higher index', () => {
    expect(keepTop([0.5, 0.1, 0.9, 0.3], [0, 1, 2, 3], 2)).toEqual({ kept: [0, 2], removed: [1, 3] });
    expect(keepTop([1, 1, 1, 1], [0, 1, 2, 3], 3)).toEqual({ kept: [0, 1, 2], removed: [3] });
  });

  test('every KV group keeps the same number of query heads, grouped as HF maps them', () => {
    const counts = planCounts(big, { heads: 0.5, kvHeads: 0.25, allowIndivisibleHeads: true });
    const sel = selectUnits(counts, randomImportance(big, 7));
    expect(sel.layers).toHaveLength(32);
    for (const l of sel.layers) {
      expect(l.keptKvGroups).toHaveLength(6);
      expect(l.keptHeads).toHaveLength(12);
      // New head i belongs to new group floor(i / 2), which must be its original group.
      l.keptHeads.forEach((h, i) => expect(Math.floor(h / 4)).toBe(l.keptKvGroups[Math.floor(i / 2)]));
      expect([...l.keptHeads, ...l.removedHeads].sort((a, b) => a - b)).toEqual(Array.from({ length: 32 }, (_, i) => i));
    }
  });

  test('lowest scores are removed: heads, groups, channels, layers', () => {
    const scores = randomImportance(stories, 1);
    scores.layers.set([5, 1, 4, 3, 2]);
    for (let l = 0; l < 5; l++) {
      scores.kvGroups[l]!.set([1, 2, 0.5, 3]);
      scores.heads[l]!.set([1, 2, 2, 1, 1, 2, 2, 1]);
      scores.channels[l]!.forEach((_, c) => (scores.channels[l]![c] = (c * 37) % 172));
    }
    const sel = selectUnits(planCounts(stories, { heads: 0.5, kvHeads: 0.25, mlp: 0.5, multipleOf: 1, layers: 2, allowIndivisibleHeads: true }), scores as ImportanceScores);
    expect(sel.keptLayers).toEqual([0, 2, 3]);
    expect(sel.removedLayers).toEqual([1, 4]);
    const l0 = sel.layers[0]!;
    expect(l0.keptKvGroups).toEqual([0, 1, 3]);
    expect(l0.keptHeads).toEqual([1, 2, 6]);
    expect(l0.keptChannels).toHaveLength(86);
    expect(Math.min(...l0.keptChannels.map((c) => (c * 37) % 172))).toBe(86);
  });
});

describe('config rewrite', () => {
  test('Llama: standard keys, explicit head_dim, everything else kept', () => {
    const counts = planCounts(stories, { heads: 0.5, mlp: 0.25, layers: 1 });
    const sel = selectUnits(counts, randomImportance(stories, 3));
    const cfg = prunedConfig(stories, counts, sel, 'config.json');
    expect(cfg).toMatchObject({ num_attention_heads: 4, num_key_value_heads: 4, head_dim: 8, intermediate_size: 128, num_hidden_layers: 4, hidden_size: 64 });
    expect(cfg.rope_theta).toBe(10000);
    expect(cfg.tie_word_embeddings).toBe(true);
    expect(stories.rawConfig.num_hidden_layers).toBe(5); // the input spec is untouched
    const back = parseModelConfig(cfg, 'pruned');
    expect([back.numHeads, back.numKvHeads, back.headDim, back.intermediateSize, back.numLayers]).toEqual([4, 4, 8, 128, 4]);
  });

  test('Qwen2 sliding layers: layer_types sliced, max_window_layers recounted', () => {
    const counts = planCounts(qwen2Sliding, { layers: 1 });
    const scores = randomImportance(qwen2Sliding, 0);
    scores.layers.set([0, 1]); // remove layer 0 (full attention), keep layer 1 (sliding)
    const cfg = prunedConfig(qwen2Sliding, counts, selectUnits(counts, scores), 'config.json');
    expect(cfg.layer_types).toEqual(['sliding_attention']);
    expect(cfg.max_window_layers).toBe(0);
    expect(parseModelConfig(cfg, 'pruned').slidingWindow).toBe(6);
    scores.layers.set([1, 0]);
    const cfg2 = prunedConfig(qwen2Sliding, counts, selectUnits(counts, scores), 'config.json');
    expect(cfg2.layer_types).toEqual(['full_attention']);
    expect(cfg2.max_window_layers).toBe(1);
    expect(parseModelConfig(cfg2, 'pruned').slidingWindow).toBeUndefined();
  });
});

describe('sliceMatrixBytes', () => {
  test('rows and columns of a 2-byte-element matrix, runs and gaps', () => {
    // 3 × 5 matrix of u16 values r*10+c.
    const src = new Uint16Array(15).map((_, i) => Math.floor(i / 5) * 10 + (i % 5));
    const bytes = new Uint8Array(src.buffer);
    const out = sliceMatrixBytes(bytes, 3, 5, 2, [0, 2], [1, 2, 4]);
    expect(Array.from(new Uint16Array(out.buffer))).toEqual([1, 2, 4, 21, 22, 24]);
    expect(Array.from(new Uint16Array(sliceMatrixBytes(bytes, 3, 5, 2, [2], undefined).buffer))).toEqual([20, 21, 22, 23, 24]);
    expect(Array.from(new Uint16Array(sliceMatrixBytes(bytes, 15, 1, 2, [3, 14], undefined).buffer))).toEqual([3, 24]);
  });
});
