// --device / --dtype on a machine without a usable GPU (CI): `cuda` fails with one line saying what
// was looked for and where, `auto` falls back to the cpu with one notice line, --dtype is checked.
// Skipped where CUDA works (there the GPU runner covers the cuda paths).

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CudaDevice, CudaUnavailableError } from '../src/tensor/cuda/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const stories = path.join(shared, 'models/stories260K');
const valid = path.join(shared, 'data/tinystories-valid.txt');

function cudaWorks(): boolean {
  try {
    new CudaDevice({ dtype: 'f32' });
    return true;
  } catch (e) {
    if (e instanceof CudaUnavailableError) return false;
    throw e;
  }
}

function llmopt(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/llmopt.js'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const lines = (s: string) => s.split('\n').filter((l) => l.length > 0);

describe.skipIf(cudaWorks())('--device and --dtype without a GPU', () => {
  const evalArgs = ['eval', stories, '--data', valid, '--max-tokens', '600', '--seq-len', '128'];

  it('--device cuda: exit 1, one line naming the CUDA library looked for and where', () => {
    for (const args of [[...evalArgs, '--device', 'cuda'], ['generate', stories, '--device', 'cuda'], ['eval', stories, '--latency', '--device', 'cuda']]) {
      const r = llmopt(...args);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(lines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toMatch(/^error: --device cuda: CUDA unavailable: .*libcuda\.so\.1.* in .*\/usr\/local\/cuda\/lib64/);
    }
  });

  it('--device auto (the default): one notice line on stderr, then the cpu; the report says so', () => {
    const r = llmopt(...evalArgs, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stderr)).toEqual([expect.stringMatching(/^notice: CUDA unavailable: .*; using the cpu device$/)]);
    expect(JSON.parse(r.stdout).protocol).toMatchObject({ device: 'cpu', dtype: 'f32' });
    const g = llmopt('generate', stories, '-n', '5', '--json', '--dtype', 'bf16');
    expect(g.code, g.stderr).toBe(0);
    expect(lines(g.stderr)).toEqual([expect.stringMatching(/^notice: .*using the cpu device \(fp32: --dtype bf16 needs a GPU\)$/)]);
    expect(JSON.parse(g.stdout)).toMatchObject({ device: 'cpu', dtype: 'fp32' });
  });

  it('--dtype: unknown → exit 2; bf16/fp16 on --device cpu → exit 2; fp32 on cpu is fine', () => {
    const bad = llmopt(...evalArgs, '--dtype', 'fp8');
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe('error: --dtype "fp8": expected one of bf16, fp16, fp32');
    const cpuBf16 = llmopt(...evalArgs, '--device', 'cpu', '--dtype', 'bf16');
    expect(cpuBf16.code).toBe(2);
    expect(cpuBf16.stderr.trim()).toBe('error: --dtype bf16: the cpu device computes in fp32 only; use --device cuda or --dtype fp32');
    const ok = llmopt(...evalArgs, '--device', 'cpu', '--dtype', 'fp32');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toMatch(/device {4}cpu, f32, batch/);
  });
});
