// Quantized Linears on the CUDA device against the cpu reference (cases in cuda-quant-cases.ts):
// every scheme's matmul / matmulMany / matmulSiluMul, graph replays, and stories260K quantized to each
// scheme evaluated natively on the GPU. Skips where there is no GPU (CI); scripts/gpu/run-cuda-tests.ts
// runs the same cases on the GPU machine.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import type { ComputeDType } from '../src/tensor/device.js';
import { quantCases, runQuantGraphCases, runQuantModelChecks } from './cuda-quant-cases.js';
import { cudaUnavailable } from './helpers/cuda-probe.js';

const unavailable = cudaUnavailable();
const cpu = createCpuDevice({ threads: 1 });
afterAll(() => cpu.close());
const shared = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared');

describe.skipIf(unavailable !== null)('quantized linears on cuda match the cpu reference', () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
    describe(dtype, () => {
      const gpu = unavailable === null ? new CudaDevice({ dtype }) : null;
      for (const c of quantCases(dtype)) {
        it(c.name, () => {
          for (const check of c.run(cpu, gpu!, dtype)) {
            expect(check.error, `${check.case}: ${check.note ?? ''}`).toBeLessThanOrEqual(check.tol);
            expect(check.ok, check.case).toBe(true);
          }
        });
      }
      if (dtype !== 'f32') {
        it('graph replays of the quantized ops equal eager runs', () => {
          const run = runQuantGraphCases(gpu!, dtype);
          expect(run.failures).toEqual([]);
          expect(run.checks.length).toBeGreaterThan(0);
        });
      }
    });
  }

  it('stories260K quantized to each scheme: GPU perplexity (native) agrees with the cpu, decode fused, generate works', async () => {
    const run = await runQuantModelChecks(cpu, (dtype) => new CudaDevice({ dtype }), {
      model: path.join(shared, 'models/stories260K'),
      data: path.join(shared, 'data/tinystories-valid.txt'),
    }, () => {});
    expect(run.failures).toEqual([]);
    expect(run.checks.length).toBeGreaterThan(0);
  }, 600_000);
});
