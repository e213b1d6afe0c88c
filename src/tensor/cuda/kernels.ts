// Our .cu kernel families: found on disk, compiled by NVRTC on first use (one module per file),
// launched with checked cuLaunchKernel calls.
//
// Kernel arguments travel as cuLaunchKernel's `void **kernelParams`: a stable (koffi.alloc'd) block
// of 8-byte slots holds the values, and a second block holds a pointer to each slot. The driver
// copies the values during the call, so the blocks are reused by every launch.
//
// Programmatic dependent launch (sm_90+): a family whose source has the line `// llmopt:pdl` starts
// every kernel with pdl_start() or pdl_launch()…pdl_wait() (common.cuh). Its kernels are launched
// with cuLaunchKernelEx and PROGRAMMATIC_STREAM_SERIALIZATION, so each one is launched and its blocks
// made resident while the kernel before it still runs, and waits (griddepcontrol.wait) for that
// kernel's results only at pdl_wait: the launch gap between dependent kernels (the bulk of a batch-1
// decode step's ~130 launches) overlaps work. Families without the line launch as before.
// LLMOPT_CUDA_PDL=0 turns it off; LLMOPT_CUDA_PDL_OFF=family,family (or KernelLibrary.pdlOff) turns it
// off for those families only (A/B runs: the kernels' griddepcontrol instructions are then no-ops).

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

const MAX_ARGS = 64;
const PDL_MARKER = '// llmopt:pdl';
const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
/** sizeof(CUlaunchConfig): 7 uint32, padding, stream, attrs pointer, numAttrs, padding. */
const LAUNCH_CONFIG_BYTES = 56;
/** sizeof(CUlaunchAttribute): id, padding to 8, a 64-byte value union. */
const LAUNCH_ATTRIBUTE_BYTES = 72;
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
    /** Its family's kernels begin with pdl_start/pdl_wait (the `// llmopt:pdl` marker). */
    readonly pdlSafe: boolean,
    readonly family: string,
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
  /** Launch pdl-safe kernels with programmatic dependent launch (sm_90+, unless LLMOPT_CUDA_PDL=0); benchmarks may toggle it. */
  pdl: boolean;
  /** Families launched without programmatic dependent launch even when pdl is on. */
  readonly pdlOff: Set<string>;
  private readonly headers: Record<string, string> = {};
  private readonly modules = new Map<string, { handle: Handle; pdlSafe: boolean }>();
  private readonly launchConfig: bigint;
  private readonly configView: DataView;
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
    this.pdl = driver.info.computeCapability[0] >= 9 && process.env.LLMOPT_CUDA_PDL !== '0';
    this.pdlOff = new Set((process.env.LLMOPT_CUDA_PDL_OFF ?? '').split(',').map((f) => f.trim()).filter((f) => f !== ''));
    this.dir = kernelSourceDir();
    for (const file of fs.readdirSync(this.dir)) {
      if (file.endsWith('.cuh')) this.headers[file] = fs.readFileSync(path.join(this.dir, file), 'utf8');
    }
    this.argValues = koffi.alloc('uint64_t', MAX_ARGS) as bigint;
    this.argPointers = koffi.alloc('uint64_t', MAX_ARGS) as bigint;
    this.argView = new DataView(koffi.view(this.argValues, MAX_ARGS * 8));
    const pointers = new DataView(koffi.view(this.argPointers, MAX_ARGS * 8));
    for (let i = 0; i < MAX_ARGS; i++) pointers.setBigUint64(i * 8, this.argValues + BigInt(i * 8), true);
    // One launch config + one attribute, rewritten per launch (the driver reads them during the call).
    this.launchConfig = koffi.alloc('uint8_t', LAUNCH_CONFIG_BYTES + LAUNCH_ATTRIBUTE_BYTES) as bigint;
    this.configView = new DataView(koffi.view(this.launchConfig, LAUNCH_CONFIG_BYTES + LAUNCH_ATTRIBUTE_BYTES));
    for (let i = 0; i < LAUNCH_CONFIG_BYTES + LAUNCH_ATTRIBUTE_BYTES; i++) this.configView.setUint8(i, 0);
    const attr = LAUNCH_CONFIG_BYTES;
    this.configView.setUint32(attr, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, true);
    this.configView.setInt32(attr + 8, 1, true); // programmaticStreamSerializationAllowed
    this.configView.setBigUint64(40, this.launchConfig + BigInt(attr), true); // attrs
    this.configView.setUint32(48, 1, true); // numAttrs
  }

  /** The kernel `name` from `family`.cu, compiling and loading the module on first use. */
  get(family: string, name: string, signature: ArgSignature): Kernel {
    const cached = this.kernels.get(name);
    if (cached) return cached;
    if (signature.length > MAX_ARGS) throw new Error(`kernel ${name}: too many arguments`);
    const module = this.module(family);
    const kernel = new Kernel(name, this.driver.getFunction(module.handle, name), signature, module.pdlSafe, family);
    this.kernels.set(name, kernel);
    return kernel;
  }

  private module(family: string): { handle: Handle; pdlSafe: boolean } {
    let module = this.modules.get(family);
    if (module === undefined) {
      const file = `${family}.cu`;
      const source = fs.readFileSync(path.join(this.dir, file), 'utf8');
      const cubin = this.nvrtc.compile(file, source, this.headers, this.arch);
      module = { handle: this.driver.loadModule(cubin, file), pdlSafe: source.split('\n').some((l) => l.trim() === PDL_MARKER) };
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
    let status: number;
    const pdl = this.pdl && kernel.pdlSafe && !this.pdlOff.has(kernel.family);
    if (pdl) {
      const c = this.configView;
      c.setUint32(0, gx, true);
      c.setUint32(4, gy, true);
      c.setUint32(8, gz, true);
      c.setUint32(12, bx, true);
      c.setUint32(16, by, true);
      c.setUint32(20, bz, true);
      c.setUint32(24, sharedBytes, true);
      c.setBigUint64(32, BigInt(this.driver.stream), true);
      status = this.driver.fn.cuLaunchKernelEx(this.launchConfig, kernel.handle, this.argPointers, null) as number;
    } else {
      status = this.driver.fn.cuLaunchKernel(
        kernel.handle, gx, gy, gz, bx, by, bz, sharedBytes, this.driver.stream, this.argPointers, null,
      ) as number;
    }
    this.profiler?.end();
    if (status !== 0) {
      this.driver.check(status, `${pdl ? 'cuLaunchKernelEx' : 'cuLaunchKernel'}(${kernel.name}, grid [${gx},${gy},${gz}], block [${bx},${by},${bz}], shared ${sharedBytes})`);
    }
  }
}
