// Perplexity of a model on the GPU (f32 and bf16), checked against a reference file's values.
// With --greedy-ref, also 200 greedy tokens from BOS per dtype, compared with the reference ids.
// Usage: node .gpu/eval-ppl.mjs --model DIR --data FILE [--ref JSON] [--greedy-ref JSON]
//        [--device cuda|cpu] [--dtypes f32,bf16] [--max-tokens N] [--seq-len 512]
// Prints one line per dtype; writes $OUT/eval-ppl.json when $OUT is set.

import fs from 'node:fs';
import path from 'node:path';
import { runEval } from '../../src/eval/run.js';
import { generateGreedy } from '../../src/model/generate.js';
import { loadModel } from '../../src/model/load.js';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { ComputeDType, Device } from '../../src/tensor/device.js';

function flag(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const model = flag('model')!;
const dataFile = flag('data')!;
const refFile = flag('ref');
const deviceKind = flag('device', 'cuda')!;
const dtypes = flag('dtypes', 'f32,bf16')!.split(',') as ComputeDType[];
const maxTokens = flag('max-tokens') ? Number(flag('max-tokens')) : undefined;
const seqLen = Number(flag('seq-len', '512'));
const greedyRef = flag('greedy-ref');

/** Greedy ids from BOS on `device` vs the reference's ids (which start with BOS). */
async function greedyCheck(device: Device): Promise<Record<string, unknown>> {
  const ref = JSON.parse(fs.readFileSync(greedyRef!, 'utf8')) as { greedy_from_bos_200_steps: { token_ids: number[] } };
  const want = ref.greedy_from_bos_200_steps.token_ids.slice(1);
  const loaded = await loadModel(model, device);
  const t0 = performance.now();
  const got = generateGreedy(loaded.decoder, new Int32Array([want.length > 0 ? ref.greedy_from_bos_200_steps.token_ids[0] : 1]), want.length);
  const seconds = (performance.now() - t0) / 1000;
  let firstMismatch = -1;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      firstMismatch = i;
      break;
    }
  }
  loaded.decoder.dispose({ weights: true });
  return { greedyTokens: got.length, greedyMatches: firstMismatch < 0, greedyFirstMismatch: firstMismatch, greedyTokensPerSecond: Math.round(got.length / seconds) };
}

/** Reference ppl per dtype from stories260K-perplexity.json's "float32_and_bf16" entries. */
function referencePpl(dtype: ComputeDType): number | undefined {
  if (!refFile) return undefined;
  const ref = JSON.parse(fs.readFileSync(refFile, 'utf8')) as Record<string, Record<string, { ppl: number }>>;
  const entries = ref['float32_and_bf16'] ?? {};
  const key = Object.keys(entries).find((k) => k.includes(`chunks${seqLen}`) && k.includes(dtype === 'f32' ? 'float32' : 'bfloat16'));
  return key ? entries[key].ppl : undefined;
}

const results: Record<string, unknown>[] = [];
for (const dtype of dtypes) {
  const device: Device =
    deviceKind === 'cpu' ? (await import('../../src/tensor/cpu/index.js')).createCpuDevice() : new CudaDevice({ dtype });
  const run = await runEval({ model, dataFile, seqLen, keepLast: false, maxTokens, device, deviceName: deviceKind });
  const r = run.result;
  const ref = maxTokens === undefined ? referencePpl(dtype) : undefined;
  const rel = ref !== undefined ? Math.abs(r.ppl - ref) / ref : undefined;
  const line = {
    device: deviceKind, dtype: device.dtype, protocol: `chunks${seqLen}`, tokensScored: r.tokensScored, nllSum: r.nllSum, ppl: r.ppl,
    reference: ref, relDiff: rel, tokensPerSecond: Math.round(r.tokensPerSecond), forwardSeconds: r.forwardSeconds, wallSeconds: run.wallSeconds,
    ...(greedyRef ? await greedyCheck(device) : {}),
  };
  results.push(line);
  console.log(JSON.stringify(line));
  (device as { close?: () => void }).close?.();
}
if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'eval-ppl.json'), JSON.stringify(results, null, 1));
