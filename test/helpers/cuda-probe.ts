// Whether this machine can create a CUDA device: null, or the one-line reason it cannot (what the
// GPU test files' describe.skipIf reads). Any other error is a bug and is thrown.

import { CudaDevice, CudaUnavailableError } from '../../src/tensor/cuda/index.js';

export function cudaUnavailable(): string | null {
  try {
    new CudaDevice({ dtype: 'f32' });
    return null;
  } catch (e) {
    if (e instanceof CudaUnavailableError) return e.message;
    throw e;
  }
}
