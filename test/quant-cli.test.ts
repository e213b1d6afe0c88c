// `llmopt quantize` through the built CLI: bad input exits 1 with one clear line and writes nothing;
// usage errors exit 2; --json prints the report; --recipe files give the options and flags override
// them; every shipped recipe is valid.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { resolveScheme } from '../src/compress/quant/scheme.js';
import { loadRecipe, mergeOverRecipe } from '../src/pipeline/recipe.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');

let tmp: string;
let calib: string;
const fast = () => ['--calib', calib, '--calib-samples', '4', '--calib-seq-len', '64'];

function llmopt(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/llmopt.js'), ...args], {
    cwd: tmp,
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 1, one line on stderr matching `message`, no output folder and no temporary leftovers. */
function expectRefused(r: ReturnType<typeof llmopt>, message: RegExp, output?: string): void {
  expect(r.code, r.stderr).toBe(1);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(lines[0]).toMatch(message);
  if (output !== undefined) expect(fs.existsSync(path.join(tmp, output))).toBe(false);
  expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-quant-cli-'));
  calib = path.join(tmp, 'calib.txt');
  fs.writeFileSync(calib, fs.readFileSync(path.join(shared, 'data/tinystories-valid.txt'), 'utf8').slice(100_000, 130_000));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('llmopt quantize: bad input', () => {
  test('unknown scheme lists the schemes', () => {
    expectRefused(llmopt('quantize', stories, '--scheme', 'W5A5', '-o', 'out', ...fast()), /unknown scheme "W5A5"; choose one of FP8, FP8_DYNAMIC, W8A8, W8A16, W4A16/, 'out');
  });

  test('a group size that does not divide an input dim names the tensor and the dim', () => {
    expectRefused(
      llmopt('quantize', stories, '--scheme', 'W4A16', '-o', 'out', ...fast()),
      /--group-size 128 does not divide the input dim 64 of model\.layers\.0\.self_attn\.q_proj\.weight \[64, 64\]; use --group-size channel/,
      'out',
    );
    expectRefused(llmopt('quantize', stories, '--scheme', 'W4A16', '--group-size', '8', '-o', 'out', ...fast()), /input dim 172 of model\.layers\.0\.mlp\.down_proj\.weight/, 'out');
  });

  test('calibration text with too few tokens for one window', () => {
    const small = path.join(tmp, 'small.txt');
    fs.writeFileSync(small, 'Once upon a time there was a cat.');
    expectRefused(llmopt('quantize', stories, '--scheme', 'W8A8', '-o', 'out', '--calib', small, '--calib-seq-len', '64'), /small\.txt has \d+ tokens, fewer than one window of 64/, 'out');
  });

  test('an existing output needs --force; an already-quantized model is refused', () => {
    const first = llmopt('quantize', stories, '--scheme', 'W8A8', '-o', 'w8a8', '--json', ...fast());
    expect(first.code, first.stderr).toBe(0);
    const report = JSON.parse(first.stdout) as { scheme: string; format: string; layers: unknown[] };
    expect([report.scheme, report.format, report.layers.length]).toEqual(['W8A8', 'int-quantized', 5]);
    const before = fs.statSync(path.join(tmp, 'w8a8/model.safetensors')).mtimeMs;

    expectRefused(llmopt('quantize', stories, '--scheme', 'FP8', '-o', 'w8a8', ...fast()), /w8a8: already exists; refusing to replace it \(use --force\)/);
    expect(fs.statSync(path.join(tmp, 'w8a8/model.safetensors')).mtimeMs).toBe(before);

    expectRefused(
      llmopt('quantize', path.join(tmp, 'w8a8'), '--scheme', 'W8A8', '-o', 'twice', ...fast()),
      /config\.json: the model is already quantized \(quantization_config, quant_method "compressed-tensors"\); quantize the original checkpoint/,
      'twice',
    );

    const forced = llmopt('quantize', stories, '--scheme', 'FP8_DYNAMIC', '-o', 'w8a8', '--force', ...fast());
    expect(forced.code, forced.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'w8a8/config.json'), 'utf8')).quantization_config.format).toBe('float-quantized');
  });

  test('usage errors exit 2', () => {
    for (const args of [
      ['--scheme', 'W4A16', '--group-size', 'channel', '--actorder'],
      ['--scheme', 'W4A16', '--group-size', 'channel', '--smoothquant'],
      ['--scheme', 'FP8', '--group-size', '32'],
      ['--scheme', 'W8A8', '--calib-samples', 'many'],
      ['--group-size', 'channel'],
    ]) {
      const r = llmopt('quantize', stories, ...fast(), ...args, '-o', 'usage');
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(fs.existsSync(path.join(tmp, 'usage'))).toBe(false);
    }
  });
});

describe('llmopt quantize: human output and recipes', () => {
  test('progress per layer and a summary', () => {
    const r = llmopt('quantize', stories, '--scheme', 'W4A16', '--group-size', 'channel', '--method', 'gptq', '-o', 'w4', ...fast());
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/layer 1\/5: output rel error 0\.\d{4}/);
    expect(r.stderr).toMatch(/layer 5\/5/);
    expect(r.stdout).toMatch(/scheme\s+W4A16: int4 weights, per-channel, symmetric; activations unquantized/);
    expect(r.stdout).toMatch(/method\s+gptq \(dampening 0\.01, block 128\)/);
    expect(r.stdout).toMatch(/size\s+1\.04 MB → \d+\.\d+ kB/);
    expect(fs.existsSync(path.join(tmp, 'w4/llmopt-report.json'))).toBe(true);
  });

  test('--device auto (the default) without a GPU: one notice, then the cpu; the report names the device and the forward dtype', () => {
    const r = llmopt('quantize', stories, '--scheme', 'W8A16', '--group-size', 'channel', '-o', 'auto-dev', '--json', ...fast());
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { device: string; device_dtype: string; memory: { activations: { where: string; bytes: number }; peak_device_bytes: unknown } };
    if (fs.existsSync('/dev/nvidiactl')) return; // a GPU machine runs it on cuda
    expect(r.stderr.split('\n').filter((l) => l.startsWith('notice: '))).toHaveLength(1);
    expect(r.stderr).toMatch(/notice: CUDA unavailable: .*; using the cpu device/);
    expect([report.device, report.device_dtype, report.memory.peak_device_bytes]).toEqual(['cpu', 'fp32', null]);
    expect(report.memory.activations.where).toBe('device');
    expect(report.memory.activations.bytes).toBeGreaterThan(0);
  });

  test('--dtype bf16 on the cpu is a usage error', () => {
    const r = llmopt('quantize', stories, '--scheme', 'W8A8', '--device', 'cpu', '--dtype', 'bf16', '-o', 'cpu-bf16', ...fast());
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/--dtype bf16: the cpu device computes in fp32 only/);
    expect(fs.existsSync(path.join(tmp, 'cpu-bf16'))).toBe(false);
  });

  test('flags override the recipe', () => {
    const recipe = path.join(tmp, 'r.yaml');
    fs.writeFileSync(recipe, 'quantize:\n  scheme: W4A16\n  group_size: 128\n  method: gptq\n  actorder: true\n  calibration: { samples: 3, seq_len: 64 }\n');
    const r = llmopt('quantize', stories, '--recipe', recipe, '--group-size', 'channel', '--calib', calib, '--calib-samples', '2', '-o', 'from-recipe', '--json');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { method: string; settings: { weights: { strategy: string; actorder: string } }; calibration: { samples: number; seq_len: number } };
    expect(report.method).toBe('gptq');
    expect(report.settings.weights.strategy).toBe('channel');
    expect(report.settings.weights.actorder).toBe('weight');
    expect(report.calibration.samples).toBe(2);
    expect(report.calibration.seq_len).toBe(64);
  });

  test('a recipe with an unknown key is refused', () => {
    const recipe = path.join(tmp, 'bad.yaml');
    fs.writeFileSync(recipe, 'quantize:\n  scheme: W8A8\n  smoothing: 0.5\n');
    expectRefused(llmopt('quantize', stories, '--recipe', recipe, '-o', 'bad-recipe'), /bad\.yaml: quantize\.smoothing: unknown key/, 'bad-recipe');
  });

  test('every shipped recipe loads and resolves to its scheme', () => {
    const dir = path.join(root, 'recipes');
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort();
    expect(files).toEqual(['fp8-dynamic.yaml', 'fp8.yaml', 'w4a16.yaml', 'w8a16.yaml', 'w8a8.yaml']);
    const schemes = files.map((f) => {
      const q = loadRecipe(path.join(dir, f)).quantize!;
      return resolveScheme({ scheme: q.scheme!, groupSize: q.groupSize, asym: q.asym, staticActivations: q.staticActivations, kvCache: q.kvCache }).name;
    });
    expect(schemes).toEqual(['FP8_DYNAMIC', 'FP8', 'W4A16', 'W8A16', 'W8A8']);
  });

  test('mergeOverRecipe: flags win field by field, calibration too', () => {
    const merged = mergeOverRecipe<{ scheme?: string; method?: string; calibration?: { samples?: number; seed?: number } }>(
      { scheme: 'W4A16', method: 'gptq', calibration: { samples: 64, seed: 3 } },
      { method: 'rtn', calibration: { samples: 8, seed: undefined } },
    );
    expect(merged).toEqual({ scheme: 'W4A16', method: 'rtn', calibration: { samples: 8, seed: 3 } });
  });
});
