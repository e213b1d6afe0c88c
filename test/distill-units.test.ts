// distill's pieces that need no TrainableDecoder: the LR schedule and default rule, the seeded
// window sampler (coverage, determinism, seek), settings resolution and --resume agreement, and the
// trainer step on a bigram test model with the CPU TrainingOps (accumulation, clipping folded into
// gradScale, the schedule, CE-only runs never touching the teacher).
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { WindowSampler, epochSeed } from '../src/compress/distill/data.js';
import { defaultLearningRate, defaultWarmup, FINAL_LR_FRACTION, learningRate } from '../src/compress/distill/schedule.js';
import { checkRequested, resolveSettings, settingsForResume, type ResolveContext } from '../src/compress/distill/settings.js';
import { DistillTrainer, type TeacherModel, type TrainerOptions } from '../src/compress/distill/trainer.js';
import { LlmoptError } from '../src/errors.js';
import { seededRandom } from '../src/random.js';
import { createCpuDevice, type CpuDevice } from '../src/tensor/cpu/index.js';
import type { AdamWOptions, TrainingOps } from '../src/tensor/device.js';
import { BigramModel, randomTable } from './helpers/bigram-model.js';

describe('learning-rate schedule', () => {
  const s = { lr: 1e-3, warmup: 4, steps: 20 };
  test('linear warmup to the peak, cosine down to the floor', () => {
    expect([0, 1, 2, 3].map((i) => learningRate(s, i))).toEqual([2.5e-4, 5e-4, 7.5e-4, 1e-3]);
    expect(learningRate(s, 4)).toBeCloseTo(1e-3, 15);
    // Halfway through the decay: the midpoint between peak and floor.
    expect(learningRate(s, 4 + 8)).toBeCloseTo(1e-3 * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) / 2), 15);
    expect(learningRate(s, 19)).toBeGreaterThan(1e-3 * FINAL_LR_FRACTION);
    expect(learningRate(s, 19)).toBeLessThan(1e-3 * (FINAL_LR_FRACTION + 0.01));
    for (let i = 5; i < 20; i++) expect(learningRate(s, i)).toBeLessThan(learningRate(s, i - 1));
  });
  test('no warmup: the first step runs at the peak', () => {
    expect(learningRate({ lr: 2e-4, warmup: 0, steps: 10 }, 0)).toBe(2e-4);
    expect(learningRate({ lr: 2e-4, warmup: 0, steps: 1 }, 0)).toBe(2e-4);
  });
  test('default warmup and learning rate rule', () => {
    expect([1, 19, 20, 400, 5000].map(defaultWarmup)).toEqual([0, 0, 1, 20, 100]);
    expect(defaultLearningRate(1e9)).toBeCloseTo(1e-4, 12);
    expect(defaultLearningRate(8e9)).toBeCloseTo(5e-5, 12);
    expect(defaultLearningRate(260_032)).toBeCloseTo(1e-4 * Math.cbrt(1e9 / 260_032), 12);
    expect(defaultLearningRate(10)).toBe(3e-3);
    expect(defaultLearningRate(1e15)).toBe(1e-5);
  });
});

describe('window sampler', () => {
  const tokens = Int32Array.from({ length: 1000 }, (_, i) => i);
  const L = 16;

  test('each epoch visits every window of its cut once; targets are the next tokens', () => {
    const s = new WindowSampler(tokens, L, 7);
    const count = Math.floor((tokens.length - 1) / L);
    const starts = new Set<number>();
    let epoch0 = 0;
    while (s.position.epoch === 0 && s.position.cursor < 62) {
      const { ids, targets } = s.next(1);
      for (let j = 0; j < L; j++) expect(targets[j]).toBe(ids[j]! + 1);
      starts.add(ids[0]!);
      epoch0++;
    }
    // Offsets cut at o + k·L with o < L: 62 windows of 16 (+1) fit in 1000 tokens whatever o is.
    expect(count).toBe(62);
    expect(starts.size).toBe(62);
    const offset = Math.min(...starts);
    expect(offset).toBeLessThan(L);
    for (const st of starts) expect((st - offset) % L).toBe(0);
    expect(epoch0).toBe(62);
    // The next window starts epoch 1, cut and ordered anew.
    s.next(1);
    expect(s.position).toEqual({ epoch: 1, cursor: 1 });
  });

  test('same seed → same order; another seed → another; epochs differ', () => {
    const draw = (seed: number, n: number) => Array.from(new WindowSampler(tokens, L, seed).next(n).ids.filter((_, i) => i % L === 0));
    expect(draw(3, 40)).toEqual(draw(3, 40));
    expect(draw(3, 40)).not.toEqual(draw(4, 40));
    expect(epochSeed(0, 0)).not.toBe(epochSeed(0, 1));
    expect(epochSeed(0, 1)).not.toBe(epochSeed(1, 0));
    const s = new WindowSampler(tokens, L, 3);
    const e0 = Array.from(s.next(62).ids.filter((_, i) => i % L === 0));
    const e1 = Array.from(s.next(62).ids.filter((_, i) => i % L === 0));
    expect(e1).not.toEqual(e0);
  });

  test('seek to a saved position continues exactly, across an epoch boundary', () => {
    const a = new WindowSampler(tokens, L, 11);
    a.next(50);
    const saved = a.position;
    const rest = a.next(30);
    const b = new WindowSampler(tokens, L, 11);
    b.seek(saved);
    expect(b.next(30)).toEqual(rest);
    expect(() => b.seek({ epoch: 0, cursor: 99 })).toThrow(/past epoch 0/);
  });

  test('the smallest stream: one window of L+1 tokens', () => {
    const s = new WindowSampler(tokens.subarray(0, L + 1), L, 0);
    expect(WindowSampler.windowsPerEpoch(L + 1, L)).toBe(1);
    expect(WindowSampler.windowsPerEpoch(L, L)).toBe(0);
    const { ids } = s.next(3);
    expect(Array.from(ids.subarray(0, L))).toEqual(Array.from(ids.subarray(L, 2 * L)));
    expect(() => new WindowSampler(tokens.subarray(0, L), L, 0)).toThrow(RangeError);
  });
});

describe('settings', () => {
  const ctx: ResolveContext = { windowsPerEpoch: (L) => Math.floor(9999 / L), defaultSeqLen: 128, maxSeqLen: 512, vocabSize: 512, defaultLr: 1.5e-3 };
  test('defaults: one epoch, the size rule, 5% warmup', () => {
    const s = resolveSettings({}, ctx, defaultWarmup);
    expect(s).toMatchObject({ seq_len: 128, batch: 8, grad_accum: 1, steps: Math.floor(78 / 8), lr: 1.5e-3, warmup: 0, loss: 'kl', alpha: 0, temperature: 1, teacher_topk: 0 });
  });
  test('--tokens rounds up to whole steps', () => {
    expect(resolveSettings({ tokens: 10_000, batch: 4, gradAccum: 2, seqLen: 64 }, ctx, defaultWarmup).steps).toBe(Math.ceil(10_000 / 512));
  });
  test('bad values name their flag', () => {
    const bad = (r: Parameters<typeof checkRequested>[0], msg: RegExp) => expect(() => checkRequested(r)).toThrow(msg);
    bad({ alpha: 1.5 }, /--alpha 1\.5: expected a weight in \[0, 1\]/);
    bad({ temperature: 0 }, /--temperature 0: expected a temperature > 0/);
    bad({ batch: 0 }, /--batch 0: expected an integer ≥ 1/);
    bad({ seed: -1 }, /--seed -1/);
    bad({ steps: 2, tokens: 9 }, /--steps and --tokens both given/);
    expect(() => resolveSettings({ seqLen: 1024 }, ctx, defaultWarmup)).toThrow(/--seq-len 1024 is longer than the models' context \(max_position_embeddings 512\)/);
    expect(() => resolveSettings({ teacherTopK: 512 }, ctx, defaultWarmup)).toThrow(/--teacher-topk 512 is not smaller than the vocabulary/);
    expect(() => resolveSettings({ steps: 5, warmup: 6 }, ctx, defaultWarmup)).toThrow(/--warmup 6 is more than the run's 5 steps/);
  });
  test('--resume: flags left out take the checkpoint values; a differing flag is refused', () => {
    const saved = resolveSettings({ steps: 40, lr: 1e-3, batch: 2 }, ctx, defaultWarmup);
    expect(settingsForResume({}, saved)).toEqual(saved);
    expect(settingsForResume({ steps: 40, lr: 1e-3 }, saved)).toEqual(saved);
    expect(() => settingsForResume({ lr: 2e-3 }, saved)).toThrow(/--resume: --lr 0\.002 differs from the checkpoint's --lr 0\.001/);
    expect(() => settingsForResume({ tokens: 1 }, saved)).toThrow(/--tokens 1 \(1 steps\) differs from the checkpoint's --steps 40/);
  });
});

describe('trainer step (bigram test model, CPU TrainingOps)', () => {
  let device: CpuDevice;
  const V = 24;
  const L = 8;
  beforeAll(() => {
    device = createCpuDevice({ threads: 1 });
  });
  afterAll(() => device?.close());

  /** A fixed stream of windows (the sampler's job is tested above). */
  function batches(seed: number) {
    const r = seededRandom(seed);
    return (b: number) => {
      const ids = new Int32Array(b * L);
      const targets = new Int32Array(b * L);
      for (let w = 0; w < b; w++) {
        for (let j = 0; j < L; j++) ids[w * L + j] = Math.floor(r() * V);
        for (let j = 0; j < L; j++) targets[w * L + j] = Math.floor(r() * V);
      }
      return { ids, targets };
    };
  }

  function trainer(over: Partial<TrainerOptions> & { student: BigramModel }): DistillTrainer {
    return new DistillTrainer({
      ops: device.training,
      teacher: new BigramModel(device, device.training, V, randomTable(V, 99, 3)),
      nextBatch: batches(1),
      batch: 2,
      seqLen: L,
      gradAccum: 1,
      loss: { kind: 'kl', temperature: 1, alpha: 0, skewLambda: 0.1, teacherTopK: 0 },
      optimizer: { lr: 1e-2, warmup: 2, steps: 6, weightDecay: 0, clipGrad: 0, beta1: 0.9, beta2: 0.95, eps: 1e-8 },
      ...over,
    });
  }

  test('K micro-batches of B windows = one micro-batch of K·B windows', () => {
    const a = new BigramModel(device, device.training, V, randomTable(V, 5));
    const b = new BigramModel(device, device.training, V, randomTable(V, 5));
    const ta = trainer({ student: a, batch: 4, gradAccum: 1, nextBatch: batches(2) });
    const tb = trainer({ student: b, batch: 2, gradAccum: 2, nextBatch: batches(2) });
    for (let i = 0; i < 3; i++) {
      const ra = ta.step(i);
      const rb = tb.step(i);
      expect(rb.loss).toBeCloseTo(ra.loss, 6);
      expect(rb.gradNorm).toBeCloseTo(ra.gradNorm, 6);
    }
    const wa = a.weights();
    const wb = b.weights();
    for (let i = 0; i < wa.length; i++) expect(Math.abs(wa[i]! - wb[i]!)).toBeLessThan(1e-6);
  });

  test('the schedule sets each step\'s lr; clipping is folded into gradScale; norm is of the unclipped gradient', () => {
    const calls: AdamWOptions[] = [];
    const ops = device.training;
    const spy: TrainingOps = Object.create(ops, { adamw: { value: (p: Parameters<TrainingOps['adamw']>[0], o: AdamWOptions) => (calls.push(o), ops.adamw(p, o)) } });
    const student = new BigramModel(device, ops, V, randomTable(V, 6));
    const opt = { lr: 1e-2, warmup: 2, steps: 6, weightDecay: 0.1, clipGrad: 0.05, beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    const t = trainer({ student, ops: spy, optimizer: opt });
    for (let i = 0; i < 6; i++) {
      const r = t.step(i);
      expect(calls[i]!.lr).toBe(learningRate(opt, i));
      expect(calls[i]!.step).toBe(i + 1);
      expect(calls[i]!.weightDecay).toBe(0.1);
      expect(r.gradNorm).toBeGreaterThan(0.05);
      expect(calls[i]!.gradScale).toBeCloseTo(0.05 / r.gradNorm, 12);
    }
  });

  test('gradNorm is the L2 norm of the accumulated gradient; loss is the mean over positions', () => {
    const student = new BigramModel(device, device.training, V, randomTable(V, 8));
    const teacher = new BigramModel(device, device.training, V, randomTable(V, 99, 3));
    const next = batches(3);
    const { ids, targets } = next(2);
    // Reference: the loss op on the same rows, its dLogits scattered by hand.
    const tl = teacher.forward(ids, 2, L);
    const sl = student.forward(ids, 2, L);
    const rows = device.training.distillLoss({ logits: sl, dLogits: sl, teacher: { logits: tl }, targets, kind: 'kl', temperature: 1, alpha: 0, gradScale: 1 / (2 * L) });
    const d = device.download(sl);
    const grad = new Float64Array(V * V);
    for (let r = 0; r < 2 * L; r++) for (let c = 0; c < V; c++) grad[ids[r]! * V + c]! += d[r * V + c]!;
    const norm = Math.sqrt(grad.reduce((s, g) => s + g * g, 0));
    const meanLoss = rows.loss.reduce((a, b) => a + b, 0) / (2 * L);

    const fresh = new BigramModel(device, device.training, V, randomTable(V, 8));
    const again = batches(3);
    const r = trainer({ student: fresh, teacher, nextBatch: again }).step(0);
    expect(r.loss).toBeCloseTo(meanLoss, 10);
    expect(r.gradNorm).toBeCloseTo(norm, 6);
  });

  test('student = teacher: zero KL, zero gradient, weights unchanged (no weight decay)', () => {
    const table = randomTable(V, 12, 2);
    const student = new BigramModel(device, device.training, V, table);
    const r = trainer({ student, teacher: new BigramModel(device, device.training, V, table) }).step(0);
    expect(Math.abs(r.loss)).toBeLessThan(1e-6);
    expect(r.gradNorm).toBeLessThan(1e-6);
    const w = student.weights();
    for (let i = 0; i < w.length; i++) expect(Math.abs(w[i]! - table[i]!)).toBeLessThan(1e-5);
  });

  test('--alpha 1 never runs the teacher; the loss is the cross-entropy', () => {
    const teacher: TeacherModel = { forward: () => { throw new Error('the teacher must not run'); } };
    const student = new BigramModel(device, device.training, V, randomTable(V, 13));
    const r = trainer({ student, teacher, loss: { kind: 'kl', temperature: 2, alpha: 1, skewLambda: 0.1, teacherTopK: 0 } }).step(0);
    expect(r.loss).toBeCloseTo(r.ce, 12);
    expect(r.ce).toBeGreaterThan(0);
  });

  test('distillation pulls the student towards the teacher (KL falls), also with --teacher-topk', () => {
    for (const teacherTopK of [0, 4]) {
      const student = new BigramModel(device, device.training, V, randomTable(V, 14));
      const t = trainer({ student, optimizer: { lr: 5e-2, warmup: 0, steps: 60, weightDecay: 0, clipGrad: 1, beta1: 0.9, beta2: 0.95, eps: 1e-8 }, loss: { kind: 'kl', temperature: 1, alpha: 0, skewLambda: 0.1, teacherTopK } });
      const first = t.step(0).loss;
      let last = first;
      for (let i = 1; i < 60; i++) last = t.step(i).loss;
      expect(last).toBeLessThan(first * 0.5);
    }
  });

  test('a diverged step is an LlmoptError before any weight changes', () => {
    const student = new BigramModel(device, device.training, V, randomTable(V, 15));
    device.training.fill(student.params[0]!.master, Number.NaN);
    expect(() => trainer({ student }).step(0)).toThrow(LlmoptError);
  });
});
