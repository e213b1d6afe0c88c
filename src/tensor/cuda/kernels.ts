// Our .cu kernel families: found on disk, compiled by NVRTC on first use (one module per file),
// launched with checked cuLaunchKernel calls.
//
// Kernel arguments travel as cuLaunchKernel's `void **kernelParams`: a stable (koffi.alloc'd) block
// of 8-byte slots holds the values, and a second block holds a pointer to each slot. The driver
// copies the values during the call, so the blocks are reused by every launch.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { CudaUnavailableError } from './errors.js';
import type { CudaDriver, Handle } from './driver.js';
import type { Nvrtc } from './nvrtc.js';

/** One character per kernel argument: p = device pointer, i = int32, q = int64, f = float32, d = float64. */
export type ArgSignature = string;
export type KernelArg = bigint | number;

const MAX_ARGS = 32;
const DEFAULT_SHARED_LIMIT = 48 * 1024;

/** The folder holding the .cu/.cuh files: $LLMOPT_CUDA_KERNELS, beside this module, or the source tree. */
export function kernelSourceDir(): string {
  const candidates = [
    process.env.LLMOPT_CUDA_KERNELS,
    fileURLToPath(new URL('./kernels/', import.meta.url)),
    // compiled layout: dist/src/tensor/cuda/ → src/tensor/cuda/kernels
    fileURLToPath(new URL('../../../../src/tensor/cuda/kernels/', import.meta.url)),
  ].filter((d): d is string => !!d);
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'common.cuh'))) return dir;
  }
  throw new CudaUnavailableError(`CUDA kernels not found (looked for common.cuh in ${candidates.join(', ')})`);
}

export class Kernel {
  /** Dynamic shared memory this kernel has been allowed so far. */
  sharedLimit = DEFAULT_SHARED_LIMIT;
  constructor(
    readonly name: string,
    readonly handle: Handle,
    readonly signature: ArgSignature,
  ) {}
}

/** Receives every launch when set (CudaDevice.profile): begin before the launch, end after it. */
export interface LaunchProfiler {
  begin(name: string): void;
  end(): void;
}

export class KernelLibrary {
  readonly dir: string;
  profiler: LaunchProfiler | undefined;
  readonly arch: string;
  private readonly headers: Record<string, string> = {};
  private readonly modules = new Map<string, Handle>();
  private readonly kernels = new Map<string, Kernel>();
  private readonly argValues: bigint;
  private readonly argPointers: bigint;
  private readonly argView: DataView;

  constructor(
    private readonly driver: CudaDriver,
    private readonly nvrtc: Nvrtc,
    arch: string,
  ) {
    this.arch = arch;
    this.dir = kernelSourceDir();
    for (const file of fs.readdirSync(this.dir)) {
      if (file.endsWith('.cuh')) this.headers[file] = fs.readFileSync(path.join(this.dir, file), 'utf8');
    }
    this.argValues = koffi.alloc('uint64_t', MAX_ARGS) as bigint;
    this.argPointers = koffi.alloc('uint64_t', MAX_ARGS) as bigint;
    this.argView = new DataView(koffi.view(this.argValues, MAX_ARGS * 8));
    const pointers = new DataView(koffi.view(this.argPointers, MAX_ARGS * 8));
    for (let i = 0; i < MAX_ARGS; i++) pointers.setBigUint64(i * 8, this.argValues + BigInt(i * 8), true);
  }

  /** The kernel `name` from `family`.cu, compiling and loading the module on first use. */
  get(family: string, name: string, signature: ArgSignature): Kernel {
    const cached = this.kernels.get(name);
    if (cached) return cached;
    if (signature.length > MAX_ARGS) throw new Error(`kernel ${name}: too many arguments`);
    const module = this.module(family);
    const kernel = new Kernel(name, this.driver.getFunction(module, name), signature);
    this.kernels.set(name, kernel);
    return kernel;
  }

  private module(family: string): Handle {
    let module = this.modules.get(family);
    if (module === undefined) {
      const file = `${family}.cu`;
      const source = fs.readFileSync(path.join(this.dir, file), 'utf8');
      const cubin = this.nvrtc.compile(file, source, this.headers, this.arch);
      module = this.driver.loadModule(cubin, file);
      this.modules.set(family, module);
    }
    return module;
  }

  launch(
    kernel: Kernel,
    grid: readonly [number, number?, number?],
    block: readonly [number, number?, number?],
    sharedBytes: number,
    args: readonly KernelArg[],
  ): void {
    const sig = kernel.signature;
    if (args.length !== sig.length) {
      throw new Error(`kernel ${kernel.name}: ${args.length} arguments given, signature "${sig}" wants ${sig.length}`);
    }
    const view = this.argView;
    for (let i = 0; i < sig.length; i++) {
      const a = args[i];
      switch (sig.charCodeAt(i)) {
        case 112: // p
          view.setBigUint64(i * 8, a as bigint, true);
          break;
        case 105: // i
          view.setInt32(i * 8, a as number, true);
          break;
        case 113: // q
          view.setBigInt64(i * 8, BigInt(a), true);
          break;
        case 102: // f
          view.setFloat32(i * 8, a as number, true);
          break;
        case 100: // d
          view.setFloat64(i * 8, a as number, true);
          break;
        default:
          throw new Error(`kernel ${kernel.name}: bad signature "${sig}"`);
      }
    }
    if (sharedBytes > kernel.sharedLimit) {
      this.driver.setMaxDynamicSharedMemory(kernel.handle, sharedBytes, kernel.name);
      kernel.sharedLimit = sharedBytes;
    }
    const gx = grid[0], gy = grid[1] ?? 1, gz = grid[2] ?? 1;
    const bx = block[0], by = block[1] ?? 1, bz = block[2] ?? 1;
    if (gx === 0 || gy === 0 || gz === 0) return; // nothing to do
    this.profiler?.begin(kernel.name);
    const status = this.driver.fn.cuLaunchKernel(
      kernel.handle, gx, gy, gz, bx, by, bz, sharedBytes, this.driver.stream, this.argPointers, null,
    ) as number;
    this.profiler?.end();
    if (status !== 0) {
      this.driver.check(status, `cuLaunchKernel(${kernel.name}, grid [${gx},${gy},${gz}], block [${bx},${by},${bz}], shared ${sharedBytes})`);
    }
  }
}
