// CpuTrainingOps: the float32 reference of TrainingOps (device.ts), for CpuDevice.training.

import type {
  AdamWOptions, AttentionShape, DistillLossArgs, DistillLossRows, TeacherTopK, Tensor, TrainingOps,
} from '../device.js';
import type { CpuDevice } from './cpu-device.js';

export class CpuTrainingOps implements TrainingOps {
  constructor(readonly device: CpuDevice) {}

  emptyF32(shape: readonly number[]): Tensor {
    const t = this.device.empty(shape);
    t.data.fill(0);
    return t;
  }

  uploadF32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.device.upload(data, shape);
  }

  castCopy(_dst: Tensor, _src: Tensor): void { throw new Error('castCopy: not implemented yet'); }
  fill(_t: Tensor, _value: number): void { throw new Error('fill: not implemented yet'); }
  scale(_t: Tensor, _s: number): void { throw new Error('scale: not implemented yet'); }
  matmulGradInput(_dx: Tensor, _dy: Tensor, _w: Tensor, _accumulate: boolean): void { throw new Error('not implemented yet'); }
  matmulGradWeight(_dw: Tensor, _dy: Tensor, _x: Tensor): void { throw new Error('not implemented yet'); }
  biasGrad(_db: Tensor, _dy: Tensor): void { throw new Error('not implemented yet'); }
  rmsNormBackward(_dx: Tensor, _dw: Tensor, _dy: Tensor, _x: Tensor, _w: Tensor, _eps: number, _accumulate: boolean): void { throw new Error('not implemented yet'); }
  layerNormBackward(_dx: Tensor, _dw: Tensor, _db: Tensor, _dy: Tensor, _x: Tensor, _w: Tensor, _b: Tensor, _eps: number, _accumulate: boolean): void { throw new Error('not implemented yet'); }
  ropeBackward(_dx: Tensor, _positions: Int32Array, _cos: Tensor, _sin: Tensor, _nHeads: number, _headDim: number, _rotaryDim: number): void { throw new Error('not implemented yet'); }
  attentionForward(_out: Tensor, _lse: Tensor, _q: Tensor, _k: Tensor, _v: Tensor, _shape: AttentionShape): void { throw new Error('not implemented yet'); }
  attentionBackward(_dq: Tensor, _dk: Tensor, _dv: Tensor, _dOut: Tensor, _out: Tensor, _lse: Tensor, _q: Tensor, _k: Tensor, _v: Tensor, _shape: AttentionShape): void { throw new Error('not implemented yet'); }
  siluMulBackward(_dGate: Tensor, _dUp: Tensor, _dAct: Tensor, _gate: Tensor, _up: Tensor): void { throw new Error('not implemented yet'); }
  geluTanhBackward(_dx: Tensor, _dy: Tensor, _x: Tensor): void { throw new Error('not implemented yet'); }
  embeddingBackward(_dTable: Tensor, _dOut: Tensor, _ids: Int32Array): void { throw new Error('not implemented yet'); }
  distillLoss(_args: DistillLossArgs): DistillLossRows { throw new Error('not implemented yet'); }
  topK(_logits: Tensor, _k: number, _temperature: number): TeacherTopK { throw new Error('not implemented yet'); }
  sumSquares(_tensors: readonly Tensor[]): number { throw new Error('not implemented yet'); }
  adamw(_p: { master: Tensor; grad: Tensor; m: Tensor; v: Tensor; compute?: Tensor }, _o: AdamWOptions): void { throw new Error('not implemented yet'); }
}
