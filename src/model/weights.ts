// HF checkpoint tensors → the decoder's weights on a Device, for every architecture of ModelSpec.
// Every weight is read as float32 (the io layer decodes F16/BF16/… on read) and uploaded once.
// Linear weights end up [out_features, in_features] (nn.Linear layout); GPT-2's Conv1D weights
// ([in, out]) are transposed and its fused c_attn is split into q, k, v.
//
// compressed-tensors checkpoints (llmopt quantize, llm-compressor) load dequantized to float32, and
// what the quantized model does to activations is simulated: each Linear input is fake-quantized
// per token (dynamic) or with its static input_scale, and an FP8 KV cache stores keys/values as
// E4M3 with k_scale/v_scale (DecoderWeights.quant, applied by the decoder through fakeQuantRows).

import path from 'node:path';
import { LlmoptError } from '../errors.js';
import type { Device, FakeQuantSpec, Tensor } from '../tensor/device.js';
import {
  dequantizeLinear,
  dequantizeQuantizedLinear,
  parseCompressedTensorsConfig,
  readQuantizedLinear,
  schemeFor,
  type CtConfig,
  type QuantArgsJson,
} from './compressed-tensors.js';
import type { ModelSpec } from './spec.js';

/** What weight loading needs from a checkpoint (CheckpointTensors implements it). */
export interface WeightSource {
  has(name: string): boolean;
  info(name: string): { shape: readonly number[]; dtype: string };
  readFloat32(name: string): Float32Array;
  /** Raw little-endian bytes (packed int32 weights do not survive a float32 round trip). */
  readBytes(name: string): Uint8Array;
  /** The files tensors are read from, for error messages. */
  files(): string[];
}

/** How a quantized layer treats activations; the decoder applies each spec in place before the matmuls. */
export interface LayerQuantSim {
  /** Input of q/k/v_proj (one tensor, so fused q/k/v share one spec; static scale = max of theirs, as vLLM fuses). */
  qkvInput?: FakeQuantSpec;
  oInput?: FakeQuantSpec;
  /** Input of gate/up_proj. */
  gateUpInput?: FakeQuantSpec;
  downInput?: FakeQuantSpec;
  /** FP8 KV cache: keys after rotary and values stored as E4M3 with these per-tensor scales. */
  kvCache?: { kScale: number; vScale: number };
}

export interface LayerWeights {
  /** input_layernorm (GPT-2: ln_1, with bias). */
  attnNorm: Tensor;
  attnNormBias?: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  qBias?: Tensor;
  kBias?: Tensor;
  vBias?: Tensor;
  o: Tensor;
  oBias?: Tensor;
  /** Qwen3 per-head RMSNorm weights [headDim]. */
  qNorm?: Tensor;
  kNorm?: Tensor;
  /** post_attention_layernorm (GPT-2: ln_2, with bias). */
  mlpNorm: Tensor;
  mlpNormBias?: Tensor;
  /** SwiGLU gate_proj; absent for GPT-2. */
  gate?: Tensor;
  gateBias?: Tensor;
  /** up_proj (GPT-2: c_fc). */
  up: Tensor;
  upBias?: Tensor;
  /** down_proj (GPT-2: mlp.c_proj). */
  down: Tensor;
  downBias?: Tensor;
}

export interface DecoderWeights {
  /** Token embedding [vocab, hidden]. */
  embed: Tensor;
  /** GPT-2 learned positions [maxPositions, hidden]. */
  positions?: Tensor;
  layers: LayerWeights[];
  finalNorm: Tensor;
  finalNormBias?: Tensor;
  /** [vocab, hidden]; the same tensor as embed when the embeddings are tied. */
  lmHead: Tensor;
  /** Per layer, simulated activation/KV quantization; absent (or undefined entries) = none. */
  quant?: (LayerQuantSim | undefined)[];
}

/** True when the layer's activations or KV cache are simulated (fakeQuantRows) rather than left alone. */
export function simulatesQuantization(q: LayerQuantSim | undefined): boolean {
  return q !== undefined && (q.qkvInput !== undefined || q.oInput !== undefined || q.gateUpInput !== undefined || q.downInput !== undefined ||
    q.kvCache !== undefined);
}

/** True when config.json says the checkpoint is quantized (compressed-tensors, GPTQ, AWQ, …). */
export function isQuantizedConfig(spec: ModelSpec): boolean {
  const q = spec.rawConfig.quantization_config;
  return q !== undefined && q !== null;
}

/** Reads tensors by HF name, checking presence and shape, with errors that name the checkpoint. */
class TensorReader {
  constructor(
    private readonly src: WeightSource,
    private readonly device: Device,
  ) {}

  private where(): string {
    const files = this.src.files();
    if (files.length === 1) return files[0]!;
    return `${files.length} shards in ${files.length > 0 ? path.dirname(files[0]!) : '(no files)'}`;
  }

  has(name: string): boolean {
    return this.src.has(name);
  }

  /** Host float32 data of `name`, which must have exactly `shape`. */
  host(name: string, shape: readonly number[]): Float32Array {
    if (!this.src.has(name)) throw new LlmoptError(`${this.where()}: missing tensor "${name}" (the config needs it)`);
    const actual = this.src.info(name).shape;
    if (actual.length !== shape.length || actual.some((d, i) => d !== shape[i])) {
      throw new LlmoptError(`${this.where()}: tensor "${name}" has shape [${actual.join(', ')}], expected [${shape.join(', ')}]`);
    }
    return this.src.readFloat32(name);
  }

  upload(name: string, shape: readonly number[]): Tensor {
    return this.device.upload(this.host(name, shape), shape);
  }

  /** A Linear weight [outF, inF] under `prefix`, dequantized when the checkpoint stores it quantized. */
  linear(prefix: string, outF: number, inF: number, quant: CtConfig | undefined): Tensor {
    if (quant === undefined) return this.upload(`${prefix}.weight`, [outF, inF]);
    const w = dequantizeLinear(this.src, prefix, outF, inF, schemeFor(quant, prefix)?.weights, this.where());
    return this.device.upload(w, [outF, inF]);
  }

  /**
   * Linear weights that share one input (q/k/v, gate/up, or a single Linear). On a device with
   * uploadQuantizedLinear, quantized ones stay quantized there, and when `activations` is given the
   * device's GEMM quantizes their input itself: then all of them must be native (else all are
   * dequantized and the decoder simulates the activations) and `activationsNative` is true.
   */
  linears(specs: readonly { prefix: string; outF: number; inF: number }[], quant: CtConfig | undefined, activations: FakeQuantSpec | undefined):
  { tensors: Tensor[]; activationsNative: boolean } {
    const upload = quant !== undefined ? this.device.uploadQuantizedLinear?.bind(this.device) : undefined;
    if (upload === undefined) return { tensors: specs.map((l) => this.linear(l.prefix, l.outF, l.inF, quant)), activationsNative: false };
    const stored = specs.map((l) => readQuantizedLinear(this.src, l.prefix, l.outF, l.inF, schemeFor(quant!, l.prefix)?.weights, this.where()));
    const native = stored.map((w) => (w !== undefined ? upload(w, activations) : undefined));
    const allNative = native.every((t) => t !== undefined);
    if (activations !== undefined && !allNative) {
      for (const t of native) if (t !== undefined) this.device.free(t);
      native.fill(undefined);
    }
    const tensors = specs.map((l, i) => {
      const w = stored[i];
      return native[i] ?? (w !== undefined ? this.device.upload(dequantizeQuantizedLinear(w), [l.outF, l.inF]) : this.linear(l.prefix, l.outF, l.inF, quant));
    });
    return { tensors, activationsNative: activations !== undefined && allNative };
  }

  /** A scalar tensor's value (scales), trying each name in turn. */
  scalar(names: readonly string[]): number {
    const name = names.find((n) => this.src.has(n));
    if (name === undefined) throw new LlmoptError(`${this.where()}: missing tensor "${names[0]}" (the quantization config needs it)`);
    const v = this.src.readFloat32(name);
    if (v.length !== 1) throw new LlmoptError(`${this.where()}: tensor "${name}" has ${v.length} values, expected one (a per-tensor scale)`);
    if (!(v[0]! > 0 && Number.isFinite(v[0]!))) throw new LlmoptError(`${this.where()}: tensor "${name}" = ${v[0]}, expected a positive scale`);
    return v[0]!;
  }

  configFile(): string {
    const files = this.src.files();
    return path.join(files.length > 0 ? path.dirname(files[0]!) : '.', 'config.json');
  }

  /** A Conv1D weight stored [inF, outF], uploaded as [outF, inF]. */
  uploadTransposed(name: string, inF: number, outF: number): Tensor {
    return this.device.upload(transpose(this.host(name, [inF, outF]), inF, outF), [outF, inF]);
  }
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  }
  return out;
}

/** Loads every weight the spec needs from `src` onto `device`. Nothing is kept on the host. */
export function loadDecoderWeights(spec: ModelSpec, src: WeightSource, device: Device): DecoderWeights {
  const r = new TensorReader(src, device);
  let quant: CtConfig | undefined;
  if (isQuantizedConfig(spec)) {
    quant = parseCompressedTensorsConfig(spec.rawConfig.quantization_config, r.configFile());
    if (spec.architecture === 'gpt2') throw new LlmoptError(`${r.configFile()}: quantized GPT-2 checkpoints are not supported (only the Llama family)`);
    const withOutputs = quant.schemes.find((g) => g.outputActivations !== undefined);
    if (withOutputs) throw new LlmoptError(`${r.configFile()}: quantization_config.config_groups.${withOutputs.name} quantizes output activations, which llmopt cannot run`);
  }
  const uploaded: Tensor[] = [];
  const track = <T extends Tensor | undefined>(t: T): T => {
    if (t !== undefined) uploaded.push(t);
    return t;
  };
  try {
    return spec.architecture === 'gpt2' ? loadGpt2(spec, r, device, track) : loadLlamaFamily(spec, r, track, quant);
  } catch (e) {
    for (const t of uploaded) device.free(t);
    throw e;
  }
}

type Track = <T extends Tensor | undefined>(t: T) => T;

function loadLlamaFamily(spec: ModelSpec, r: TensorReader, track: Track, quant?: CtConfig): DecoderWeights {
  // Base-model checkpoints (LlamaModel rather than LlamaForCausalLM) have no "model." prefix.
  const p = !r.has('model.embed_tokens.weight') && r.has('embed_tokens.weight') ? '' : 'model.';
  const H = spec.hiddenSize;
  const qDim = spec.numHeads * spec.headDim;
  const kvDim = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  const embed = track(r.upload(`${p}embed_tokens.weight`, [spec.vocabSize, H]));
  const layers: LayerWeights[] = [];
  const layerQuant: (LayerQuantSim | undefined)[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const l = `${p}layers.${i}.`;
    const bias = (name: string, n: number, on: boolean) => (on ? track(r.upload(`${l}${name}.bias`, [n])) : undefined);
    const sim = quant !== undefined ? layerQuantSim(r, quant, l) : undefined;
    // Linears sharing an input load together; an input the device's GEMMs quantize is not simulated.
    const group = (linears: [string, number, number][], input: 'qkvInput' | 'oInput' | 'gateUpInput' | 'downInput') => {
      const g = r.linears(linears.map(([name, outF, inF]) => ({ prefix: `${l}${name}`, outF, inF })), quant, sim?.[input]);
      g.tensors.forEach(track);
      if (g.activationsNative) sim![input] = undefined;
      return g.tensors;
    };
    const [q, k, v] = group([['self_attn.q_proj', qDim, H], ['self_attn.k_proj', kvDim, H], ['self_attn.v_proj', kvDim, H]], 'qkvInput');
    const [o] = group([['self_attn.o_proj', H, qDim]], 'oInput');
    const [gate, up] = group([['mlp.gate_proj', I, H], ['mlp.up_proj', I, H]], 'gateUpInput');
    const [down] = group([['mlp.down_proj', H, I]], 'downInput');
    layers.push({
      attnNorm: track(r.upload(`${l}input_layernorm.weight`, [H])),
      q: q!,
      k: k!,
      v: v!,
      qBias: bias('self_attn.q_proj', qDim, spec.qkvBias),
      kBias: bias('self_attn.k_proj', kvDim, spec.qkvBias),
      vBias: bias('self_attn.v_proj', kvDim, spec.qkvBias),
      o: o!,
      oBias: bias('self_attn.o_proj', H, spec.oBias),
      qNorm: spec.qkNorm ? track(r.upload(`${l}self_attn.q_norm.weight`, [spec.headDim])) : undefined,
      kNorm: spec.qkNorm ? track(r.upload(`${l}self_attn.k_norm.weight`, [spec.headDim])) : undefined,
      mlpNorm: track(r.upload(`${l}post_attention_layernorm.weight`, [H])),
      gate,
      gateBias: bias('mlp.gate_proj', I, spec.mlpBias),
      up: up!,
      upBias: bias('mlp.up_proj', I, spec.mlpBias),
      down: down!,
      downBias: bias('mlp.down_proj', H, spec.mlpBias),
    });
    if (sim !== undefined) layerQuant.push(sim);
  }
  const finalNorm = track(r.upload(`${p}norm.weight`, [H]));
  const lmHead = spec.tieWordEmbeddings ? embed : track(r.upload('lm_head.weight', [spec.vocabSize, H]));
  return { embed, layers, finalNorm, lmHead, ...(quant !== undefined ? { quant: layerQuant } : {}) };
}

/** compressed-tensors activation args → the fake quantization the decoder runs, or why it cannot. */
function activationFormat(args: QuantArgsJson, what: string, file: string): FakeQuantSpec['format'] {
  if (args.num_bits === 8 && args.type === 'float') return 'fp8_e4m3';
  if (args.num_bits === 8 && args.type === 'int') return 'int8';
  throw new LlmoptError(`${file}: ${what}: ${args.num_bits}-bit ${args.type} activations are not supported (int8 and fp8 are)`);
}

/** The fake quantization of one Linear input shared by `modules` (e.g. q/k/v_proj), from their schemes. */
function inputQuantSim(r: TensorReader, quant: CtConfig, layerPrefix: string, modules: readonly string[]): FakeQuantSpec | undefined {
  const file = r.configFile();
  const names = modules.map((m) => `${layerPrefix}${m}`);
  const args = names.map((n) => schemeFor(quant, n)?.inputActivations);
  const first = args[0];
  const same = args.every((a) => (a === undefined) === (first === undefined) && (a === undefined || (a.type === first!.type && a.num_bits === first!.num_bits && a.dynamic === first!.dynamic && a.strategy === first!.strategy)));
  if (!same) throw new LlmoptError(`${file}: ${names.join(', ')} share one input and must quantize it alike`);
  if (first === undefined) return undefined;
  const what = `input activations of ${names[0]}`;
  const format = activationFormat(first, what, file);
  if (!first.symmetric) throw new LlmoptError(`${file}: ${what}: asymmetric activation quantization is not supported`);
  if (first.dynamic === true && first.strategy === 'token') return { format };
  if (first.dynamic === false && first.strategy === 'tensor') {
    return { format, scale: Math.max(...names.map((n) => r.scalar([`${n}.input_scale`]))) };
  }
  throw new LlmoptError(`${file}: ${what}: ${first.dynamic === false ? 'static' : 'dynamic'} ${first.strategy} quantization is not supported (dynamic per-token and static per-tensor are)`);
}

function layerQuantSim(r: TensorReader, quant: CtConfig, l: string): LayerQuantSim {
  const sim: LayerQuantSim = {
    qkvInput: inputQuantSim(r, quant, l, ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj']),
    oInput: inputQuantSim(r, quant, l, ['self_attn.o_proj']),
    gateUpInput: inputQuantSim(r, quant, l, ['mlp.gate_proj', 'mlp.up_proj']),
    downInput: inputQuantSim(r, quant, l, ['mlp.down_proj']),
  };
  const kv = quant.kvCacheScheme;
  if (kv !== undefined) {
    if (kv.type !== 'float' || kv.num_bits !== 8 || kv.dynamic !== false || kv.strategy !== 'tensor') {
      throw new LlmoptError(`${r.configFile()}: kv_cache_scheme: only a static per-tensor FP8 KV cache is supported`);
    }
    sim.kvCache = {
      kScale: r.scalar([`${l}self_attn.k_scale`, `${l}self_attn.k_proj.output_scale`]),
      vScale: r.scalar([`${l}self_attn.v_scale`, `${l}self_attn.v_proj.output_scale`]),
    };
  }
  return sim;
}

function loadGpt2(spec: ModelSpec, r: TensorReader, device: Device, track: Track): DecoderWeights {
  // GPT2LMHeadModel.save_pretrained writes "transformer.*"; the original hub gpt2 files have no prefix.
  const p = !r.has('transformer.wte.weight') && r.has('wte.weight') ? '' : 'transformer.';
  const H = spec.hiddenSize;
  const I = spec.intermediateSize;
  const embed = track(r.upload(`${p}wte.weight`, [spec.vocabSize, H]));
  const positions = track(r.upload(`${p}wpe.weight`, [spec.maxPositionEmbeddings, H]));
  const layers: LayerWeights[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const l = `${p}h.${i}.`;
    // c_attn: Conv1D [H, 3H] → [3H, H]; rows 0..H-1 are q, then k, then v.
    const qkv = transpose(r.host(`${l}attn.c_attn.weight`, [H, 3 * H]), H, 3 * H);
    const qkvBias = r.host(`${l}attn.c_attn.bias`, [3 * H]);
    const part = (a: Float32Array, j: number, rowLen: number) => a.subarray(j * H * rowLen, (j + 1) * H * rowLen);
    layers.push({
      attnNorm: track(r.upload(`${l}ln_1.weight`, [H])),
      attnNormBias: track(r.upload(`${l}ln_1.bias`, [H])),
      q: track(device.upload(part(qkv, 0, H), [H, H])),
      k: track(device.upload(part(qkv, 1, H), [H, H])),
      v: track(device.upload(part(qkv, 2, H), [H, H])),
      qBias: track(device.upload(part(qkvBias, 0, 1), [H])),
      kBias: track(device.upload(part(qkvBias, 1, 1), [H])),
      vBias: track(device.upload(part(qkvBias, 2, 1), [H])),
      o: track(r.uploadTransposed(`${l}attn.c_proj.weight`, H, H)),
      oBias: track(r.upload(`${l}attn.c_proj.bias`, [H])),
      mlpNorm: track(r.upload(`${l}ln_2.weight`, [H])),
      mlpNormBias: track(r.upload(`${l}ln_2.bias`, [H])),
      up: track(r.uploadTransposed(`${l}mlp.c_fc.weight`, H, I)),
      upBias: track(r.upload(`${l}mlp.c_fc.bias`, [I])),
      down: track(r.uploadTransposed(`${l}mlp.c_proj.weight`, I, H)),
      downBias: track(r.upload(`${l}mlp.c_proj.bias`, [H])),
    });
  }
  const finalNorm = track(r.upload(`${p}ln_f.weight`, [H]));
  const finalNormBias = track(r.upload(`${p}ln_f.bias`, [H]));
  const lmHead = spec.tieWordEmbeddings ? embed : track(r.upload('lm_head.weight', [spec.vocabSize, H]));
  return { embed, positions, layers, finalNorm, finalNormBias, lmHead };
}

/** Frees every weight tensor (a tied lm_head once). */
export function freeDecoderWeights(device: Device, w: DecoderWeights): void {
  const seen = new Set<Tensor>();
  const free = (t: Tensor | undefined) => {
    if (t !== undefined && !seen.has(t)) {
      seen.add(t);
      device.free(t);
    }
  };
  free(w.embed);
  free(w.positions);
  for (const l of w.layers) for (const t of Object.values(l)) free(t as Tensor | undefined);
  free(w.finalNorm);
  free(w.finalNormBias);
  free(w.lmHead);
}
