// One optimizer step of distillation, llm.c style: for each of K micro-batches, the teacher's
// logits (inference only; one micro-batch of vocab-sized rows at a time, or just its top-k), the
// student's forward, the fused loss that writes dLogits in place, the student's backward (param
// grads accumulate); then the global gradient norm, the clip factor folded into AdamW's gradScale,
// AdamW on every parameter, and zeroed grads.

import { LlmoptError } from '../../errors.js';
import type { TrainParam } from '../../model/train/index.js';
import type { DistillLossKind, Tensor, TrainingOps } from '../../tensor/device.js';
import type { MicroBatch } from './data.js';
import { learningRate, type LrSchedule } from './schedule.js';

/** What the trainer needs from the student (TrainableDecoder implements it). */
export interface StudentModel {
  readonly params: readonly TrainParam[];
  forward(ids: Int32Array, batch: number, seq: number): Tensor;
  backward(dLogits: Tensor): void;
  zeroGrads(): void;
}

/** What the trainer needs from the teacher (an inference Decoder implements it). */
export interface TeacherModel {
  forward(ids: Int32Array, batch: number, seq: number): Tensor;
}

export interface LossSettings {
  kind: DistillLossKind;
  temperature: number;
  /** Weight of the hard-label cross-entropy; 1 = plain fine-tuning (the teacher is never run). */
  alpha: number;
  skewLambda: number;
  /** Keep only the teacher's top-k logits per row (+ its log-sum-exp); 0 = full logits. */
  teacherTopK: number;
}

export interface OptimizerSettings extends LrSchedule {
  weightDecay: number;
  /** Global gradient-norm limit; 0 = no clipping. */
  clipGrad: number;
  beta1: number;
  beta2: number;
  eps: number;
}

export interface StepResult {
  /** 1-based: the number of optimizer steps done after this one. */
  step: number;
  lr: number;
  /** Means over the step's scored positions (nats). */
  loss: number;
  distill: number;
  ce: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
}

export interface TrainerOptions {
  ops: TrainingOps;
  student: StudentModel;
  /** Undefined only when loss.alpha = 1 (cross-entropy only). */
  teacher?: TeacherModel;
  /** The next micro-batch of `batch` windows. */
  nextBatch: (batch: number) => MicroBatch;
  batch: number;
  seqLen: number;
  gradAccum: number;
  loss: LossSettings;
  optimizer: OptimizerSettings;
}

/** AdamW's moments of one parameter (f32, the parameter's shape). */
export interface Moments {
  m: Tensor;
  v: Tensor;
}

export class DistillTrainer {
  readonly moments: Moments[];

  constructor(private readonly o: TrainerOptions) {
    if (o.loss.alpha < 1 && o.teacher === undefined) throw new Error('DistillTrainer: a teacher is needed unless alpha = 1');
    this.moments = o.student.params.map((p) => ({ m: o.ops.emptyF32(p.shape), v: o.ops.emptyF32(p.shape) }));
  }

  /** Runs 0-based optimizer step `index` (its learning rate comes from the schedule). */
  step(index: number): StepResult {
    const { ops, student, teacher, batch, seqLen, gradAccum, loss: L, optimizer: opt } = this.o;
    const rows = batch * seqLen;
    const gradScale = 1 / (rows * gradAccum);
    const useTeacher = L.alpha < 1;
    let lossSum = 0;
    let distillSum = 0;
    let ceSum = 0;
    for (let micro = 0; micro < gradAccum; micro++) {
      const { ids, targets } = this.o.nextBatch(batch);
      let teacherArg: { logits: Tensor } | { topK: ReturnType<TrainingOps['topK']> } | undefined;
      if (useTeacher) {
        const teacherLogits = teacher!.forward(ids, batch, seqLen);
        teacherArg = L.teacherTopK > 0 ? { topK: ops.topK(teacherLogits, L.teacherTopK, L.temperature) } : { logits: teacherLogits };
      }
      const logits = student.forward(ids, batch, seqLen);
      const r = ops.distillLoss({
        logits,
        dLogits: logits,
        teacher: teacherArg,
        targets,
        kind: L.kind,
        temperature: L.temperature,
        alpha: L.alpha,
        skewLambda: L.skewLambda,
        gradScale,
      });
      for (let i = 0; i < rows; i++) {
        lossSum += r.loss[i]!;
        distillSum += r.distill[i]!;
        ceSum += r.ce[i]!;
      }
      student.backward(logits);
    }
    const scored = rows * gradAccum;
    const loss = lossSum / scored;
    const gradNorm = Math.sqrt(ops.sumSquares(student.params.map((p) => p.grad)));
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
      throw new LlmoptError(`step ${index + 1}: the training diverged (loss ${loss}, gradient norm ${gradNorm}); lower --lr, or keep --clip-grad on`);
    }
    const clip = opt.clipGrad > 0 && gradNorm > opt.clipGrad ? opt.clipGrad / gradNorm : 1;
    const lr = learningRate(opt, index);
    student.params.forEach((p, i) => {
      const { m, v } = this.moments[i]!;
      ops.adamw(
        { master: p.master, grad: p.grad, m, v, compute: p.compute },
        { lr, beta1: opt.beta1, beta2: opt.beta2, eps: opt.eps, weightDecay: p.noDecay ? 0 : opt.weightDecay, step: index + 1, gradScale: clip },
      );
    });
    student.zeroGrads();
    return { step: index + 1, lr, loss, distill: distillSum / scored, ce: ceSum / scored, gradNorm };
  }
}
