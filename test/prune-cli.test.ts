// `llmopt prune` through the built CLI (test/global-setup.ts builds dist/): bad input exits 1 with
// one clear line and writes nothing; usage errors exit 2; a run writes a loadable checkpoint;
// --dry-run writes nothing; --json prints one object; existing output needs --force.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(tmpdir(), 'llmopt-prune-cli-'));
});
afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function llmopt(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/llmopt.js'), ...args], {
    cwd: tmp,
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 1, one "error: …" line matching `message`, and no output folder. */
function expectBadInput(args: string[], message: RegExp): void {
  const out = path.join(tmp, 'never');
  const r = llmopt('prune', ...args, '-o', out);
  expect(r.code, r.stderr).toBe(1);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^error: /);
  expect(r.stderr).toMatch(message);
  expect(fs.existsSync(out)).toBe(false);
  expect(fs.readdirSync(tmp).filter((f) => f.startsWith('.never'))).toEqual([]);
}

describe('bad input → exit 1, one line, nothing written', () => {
  test('ratios outside [0, 1)', () => {
    expectBadInput([stories, '--mlp', '1'], /--mlp 1: a ratio must be in \[0, 1\)/);
    expectBadInput([stories, '--kv-heads=-0.25'], /--kv-heads -0\.25: a ratio must be in \[0, 1\)/);
    expectBadInput([stories, '--heads', 'half'], /--heads "half": expected a ratio/);
  });

  test('pruning that leaves zero heads, channels or layers', () => {
    expectBadInput([stories, '--layers', '5'], /--layers 5: the model has 5 layers, so at most 4 can be removed/);
    expectBadInput([stories, '--kv-heads', '0.9'], /removes 4 of 4 KV groups, leaving none/);
    expectBadInput([stories, '--mlp', '0.99'], /--mlp 0\.99: keeps 1\.72 of 172 MLP channels, which rounded to a multiple of 8: 0, leaving none/);
  });

  test('a head ratio that cannot keep KV groups uniform names the nearest valid ratios', () => {
    expectBadInput([stories, '--heads', '0.25'], /--heads 0\.25: 8 query heads in 4 KV groups of 2; .*nearest valid ratios 0 and 0\.5/);
  });

  test('Llama: a head count transformers would refuse (6 heads, hidden 64) names the counts that work', () => {
    expectBadInput([stories, '--kv-heads', '0.25'], /keeps 6 query heads, which do not divide hidden_size 64.*Head counts that work: 4 \(--heads 0\.5 or --kv-heads 0\.5\).*--allow-indivisible-heads/);
  });

  test('an already-quantized model, an unsupported architecture', () => {
    const q = path.join(tmp, 'quantized');
    fs.cpSync(stories, q, { recursive: true });
    const cfg = JSON.parse(fs.readFileSync(path.join(q, 'config.json'), 'utf8'));
    cfg.quantization_config = { quant_method: 'compressed-tensors', format: 'float-quantized' };
    fs.rmSync(path.join(q, 'config.json'), { force: true });
    fs.writeFileSync(path.join(q, 'config.json'), JSON.stringify(cfg));
    expectBadInput([q, '--mlp', '0.25'], /already quantized \(config\.json has quantization_config\)/);
    expectBadInput([path.join(root, 'test/fixtures/arch/gpt2'), '--mlp', '0.25'], /prune supports llama, mistral, qwen2, qwen3; model_type "gpt2" is not supported/);
  });

  test('activation importance without a tokenizer says what to use instead', () => {
    expectBadInput([path.join(root, 'test/fixtures/arch/llama'), '--mlp', '0.25'], /no tokenizer\.json; activation importance .*\(use --importance magnitude or random without one\)/);
  });
});

describe('usage → exit 2', () => {
  test('nothing to prune; no output folder', () => {
    const r = llmopt('prune', stories, '-o', path.join(tmp, 'x'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/nothing to prune/);
    const r2 = llmopt('prune', stories, '--mlp', '0.25');
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/give -o <dir>, or --dry-run/);
  });
});

describe('runs', () => {
  test('--dry-run --json prints the plan and writes nothing', () => {
    const r = llmopt('prune', stories, '--structured', '--kv-heads', '25%', '--allow-indivisible-heads', '--layers', '1', '--importance', 'random', '--seed', '3', '--dry-run', '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ dry_run: true, output: null, plan: { kv_groups: { from: 4, to: 3 }, layers: { from: 5, to: 4 } } });
    expect(report.settings).toMatchObject({ allow_indivisible_heads: true, importance: 'random', seed: 3, device: null });
    expect(report.importance).toMatchObject({ method: 'random', channels: null, hidden: null });
    expect(report.importance.layers).toHaveLength(5);
    expect(report.importance.kv_groups[0]).toHaveLength(4);
    expect(report.parameters.after).toBeLessThan(report.parameters.before);
    expect(report.removed_layers).toHaveLength(1);
    expect(fs.readdirSync(tmp).filter((f) => !['quantized'].includes(f))).toEqual([]);
  });

  test('writes a checkpoint; refuses to replace it without --force', () => {
    const out = path.join(tmp, 'pruned');
    const r = llmopt('prune', stories, '--heads', '0.5', '--mlp', '0.5', '--importance', 'magnitude', '-o', out);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/query heads\s+8 → 4 per layer \(1 per KV group\)/);
    expect(r.stdout).toMatch(/MLP channels\s+172 → 88 per layer/);
    expect(r.stdout).toMatch(/rounded: --mlp 0\.5: 86 of 172 MLP channels kept, rounded to a multiple of 8: 88/);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ num_attention_heads: 4, num_key_value_heads: 4, head_dim: 8, intermediate_size: 88, num_hidden_layers: 5 });
    const inspect = llmopt('inspect', out, '--json');
    expect(inspect.code, inspect.stderr).toBe(0);

    const again = llmopt('prune', stories, '--mlp', '0.25', '--importance', 'magnitude', '-o', out);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already exists; refusing to replace it \(use --force to overwrite\)/);
    const forced = llmopt('prune', stories, '--mlp', '0.25', '--importance', 'magnitude', '-o', out, '--force', '--json');
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout).plan.mlp_channels.to).toBe(128);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).intermediate_size).toBe(128);
  });
});
