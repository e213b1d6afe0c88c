// The CUDA device against the cpu reference, op by op (cases in cuda-cases.ts). Skips where there is
// no GPU or no CUDA libraries (CI); there, only the fallback behaviour of createDevice is checked.

import { afterAll, describe, expect, it } from 'vitest';
import { createDevice } from '../src/tensor/index.js';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice, CudaUnavailableError } from '../src/tensor/cuda/index.js';
import type { ComputeDType } from '../src/tensor/device.js';
import { opCases, runAtCases } from './cuda-cases.js';
import { cudaUnavailable } from './helpers/cuda-probe.js';

const unavailable = cudaUnavailable();
const cpu = createCpuDevice({ threads: 1 });
afterAll(() => cpu.close());

describe.skipIf(unavailable !== null)('cuda ops match the cpu device', () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
    describe(dtype, () => {
      const gpu = unavailable === null ? new CudaDevice({ dtype }) : null;
      for (const c of opCases()) {
        it(c.name, () => {
          for (const check of c.run(cpu, gpu!, dtype)) {
            expect(check.error, `${check.case}: ${check.note ?? ''}`).toBeLessThanOrEqual(check.tol);
            expect(check.ok, check.case).toBe(true);
          }
        });
      }
      it('the *At ops (device-side ids/positions/kvLens) equal the plain ops', () => {
        const run = runAtCases(gpu!, dtype);
        expect(run.failures).toEqual([]);
        expect(run.checks.length).toBeGreaterThan(0);
      });
    });
  }
});

describe.skipIf(unavailable === null)('without a GPU', () => {
  it('createDevice("cuda") fails with one line saying what was looked for and where', () => {
    let err: unknown;
    try {
      createDevice('cuda');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CudaUnavailableError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    expect(message).toMatch(/^CUDA unavailable: /);
    expect(message).toMatch(/libcuda|cuInit|GPU/);
  });

  it('createDevice("auto") falls back to the cpu device with a notice', () => {
    const notices: string[] = [];
    const dev = createDevice('auto', { threads: 1, onNotice: (m) => notices.push(m) });
    expect(dev.kind).toBe('cpu');
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/CUDA unavailable: .*using the cpu device$/);
    (dev as { close?: () => void }).close?.();
  });
});
