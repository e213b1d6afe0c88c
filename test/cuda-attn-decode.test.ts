// Decode attention on the GPU (fused split-KV kernel) against the cpu device (cases in
// cuda-attn-decode-cases.ts; skipped without a GPU), and the launch plan (split count, head-group
// chunk), which needs no GPU.

import { afterAll, describe, expect, it } from 'vitest';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import { planFusedDecode } from '../src/tensor/cuda/decode-attention.js';
import type { ComputeDType } from '../src/tensor/device.js';
import { attnDecodeCases, runAttnDecodeGpuCases } from './cuda-attn-decode-cases.js';
import { cudaUnavailable } from './helpers/cuda-probe.js';

const unavailable = cudaUnavailable();
const cpu = createCpuDevice({ threads: 1 });
afterAll(() => cpu.close());

describe('fused decode attention launch plan (H200: 132 SMs, 32 MiB scratch)', () => {
  const plan = (s: { batch: number; seqQ?: number; kvLen: number; nHead?: number; nKvHead?: number; headDim?: number; window?: number }) =>
    planFusedDecode({ seqQ: 1, nHead: 32, nKvHead: 8, headDim: 64, kvStride: s.kvLen, scale: 0.125, ...s }, 132, 32 << 20);
  it('Llama-3.2-1B shapes: one 128-key round per split, at most 2 blocks per SM', () => {
    expect(plan({ batch: 1, kvLen: 576 })).toEqual({ group: 4, chunks: 1, splits: 5 });
    expect(plan({ batch: 1, kvLen: 2048 })).toEqual({ group: 4, chunks: 1, splits: 16 });
    expect(plan({ batch: 1, kvLen: 2049 })).toEqual({ group: 4, chunks: 1, splits: 17 });
    expect(plan({ batch: 1, kvLen: 8192 })).toEqual({ group: 4, chunks: 1, splits: 33 });
    expect(plan({ batch: 8, kvLen: 576 })).toEqual({ group: 4, chunks: 1, splits: 4 });
    expect(plan({ batch: 16, kvLen: 2048 })).toEqual({ group: 4, chunks: 1, splits: 2 });
    expect(plan({ batch: 32, kvLen: 2048 })).toEqual({ group: 4, chunks: 1, splits: 1 });
    expect(plan({ batch: 32, kvLen: 64 })).toEqual({ group: 4, chunks: 1, splits: 1 });
  });
  it('group chunks are powers of two up to 8; windows bound the keys', () => {
    expect(plan({ batch: 1, kvLen: 1000, nHead: 12, nKvHead: 1 })).toMatchObject({ group: 8, chunks: 2 });
    expect(plan({ batch: 1, kvLen: 1000, nHead: 6, nKvHead: 2 })).toMatchObject({ group: 4, chunks: 1 });
    expect(plan({ batch: 1, kvLen: 1000, nHead: 12, nKvHead: 2 })).toMatchObject({ group: 8, chunks: 1 });
    expect(plan({ batch: 1, kvLen: 1000, nHead: 4, nKvHead: 4 })).toMatchObject({ group: 1, chunks: 1 });
    expect(plan({ batch: 1, kvLen: 8000, window: 300 }).splits).toBe(3);
    expect(plan({ batch: 1, seqQ: 7, kvLen: 8000, window: 250 }).splits).toBe(2);
  });
});

describe.skipIf(unavailable !== null)('fused decode attention matches the cpu device', () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
    describe(dtype, () => {
      const gpu = unavailable === null ? new CudaDevice({ dtype }) : null;
      for (const c of attnDecodeCases()) {
        it(c.name, () => {
          for (const check of c.run(cpu, gpu!, dtype)) expect(check.error, check.case).toBeLessThanOrEqual(check.tol);
        });
      }
      it('graph replays with changed kvLens', () => {
        const run = runAttnDecodeGpuCases(cpu, gpu!, dtype);
        expect(run.failures).toEqual([]);
        expect(run.checks.length).toBeGreaterThan(4);
      });
    });
  }
});
