// `llmopt quantize` as a library call: checks everything that can be checked before any work, draws
// the calibration set, runs the sequential pipeline, and writes the compressed-tensors checkpoint
// and llmopt-report.json atomically (the output folder appears whole or not at all).

import fs from 'node:fs';
import path from 'node:path';
import { LlmoptError, UsageError } from '../../errors.js';
import { copyFiles, writeOutputDir } from '../../io/atomic.js';
import { CheckpointTensors, CONFIG_FILE, readJsonFile, resolveModelPath, writeCheckpointTensors } from '../../io/checkpoint.js';
import type { TensorToWrite } from '../../io/safetensors.js';
import { encodeFromFloat32, type DType } from '../../io/dtypes.js';
import { parseModelConfig } from '../../model/config.js';
import type { ModelSpec } from '../../model/spec.js';
import { TextTokenizer, TOKENIZER_FILE } from '../../model/tokenizer.js';
import { isQuantizedConfig } from '../../model/weights.js';
import type { Device } from '../../tensor/device.js';
import { describeCalibrationSource, loadCalibration, type CalibrationSet } from '../calibration.js';
import { kvScaleTensors, quantizationConfig } from './export.js';
import { planLayers } from './modules.js';
import { runQuantizationPipeline, type ActivationResidency, type DeviceMemoryProbe, type LayerReport, type PipelineMemory } from './pipeline.js';
import type { ScaleDType } from '../../tensor/quant-job.js';
import { quantizesActivations, resolveScheme, type Method, type ObserverName, type ResolvedScheme, type SchemeOptions } from './scheme.js';
import { sha256File } from '../../io/hash.js';

export const REPORT_FILE = 'llmopt-report.json';
/** Files copied beside the weights when present (tokenizer, generation and chat settings). */
export const COPIED_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
  'added_tokens.json',
  'generation_config.json',
  'chat_template.jinja',
  'chat_template.json',
];

/** What to quantize and how (everything but the device). */
export interface QuantizeSettings extends SchemeOptions {
  model: string;
  output: string;
  method?: Method;
  observer?: ObserverName;
  /** SmoothQuant strength α in [0, 1]; undefined = off. */
  smoothquant?: number;
  /** GPTQ damping as a fraction of the mean Hessian diagonal (default 0.01). */
  dampening?: number;
  /** GPTQ block size (default 128). */
  blockSize?: number;
  calibration?: { source?: string; samples?: number; seqLen?: number; seed?: number };
  /** Token windows to calibrate on instead of drawing them from `calibration` (library use; no tokenizer needed). */
  calibrationSet?: CalibrationSet;
  /** Modules left unquantized (names or "re:" patterns); default ["lm_head"]. */
  ignore?: string[];
  /** Replace an existing output folder. */
  force?: boolean;
  toolVersion?: string;
}

export interface QuantizeRun {
  device: Device;
  /** How the report names the device ("cpu", "cuda (NVIDIA H200)"). */
  deviceName?: string;
  /** The dtype the calibration forward computes in, as the user spells it (fp32, bf16). */
  deviceDtype?: string;
  /** Device memory accounting (cuda); the report's peak device memory per phase. */
  memory?: DeviceMemoryProbe;
  /** Where calibration activations live between layers; default: the device when they fit. */
  activations?: ActivationResidency;
  onStart?: (info: { layers: number; scheme: ResolvedScheme; calibration: CalibrationSet }) => void;
  onLayer?: (report: LayerReport, layers: number) => void;
}

export type QuantizeOptions = QuantizeSettings & QuantizeRun;

export const DEFAULTS = {
  method: 'rtn' as Method,
  observer: 'minmax' as ObserverName,
  smoothquantAlpha: 0.5,
  dampening: 0.01,
  blockSize: 128,
  calibSource: 'moby-dick',
  calibSamples: 512,
  calibSeqLen: 2048,
  seed: 0,
  ignore: ['lm_head'],
};

export interface QuantizeReport {
  tool: 'llmopt';
  version: string;
  command: 'quantize';
  model: string;
  output: string;
  inputs: { file: string; bytes: number; sha256: string }[];
  scheme: string;
  format: string;
  method: Method;
  observer: ObserverName;
  settings: {
    weights: ResolvedScheme['weights'];
    input_activations: ResolvedScheme['inputActivations'] | null;
    kv_cache_scheme: ResolvedScheme['kvCacheScheme'] | null;
    smoothquant_alpha: number | null;
    gptq: { dampening: number; block_size: number; actorder: boolean } | null;
    ignore: string[];
    scale_dtype: ScaleDType;
  };
  calibration: { source: string; description: string; samples: number; tokens: number; seq_len: number; seed: number };
  device: string;
  /** The dtype the calibration forward passes computed in (fp32 on the cpu). */
  device_dtype: string;
  layers: LayerReport[];
  timings_s: { load: number; calibration_data: number; layers: number; write: number; total: number };
  /** Host peak RSS; device tensor peaks per phase (largest over layers; null on the cpu) and where the activations lived. */
  memory: { peak_rss_bytes: number } & PipelineMemory;
  size: { input_weight_bytes: number; output_weight_bytes: number };
}


function checkOptions(o: QuantizeSettings, scheme: ResolvedScheme): void {
  const method = o.method ?? DEFAULTS.method;
  if (method !== 'rtn' && method !== 'gptq') throw new UsageError(`--method ${JSON.stringify(method)}: use rtn or gptq`);
  const observer = o.observer ?? DEFAULTS.observer;
  if (observer !== 'minmax' && observer !== 'mse') throw new UsageError(`--observer ${JSON.stringify(observer)}: use minmax or mse`);
  if (o.actorder && method !== 'gptq') throw new UsageError('--actorder is a GPTQ option; add --method gptq');
  if (o.dampening !== undefined && method !== 'gptq') throw new UsageError('--dampening is a GPTQ option; add --method gptq');
  if (o.dampening !== undefined && !(o.dampening >= 0 && o.dampening < 1)) throw new UsageError(`--dampening must be in [0, 1), got ${o.dampening}`);
  if (o.smoothquant !== undefined) {
    if (!(o.smoothquant >= 0 && o.smoothquant <= 1)) throw new UsageError(`--smoothquant strength must be in [0, 1], got ${o.smoothquant}`);
    if (!quantizesActivations(scheme.name)) throw new UsageError(`--smoothquant applies to schemes that quantize activations (W8A8, FP8, FP8_DYNAMIC), not ${scheme.name}`);
  }
}

function refuseModel(spec: ModelSpec, configFile: string): void {
  if (isQuantizedConfig(spec)) {
    const method = (spec.rawConfig.quantization_config as { quant_method?: unknown } | null)?.quant_method;
    throw new LlmoptError(`${configFile}: the model is already quantized (quantization_config, quant_method ${JSON.stringify(method)}); quantize the original checkpoint`);
  }
  if (spec.architecture === 'gpt2') {
    throw new LlmoptError(
      `${configFile}: GPT-2 quantization is not supported: its c_attn/c_proj/c_fc are Conv1D ([in, out]) layers that vLLM transposes on load, so compressed-tensors weights for them would not load there; quantize a Llama-family model`,
    );
  }
}

/** The float dtype the source's Linear weights are stored in: scales are written in it (as llm-compressor does). */
function scaleDtypeOf(dtype: DType): ScaleDType {
  return dtype === 'BF16' || dtype === 'F16' ? dtype : 'F32';
}

/** Everything about the inputs, checked and loaded: what remains is the work. */
export interface PreparedQuantize {
  settings: QuantizeSettings;
  scheme: ResolvedScheme;
  method: Method;
  observer: ObserverName;
  ignore: string[];
  paths: ReturnType<typeof resolveModelPath>;
  rawConfig: Record<string, unknown>;
  spec: ModelSpec;
  checkpoint: CheckpointTensors;
  modelPrefix: string;
  plans: ReturnType<typeof planLayers>;
  scaleDtype: ScaleDType;
  seqLen: number;
  calibration: CalibrationSet;
  inputs: QuantizeReport['inputs'];
  started: number;
  timings: { load: number; calibrationData: number };
  /** Closes the source checkpoint (runQuantize does it; call it when not running). */
  close(): void;
}

/**
 * Checks every input (scheme and flags, output path, model, group sizes, calibration source) and
 * draws the calibration set, before any device is opened or any work starts. LlmoptError on bad input.
 */
export async function prepareQuantize(o: QuantizeSettings): Promise<PreparedQuantize> {
  const started = performance.now();
  const scheme = resolveScheme(o);
  checkOptions(o, scheme);
  const method = o.method ?? DEFAULTS.method;
  const observer = o.observer ?? DEFAULTS.observer;
  const ignore = o.ignore ?? DEFAULTS.ignore;

  const outAbs = path.resolve(o.output);
  if (fs.existsSync(outAbs) && !o.force) throw new LlmoptError(`${o.output}: already exists; refusing to replace it (use --force)`);

  const paths = resolveModelPath(o.model);
  const rawConfig = readJsonFile(paths.configFile) as Record<string, unknown>;
  const spec = parseModelConfig(rawConfig, paths.configFile);
  refuseModel(spec, paths.configFile);
  if (o.calibrationSet === undefined && !fs.existsSync(path.join(paths.dir, TOKENIZER_FILE))) {
    throw new LlmoptError(`${paths.dir}: no ${TOKENIZER_FILE}; quantize needs the tokenizer to tokenize the calibration set`);
  }

  const checkpoint = CheckpointTensors.open(paths);
  try {
    const modelPrefix = !checkpoint.has('model.embed_tokens.weight') && checkpoint.has('embed_tokens.weight') ? '' : 'model.';
    const plans = planLayers(spec, modelPrefix, scheme, ignore);
    const scaleDtype = scaleDtypeOf(checkpoint.info(`${modelPrefix}layers.0.self_attn.q_proj.weight`).dtype);
    const given = o.calibrationSet;
    const seqLen = given !== undefined ? Math.max(...given.windows.map((w) => w.length)) : (o.calibration?.seqLen ?? Math.min(DEFAULTS.calibSeqLen, spec.maxPositionEmbeddings));
    if (seqLen > spec.maxPositionEmbeddings) {
      throw new LlmoptError(`--calib-seq-len ${seqLen} is longer than the model's context (max_position_embeddings ${spec.maxPositionEmbeddings})`);
    }
    const load = (performance.now() - started) / 1000;
    const tCalib0 = performance.now();
    const calibration =
      given ??
      loadCalibration(
        {
          source: o.calibration?.source ?? DEFAULTS.calibSource,
          samples: o.calibration?.samples ?? DEFAULTS.calibSamples,
          seqLen,
          seed: o.calibration?.seed ?? DEFAULTS.seed,
        },
        await TextTokenizer.load(paths.dir),
      );
    const calibrationData = (performance.now() - tCalib0) / 1000;
    const inputs = [paths.configFile, ...paths.weightFiles, ...(paths.indexFile ? [paths.indexFile] : [])].map((file) => ({
      file: path.relative(paths.dir, file) || path.basename(file),
      bytes: fs.statSync(file).size,
      sha256: sha256File(file),
    }));
    return {
      settings: o,
      scheme,
      method,
      observer,
      ignore,
      paths,
      rawConfig,
      spec,
      checkpoint,
      modelPrefix,
      plans,
      scaleDtype,
      seqLen,
      calibration,
      inputs,
      started,
      timings: { load, calibrationData },
      close: () => checkpoint.close(),
    };
  } catch (e) {
    checkpoint.close();
    throw e;
  }
}

/** Quantizes a prepared model on `run.device` and writes the output folder atomically. */
export async function runQuantize(p: PreparedQuantize, run: QuantizeRun): Promise<QuantizeReport> {
  const o = p.settings;
  const { scheme, method, observer, ignore, paths, checkpoint, calibration, scaleDtype } = p;
  try {
    run.onStart?.({ layers: p.spec.numLayers, scheme, calibration });
    const tLayers0 = performance.now();
    const pipeline = await runQuantizationPipeline({
      spec: p.spec,
      modelPrefix: p.modelPrefix,
      source: checkpoint,
      device: run.device,
      scheme,
      plans: p.plans,
      method,
      observer,
      smoothquant: o.smoothquant,
      dampening: o.dampening ?? DEFAULTS.dampening,
      blockSize: o.blockSize ?? DEFAULTS.blockSize,
      actorder: o.actorder ?? false,
      calibration,
      scaleDtype,
      memory: run.memory,
      activations: run.activations,
      onLayer: run.onLayer,
    });
    const tLayers = (performance.now() - tLayers0) / 1000;

    // --- output -------------------------------------------------------------------------------
    const tWrite0 = performance.now();
    const tensors: TensorToWrite[] = [];
    for (const name of checkpoint.names()) {
      const linear = name.endsWith('.weight') ? pipeline.linears.get(name.slice(0, -'.weight'.length)) : undefined;
      if (linear !== undefined) {
        tensors.push(...linear);
        continue;
      }
      const info = checkpoint.info(name);
      const replaced = pipeline.replacedTensors.get(name);
      tensors.push({
        name,
        dtype: info.dtype,
        shape: [...info.shape],
        data: replaced !== undefined ? encodeFromFloat32(info.dtype, replaced) : () => checkpoint.readBytes(name),
      });
    }
    for (const kv of pipeline.kvScales) tensors.push(...kvScaleTensors(kv.layerPrefix, kv.k, kv.v, scaleDtype));

    const version = o.toolVersion ?? '0.0.0';
    const outConfig = {
      ...p.rawConfig,
      quantization_config: quantizationConfig(scheme, ignore, { version, scheme: scheme.name, method, observer, report: REPORT_FILE }),
    };
    const report: QuantizeReport = {
      tool: 'llmopt',
      version,
      command: 'quantize',
      model: o.model,
      output: o.output,
      inputs: p.inputs,
      scheme: scheme.name,
      format: scheme.format,
      method,
      observer,
      settings: {
        weights: scheme.weights,
        input_activations: scheme.inputActivations ?? null,
        kv_cache_scheme: scheme.kvCacheScheme ?? null,
        smoothquant_alpha: o.smoothquant ?? null,
        gptq: method === 'gptq' ? { dampening: o.dampening ?? DEFAULTS.dampening, block_size: o.blockSize ?? DEFAULTS.blockSize, actorder: o.actorder ?? false } : null,
        ignore,
        scale_dtype: scaleDtype,
      },
      calibration: {
        source: calibration.source,
        description: describeCalibrationSource(calibration.source),
        samples: calibration.windows.length,
        tokens: calibration.tokens,
        seq_len: p.seqLen,
        seed: calibration.seed,
      },
      device: run.deviceName ?? run.device.kind,
      device_dtype: run.deviceDtype ?? (run.device.dtype === 'f32' ? 'fp32' : run.device.dtype === 'f16' ? 'fp16' : 'bf16'),
      layers: pipeline.layers,
      timings_s: { load: p.timings.load, calibration_data: p.timings.calibrationData, layers: tLayers, write: 0, total: 0 },
      memory: { peak_rss_bytes: 0, ...pipeline.memory },
      size: { input_weight_bytes: paths.weightFiles.reduce((n, f) => n + fs.statSync(f).size, 0), output_weight_bytes: 0 },
    };

    await writeOutputDir(
      o.output,
      async (tmp) => {
        const written = writeCheckpointTensors(tmp, tensors);
        fs.writeFileSync(path.join(tmp, CONFIG_FILE), `${JSON.stringify(outConfig, null, 2)}\n`);
        copyFiles(paths.dir, tmp, COPIED_FILES, { missingOk: true });
        report.size.output_weight_bytes = [...written.files, ...(written.indexFile ? [written.indexFile] : [])].reduce((n, f) => n + fs.statSync(f).size, 0);
        report.timings_s.write = (performance.now() - tWrite0) / 1000;
        report.timings_s.total = (performance.now() - p.started) / 1000;
        report.memory.peak_rss_bytes = process.resourceUsage().maxRSS * 1024;
        fs.writeFileSync(path.join(tmp, REPORT_FILE), `${JSON.stringify(report, null, 2)}\n`);
      },
      { overwrite: o.force ?? false, inputs: [paths.dir] },
    );
    return report;
  } finally {
    checkpoint.close();
  }
}

/** prepareQuantize + runQuantize. */
export async function quantizeModel(o: QuantizeOptions): Promise<QuantizeReport> {
  return runQuantize(await prepareQuantize(o), o);
}
