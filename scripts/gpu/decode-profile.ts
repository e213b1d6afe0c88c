// Runs graph-replayed decode steps of a checkpoint on cuda with the CUDA profiler off except around a
// few steps (cuProfilerStart/Stop), so `ncu --profile-from-start off` measures exactly the kernels of
// those steps, each alone (ncu serializes kernels; PDL overlap is not seen, kernel durations are).
// Usage (GPU machine): ncu --clock-control none --profile-from-start off --graph-profiling node \
//   --metrics gpu__time_duration.sum --csv node .gpu/decode-profile.mjs --model DIR [--batch 1] [--steps 2]
// Without ncu it just prints the steps' wall time.

import koffi from 'koffi';
import { loadModel } from '../../src/model/load.js';
import { createDecodeSession } from '../../src/model/generate.js';
import { CudaDevice } from '../../src/tensor/cuda/index.js';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const modelDir = flag('model', '');
const batch = Number(flag('batch', '1'));
const steps = Number(flag('steps', '2'));
const dev = new CudaDevice({ dtype: 'bf16' });
const model = await loadModel(modelDir, dev);
const lib = koffi.load('libcuda.so.1');
const cuProfilerStart = lib.func('int cuProfilerStart()');
const cuProfilerStop = lib.func('int cuProfilerStop()');

const promptLen = 512;
const session = createDecodeSession(model.decoder, batch, promptLen + 16 + steps);
const prompts = new Int32Array(batch * promptLen).map((_, i) => (i * 7919) % model.spec.vocabSize);
session.prefill(prompts, promptLen).wait();
for (let s = 0; s < 8; s++) session.step().wait(); // captured and replayed: warm
dev.synchronize();
const t0 = performance.now();
cuProfilerStart();
for (let s = 0; s < steps; s++) session.step().wait();
dev.synchronize();
cuProfilerStop();
console.log(`profiled ${steps} decode steps at batch ${batch}: ${(performance.now() - t0).toFixed(2)} ms wall (graph: ${session.usesGraph})`);
session.dispose();
