// The GPU machine's test runner (bundled by scripts/gpu/bundle.sh into .gpu/, which carries no
// vitest): the engine smoke test, then every op case of test/cuda-cases.ts and the quantization-job
// cases of test/quant-job-cases.ts in f32, bf16 and f16 against the cpu device. Prints a pass/fail
// table; writes $OUT/cuda-tests.json when $OUT is set.
// Usage: node .gpu/run-cuda-tests.mjs [--only <substring>] [--skip-smoke] [--skip-ops] [--skip-quant-job] [--self-test]
// --self-test compares the cpu device with itself (no GPU): checks the harness and the bundle.

import fs from 'node:fs';
import path from 'node:path';
import { createCpuDevice } from '../../src/tensor/cpu/index.js';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { ComputeDType } from '../../src/tensor/device.js';
import { runAtCases, runCases, type Check } from '../../test/cuda-cases.js';
import { runQuantJobCases } from '../../test/quant-job-cases.js';
import { runSmoke } from './smoke.js';

const args = process.argv.slice(2);
const skip = (step: string) => args.includes(`--skip-${step}`);
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
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
for (const dtype of ['f32', 'bf16', 'f16'] as ComputeDType[]) {
  log(`== op cases, ${dtype}`);
  const gpu = selfTest ? createCpuDevice({ threads: 2 }) : new CudaDevice({ dtype });
  const t0 = performance.now();
  const filter = only ? (n: string) => n.includes(only) : undefined;
  const run = skip('ops') ? { checks: [], failures: [] } : runCases(cpu, gpu, dtype, filter);
  if (!skip('quant-job')) {
    const qj = runQuantJobCases(cpu, gpu, dtype, filter);
    run.checks.push(...qj.checks);
    run.failures.push(...qj.failures);
  }
  if (gpu instanceof CudaDevice && !skip('ops')) {
    const at = runAtCases(gpu, dtype);
    run.checks.push(...at.checks);
    run.failures.push(...at.failures);
  }
  const ms = performance.now() - t0;
  for (const c of run.checks) {
    all.push({ ...c, ms });
    log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.dtype.padEnd(4)} ${c.case.padEnd(78)} err ${c.error.toExponential(2)} tol ${c.tol.toExponential(0)}${c.note ? `  ${c.note}` : ''}`);
  }
  failures.push(...run.failures);
  log(`${dtype}: ${run.checks.length - run.failures.length}/${run.checks.length} passed in ${ms.toFixed(0)} ms`);
}
cpu.close();

const passed = all.filter((c) => c.ok).length;
log(`== ${passed}/${all.length} op checks passed; ${failures.length} failure(s)`);
for (const f of failures) log(`  FAILED ${f}`);
if (process.env.OUT) {
  fs.writeFileSync(path.join(process.env.OUT, 'cuda-tests.json'), JSON.stringify({ checks: all, failures }, null, 1));
}
process.exit(failures.length ? 1 : 0);
