// CudaTensor: a row-major tensor in device memory. `ptr` is the address of its first element;
// views (`view`, `rows`) share the owning tensor's Storage at another address/shape.

import type { ComputeDType, Device, Tensor } from '../device.js';
import type { DevicePtr } from './driver.js';

/** One device allocation. Freed once, by the tensor that owns it. */
export class Storage {
  freed = false;
  constructor(
    readonly ptr: DevicePtr,
    readonly bytes: number,
  ) {}
}

export function elementBytes(dtype: ComputeDType): number {
  return dtype === 'f32' ? 4 : 2;
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

export class CudaTensor implements Tensor {
  readonly shape: readonly number[];
  /** Element count. */
  readonly size: number;
  /** Elements in the last dimension (1 for a scalar). */
  readonly cols: number;
  /** Product of all dimensions but the last. */
  readonly rowCount: number;

  constructor(
    readonly device: Device,
    readonly dtype: ComputeDType,
    readonly ptr: DevicePtr,
    shape: readonly number[],
    readonly storage: Storage,
    /** True for the tensor that allocated `storage` (free() releases it). */
    readonly owner: boolean,
  ) {
    this.shape = Object.freeze([...shape]);
    this.size = shapeSize(shape);
    this.cols = shape.length === 0 ? 1 : shape[shape.length - 1];
    this.rowCount = this.cols === 0 ? 0 : this.size / this.cols;
  }

  get bytes(): number {
    return this.size * elementBytes(this.dtype);
  }
}
