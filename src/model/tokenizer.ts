// Text ↔ token ids through a checkpoint's tokenizer.json, with @huggingface/tokenizers.
//
// encode() adds the post-processor's special tokens (BOS for Llama), as transformers'
// `tokenizer(text)` does.
//
// Speed: the library's BPE merges a word with a heap of node objects and looks every pair up by
// JSON.stringify. SentencePiece-style tokenizers (no pre-tokenizer) hand it the whole text as ONE
// word, so a 600 KB file takes seconds. For plain BPE models we install an equivalent merge loop
// (same order: lowest merge rank first, ties to the leftmost pair — exactly the library's
// rank + position/length score) on typed arrays with a nested-Map pair lookup. The tests check its
// ids against the library and against transformers' token counts.

import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { LlmoptError } from '../errors.js';
import { readJsonFile } from '../io/checkpoint.js';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';

export class TextTokenizer {
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  /** One more than the largest token id (added tokens included). */
  readonly vocabSize: number;

  private constructor(
    private readonly tok: Tokenizer,
    config: Record<string, unknown>,
    readonly file: string,
  ) {
    this.bosTokenId = this.specialTokenId(config.bos_token);
    this.eosTokenId = this.specialTokenId(config.eos_token);
    let max = -1;
    for (const id of tok.get_vocab(true).values()) if (id > max) max = id;
    this.vocabSize = max + 1;
  }

  /** Loads `dir`/tokenizer.json (required) and `dir`/tokenizer_config.json (optional). */
  static async load(dir: string): Promise<TextTokenizer> {
    const file = path.join(dir, TOKENIZER_FILE);
    if (!fs.existsSync(file)) throw new LlmoptError(`${file}: not found (the model folder needs a tokenizer.json to tokenize text)`);
    const json = readJsonFile(file);
    if (typeof json !== 'object' || json === null || Array.isArray(json) || !('model' in json)) {
      throw new LlmoptError(`${file}: not a tokenizer.json (expected an object with a "model")`);
    }
    const configFile = path.join(dir, TOKENIZER_CONFIG_FILE);
    const configJson = fs.existsSync(configFile) ? readJsonFile(configFile) : {};
    const config = typeof configJson === 'object' && configJson !== null && !Array.isArray(configJson) ? (configJson as Record<string, unknown>) : {};
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(json, config);
    } catch (e) {
      throw new LlmoptError(`${file}: cannot build the tokenizer: ${(e as Error).message}`);
    }
    installFastBpe(tok);
    return new TextTokenizer(tok, config, file);
  }

  /** Token ids of `text`, with the post-processor's special tokens (e.g. BOS) unless told not to. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Int32Array {
    return Int32Array.from(this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids);
  }

  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tok.decode(Array.from(ids), { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /** The token string of an id (undefined outside the vocabulary). */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  private specialTokenId(v: unknown): number | undefined {
    const content = typeof v === 'string' ? v : typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined;
    return content === undefined ? undefined : this.tok.token_to_id(content);
  }
}

/** Replaces a BPE model's bpe() by FastBpe when the model has no word suffixes (which it does not handle). */
function installFastBpe(tok: Tokenizer): void {
  // Duck-typed: the package's type declarations make the BPE class ambiguous (models and decoders both export one).
  const model = tok.model as unknown as {
    bpe?: unknown;
    merges?: unknown;
    bpe_ranks?: unknown;
    end_of_word_suffix?: string | null;
    continuing_subword_suffix?: string | null;
  } | null;
  if (model === null || typeof model.bpe !== 'function' || !(model.bpe_ranks instanceof Map) || !Array.isArray(model.merges)) return;
  if (model.end_of_word_suffix || model.continuing_subword_suffix) return;
  const merges = model.merges as unknown[];
  if (!merges.every((m) => Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string')) return;
  const fast = new FastBpe(merges as [string, string][]);
  model.bpe = (token: string) => fast.bpe(token);
}

/** Byte-pair merging equivalent to @huggingface/tokenizers' BPE.bpe (see the file comment). */
export class FastBpe {
  /** left token → right token → rank (a later duplicate merge overrides, as in the library's Map). */
  private readonly ranks = new Map<string, Map<string, number>>();
  private readonly cache = new Map<string, string[]>();
  private static readonly MAX_CACHED_LENGTH = 256;
  private static readonly CACHE_CAPACITY = 10000;

  constructor(merges: readonly (readonly [string, string])[]) {
    merges.forEach(([a, b], rank) => {
      let m = this.ranks.get(a);
      if (m === undefined) this.ranks.set(a, (m = new Map()));
      m.set(b, rank);
    });
  }

  bpe(token: string): string[] {
    if (token.length === 0) return [];
    const cached = this.cache.get(token);
    if (cached !== undefined) return cached;
    const result = this.merge(Array.from(token));
    if (token.length < FastBpe.MAX_CACHED_LENGTH) {
      if (this.cache.size >= FastBpe.CACHE_CAPACITY) this.cache.clear();
      this.cache.set(token, result);
    }
    return result;
  }

  private rank(a: string, b: string): number {
    return this.ranks.get(a)?.get(b) ?? -1;
  }

  private merge(word: string[]): string[] {
    const n = word.length;
    if (n < 2) return word;
    const sym = word;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    // Bumped whenever sym[i] or next[i] changes: heap entries carry the version they were made at.
    const version = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new PairHeap();
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rank(sym[i]!, sym[i + 1]!);
      if (r >= 0) heap.push(r, i, 0);
    }
    while (heap.size > 0) {
      const i = heap.topPos();
      const ver = heap.topVersion();
      heap.pop();
      if (!alive[i] || version[i] !== ver) continue;
      const j = next[i]!;
      if (j < 0) continue;
      sym[i] = sym[i]! + sym[j]!;
      alive[j] = 0;
      const k = next[j]!;
      next[i] = k;
      if (k >= 0) prev[k] = i;
      version[i]++;
      if (k >= 0) {
        const r = this.rank(sym[i]!, sym[k]!);
        if (r >= 0) heap.push(r, i, version[i]!);
      }
      const p = prev[i]!;
      if (p >= 0) {
        version[p]++;
        const r = this.rank(sym[p]!, sym[i]!);
        if (r >= 0) heap.push(r, p, version[p]!);
      }
    }
    const out: string[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(sym[i]!);
    return out;
  }
}

/** Binary min-heap of (rank, position, version), ordered by rank then position. */
class PairHeap {
  private rank = new Int32Array(64);
  private pos = new Int32Array(64);
  private ver = new Int32Array(64);
  size = 0;

  push(rank: number, pos: number, ver: number): void {
    if (this.size === this.rank.length) this.grow();
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(rank, pos, this.rank[parent]!, this.pos[parent]!)) break;
      this.set(i, this.rank[parent]!, this.pos[parent]!, this.ver[parent]!);
      i = parent;
    }
    this.set(i, rank, pos, ver);
  }

  topPos(): number {
    return this.pos[0]!;
  }

  topVersion(): number {
    return this.ver[0]!;
  }

  pop(): void {
    const last = --this.size;
    if (last === 0) return;
    const rank = this.rank[last]!;
    const pos = this.pos[last]!;
    const ver = this.ver[last]!;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= last) break;
      const r = l + 1;
      const c = r < last && this.less(this.rank[r]!, this.pos[r]!, this.rank[l]!, this.pos[l]!) ? r : l;
      if (!this.less(this.rank[c]!, this.pos[c]!, rank, pos)) break;
      this.set(i, this.rank[c]!, this.pos[c]!, this.ver[c]!);
      i = c;
    }
    this.set(i, rank, pos, ver);
  }

  private less(r1: number, p1: number, r2: number, p2: number): boolean {
    return r1 < r2 || (r1 === r2 && p1 < p2);
  }

  private set(i: number, rank: number, pos: number, ver: number): void {
    this.rank[i] = rank;
    this.pos[i] = pos;
    this.ver[i] = ver;
  }

  private grow(): void {
    const n = this.rank.length * 2;
    const grow = (a: Int32Array) => {
      const b = new Int32Array(n);
      b.set(a);
      return b;
    };
    this.rank = grow(this.rank);
    this.pos = grow(this.pos);
    this.ver = grow(this.ver);
  }
}
