// Distillation settings: what the user asked for (every field optional), checked; and the resolved
// settings that decide the trained weights (a resume must use the same ones).

import { LlmoptError } from '../../errors.js';
import type { DistillLossKind } from '../../tensor/device.js';

export const LOSS_KINDS: readonly DistillLossKind[] = ['kl', 'reverse-kl', 'skew-kl'];

export const DEFAULTS = {
  batch: 8,
  gradAccum: 1,
  /** Training and eval window: min(this, both models' max_position_embeddings). */
  maxSeqLen: 512,
  weightDecay: 0,
  clipGrad: 1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  seed: 0,
  loss: 'kl' as DistillLossKind,
  temperature: 1,
  alpha: 0,
  skewLambda: 0.1,
  teacherTopK: 0,
  /** Checkpoint every this many steps (and always at the end). */
  saveEvery: 1000,
} as const;

/** Every setting that changes the trained weights, as saved in checkpoints and reports. */
export interface TrajectorySettings {
  steps: number;
  seq_len: number;
  batch: number;
  grad_accum: number;
  lr: number;
  warmup: number;
  weight_decay: number;
  clip_grad: number;
  beta1: number;
  beta2: number;
  eps: number;
  seed: number;
  loss: DistillLossKind;
  temperature: number;
  alpha: number;
  skew_lambda: number;
  /** 0 = the teacher's full logits. */
  teacher_topk: number;
}

/** The flag each trajectory setting comes from (for messages); beta/eps/skew have no flag. */
export const SETTING_FLAGS: Partial<Record<keyof TrajectorySettings, string>> = {
  steps: '--steps',
  seq_len: '--seq-len',
  batch: '--batch',
  grad_accum: '--grad-accum',
  lr: '--lr',
  warmup: '--warmup',
  weight_decay: '--weight-decay',
  clip_grad: '--clip-grad',
  seed: '--seed',
  loss: '--loss',
  temperature: '--temperature',
  alpha: '--alpha',
  teacher_topk: '--teacher-topk',
};

/** What the command line asked for; undefined = not given. */
export interface RequestedSettings {
  steps?: number;
  tokens?: number;
  seqLen?: number;
  batch?: number;
  gradAccum?: number;
  lr?: number;
  warmup?: number;
  weightDecay?: number;
  clipGrad?: number;
  seed?: number;
  loss?: string;
  temperature?: number;
  alpha?: number;
  teacherTopK?: number;
}

function integer(flag: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v === undefined) return;
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new LlmoptError(`${flag} ${v}: expected an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`}`);
  }
}

function real(flag: string, v: number | undefined, ok: (x: number) => boolean, expected: string): void {
  if (v === undefined) return;
  if (!Number.isFinite(v) || !ok(v)) throw new LlmoptError(`${flag} ${v}: expected ${expected}`);
}

/** Range checks that need no model or data; LlmoptError names the flag. */
export function checkRequested(r: RequestedSettings): void {
  if (r.steps !== undefined && r.tokens !== undefined) throw new LlmoptError('--steps and --tokens both given: the budget is one or the other');
  integer('--steps', r.steps, 1);
  integer('--tokens', r.tokens, 1);
  integer('--seq-len', r.seqLen, 1);
  integer('--batch', r.batch, 1);
  integer('--grad-accum', r.gradAccum, 1);
  real('--lr', r.lr, (x) => x > 0, 'a learning rate > 0');
  integer('--warmup', r.warmup, 0);
  real('--weight-decay', r.weightDecay, (x) => x >= 0, 'a number ≥ 0');
  real('--clip-grad', r.clipGrad, (x) => x >= 0, 'a gradient-norm limit ≥ 0 (0 = no clipping)');
  integer('--seed', r.seed, 0, 2 ** 32 - 1);
  if (r.loss !== undefined && !(LOSS_KINDS as readonly string[]).includes(r.loss)) {
    throw new LlmoptError(`--loss ${JSON.stringify(r.loss)}: expected one of ${LOSS_KINDS.join(', ')}`);
  }
  real('--temperature', r.temperature, (x) => x > 0, 'a temperature > 0');
  real('--alpha', r.alpha, (x) => x >= 0 && x <= 1, 'a weight in [0, 1]');
  integer('--teacher-topk', r.teacherTopK, 1);
}

export interface ResolveContext {
  /** Windows of the training data in one epoch at the resolved seq_len (see WindowSampler). */
  windowsPerEpoch: (seqLen: number) => number;
  /** min(DEFAULTS.maxSeqLen, both models' max_position_embeddings). */
  defaultSeqLen: number;
  maxSeqLen: number;
  vocabSize: number;
  defaultLr: number;
}

/**
 * Fills in defaults: seq_len, batch, …; steps from --steps, from --tokens (⌈tokens / (batch ·
 * grad_accum · seq_len)⌉) or one epoch of the data; lr from the size rule; warmup 5% (≤ 100).
 */
export function resolveSettings(r: RequestedSettings, ctx: ResolveContext, defaultWarmup: (steps: number) => number): TrajectorySettings {
  const seqLen = r.seqLen ?? ctx.defaultSeqLen;
  if (seqLen > ctx.maxSeqLen) throw new LlmoptError(`--seq-len ${seqLen} is longer than the models' context (max_position_embeddings ${ctx.maxSeqLen})`);
  const batch = r.batch ?? DEFAULTS.batch;
  const gradAccum = r.gradAccum ?? DEFAULTS.gradAccum;
  const perStep = batch * gradAccum * seqLen;
  const steps = r.steps ?? (r.tokens !== undefined ? Math.ceil(r.tokens / perStep) : Math.max(1, Math.floor(ctx.windowsPerEpoch(seqLen) / (batch * gradAccum))));
  const warmup = r.warmup ?? defaultWarmup(steps);
  if (warmup > steps) throw new LlmoptError(`--warmup ${warmup} is more than the run's ${steps} steps`);
  const topK = r.teacherTopK ?? DEFAULTS.teacherTopK;
  if (topK >= ctx.vocabSize) throw new LlmoptError(`--teacher-topk ${topK} is not smaller than the vocabulary (${ctx.vocabSize}); leave it out to use the full logits`);
  return {
    steps,
    seq_len: seqLen,
    batch,
    grad_accum: gradAccum,
    lr: r.lr ?? ctx.defaultLr,
    warmup,
    weight_decay: r.weightDecay ?? DEFAULTS.weightDecay,
    clip_grad: r.clipGrad ?? DEFAULTS.clipGrad,
    beta1: DEFAULTS.beta1,
    beta2: DEFAULTS.beta2,
    eps: DEFAULTS.eps,
    seed: r.seed ?? DEFAULTS.seed,
    loss: (r.loss as DistillLossKind | undefined) ?? DEFAULTS.loss,
    temperature: r.temperature ?? DEFAULTS.temperature,
    alpha: r.alpha ?? DEFAULTS.alpha,
    skew_lambda: DEFAULTS.skewLambda,
    teacher_topk: topK,
  };
}

/**
 * On --resume: the checkpoint's settings, after checking that every flag given agrees with them
 * (flags left out take the checkpoint's values). LlmoptError names the first flag that differs.
 */
export function settingsForResume(r: RequestedSettings, saved: TrajectorySettings): TrajectorySettings {
  const given: Partial<TrajectorySettings> = {
    steps: r.steps ?? (r.tokens !== undefined ? Math.ceil(r.tokens / (saved.batch * saved.grad_accum * saved.seq_len)) : undefined),
    seq_len: r.seqLen,
    batch: r.batch,
    grad_accum: r.gradAccum,
    lr: r.lr,
    warmup: r.warmup,
    weight_decay: r.weightDecay,
    clip_grad: r.clipGrad,
    seed: r.seed,
    loss: r.loss as DistillLossKind | undefined,
    temperature: r.temperature,
    alpha: r.alpha,
    teacher_topk: r.teacherTopK,
  };
  for (const [key, value] of Object.entries(given) as [keyof TrajectorySettings, TrajectorySettings[keyof TrajectorySettings] | undefined][]) {
    if (value === undefined || value === saved[key]) continue;
    const flag = key === 'steps' && r.steps === undefined ? `--tokens ${r.tokens} (${value} steps)` : `${SETTING_FLAGS[key]} ${value}`;
    throw new LlmoptError(`--resume: ${flag} differs from the checkpoint's ${SETTING_FLAGS[key]} ${saved[key]}; resume with the run's settings (or leave the flag out)`);
  }
  return saved;
}

/** Tokens the student trains on per optimizer step. */
export function tokensPerStep(s: TrajectorySettings): number {
  return s.batch * s.grad_accum * s.seq_len;
}
