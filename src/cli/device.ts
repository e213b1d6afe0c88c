// --device and --dtype → a Device. `auto` (the default) uses the GPU when CUDA is usable and
// otherwise falls back to the cpu with one notice line on stderr; `cuda` fails with the reason.

import { LlmoptError, UsageError } from '../errors.js';
import { createCpuDevice } from '../tensor/cpu/index.js';
import { CudaDevice, CudaUnavailableError } from '../tensor/cuda/index.js';
import type { ComputeDType, Device } from '../tensor/device.js';

export interface OpenedDevice {
  device: Device;
  /** How reports name it: "cpu", or "cuda" (the GPU model is in `gpu`). */
  name: 'cpu' | 'cuda';
  /** The GPU's name on cuda. */
  gpu?: string;
  /** The dtype as the user spells it: fp32, bf16 or fp16. */
  dtypeName: DTypeFlag;
  /** Releases threads/memory; the device is unusable after. */
  close(): void;
}

export const DTYPE_FLAGS = ['bf16', 'fp16', 'fp32'] as const;
export type DTypeFlag = (typeof DTYPE_FLAGS)[number];

const TO_COMPUTE: Record<DTypeFlag, ComputeDType> = { bf16: 'bf16', fp16: 'f16', fp32: 'f32' };
const FROM_COMPUTE: Record<ComputeDType, DTypeFlag> = { bf16: 'bf16', f16: 'fp16', f32: 'fp32' };

/** fp32 → f32 etc.; undefined stays undefined. */
export function parseDTypeFlag(value: string | undefined): DTypeFlag | undefined {
  if (value === undefined) return undefined;
  if (!(DTYPE_FLAGS as readonly string[]).includes(value)) {
    throw new UsageError(`--dtype ${JSON.stringify(value)}: expected one of ${DTYPE_FLAGS.join(', ')}`);
  }
  return value as DTypeFlag;
}

export function dtypeFlagName(dtype: ComputeDType): DTypeFlag {
  return FROM_COMPUTE[dtype];
}

function openCpu(): OpenedDevice {
  const cpu = createCpuDevice();
  return { device: cpu, name: 'cpu', dtypeName: 'fp32', close: () => cpu.close() };
}

function openCuda(dtype: DTypeFlag | undefined): OpenedDevice {
  const gpu = new CudaDevice({ dtype: TO_COMPUTE[dtype ?? 'bf16'] });
  return { device: gpu, name: 'cuda', gpu: gpu.info.name, dtypeName: dtypeFlagName(gpu.dtype), close: () => undefined };
}

/**
 * Opens the device for --device (cpu | cuda | auto) and --dtype (bf16 | fp16 | fp32; default bf16 on
 * cuda; the cpu computes in fp32 only). `notice` receives auto's one-line fall-back message.
 */
export function openDevice(kind: string, dtypeFlag?: string, notice: (line: string) => void = (l) => process.stderr.write(`notice: ${l}\n`)): OpenedDevice {
  const dtype = parseDTypeFlag(dtypeFlag);
  switch (kind) {
    case 'cpu':
      if (dtype !== undefined && dtype !== 'fp32') {
        throw new UsageError(`--dtype ${dtype}: the cpu device computes in fp32 only; use --device cuda or --dtype fp32`);
      }
      return openCpu();
    case 'cuda':
      try {
        return openCuda(dtype);
      } catch (e) {
        if (e instanceof CudaUnavailableError) throw new LlmoptError(`--device cuda: ${e.message}`);
        throw e;
      }
    case 'auto':
      try {
        return openCuda(dtype);
      } catch (e) {
        if (!(e instanceof CudaUnavailableError)) throw e;
        const dtypeNote = dtype !== undefined && dtype !== 'fp32' ? ` (fp32: --dtype ${dtype} needs a GPU)` : '';
        notice(`${e.message}; using the cpu device${dtypeNote}`);
        return openCpu();
      }
    default:
      throw new LlmoptError(`--device ${JSON.stringify(kind)}: unknown device; use cpu, cuda or auto`);
  }
}
