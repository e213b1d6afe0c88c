// llmopt generate on the cpu (CI has no GPU): greedy from BOS reproduces llama2.c's reference for
// stories260K through the CLI, the streamed text equals the JSON text, seeded sampling is
// reproducible, top-k 1 is greedy; the host token choice and the incremental detokenizer.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { chooseToken, TextStream, uniform01 } from '../src/model/generate.js';
import { TextTokenizer } from '../src/model/tokenizer.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');
const reference = JSON.parse(readFileSync(path.join(shared, 'references/stories260K-greedy.json'), 'utf8')) as {
  greedy_from_bos_200_steps: { token_ids: number[]; text: string };
};

function llmopt(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/llmopt.js'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

interface GenerateJson {
  device: string;
  dtype: string;
  prompt_token_ids: number[];
  token_ids: number[];
  text: string;
  stop_reason: string;
  sampling: { mode: string };
}

function generateJson(...flags: string[]): GenerateJson {
  const r = llmopt('generate', stories, '--device', 'cpu', '--json', ...flags);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as GenerateJson;
}

describe('llmopt generate (cpu)', () => {
  let greedy: GenerateJson;
  beforeAll(() => {
    greedy = generateJson('-n', '200');
  });

  it('greedy from BOS reproduces the llama2.c reference: 200 ids and the text', () => {
    const want = reference.greedy_from_bos_200_steps;
    expect(greedy.prompt_token_ids).toEqual([1]);
    expect(greedy.token_ids).toEqual(want.token_ids.slice(1));
    expect(greedy.text).toBe(want.text);
    expect(greedy).toMatchObject({ device: 'cpu', dtype: 'fp32', stop_reason: 'length', sampling: { mode: 'greedy' } });
  });

  it('streams the same text it reports, after the prompt', () => {
    const r = llmopt('generate', stories, '--device', 'cpu', '--prompt', 'Once upon a time', '-n', '30');
    expect(r.code, r.stderr).toBe(0);
    const json = generateJson('--prompt', 'Once upon a time', '-n', '30');
    expect(r.stdout).toBe(`Once upon a time${json.text}\n`);
    expect(json.text.startsWith(',')).toBe(true); // the reference continues "Once upon a time, there was…"
    expect(r.stderr).toMatch(/\[30 tokens \(length\) on cpu fp32; first token [\d.]+ ms, [\d.]+ tokens\/s after the first\]/);
  });

  it('seeded sampling is reproducible, and another seed gives another text', () => {
    const a = generateJson('-n', '60', '--temperature', '1', '--seed', '11');
    const b = generateJson('-n', '60', '--temperature', '1', '--seed', '11');
    const c = generateJson('-n', '60', '--temperature', '1', '--seed', '12');
    expect(a.sampling.mode).toBe('sample');
    expect(b.token_ids).toEqual(a.token_ids);
    expect(c.token_ids).not.toEqual(a.token_ids);
    expect(a.token_ids).not.toEqual(greedy.token_ids.slice(0, a.token_ids.length));
  });

  it('top-k 1 is greedy at any temperature', () => {
    const k1 = generateJson('-n', '50', '--temperature', '0.9', '--top-k', '1', '--seed', '3');
    expect(k1.token_ids).toEqual(greedy.token_ids.slice(0, 50));
  });

  it('bad flags: exit 2 naming the flag; too many tokens: exit 1 naming the context', () => {
    expect(llmopt('generate', stories, '--temperature', '-1').stderr).toMatch(/--temperature "-1"/);
    expect(llmopt('generate', stories, '--top-k', '2.5').code).toBe(2);
    const long = llmopt('generate', stories, '--device', 'cpu', '-n', '600');
    expect(long.code).toBe(1);
    expect(long.stderr).toMatch(/-n 600: .*max_position_embeddings 512/);
  });
});

describe('token choice on the host', () => {
  const logits = Float32Array.from([0.5, 3, -1, 3, 2.5, -Infinity, 1]);
  it('greedy picks the first maximum', () => {
    expect(chooseToken(logits, 0, 7, {}, 0, 0)).toBe(1);
    expect(chooseToken(logits, 0, 7, { temperature: 2, topK: 1 }, 5, 0)).toBe(1);
  });
  it('top-k keeps the tokens at or above the k-th largest logit, and the draws cover them', () => {
    const seen = new Set<number>();
    for (let step = 0; step < 400; step++) seen.add(chooseToken(logits, 0, 7, { temperature: 1, topK: 3, seed: 9 }, step, 0));
    expect([...seen].sort()).toEqual([1, 3, 4]);
    const all = new Set<number>();
    for (let step = 0; step < 2000; step++) all.add(chooseToken(logits, 0, 7, { temperature: 5, seed: 1 }, step, 2));
    expect(all.has(5)).toBe(false); // -inf never drawn
    expect(all.size).toBe(6);
  });
  it('uniform01 is a deterministic draw in [0, 1) that depends on seed, step and row', () => {
    const xs = [uniform01(0, 0, 0), uniform01(1, 0, 0), uniform01(0, 1, 0), uniform01(0, 0, 1)];
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
    expect(new Set(xs).size).toBe(4);
    expect(uniform01(7, 3, 2)).toBe(uniform01(7, 3, 2));
    let mean = 0;
    for (let i = 0; i < 10000; i++) mean += uniform01(42, i, 0) / 10000;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.02);
  });
});

describe('incremental detokenization', () => {
  it('byte-fallback tokens are held back until their UTF-8 character is complete', async () => {
    const tok = await TextTokenizer.load(stories);
    const text = 'Tom said "é😀 ok" to Lily.';
    const ids = tok.encode(text);
    const pieces: string[] = [];
    const stream = new TextStream(tok, ids.subarray(0, 1));
    for (const id of ids.subarray(1)) pieces.push(stream.push(id));
    pieces.push(stream.flush());
    expect(ids.some((id) => /^<0x[0-9A-F]{2}>$/.test(tok.idToToken(id) ?? ''))).toBe(true);
    expect(pieces.join('')).toBe(tok.decode(ids, { skipSpecialTokens: true }));
    expect(pieces.join('')).toBe(text);
    expect(pieces.some((p) => p.includes('\uFFFD'))).toBe(false);
    expect(pieces.filter((p) => p === '').length).toBeGreaterThanOrEqual(3); // the emoji's first 3 bytes
  });
});
