// Test fixture (not shipped): a bigram "language model" whose logits for a token are one row of a
// [V, V] table, with the StudentModel / TeacherModel surface of src/compress/distill/trainer.ts.
// Forward and backward are the CPU device's own embedding ops, so trainer logic (accumulation,
// clipping, schedule, resume) can be tested without the full TrainableDecoder.

import type { StudentModel, TeacherModel } from '../../src/compress/distill/trainer.js';
import type { TrainParam } from '../../src/model/train/index.js';
import { seededRandom } from '../../src/random.js';
import type { Device, Tensor, TrainingOps } from '../../src/tensor/device.js';

export function randomTable(V: number, seed: number, scale = 1): Float32Array {
  const r = seededRandom(seed);
  return Float32Array.from({ length: V * V }, () => (r() * 2 - 1) * scale);
}

export class BigramModel implements StudentModel, TeacherModel {
  readonly params: TrainParam[];
  private ids: Int32Array | undefined;
  private logits: Tensor | undefined;
  forwardCalls = 0;

  constructor(
    private readonly device: Device,
    private readonly ops: TrainingOps,
    readonly V: number,
    table: Float32Array,
  ) {
    const master = ops.uploadF32(table, [V, V]);
    this.params = [{ name: 'model.embed_tokens.weight', shape: [V, V], master, grad: ops.emptyF32([V, V]), noDecay: false }];
  }

  forward(ids: Int32Array, batch: number, seq: number): Tensor {
    this.forwardCalls++;
    if (this.logits === undefined || this.logits.shape[0] !== batch * seq) this.logits = this.device.empty([batch * seq, this.V]);
    this.device.embedding(this.logits, this.params[0]!.master, ids);
    this.ids = ids;
    return this.logits;
  }

  backward(dLogits: Tensor): void {
    this.ops.embeddingBackward(this.params[0]!.grad, dLogits, this.ids!);
  }

  zeroGrads(): void {
    this.ops.fill(this.params[0]!.grad, 0);
  }

  weights(): Float32Array {
    return this.device.download(this.params[0]!.master);
  }
}
