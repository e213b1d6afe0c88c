// The CUDA device's TrainingOps against the cpu reference, op by op, and whole tiny models (cases in
// cuda-train-cases.ts). Skips where there is no GPU or no CUDA libraries (CI); scripts/gpu/run-cuda-tests.ts
// runs the same cases on the GPU machine (and with --self-test, cpu against cpu, anywhere).

import { afterAll, describe, expect, it } from 'vitest';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import type { ComputeDType } from '../src/tensor/device.js';
import { trainCases } from './cuda-train-cases.js';
import { cudaUnavailable } from './helpers/cuda-probe.js';

const unavailable = cudaUnavailable();
const cpu = createCpuDevice({ threads: 1 });
afterAll(() => cpu.close());

describe.skipIf(unavailable !== null)('cuda training ops match the cpu device', () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
    describe(dtype, () => {
      const gpu = unavailable === null ? new CudaDevice({ dtype }) : null;
      for (const c of trainCases()) {
        it(c.name, () => {
          for (const check of c.run(cpu, gpu!, dtype)) {
            expect(check.error, `${check.case}: ${check.note ?? ''}`).toBeLessThanOrEqual(check.tol);
            expect(check.ok, check.case).toBe(true);
          }
        });
      }
    });
  }
});

describe.skipIf(unavailable === null)('without a GPU', () => {
  it('skips the cuda training cases (no CUDA here)', () => {
    expect(unavailable).toMatch(/^CUDA unavailable: /);
    expect(trainCases().length).toBeGreaterThan(30);
  });
});
