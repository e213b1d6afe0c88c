// The sequential quantization pipeline (GPTQ's and llm-compressor's "sequential" pipeline): decoder
// layers one at a time, each calibrated on the inputs the already-quantized layers before it produce.
//
// Per layer, on the calibration activations X (one tensor per batch of equal-length windows):
//   A  calibrate: the float layer on X; hooks accumulate GPTQ Hessians and SmoothQuant channel
//      ranges on the device (device.quantJob)
//   -  smooth (SmoothQuant, on the host: O(weights)) and quantize the layer's Linears on the device
//      (observer-chosen scales, then RTN or GPTQ; one GPTQ factor per input shared by q/k/v, gate/up)
//   B  (static activations / FP8 KV cache) the quantized layer on X: input and K/V absmax → scales
//   C  propagate: float and quantized layer on X; their outputs give the layer's error, and the
//      quantized outputs become the next layer's X
// Device memory is bounded by one layer, whatever the model size: the float and the quantized
// layer's weights (device dtype), an f32 working copy of one Linear, that layer's Hessians
// (f32 K² per input; GPTQ's factor adds 2·K² for one input at a time), per-batch scratch, and the
// calibration activations X (rows × hidden × dtype bytes) — kept on the device when they fit in
// ACTIVATIONS_DEVICE_SHARE of its free memory, on the host otherwise (then every pass uploads them).

import { LlmoptError } from '../../errors.js';
import type { DType } from '../../io/dtypes.js';
import type { TensorToWrite } from '../../io/safetensors.js';
import { Decoder, hookNames, type ActivationHooks } from '../../model/decoder.js';
import type { ModelSpec } from '../../model/spec.js';
import type { DecoderWeights, LayerQuantSim, LayerWeights } from '../../model/weights.js';
import type { Device, FakeQuantSpec, QuantJobOps, Tensor } from '../../tensor/device.js';
import { weightGrid, type ErrorSums, type GptqFactor, type ScaleDType, type WeightQParams } from '../../tensor/quant-job.js';
import { calculateQParam, roundToDtype } from '../../tensor/quant-math.js';
import type { CalibrationSet } from '../calibration.js';
import { linearTensors } from './export.js';
import { INPUT_POINTS, LINEARS, inputHook, linearShape, type InputPoint, type LayerPlan, type LinearKey } from './modules.js';
import type { Method, ObserverName, ResolvedScheme } from './scheme.js';
import { applySmoothing, smoothingScales, type BalanceWeight } from './smoothquant.js';

/** Tensor reads the pipeline needs from the source checkpoint. */
export interface PipelineSource {
  has(name: string): boolean;
  info(name: string): { shape: readonly number[]; dtype: DType };
  readFloat32(name: string): Float32Array;
}

/** Device memory accounting: what CudaDevice provides (memoryStats, resetPeakMemory); absent on the cpu. */
export interface DeviceMemoryProbe {
  /** The high-water mark of live tensors' bytes since the last resetPeakMemory, and the device's free bytes. */
  memoryStats(): { peakTensorBytes: number; deviceFreeBytes: number };
  resetPeakMemory(): void;
}

/** Where the calibration activations live between layers. */
export type ActivationResidency = 'device' | 'host';

export interface PipelineOptions {
  spec: ModelSpec;
  /** "model." or "" (base-model checkpoints). */
  modelPrefix: string;
  source: PipelineSource;
  device: Device;
  scheme: ResolvedScheme;
  plans: LayerPlan[];
  method: Method;
  observer: ObserverName;
  /** SmoothQuant strength α; undefined = no smoothing. */
  smoothquant?: number;
  dampening: number;
  blockSize: number;
  actorder: boolean;
  calibration: CalibrationSet;
  scaleDtype: ScaleDType;
  /** Most token rows per forward pass (windows of equal length are batched up to this). */
  maxBatchRows?: number;
  /** Default: the device when the activations fit (see ACTIVATIONS_DEVICE_SHARE), else the host. */
  activations?: ActivationResidency;
  memory?: DeviceMemoryProbe;
  onLayer?: (report: LayerReport, layers: number) => void;
}

export interface ModuleReport {
  name: string;
  /** GPTQ only. */
  gptq_loss?: number;
  fell_back_to_rtn?: boolean;
}

export interface LayerReport {
  index: number;
  /** ‖y_q − y‖ / ‖y‖ of the residual stream leaving the layer (y: the float layer on the same inputs). */
  output_rel_error: number;
  /** ‖y_q − y‖ / ‖y − x‖: the same difference relative to what the layer adds to its input. */
  update_rel_error: number;
  seconds: { calibrate: number; quantize: number; propagate: number };
  modules: ModuleReport[];
  /** SmoothQuant: range of the smoothing scales per mapping. */
  smoothing?: Record<string, [number, number]>;
  kv_scales?: { k: number; v: number };
}

/** Peak device tensor bytes per phase (the largest over layers); null where nothing was measured. */
export interface PipelineMemory {
  activations: { where: ActivationResidency; bytes: number };
  peak_device_bytes: { embed: number; calibrate: number; quantize: number; propagate: number; overall: number } | null;
}

export interface PipelineResult {
  /** The tensors of each quantized Linear, encoded for writing (prefix → tensors). */
  linears: Map<string, TensorToWrite[]>;
  /** Tensors changed by SmoothQuant (tensor name → values): norms, and smoothed Linears left unquantized. */
  replacedTensors: Map<string, Float32Array>;
  kvScales: { layerPrefix: string; k: number; v: number }[];
  layers: LayerReport[];
  memory: PipelineMemory;
}

/** Largest share of the device's free memory (at the start) the calibration activations may take there. */
export const ACTIVATIONS_DEVICE_SHARE = 0.4;
const DEFAULT_MAX_BATCH_ROWS = 4096;

interface Batch {
  ids: Int32Array;
  batch: number;
  seq: number;
  /** The residual stream entering the current layer, [batch·seq, hidden]: a device tensor or host values. */
  x: Tensor | Float32Array;
}

function makeBatches(windows: readonly Int32Array[], maxRows: number): Omit<Batch, 'x'>[] {
  const byLength = new Map<number, Int32Array[]>();
  for (const w of windows) {
    const same = byLength.get(w.length);
    if (same) same.push(w);
    else byLength.set(w.length, [w]);
  }
  const batches: Omit<Batch, 'x'>[] = [];
  for (const [seq, ws] of byLength) {
    const per = Math.max(1, Math.floor(maxRows / seq));
    for (let i = 0; i < ws.length; i += per) {
      const group = ws.slice(i, i + per);
      const ids = new Int32Array(group.length * seq);
      group.forEach((w, b) => ids.set(w, b * seq));
      batches.push({ ids, batch: group.length, seq });
    }
  }
  return batches;
}

/** The calibration activations between layers, on the device or on the host. */
class Activations {
  constructor(
    private readonly device: Device,
    private readonly qj: QuantJobOps,
    private readonly hidden: number,
    readonly where: ActivationResidency,
  ) {}

  /** A new device tensor holding b's residual stream (the caller frees it). */
  load(b: Batch): Tensor {
    const shape = [b.batch * b.seq, this.hidden];
    if (b.x instanceof Float32Array) return this.device.upload(b.x, shape);
    const t = this.device.empty(shape);
    this.qj.copy(t, b.x);
    return t;
  }

  /** b's residual stream as a device tensor to read (release it with done()). */
  peek(b: Batch): Tensor {
    return b.x instanceof Float32Array ? this.device.upload(b.x, [b.batch * b.seq, this.hidden]) : b.x;
  }

  done(b: Batch, t: Tensor): void {
    if (t !== b.x) this.device.free(t);
  }

  /** b's residual stream becomes t (which the store now owns). */
  store(b: Batch, t: Tensor): void {
    if (this.where === 'host') {
      b.x = this.device.download(t);
      this.device.free(t);
    } else {
      if (!(b.x instanceof Float32Array)) this.device.free(b.x);
      b.x = t;
    }
  }

  free(batches: Batch[]): void {
    for (const b of batches) if (!(b.x instanceof Float32Array)) this.device.free(b.x);
  }
}

/** Peak device memory per phase, the largest over layers. */
class PhaseMemory {
  readonly peaks = { embed: 0, calibrate: 0, quantize: 0, propagate: 0, overall: 0 };
  constructor(private readonly probe: DeviceMemoryProbe | undefined) {}

  start(): void {
    this.probe?.resetPeakMemory();
  }

  end(phase: 'embed' | 'calibrate' | 'quantize' | 'propagate'): void {
    if (this.probe === undefined) return;
    const peak = this.probe.memoryStats().peakTensorBytes;
    this.peaks[phase] = Math.max(this.peaks[phase], peak);
    this.peaks.overall = Math.max(this.peaks.overall, peak);
  }
}

interface Context {
  opts: PipelineOptions;
  qj: QuantJobOps;
  batches: Batch[];
  acts: Activations;
  fpDecoder: Decoder;
  qDecoder: Decoder;
  fpWeights: DecoderWeights;
  qWeights: DecoderWeights;
  result: PipelineResult;
  memory: PhaseMemory;
  read: (name: string) => Float32Array;
}

const now = (): number => performance.now() / 1000;

function activationSpec(args: ResolvedScheme['inputActivations']): FakeQuantSpec['format'] | undefined {
  if (args === undefined) return undefined;
  return args.type === 'float' ? 'fp8_e4m3' : 'int8';
}

function elementBytes(device: Device): number {
  return device.dtype === 'f32' ? 4 : 2;
}

export async function runQuantizationPipeline(opts: PipelineOptions): Promise<PipelineResult> {
  const { spec, source, device } = opts;
  const qj = device.quantJob;
  if (qj === undefined) throw new Error(`the ${device.kind} device has no quantization-job ops`);
  const p = opts.modelPrefix;
  const H = spec.hiddenSize;
  const read = (name: string): Float32Array => source.readFloat32(name);
  const memory = new PhaseMemory(opts.memory);
  memory.start();

  // Only embed() and layer() run, so lm_head is never needed: the embedding stands in for it (the
  // decoder's contract), and both are freed once every batch is embedded.
  const embed = device.upload(read(`${p}embed_tokens.weight`), [spec.vocabSize, H]);
  const finalNorm = device.upload(read(`${p}norm.weight`), [H]);
  const fpWeights: DecoderWeights = { embed, finalNorm, lmHead: embed, layers: new Array<LayerWeights>(spec.numLayers) };
  const qWeights: DecoderWeights = { embed, finalNorm, lmHead: embed, layers: new Array<LayerWeights>(spec.numLayers), quant: new Array<LayerQuantSim | undefined>(spec.numLayers) };
  const fpDecoder = new Decoder(spec, fpWeights, device);
  const qDecoder = new Decoder(spec, qWeights, device);

  const shapes = makeBatches(opts.calibration.windows, opts.maxBatchRows ?? DEFAULT_MAX_BATCH_ROWS);
  const rows = shapes.reduce((n, b) => n + b.batch * b.seq, 0);
  const activationBytes = rows * H * elementBytes(device);
  const where: ActivationResidency =
    opts.activations ?? (opts.memory === undefined || activationBytes <= ACTIVATIONS_DEVICE_SHARE * opts.memory.memoryStats().deviceFreeBytes ? 'device' : 'host');
  const acts = new Activations(device, qj, H, where);
  const batches: Batch[] = [];
  const result: PipelineResult = {
    linears: new Map(),
    replacedTensors: new Map(),
    kvScales: [],
    layers: [],
    memory: { activations: { where, bytes: activationBytes }, peak_device_bytes: opts.memory ? memory.peaks : null },
  };
  let embedFreed = false;
  const freeEmbedding = () => {
    if (embedFreed) return;
    embedFreed = true;
    device.free(embed);
  };
  try {
    for (const b of shapes) {
      const x = fpDecoder.embed(b.ids, b.batch, b.seq);
      const batch: Batch = { ...b, x: new Float32Array(0) };
      if (where === 'host') batch.x = device.download(x);
      else {
        const t = device.empty([b.batch * b.seq, H]);
        qj.copy(t, x);
        batch.x = t;
      }
      batches.push(batch);
    }
    fpDecoder.dispose(); // the embedding's workspace
    freeEmbedding();
    device.synchronize();
    memory.end('embed');

    const ctx: Context = { opts, qj, batches, acts, fpDecoder, qDecoder, fpWeights, qWeights, result, memory, read };
    for (let i = 0; i < spec.numLayers; i++) {
      const report = quantizeLayer(i, ctx);
      result.layers.push(report);
      opts.onLayer?.(report, spec.numLayers);
      // Let progress output and signals through between layers.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return result;
  } finally {
    acts.free(batches);
    fpDecoder.dispose();
    qDecoder.dispose();
    freeEmbedding();
    device.free(finalNorm);
  }
}

/** Runs `decoder.layer(i)` on a copy of every batch's activations. */
function runLayer(ctx: Context, decoder: Decoder, i: number, hooks: ActivationHooks): void {
  for (const b of ctx.batches) {
    const t = ctx.acts.load(b);
    try {
      decoder.layer(i, t, b.batch, b.seq, { hooks, startPos: 0 });
    } finally {
      decoder.device.free(t);
    }
  }
}

function quantizeLayer(i: number, ctx: Context): LayerReport {
  const { opts, qj, fpWeights, qWeights, result, memory, read } = ctx;
  const { spec, device, scheme } = opts;
  const plan = opts.plans[i]!;
  const l = plan.prefix;
  const seconds = { calibrate: 0, quantize: 0, propagate: 0 };
  const owned: Tensor[] = [];
  const keep = (t: Tensor): Tensor => {
    owned.push(t);
    return t;
  };
  const up = (data: Float32Array, shape: number[]): Tensor => keep(device.upload(data, shape));
  const optional = (name: string, shape: number[]): Tensor | undefined => (opts.source.has(name) ? up(read(name), shape) : undefined);
  const hessians = new Map<InputPoint, Tensor>();
  const freeHessian = (point: InputPoint) => {
    const h = hessians.get(point);
    if (h !== undefined) device.free(h);
    hessians.delete(point);
  };

  // --- the float layer ------------------------------------------------------------------------
  memory.start();
  let t0 = now();
  const attnNorm = read(`${l}input_layernorm.weight`);
  const mlpNorm = read(`${l}post_attention_layernorm.weight`);
  const w: Record<LinearKey, Float32Array> = Object.fromEntries(LINEARS.map((d) => [d.key, read(`${l}${d.name}.weight`)])) as Record<LinearKey, Float32Array>;
  const shapes = Object.fromEntries(LINEARS.map((d) => [d.key, linearShape(spec, d.key)])) as Record<LinearKey, [number, number]>;
  const qDim = spec.numHeads * spec.headDim;
  const kvDim = spec.numKvHeads * spec.headDim;
  const shared = {
    qBias: optional(`${l}self_attn.q_proj.bias`, [qDim]),
    kBias: optional(`${l}self_attn.k_proj.bias`, [kvDim]),
    vBias: optional(`${l}self_attn.v_proj.bias`, [kvDim]),
    oBias: optional(`${l}self_attn.o_proj.bias`, [spec.hiddenSize]),
    qNorm: spec.qkNorm ? up(read(`${l}self_attn.q_norm.weight`), [spec.headDim]) : undefined,
    kNorm: spec.qkNorm ? up(read(`${l}self_attn.k_norm.weight`), [spec.headDim]) : undefined,
    gateBias: optional(`${l}mlp.gate_proj.bias`, [spec.intermediateSize]),
    upBias: optional(`${l}mlp.up_proj.bias`, [spec.intermediateSize]),
    downBias: optional(`${l}mlp.down_proj.bias`, [spec.hiddenSize]),
  };
  const layerWeights = (norms: { attn: Float32Array; mlp: Float32Array }, lin: Record<LinearKey, Tensor>): LayerWeights => ({
    ...shared,
    attnNorm: up(norms.attn, [spec.hiddenSize]),
    mlpNorm: up(norms.mlp, [spec.hiddenSize]),
    ...lin,
  });
  const uploadAll = (lin: Record<LinearKey, Float32Array>): Record<LinearKey, Tensor> =>
    Object.fromEntries(LINEARS.map((d) => [d.key, up(lin[d.key], shapes[d.key])])) as Record<LinearKey, Tensor>;
  fpWeights.layers[i] = layerWeights({ attn: attnNorm, mlp: mlpNorm }, uploadAll(w));

  try {
    // --- A: calibrate -------------------------------------------------------------------------
    const gptq = opts.method === 'gptq';
    const sq = opts.smoothquant;
    const ranges = new Map<InputPoint, { min: Tensor; max: Tensor }>();
    const inDim = (point: InputPoint): number => shapes[LINEARS.find((d) => d.input === point)!.key][1];
    const quantizedPoint = (point: InputPoint): boolean => LINEARS.some((d) => d.input === point && plan.quantized.has(d.key));
    // GPTQ's H = 2/N Σ x xᵀ over N calibration samples (its running mean, with N known up front).
    const hessianScale = 2 / opts.calibration.windows.length;
    const hooksA: ActivationHooks = {};
    for (const point of INPUT_POINTS) {
      const wantH = gptq && quantizedPoint(point);
      const wantRange = sq !== undefined && (point === 'qkv' || point === 'gateUp');
      if (!wantH && !wantRange) continue;
      const n = inDim(point);
      if (wantH) hessians.set(point, qj.zerosF32([n, n]));
      if (wantRange) {
        ranges.set(point, {
          min: keep(qj.uploadF32(new Float32Array(n).fill(Infinity), [n])),
          max: keep(qj.uploadF32(new Float32Array(n).fill(-Infinity), [n])),
        });
      }
      hooksA[inputHook(point, i)] = (t) => {
        const h = hessians.get(point);
        if (h !== undefined) qj.hessianAccumulate(h, t, hessianScale);
        const r = ranges.get(point);
        if (r !== undefined) qj.channelRange(r.min, r.max, t);
      };
    }
    if (Object.keys(hooksA).length > 0) runLayer(ctx, ctx.fpDecoder, i, hooksA);
    device.synchronize();
    seconds.calibrate += now() - t0;
    memory.end('calibrate');

    // --- smooth and quantize ------------------------------------------------------------------
    memory.start();
    t0 = now();
    const norms = { attn: attnNorm.slice(), mlp: mlpNorm.slice() };
    const lin = Object.fromEntries(LINEARS.map((d) => [d.key, w[d.key].slice()])) as Record<LinearKey, Float32Array>;
    const smoothed = new Set<LinearKey>();
    let smoothing: Record<string, [number, number]> | undefined;
    if (sq !== undefined) {
      smoothing = {};
      const mappings: [InputPoint, 'attn' | 'mlp', string, LinearKey[]][] = [
        ['qkv', 'attn', 'input_layernorm', ['q', 'k', 'v']],
        ['gateUp', 'mlp', 'post_attention_layernorm', ['gate', 'up']],
      ];
      for (const [point, norm, normName, keys] of mappings) {
        const range = ranges.get(point)!;
        const balance: BalanceWeight[] = keys.map((k) => ({ data: lin[k], rows: shapes[k][0], cols: shapes[k][1] }));
        const s = smoothingScales({ min: device.download(range.min), max: device.download(range.max) }, balance, sq);
        applySmoothing(norms[norm], balance, s);
        for (const k of keys) smoothed.add(k);
        const normDtype = opts.source.info(`${l}${normName}.weight`).dtype;
        roundInPlace(norms[norm], normDtype);
        result.replacedTensors.set(`${l}${normName}.weight`, norms[norm]);
        const h = hessians.get(point);
        if (h !== undefined) qj.scaleHessian(h, s);
        smoothing[normName] = [Math.min(...s), Math.max(...s)];
      }
    }

    const modules: ModuleReport[] = [];
    const codes = new Map<LinearKey, { codes: Int32Array; qparams: WeightQParams }>();
    const deq = {} as Record<LinearKey, Tensor>;
    for (const point of INPUT_POINTS) {
      const defs = LINEARS.filter((d) => d.input === point && plan.quantized.has(d.key));
      if (defs.length === 0) continue;
      let factor: GptqFactor | undefined;
      const h = hessians.get(point);
      if (gptq && h !== undefined) {
        factor = qj.gptqPrepare(h, { dampening: opts.dampening, actorder: opts.actorder });
        freeHessian(point);
      }
      try {
        for (const d of defs) {
          const [outF, inF] = shapes[d.key];
          const name = `${l}${d.name}`;
          const wt = qj.uploadF32(lin[d.key], [outF, inF]);
          try {
            const grid = weightGrid(outF, inF, scheme.weights);
            const qparams = qj.observeWeight(wt, grid, scheme.weights, opts.observer, opts.scaleDtype);
            deq[d.key] = keep(device.empty([outF, inF]));
            if (factor?.ok) {
              const r = qj.gptqQuantize(wt, factor, qparams, scheme.weights, opts.blockSize, deq[d.key]);
              codes.set(d.key, { codes: r.codes, qparams });
              modules.push({ name, gptq_loss: r.loss });
            } else {
              codes.set(d.key, { codes: qj.quantizeRtn(wt, qparams, scheme.weights, deq[d.key]), qparams });
              modules.push(gptq ? { name, gptq_loss: NaN, fell_back_to_rtn: true } : { name });
            }
          } finally {
            device.free(wt);
          }
        }
      } finally {
        factor?.free();
      }
    }
    for (const d of LINEARS) {
      if (plan.quantized.has(d.key)) continue;
      // A Linear left unquantized inside a smoothed group is written smoothed, or the model would change.
      if (smoothed.has(d.key)) {
        roundInPlace(lin[d.key], opts.source.info(`${l}${d.name}.weight`).dtype);
        result.replacedTensors.set(`${l}${d.name}.weight`, lin[d.key]);
      }
      deq[d.key] = up(lin[d.key], shapes[d.key]);
    }
    qWeights.layers[i] = layerWeights(norms, deq);
    device.synchronize();
    seconds.quantize += now() - t0;
    memory.end('quantize');

    // --- B: static scales from the quantized layer --------------------------------------------
    memory.start();
    t0 = now();
    const format = activationSpec(scheme.inputActivations);
    const staticActs = scheme.inputActivations !== undefined && scheme.inputActivations.dynamic === false;
    const sim: LayerQuantSim = {};
    const pointSim = (point: InputPoint): FakeQuantSpec | undefined => (format !== undefined && quantizedPoint(point) ? { format } : undefined);
    if (format !== undefined && !staticActs) {
      sim.qkvInput = pointSim('qkv');
      sim.oInput = pointSim('o');
      sim.gateUpInput = pointSim('gateUp');
      sim.downInput = pointSim('down');
    }
    const inputScales = new Map<InputPoint, number>();
    let kvScales: { k: number; v: number } | undefined;
    if (staticActs || scheme.kvCacheScheme !== undefined) {
      qWeights.quant![i] = { ...sim };
      const pointMax = new Map<InputPoint, Tensor>();
      const kMax = keep(qj.zerosF32([1]));
      const vMax = keep(qj.zerosF32([1]));
      const hooksB: ActivationHooks = {};
      if (staticActs) {
        for (const point of INPUT_POINTS) {
          if (!quantizedPoint(point)) continue;
          const acc = keep(qj.zerosF32([1]));
          pointMax.set(point, acc);
          hooksB[inputHook(point, i)] = (t) => qj.absMax(acc, t);
        }
      }
      if (scheme.kvCacheScheme !== undefined) {
        hooksB[hookNames.keyStates(i)] = (t) => qj.absMax(kMax, t);
        hooksB[hookNames.valueStates(i)] = (t) => qj.absMax(vMax, t);
      }
      runLayer(ctx, ctx.qDecoder, i, hooksB);
      if (staticActs) {
        const args = scheme.inputActivations!;
        const staticScale = (point: InputPoint): FakeQuantSpec | undefined => {
          const acc = pointMax.get(point);
          if (acc === undefined) return undefined;
          const m = device.download(acc)[0]!;
          const scale = calculateQParam(-m, m, args, opts.scaleDtype).scale;
          inputScales.set(point, scale);
          return { format: format!, scale };
        };
        sim.qkvInput = staticScale('qkv');
        sim.oInput = staticScale('o');
        sim.gateUpInput = staticScale('gateUp');
        sim.downInput = staticScale('down');
      }
      if (scheme.kvCacheScheme !== undefined) {
        const kvArgs = scheme.kvCacheScheme;
        const k = device.download(kMax)[0]!;
        const v = device.download(vMax)[0]!;
        kvScales = { k: calculateQParam(-k, k, kvArgs, opts.scaleDtype).scale, v: calculateQParam(-v, v, kvArgs, opts.scaleDtype).scale };
        sim.kvCache = { kScale: kvScales.k, vScale: kvScales.v };
        result.kvScales.push({ layerPrefix: l, ...kvScales });
      }
    }
    qWeights.quant![i] = Object.keys(sim).length > 0 ? sim : undefined;
    device.synchronize();
    seconds.calibrate += now() - t0;
    memory.end('calibrate');

    // The quantized Linears, encoded as written (packed int4, int8, E4M3 bytes): compact host memory.
    t0 = now();
    for (const d of LINEARS) {
      const c = codes.get(d.key);
      if (c === undefined) continue;
      const [rows, cols] = shapes[d.key];
      const prefix = `${l}${d.name}`;
      const weight = { rows, cols, args: scheme.weights, qparams: c.qparams, codes: c.codes };
      result.linears.set(prefix, linearTensors(prefix, weight, scheme.format, opts.scaleDtype, inputScales.get(d.input)));
    }
    codes.clear();
    seconds.quantize += now() - t0;

    // --- C: propagate -------------------------------------------------------------------------
    memory.start();
    t0 = now();
    const sums: ErrorSums = { diff2: 0, ref2: 0, update2: 0 };
    for (const b of ctx.batches) {
      const y = ctx.acts.load(b);
      const yq = ctx.acts.load(b);
      try {
        ctx.fpDecoder.layer(i, y, b.batch, b.seq, { startPos: 0 });
        ctx.qDecoder.layer(i, yq, b.batch, b.seq, { startPos: 0 });
        const x = ctx.acts.peek(b);
        qj.accumulateErrors(sums, yq, y, x);
        ctx.acts.done(b, x);
      } catch (e) {
        device.free(yq);
        throw e;
      } finally {
        device.free(y);
      }
      ctx.acts.store(b, yq);
    }
    device.synchronize();
    seconds.propagate += now() - t0;
    memory.end('propagate');
    if (!Number.isFinite(sums.diff2)) throw new LlmoptError(`layer ${i}: the quantized layer produced non-finite outputs on the calibration data`);

    return {
      index: i,
      output_rel_error: Math.sqrt(sums.diff2 / sums.ref2),
      update_rel_error: Math.sqrt(sums.diff2 / sums.update2),
      seconds,
      modules,
      ...(smoothing ? { smoothing } : {}),
      ...(kvScales ? { kv_scales: kvScales } : {}),
    };
  } finally {
    for (const point of [...hessians.keys()]) freeHessian(point);
    for (const t of owned) device.free(t);
    delete fpWeights.layers[i];
    delete qWeights.layers[i];
    if (qWeights.quant) delete qWeights.quant[i];
  }
}

/** Each value rounded to what `dtype` stores (so what is simulated is what is written). */
function roundInPlace(a: Float32Array, dtype: DType): void {
  if (dtype !== 'BF16' && dtype !== 'F16') return;
  for (let k = 0; k < a.length; k++) a[k] = roundToDtype(a[k]!, dtype);
}
