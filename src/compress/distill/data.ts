// Training text → one token stream → fixed-length windows in a seeded, resumable order.
//
// Stream: a text file (or a built-in set of src/compress/calibration.ts) is tokenized whole once,
// with the tokenizer's special tokens (BOS first for Llama), exactly as `llmopt eval` tokenizes its
// data; a JSONL file's "text" records are tokenized one by one (each with its own BOS) and
// concatenated in file order.
//
// Windows: a training example is L+1 consecutive tokens of the stream (the model reads the first L,
// and every one of those L positions is scored: against the teacher's distribution and, for the
// hard-label term, against the next token). Epoch e cuts the stream at offset o_e + k·L
// (k = 0, 1, … while the window fits) and visits those windows in a shuffled order; o_e ∈ [0, L)
// and the order (Fisher–Yates) both come from seededRandom(epochSeed(seed, e)), so every epoch
// sees other boundaries and another order, and the position in the data is just (epoch, cursor).

import fs from 'node:fs';
import { LlmoptError } from '../../errors.js';
import type { TextTokenizer } from '../../model/tokenizer.js';
import { seededRandom } from '../../random.js';
import { describeCalibrationSource, isBuiltInSource, readTextSource } from '../calibration.js';

export interface TokenStream {
  /** The built-in name or the resolved file path. */
  source: string;
  /** What the source is, for people ("Moby Dick (…)", or the path). */
  description: string;
  /** Bytes of the file the text came from (undefined for a built-in set). */
  file?: string;
  tokens: Int32Array;
  /** JSONL records used (undefined for plain text). */
  records?: number;
  /** The first characters of the text (or first records), to compare two tokenizers on. */
  sample: string;
}

const SAMPLE_CHARS = 20_000;

/** Reads and tokenizes `--data` (or another flag's source). Throws LlmoptError on a missing or empty source. */
export function loadTokenStream(source: string, tokenizer: TextTokenizer, flag = '--data'): TokenStream {
  if (!isBuiltInSource(source)) {
    const stat = fs.statSync(source, { throwIfNoEntry: false });
    if (stat && !stat.isFile()) throw new LlmoptError(`${flag} ${source}: not a file`);
  }
  const { text, records, resolved } = readTextSource(source, flag);
  const builtIn = isBuiltInSource(source);
  const base = { source: builtIn ? source : resolved, description: describeCalibrationSource(source), file: builtIn ? undefined : resolved };
  if (records !== undefined) {
    const parts = records.filter((r) => r.trim() !== '').map((r) => tokenizer.encode(r));
    if (parts.length === 0) throw new LlmoptError(`${flag} ${source}: no non-empty "text" record`);
    const tokens = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      tokens.set(p, at);
      at += p.length;
    }
    return { ...base, tokens, records: parts.length, sample: records.slice(0, 64).join('\n').slice(0, SAMPLE_CHARS) };
  }
  if (text!.trim() === '') throw new LlmoptError(`${flag} ${source}: the file is empty (no text to train on)`);
  return { ...base, tokens: tokenizer.encode(text!), sample: text!.slice(0, SAMPLE_CHARS) };
}

/** Where the sampler is: the epoch and the next window of that epoch's order. */
export interface SamplerState {
  epoch: number;
  cursor: number;
}

/** One micro-batch: ids [batch, seqLen] row-major and the next token of each position (hard labels). */
export interface MicroBatch {
  ids: Int32Array;
  targets: Int32Array;
}

/** A 32-bit seed per (seed, epoch): distinct epochs, distinct seeds, no correlated mulberry32 streams. */
export function epochSeed(seed: number, epoch: number): number {
  let h = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13) ^ Math.imul(epoch + 1, 0xc2b2ae35), 0x27d4eb2f) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export class WindowSampler {
  private orderEpoch = -1;
  private offset = 0;
  private order: Int32Array = new Int32Array(0);
  private state: SamplerState = { epoch: 0, cursor: 0 };

  constructor(
    private readonly tokens: Int32Array,
    readonly seqLen: number,
    readonly seed: number,
  ) {
    if (tokens.length < seqLen + 1) throw new RangeError(`${tokens.length} tokens are fewer than one window of ${seqLen + 1}`);
  }

  /** Windows in epoch 0 (every epoch has this many, or one fewer when its offset cuts the last). */
  static windowsPerEpoch(tokenCount: number, seqLen: number): number {
    return tokenCount < seqLen + 1 ? 0 : Math.floor((tokenCount - 1) / seqLen);
  }

  get position(): SamplerState {
    return { ...this.state };
  }

  /** Continues from a saved position (a checkpoint's). */
  seek(state: SamplerState): void {
    if (!Number.isSafeInteger(state.epoch) || state.epoch < 0 || !Number.isSafeInteger(state.cursor) || state.cursor < 0) {
      throw new RangeError(`bad sampler position ${JSON.stringify(state)}`);
    }
    this.prepare(state.epoch);
    if (state.cursor > this.order.length) throw new RangeError(`sampler cursor ${state.cursor} is past epoch ${state.epoch}'s ${this.order.length} windows`);
    this.state = { ...state };
  }

  /** The next `batch` windows as one micro-batch (crossing into the next epoch when one runs out). */
  next(batch: number): MicroBatch {
    const L = this.seqLen;
    const ids = new Int32Array(batch * L);
    const targets = new Int32Array(batch * L);
    for (let b = 0; b < batch; b++) {
      this.prepare(this.state.epoch);
      if (this.state.cursor >= this.order.length) {
        this.state = { epoch: this.state.epoch + 1, cursor: 0 };
        this.prepare(this.state.epoch);
      }
      const start = this.offset + this.order[this.state.cursor]! * L;
      this.state.cursor++;
      ids.set(this.tokens.subarray(start, start + L), b * L);
      targets.set(this.tokens.subarray(start + 1, start + L + 1), b * L);
    }
    return { ids, targets };
  }

  private prepare(epoch: number): void {
    if (epoch === this.orderEpoch) return;
    const L = this.seqLen;
    const random = seededRandom(epochSeed(this.seed, epoch));
    const maxOffset = Math.min(L - 1, this.tokens.length - (L + 1));
    this.offset = Math.floor(random() * (maxOffset + 1));
    const count = Math.floor((this.tokens.length - 1 - this.offset) / L);
    const order = new Int32Array(count);
    for (let i = 0; i < count; i++) order[i] = i;
    for (let i = count - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    this.order = order;
    this.orderEpoch = epoch;
  }
}
