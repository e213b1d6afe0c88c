// The CUDA backend: koffi bindings to libcuda, NVRTC and cuBLASLt; kernels in ./kernels/*.cu.
export {
  CudaDevice, CudaEvent, CudaGraph, CudaInts, PendingInts, createCudaDevice,
  type CudaDeviceInfo, type CudaDeviceOptions, type CudaMemoryStats, type DeviceSampling, type ProfiledOp,
} from './device.js';
export { CudaTensor } from './tensor.js';
export { CudaError, CudaUnavailableError } from './errors.js';
