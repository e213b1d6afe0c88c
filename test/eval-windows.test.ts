import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { batchWindows, countScored, makeWindows, protocolName, type Protocol, type Window } from '../src/eval/windows.js';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
const reference = JSON.parse(readFileSync(path.join(shared, 'references/stories260K-perplexity.json'), 'utf8')) as Record<string, unknown>;

/** Parses a reference key (chunks512, chunks512_keep_last, stride512_256) back into a protocol. */
function parseKey(key: string): Protocol | undefined {
  let m = /^chunks(\d+)(_keep_last)?$/.exec(key);
  if (m) return { kind: 'chunks', window: Number(m[1]), keepLast: m[2] !== undefined };
  m = /^stride(\d+)_(\d+)$/.exec(key);
  if (m) return { kind: 'stride', window: Number(m[1]), stride: Number(m[2]) };
  return undefined;
}

/** Positions (absolute) each window scores, to check that no token is scored twice. */
function scoredPositions(windows: readonly Window[]): number[] {
  const out: number[] = [];
  for (const w of windows) for (let j = w.firstTarget; j < w.length; j++) out.push(w.start + j);
  return out;
}

const datasets = Object.entries(reference).filter(([k]) => k.startsWith('data/'));

describe('protocol windows reproduce the reference tokens_scored', () => {
  it('has both datasets with their token counts', () => {
    expect(datasets.map(([, v]) => (v as { tokens: number }).tokens).sort()).toEqual([125500, 297770]);
  });

  for (const [dataset, entry] of datasets) {
    const { tokens, ...rest } = entry as { tokens: number } & Record<string, unknown>;
    const protocols = Object.entries(rest).filter(([k]) => parseKey(k) !== undefined);
    it(`${dataset}: covers 7 protocols`, () => expect(protocols).toHaveLength(7));
    for (const [key, value] of protocols) {
      it(`${dataset} ${key}: ${(value as { tokens_scored: number }).tokens_scored} tokens scored`, () => {
        const protocol = parseKey(key)!;
        expect(protocolName(protocol)).toBe(key);
        const windows = makeWindows(protocol, tokens);
        expect(countScored(windows)).toBe((value as { tokens_scored: number }).tokens_scored);
        const positions = scoredPositions(windows);
        expect(new Set(positions).size).toBe(positions.length);
      });
    }
  }
});

describe('window math', () => {
  it('chunks: full windows only, each scoring N-1', () => {
    expect(makeWindows({ kind: 'chunks', window: 4, keepLast: false }, 10)).toEqual([
      { start: 0, length: 4, firstTarget: 1 },
      { start: 4, length: 4, firstTarget: 1 },
    ]);
  });

  it('chunks keep_last: a last window of ≥ 2 tokens is kept, 1 token is not', () => {
    expect(makeWindows({ kind: 'chunks', window: 4, keepLast: true }, 10).at(-1)).toEqual({ start: 8, length: 2, firstTarget: 1 });
    expect(makeWindows({ kind: 'chunks', window: 4, keepLast: true }, 9).at(-1)).toEqual({ start: 4, length: 4, firstTarget: 1 });
  });

  it('stride: first window scores N-1, later ones the tokens past the previous end', () => {
    expect(makeWindows({ kind: 'stride', window: 4, stride: 2 }, 9)).toEqual([
      { start: 0, length: 4, firstTarget: 1 },
      { start: 2, length: 4, firstTarget: 2 },
      { start: 4, length: 4, firstTarget: 2 },
      { start: 6, length: 3, firstTarget: 2 },
    ]);
    // Every token but the first is scored exactly once.
    expect(scoredPositions(makeWindows({ kind: 'stride', window: 4, stride: 2 }, 9))).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('stride = window: the first token of each later window has no context and is not scored', () => {
    const windows = makeWindows({ kind: 'stride', window: 4, stride: 4 }, 9);
    expect(scoredPositions(windows)).toEqual([1, 2, 3, 5, 6, 7]);
  });

  it('a stream shorter than the window', () => {
    expect(makeWindows({ kind: 'chunks', window: 512, keepLast: false }, 300)).toEqual([]);
    expect(countScored(makeWindows({ kind: 'chunks', window: 512, keepLast: true }, 300))).toBe(299);
    expect(countScored(makeWindows({ kind: 'stride', window: 512, stride: 256 }, 300))).toBe(299);
  });

  it('rejects a stride larger than the window and non-positive sizes', () => {
    expect(() => makeWindows({ kind: 'stride', window: 4, stride: 5 }, 10)).toThrow(/larger than the window/);
    expect(() => makeWindows({ kind: 'stride', window: 4, stride: 0 }, 10)).toThrow(/stride/);
    expect(() => makeWindows({ kind: 'chunks', window: 0, keepLast: false }, 10)).toThrow(/window/);
  });

  it('batches group consecutive windows of equal length, at most B each', () => {
    const windows = makeWindows({ kind: 'chunks', window: 4, keepLast: true }, 23);
    const batches = batchWindows(windows, 2);
    expect(batches.map((b) => b.map((w) => w.length))).toEqual([[4, 4], [4, 4], [4], [3]]);
    expect(batches.flat()).toEqual(windows);
  });
});
