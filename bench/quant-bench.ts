// npm run bench:quant — quantized checkpoints on the GPU against their BF16 original, Llama-3.2-1B shape
// (--shape 8b: Llama-3.1-8B's).
//
// Runs on the GPU machine (bundled into .gpu/quant-bench.mjs by scripts/gpu/bundle.sh). Steps:
//  1. a random-weight bf16 checkpoint with Llama-3.2-1B's config (bench/gpu-common.ts, as bench:gpu);
//  2. quantized through the normal quantize API (quantizeModel: RTN, min-max observer, lm_head ignored)
//     to FP8 (static input scales from a calibration set of 32 random token ids), FP8_DYNAMIC, W8A8
//     (dynamic per-token) and W4A16 (group 128), in parallel child processes, each a quantize job on
//     the GPU (--quantize-device cpu: on the cpu device); their outputs stay in --scratch and are
//     reused by later runs (--requantize to redo them);
//  3. per model (BF16 and each scheme), loaded through loadModel on a bf16 cuda device: weight bytes on
//     the GPU and how many Linears stay quantized, decode tokens/s at batch 1 and 8 (decode step
//     replayed as a CUDA graph, prompt 512, 128 new tokens, as bench:gpu), prefill tokens/s (batch 1,
//     2048 tokens), decode ms/step against the floor (weight bytes / device-to-device copy bandwidth);
//     a per-kernel breakdown of one decode step at batch 1; decode at batch 1 also with the opt-in fused
//     decode layer (fusedDecodeLayer = true: decode_layer.cu), so one run A/Bs it against the per-op layers; layer 0's Linears alone at M 1, 4 and 8 (quantized: also with the row kernels off,
//     qgemvRowMaxM = 0, qgemv.cu's tiles);
//  4. a table with the issue's targets (decode at batch 1: FP8 ≥ 1.5×, W4A16 ≥ 2× BF16) and each
//     scheme's cap, BF16 weight bytes / scheme weight bytes (the lm_head stays BF16);
//  5. writes <results>/<date>-<gpu>-quant.json and .md.
// Usage: node .gpu/quant-bench.mjs [--scratch DIR] [--results DIR] [--schemes FP8,FP8_DYNAMIC,W8A8,W4A16]
//        [--gen-len 128] [--requantize] [--jobs N] [--quantize-device cuda|cpu] [--shape 1b|8b]
// (internal: --quantize-child SCHEME --model DIR --output DIR --threads N)

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { quantizeModel, type SchemeName } from '../src/compress/quant/index.js';
import { measureLatency, weightBytes, type LatencyResult } from '../src/eval/latency.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import { CudaQuantLinear } from '../src/tensor/cuda/quant-linear.js';
import type { Tensor } from '../src/tensor/device.js';
import { SHAPES, copyBandwidth, decodeBreakdown, flag, gpuSlug, log, timeUs, writeRandomCheckpoint, type ShapeName } from './gpu-common.js';

const SCHEMES: SchemeName[] = ['FP8', 'FP8_DYNAMIC', 'W8A8', 'W4A16'];
const TARGETS: Partial<Record<SchemeName, number>> = { FP8: 1.5, FP8_DYNAMIC: 1.5, W4A16: 2 };
const CALIBRATION = { windows: 1, tokens: 32, seed: 7 };
const DECODE_BATCHES = [1, 8];
/** M of the layer-0 Linear timings: 1 and 4 run qgemv_row.cu (unless off), 8 qgemv.cu's tiles. */
const LINEAR_MS = [1, 4, 8];

/**
 * --quantize-child: one quantize job (random-id calibration windows, as documented above) on the GPU
 * (the quantize job's device ops, f32) unless --quantize-device cpu.
 */
async function quantizeChild(): Promise<void> {
  const scheme = flag('quantize-child') as SchemeName;
  const model = flag('model')!;
  const output = flag('output')!;
  const device = flag('quantize-device', 'cuda') === 'cuda' ? new CudaDevice({ dtype: 'f32' }) : createCpuDevice({ threads: Number(flag('threads', '4')) });
  const vocab = (JSON.parse(fs.readFileSync(path.join(model, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size;
  let s = CALIBRATION.seed;
  const windows = Array.from({ length: CALIBRATION.windows }, () =>
    Int32Array.from({ length: CALIBRATION.tokens }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s % vocab;
    }));
  const t0 = performance.now();
  const report = await quantizeModel({
    model, output, scheme, force: true, device,
    calibrationSet: { source: 'random token ids (bench:quant)', windows, tokens: CALIBRATION.windows * CALIBRATION.tokens, seed: CALIBRATION.seed },
  });
  if ('close' in device) device.close();
  console.log(JSON.stringify({ scheme, seconds: (performance.now() - t0) / 1000, output_bytes: report.size.output_weight_bytes }));
}

/** Runs the missing quantize jobs, `jobs` at a time, as child processes of this script; returns their wall seconds. */
async function quantizeAll(src: string, dirs: Map<SchemeName, string>, requantize: boolean, jobs: number): Promise<Record<string, number | 'cached'>> {
  const times: Record<string, number | 'cached'> = {};
  const todo = [...dirs].filter(([scheme, dir]) => {
    const done = !requantize && fs.existsSync(path.join(dir, 'llmopt-report.json'));
    if (done) times[scheme] = 'cached';
    return !done;
  });
  const threads = Math.max(1, Math.floor(os.cpus().length / Math.max(1, Math.min(jobs, todo.length))));
  const script = fileURLToPath(import.meta.url);
  const runOne = ([scheme, dir]: [SchemeName, string]) =>
    new Promise<void>((resolve, reject) => {
      const t0 = performance.now();
      const child = spawn(process.execPath, [script, '--quantize-child', scheme, '--model', src, '--output', dir, '--threads', String(threads),
        '--quantize-device', flag('quantize-device', 'cuda')!], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => {
        times[scheme] = (performance.now() - t0) / 1000;
        if (code === 0) {
          log(`quantized ${scheme} in ${(times[scheme] as number).toFixed(1)} s: ${out.trim()}`);
          resolve();
        } else {
          reject(new Error(`quantize ${scheme} failed (exit ${code})`));
        }
      });
    });
  const queue = [...todo];
  await Promise.all(Array.from({ length: Math.min(jobs, queue.length) }, async () => {
    for (let next = queue.shift(); next !== undefined; next = queue.shift()) await runOne(next);
  }));
  return times;
}

interface LinearTiming {
  name: string;
  /** Small-M quantized kernels: 'row' (qgemv_row.cu at M ≤ qgemvRowMaxM), 'tiles' (qgemvRowMaxM = 0), 'bf16'. */
  kernels: string;
  M: number;
  bytes: number;
  us: number;
  gbPerS: number;
}

function tensorBytes(t: Tensor): number {
  return t.storedBytes ?? t.shape.reduce((a, b) => a * b, 1) * 2;
}

/** Layer 0's Linears as the fused decode step calls them (q/k/v, o, gate/up + SwiGLU, down), at LINEAR_MS. */
function linearTimings(model: LoadedModel, dev: CudaDevice, kernels: string): LinearTiming[] {
  const w = model.decoder.weights.layers[0]!;
  const s = model.spec;
  const out: LinearTiming[] = [];
  for (const M of LINEAR_MS) {
    const t = (shape: number[]) => dev.empty(shape);
    const xh = t([M, s.hiddenSize]), xq = t([M, s.numHeads * s.headDim]), xi = t([M, s.intermediateSize]);
    const q = t([M, s.numHeads * s.headDim]), k = t([M, s.numKvHeads * s.headDim]), v = t([M, s.numKvHeads * s.headDim]);
    const o = t([M, s.hiddenSize]), act = t([M, s.intermediateSize]), g = t([M, s.intermediateSize]), u = t([M, s.intermediateSize]);
    const add = (name: string, bytes: number, fn: () => void) => {
      const us = timeUs(dev, fn);
      out.push({ name, kernels, M, bytes, us, gbPerS: bytes / us / 1e3 });
    };
    add('q/k/v', tensorBytes(w.q) + tensorBytes(w.k) + tensorBytes(w.v), () => dev.matmulMany([q, k, v], xh, [w.q, w.k, w.v]));
    add('o', tensorBytes(w.o), () => dev.matmul(o, xq, w.o));
    add('gate/up + silu', tensorBytes(w.gate!) + tensorBytes(w.up), () => dev.matmulSiluMul(act, xh, w.gate!, w.up, g, u));
    add('down', tensorBytes(w.down), () => dev.matmul(o, xi, w.down));
    for (const x of [xh, xq, xi, q, k, v, o, act, g, u]) dev.free(x);
  }
  return out;
}

interface ModelRow {
  name: string;
  dir: string;
  quantizeSeconds: number | 'cached' | null;
  loadSeconds: number;
  weightBytes: number;
  deviceTensorBytes: number;
  nativeLinears: string;
  prefill: LatencyResult;
  decode: Record<number, LatencyResult>;
  /** Decode at batch 1 with the opt-in fused decode layer (fusedDecodeLayer = true: one decode_layer launch per layer). */
  decodeLayerB1?: LatencyResult;
  floorMs: number;
  linears: LinearTiming[];
  breakdown: ReturnType<typeof decodeBreakdown>;
}

async function measureModel(name: string, dir: string, dev: CudaDevice, bandwidth: number, genLen: number, quantizeSeconds: ModelRow['quantizeSeconds']): Promise<ModelRow> {
  const t0 = performance.now();
  const model = await loadModel(dir, dev);
  dev.synchronize();
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const wBytes = weightBytes(model.decoder.weights);
    const deviceTensorBytes = dev.memoryStats().tensorBytes;
    const linears = model.decoder.weights.layers.flatMap((l) => [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]);
    const nativeLinears = `${linears.filter((t) => t instanceof CudaQuantLinear).length}/${linears.length}`;
    const floorMs = (wBytes / bandwidth) * 1000;
    const prefill = measureLatency({ decoder: model.decoder, promptLen: 2048, genLen: 2, batch: 1 });
    const decodeAt = (batch: number) => measureLatency({ decoder: model.decoder, promptLen: 512, genLen, batch });
    const decode: Record<number, LatencyResult> = {};
    for (const b of DECODE_BATCHES) decode[b] = decodeAt(b);
    const quantized = linears.some((t) => t instanceof CudaQuantLinear);
    const rowMaxM = dev.qgemvRowMaxM;
    const timings = linearTimings(model, dev, quantized ? (rowMaxM >= 1 ? 'row' : 'tiles') : 'bf16');
    if (quantized && rowMaxM >= 1) {
      dev.qgemvRowMaxM = 0;
      try {
        timings.push(...linearTimings(model, dev, 'tiles'));
      } finally {
        dev.qgemvRowMaxM = rowMaxM;
      }
    }
    let decodeLayerB1: LatencyResult | undefined;
    if (!dev.fusedDecodeLayer) {
      dev.fusedDecodeLayer = true;
      try {
        decodeLayerB1 = decodeAt(1);
      } finally {
        dev.fusedDecodeLayer = false;
      }
    }
    const row: ModelRow = {
      name, dir, quantizeSeconds, loadSeconds, weightBytes: wBytes, deviceTensorBytes, nativeLinears, prefill, decode, decodeLayerB1, floorMs,
      linears: timings, breakdown: decodeBreakdown(model, dev, 1, 576),
    };
    const d1 = decode[1]!;
    log(`${name}: ${(wBytes / 1e9).toFixed(3)} GB of weights (${nativeLinears} Linears quantized on the GPU), loaded in ${loadSeconds.toFixed(1)} s; ` +
      `prefill ${Math.round(prefill.prefillTokensPerS).toLocaleString('en-US')} tok/s; decode b1 ${d1.decodeMsMedian.toFixed(3)} ms (${Math.round(d1.decodeTokensPerS)} tok/s, ` +
      `${(d1.decodeMsMedian / floorMs).toFixed(2)}× the ${floorMs.toFixed(3)} ms floor, graph ${d1.cudaGraph}), b8 ${decode[8]!.decodeMsMedian.toFixed(3)} ms (${Math.round(decode[8]!.decodeTokensPerS)} tok/s)`);
    if (decodeLayerB1 !== undefined) {
      log(`  decode b1 with the fused decode layer (opt-in): ${decodeLayerB1.decodeMsMedian.toFixed(3)} ms (${Math.round(decodeLayerB1.decodeTokensPerS)} tok/s); ` +
        `per-op layers ${d1.decodeMsMedian.toFixed(3)} ms: ${(d1.decodeMsMedian / decodeLayerB1.decodeMsMedian).toFixed(2)}× faster`);
    }
    for (const l of row.linears) {
      const other = row.linears.find((o) => o.name === l.name && o.M === l.M && o.kernels === 'tiles' && l.kernels === 'row');
      log(`  layer 0 ${l.name.padEnd(15)} M ${l.M} ${l.kernels.padEnd(5)}: ${l.us.toFixed(1).padStart(6)} µs, ${(l.bytes / 1e6).toFixed(2)} MB, ${l.gbPerS.toFixed(0)} GB/s` +
        (other !== undefined ? ` (tiles ${other.us.toFixed(1)} µs: ${(other.us / l.us).toFixed(2)}×)` : ''));
    }
    log(`  one decode step, batch 1, kv 576, eager, an event pair per op: ${row.breakdown.totalMs.toFixed(3)} ms`);
    for (const op of row.breakdown.ops.slice(0, 12)) log(`    ${op.ms.toFixed(4).padStart(8)} ms  ${String(op.count).padStart(3)}×  ${op.name}`);
    return row;
  } finally {
    model.decoder.dispose({ weights: true });
    dev.synchronize();
  }
}

function table(rows: ModelRow[], dev: CudaDevice, bandwidth: number, label: string): { md: string; targets: Record<string, unknown>[] } {
  const base = rows[0]!;
  const fmt = (x: number) => Math.round(x).toLocaleString('en-US');
  const lines = [
    `| ${dev.info.name}, ${label} shape | weights on GPU | decode b1 tok/s | × BF16 | cap | decode b8 tok/s | × BF16 | prefill tok/s (b1, 2048) | b1 ms/step vs floor |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const targets: Record<string, unknown>[] = [];
  for (const r of rows) {
    const b1 = r.decode[1]!, b8 = r.decode[8]!;
    const x1 = b1.decodeTokensPerS / base.decode[1]!.decodeTokensPerS;
    const x8 = b8.decodeTokensPerS / base.decode[8]!.decodeTokensPerS;
    const cap = base.weightBytes / r.weightBytes;
    lines.push(`| ${r.name} | ${(r.weightBytes / 1e9).toFixed(3)} GB | ${fmt(b1.decodeTokensPerS)} | ${x1.toFixed(2)}× | ${cap.toFixed(2)}× | ${fmt(b8.decodeTokensPerS)} | ${x8.toFixed(2)}× | ` +
      `${fmt(r.prefill.prefillTokensPerS)} | ${b1.decodeMsMedian.toFixed(3)} / ${r.floorMs.toFixed(3)} (${(b1.decodeMsMedian / r.floorMs).toFixed(2)}×) |`);
    const target = TARGETS[r.name as SchemeName];
    if (target !== undefined) targets.push({ scheme: r.name, decode_b1_speedup: x1, target, met: x1 >= target, cap });
  }
  lines.push('', `floor = weight bytes / ${(bandwidth / 1e12).toFixed(3)} TB/s (device-to-device copy, read + write); cap = BF16 weight bytes / the scheme's ` +
    '(the decode-time ratio if every step ran at the floor; the lm_head (1B: tied, 128256×2048) stays BF16 under ignore: ["lm_head"]).');
  for (const r of rows) {
    if (r.decodeLayerB1 === undefined) continue;
    const layerBase = base.decodeLayerB1 ?? base.decode[1]!;
    lines.push(`${r.name} decode b1: per-op layers ${r.decode[1]!.decodeMsMedian.toFixed(3)} ms, fused decode layer (opt-in) ` +
      `${r.decodeLayerB1.decodeMsMedian.toFixed(3)} ms (${(r.decodeLayerB1.decodeTokensPerS / layerBase.decodeTokensPerS).toFixed(2)}× BF16's)`);
  }
  for (const t of targets) {
    lines.push(`target ${t.scheme} decode b1 ≥ ${t.target}× BF16: ${(t.decode_b1_speedup as number).toFixed(2)}× (cap ${(t.cap as number).toFixed(2)}×) — ${t.met ? 'met' : 'NOT met'}`);
  }
  return { md: lines.join('\n'), targets };
}

async function main(): Promise<void> {
  const scratch = flag('scratch', path.join(os.tmpdir(), 'llmopt-gpu-bench'))!;
  const resultsDir = flag('results', process.env.OUT ?? 'bench/results')!;
  const schemes = (flag('schemes', SCHEMES.join(','))!).split(',') as SchemeName[];
  const genLen = Number(flag('gen-len', '128'));
  const jobs = Number(flag('jobs', String(schemes.length)));
  const shapeName = flag('shape', '1b') as ShapeName;
  const shape = SHAPES[shapeName];
  if (shape === undefined) throw new Error(`--shape: expected one of ${Object.keys(SHAPES).join(', ')}`);
  const srcDir = path.join(scratch, `${shape.label.toLowerCase()}-shape-random`);
  const started = performance.now();

  let t0 = performance.now();
  if (!fs.existsSync(path.join(srcDir, 'config.json'))) writeRandomCheckpoint(srcDir, shape.config);
  log(`checkpoint: ${shape.label} config, random bf16 weights in ${srcDir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);

  const dirs = new Map(schemes.map((s) => [s, `${srcDir}-${s.toLowerCase()}`] as [SchemeName, string]));
  t0 = performance.now();
  const quantizeTimes = await quantizeAll(srcDir, dirs, process.argv.includes('--requantize'), jobs);
  const quantizeS = (performance.now() - t0) / 1000;
  log(`quantize jobs (RTN, cpu device, ${jobs} at a time): ${quantizeS.toFixed(1)} s wall`);

  const dev = new CudaDevice({ dtype: 'bf16' });
  log(`GPU: ${dev.info.name}, ${dev.info.multiprocessors} SMs, ${(dev.info.totalMemoryBytes / 1e9).toFixed(1)} GB, driver ${dev.info.driverVersion}, ${dev.info.arch}`);
  const bandwidth = copyBandwidth(dev);
  log(`device-to-device copy: ${(bandwidth / 1e12).toFixed(3)} TB/s (read + write)`);

  const rows: ModelRow[] = [await measureModel('BF16', srcDir, dev, bandwidth, genLen, null)];
  for (const [scheme, dir] of dirs) rows.push(await measureModel(scheme, dir, dev, bandwidth, genLen, quantizeTimes[scheme] ?? null));

  const { md, targets } = table(rows, dev, bandwidth, shape.label);
  log('\n' + md);
  const date = new Date().toISOString().slice(0, 10);
  /** A batch-1 A/B run (tiles only, no PDL) against BF16's batch 1. */
  const b1Variant = (v: LatencyResult | undefined) => v === undefined ? null : {
    ms_per_step_median: v.decodeMsMedian, tokens_per_s: v.decodeTokensPerS,
    speedup_vs_bf16: v.decodeTokensPerS / rows[0]!.decode[1]!.decodeTokensPerS,
  };
  const result = {
    date,
    gpu: dev.info,
    model: { config: `${shape.label} (random bf16 weights)`, quantize: 'RTN, min-max, ignore lm_head; FP8 static input scales from 32 random token ids', calibration: CALIBRATION },
    bandwidth_bytes_per_s: bandwidth,
    quantize_wall_s: quantizeS,
    total_wall_s: (performance.now() - started) / 1000,
    models: rows.map((r) => ({
      name: r.name, quantize_s: r.quantizeSeconds, load_s: r.loadSeconds, weight_bytes: r.weightBytes, device_tensor_bytes: r.deviceTensorBytes,
      native_linears: r.nativeLinears, floor_ms: r.floorMs, cap_vs_bf16: rows[0]!.weightBytes / r.weightBytes,
      prefill: { batch: 1, tokens: 2048, ms: r.prefill.prefillMs, tokens_per_s: r.prefill.prefillTokensPerS },
      decode: Object.fromEntries(DECODE_BATCHES.map((b) => [b, {
        prompt: 512, generated: genLen, ms_per_step_median: r.decode[b]!.decodeMsMedian, ms_per_step_p90: r.decode[b]!.decodeMsP90,
        tokens_per_s: r.decode[b]!.decodeTokensPerS, floor_ratio: r.decode[b]!.decodeMsMedian / r.floorMs, cuda_graph: r.decode[b]!.cudaGraph,
        speedup_vs_bf16: r.decode[b]!.decodeTokensPerS / rows[0]!.decode[b]!.decodeTokensPerS, memory: r.decode[b]!.memory,
      }])),
      decode_b1_fused_layer: b1Variant(r.decodeLayerB1),
      layer0_linears: r.linears,
      decode_step_breakdown_b1: r.breakdown,
    })),
    targets,
    table: md,
  };
  fs.mkdirSync(resultsDir, { recursive: true });
  const stem = `${date}-${gpuSlug(dev)}${shapeName === '1b' ? '' : `-${shapeName}`}-quant`;
  fs.writeFileSync(path.join(resultsDir, `${stem}.json`), JSON.stringify(result, null, 1));
  fs.writeFileSync(path.join(resultsDir, `${stem}.md`), md + '\n');
  log(`wrote ${path.join(resultsDir, `${stem}.json`)} (${((performance.now() - started) / 1000).toFixed(0)} s in all)`);
}

if (process.argv.includes('--quantize-child')) await quantizeChild();
else await main();
