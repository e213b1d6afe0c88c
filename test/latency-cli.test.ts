// llmopt eval --latency on the cpu (wall clock, memory from tensor shapes); the same code path runs
// with CUDA events and the device's memory accounting on a GPU.

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { measureLatency, weightBytes } from '../src/eval/latency.js';
import { loadModel } from '../src/model/load.js';
import { createCpuDevice } from '../src/tensor/cpu/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stories = path.resolve(root, '../shared/models/stories260K');

function llmopt(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, 'bin/llmopt.js'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, FORCE_COLOR: '0' },
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('measureLatency (cpu)', () => {
  it('times prefill and every decode step, and splits memory into weights / KV cache / activations', async () => {
    const cpu = createCpuDevice({ threads: 1 });
    try {
      const model = await loadModel(stories, cpu);
      const r = measureLatency({ decoder: model.decoder, promptLen: 40, genLen: 12, batch: 3, noWarmup: true });
      expect(r).toMatchObject({ batch: 3, promptLen: 40, genLen: 12, clock: 'wall clock', cudaGraph: false });
      expect(r.stepMs).toHaveLength(11);
      expect(r.stepMs.every((ms) => ms > 0)).toBe(true);
      expect(r.prefillMs).toBeGreaterThan(0);
      expect(r.prefillTokensPerS).toBeCloseTo((120 * 1000) / r.prefillMs, 6);
      expect(r.decodeMsP90).toBeGreaterThanOrEqual(r.decodeMsMedian);
      expect(r.decodeTokensPerS).toBeCloseTo((3 * 11 * 1000) / r.stepMs.reduce((a, b) => a + b, 0), 6);
      // stories260K: 260,032 f32 parameters (tied lm_head counted once); KV = 2 × 5 layers × 3 × 52 positions × 4 heads × 8 dims × 4 B
      expect(weightBytes(model.decoder.weights)).toBe(260032 * 4);
      expect(r.memory.weightsBytes).toBe(260032 * 4);
      expect(r.memory.kvCacheBytes).toBe(2 * 5 * 3 * 52 * 32 * 4);
      expect(r.memory.activationsBytes).toBeGreaterThan(0);
      expect(r.memory.peakBytes).toBe(r.memory.weightsBytes + r.memory.kvCacheBytes + r.memory.activationsBytes);
      model.decoder.dispose({ weights: true });
    } finally {
      cpu.close();
    }
  });
});

describe('llmopt eval --latency (cpu)', () => {
  const base = ['eval', stories, '--latency', '--device', 'cpu', '--prompt-len', '64', '--gen-len', '16'];

  it('--json reports device, dtype, settings and metrics; gates apply to them', () => {
    const r = llmopt(...base, '--batch', '2', '--json', '--gate', 'decode_tps>1', '--gate', 'ttft_ms<60000');
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report).toMatchObject({ mode: 'latency', device: 'cpu', gpu: null, dtype: 'fp32', passed: true });
    expect(report.settings).toEqual({ batch: 2, prompt_len: 64, gen_len: 16, clock: 'wall clock', cuda_graph: false });
    for (const k of ['prefill_ms', 'prefill_tps', 'ttft_ms', 'decode_ms', 'decode_ms_p90', 'decode_tps', 'peak_memory_mb']) {
      expect(report.metrics[k], k).toBeGreaterThan(0);
    }
    expect(report.gates.map((g: { metric: string; pass: boolean }) => [g.metric, g.pass])).toEqual([['decode_tps', true], ['ttft_ms', true]]);
  });

  it('human output names the device, dtype and the three memory parts; a failing gate exits 3', () => {
    const r = llmopt(...base, '--gate', 'decode_tps>1e12');
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/device {5}cpu, fp32; timed by wall clock/);
    expect(r.stdout).toMatch(/decode {5}[\d.]+ ms\/step median, [\d.]+ p90, [\d,]+ tokens\/s/);
    expect(r.stdout).toMatch(/memory {5}peak .*: weights 1\.04 MB, KV cache .*, activations .* \(tensor shapes\)/);
    expect(r.stdout).toMatch(/gate FAIL {2}decode_tps > 1000000000000/);
  });

  it('usage: a perplexity gate with --latency, a latency gate without, no --data without --latency', () => {
    expect(llmopt(...base, '--gate', 'ppl<10').stderr.trim()).toBe('error: --gate "ppl<10": ppl is not measured by eval --latency');
    const noLatency = llmopt('eval', stories, '--data', 'x.txt', '--gate', 'decode_tps>1');
    expect(noLatency.code).toBe(2);
    expect(noLatency.stderr).toMatch(/decode_tps is measured by eval --latency/);
    const noData = llmopt('eval', stories, '--device', 'cpu');
    expect(noData.code).toBe(2);
    expect(noData.stderr.trim()).toBe('error: --data <file> is required (or --latency to measure speed and memory)');
  });

  it('a prompt and generation past the context: exit 1 naming both flags', () => {
    const r = llmopt('eval', stories, '--latency', '--device', 'cpu', '--prompt-len', '500', '--gen-len', '20');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--prompt-len 500 \+ --gen-len 20 exceed the model's context \(max_position_embeddings 512\)/);
  });
});
