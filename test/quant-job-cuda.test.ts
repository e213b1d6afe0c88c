// The cuda device's quantization-job ops (Device.quantJob) against the cpu reference (cases in
// quant-job-cases.ts). Skips where there is no GPU or no CUDA libraries.

import { afterAll, describe, expect, it } from 'vitest';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import type { ComputeDType } from '../src/tensor/device.js';
import { quantJobCases } from './quant-job-cases.js';
import { cudaUnavailable } from './helpers/cuda-probe.js';

const unavailable = cudaUnavailable();
const cpu = createCpuDevice({ threads: 2 });
afterAll(() => cpu.close());

describe.skipIf(unavailable !== null)('cuda quantJob ops match the cpu device', () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
    describe(dtype, () => {
      const gpu = unavailable === null ? new CudaDevice({ dtype }) : null;
      for (const c of quantJobCases()) {
        if (c.f32Only && dtype !== 'f32') continue;
        it(c.name, () => {
          for (const check of c.run(cpu, gpu!, dtype)) {
            expect(check.error, `${check.case}: ${check.note ?? ''}`).toBeLessThanOrEqual(check.tol);
            expect(check.ok, `${check.case}: ${check.note ?? ''}`).toBe(true);
          }
        });
      }
    });
  }
});

describe.skipIf(unavailable === null)('without a GPU', () => {
  it('the quantJob cases exist and cover every op', () => {
    const names = quantJobCases().map((c) => c.name).join('\n');
    for (const op of ['hessianAccumulate', 'channelRange', 'absMax', 'accumulateErrors', 'scaleHessian', 'cholesky', 'choleskyInverse', 'observeWeight(minmax)', 'observeWeight(mse)', 'quantizeRtn', 'gptq']) {
      expect(names).toContain(op);
    }
  });
});
