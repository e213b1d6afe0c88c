// The CUDA backend: koffi bindings to libcuda, NVRTC and cuBLASLt; kernels in ./kernels/*.cu.
export {
  CudaDevice, CudaEvent, CudaGraph, CudaInts, createCudaDevice,
  type CudaDeviceInfo, type CudaDeviceOptions, type CudaMemoryStats,
} from './device.js';
export { CudaTensor } from './tensor.js';
export { CudaError, CudaUnavailableError } from './errors.js';
