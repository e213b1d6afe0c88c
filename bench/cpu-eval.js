#!/usr/bin/env node
// CPU eval throughput: stories260K over the whole of tinystories-valid.txt (chunks512), with 1 and
// 2 threads (more if the machine has them, up to 8). Prints a table and writes
// bench/results/<date>-cpu-eval.json. Run with `npm run bench:cpu` (builds dist/ first).
//
// Usage: node bench/cpu-eval.js [--threads 1,2] [--max-tokens N]   (--max-tokens: a quick check, nothing written)

import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runEval } from '../dist/eval/run.js';
import { createCpuDevice } from '../dist/tensor/cpu/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shared = path.resolve(root, '../shared');
const model = path.join(shared, 'models/stories260K');
const dataFile = path.join(shared, 'data/tinystories-valid.txt');
const REFERENCE_PPL = 5.065265298390889; // references/stories260K-perplexity.json, chunks512 (float64)

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
const rows = [];
for (const threads of threadCounts) {
  const device = createCpuDevice({ threads });
  try {
    const run = await runEval({ model, dataFile, keepLast: false, maxTokens, seqLen: 512, device, deviceName: 'cpu' });
    const r = run.result;
    rows.push({
      threads,
      batch: run.batch,
      tokens_scored: r.tokensScored,
      forward_s: r.forwardSeconds,
      wall_s: run.wallSeconds,
      tokens_per_s: r.tokensPerSecond,
      ppl: r.ppl,
      ppl_rel_err_vs_reference: Math.abs(r.ppl - REFERENCE_PPL) / REFERENCE_PPL,
    });
    process.stderr.write(`threads ${threads}: ${Math.round(r.tokensPerSecond)} tokens/s\n`);
  } finally {
    device.close();
  }
}

const header = ['threads', 'tokens scored', 'forward s', 'tokens/s', 'ppl'];
const table = rows.map((r) => [String(r.threads), String(r.tokens_scored), r.forward_s.toFixed(2), Math.round(r.tokens_per_s).toString(), r.ppl.toFixed(6)]);
const widths = header.map((h, c) => Math.max(h.length, ...table.map((row) => row[c].length)));
for (const row of [header, ...table]) console.log(row.map((cell, c) => cell.padStart(widths[c])).join('  '));

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
  protocol: 'chunks512',
  // Other processes compete for the cores on shared machines: the 1-minute load average says how much.
  machine: { cpu: cpus()[0]?.model ?? 'unknown', cores, node: process.version, platform: `${process.platform}-${process.arch}`, loadavg_1m_before: loadBefore },
  rows,
};
writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
console.log(`wrote ${path.relative(root, out)}`);
