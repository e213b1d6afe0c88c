// The GPU machine's test runner (bundled by scripts/gpu/bundle.sh into .gpu/, which carries no
// vitest): the engine smoke test, then every op case of test/cuda-cases.ts, the quantized-linear
// cases of test/cuda-quant-cases.ts and the training cases of test/cuda-train-cases.ts in f32, bf16
// and f16 against the cpu device, then stories260K
// quantized to each scheme and evaluated on the GPU (needs --model/--data, default data/stories260K
// and data/tinystories-valid.txt beside the runner's working folder; skipped when absent).
// Prints a pass/fail table; writes $OUT/cuda-tests.json when $OUT is set.
// The decode-attention cases of test/cuda-attn-decode-cases.ts run with the op cases (--skip-ops skips them too);
// the fused decode layer's checks (test/cuda-decode-layer-cases.ts) after the quantized models.
// Usage: node .gpu/run-cuda-tests.mjs [--only <substring>] [--skip-smoke] [--skip-ops] [--skip-quant]
//        [--skip-quant-model] [--skip-decode-layer] [--skip-train] [--skip-quant-job] [--train-only] [--model DIR] [--data FILE] [--self-test]
// --train-only = --skip-ops --skip-quant --skip-quant-model --skip-decode-layer.
// --self-test compares the cpu device with itself (no GPU): checks the harness and the bundle.

import fs from 'node:fs';
import path from 'node:path';
import { createCpuDevice } from '../../src/tensor/cpu/index.js';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { ComputeDType } from '../../src/tensor/device.js';
import { runAttnDecodeCases, runAttnDecodeGpuCases } from '../../test/cuda-attn-decode-cases.js';
import { runAtCases, runCases, type CaseRun, type Check } from '../../test/cuda-cases.js';
import { runDecodeLayerChecks } from '../../test/cuda-decode-layer-cases.js';
import { runQuantCases, runQuantGraphCases, runQuantModelChecks } from '../../test/cuda-quant-cases.js';
import { runTrainCases } from '../../test/cuda-train-cases.js';
import { runQuantJobCases } from '../../test/quant-job-cases.js';
import { runSmoke } from './smoke.js';

const args = process.argv.slice(2);
const value = (name: string, fallback?: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const only = value('--only');
const trainOnly = args.includes('--train-only');
const skip = (step: string) => args.includes(`--skip-${step}`) || (trainOnly && step !== 'train');
const log = (line: string) => console.log(line);

const failures: string[] = [];
const selfTest = args.includes('--self-test');
if (!args.includes('--skip-smoke') && !selfTest) {
  log('== engine smoke test');
  try {
    failures.push(...runSmoke(log));
  } catch (e) {
    log(`FAIL smoke: ${(e as Error).stack ?? String(e)}`);
    failures.push(`smoke: ${(e as Error).message}`);
  }
}

const cpu = createCpuDevice({ threads: 8 });
const all: (Check & { ms: number })[] = [];
const filter = only ? (n: string) => n.includes(only) : undefined;
const report = (label: string, run: CaseRun, ms: number) => {
  for (const c of run.checks) {
    all.push({ ...c, ms });
    log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.dtype.padEnd(4)} ${c.case.padEnd(78)} err ${c.error.toExponential(2)} tol ${c.tol.toExponential(0)}${c.note ? `  ${c.note}` : ''}`);
  }
  failures.push(...run.failures);
  log(`${label}: ${run.checks.length - run.failures.length}/${run.checks.length} passed in ${ms.toFixed(0)} ms`);
};
const makeGpu = (dtype: ComputeDType) => (selfTest ? createCpuDevice({ threads: 2 }) : new CudaDevice({ dtype }));
for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
  const gpu = makeGpu(dtype);
  if (!skip('ops')) {
    log(`== op cases, ${dtype}`);
    const t0 = performance.now();
    const run = runCases(cpu, gpu, dtype, filter);
    const extra = [runAttnDecodeCases(cpu, gpu, dtype, filter)];
    if (gpu instanceof CudaDevice) {
      extra.push(runAtCases(gpu, dtype));
      if (!filter || filter('attention decode')) extra.push(runAttnDecodeGpuCases(cpu, gpu, dtype));
    }
    for (const more of extra) {
      run.checks.push(...more.checks);
      run.failures.push(...more.failures);
    }
    report(dtype, run, performance.now() - t0);
  }
  if (!skip('quant')) {
    log(`== quantized-linear cases, ${dtype}`);
    const t0 = performance.now();
    const run = runQuantCases(cpu, gpu, dtype, filter);
    if (gpu instanceof CudaDevice && dtype !== 'f32') {
      const graphs = runQuantGraphCases(gpu, dtype);
      run.checks.push(...graphs.checks);
      run.failures.push(...graphs.failures);
    }
    report(`quant ${dtype}`, run, performance.now() - t0);
  }
  if (!skip('quant-job')) {
    log(`== quantization-job cases, ${dtype}`);
    const t0 = performance.now();
    report(`quant-job ${dtype}`, runQuantJobCases(cpu, gpu, dtype, filter), performance.now() - t0);
  }
  if (!skip('train')) {
    log(`== training cases, ${dtype}`);
    const t0 = performance.now();
    report(`train ${dtype}`, runTrainCases(cpu, gpu, dtype, filter), performance.now() - t0);
  }
}
const model = value('--model', 'data/stories260K')!;
const data = value('--data', 'data/tinystories-valid.txt')!;
if (!skip('quant-model') && fs.existsSync(path.join(model, 'config.json')) && fs.existsSync(data)) {
  log(`== stories260K quantized to each scheme (cpu quantize), evaluated on the GPU`);
  const t0 = performance.now();
  report('quant models', await runQuantModelChecks(cpu, makeGpu, { model, data }, log), performance.now() - t0);
} else if (!skip('quant-model')) {
  log(`== quantized stories260K checks skipped: no ${model}/config.json or ${data}`);
}
if (!skip('decode-layer') && !selfTest) {
  log('== fused decode layer vs the per-op decode path');
  const t0 = performance.now();
  report('decode layer', await runDecodeLayerChecks((dtype) => new CudaDevice({ dtype }), log), performance.now() - t0);
}
cpu.close();

const passed = all.filter((c) => c.ok).length;
log(`== ${passed}/${all.length} op checks passed; ${failures.length} failure(s)`);
for (const f of failures) log(`  FAILED ${f}`);
if (process.env.OUT) {
  fs.writeFileSync(path.join(process.env.OUT, 'cuda-tests.json'), JSON.stringify({ checks: all, failures }, null, 1));
}
process.exit(failures.length ? 1 : 0);
