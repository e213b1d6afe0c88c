#!/usr/bin/env node
// CPU training throughput: stories260K as a student, one optimizer step per batch (forward,
// fused loss, backward, AdamW on every parameter), on real text. Prints tokens/s per
// (threads, batch × seq) and the time per phase; with --teacher also runs stories260K as the
// teacher (inference forward + forward KL), as distill does. Writes nothing.
//
// Usage: npm run build && node bench/cpu-train.js [--threads 1,2] [--shapes 8x256,4x512] [--steps 5] [--teacher] [--recompute]

import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../dist/model/load.js';
import { TrainableDecoder } from '../dist/model/train/index.js';
import { createCpuDevice } from '../dist/tensor/cpu/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const modelDir = path.join(shared, 'models/stories260K');

function flag(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const threadCounts = flag('--threads', [1, 2].filter((t) => t <= availableParallelism()).join(',')).split(',').map(Number);
const shapes = flag('--shapes', '8x256,4x512').split(',').map((s) => s.split('x').map(Number));
const steps = Number(flag('--steps', '5'));
const withTeacher = process.argv.includes('--teacher');
const recompute = process.argv.includes('--recompute');

const loaded = await loadModel(modelDir, createCpuDevice({ threads: 1 }));
const stream = loaded.tokenizer.encode(readFileSync(path.join(shared, 'data/tiny-shakespeare.txt'), 'utf8').slice(0, 400_000));

const now = () => performance.now() / 1000;
const rows = [];
for (const threads of threadCounts) {
  const device = createCpuDevice({ threads });
  const t = device.training;
  const student = await TrainableDecoder.load(modelDir, device, { recompute });
  const teacher = withTeacher ? (await loadModel(modelDir, device)).decoder : undefined;
  const state = student.params.map((p) => ({ m: t.emptyF32(p.shape), v: t.emptyF32(p.shape) }));
  for (const [batch, seq] of shapes) {
    const n = batch * seq;
    const phase = { teacher: 0, forward: 0, loss: 0, backward: 0, adamw: 0 };
    let lossSum = 0;
    // One warm-up step (allocations, JIT), then `steps` timed ones on successive windows.
    for (let step = 0; step <= steps; step++) {
      const ids = Int32Array.from(stream.slice(step * n, (step + 1) * n));
      const targets = new Int32Array(n);
      for (let r = 0; r < n; r++) targets[r] = r % seq === seq - 1 ? -1 : ids[r + 1];
      const t0 = now();
      const teacherLogits = teacher !== undefined ? teacher.forward(ids, batch, seq) : undefined;
      const t1 = now();
      const logits = student.forward(ids, batch, seq);
      const t2 = now();
      const res = t.distillLoss({
        logits, dLogits: logits, teacher: teacherLogits !== undefined ? { logits: teacherLogits } : undefined, targets,
        kind: 'kl', temperature: 1, alpha: 0, gradScale: 1 / (batch * (seq - 1)),
      });
      const t3 = now();
      student.backward(logits);
      const t4 = now();
      student.params.forEach((p, i) => t.adamw({ master: p.master, grad: p.grad, m: state[i].m, v: state[i].v, compute: p.compute },
        { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: step + 1, gradScale: 1 }));
      student.zeroGrads();
      const t5 = now();
      if (step === 0) continue;
      phase.teacher += t1 - t0; phase.forward += t2 - t1; phase.loss += t3 - t2; phase.backward += t4 - t3; phase.adamw += t5 - t4;
      lossSum += res.loss.reduce((a, b) => a + b, 0) / (batch * (seq - 1));
    }
    const total = Object.values(phase).reduce((a, b) => a + b, 0);
    const row = {
      threads, batch, seq, recompute, teacher: withTeacher, tokens_per_s: Math.round((steps * n) / total),
      ms_per_step: Object.fromEntries(Object.entries(phase).map(([k, v]) => [k, +((1000 * v) / steps).toFixed(1)])),
      mean_loss: +(lossSum / steps).toFixed(4),
    };
    rows.push(row);
    process.stderr.write(`${JSON.stringify(row)}\n`);
  }
  student.dispose();
  device.close();
}
console.log(`stories260K training on the CPU (load average ${loadavg()[0].toFixed(2)})`);
console.log('threads  batch×seq  tokens/s   teacher  forward   loss  backward  adamw  (ms/step)');
for (const r of rows) {
  const m = r.ms_per_step;
  console.log(`${String(r.threads).padStart(7)}  ${`${r.batch}×${r.seq}`.padStart(9)}  ${String(r.tokens_per_s).padStart(8)}  ` +
    `${String(m.teacher).padStart(8)} ${String(m.forward).padStart(8)} ${String(m.loss).padStart(6)} ${String(m.backward).padStart(9)} ${String(m.adamw).padStart(6)}`);
}
