// One structured prune, start to end: read config → plan counts → importance → select → slice the
// checkpoint → write the output folder atomically (or, with dryRun, only report the plan).
// Every bad input is an LlmoptError raised before anything is written (and, where it can be known
// up front, before the calibration forward passes run).

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, LlmoptError } from '../../errors.js';
import { CONFIG_FILE, CheckpointTensors, DTYPE_SIZE, copyFiles, readJsonFile, resolveModelPath, writeCheckpointTensors, writeOutputDir } from '../../io/index.js';
import type { TensorToWrite } from '../../io/safetensors.js';
import { parseModelConfig } from '../../model/config.js';
import { loadModel } from '../../model/load.js';
import type { ModelSpec } from '../../model/spec.js';
import { TextTokenizer, TOKENIZER_FILE } from '../../model/tokenizer.js';
import type { Device } from '../../tensor/device.js';
import { DEFAULT_CALIBRATION, loadCalibration } from '../calibration.js';
import { prunedConfig } from './config.js';
import { activationImportance, magnitudeImportance, randomImportance, type ImportanceMethod, type ImportanceScores } from './importance.js';
import { checkPrunable } from './names.js';
import { planCounts, prunesNothing, type PruneCounts, type PruneRequest } from './plan.js';
import { selectUnits, type Selection } from './select.js';
import { prunedTensors } from './surgery.js';
import { sha256File } from '../../io/hash.js';

export const REPORT_FILE = 'llmopt-report.json';
/** Tokenizer, generation and chat-template files copied beside the pruned weights when present. */
export const COPIED_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'generation_config.json',
  'chat_template.jinja',
  'chat_template.json',
];
export const DEFAULT_CALIB_SAMPLES = 128;
export const DEFAULT_CALIB_SEQ_LEN = 512;

export interface PruneOptions {
  model: string;
  /** Output folder; required unless dryRun. */
  output?: string;
  request: PruneRequest;
  importance: ImportanceMethod;
  /** Calibration for activation importance. seqLen defaults to min(512, max_position_embeddings). */
  calibration: { source?: string; samples?: number; seqLen?: number };
  /** Seeds the calibration windows and random importance. */
  seed: number;
  dryRun: boolean;
  /** Replace an existing output folder. */
  overwrite: boolean;
  /**
   * Runs the calibration forward passes (activation importance only). A function is called only
   * then, after every input check, so e.g. a GPU is not opened for a request that fails.
   */
  device: Device | (() => { device: Device; name: string });
  /** How the report names a device given directly (default: its kind). */
  deviceName?: string;
  toolVersion: string;
  /** Calibration progress in tokens. */
  onCalibrationStart?: (totalTokens: number) => void;
  onCalibrationProgress?: (doneTokens: number) => void;
}

export interface PruneReport {
  tool: { name: 'llmopt'; version: string };
  command: 'prune';
  mode: 'structured';
  created: string;
  dry_run: boolean;
  input: { path: string; config_sha256: string; weights: { file: string; bytes: number; sha256: string }[] };
  output: { path: string; files: string[] } | null;
  architecture: string;
  settings: {
    heads: number;
    kv_heads: number;
    mlp: number;
    layers: number;
    hidden: number;
    multiple_of: number;
    allow_indivisible_heads: boolean;
    importance: ImportanceMethod;
    seed: number;
    /** The device the calibration ran on; null when the importance needed none. */
    device: string | null;
  };
  calibration: { source: string; samples: number; seq_len: number; tokens: number; seed: number } | null;
  plan: {
    query_heads: { from: number; to: number };
    kv_groups: { from: number; to: number };
    heads_per_group: { from: number; to: number };
    mlp_channels: { from: number; to: number };
    hidden_channels: { from: number; to: number };
    layers: { from: number; to: number };
    rounding: string[];
  };
  kept_layers: number[];
  removed_layers: number[];
  /** One entry per kept layer: original index, new index, kept/removed units. */
  layers: {
    index: number;
    new_index: number;
    kept_kv_groups: number[];
    removed_kv_groups: number[];
    kept_heads: number[];
    removed_heads: number[];
    kept_channels: number[];
    removed_channels: number[];
  }[];
  hidden: { kept: number[]; removed: number[] } | null;
  /** Scores of the axes this run pruned (null for the others), indexed by original layer and unit. */
  importance: {
    method: ImportanceMethod;
    layers: number[] | null;
    heads: number[][] | null;
    kv_groups: number[][] | null;
    channels: number[][] | null;
    hidden: number[] | null;
  };
  parameters: { before: number; after: number; removed_fraction: number };
  bytes: { before: number; after: number; dtypes: string[] };
  config: { before: Record<string, unknown>; after: Record<string, unknown> };
  timings_s: { importance: number; write: number; total: number };
}


/** Elements per tensor, without stored buffers (rotary inv_freq) and without lm_head when tied. */
function countParams(tensors: Iterable<{ name: string; shape: readonly number[] }>, tied: boolean): number {
  let n = 0;
  for (const t of tensors) {
    if (t.name.endsWith('inv_freq') || (tied && t.name === 'lm_head.weight')) continue;
    n += t.shape.reduce((a, b) => a * b, 1);
  }
  return n;
}

const changed = (x: { from: number; to: number }): boolean => x.from !== x.to;
const round6 = (a: ArrayLike<number>): number[] => Array.from(a, (x) => Number(x.toPrecision(6)));

function checkOutputUpFront(output: string | undefined, opts: PruneOptions, inputDir: string): void {
  if (opts.dryRun) return;
  if (output === undefined) throw new LlmoptError('no output folder: give -o <dir> (or --dry-run to only print the plan)');
  const stat = fs.statSync(output, { throwIfNoEntry: false });
  if (stat && !opts.overwrite) throw new LlmoptError(`${output}: already exists; refusing to replace it (use --force to overwrite)`);
  if (path.resolve(output) === path.resolve(inputDir)) throw new LlmoptError(`${output}: the output folder is the input; inputs are never overwritten`);
}

interface ImportanceResult {
  scores: ImportanceScores;
  calibration: PruneReport['calibration'];
  deviceName: string | null;
}

function resolveDevice(opts: PruneOptions): { device: Device; name: string } {
  if (typeof opts.device === 'function') return opts.device();
  return { device: opts.device, name: opts.deviceName ?? opts.device.kind };
}

async function computeImportance(opts: PruneOptions, spec: ModelSpec, modelDir: string, checkpoint: CheckpointTensors, counts: PruneCounts): Promise<ImportanceResult> {
  if (opts.importance === 'random') return { scores: randomImportance(spec, opts.seed), calibration: null, deviceName: null };
  if (opts.importance === 'magnitude') {
    const needs = {
      attention: counts.heads.to !== counts.heads.from,
      mlp: counts.mlpChannels.to !== counts.mlpChannels.from,
      hidden: counts.hiddenChannels.to !== counts.hiddenChannels.from,
      layers: counts.layers.to !== counts.layers.from,
    };
    return { scores: magnitudeImportance(spec, checkpoint, needs), calibration: null, deviceName: null };
  }
  if (!fs.existsSync(path.join(modelDir, TOKENIZER_FILE))) {
    throw new LlmoptError(`${modelDir}: no ${TOKENIZER_FILE}; activation importance tokenizes calibration text (use --importance magnitude or random without one)`);
  }
  const seqLen = opts.calibration.seqLen ?? Math.min(DEFAULT_CALIB_SEQ_LEN, spec.maxPositionEmbeddings);
  if (seqLen > spec.maxPositionEmbeddings) {
    throw new LlmoptError(`--calib-seq-len ${seqLen} is longer than the model's context (max_position_embeddings ${spec.maxPositionEmbeddings})`);
  }
  const tokenizer = await TextTokenizer.load(modelDir);
  const source = opts.calibration.source ?? DEFAULT_CALIBRATION;
  const calib = loadCalibration({ source, samples: opts.calibration.samples ?? DEFAULT_CALIB_SAMPLES, seqLen, seed: opts.seed }, tokenizer);
  const { device, name: deviceName } = resolveDevice(opts);
  const loaded = await loadModel(modelDir, device);
  try {
    opts.onCalibrationStart?.(calib.tokens);
    let done = 0;
    const scores = await activationImportance({
      decoder: loaded.decoder,
      device,
      windows: calib.windows,
      onProgress: (i) => {
        done += calib.windows[i - 1]!.length;
        opts.onCalibrationProgress?.(done);
      },
    });
    return {
      scores,
      calibration: { source: calib.source, samples: calib.windows.length, seq_len: seqLen, tokens: calib.tokens, seed: calib.seed },
      deviceName,
    };
  } finally {
    loaded.decoder.dispose({ weights: true });
  }
}

function layerReport(sel: Selection): PruneReport['layers'] {
  return sel.layers.map((l, i) => ({
    index: l.layer,
    new_index: i,
    kept_kv_groups: l.keptKvGroups,
    removed_kv_groups: l.removedKvGroups,
    kept_heads: l.keptHeads,
    removed_heads: l.removedHeads,
    kept_channels: l.keptChannels,
    removed_channels: l.removedChannels,
  }));
}

export async function runPrune(opts: PruneOptions): Promise<PruneReport> {
  const started = performance.now();
  const paths = resolveModelPath(opts.model);
  const rawConfig = readJsonFile(paths.configFile);
  if (typeof rawConfig === 'object' && rawConfig !== null && (rawConfig as Record<string, unknown>).quantization_config != null) {
    throw new ConfigError(paths.configFile, 'the model is already quantized (config.json has quantization_config); prune the float checkpoint, then quantize');
  }
  const spec = parseModelConfig(rawConfig, paths.configFile);
  checkPrunable(spec, paths.configFile);
  const counts = planCounts(spec, opts.request);
  if (prunesNothing(counts)) throw new LlmoptError('nothing to prune: give --heads, --kv-heads, --mlp, --layers or --hidden with a non-zero amount');
  checkOutputUpFront(opts.output, opts, paths.dir);

  const checkpoint = CheckpointTensors.open(paths);
  try {
    const tImportance = performance.now();
    const { scores, calibration, deviceName } = await computeImportance(opts, spec, paths.dir, checkpoint, counts);
    const importanceSeconds = (performance.now() - tImportance) / 1000;

    const selection = selectUnits(counts, scores);
    const tensors: TensorToWrite[] = prunedTensors(spec, checkpoint, selection);
    const config = prunedConfig(spec, counts, selection, paths.configFile);
    const inputInfos = checkpoint.names().map((name) => checkpoint.info(name));
    const bytesOf = (t: TensorToWrite) => t.shape.reduce((a, b) => a * b, 1) * DTYPE_SIZE[t.dtype];
    const before = countParams(inputInfos, spec.tieWordEmbeddings);
    const after = countParams(tensors, spec.tieWordEmbeddings);

    const report: PruneReport = {
      tool: { name: 'llmopt', version: opts.toolVersion },
      command: 'prune',
      mode: 'structured',
      created: new Date().toISOString(),
      dry_run: opts.dryRun,
      input: {
        path: paths.dir,
        config_sha256: sha256File(paths.configFile),
        weights: paths.weightFiles.map((f) => ({ file: path.basename(f), bytes: fs.statSync(f).size, sha256: sha256File(f) })),
      },
      output: null,
      architecture: spec.architecture,
      settings: {
        heads: opts.request.heads ?? 0,
        kv_heads: opts.request.kvHeads ?? 0,
        mlp: opts.request.mlp ?? 0,
        layers: opts.request.layers ?? 0,
        hidden: opts.request.hidden ?? 0,
        multiple_of: counts.multipleOf,
        allow_indivisible_heads: opts.request.allowIndivisibleHeads ?? false,
        importance: opts.importance,
        seed: opts.seed,
        device: deviceName,
      },
      calibration,
      plan: {
        query_heads: counts.heads,
        kv_groups: counts.kvGroups,
        heads_per_group: counts.headsPerGroup,
        mlp_channels: counts.mlpChannels,
        hidden_channels: counts.hiddenChannels,
        layers: counts.layers,
        rounding: counts.rounding,
      },
      kept_layers: selection.keptLayers,
      removed_layers: selection.removedLayers,
      layers: layerReport(selection),
      hidden: counts.hiddenChannels.to !== counts.hiddenChannels.from ? { kept: selection.keptHidden, removed: selection.removedHidden } : null,
      importance: {
        method: scores.method,
        layers: changed(counts.layers) ? round6(scores.layers) : null,
        heads: changed(counts.heads) ? scores.heads.map(round6) : null,
        kv_groups: changed(counts.heads) ? scores.kvGroups.map(round6) : null,
        channels: changed(counts.mlpChannels) ? scores.channels.map(round6) : null,
        hidden: changed(counts.hiddenChannels) ? round6(scores.hidden) : null,
      },
      parameters: { before, after, removed_fraction: 1 - after / before },
      bytes: {
        before: inputInfos.reduce((a, t) => a + t.byteLength, 0),
        after: tensors.reduce((a, t) => a + bytesOf(t), 0),
        dtypes: [...new Set(inputInfos.map((t) => t.dtype))],
      },
      config: { before: spec.rawConfig, after: config },
      timings_s: { importance: importanceSeconds, write: 0, total: 0 },
    };
    if (opts.dryRun) {
      report.timings_s.total = (performance.now() - started) / 1000;
      return report;
    }

    const output = opts.output!;
    const tWrite = performance.now();
    const files = await writeOutputDir(
      output,
      async (tmp) => {
        const written = writeCheckpointTensors(tmp, tensors);
        fs.writeFileSync(path.join(tmp, CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
        const copied = copyFiles(paths.dir, tmp, COPIED_FILES, { missingOk: true });
        const names = [...written.files.map((f) => path.basename(f)), ...(written.indexFile ? [path.basename(written.indexFile)] : []), CONFIG_FILE, ...copied, REPORT_FILE];
        report.output = { path: path.resolve(output), files: names };
        report.timings_s.write = (performance.now() - tWrite) / 1000;
        report.timings_s.total = (performance.now() - started) / 1000;
        fs.writeFileSync(path.join(tmp, REPORT_FILE), `${JSON.stringify(report, null, 2)}\n`);
        return names;
      },
      { overwrite: opts.overwrite, inputs: [paths.dir, ...paths.weightFiles] },
    );
    report.output = { path: path.resolve(output), files };
    return report;
  } finally {
    checkpoint.close();
  }
}
