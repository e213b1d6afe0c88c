// llmopt quantize <model> --scheme S -o OUT: post-training quantization with calibration to a
// compressed-tensors checkpoint (vLLM and transformers load it as is), with llmopt-report.json.
// Options come from flags, or from --recipe FILE.yaml with flags overriding it.

import { readFileSync } from 'node:fs';
import chalk from 'chalk';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { describeCalibrationSource } from '../compress/calibration.js';
import { DEFAULT_GROUP_SIZE, DEFAULTS, SCHEME_NAMES, describeScheme, prepareQuantize, runQuantize, type LayerReport, type QuantizeReport, type QuantizeSettings } from '../compress/quant/index.js';
import { loadRecipe, mergeOverRecipe, type QuantizeRecipe } from '../pipeline/recipe.js';
import { CudaDevice } from '../tensor/cuda/index.js';
import { openDevice, type OpenedDevice } from './device.js';
import { formatBytes, formatFloat, formatInt, renderTable } from './format.js';

interface QuantizeFlags {
  scheme?: string;
  output?: string;
  method?: string;
  observer?: string;
  groupSize?: string;
  asym?: boolean;
  staticActivations?: boolean;
  smoothquant?: string | boolean;
  kvCache?: string;
  actorder?: boolean;
  dampening?: string;
  calib?: string;
  calibSamples?: string;
  calibSeqLen?: string;
  seed?: string;
  recipe?: string;
  force?: boolean;
  json?: boolean;
  device: string;
  dtype?: string;
  activations: string;
}

function integerFlag(flag: string, value: string | undefined, min: number): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} ${JSON.stringify(value)}: expected an integer ≥ ${min}`);
  return n;
}

function numberFlag(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag} ${JSON.stringify(value)}: expected a number`);
  return n;
}

/** The flags as recipe fields (undefined where the flag was not given). */
function flagsAsRecipe(f: QuantizeFlags): QuantizeRecipe {
  return {
    scheme: f.scheme,
    method: f.method,
    observer: f.observer,
    groupSize: f.groupSize === undefined ? undefined : f.groupSize === 'channel' ? 'channel' : integerFlag('--group-size', f.groupSize, 1),
    asym: f.asym,
    staticActivations: f.staticActivations,
    smoothquant: f.smoothquant === undefined ? undefined : f.smoothquant === true ? DEFAULTS.smoothquantAlpha : numberFlag('--smoothquant', f.smoothquant as string),
    kvCache: f.kvCache === undefined ? undefined : f.kvCache === 'fp8' ? 'fp8' : (() => { throw new UsageError(`--kv-cache ${JSON.stringify(f.kvCache)}: only fp8 is supported`); })(),
    actorder: f.actorder,
    dampening: numberFlag('--dampening', f.dampening),
    calibration: {
      source: f.calib,
      samples: integerFlag('--calib-samples', f.calibSamples, 1),
      seqLen: integerFlag('--calib-seq-len', f.calibSeqLen, 2),
      seed: integerFlag('--seed', f.seed, 0),
    },
  };
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** "cuda (NVIDIA H200)" or "cpu". */
function deviceLabel(opened: OpenedDevice): string {
  return opened.gpu !== undefined ? `${opened.name} (${opened.gpu})` : opened.name;
}

/** Per-layer progress on stderr: a bar on a terminal, one plain line per layer otherwise. */
function layerProgress(): { start(layers: number): void; layer(r: LayerReport, layers: number): void; stop(): void } {
  const stream = process.stderr;
  let bar: cliProgress.SingleBar | undefined;
  return {
    start(layers) {
      if (!stream.isTTY) return;
      bar = new cliProgress.SingleBar(
        { stream, format: 'quantize [{bar}] layer {value}/{total} | output rel error {err}', barsize: 30, hideCursor: true, clearOnComplete: true },
        cliProgress.Presets.shades_classic,
      );
      bar.start(layers, 0, { err: '-' });
    },
    layer(r, layers) {
      if (bar) bar.update(r.index + 1, { err: r.output_rel_error.toFixed(4) });
      else {
        const s = r.seconds;
        stream.write(
          `layer ${r.index + 1}/${layers}: output rel error ${r.output_rel_error.toFixed(4)} (update ${r.update_rel_error.toFixed(4)}), ` +
            `${(s.calibrate + s.quantize + s.propagate).toFixed(2)} s\n`,
        );
      }
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}

/** Where the calibration activations lived (on the cpu device that is host memory anyway). */
function activationsLine(r: QuantizeReport): string {
  const a = r.memory.activations;
  if (r.memory.peak_device_bytes === null) return `activations ${formatBytes(a.bytes)}`;
  return a.where === 'device' ? `activations on the GPU (${formatBytes(a.bytes)})` : `activations on the host (${formatBytes(a.bytes)}, uploaded for every pass: too big for the GPU)`;
}

function renderHuman(r: QuantizeReport, schemeLine: string): string[] {
  const c = r.calibration;
  const lines = [
    `model        ${r.model}`,
    `output       ${chalk.bold(r.output)} (${r.format})`,
    `scheme       ${schemeLine}`,
    `method       ${r.method}${r.settings.gptq ? ` (dampening ${r.settings.gptq.dampening}, block ${r.settings.gptq.block_size}${r.settings.gptq.actorder ? ', act-order' : ''})` : ''}, observer ${r.observer}` +
      (r.settings.smoothquant_alpha !== null ? `, SmoothQuant α ${r.settings.smoothquant_alpha}` : ''),
    `calibration  ${c.description}: ${formatInt(c.samples)} samples × ${formatInt(c.seq_len)} tokens (${formatInt(c.tokens)} tokens), seed ${c.seed}`,
    `device       ${r.device}, calibration forward in ${r.device_dtype}; ${activationsLine(r)}`,
    '',
  ];
  const rows = r.layers.map((l) => [
    String(l.index),
    l.output_rel_error.toFixed(4),
    l.update_rel_error.toFixed(4),
    (l.seconds.calibrate + l.seconds.quantize + l.seconds.propagate).toFixed(2),
  ]);
  lines.push(...renderTable(['layer', 'output rel err', 'update rel err', 'seconds'], rows, [true, true, true, true]), '');
  const t = r.timings_s;
  const m = r.memory;
  const peaks = m.peak_device_bytes;
  const deviceMemory = peaks === null
    ? ''
    : `; device ${formatBytes(peaks.overall)} (embed ${formatBytes(peaks.embed)}, calibrate ${formatBytes(peaks.calibrate)}, ` +
      `quantize ${formatBytes(peaks.quantize)}, propagate ${formatBytes(peaks.propagate)})`;
  lines.push(
    `size         ${formatBytes(r.size.input_weight_bytes)} → ${chalk.bold(formatBytes(r.size.output_weight_bytes))} (${formatFloat(r.size.input_weight_bytes / r.size.output_weight_bytes, 3)}× smaller)`,
    `time         ${t.total.toFixed(2)} s (load ${t.load.toFixed(2)}, calibration data ${t.calibration_data.toFixed(2)}, layers ${t.layers.toFixed(2)}, write ${t.write.toFixed(2)})`,
    `peak memory  ${formatBytes(m.peak_rss_bytes)} RSS${deviceMemory}`,
  );
  return lines;
}

async function quantizeCommand(model: string, flags: QuantizeFlags): Promise<void> {
  if (!['auto', 'device', 'host'].includes(flags.activations)) throw new UsageError(`--activations ${JSON.stringify(flags.activations)}: use auto, device or host`);
  const recipe = flags.recipe !== undefined ? loadRecipe(flags.recipe).quantize : undefined;
  const o = mergeOverRecipe<QuantizeRecipe>(recipe, flagsAsRecipe(flags));
  if (o.scheme === undefined) throw new UsageError(`--scheme is required (one of ${SCHEME_NAMES.join(', ')}), or give it in --recipe`);
  if (flags.output === undefined) throw new UsageError('-o, --output <dir> is required');

  const settings: QuantizeSettings = {
    model,
    output: flags.output,
    scheme: o.scheme,
    method: o.method as QuantizeSettings['method'],
    observer: o.observer as QuantizeSettings['observer'],
    groupSize: o.groupSize,
    asym: o.asym,
    staticActivations: o.staticActivations,
    smoothquant: o.smoothquant,
    kvCache: o.kvCache,
    actorder: o.actorder,
    dampening: o.dampening,
    ignore: o.ignore,
    calibration: o.calibration,
    force: flags.force ?? false,
    toolVersion: packageVersion(),
  };
  // Every input is checked (and the calibration set drawn) before a device is opened.
  const prepared = await prepareQuantize(settings);
  let opened: ReturnType<typeof openDevice>;
  try {
    // The calibration forward computes in fp32 unless --dtype says otherwise (fidelity over speed).
    opened = openDevice(flags.device, flags.dtype ?? 'fp32');
  } catch (e) {
    prepared.close();
    throw e;
  }
  const progress = layerProgress();
  let schemeLine = o.scheme;
  try {
    const report = await runQuantize(prepared, {
      device: opened.device,
      deviceName: deviceLabel(opened),
      deviceDtype: opened.dtypeName,
      // the cuda device's tensor accounting gives the report's peak device memory per phase
      memory: opened.device instanceof CudaDevice ? opened.device : undefined,
      activations: flags.activations === 'auto' ? undefined : (flags.activations as 'device' | 'host'),
      onStart: ({ layers, scheme, calibration }) => {
        schemeLine = describeScheme(scheme);
        if (!flags.json) {
          process.stderr.write(
            `quantize ${model}: ${schemeLine}\n` +
              `calibration: ${describeCalibrationSource(calibration.source)}, ${formatInt(calibration.windows.length)} samples, ${formatInt(calibration.tokens)} tokens\n` +
              `device: ${deviceLabel(opened)}, calibration forward in ${opened.dtypeName}\n`,
          );
        }
        progress.start(layers);
      },
      onLayer: (r, layers) => progress.layer(r, layers),
    });
    progress.stop();
    process.stdout.write(flags.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderHuman(report, schemeLine).join('\n')}\n`);
  } finally {
    progress.stop();
    opened.close();
  }
}

export function registerQuantize(program: Command): void {
  program
    .command('quantize')
    .description('post-training quantization (FP8, INT8, INT4) with calibration → compressed-tensors checkpoint for vLLM/transformers')
    .argument('<model>', 'checkpoint folder, or a .safetensors file with config.json beside it')
    .option('--scheme <name>', `${SCHEME_NAMES.join(' | ')} (llm-compressor's preset names)`)
    .option('-o, --output <dir>', 'output folder (refused if it exists, unless --force)')
    .option('--method <m>', 'rtn | gptq (default rtn)')
    .option('--observer <o>', 'weight scales: minmax | mse (MSE-optimal clipping, grid search) (default minmax)')
    .option('--group-size <n>', `W4A16/W8A16: columns per scale, or "channel" (default ${DEFAULT_GROUP_SIZE})`)
    .option('--asym', 'W4A16/W8A16: asymmetric weights with zero points')
    .option('--static-activations', 'W8A8: static per-tensor input scales from calibration (default dynamic per-token)')
    .option('--smoothquant [alpha]', `SmoothQuant before quantizing, strength α (default ${DEFAULTS.smoothquantAlpha} when given)`)
    .option('--kv-cache <format>', 'fp8: per-layer k_scale/v_scale from calibration, FP8 KV cache')
    .option('--actorder', 'GPTQ: quantize columns in descending Hessian-diagonal order (act-order "weight")')
    .option('--dampening <f>', `GPTQ: damping as a fraction of the mean Hessian diagonal (default ${DEFAULTS.dampening})`)
    .option('--calib <name|file>', `calibration text: built-in name, .txt, or .jsonl with a "text" field (default ${DEFAULTS.calibSource})`)
    .option('--calib-samples <n>', `calibration windows (default ${DEFAULTS.calibSamples})`)
    .option('--calib-seq-len <n>', `tokens per window (default ${DEFAULTS.calibSeqLen}, capped by max_position_embeddings)`)
    .option('--seed <n>', `seed for drawing calibration windows (default ${DEFAULTS.seed})`)
    .option('--recipe <file>', 'YAML recipe with these options (recipes/); flags override it')
    .option('--device <kind>', 'auto | cpu | cuda: where the job runs (auto: the GPU when CUDA is usable, else the cpu with a notice)', 'auto')
    .option('--dtype <d>', 'cuda: dtype of the calibration forward passes, fp32 (default, fidelity) | bf16 | fp16; statistics, Hessians and GPTQ stay f32')
    .option('--activations <where>', 'where calibration activations live between layers: auto (the GPU when they fit in 40% of its free memory) | device | host', 'auto')
    .option('--force', 'replace the output folder if it exists')
    .option('--json', 'the report (llmopt-report.json) on stdout; progress stays on stderr')
    .action(async (model: string, flags: QuantizeFlags) => {
      await quantizeCommand(model, flags);
    });
}
