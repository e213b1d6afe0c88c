// TextTokenizer against transformers' reference counts and ids, its fast BPE against the library.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ConfigError, LlmoptError } from '../src/errors.js';
import { FastBpe, TextTokenizer } from '../src/model/tokenizer.js';

const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');
const modelDir = path.join(shared, 'models/stories260K');
const perplexityRef = JSON.parse(fs.readFileSync(path.join(shared, 'references/stories260K-perplexity.json'), 'utf8')) as Record<
  string,
  { tokens: number; first_ids: number[] }
>;
const readText = (name: string) => fs.readFileSync(path.join(shared, 'data', name), 'utf8');

let tok: TextTokenizer;
let tmp: string;
beforeAll(async () => {
  tok = await TextTokenizer.load(modelDir);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-tok-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('stories260K tokenizer', () => {
  test('special tokens and vocabulary', () => {
    expect([tok.bosTokenId, tok.eosTokenId, tok.vocabSize]).toEqual([1, 2, 512]);
    expect(Array.from(tok.encode('Once upon a time'))).toEqual([1, 403, 407, 261, 378]);
    expect(Array.from(tok.encode('Once upon a time', { addSpecialTokens: false }))).toEqual([403, 407, 261, 378]);
    expect(tok.decode([1, 403, 407, 261, 378], { skipSpecialTokens: true })).toBe('Once upon a time');
  });

  test('tinystories-valid.txt: 297770 tokens and the first ids, as transformers; fast enough', () => {
    const text = readText('tinystories-valid.txt');
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    console.log(`encode tinystories-valid.txt (${text.length} chars): ${ms.toFixed(0)} ms`);
    const ref = perplexityRef['data/tinystories-valid.txt']!;
    expect(ids.length).toBe(ref.tokens);
    expect(Array.from(ids.subarray(0, ref.first_ids.length))).toEqual(ref.first_ids);
    expect(ms).toBeLessThan(5000);
  });

  test('wikitext2-test.raw, first 200000 chars: 125500 tokens and the first ids', () => {
    const ids = tok.encode(readText('wikitext2-test.raw').slice(0, 200000));
    const ref = perplexityRef['data/wikitext2-test.raw (first 200000 characters)']!;
    expect(ids.length).toBe(ref.tokens);
    expect(Array.from(ids.subarray(0, ref.first_ids.length))).toEqual(ref.first_ids);
  });

  test('fast BPE gives the library\'s ids exactly (English, Unicode with byte fallback, repeats)', () => {
    const json = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer.json'), 'utf8'));
    const cfg = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer_config.json'), 'utf8'));
    const lib = new Tokenizer(json, cfg);
    const texts = [
      readText('tiny-shakespeare.txt').slice(0, 40000),
      'héllo wörld 日本語 🤖🤖 ∑∫ aaaaaaaaa  bbbb\n\n\tx — “quoted” ' .repeat(20),
      'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
      '',
      ' ',
    ];
    for (const text of texts) expect(Array.from(tok.encode(text))).toEqual(lib.encode(text).ids);
  });
});

describe('FastBpe', () => {
  test('lowest rank first, ties to the leftmost pair', () => {
    const pairOnly = new FastBpe([['a', 'a']]);
    expect(pairOnly.bpe('aaa')).toEqual(['aa', 'a']); // the leftmost of two equal-rank pairs merges first
    const bpe = new FastBpe([['a', 'a'], ['b', 'c'], ['aa', 'a']]);
    expect(bpe.bpe('aaa')).toEqual(['aaa']);
    expect(bpe.bpe('aaaa')).toEqual(['aa', 'aa']); // (a,a) rank 0 beats (aa,a) rank 2
    expect(bpe.bpe('abca')).toEqual(['a', 'bc', 'a']);
    expect(bpe.bpe('x')).toEqual(['x']);
  });
});

describe('errors', () => {
  test('missing tokenizer.json', async () => {
    await expect(TextTokenizer.load(tmp)).rejects.toThrow(LlmoptError);
    await expect(TextTokenizer.load(tmp)).rejects.toThrow(/tokenizer\.json: not found/);
  });

  test('invalid JSON and a JSON that is not a tokenizer', async () => {
    const bad = path.join(tmp, 'bad');
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, 'tokenizer.json'), '{"model": ');
    await expect(TextTokenizer.load(bad)).rejects.toThrow(ConfigError);
    fs.writeFileSync(path.join(bad, 'tokenizer.json'), '[1, 2]');
    await expect(TextTokenizer.load(bad)).rejects.toThrow(/not a tokenizer\.json/);
    fs.writeFileSync(path.join(bad, 'tokenizer.json'), '{"model": {"type": "NoSuchModel"}}');
    await expect(TextTokenizer.load(bad)).rejects.toThrow(LlmoptError);
  });
});
