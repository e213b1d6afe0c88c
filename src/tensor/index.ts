// createDevice: the one place that picks a backend. 'auto' tries CUDA and falls back to the CPU
// with a notice when no usable GPU is found; 'cuda' fails with the reason instead.

import { createCpuDevice } from './cpu/index.js';
import { createCudaDevice } from './cuda/index.js';
import { CudaUnavailableError } from './cuda/errors.js';
import type { ComputeDType, Device } from './device.js';

export type DeviceKind = 'cpu' | 'cuda' | 'auto';

export interface CreateDeviceOptions {
  /** GPU storage/compute dtype (default bf16). The cpu device always computes in f32. */
  dtype?: ComputeDType;
  /** CPU threads (cpu device only). */
  threads?: number;
  /** GPU ordinal (cuda only). Default 0. */
  ordinal?: number;
  /** Receives the one-line notice when 'auto' falls back to cpu. Default: written to stderr. */
  onNotice?: (message: string) => void;
}

export function createDevice(kind: DeviceKind, opts: CreateDeviceOptions = {}): Device {
  switch (kind) {
    case 'cpu':
      return createCpuDevice({ threads: opts.threads });
    case 'cuda':
      return createCudaDevice({ dtype: opts.dtype, ordinal: opts.ordinal });
    case 'auto':
      try {
        return createCudaDevice({ dtype: opts.dtype, ordinal: opts.ordinal });
      } catch (e) {
        if (!(e instanceof CudaUnavailableError)) throw e;
        const notice = `${e.message}; using the cpu device`;
        if (opts.onNotice) opts.onNotice(notice);
        else process.stderr.write(`notice: ${notice}\n`);
        return createCpuDevice({ threads: opts.threads });
      }
    default:
      throw new Error(`createDevice: unknown device kind ${JSON.stringify(kind)}; use cpu, cuda or auto`);
  }
}

export type { ComputeDType, Device, Tensor } from './device.js';
