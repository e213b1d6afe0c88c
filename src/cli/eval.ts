// llmopt eval <model> --data <file>: perplexity under a named protocol, KLD/top-1 against a
// baseline, tokens/s; --gate expressions turn any of them into a CI check (exit 3 on failure).

import chalk from 'chalk';
import type { Command } from 'commander';
import { LlmoptError, UsageError } from '../errors.js';
import { BASELINE_METRICS, checkGatesComputable, checkGatesForMode, evaluateGates, GATE_METRICS, parseGate, type GateMetric, type GateResult } from '../eval/gates.js';
import { buildEvalReport, gateMetrics, type EvalReport } from '../eval/report.js';
import { runEval } from '../eval/run.js';
import { openDevice } from './device.js';
import { latencyCommand } from './latency.js';
import { formatFloat, formatInt, renderTable } from './format.js';
import { EXIT_GATE_FAILED, EXIT_OK, type ExitCodeSink } from './exit.js';
import { createProgress, type Progress } from './progress.js';

interface EvalFlags {
  data?: string;
  dtype?: string;
  latency?: boolean;
  promptLen?: string;
  genLen?: string;
  seqLen?: string;
  stride?: string;
  keepLast?: boolean;
  maxTokens?: string;
  device: string;
  batch?: string;
  baseline?: string;
  gate?: string[];
  json?: boolean;
}

/** A flag's value as an integer ≥ min, or an LlmoptError naming the flag. */
function integerFlag(flag: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new LlmoptError(`${flag} ${JSON.stringify(value)}: expected an integer ≥ ${min}`);
  return n;
}

function renderHuman(r: EvalReport): string[] {
  const p = r.protocol;
  const m = r.metrics;
  const protocolText = p.name.startsWith('chunks')
    ? `non-overlapping ${p.window}-token windows, last short window ${p.keep_last ? 'kept' : 'dropped'}`
    : `${p.window}-token windows every ${p.stride} tokens, each token scored once`;
  const lines = [
    `model     ${r.model}`,
    ...(r.baseline !== null ? [`baseline  ${r.baseline}`] : []),
    `data      ${r.data.file}: ${formatInt(r.data.tokens_in_file)} tokens` +
      (r.data.tokens_used < r.data.tokens_in_file ? `, first ${formatInt(r.data.tokens_used)} used (--max-tokens)` : ''),
    `protocol  ${chalk.bold(p.name)}: ${protocolText}`,
    `          window ${p.window}, stride ${p.stride}, ${formatInt(p.windows)} windows, ${formatInt(p.tokens_scored)} tokens scored`,
    `device    ${p.device}, ${p.dtype}, batch ${p.batch}`,
    `time      ${m.wall_s.toFixed(2)} s wall, ${m.forward_s.toFixed(2)} s model forward` +
      (m.baseline_forward_s !== undefined ? ` + ${m.baseline_forward_s.toFixed(2)} s baseline` : '') +
      `, ${formatInt(Math.round(m.tokens_per_s))} tokens/s`,
    '',
  ];
  if (r.baseline === null) {
    lines.push(`ppl       ${chalk.bold(formatFloat(m.ppl, 7))}`, `nll       ${formatFloat(m.nll, 7)} nats/token`);
  } else {
    const rows = [
      ['ppl', formatFloat(m.ppl, 7), formatFloat(m.baseline_ppl!, 7)],
      ['nll (nats/token)', formatFloat(m.nll, 7), formatFloat(Math.log(m.baseline_ppl!), 7)],
      ['ppl ratio', formatFloat(m.ppl_ratio!, 6), ''],
      ['kld mean', formatFloat(m.kld_mean!, 4), ''],
      ['kld p99', formatFloat(m.kld_p99!, 4), ''],
      ['top-1 agreement', `${(100 * m.top1!).toFixed(2)}%`, ''],
    ];
    lines.push(...renderTable(['', 'model', 'baseline'], rows, [false, true, true]));
  }
  if (r.gates.length > 0) lines.push('', ...renderGates(r.gates));
  return lines;
}

function renderGates(gates: readonly GateResult[]): string[] {
  return gates.map((g) => {
    const verdict = g.pass ? chalk.green('PASS') : chalk.red('FAIL');
    return `gate ${verdict}  ${g.metric} ${g.op} ${g.threshold}  (${g.metric} = ${formatFloat(g.actual, 6)})`;
  });
}

/**
 * `--device auto`'s fall-back notice, held back until the command has produced its result: bad input
 * must stay exactly one `error:` line on stderr.
 */
function deferredNotices(): { push: (line: string) => void; flush: () => void } {
  const lines: string[] = [];
  return {
    push: (line) => void lines.push(line),
    flush: () => {
      for (const line of lines.splice(0)) process.stderr.write(`notice: ${line}\n`);
    },
  };
}

async function evalCommand(model: string, flags: EvalFlags): Promise<number> {
  const notices = deferredNotices();
  const gates = (flags.gate ?? []).map(parseGate);
  checkGatesComputable(gates, flags.baseline !== undefined);
  checkGatesForMode(gates, flags.latency === true);
  if (flags.latency) {
    const latencyFlags = {
      promptLen: integerFlag('--prompt-len', flags.promptLen, 1),
      genLen: integerFlag('--gen-len', flags.genLen, 1),
      batch: integerFlag('--batch', flags.batch, 1),
      json: flags.json,
    };
    const device = openDevice(flags.device, flags.dtype, notices.push);
    try {
      const code = await latencyCommand(model, latencyFlags, gates, device);
      notices.flush();
      return code;
    } finally {
      device.close();
    }
  }
  if (flags.data === undefined) throw new UsageError('--data <file> is required (or --latency to measure speed and memory)');
  if (flags.keepLast && flags.stride !== undefined) throw new UsageError('--keep-last applies to chunks; --stride windows always reach the end of the data');
  const seqLen = integerFlag('--seq-len', flags.seqLen, 1);
  const stride = integerFlag('--stride', flags.stride, 1);
  const maxTokens = integerFlag('--max-tokens', flags.maxTokens, 2);
  const batch = integerFlag('--batch', flags.batch, 1);
  if (seqLen !== undefined && stride !== undefined && stride > seqLen) {
    throw new LlmoptError(`--stride ${stride} is larger than --seq-len ${seqLen}: tokens between windows would never be scored`);
  }
  const opened = openDevice(flags.device, flags.dtype, notices.push);

  let progress: Progress | undefined;
  try {
    const run = await runEval({
      model,
      baseline: flags.baseline,
      dataFile: flags.data,
      seqLen,
      stride,
      keepLast: flags.keepLast ?? false,
      maxTokens,
      batch,
      device: opened.device,
      deviceName: opened.gpu !== undefined ? `${opened.name} (${opened.gpu})` : opened.name,
      onStart: (total, protocol) => (progress = createProgress(`eval ${protocol}`, total)),
      onProgress: (p) => progress?.update(p.scored, p.scored / p.forwardSeconds),
    });
    progress?.stop();
    progress = undefined;
    const gateResults = evaluateGates(gates, gateMetrics(run.result));
    const report = buildEvalReport(run, gateResults);
    notices.flush();
    process.stdout.write(flags.json ? JSON.stringify(report, null, 2) + '\n' : renderHuman(report).join('\n') + '\n');
    return report.passed ? EXIT_OK : EXIT_GATE_FAILED;
  } finally {
    progress?.stop();
    opened.close();
  }
}

export function registerEval(program: Command, exit: ExitCodeSink): void {
  const metrics = Object.entries(GATE_METRICS)
    .map(([k, v]) => `${k} (${v}${BASELINE_METRICS.includes(k as GateMetric) ? ', needs --baseline' : ''})`)
    .join(', ');
  program
    .command('eval')
    .description('perplexity under a named protocol; KLD and top-1 agreement against a baseline; gates for CI')
    .argument('<model>', 'checkpoint folder, or a .safetensors file with config.json beside it')
    .option('--data <file>', 'text file to score (tokenized whole, with BOS); required unless --latency')
    .option('--seq-len <n>', 'window length in tokens (default: min(2048, max_position_embeddings))')
    .option('--stride <s>', 'sliding windows starting every S tokens, each token scored once (strideN_S); default: non-overlapping chunks (chunksN)')
    .option('--keep-last', 'chunks: also score a last window shorter than the window (chunksN_keep_last)')
    .option('--max-tokens <n>', 'use only the first N tokens of the data (BOS included)')
    .option('--device <kind>', 'cpu, cuda, or auto (cuda when a GPU is usable, else cpu with a notice)', 'auto')
    .option('--dtype <dtype>', 'GPU dtype: bf16 (default on cuda), fp16 or fp32; the cpu computes in fp32')
    .option('--batch <b>', 'windows per forward pass (default: up to 8, bounded by logits memory); with --latency: sequences decoded together (default 1)')
    .option('--latency', 'measure prefill, time to first token, decode ms/token and memory instead of perplexity (no --data)')
    .option('--prompt-len <p>', '--latency: prompt tokens per sequence (default min(512, context − gen-len))')
    .option('--gen-len <g>', '--latency: tokens generated per sequence (default 128)')
    .option('--baseline <model>', 'score the same windows with this model: KLD(baseline ‖ model), top-1 agreement, ppl ratio')
    .option('--gate <expr>', `fail with exit 3 unless metric(<=|>=|<|>|==)number holds; repeatable. Metrics: ${metrics}`, (v: string, acc: string[] | undefined) => [...(acc ?? []), v])
    .option('--json', 'one JSON object on stdout (metrics, protocol, gates); progress stays on stderr')
    .action(async (model: string, flags: EvalFlags) => {
      exit.code = await evalCommand(model, flags);
    });
}
