// The fused decode layer on cuda against the per-op decode path (cases in cuda-decode-layer-cases.ts).
// Skips where there is no GPU (CI); scripts/gpu/run-cuda-tests.ts runs the same checks on the GPU machine.

import { describe, expect, it } from 'vitest';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import { runDecodeLayerChecks } from './cuda-decode-layer-cases.js';
import { cudaUnavailable } from './helpers/cuda-probe.js';

const unavailable = cudaUnavailable();

describe.skipIf(unavailable !== null)('fused decode layer on cuda', () => {
  it('every weight format: decode_layer steps = the per-op layers, graph replays = eager', async () => {
    const run = await runDecodeLayerChecks((dtype) => new CudaDevice({ dtype }), () => {});
    expect(run.failures).toEqual([]);
    expect(run.checks.length).toBeGreaterThan(0);
  }, 600_000);
});
