// npm run bench:gpu — llmopt's CUDA backend against transformers + PyTorch on the same GPU, in one run.
//
// Runs on the GPU machine (bundled into .gpu/ by scripts/gpu/bundle.sh; `npm run bench:gpu` bundles
// and prints how to run it there). Steps:
//  1. writes a random-weight checkpoint with Llama-3.2-1B's config (bf16) through the normal io writer
//     into a scratch folder outside the repo, and loads it through the normal path (loadModel);
//  2. measures llmopt: perplexity-eval throughput (2048-token windows, batch 4), prefill tokens/s
//     (batch 1, 2048 tokens), decode tokens/s at batch 1, 8 and 32 (prompt 512, 128 new tokens,
//     decode step replayed as a CUDA graph);
//  3. measures device bandwidth with a device-to-device copy and prints decode time per token
//     against the floor (weight bytes / bandwidth); a per-kernel breakdown of one decode step;
//  4. runs bench/gpu_bench_torch.py (transformers, bf16, sdpa, eager) on the same checkpoint when
//     `python3 -c 'import torch, transformers'` works, and prints the ratios;
//  5. writes <results>/<date>-<gpu>.json and a markdown table.
// Usage: node .gpu/gpu-bench.mjs [--scratch DIR] [--results DIR] [--torch-script FILE] [--skip-torch]
//        [--decode-batches 1,8,32] [--gen-len 128] [--shape 1b|8b]

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { evaluatePerplexity } from '../src/eval/perplexity.js';
import { measureLatency, weightBytes, type LatencyResult } from '../src/eval/latency.js';
import { makeWindows } from '../src/eval/windows.js';
import { loadModel, type LoadedModel } from '../src/model/load.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import { SHAPES, copyBandwidth, decodeBreakdown, flag, gpuSlug, log, summarize, timeUs, writeRandomCheckpoint, type ShapeName } from './gpu-common.js';

/** Small-M GEMMs at the decode shapes: our GEMV kernel vs cuBLASLt (µs, weight GB/s), median of 20 event-timed runs. */
function smallMGemms(dev: CudaDevice): { M: number; N: number; K: number; gemvUs: number | null; cublasUs: number }[] {
  const shapes = [[2048, 2048], [512, 2048], [8192, 2048], [2048, 8192], [128256, 2048]] as const;
  const out: { M: number; N: number; K: number; gemvUs: number | null; cublasUs: number }[] = [];
  const saved = dev.gemvMaxM;
  const time = (fn: () => void) => timeUs(dev, fn);
  for (const [N, K] of shapes) {
    const w = dev.empty([N, K]);
    for (const M of [1, 2, 4, 8, 16, 32]) {
      const x = dev.empty([M, K]);
      const o = dev.empty([M, N]);
      dev.gemvMaxM = 8;
      const gemvUs = M <= 8 ? time(() => dev.matmul(o, x, w)) : null;
      dev.gemvMaxM = 0;
      const cublasUs = time(() => dev.matmul(o, x, w));
      out.push({ M, N, K, gemvUs, cublasUs });
      dev.free(x);
      dev.free(o);
    }
    dev.free(w);
  }
  dev.gemvMaxM = saved;
  return out;
}

/** One eval forward (batch 4 × 2048) under the profiler, by kernel name. */
function forwardBreakdown(model: LoadedModel, dev: CudaDevice): { ops: { name: string; ms: number; count: number }[]; totalMs: number } {
  const ids = new Int32Array(4 * 2048).map((_, i) => (i * 7919) % model.spec.vocabSize);
  model.decoder.forwardHidden(ids, 4, 2048);
  const raw = dev.profile(() => {
    const h = model.decoder.forwardHidden(ids, 4, 2048);
    model.decoder.logitsForRows(h, 0, 130);
  });
  return summarize(raw);
}

async function perplexityThroughput(model: LoadedModel, dev: CudaDevice, windows: number, batch: number, logitsChunkRows?: number): Promise<number> {
  const seq = 2048;
  const tokens = new Int32Array(windows * seq);
  let s = 7;
  for (let i = 0; i < tokens.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    tokens[i] = s % model.spec.vocabSize;
  }
  const ws = makeWindows({ kind: 'chunks', window: seq, keepLast: false }, tokens.length);
  const run = () => evaluatePerplexity({ device: dev, model: model.decoder, tokens, windows: ws, batch, vocabSize: model.spec.vocabSize, logitsChunkRows });
  await evaluatePerplexity({ device: dev, model: model.decoder, tokens: tokens.subarray(0, batch * seq), windows: ws.slice(0, batch), batch, vocabSize: model.spec.vocabSize });
  const r = await run();
  return r.tokensPerSecond;
}

function torchAvailable(): boolean {
  return spawnSync('python3', ['-c', 'import torch, transformers'], { encoding: 'utf8' }).status === 0;
}

async function main(): Promise<void> {
  const scratch = flag('scratch', path.join(os.tmpdir(), 'llmopt-gpu-bench'))!;
  const resultsDir = flag('results', process.env.OUT ?? 'bench/results')!;
  const torchScript = flag('torch-script', path.resolve(path.dirname(new URL(import.meta.url).pathname), 'gpu_bench_torch.py'))!;
  const decodeBatches = (flag('decode-batches', '1,8,32')!).split(',').map(Number);
  const genLen = Number(flag('gen-len', '128'));
  const shapeName = flag('shape', '1b') as ShapeName;
  const shape = SHAPES[shapeName];
  if (shape === undefined) throw new Error(`--shape: expected one of ${Object.keys(SHAPES).join(', ')}`);
  const modelDir = path.join(scratch, `${shape.label.toLowerCase()}-shape-random`);

  const dev = new CudaDevice({ dtype: 'bf16' });
  log(`GPU: ${dev.info.name}, ${dev.info.multiprocessors} SMs, ${(dev.info.totalMemoryBytes / 1e9).toFixed(1)} GB, driver ${dev.info.driverVersion}, ${dev.info.arch}`);

  let t0 = performance.now();
  if (!fs.existsSync(path.join(modelDir, 'config.json'))) writeRandomCheckpoint(modelDir, shape.config);
  const writeS = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const model = await loadModel(modelDir, dev);
  dev.synchronize();
  const loadS = (performance.now() - t0) / 1000;
  const wBytes = weightBytes(model.decoder.weights);
  log(`checkpoint: ${shape.label} config, random bf16 weights, ${(wBytes / 1e9).toFixed(3)} GB on the GPU; written in ${writeS.toFixed(1)} s, loaded in ${loadS.toFixed(1)} s`);

  const bandwidth = copyBandwidth(dev);
  const floorMs = (wBytes / bandwidth) * 1000;
  log(`device-to-device copy: ${(bandwidth / 1e12).toFixed(3)} TB/s (read + write); decode floor = weights / bandwidth = ${floorMs.toFixed(3)} ms/step`);

  const pplTps = await perplexityThroughput(model, dev, 16, 4);
  log(`llmopt perplexity eval: ${Math.round(pplTps).toLocaleString('en-US')} tokens/s (2048-token windows, batch 4, forward + lm_head + scoring)`);

  const prefill = measureLatency({ decoder: model.decoder, promptLen: 2048, genLen: 2, batch: 1 });
  log(`llmopt prefill: ${Math.round(prefill.prefillTokensPerS).toLocaleString('en-US')} tokens/s (batch 1, 2048 tokens, ${prefill.prefillMs.toFixed(2)} ms)`);

  const decode: Record<string, LatencyResult> = {};
  for (const b of decodeBatches) {
    const r = measureLatency({ decoder: model.decoder, promptLen: 512, genLen, batch: b });
    decode[b] = r;
    log(`llmopt decode batch ${b}: ${r.decodeMsMedian.toFixed(3)} ms/step median (p90 ${r.decodeMsP90.toFixed(3)}), ` +
      `${Math.round(r.decodeTokensPerS).toLocaleString('en-US')} tokens/s, ${(r.decodeMsMedian / floorMs).toFixed(2)}× the floor; ` +
      `TTFT ${r.timeToFirstTokenMs.toFixed(1)} ms; peak ${(r.memory.peakBytes / 1e9).toFixed(2)} GB (KV ${(r.memory.kvCacheBytes / 1e6).toFixed(0)} MB, act ${(r.memory.activationsBytes / 1e6).toFixed(0)} MB)`);
  }

  // The same batch-1 decode without programmatic dependent launch (what PDL buys, same run).
  let decodeNoPdl: LatencyResult | undefined;
  if (dev.kernels.pdl) {
    dev.kernels.pdl = false;
    decodeNoPdl = measureLatency({ decoder: model.decoder, promptLen: 512, genLen, batch: 1 });
    dev.kernels.pdl = true;
    log(`llmopt decode batch 1 without programmatic dependent launch: ${decodeNoPdl.decodeMsMedian.toFixed(3)} ms/step median, ` +
      `${Math.round(decodeNoPdl.decodeTokensPerS).toLocaleString('en-US')} tokens/s`);
  }

  const breakdowns: Record<string, ReturnType<typeof decodeBreakdown>> = {};
  for (const b of decodeBatches) {
    const breakdown = decodeBreakdown(model, dev, b, 576);
    breakdowns[b] = breakdown;
    log(`one decode step, batch ${b}, kv 576, eager with an event pair per op (small ops include launch gaps): ${breakdown.totalMs.toFixed(3)} ms`);
    for (const op of breakdown.ops) log(`  ${op.ms.toFixed(4).padStart(8)} ms  ${String(op.count).padStart(3)}×  ${op.name}`);
  }
  const fwd = forwardBreakdown(model, dev);
  log(`one eval forward, batch 4 × 2048 (+ one 130-row logits chunk): ${fwd.totalMs.toFixed(2)} ms`);
  for (const op of fwd.ops) log(`  ${op.ms.toFixed(3).padStart(8)} ms  ${String(op.count).padStart(3)}×  ${op.name}`);
  const gemms = smallMGemms(dev);
  log('small-M GEMMs (µs; GB/s of weights): M, N×K, gemv, cuBLASLt');
  for (const g of gemms) {
    const gbs = (us: number) => ((g.N * g.K * 2) / (us * 1e3)).toFixed(0);
    log(`  M ${String(g.M).padStart(2)}  ${g.N}×${g.K}  gemv ${g.gemvUs === null ? '—' : `${g.gemvUs.toFixed(1)} µs (${gbs(g.gemvUs)} GB/s)`}  cuBLASLt ${g.cublasUs.toFixed(1)} µs (${gbs(g.cublasUs)} GB/s)`);
  }

  model.decoder.dispose({ weights: true });
  dev.synchronize();

  let torch: Record<string, unknown> | undefined;
  if (!process.argv.includes('--skip-torch') && torchAvailable()) {
    log('transformers + PyTorch on the same checkpoint …');
    const out = path.join(scratch, 'torch.json');
    const r = spawnSync('python3', [torchScript, '--model', modelDir, '--out', out, '--decode-batches', decodeBatches.join(','), '--gen-len', String(Math.min(genLen, 32))], {
      encoding: 'utf8',
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (r.status === 0) torch = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, unknown>;
    else log(`torch script failed (exit ${r.status})`);
  } else {
    log('transformers + PyTorch: not importable here (or --skip-torch); no comparison');
  }

  const t = torch as { ppl_tokens_per_s?: number; prefill_tokens_per_s?: number; decode?: Record<string, { tokens_per_s: number; ms_per_step: number }> } | undefined;
  const rows: string[][] = [];
  const ratio = (a: number, b: number | undefined) => (b ? `${(a / b).toFixed(2)}×` : '—');
  const fmt = (x: number | undefined) => (x === undefined ? '—' : Math.round(x).toLocaleString('en-US'));
  rows.push(['perplexity eval, tokens/s (2048 windows, batch 4)', fmt(pplTps), fmt(t?.ppl_tokens_per_s), ratio(pplTps, t?.ppl_tokens_per_s)]);
  rows.push(['prefill, tokens/s (batch 1, 2048)', fmt(prefill.prefillTokensPerS), fmt(t?.prefill_tokens_per_s), ratio(prefill.prefillTokensPerS, t?.prefill_tokens_per_s)]);
  for (const b of decodeBatches) {
    const mine = decode[b]!.decodeTokensPerS;
    const theirs = t?.decode?.[String(b)]?.tokens_per_s;
    rows.push([`decode batch ${b}, tokens/s`, fmt(mine), fmt(theirs), ratio(mine, theirs)]);
  }
  const table = [
    `| ${dev.info.name}, ${shape.label} shape, bf16 | llmopt | transformers ${t ? '(eager, sdpa)' : ''} | ratio |`,
    '|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
    '',
    `decode floor: ${(wBytes / 1e9).toFixed(3)} GB / ${(bandwidth / 1e12).toFixed(3)} TB/s = ${floorMs.toFixed(3)} ms/step; ` +
      `batch 1: ${decode[decodeBatches[0]!]!.decodeMsMedian.toFixed(3)} ms (${(decode[decodeBatches[0]!]!.decodeMsMedian / floorMs).toFixed(2)}×)`,
  ].join('\n');
  log('\n' + table);

  const date = new Date().toISOString().slice(0, 10);
  const result = {
    date,
    gpu: dev.info,
    model: { config: `${shape.label} (random bf16 weights)`, weight_bytes: wBytes, write_s: writeS, load_s: loadS },
    bandwidth_bytes_per_s: bandwidth,
    decode_floor_ms: floorMs,
    llmopt: {
      ppl_tokens_per_s: pplTps,
      prefill: { batch: 1, tokens: 2048, ms: prefill.prefillMs, tokens_per_s: prefill.prefillTokensPerS },
      decode: Object.fromEntries(decodeBatches.map((b) => [b, {
        prompt: 512, generated: genLen, ms_per_step_median: decode[b]!.decodeMsMedian, ms_per_step_p90: decode[b]!.decodeMsP90,
        tokens_per_s: decode[b]!.decodeTokensPerS, ttft_ms: decode[b]!.timeToFirstTokenMs, floor_ratio: decode[b]!.decodeMsMedian / floorMs,
        memory: decode[b]!.memory, cuda_graph: decode[b]!.cudaGraph,
      }])),
      decode_batch1_without_pdl: decodeNoPdl === undefined ? null : { ms_per_step_median: decodeNoPdl.decodeMsMedian, tokens_per_s: decodeNoPdl.decodeTokensPerS },
      decode_step_breakdowns: breakdowns,
      eval_forward_breakdown: fwd,
      small_m_gemms: gemms,
    },
    transformers: torch ?? null,
    table,
  };
  fs.mkdirSync(resultsDir, { recursive: true });
  const stem = `${date}-${gpuSlug(dev)}${shapeName === '1b' ? '' : `-${shapeName}`}`;
  const file = path.join(resultsDir, `${stem}.json`);
  fs.writeFileSync(file, JSON.stringify(result, null, 1));
  fs.writeFileSync(path.join(resultsDir, `${stem}.md`), table + '\n');
  log(`wrote ${file}`);
}

await main();
