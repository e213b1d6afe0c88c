// The CUDA driver API (libcuda.so.1) through koffi, with every call checked.
//
// koffi 3 conventions used throughout the backend: pointers and opaque handles are BigInts; an
// out-parameter is a one-element typed array (BigUint64Array for handles and device pointers,
// Int32Array for ints) passed where C expects a pointer; device pointers (CUdeviceptr) are uint64.

import koffi, { type LibraryHandle } from 'koffi';
import { CudaError, CudaUnavailableError } from './errors.js';
import { bindFirst, openLibrary, type NativeFunction } from './libs.js';

/** CUdevice_attribute values we read. */
export const DeviceAttribute = {
  MULTIPROCESSOR_COUNT: 16,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
  MEMORY_POOLS_SUPPORTED: 115,
} as const;

const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
const CU_STREAM_NON_BLOCKING = 1;
const CU_MEMPOOL_ATTR_RELEASE_THRESHOLD = 4;
const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
const CU_EVENT_DEFAULT = 0;

export type Handle = bigint;
export type DevicePtr = bigint;

interface DriverFunctions {
  cuInit: NativeFunction;
  cuDriverGetVersion: NativeFunction;
  cuDeviceGetCount: NativeFunction;
  cuDeviceGet: NativeFunction;
  cuDeviceGetName: NativeFunction;
  cuDeviceGetAttribute: NativeFunction;
  cuDeviceTotalMem: NativeFunction;
  cuDevicePrimaryCtxRetain: NativeFunction;
  cuCtxSetCurrent: NativeFunction;
  cuCtxSynchronize: NativeFunction;
  cuMemGetInfo: NativeFunction;
  cuModuleLoadData: NativeFunction;
  cuModuleGetFunction: NativeFunction;
  cuFuncSetAttribute: NativeFunction;
  cuLaunchKernel: NativeFunction;
  cuLaunchKernelEx: NativeFunction;
  cuStreamCreate: NativeFunction;
  cuStreamSynchronize: NativeFunction;
  cuMemAlloc: NativeFunction;
  cuMemAllocAsync: NativeFunction;
  cuMemFreeAsync: NativeFunction;
  cuMemHostAlloc: NativeFunction;
  cuMemcpyHtoDAsync: NativeFunction;
  cuMemcpyDtoHAsync: NativeFunction;
  cuMemcpyDtoDAsync: NativeFunction;
  cuMemsetD8Async: NativeFunction;
  cuDeviceGetDefaultMemPool: NativeFunction;
  cuMemPoolSetAttribute: NativeFunction;
  cuEventCreate: NativeFunction;
  cuEventRecord: NativeFunction;
  cuEventSynchronize: NativeFunction;
  cuEventElapsedTime: NativeFunction;
  cuEventDestroy: NativeFunction;
  cuStreamBeginCapture: NativeFunction;
  cuStreamEndCapture: NativeFunction;
  cuGraphInstantiateWithFlags: NativeFunction;
  cuGraphLaunch: NativeFunction;
  cuGraphExecDestroy: NativeFunction;
  cuGraphDestroy: NativeFunction;
  cuGetErrorString: NativeFunction;
  cuGetErrorName: NativeFunction;
}

function bindDriver(lib: LibraryHandle): DriverFunctions {
  const f = (...protos: string[]) => bindFirst(lib, protos);
  return {
    cuInit: f('int cuInit(unsigned int flags)'),
    cuDriverGetVersion: f('int cuDriverGetVersion(void *version)'),
    cuDeviceGetCount: f('int cuDeviceGetCount(void *count)'),
    cuDeviceGet: f('int cuDeviceGet(void *device, int ordinal)'),
    cuDeviceGetName: f('int cuDeviceGetName(void *name, int len, int dev)'),
    cuDeviceGetAttribute: f('int cuDeviceGetAttribute(void *pi, int attrib, int dev)'),
    cuDeviceTotalMem: f('int cuDeviceTotalMem_v2(void *bytes, int dev)'),
    cuDevicePrimaryCtxRetain: f('int cuDevicePrimaryCtxRetain(void *pctx, int dev)'),
    cuCtxSetCurrent: f('int cuCtxSetCurrent(void *ctx)'),
    cuCtxSynchronize: f('int cuCtxSynchronize()'),
    cuMemGetInfo: f('int cuMemGetInfo_v2(void *free, void *total)'),
    cuModuleLoadData: f('int cuModuleLoadData(void *module, void *image)'),
    cuModuleGetFunction: f('int cuModuleGetFunction(void *hfunc, void *hmod, const char *name)'),
    cuFuncSetAttribute: f('int cuFuncSetAttribute(void *hfunc, int attrib, int value)'),
    cuLaunchKernel: f(
      'int cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, ' +
        'unsigned int by, unsigned int bz, unsigned int shmem, void *stream, void *params, void *extra)',
    ),
    cuLaunchKernelEx: f('int cuLaunchKernelEx(void *config, void *f, void *params, void *extra)'),
    cuStreamCreate: f('int cuStreamCreate(void *stream, unsigned int flags)'),
    cuStreamSynchronize: f('int cuStreamSynchronize(void *stream)'),
    cuMemAlloc: f('int cuMemAlloc_v2(void *dptr, size_t bytes)'),
    cuMemAllocAsync: f('int cuMemAllocAsync(void *dptr, size_t bytes, void *stream)'),
    cuMemFreeAsync: f('int cuMemFreeAsync(uint64_t dptr, void *stream)'),
    cuMemHostAlloc: f('int cuMemHostAlloc(void *pp, size_t bytes, unsigned int flags)'),
    cuMemcpyHtoDAsync: f('int cuMemcpyHtoDAsync_v2(uint64_t dst, void *src, size_t bytes, void *stream)'),
    cuMemcpyDtoHAsync: f('int cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t bytes, void *stream)'),
    cuMemcpyDtoDAsync: f('int cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t bytes, void *stream)'),
    cuMemsetD8Async: f('int cuMemsetD8Async(uint64_t dst, uint8_t value, size_t n, void *stream)'),
    cuDeviceGetDefaultMemPool: f('int cuDeviceGetDefaultMemPool(void *pool, int dev)'),
    cuMemPoolSetAttribute: f('int cuMemPoolSetAttribute(void *pool, int attr, void *value)'),
    cuEventCreate: f('int cuEventCreate(void *event, unsigned int flags)'),
    cuEventRecord: f('int cuEventRecord(void *event, void *stream)'),
    cuEventSynchronize: f('int cuEventSynchronize(void *event)'),
    cuEventElapsedTime: f(
      'int cuEventElapsedTime_v2(void *ms, void *start, void *end)',
      'int cuEventElapsedTime(void *ms, void *start, void *end)',
    ),
    cuEventDestroy: f('int cuEventDestroy_v2(void *event)'),
    cuStreamBeginCapture: f('int cuStreamBeginCapture_v2(void *stream, int mode)'),
    cuStreamEndCapture: f('int cuStreamEndCapture(void *stream, void *graph)'),
    cuGraphInstantiateWithFlags: f('int cuGraphInstantiateWithFlags(void *exec, void *graph, uint64_t flags)'),
    cuGraphLaunch: f('int cuGraphLaunch(void *exec, void *stream)'),
    cuGraphExecDestroy: f('int cuGraphExecDestroy(void *exec)'),
    cuGraphDestroy: f('int cuGraphDestroy(void *graph)'),
    cuGetErrorString: f('int cuGetErrorString(int error, void *str)'),
    cuGetErrorName: f('int cuGetErrorName(int error, void *str)'),
  };
}

export interface GpuInfo {
  name: string;
  ordinal: number;
  computeCapability: [number, number];
  multiprocessors: number;
  maxSharedMemoryPerBlockOptin: number;
  totalMemoryBytes: number;
  /** e.g. 13000 for CUDA 13.0. */
  driverVersion: number;
  libcudaPath: string;
}

/** The driver, one device's primary context and one non-blocking stream everything runs on. */
export class CudaDriver {
  readonly fn: DriverFunctions;
  readonly info: GpuInfo;
  readonly device: number;
  readonly context: Handle;
  readonly stream: Handle;
  private readonly outPtr = new BigUint64Array(1);
  private readonly outInt = new Int32Array(1);

  constructor(ordinal = 0) {
    const opened = openLibrary('the CUDA driver', ['libcuda.so.1', 'libcuda.so']);
    this.fn = bindDriver(opened.lib);
    const initStatus = this.fn.cuInit(0) as number;
    if (initStatus !== 0) {
      throw new CudaUnavailableError(
        `CUDA unavailable: cuInit failed in ${opened.path}: ${this.errorText(initStatus)} (no GPU, or the driver is not loaded)`,
      );
    }
    this.check(this.fn.cuDeviceGetCount(this.outInt), 'cuDeviceGetCount');
    const count = this.outInt[0];
    if (count <= ordinal) {
      throw new CudaUnavailableError(
        `CUDA unavailable: ${count} GPU(s) visible to ${opened.path}, device ${ordinal} requested`,
      );
    }
    this.check(this.fn.cuDeviceGet(this.outInt, ordinal), 'cuDeviceGet');
    this.device = this.outInt[0];
    this.check(this.fn.cuDriverGetVersion(this.outInt), 'cuDriverGetVersion');
    const driverVersion = this.outInt[0];
    const nameBuf = Buffer.alloc(256);
    this.check(this.fn.cuDeviceGetName(nameBuf, nameBuf.length, this.device), 'cuDeviceGetName');
    const total = new BigUint64Array(1);
    this.check(this.fn.cuDeviceTotalMem(total, this.device), 'cuDeviceTotalMem');
    this.info = {
      name: nameBuf.toString('utf8', 0, nameBuf.indexOf(0)),
      ordinal,
      computeCapability: [
        this.attribute(DeviceAttribute.COMPUTE_CAPABILITY_MAJOR),
        this.attribute(DeviceAttribute.COMPUTE_CAPABILITY_MINOR),
      ],
      multiprocessors: this.attribute(DeviceAttribute.MULTIPROCESSOR_COUNT),
      maxSharedMemoryPerBlockOptin: this.attribute(DeviceAttribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      totalMemoryBytes: Number(total[0]),
      driverVersion,
      libcudaPath: opened.path,
    };
    if (this.attribute(DeviceAttribute.MEMORY_POOLS_SUPPORTED) === 0) {
      throw new CudaUnavailableError(`CUDA unavailable: ${this.info.name} does not support stream-ordered memory pools`);
    }

    this.check(this.fn.cuDevicePrimaryCtxRetain(this.outPtr, this.device), 'cuDevicePrimaryCtxRetain');
    this.context = this.outPtr[0];
    this.check(this.fn.cuCtxSetCurrent(this.context), 'cuCtxSetCurrent');
    this.check(this.fn.cuStreamCreate(this.outPtr, CU_STREAM_NON_BLOCKING), 'cuStreamCreate');
    this.stream = this.outPtr[0];

    // Keep freed pool memory cached instead of returning it to the OS at each synchronize.
    this.check(this.fn.cuDeviceGetDefaultMemPool(this.outPtr, this.device), 'cuDeviceGetDefaultMemPool');
    const pool = this.outPtr[0];
    this.check(
      this.fn.cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, new BigUint64Array([0xffffffffffffffffn])),
      'cuMemPoolSetAttribute(RELEASE_THRESHOLD)',
    );
  }

  attribute(attrib: number): number {
    this.check(this.fn.cuDeviceGetAttribute(this.outInt, attrib, this.device), `cuDeviceGetAttribute(${attrib})`);
    return this.outInt[0];
  }

  /** "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for a CUresult. */
  errorText(status: number): string {
    const p = new BigUint64Array(1);
    let name = `CUresult ${status}`;
    let text = '';
    if ((this.fn.cuGetErrorName(status, p) as number) === 0 && p[0] !== 0n) name = koffi.decode(p[0], 'char', -1) as string;
    if ((this.fn.cuGetErrorString(status, p) as number) === 0 && p[0] !== 0n) text = koffi.decode(p[0], 'char', -1) as string;
    return text ? `${name} (${text})` : name;
  }

  check(status: number, what: string): void {
    if (status !== 0) throw new CudaError(`CUDA error in ${what}: ${this.errorText(status)}`);
  }

  // --- memory ---------------------------------------------------------------------------------

  /** Stream-ordered allocation from the device's default pool. */
  allocAsync(bytes: number): DevicePtr {
    this.check(this.fn.cuMemAllocAsync(this.outPtr, Math.max(bytes, 1), this.stream), `cuMemAllocAsync(${bytes} bytes)`);
    return this.outPtr[0];
  }

  freeAsync(ptr: DevicePtr): void {
    this.check(this.fn.cuMemFreeAsync(ptr, this.stream), 'cuMemFreeAsync');
  }

  /** A plain (non-pool) allocation kept for the device's lifetime (e.g. the cuBLASLt workspace). */
  allocPermanent(bytes: number): DevicePtr {
    this.check(this.fn.cuMemAlloc(this.outPtr, bytes), `cuMemAlloc(${bytes} bytes)`);
    return this.outPtr[0];
  }

  /** Page-locked host memory (kept for the device's lifetime): address and a view of it. */
  allocPinned(bytes: number): { address: bigint; buffer: ArrayBuffer } {
    this.check(this.fn.cuMemHostAlloc(this.outPtr, bytes, 0), `cuMemHostAlloc(${bytes} bytes)`);
    const address = this.outPtr[0];
    return { address, buffer: koffi.view(address, bytes) };
  }

  /** Host → device on the stream. `src` is a typed array (pageable: staged before return) or a pinned address. */
  copyToDevice(dst: DevicePtr, src: ArrayBufferView | bigint, bytes: number): void {
    if (bytes === 0) return;
    this.check(this.fn.cuMemcpyHtoDAsync(dst, src, bytes, this.stream), `cuMemcpyHtoDAsync(${bytes} bytes)`);
  }

  /** Device → host, then waits for the stream: `dst` is complete on return. */
  copyToHost(dst: ArrayBufferView, src: DevicePtr, bytes: number): void {
    if (bytes === 0) return;
    this.check(this.fn.cuMemcpyDtoHAsync(dst, src, bytes, this.stream), `cuMemcpyDtoHAsync(${bytes} bytes)`);
    this.synchronize();
  }

  /** Device → pinned host memory on the stream, without waiting (pair with an event). */
  copyToHostAsync(dst: bigint, src: DevicePtr, bytes: number): void {
    if (bytes === 0) return;
    this.check(this.fn.cuMemcpyDtoHAsync(dst, src, bytes, this.stream), `cuMemcpyDtoHAsync(${bytes} bytes)`);
  }

  copyDeviceToDevice(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    if (bytes === 0) return;
    this.check(this.fn.cuMemcpyDtoDAsync(dst, src, bytes, this.stream), `cuMemcpyDtoDAsync(${bytes} bytes)`);
  }

  memsetZero(dst: DevicePtr, bytes: number): void {
    if (bytes === 0) return;
    this.check(this.fn.cuMemsetD8Async(dst, 0, bytes, this.stream), 'cuMemsetD8Async');
  }

  memoryInfo(): { freeBytes: number; totalBytes: number } {
    const free = new BigUint64Array(1);
    const total = new BigUint64Array(1);
    this.check(this.fn.cuMemGetInfo(free, total), 'cuMemGetInfo');
    return { freeBytes: Number(free[0]), totalBytes: Number(total[0]) };
  }

  synchronize(): void {
    this.check(this.fn.cuStreamSynchronize(this.stream), 'cuStreamSynchronize (an earlier kernel or copy failed)');
  }

  // --- modules and launches -------------------------------------------------------------------

  loadModule(image: Buffer, what: string): Handle {
    this.check(this.fn.cuModuleLoadData(this.outPtr, image), `cuModuleLoadData(${what})`);
    return this.outPtr[0];
  }

  getFunction(module: Handle, name: string): Handle {
    this.check(this.fn.cuModuleGetFunction(this.outPtr, module, name), `cuModuleGetFunction(${name})`);
    return this.outPtr[0];
  }

  setMaxDynamicSharedMemory(fn: Handle, bytes: number, name: string): void {
    this.check(
      this.fn.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
      `cuFuncSetAttribute(${name}, MAX_DYNAMIC_SHARED_SIZE_BYTES=${bytes})`,
    );
  }

  // --- events and graphs ----------------------------------------------------------------------

  createEvent(): Handle {
    this.check(this.fn.cuEventCreate(this.outPtr, CU_EVENT_DEFAULT), 'cuEventCreate');
    return this.outPtr[0];
  }

  recordEvent(event: Handle): void {
    this.check(this.fn.cuEventRecord(event, this.stream), 'cuEventRecord');
  }

  /** Milliseconds between two recorded events; waits for `end`. */
  elapsedMs(start: Handle, end: Handle): number {
    this.check(this.fn.cuEventSynchronize(end), 'cuEventSynchronize');
    const ms = new Float32Array(1);
    this.check(this.fn.cuEventElapsedTime(ms, start, end), 'cuEventElapsedTime');
    return ms[0];
  }

  /** Waits until the work queued before `event` was recorded is done. */
  synchronizeEvent(event: Handle): void {
    this.check(this.fn.cuEventSynchronize(event), 'cuEventSynchronize');
  }

  destroyEvent(event: Handle): void {
    this.check(this.fn.cuEventDestroy(event), 'cuEventDestroy');
  }

  beginCapture(): void {
    this.check(this.fn.cuStreamBeginCapture(this.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), 'cuStreamBeginCapture');
  }

  /** Ends capture and instantiates the graph; returns [graph, executable graph]. */
  endCapture(): [Handle, Handle] {
    this.check(this.fn.cuStreamEndCapture(this.stream, this.outPtr), 'cuStreamEndCapture');
    const graph = this.outPtr[0];
    this.check(this.fn.cuGraphInstantiateWithFlags(this.outPtr, graph, 0n), 'cuGraphInstantiateWithFlags');
    return [graph, this.outPtr[0]];
  }

  /** Ends a capture that failed part-way, discarding the graph (best effort). */
  abortCapture(): void {
    if ((this.fn.cuStreamEndCapture(this.stream, this.outPtr) as number) === 0 && this.outPtr[0] !== 0n) {
      this.fn.cuGraphDestroy(this.outPtr[0]);
    }
  }

  launchGraph(exec: Handle): void {
    this.check(this.fn.cuGraphLaunch(exec, this.stream), 'cuGraphLaunch');
  }

  destroyGraph(graph: Handle, exec: Handle): void {
    this.check(this.fn.cuGraphExecDestroy(exec), 'cuGraphExecDestroy');
    this.check(this.fn.cuGraphDestroy(graph), 'cuGraphDestroy');
  }
}
