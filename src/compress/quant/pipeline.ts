// The sequential quantization pipeline (GPTQ's and llm-compressor's "sequential" pipeline): decoder
// layers one at a time, each calibrated on the inputs the already-quantized layers before it produce.
//
// Per layer, on the calibration activations X (host arrays, one per batch of equal-length windows):
//   A  calibrate: the float layer on X; hooks collect GPTQ Hessians and SmoothQuant channel ranges
//   -  smooth (SmoothQuant) and quantize the layer's Linears (RTN or GPTQ, observer-chosen scales)
//   B  (static activations / FP8 KV cache) the quantized layer on X: input and K/V absmax → scales
//   C  propagate: float and quantized layer on X; their outputs give the layer's error, and the
//      quantized outputs become the next layer's X
// Only one layer's weights (float + quantized) are on the device at a time, with the embeddings;
// memory is that, the activations of the calibration set, and the layer's Hessians.

import { LlmoptError } from '../../errors.js';
import type { DType } from '../../io/dtypes.js';
import { Decoder, hookNames, type ActivationHooks } from '../../model/decoder.js';
import type { ModelSpec } from '../../model/spec.js';
import type { DecoderWeights, LayerQuantSim, LayerWeights } from '../../model/weights.js';
import type { Device, FakeQuantSpec, Tensor } from '../../tensor/device.js';
import type { CalibrationSet } from '../calibration.js';
import { gptqQuantize } from './gptq.js';
import { HessianAccumulator } from './hessian.js';
import { INPUT_POINTS, LINEARS, inputHook, linearShape, type InputPoint, type LayerPlan, type LinearKey } from './modules.js';
import { observeWeight, weightGrid } from './observers.js';
import { calculateQParam, roundToDtype, type ScaleDType } from './qparams.js';
import { quantizeRtn, type QuantizedWeight } from './rtn.js';
import type { Method, ObserverName, ResolvedScheme } from './scheme.js';
import { ChannelRange, applySmoothing, smoothingScales, type BalanceWeight } from './smoothquant.js';

/** Tensor reads the pipeline needs from the source checkpoint. */
export interface PipelineSource {
  has(name: string): boolean;
  info(name: string): { shape: readonly number[]; dtype: DType };
  readFloat32(name: string): Float32Array;
}

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

/** A quantized Linear, ready to write. */
export interface QuantizedLinear {
  prefix: string;
  weight: QuantizedWeight;
  /** Static input scale (FP8, W8A8 --static-activations). */
  inputScale?: number;
}

export interface PipelineResult {
  linears: Map<string, QuantizedLinear>;
  /** Norm weights changed by SmoothQuant (tensor name → values). */
  replacedTensors: Map<string, Float32Array>;
  kvScales: { layerPrefix: string; k: number; v: number }[];
  layers: LayerReport[];
}

interface Batch {
  ids: Int32Array;
  batch: number;
  seq: number;
  /** The residual stream entering the current layer, [batch·seq, hidden]. */
  x: Float32Array;
}

const DEFAULT_MAX_BATCH_ROWS = 4096;

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

const now = (): number => performance.now() / 1000;

function activationSpec(args: ResolvedScheme['inputActivations']): FakeQuantSpec['format'] | undefined {
  if (args === undefined) return undefined;
  return args.type === 'float' ? 'fp8_e4m3' : 'int8';
}

function absmax(t: Float32Array): number {
  let m = 0;
  for (let i = 0; i < t.length; i++) {
    const a = Math.abs(t[i]!);
    if (a > m) m = a;
  }
  return m;
}

export async function runQuantizationPipeline(opts: PipelineOptions): Promise<PipelineResult> {
  const { spec, source, device } = opts;
  const p = opts.modelPrefix;
  const H = spec.hiddenSize;
  const read = (name: string): Float32Array => source.readFloat32(name);

  // Embeddings, final norm and lm_head are part of the decoder's contract (DecoderWeights); only embed() runs.
  const embed = device.upload(read(`${p}embed_tokens.weight`), [spec.vocabSize, H]);
  const finalNorm = device.upload(read(`${p}norm.weight`), [H]);
  const lmHead = spec.tieWordEmbeddings ? embed : device.upload(read('lm_head.weight'), [spec.vocabSize, H]);
  const fpWeights: DecoderWeights = { embed, finalNorm, lmHead, layers: new Array<LayerWeights>(spec.numLayers) };
  const qWeights: DecoderWeights = { embed, finalNorm, lmHead, layers: new Array<LayerWeights>(spec.numLayers), quant: new Array<LayerQuantSim | undefined>(spec.numLayers) };
  const fpDecoder = new Decoder(spec, fpWeights, device);
  const qDecoder = new Decoder(spec, qWeights, device);

  const result: PipelineResult = { linears: new Map(), replacedTensors: new Map(), kvScales: [], layers: [] };
  try {
    const batches: Batch[] = makeBatches(opts.calibration.windows, opts.maxBatchRows ?? DEFAULT_MAX_BATCH_ROWS).map((b) => ({
      ...b,
      x: device.download(fpDecoder.embed(b.ids, b.batch, b.seq)),
    }));

    for (let i = 0; i < spec.numLayers; i++) {
      const report = await quantizeLayer(i, batches, fpDecoder, qDecoder, fpWeights, qWeights, opts, result, read);
      result.layers.push(report);
      opts.onLayer?.(report, spec.numLayers);
      // Let progress output and signals through between layers.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return result;
  } finally {
    fpDecoder.dispose();
    qDecoder.dispose();
    device.free(embed);
    device.free(finalNorm);
    if (lmHead !== embed) device.free(lmHead);
  }
}

/** Runs `decoder.layer(i)` on every batch (a fresh upload of its input each time). */
function runLayer(decoder: Decoder, i: number, batches: Batch[], hooks: ActivationHooks | undefined, each?: (b: Batch, out: Tensor) => void): void {
  const device = decoder.device;
  for (const b of batches) {
    const t = device.upload(b.x, [b.batch * b.seq, decoder.spec.hiddenSize]);
    try {
      decoder.layer(i, t, b.batch, b.seq, { hooks, startPos: 0 });
      each?.(b, t);
    } finally {
      device.free(t);
    }
  }
}

async function quantizeLayer(
  i: number,
  batches: Batch[],
  fpDecoder: Decoder,
  qDecoder: Decoder,
  fpWeights: DecoderWeights,
  qWeights: DecoderWeights,
  opts: PipelineOptions,
  result: PipelineResult,
  read: (name: string) => Float32Array,
): Promise<LayerReport> {
  const { spec, device, scheme } = opts;
  const plan = opts.plans[i]!;
  const l = plan.prefix;
  const seconds = { calibrate: 0, quantize: 0, propagate: 0 };
  const uploaded: Tensor[] = [];
  const up = (data: Float32Array, shape: number[]): Tensor => {
    const t = device.upload(data, shape);
    uploaded.push(t);
    return t;
  };
  const optional = (name: string, shape: number[]): Tensor | undefined => (opts.source.has(name) ? up(read(name), shape) : undefined);

  // --- the float layer ------------------------------------------------------------------------
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
  const layerWeights = (norms: { attn: Float32Array; mlp: Float32Array }, lin: Record<LinearKey, Float32Array>): LayerWeights => ({
    ...shared,
    attnNorm: up(norms.attn, [spec.hiddenSize]),
    mlpNorm: up(norms.mlp, [spec.hiddenSize]),
    q: up(lin.q, shapes.q),
    k: up(lin.k, shapes.k),
    v: up(lin.v, shapes.v),
    o: up(lin.o, shapes.o),
    gate: up(lin.gate, shapes.gate),
    up: up(lin.up, shapes.up),
    down: up(lin.down, shapes.down),
  });
  fpWeights.layers[i] = layerWeights({ attn: attnNorm, mlp: mlpNorm }, w);

  try {
    // --- A: calibrate -------------------------------------------------------------------------
    const gptq = opts.method === 'gptq';
    const sq = opts.smoothquant;
    const hessians = new Map<InputPoint, HessianAccumulator>();
    const ranges = new Map<InputPoint, ChannelRange>();
    const inDim = (point: InputPoint): number => shapes[LINEARS.find((d) => d.input === point)!.key][1];
    const quantizedPoint = (point: InputPoint): boolean => LINEARS.some((d) => d.input === point && plan.quantized.has(d.key));
    const hooksA: ActivationHooks = {};
    for (const point of INPUT_POINTS) {
      const wantH = gptq && quantizedPoint(point);
      const wantRange = sq !== undefined && (point === 'qkv' || point === 'gateUp');
      if (!wantH && !wantRange) continue;
      if (wantH) hessians.set(point, new HessianAccumulator(inDim(point)));
      if (wantRange) ranges.set(point, new ChannelRange(inDim(point)));
      hooksA[inputHook(point, i)] = (t) => {
        hessians.get(point)?.add(device, t);
        ranges.get(point)?.add(device.download(t));
      };
    }
    if (Object.keys(hooksA).length > 0) runLayer(fpDecoder, i, batches, hooksA);
    seconds.calibrate += now() - t0;

    // --- smooth and quantize ------------------------------------------------------------------
    t0 = now();
    const norms = { attn: attnNorm.slice(), mlp: mlpNorm.slice() };
    const lin = Object.fromEntries(LINEARS.map((d) => [d.key, w[d.key].slice()])) as Record<LinearKey, Float32Array>;
    let smoothing: Record<string, [number, number]> | undefined;
    if (sq !== undefined) {
      smoothing = {};
      const mappings: [InputPoint, 'attn' | 'mlp', string, LinearKey[]][] = [
        ['qkv', 'attn', 'input_layernorm', ['q', 'k', 'v']],
        ['gateUp', 'mlp', 'post_attention_layernorm', ['gate', 'up']],
      ];
      for (const [point, norm, normName, keys] of mappings) {
        const balance: BalanceWeight[] = keys.map((k) => ({ data: lin[k], rows: shapes[k][0], cols: shapes[k][1] }));
        const s = smoothingScales(ranges.get(point)!, balance, sq);
        applySmoothing(norms[norm], balance, s);
        const normDtype = opts.source.info(`${l}${normName}.weight`).dtype;
        roundInPlace(norms[norm], normDtype);
        result.replacedTensors.set(`${l}${normName}.weight`, norms[norm]);
        const h = hessians.get(point);
        if (h !== undefined) scaleHessian(h.h, s);
        smoothing[normName] = [Math.min(...s), Math.max(...s)];
      }
    }

    const modules: ModuleReport[] = [];
    const deq = { ...lin };
    for (const d of LINEARS) {
      if (!plan.quantized.has(d.key)) continue;
      const [rows, cols] = shapes[d.key];
      const grid = weightGrid(rows, cols, scheme.weights);
      const qp = observeWeight(lin[d.key], grid, scheme.weights, opts.observer, opts.scaleDtype);
      const name = `${l}${d.name}`;
      let qw: QuantizedWeight;
      if (gptq) {
        const r = gptqQuantize(lin[d.key], hessians.get(d.input)!.h, qp, scheme.weights, {
          blockSize: opts.blockSize,
          dampening: opts.dampening,
          actorder: opts.actorder,
        });
        qw = r.weight;
        modules.push({ name, gptq_loss: r.loss, ...(r.fellBackToRtn ? { fell_back_to_rtn: true } : {}) });
      } else {
        qw = quantizeRtn(lin[d.key], qp, scheme.weights);
        modules.push({ name });
      }
      deq[d.key] = qw.dequantized;
      result.linears.set(name, { prefix: name, weight: qw });
    }
    hessians.clear();
    qWeights.layers[i] = layerWeights(norms, deq);
    seconds.quantize += now() - t0;

    // --- B: static scales from the quantized layer --------------------------------------------
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
    let kvScales: { k: number; v: number } | undefined;
    if (staticActs || scheme.kvCacheScheme !== undefined) {
      qWeights.quant![i] = { ...sim };
      const pointMax = new Map<InputPoint, number>();
      let kMax = 0;
      let vMax = 0;
      const hooksB: ActivationHooks = {};
      if (staticActs) {
        for (const point of INPUT_POINTS) {
          if (!quantizedPoint(point)) continue;
          hooksB[inputHook(point, i)] = (t) => pointMax.set(point, Math.max(pointMax.get(point) ?? 0, absmax(device.download(t))));
        }
      }
      if (scheme.kvCacheScheme !== undefined) {
        hooksB[hookNames.keyStates(i)] = (t) => (kMax = Math.max(kMax, absmax(device.download(t))));
        hooksB[hookNames.valueStates(i)] = (t) => (vMax = Math.max(vMax, absmax(device.download(t))));
      }
      runLayer(qDecoder, i, batches, hooksB);
      if (staticActs) {
        const args = scheme.inputActivations!;
        const staticScale = (point: InputPoint): FakeQuantSpec | undefined => {
          if (!quantizedPoint(point)) return undefined;
          const m = pointMax.get(point) ?? 0;
          return { format: format!, scale: calculateQParam(-m, m, args, opts.scaleDtype).scale };
        };
        sim.qkvInput = staticScale('qkv');
        sim.oInput = staticScale('o');
        sim.gateUpInput = staticScale('gateUp');
        sim.downInput = staticScale('down');
        for (const d of LINEARS) {
          const ql = result.linears.get(`${l}${d.name}`);
          const s = { qkv: sim.qkvInput, o: sim.oInput, gateUp: sim.gateUpInput, down: sim.downInput }[d.input];
          if (ql !== undefined && s !== undefined) ql.inputScale = s.scale;
        }
      }
      if (scheme.kvCacheScheme !== undefined) {
        const kvArgs = scheme.kvCacheScheme;
        kvScales = { k: calculateQParam(-kMax, kMax, kvArgs, opts.scaleDtype).scale, v: calculateQParam(-vMax, vMax, kvArgs, opts.scaleDtype).scale };
        sim.kvCache = { kScale: kvScales.k, vScale: kvScales.v };
        result.kvScales.push({ layerPrefix: l, ...kvScales });
      }
    }
    qWeights.quant![i] = Object.keys(sim).length > 0 ? sim : undefined;
    seconds.calibrate += now() - t0;

    // --- C: propagate -------------------------------------------------------------------------
    t0 = now();
    let diff2 = 0;
    let ref2 = 0;
    let update2 = 0;
    for (const b of batches) {
      let yRef: Float32Array | undefined;
      runLayer(fpDecoder, i, [b], undefined, (_, out) => (yRef = device.download(out)));
      runLayer(qDecoder, i, [b], undefined, (_, out) => {
        const yq = device.download(out);
        for (let k = 0; k < yq.length; k++) {
          const y = yRef![k]!;
          diff2 += (yq[k]! - y) ** 2;
          ref2 += y ** 2;
          update2 += (y - b.x[k]!) ** 2;
        }
        b.x = yq;
      });
    }
    seconds.propagate += now() - t0;
    if (!Number.isFinite(diff2)) throw new LlmoptError(`layer ${i}: the quantized layer produced non-finite outputs on the calibration data`);

    return {
      index: i,
      output_rel_error: Math.sqrt(diff2 / ref2),
      update_rel_error: Math.sqrt(diff2 / update2),
      seconds,
      modules,
      ...(smoothing ? { smoothing } : {}),
      ...(kvScales ? { kv_scales: kvScales } : {}),
    };
  } finally {
    for (const t of uploaded) device.free(t);
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

/** H' = S⁻¹ H S⁻¹ for inputs divided by s per channel (a Hessian gathered before smoothing). */
function scaleHessian(h: Float64Array, s: Float64Array): void {
  const n = s.length;
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) h[r * n + c] = h[r * n + c]! / (s[r]! * s[c]!);
}
