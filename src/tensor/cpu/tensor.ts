// CpuTensor: a float32 tensor in host memory. `base` is the whole storage (a Float32Array over an
// ArrayBuffer, or a SharedArrayBuffer when worker threads are on); the tensor is the `length`
// elements starting at `offset`. Views (`view`, `rows`) share `base` with another offset/shape.

import type { Device, Tensor } from '../device.js';

export class CpuTensor implements Tensor {
  readonly dtype = 'f32' as const;
  readonly shape: readonly number[];
  /** Elements in the last dimension (1 for a scalar). */
  readonly cols: number;
  /** Product of all dimensions but the last. */
  readonly rowCount: number;

  constructor(
    readonly device: Device,
    readonly base: Float32Array,
    readonly offset: number,
    readonly length: number,
    shape: readonly number[],
  ) {
    this.shape = Object.freeze([...shape]);
    this.cols = shape.length === 0 ? 1 : shape[shape.length - 1];
    let rows = 1;
    for (let i = 0; i < shape.length - 1; i++) rows *= shape[i];
    this.rowCount = rows;
  }

  /** The tensor's elements as a Float32Array sharing storage (no copy). */
  get data(): Float32Array {
    return this.base.subarray(this.offset, this.offset + this.length);
  }
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`invalid shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

export function fmtShape(t: Tensor): string {
  return `[${t.shape.join(',')}]`;
}
