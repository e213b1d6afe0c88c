// npm run bench:distill — training throughput of llmopt's distillation step on the CUDA device against
// the same loop in transformers + PyTorch, on the same GPU in the same run.
//
// Runs on the GPU machine (bundled into .gpu/ by scripts/gpu/bundle.sh). Steps:
//  1. writes two random-weight checkpoints with Llama-3.2-1B's config (bf16; teacher and student of
//     the same shape, different seeds) through the normal io writer (bench/random-checkpoint.ts);
//  2. measures the bf16 GEMM peak with a large cuBLASLt GEMM (8192³, random values, median of 10);
//  3. runs bench/distill_bench_torch.py (when `python3 -c 'import torch, transformers'` works) on the
//     same checkpoints first, so that its memory is returned before llmopt's loop starts;
//  4. llmopt: teacher = Decoder (loadModel, inference), student = TrainableDecoder (bf16 compute
//     weights, f32 masters and gradients), per step: teacher logits → student forward → distillLoss
//     (forward KL, T 1, alpha 0, dLogits written over the student's logits) → student backward →
//     sumSquares + clip at 1.0 → fused AdamW (f32 state) per parameter → zeroGrads; one warm-up step,
//     then --steps timed steps (wall clock, the host reading the loss every step, as the trainer does);
//  5. one more step under CudaDevice.profile: GPU time per op;
//  6. model FLOPs utilisation = (6·N_student + 2·N_teacher)·tokens/s over the measured GEMM peak
//     (N = parameters, a tied embedding counted once; attention's own FLOPs are not counted);
//  7. writes <results>/<date>-<gpu>-distill.json and .md.
// Usage: node .gpu/distill-bench.mjs [--batch 4] [--seq 2048] [--steps 5] [--scratch DIR] [--results DIR]
//        [--torch-script FILE] [--skip-torch]

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/model/load.js';
import { TrainableDecoder } from '../src/model/train/index.js';
import { CudaDevice, type ProfiledOp } from '../src/tensor/cuda/index.js';
import type { Tensor } from '../src/tensor/device.js';
import { LLAMA_3_2_1B, writeRandomCheckpoint } from './random-checkpoint.js';

function flag(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const log = (line: string) => console.log(line);
const fmt = (x: number | undefined) => (x === undefined ? '—' : Math.round(x).toLocaleString('en-US'));

/** bf16 GEMM throughput of cuBLASLt at M = N = K = n (random values), FLOP/s, median of 10. */
function gemmPeak(dev: CudaDevice, n: number): number {
  let s = 12345;
  const data = new Float32Array(n * n);
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = (s / 4294967296 - 0.5) * 2;
  }
  const a = dev.upload(data, [n, n]);
  const b = dev.upload(data, [n, n]);
  const c = dev.empty([n, n]);
  dev.matmul(c, a, b);
  const ms: number[] = [];
  for (let r = 0; r < 10; r++) {
    const e0 = dev.recordEvent();
    dev.matmul(c, a, b);
    const e1 = dev.recordEvent();
    ms.push(dev.elapsedMs(e0, e1));
    dev.destroyEvent(e0);
    dev.destroyEvent(e1);
  }
  for (const t of [a, b, c]) dev.free(t);
  ms.sort((x, y) => x - y);
  return (2 * n ** 3) / (ms[5]! / 1000);
}

/** The op families of a training step, by kernel / GEMM name. */
function category(name: string): string {
  if (name.startsWith('cublasLt attention backward') || name.startsWith('attn_')) return 'attention backward (GEMMs + kernels)';
  if (name.startsWith('attention_prefill')) return 'attention forward (student + teacher)';
  if (name.startsWith('cublasLt grad weight')) return 'GEMMs: weight gradients (f32 +=)';
  if (name.startsWith('cublasLt grad input')) return 'GEMMs: input gradients';
  if (name.startsWith('cublasLt')) return 'GEMMs: forward (student + teacher)';
  if (name.startsWith('distill_loss')) return 'distillation loss (softmax + KL + dLogits)';
  if (name.startsWith('adamw') || name.startsWith('sum_') || name.startsWith('fill_')) return 'optimizer (clip norm, AdamW, zero grads)';
  if (name.includes('norm') || name === 'reduce_partials') return 'norms (forward + backward)';
  return 'other elementwise (rope, SwiGLU, residual, embedding, casts)';
}

function summarize(raw: ProfiledOp[]): { ops: { name: string; ms: number; count: number }[]; groups: { name: string; ms: number; count: number }[]; totalMs: number } {
  const by = (key: (op: ProfiledOp) => string) => {
    const m = new Map<string, { ms: number; count: number }>();
    for (const op of raw) {
      const e = m.get(key(op)) ?? { ms: 0, count: 0 };
      e.ms += op.ms;
      e.count++;
      m.set(key(op), e);
    }
    return [...m.entries()].map(([name, e]) => ({ name, ...e })).sort((a, b) => b.ms - a.ms);
  };
  return { ops: by((o) => o.name), groups: by((o) => category(o.name)), totalMs: raw.reduce((a, o) => a + o.ms, 0) };
}

function torchAvailable(): boolean {
  return spawnSync('python3', ['-c', 'import torch, transformers'], { encoding: 'utf8' }).status === 0;
}

async function main(): Promise<void> {
  const batch = Number(flag('batch', '4'));
  const seq = Number(flag('seq', '2048'));
  const steps = Number(flag('steps', '5'));
  const scratch = flag('scratch', path.join(os.tmpdir(), 'llmopt-distill-bench'))!;
  const resultsDir = flag('results', process.env.OUT ?? 'bench/results')!;
  const torchScript = flag('torch-script', path.resolve(path.dirname(new URL(import.meta.url).pathname), 'distill_bench_torch.py'))!;
  const teacherDir = path.join(scratch, 'llama-3.2-1b-shape-teacher');
  const studentDir = path.join(scratch, 'llama-3.2-1b-shape-student');

  const dev = new CudaDevice({ dtype: 'bf16' });
  log(`GPU: ${dev.info.name}, ${dev.info.multiprocessors} SMs, ${(dev.info.totalMemoryBytes / 1e9).toFixed(1)} GB, driver ${dev.info.driverVersion}, ${dev.info.arch}`);
  let t0 = performance.now();
  if (!fs.existsSync(path.join(teacherDir, 'config.json'))) writeRandomCheckpoint(teacherDir, LLAMA_3_2_1B, 1);
  if (!fs.existsSync(path.join(studentDir, 'config.json'))) writeRandomCheckpoint(studentDir, LLAMA_3_2_1B, 100001);
  log(`checkpoints: Llama-3.2-1B config, random bf16 weights, teacher and student written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const peak = gemmPeak(dev, 8192);
  log(`bf16 GEMM peak (cuBLASLt, 8192³, random values): ${(peak / 1e12).toFixed(0)} TFLOP/s`);

  let torch: Record<string, unknown> | undefined;
  if (!process.argv.includes('--skip-torch') && torchAvailable()) {
    log('transformers + PyTorch, the same loop on the same checkpoints …');
    const out = path.join(scratch, 'torch-distill.json');
    t0 = performance.now();
    const r = spawnSync('python3', [torchScript, '--teacher', teacherDir, '--student', studentDir, '--out', out,
      '--batch', String(batch), '--seq', String(seq), '--steps', String(steps)], { encoding: 'utf8', stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status === 0) torch = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, unknown>;
    else log(`torch script failed (exit ${r.status})`);
    log(`  (${((performance.now() - t0) / 1000).toFixed(0)} s including imports and loading)`);
  } else {
    log('transformers + PyTorch: not importable here (or --skip-torch); no comparison');
  }

  t0 = performance.now();
  const teacher = await loadModel(teacherDir, dev);
  const student = await TrainableDecoder.load(studentDir, dev);
  const t = dev.training;
  const state = student.params.map((p) => ({ m: t.emptyF32(p.shape), v: t.emptyF32(p.shape) }));
  dev.synchronize();
  log(`llmopt: teacher and student loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const countParams = (shapes: readonly (readonly number[])[]) => shapes.reduce((a, s) => a + s.reduce((x, y) => x * y, 1), 0);
  const nStudent = countParams(student.params.map((p) => p.shape));
  const nTeacher = nStudent; // the same config

  const rows = batch * seq, V = student.spec.vocabSize;
  const targets = new Int32Array(rows);
  let s = 7;
  const nextIds = () => {
    const ids = new Int32Array(rows);
    for (let i = 0; i < rows; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      ids[i] = s % V;
    }
    for (let r = 0; r < rows; r++) targets[r] = r % seq === seq - 1 ? -1 : ids[r + 1]!;
    return ids;
  };
  const scored = batch * (seq - 1);
  let optimizerStep = 0;
  const step = (): number => {
    const ids = nextIds();
    const teacherLogits: Tensor = teacher.decoder.forward(ids, batch, seq);
    const logits = student.forward(ids, batch, seq);
    const res = t.distillLoss({ logits, dLogits: logits, teacher: { logits: teacherLogits }, targets, kind: 'kl', temperature: 1, alpha: 0, gradScale: 1 / scored });
    student.backward(logits);
    const norm = Math.sqrt(t.sumSquares(student.params.map((p) => p.grad)));
    const clip = Math.min(1, 1 / (norm + 1e-6));
    optimizerStep++;
    student.params.forEach((p, i) => t.adamw({ master: p.master, grad: p.grad, m: state[i]!.m, v: state[i]!.v, compute: p.compute },
      { lr: 1e-5, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: p.noDecay ? 0 : 0.01, step: optimizerStep, gradScale: clip }));
    student.zeroGrads();
    return res.loss.reduce((a, b) => a + b, 0) / scored;
  };

  t0 = performance.now();
  step();
  dev.synchronize();
  log(`llmopt warm-up step (kernel compiles, GEMM plans, first allocations): ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  dev.resetPeakMemory();
  const times: number[] = [];
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    dev.synchronize();
    const a = performance.now();
    losses.push(step());
    dev.synchronize();
    times.push((performance.now() - a) / 1000);
  }
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const tps = rows / median;
  const mem = dev.memoryStats();
  log(`llmopt distill step: ${(median * 1000).toFixed(1)} ms median (${times.map((x) => (x * 1000).toFixed(0)).join(', ')}), ` +
    `${fmt(tps)} tokens/s (batch ${batch} × ${seq}); peak tensors ${(mem.peakTensorBytes / 1e9).toFixed(1)} GB; loss ${losses.map((x) => x.toFixed(4)).join(' → ')}`);

  const profile = summarize(dev.profile(() => step()));
  log(`one step under the profiler (an event pair per kernel / GEMM; GPU time, host gaps not counted): ${profile.totalMs.toFixed(1)} ms`);
  for (const g of profile.groups) log(`  ${g.ms.toFixed(2).padStart(9)} ms  ${String(g.count).padStart(5)}×  ${g.name}`);
  log('  top ops:');
  for (const op of profile.ops.slice(0, 25)) log(`  ${op.ms.toFixed(3).padStart(9)} ms  ${String(op.count).padStart(5)}×  ${op.name}`);

  const flopsPerToken = 6 * nStudent + 2 * nTeacher;
  const mfu = (tps * flopsPerToken) / peak;
  const tt = torch as { tokens_per_s?: number; step_s_median?: number; peak_memory_bytes?: number; precision?: string } | undefined;
  const torchMfu = tt?.tokens_per_s !== undefined ? (tt.tokens_per_s * flopsPerToken) / peak : undefined;
  const pct = (x: number | undefined) => (x === undefined ? '—' : `${(100 * x).toFixed(1)}%`);
  const table = [
    `| ${dev.info.name}, Llama-3.2-1B-shape student + teacher, batch ${batch} × ${seq} | llmopt | transformers (eager, sdpa) | ratio |`,
    '|---|---:|---:|---:|',
    `| training tokens/s | ${fmt(tps)} | ${fmt(tt?.tokens_per_s)} | ${tt?.tokens_per_s ? `${(tps / tt.tokens_per_s).toFixed(2)}×` : '—'} |`,
    `| step, ms (median of ${steps}) | ${(median * 1000).toFixed(1)} | ${tt?.step_s_median !== undefined ? (tt.step_s_median * 1000).toFixed(1) : '—'} | |`,
    `| model FLOPs utilisation | ${pct(mfu)} | ${pct(torchMfu)} | |`,
    `| peak memory, GB | ${(mem.peakTensorBytes / 1e9).toFixed(1)} (tensors) | ${tt?.peak_memory_bytes !== undefined ? (tt.peak_memory_bytes / 1e9).toFixed(1) : '—'} (allocated) | |`,
    '',
    `MFU = (6·N_student + 2·N_teacher)·tokens/s / ${(peak / 1e12).toFixed(0)} TFLOP/s (bf16 cuBLASLt GEMM 8192³ measured in this run), N = ${(nStudent / 1e9).toFixed(3)}B.`,
    `llmopt: bf16 compute weights and activations, f32 masters/gradients/AdamW state, forward KL over the full 128k vocabulary.`,
    `transformers: ${tt?.precision ?? '—'}.`,
  ].join('\n');
  log('\n' + table);

  const gpuSlug = dev.info.name.toLowerCase().replace(/nvidia\s*/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  const date = new Date().toISOString().slice(0, 10);
  const result = {
    date,
    gpu: dev.info,
    shape: { config: 'Llama-3.2-1B (random bf16 weights), teacher and student', batch, seq, params: nStudent },
    gemm_peak_flops: peak,
    llmopt: {
      step_s: times, step_s_median: median, tokens_per_s: tps, mfu, losses, memory: mem,
      recipe: 'bf16 compute (weights, activations, dLogits), f32 masters, gradients and AdamW state; forward KL T 1 alpha 0; clip 1.0; AdamW lr 1e-5 betas 0.9/0.95 wd 0.01',
      profile,
    },
    transformers: torch ?? null,
    transformers_mfu: torchMfu ?? null,
    table,
  };
  fs.mkdirSync(resultsDir, { recursive: true });
  const stem = `${date}-${gpuSlug}-distill`;
  const file = path.join(resultsDir, `${stem}.json`);
  fs.writeFileSync(file, JSON.stringify(result, null, 1));
  fs.writeFileSync(path.join(resultsDir, `${stem}.md`), table + '\n');
  log(`wrote ${file}`);
  for (const st of state) {
    dev.free(st.m);
    dev.free(st.v);
  }
  student.dispose();
  teacher.decoder.dispose({ weights: true });
}

await main();
