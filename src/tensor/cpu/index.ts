// The CPU backend: float32 TypeScript kernels, optionally split across worker threads.
export { CpuDevice, createCpuDevice, type CpuDeviceOptions } from './cpu-device.js';
export { CpuTensor } from './tensor.js';
