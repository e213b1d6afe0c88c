// Every bad input ends with exit 1 and one line on stderr naming the file, tensor or flag — no stack
// trace, nothing written. Usage errors exit 2, failed gates 3. Runs the built CLI (test/global-setup.ts).

import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');
const validText = path.join(shared, 'data/tinystories-valid.txt');

let tmp: string;
let workDir: string;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function llmopt(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/llmopt.js'), ...args], {
    cwd: workDir,
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// --- safetensors surgery (test-local: a tiny writer, so the corruptions are exact) ------------------

interface RawTensor {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function readSafetensors(file: string): { header: Record<string, RawTensor | Record<string, string>>; data: Buffer } {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), data: bytes.subarray(8 + n) };
}

function writeSafetensors(file: string, header: object, data: Buffer): void {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(file, Buffer.concat([len, json, data]));
}

/** A copy of stories260K in tmp/<name>, then `corrupt` applied to it. */
function brokenModel(name: string, corrupt: (dir: string) => void): string {
  const dir = path.join(tmp, name);
  cpSync(stories, dir, { recursive: true });
  corrupt(dir);
  return dir;
}

function editHeader(dir: string, edit: (h: Record<string, RawTensor>) => void): void {
  const file = path.join(dir, 'model.safetensors');
  const { header, data } = readSafetensors(file);
  edit(header as Record<string, RawTensor>);
  writeSafetensors(file, header, data);
}

/** Removes a tensor and its bytes, repacking the rest, so the file stays valid safetensors. */
function deleteTensor(dir: string, victim: string): void {
  const file = path.join(dir, 'model.safetensors');
  const { header, data } = readSafetensors(file);
  const out: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') {
      out[name] = t;
      continue;
    }
    if (name === victim) continue;
    const { dtype, shape, data_offsets: [b, e] } = t as RawTensor;
    chunks.push(data.subarray(b, e));
    out[name] = { dtype, shape, data_offsets: [offset, offset + e - b] };
    offset += e - b;
  }
  writeSafetensors(file, out, Buffer.concat(chunks));
}

/** Every file under dir with its size and mtime, to prove a command wrote nothing. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const s = statSync(p);
        out.push(`${path.relative(tmp, p)} ${s.size} ${s.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out.sort();
}

const MODEL_TYPE_BERT = 'bert';

beforeAll(() => {
  tmp = mkdtempSync(path.join(tmpdir(), 'llmopt-cli-errors-'));
  workDir = path.join(tmp, 'cwd');
  mkdirSync(workDir);

  brokenModel('truncated', (d) => {
    const f = path.join(d, 'model.safetensors');
    writeFileSync(f, readFileSync(f).subarray(0, 500_000));
  });
  brokenModel('header-past-eof', (d) => {
    const f = path.join(d, 'model.safetensors');
    const bytes = readFileSync(f);
    bytes.writeBigUInt64LE(BigInt(bytes.length + 1000), 0);
    writeFileSync(f, bytes);
  });
  // The embedding grows by one row (shape and byte length still agree) over the next tensor's bytes:
  // no gap, no size mismatch, only the overlap.
  brokenModel('overlap', (d) =>
    editHeader(d, (h) => {
      h['model.embed_tokens.weight'] = { dtype: 'F32', shape: [513, 64], data_offsets: [0, 513 * 64 * 4] };
    }),
  );
  brokenModel('unknown-dtype', (d) =>
    editHeader(d, (h) => {
      h['model.layers.0.input_layernorm.weight']!.dtype = 'F33';
    }),
  );
  brokenModel('shape-mismatch', (d) =>
    editHeader(d, (h) => {
      h['model.layers.0.mlp.gate_proj.weight']!.shape = [172, 65];
    }),
  );
  brokenModel('missing-tensor', (d) => deleteTensor(d, 'model.layers.3.self_attn.k_proj.weight'));
  brokenModel('bad-json', (d) => writeFileSync(path.join(d, 'config.json'), '{"model_type": "llama", '));
  brokenModel('bert', (d) => {
    const cfg = JSON.parse(readFileSync(path.join(d, 'config.json'), 'utf8'));
    writeFileSync(path.join(d, 'config.json'), JSON.stringify({ ...cfg, model_type: MODEL_TYPE_BERT, architectures: ['BertModel'] }));
  });
  brokenModel('no-config', (d) => rmSync(path.join(d, 'config.json')));
  // Same vocab size, different ids: two tokens of the opening words swap ids.
  brokenModel('other-tokenizer', (d) => {
    const file = path.join(d, 'tokenizer.json');
    const tok = JSON.parse(readFileSync(file, 'utf8'));
    const vocab = tok.model.vocab as Record<string, number>;
    [vocab['.'], vocab['p']] = [vocab['p']!, vocab['.']!];
    writeFileSync(file, JSON.stringify(tok));
  });
  brokenModel('no-tokenizer', (d) => rmSync(path.join(d, 'tokenizer.json')));
  writeFileSync(path.join(tmp, 'empty.txt'), '');
  writeFileSync(path.join(tmp, 'short.txt'), 'Once upon a time there was a cat. '.repeat(40));
});

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Runs llmopt and checks the one-line, exit-1, nothing-written contract; returns the line. */
function expectInputError(args: string[], mentions: RegExp): string {
  const before = snapshot(tmp);
  const r = llmopt(...args);
  const lines = r.stderr.split('\n').filter((l) => l.length > 0);
  expect({ code: r.code, lines, stdout: r.stdout }).toEqual({ code: 1, lines: [expect.stringMatching(/^error: /)], stdout: '' });
  expect(lines[0]).toMatch(mentions);
  expect(lines[0]).not.toMatch(/\n|\s+at .+:\d+:\d+/);
  expect(snapshot(tmp)).toEqual(before);
  return lines[0]!;
}

const t = (name: string): string => path.join(tmp, name);

describe('broken checkpoints → exit 1, one line naming the file or tensor', () => {
  const evalArgs = (model: string): string[] => ['eval', model, '--data', validText, '--max-tokens', '200'];
  const cases: [string, string, RegExp][] = [
    ['missing path', 'does-not-exist', /does-not-exist/],
    ['folder without config.json', 'no-config', /no-config.*config\.json|config\.json.*no-config/],
    ['invalid config JSON', 'bad-json', /bad-json.*config\.json/],
    ['unsupported model_type', 'bert', /bert/],
    ['truncated safetensors', 'truncated', /truncated.*model\.safetensors/],
    ['header length past end of file', 'header-past-eof', /header-past-eof.*model\.safetensors/],
    ['overlapping offsets', 'overlap', /overlap\/model\.safetensors.*(model\.embed_tokens\.weight.*overlap|overlap.*model\.embed_tokens\.weight)/],
    ['unknown dtype', 'unknown-dtype', /model\.layers\.0\.input_layernorm\.weight.*F33|F33.*model\.layers\.0\.input_layernorm\.weight/],
    ['shape/byte-length mismatch', 'shape-mismatch', /model\.layers\.0\.mlp\.gate_proj\.weight/],
    ['a tensor the config needs is missing', 'missing-tensor', /model\.layers\.3\.self_attn\.k_proj\.weight/],
  ];
  for (const [what, name, mentions] of cases) {
    it(`eval: ${what}`, () => {
      expectInputError(evalArgs(t(name)), mentions);
    });
  }
  for (const [what, name, mentions] of cases.filter(([w]) => w !== 'a tensor the config needs is missing')) {
    it(`inspect: ${what}`, () => {
      expectInputError(['inspect', t(name)], mentions);
    });
  }
});

describe('bad data and flags → exit 1, one line naming the flag or file', () => {
  const evalWith = (...flags: string[]): string[] => ['eval', stories, '--data', validText, '--max-tokens', '300', ...flags];
  it('missing data file', () => expectInputError(['eval', stories, '--data', t('nope.txt')], /--data .*nope\.txt/));
  it('data path is a folder', () => expectInputError(['eval', stories, '--data', tmp], /--data .*not a file/));
  it('empty data file', () => expectInputError(['eval', stories, '--data', t('empty.txt')], /empty\.txt.*no text to score/));
  it('--seq-len 0', () => expectInputError(evalWith('--seq-len', '0'), /--seq-len "0"/));
  it('--seq-len not an integer', () => expectInputError(evalWith('--seq-len', '12.5'), /--seq-len "12\.5"/));
  it('--seq-len past the context', () => expectInputError(evalWith('--seq-len', '1024'), /--seq-len 1024 .*max_position_embeddings 512/));
  it('--stride 0', () => expectInputError(evalWith('--stride', '0'), /--stride "0"/));
  it('--stride larger than the window', () => expectInputError(evalWith('--seq-len', '128', '--stride', '129'), /--stride 129 .*--seq-len 128/));
  it('--stride larger than the default window', () => expectInputError(evalWith('--stride', '600'), /--stride 600 .*512/));
  it('--max-tokens invalid', () => expectInputError(['eval', stories, '--data', validText, '--max-tokens', '-5'], /--max-tokens "-5"/));
  it('--max-tokens 1', () => expectInputError(['eval', stories, '--data', validText, '--max-tokens', '1'], /--max-tokens "1"/));
  it('--batch invalid', () => expectInputError(evalWith('--batch', 'many'), /--batch "many"/));
  it('unknown --device', () => expectInputError(evalWith('--device', 'tpu'), /--device "tpu"/));
  it.skipIf(existsSync('/dev/nvidiactl'))('--device cuda without a GPU', () => expectInputError(evalWith('--device', 'cuda'), /^error: --device cuda: CUDA unavailable/));
  it('data shorter than one window', () => expectInputError(['eval', stories, '--data', t('short.txt')], /short\.txt: \d+ tokens are fewer than one 512-token window/));
  it('--baseline with a broken checkpoint', () => expectInputError(evalWith('--baseline', t('bert')), /bert/));
  it('--baseline with another vocabulary', () =>
    expectInputError(evalWith('--baseline', path.join(root, 'test/fixtures/arch/llama')), /--baseline .*llama: vocab size 96 differs from the model's 512/));
  it('--baseline whose tokenizer gives other ids', () =>
    expectInputError(evalWith('--baseline', t('other-tokenizer')), /--baseline .*other-tokenizer: its tokenizer gives different ids/));
  it('--baseline without a tokenizer', () => expectInputError(evalWith('--baseline', t('no-tokenizer')), /no-tokenizer: no tokenizer\.json/));
  it('a model without a tokenizer', () => expectInputError(['eval', t('no-tokenizer'), '--data', validText], /no-tokenizer: no tokenizer\.json/));
});

describe('usage, gates, --json', () => {
  const quick = ['eval', stories, '--data', validText, '--max-tokens', '1000', '--seq-len', '128'];

  it('passing gates exit 0 and print PASS', () => {
    const r = llmopt(...quick, '--gate', 'ppl<=100', '--gate', 'nll>0');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/gate PASS {2}ppl <= 100 {2}\(ppl = \d/);
    expect(r.stdout).toMatch(/gate PASS {2}nll > 0/);
  });

  it('a failing gate exits 3, and every gate is still evaluated', () => {
    const r = llmopt(...quick, '--gate', 'ppl<1', '--gate', 'ppl<=100');
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/gate FAIL {2}ppl < 1 /);
    expect(r.stdout).toMatch(/gate PASS {2}ppl <= 100 /);
  });

  it('a malformed gate exits 2 naming the expression and the metrics', () => {
    const r = llmopt(...quick, '--gate', 'ppl=>5');
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^error: bad --gate "ppl=>5": .*ppl, nll, ppl_ratio, kld_mean, kld_p99, top1, tokens_per_s$/);
  });

  it('a gate on a metric not computed exits 2', () => {
    const r = llmopt(...quick, '--gate', 'kld_mean<0.01');
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('error: --gate "kld_mean<0.01": kld_mean compares against a baseline; add --baseline <model>');
  });

  it('commander usage errors exit 2', () => {
    expect(llmopt('eval', stories).code).toBe(2); // --data missing
    expect(llmopt('eval', stories, '--data', validText, '--frobnicate').code).toBe(2);
    expect(llmopt('explode').code).toBe(2);
    expect(llmopt('eval', stories, '--data', validText, '--stride', '64', '--keep-last').code).toBe(2);
  });

  it('--help and --version exit 0', () => {
    expect(llmopt('--help').code).toBe(0);
    expect(llmopt('eval', '--help').stdout).toMatch(/--gate <expr>/);
    expect(llmopt('--version').stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('--json prints one parseable object with protocol, metrics and gates', () => {
    const r = llmopt(...quick, '--stride', '64', '--json', '--gate', 'ppl<100');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.protocol).toMatchObject({ name: 'stride128_64', window: 128, stride: 64, tokens_scored: 999, dtype: 'f32', device: 'cpu' });
    expect(report.data.tokens_used).toBe(1000);
    expect(report.data.tokens_in_file).toBe(297770);
    expect(report.metrics.ppl).toBeGreaterThan(1);
    expect(report.metrics.ppl).toBeLessThan(100);
    expect(report.metrics.nll).toBeCloseTo(Math.log(report.metrics.ppl), 12);
    expect(report.metrics.tokens_per_s).toBeGreaterThan(0);
    expect(report.gates).toEqual([expect.objectContaining({ metric: 'ppl', op: '<', threshold: 100, pass: true })]);
    expect(report.passed).toBe(true);
  });

  it('inspect --json parses and counts 260,032 parameters', () => {
    const r = llmopt('inspect', stories, '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).parameters.total).toBe(260032);
  });
});
