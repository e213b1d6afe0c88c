// llmopt prune <model> --structured …: remove attention heads, KV groups, MLP channels, hidden
// channels and whole layers by importance, and write a smaller dense checkpoint (or, with
// --dry-run, print the plan).

import chalk from 'chalk';
import type { Command } from 'commander';
import { IMPORTANCE_METHODS, runPrune, type ImportanceMethod, type PruneReport } from '../compress/prune/index.js';
import { DEFAULT_CALIB_SAMPLES, DEFAULT_CALIB_SEQ_LEN } from '../compress/prune/run.js';
import { DEFAULT_CALIBRATION, describeCalibrationSource } from '../compress/calibration.js';
import { LlmoptError, UsageError } from '../errors.js';
import { openDevice, type OpenedDevice } from './device.js';
import { formatBytes, formatInt } from './format.js';
import { createProgress, type Progress } from './progress.js';

interface PruneFlags {
  structured?: boolean;
  heads?: string;
  kvHeads?: string;
  mlp?: string;
  layers?: string;
  hidden?: string;
  multipleOf?: string;
  allowIndivisibleHeads?: boolean;
  importance: string;
  calib?: string;
  calibSamples?: string;
  calibSeqLen?: string;
  seed: string;
  output?: string;
  force?: boolean;
  dryRun?: boolean;
  json?: boolean;
  device: string;
}

/** A ratio flag: a number (0.25) or a percentage (25%). Range checks happen in the plan. */
function ratioFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*(%?)\s*$/i.exec(value);
  if (m === null) throw new LlmoptError(`${flag} ${JSON.stringify(value)}: expected a ratio in [0, 1) such as 0.25, or a percentage such as 25%`);
  return Number(m[1]) / (m[2] === '%' ? 100 : 1);
}

function integerFlag(flag: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\s*-?\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new LlmoptError(`${flag} ${JSON.stringify(value)}: expected an integer ≥ ${min}`);
  return n;
}

const fraction = (x: number): string => `${(100 * x).toFixed(1)}%`;

/** "3, 17, 42 … (+40 more)" */
function indexList(xs: readonly number[], max = 12): string {
  if (xs.length === 0) return 'none';
  const shown = xs.slice(0, max).join(', ');
  return xs.length > max ? `${shown} … (+${xs.length - max} more)` : shown;
}

function renderHuman(r: PruneReport): string[] {
  const p = r.plan;
  const lines: string[] = [];
  const change = (what: string, x: { from: number; to: number }, suffix = '') =>
    x.from !== x.to ? [`${what.padEnd(16)}${x.from} → ${chalk.bold(String(x.to))}${suffix}`] : [];
  lines.push(`model       ${r.input.path} (${r.architecture})`);
  const cal = r.calibration;
  lines.push(
    `importance  ${r.importance.method}` +
      (cal ? `: ${cal.samples} × ${cal.seq_len}-token windows of ${describeCalibrationSource(cal.source)}, seed ${cal.seed}` : r.importance.method === 'random' ? `, seed ${r.settings.seed}` : ': weight norms') +
      ` (${r.timings_s.importance.toFixed(2)} s)`,
  );
  lines.push('', r.dry_run ? chalk.bold('plan (dry run: nothing written)') : chalk.bold('pruned'));
  lines.push(
    ...change('  KV groups', p.kv_groups, ' per layer'),
    ...change('  query heads', p.query_heads, ` per layer (${p.heads_per_group.to} per KV group)`),
    ...change('  MLP channels', p.mlp_channels, ' per layer'),
    ...change('  hidden', p.hidden_channels),
    ...change('  layers', p.layers, ` (removed: ${indexList(r.removed_layers)})`),
  );
  for (const note of p.rounding) lines.push(chalk.yellow(`  rounded: ${note}`));
  const showHeads = p.query_heads.from !== p.query_heads.to;
  const showGroups = p.kv_groups.from !== p.kv_groups.to;
  const showMlp = p.mlp_channels.from !== p.mlp_channels.to;
  if (showHeads || showGroups || showMlp) {
    lines.push('', 'removed per layer (original indices)');
    for (const l of r.layers) {
      const parts: string[] = [];
      if (showGroups) parts.push(`KV groups ${indexList(l.removed_kv_groups)}`);
      if (showHeads) parts.push(`heads ${indexList(l.removed_heads)}`);
      if (showMlp) parts.push(`channels ${indexList(l.removed_channels, 8)}`);
      lines.push(`  layer ${String(l.index).padStart(2)}→${String(l.new_index).padEnd(3)} ${parts.join('; ')}`);
    }
  }
  if (r.hidden) lines.push(`  hidden channels removed: ${indexList(r.hidden.removed)}`);
  lines.push(
    '',
    `parameters  ${formatInt(r.parameters.before)} → ${chalk.bold(formatInt(r.parameters.after))} (−${fraction(r.parameters.removed_fraction)})`,
    `size        ${formatBytes(r.bytes.before)} → ${formatBytes(r.bytes.after)} (${r.bytes.dtypes.join(', ')}, as the input)`,
  );
  if (r.output) lines.push(`output      ${r.output.path} (${r.output.files.join(', ')})`, `time        ${r.timings_s.total.toFixed(2)} s`);
  return lines;
}

async function pruneCommand(model: string, flags: PruneFlags, toolVersion: string): Promise<void> {
  const request = {
    heads: ratioFlag('--heads', flags.heads),
    kvHeads: ratioFlag('--kv-heads', flags.kvHeads),
    mlp: ratioFlag('--mlp', flags.mlp),
    hidden: ratioFlag('--hidden', flags.hidden),
    layers: integerFlag('--layers', flags.layers, 0),
    multipleOf: integerFlag('--multiple-of', flags.multipleOf, 1),
    allowIndivisibleHeads: flags.allowIndivisibleHeads ?? false,
  };
  if ([request.heads, request.kvHeads, request.mlp, request.hidden, request.layers].every((x) => x === undefined)) {
    throw new UsageError('nothing to prune: give at least one of --heads, --kv-heads, --mlp, --layers, --hidden');
  }
  if (!(IMPORTANCE_METHODS as readonly string[]).includes(flags.importance)) {
    throw new LlmoptError(`--importance ${JSON.stringify(flags.importance)}: expected one of ${IMPORTANCE_METHODS.join(', ')}`);
  }
  const importance = flags.importance as ImportanceMethod;
  if (importance !== 'activation' && (flags.calib !== undefined || flags.calibSamples !== undefined || flags.calibSeqLen !== undefined)) {
    throw new UsageError(`--calib, --calib-samples and --calib-seq-len apply to --importance activation, not ${importance}`);
  }
  if (!flags.dryRun && flags.output === undefined) throw new UsageError('no output folder: give -o <dir>, or --dry-run to only print the plan');
  const seed = integerFlag('--seed', flags.seed, 0)!;
  const calibration = {
    source: flags.calib,
    samples: integerFlag('--calib-samples', flags.calibSamples, 1),
    seqLen: integerFlag('--calib-seq-len', flags.calibSeqLen, 2),
  };

  // Opened only if the calibration forward passes run (after every input check). fp32: importance
  // statistics are cheap to keep exact, and the cpu computes nothing else.
  let opened: OpenedDevice | undefined;
  const lazyDevice = () => {
    opened = openDevice(flags.device, 'fp32');
    return { device: opened.device, name: opened.gpu !== undefined ? `${opened.name} (${opened.gpu})` : opened.name };
  };
  let progress: Progress | undefined;
  let calibStarted = 0;
  try {
    const report = await runPrune({
      model,
      output: flags.output,
      request,
      importance,
      calibration,
      seed,
      dryRun: flags.dryRun ?? false,
      overwrite: flags.force ?? false,
      device: lazyDevice,
      toolVersion,
      onCalibrationStart: (total) => {
        progress = createProgress('calibrate', total);
        calibStarted = performance.now();
      },
      onCalibrationProgress: (done) => progress?.update(done, done / Math.max(1e-9, (performance.now() - calibStarted) / 1000)),
    });
    progress?.stop();
    progress = undefined;
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderHuman(report).join('\n')}\n`);
  } finally {
    progress?.stop();
    opened?.close();
  }
}

export function registerPrune(program: Command, toolVersion: string): void {
  program
    .command('prune')
    .description('structured pruning: remove attention heads, KV groups, MLP channels, hidden channels or layers → a smaller dense checkpoint')
    .argument('<model>', 'checkpoint folder, or a .safetensors file with config.json beside it')
    .option('--structured', 'structured pruning (the only mode, and the default)')
    .option('--heads <r>', 'fraction of query heads to remove per layer, the same number from every KV group (GQA)')
    .option('--kv-heads <r>', 'fraction of KV groups to remove per layer, with their query heads')
    .option('--mlp <r>', 'fraction of MLP intermediate channels to remove per layer')
    .option('--layers <n>', 'number of whole decoder layers to remove (the least important)')
    .option('--hidden <r>', 'fraction of embedding (hidden) channels to remove, in every norm, embedding and projection (Minitron-style)')
    .option('--multiple-of <m>', 'round kept MLP/hidden channel counts to a multiple of M (head counts are never rounded)', '8')
    .option('--allow-indivisible-heads', "Llama: allow a query-head count that does not divide hidden_size (llmopt loads it; transformers ≥ 5's LlamaConfig refuses it)")
    .option('--importance <method>', `how units are ranked: ${IMPORTANCE_METHODS.join(', ')}`, 'activation')
    .option('--calib <name|file>', `calibration text for activation importance: built-in name or .txt/.jsonl file (default ${DEFAULT_CALIBRATION})`)
    .option('--calib-samples <n>', `calibration windows (default ${DEFAULT_CALIB_SAMPLES})`)
    .option('--calib-seq-len <l>', `tokens per calibration window (default min(${DEFAULT_CALIB_SEQ_LEN}, max_position_embeddings))`)
    .option('--seed <s>', 'seeds calibration windows and --importance random', '0')
    .option('-o, --output <dir>', 'output folder (written atomically; refused if it exists unless --force)')
    .option('--force', 'replace an existing output folder')
    .option('--dry-run', 'print what would be removed, the new parameter count and size; write nothing')
    .option('--json', 'print one JSON object (the llmopt-report.json content) on stdout')
    .option('--device <kind>', 'device for the calibration forward passes (fp32): cpu, cuda, or auto (the GPU when there is one)', 'auto')
    .action(async (model: string, flags: PruneFlags) => {
      await pruneCommand(model, flags, toolVersion);
    });
}
