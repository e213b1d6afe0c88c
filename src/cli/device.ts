// --device → a Device. `auto` picks the best backend available; today that is the CPU.

import { LlmoptError } from '../errors.js';
import { createCpuDevice } from '../tensor/cpu/index.js';
import type { Device } from '../tensor/device.js';

export interface OpenedDevice {
  device: Device;
  /** How reports name it. */
  name: string;
  /** Releases threads/memory; the device is unusable after. */
  close(): void;
}

export function openDevice(kind: string): OpenedDevice {
  switch (kind) {
    case 'cpu':
    case 'auto': {
      const cpu = createCpuDevice();
      return { device: cpu, name: 'cpu', close: () => cpu.close() };
    }
    case 'cuda':
      throw new LlmoptError('--device cuda: the CUDA backend is not built yet; use --device cpu');
    default:
      throw new LlmoptError(`--device ${JSON.stringify(kind)}: unknown device; use cpu or auto`);
  }
}
