#!/usr/bin/env node
// CPU eval: stories260K over the whole of tinystories-valid.txt. Throughput under chunks512 with 1
// and 2 threads (more if the machine has them, up to 8); then chunks128 and stride512_256 with the
// most threads, so all three protocols' perplexities are checked against the float64 reference.
// Prints two tables and writes bench/results/<date>-cpu-eval.json. Run with `npm run bench:cpu`
// (builds dist/ first).
//
// Usage: node bench/cpu-eval.js [--threads 1,2] [--max-tokens N]   (--max-tokens: a quick check, nothing written)

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runEval } from '../dist/eval/run.js';
import { createCpuDevice } from '../dist/tensor/cpu/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const model = path.join(shared, 'models/stories260K');
const dataFile = path.join(shared, 'data/tinystories-valid.txt');
const reference = JSON.parse(readFileSync(path.join(shared, 'references/stories260K-perplexity.json'), 'utf8'))['data/tinystories-valid.txt'];

function flag(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const cores = availableParallelism();
const threadCounts = (flag('--threads') ?? [1, 2, 4, 8].filter((t) => t === 1 || t <= cores).join(','))
  .split(',')
  .map(Number);
const maxTokens = flag('--max-tokens') !== undefined ? Number(flag('--max-tokens')) : undefined;

const loadBefore = loadavg()[0];

/** One eval run; seqLen/stride pick the protocol. */
async function evalOnce(threads, seqLen, stride) {
  const device = createCpuDevice({ threads });
  try {
    const run = await runEval({ model, dataFile, keepLast: false, maxTokens, seqLen, stride, device, deviceName: 'cpu' });
    const r = run.result;
    const name = stride === undefined ? `chunks${seqLen}` : `stride${seqLen}_${stride}`;
    const ref = reference[name];
    process.stderr.write(`${name}, threads ${threads}: ${Math.round(r.tokensPerSecond)} tokens/s\n`);
    return {
      protocol: name,
      threads,
      batch: run.batch,
      tokens_scored: r.tokensScored,
      forward_s: r.forwardSeconds,
      wall_s: run.wallSeconds,
      tokens_per_s: r.tokensPerSecond,
      ppl: r.ppl,
      reference_ppl: ref.ppl,
      ppl_rel_diff: Math.abs(r.ppl - ref.ppl) / ref.ppl,
    };
  } finally {
    device.close();
  }
}

function printTable(header, rows) {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c].length)));
  for (const row of [header, ...rows]) console.log(row.map((cell, c) => cell.padStart(widths[c])).join('  '));
}

const throughput = [];
for (const threads of threadCounts) throughput.push(await evalOnce(threads, 512));
const most = Math.max(...threadCounts);
const protocols = [throughput.find((r) => r.threads === most), await evalOnce(most, 128), await evalOnce(most, 512, 256)];

console.log('throughput, chunks512');
printTable(['threads', 'tokens scored', 'forward s', 'tokens/s'], throughput.map((r) => [String(r.threads), String(r.tokens_scored), r.forward_s.toFixed(2), Math.round(r.tokens_per_s).toString()]));
console.log(`\nperplexity vs the float64 reference (${most} threads)`);
printTable(
  ['protocol', 'tokens scored', 'ppl', 'reference', 'rel diff', 'tokens/s'],
  protocols.map((r) => [r.protocol, String(r.tokens_scored), r.ppl.toFixed(9), r.reference_ppl.toFixed(9), r.ppl_rel_diff.toExponential(1), Math.round(r.tokens_per_s).toString()]),
);

if (maxTokens !== undefined) {
  console.log('--max-tokens: a partial run, results not written');
  process.exit(0);
}

const date = new Date().toISOString().slice(0, 10);
const out = path.join(root, 'bench/results', `${date}-cpu-eval.json`);
mkdirSync(path.dirname(out), { recursive: true });
const result = {
  bench: 'cpu-eval',
  date: new Date().toISOString(),
  model: 'stories260K',
  data: 'tinystories-valid.txt',
  // Other processes compete for the cores on shared machines: the 1-minute load average says how much.
  machine: { cpu: cpus()[0]?.model ?? 'unknown', cores, node: process.version, platform: `${process.platform}-${process.arch}`, loadavg_1m_before: loadBefore },
  throughput,
  protocols,
};
writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(root, out)}`);
