// The quantize job itself on the GPU: wall time per phase and peak GPU memory of `llmopt quantize`
// (the library call behind it) for FP8_DYNAMIC, W8A8 + SmoothQuant 0.5 and W4A16-GPTQ (group 128),
// on a random-weight checkpoint with Llama-3.2-1B's config (bench/random-checkpoint.ts), calibrated on
// the default Moby Dick set. The random checkpoint has no Llama-3 tokenizer, so the calibration text
// is tokenized with stories260K's (copied beside it): real text, ids below 512 of the 128,256 vocab.
// Compared per parameter with llm-compressor's documented runtimes for Meta-Llama-3-8B-Instruct on
// an A100 (https://docs.vllm.ai/projects/llm-compressor/en/0.11.0/guides/runtime/): RTN weights only
// ~1 min, RTN weights and activations ~20 min, GPTQ ~30 min.
//
// Bundled by scripts/gpu/bundle.sh like bench/gpu-bench.ts. Usage:
//   node .gpu/quantize-job-bench.mjs --tokenizer-from DIR [--samples 128] [--seq-len 2048] [--dtype fp32|bf16]
//     [--jobs fp8-dynamic,w8a8-sq,w4a16-gptq] [--scratch DIR] [--results DIR] [--keep-outputs] [--self-test]
// --self-test runs the jobs on the cpu device instead (no GPU; checks the harness: use a few short
// samples and leave out GPTQ, whose float64 8192² factorization takes the cpu very long).
// Writes <results>/<date>-<gpu>-quantize-job.json (results: $OUT, else bench/results) and prints a table.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantizeModel, type QuantizeReport, type QuantizeSettings } from '../src/compress/quant/index.js';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import { CudaDevice } from '../src/tensor/cuda/index.js';
import { LLAMA_3_2_1B, writeRandomCheckpoint } from './random-checkpoint.js';

function flag(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const log = (line: string) => console.log(line);

/** Parameters of Meta-Llama-3-8B(-Instruct), the model of llm-compressor's runtime table. */
const LLAMA_3_8B_PARAMS = 8_030_261_248;

interface Job {
  name: string;
  label: string;
  opts: Omit<QuantizeSettings, 'model' | 'output'>;
  /** llm-compressor's documented runtime for the comparable algorithm on the 8B model, A100 (seconds). */
  reference: { what: string; seconds: number };
}

const JOBS: Job[] = [
  { name: 'fp8-dynamic', label: 'FP8_DYNAMIC (RTN)', opts: { scheme: 'FP8_DYNAMIC' }, reference: { what: 'RTN, weights only: ~1 min', seconds: 60 } },
  { name: 'w8a8-sq', label: 'W8A8 + SmoothQuant 0.5', opts: { scheme: 'W8A8', smoothquant: 0.5 }, reference: { what: 'RTN, weights and activations: ~20 min', seconds: 1200 } },
  { name: 'w4a16-gptq', label: 'W4A16 GPTQ, group 128', opts: { scheme: 'W4A16', groupSize: 128, method: 'gptq' }, reference: { what: 'GPTQ, weights only: ~30 min', seconds: 1800 } },
];

function parameterCount(c: typeof LLAMA_3_2_1B): number {
  const H = c.hidden_size, I = c.intermediate_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim;
  const layer = H * q + 2 * H * kv + q * H + 3 * H * I + 2 * H;
  return c.vocab_size * H * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + H;
}

const gb = (bytes: number) => (bytes / 1e9).toFixed(2);

async function main(): Promise<void> {
  const scratch = flag('scratch', path.join(os.tmpdir(), 'llmopt-quantize-job-bench'))!;
  const resultsDir = flag('results', process.env.OUT ?? 'bench/results')!;
  const tokenizerFrom = flag('tokenizer-from');
  const samples = Number(flag('samples', '128'));
  const seqLen = Number(flag('seq-len', '2048'));
  const dtypeFlag = flag('dtype', 'fp32')!;
  const jobNames = flag('jobs', JOBS.map((j) => j.name).join(','))!.split(',');
  const jobs = jobNames.map((n) => JOBS.find((j) => j.name === n) ?? (() => { throw new Error(`--jobs: unknown job ${n} (${JOBS.map((j) => j.name).join(', ')})`); })());
  if (tokenizerFrom === undefined || !fs.existsSync(path.join(tokenizerFrom, 'tokenizer.json'))) {
    throw new Error('--tokenizer-from DIR: a model folder with tokenizer.json (e.g. .gpu/data/stories260K) for the calibration text');
  }
  if (dtypeFlag !== 'fp32' && dtypeFlag !== 'bf16') throw new Error(`--dtype ${dtypeFlag}: fp32 or bf16`);

  const selfTest = process.argv.includes('--self-test');
  const dev = selfTest ? createCpuDevice() : new CudaDevice({ dtype: dtypeFlag === 'fp32' ? 'f32' : 'bf16' });
  const gpuName = dev instanceof CudaDevice ? dev.info.name : 'cpu (self-test)';
  if (dev instanceof CudaDevice) {
    log(`GPU: ${dev.info.name}, ${dev.info.multiprocessors} SMs, ${(dev.info.totalMemoryBytes / 1e9).toFixed(1)} GB, driver ${dev.info.driverVersion}, ${dev.info.arch}`);
  } else {
    log('self-test: the cpu device stands in for the GPU');
  }

  const config = LLAMA_3_2_1B;
  const modelDir = path.join(scratch, 'llama-3.2-1b-shape-random');
  let t0 = performance.now();
  if (!fs.existsSync(path.join(modelDir, 'config.json'))) {
    log('writing the random Llama-3.2-1B-shape checkpoint (bf16) …');
    writeRandomCheckpoint(modelDir, config);
  }
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    if (fs.existsSync(path.join(tokenizerFrom, f))) fs.copyFileSync(path.join(tokenizerFrom, f), path.join(modelDir, f));
  }
  const params = parameterCount(config);
  log(`checkpoint: ${modelDir} (${(params / 1e9).toFixed(3)} B parameters, ready in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  log(`calibration: Moby Dick, ${samples} samples × ${seqLen} tokens (${(samples * seqLen).toLocaleString('en-US')} tokens), seed 0; calibration forward in ${dtypeFlag}`);

  const rows: { job: Job; report: QuantizeReport; wallS: number; phases: { calibrate: number; quantize: number; propagate: number } }[] = [];
  for (const job of jobs) {
    const output = path.join(scratch, `out-${job.name}`);
    log(`== ${job.label}`);
    t0 = performance.now();
    const report = await quantizeModel({
      model: modelDir,
      output,
      force: true,
      device: dev,
      deviceName: dev instanceof CudaDevice ? `cuda (${dev.info.name})` : 'cpu',
      deviceDtype: dev instanceof CudaDevice ? dtypeFlag : 'fp32',
      memory: dev instanceof CudaDevice ? dev : undefined,
      toolVersion: 'bench',
      calibration: { source: 'moby-dick', samples, seqLen, seed: 0 },
      onLayer: (r, layers) => {
        const s = r.seconds;
        log(`  [${job.name}] layer ${r.index + 1}/${layers}: ${(s.calibrate + s.quantize + s.propagate).toFixed(2)} s ` +
          `(calibrate ${s.calibrate.toFixed(2)}, quantize ${s.quantize.toFixed(2)}, propagate ${s.propagate.toFixed(2)}), output rel error ${r.output_rel_error.toFixed(4)}`);
      },
      ...job.opts,
    });
    const wallS = (performance.now() - t0) / 1000;
    const phases = { calibrate: 0, quantize: 0, propagate: 0 };
    for (const l of report.layers) {
      phases.calibrate += l.seconds.calibrate;
      phases.quantize += l.seconds.quantize;
      phases.propagate += l.seconds.propagate;
    }
    const peaks = report.memory.peak_device_bytes ?? { embed: 0, calibrate: 0, quantize: 0, propagate: 0, overall: 0 };
    log(`  ${job.label}: ${wallS.toFixed(1)} s wall (load ${report.timings_s.load.toFixed(1)}, calibration data ${report.timings_s.calibration_data.toFixed(1)}, ` +
      `layers ${report.timings_s.layers.toFixed(1)}: calibrate ${phases.calibrate.toFixed(1)} + quantize ${phases.quantize.toFixed(1)} + propagate ${phases.propagate.toFixed(1)}, ` +
      `write ${report.timings_s.write.toFixed(1)}); peak GPU tensors ${gb(peaks.overall)} GB (embed ${gb(peaks.embed)}, calibrate ${gb(peaks.calibrate)}, ` +
      `quantize ${gb(peaks.quantize)}, propagate ${gb(peaks.propagate)}); activations on the ${report.memory.activations.where} (${gb(report.memory.activations.bytes)} GB); ` +
      `${(report.size.input_weight_bytes / 1e9).toFixed(2)} → ${(report.size.output_weight_bytes / 1e9).toFixed(2)} GB`);
    rows.push({ job, report, wallS, phases });
    if (!process.argv.includes('--keep-outputs')) fs.rmSync(output, { recursive: true, force: true });
  }

  const header = `| ${gpuName}, Llama-3.2-1B shape (${(params / 1e9).toFixed(2)} B params), ${samples} × ${seqLen} Moby Dick tokens, ${dtypeFlag} forward | wall s | calibrate s | quantize s | propagate s | write s | peak GPU GB | µs / param | llm-compressor, Llama-3-8B, A100 | µs / param | faster per param |`;
  const lines = [header, '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|'];
  const table = rows.map(({ job, report, wallS, phases }) => {
    const ours = (wallS * 1e6) / params;
    const theirs = (job.reference.seconds * 1e6) / LLAMA_3_8B_PARAMS;
    lines.push(`| ${job.label} | ${wallS.toFixed(1)} | ${phases.calibrate.toFixed(1)} | ${phases.quantize.toFixed(1)} | ${phases.propagate.toFixed(1)} | ` +
      `${report.timings_s.write.toFixed(1)} | ${gb(report.memory.peak_device_bytes?.overall ?? 0)} | ${ours.toFixed(4)} | ${job.reference.what} | ${theirs.toFixed(4)} | ${(theirs / ours).toFixed(1)}× |`);
    return {
      job: job.name, label: job.label, options: job.opts, wall_s: wallS, phases_s: phases, timings_s: report.timings_s, memory: report.memory,
      size: report.size, us_per_param: ours, llm_compressor: { ...job.reference, us_per_param: theirs, model_params: LLAMA_3_8B_PARAMS },
      layers: report.layers.map((l) => ({ index: l.index, output_rel_error: l.output_rel_error, seconds: l.seconds, modules: l.modules })),
    };
  });
  const md = [...lines, '', `llm-compressor's times are from its runtime guide (Meta-Llama-3-8B-Instruct, A100; its calibration size is not stated there, its examples use 512 × 2048).`].join('\n');
  log(`\n${md}`);

  const gpuSlug = gpuName.toLowerCase().replace(/nvidia\s*/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  const date = new Date().toISOString().slice(0, 10);
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, `${date}-${gpuSlug}-quantize-job.json`);
  fs.writeFileSync(file, JSON.stringify({
    date, gpu: dev instanceof CudaDevice ? dev.info : gpuName, model: { config: 'Llama-3.2-1B (random bf16 weights)', params },
    calibration: { source: 'moby-dick (tokenized with stories260K tokenizer.json)', samples, seq_len: seqLen, tokens: samples * seqLen, seed: 0 },
    forward_dtype: dtypeFlag, jobs: table, table: md,
  }, null, 1));
  log(`wrote ${file}`);
  if (!(dev instanceof CudaDevice)) dev.close();
}

await main();
