// HF config.json → ModelSpec, for the model_types the decoder runs. Defaults are transformers 5's
// (configuration_<model>.py), so a config.json that leaves a field out means what it means there.
// Anything the decoder cannot reproduce exactly is a ConfigError that says what and why.

import { ConfigError } from '../errors.js';
import { SUPPORTED_ARCHITECTURES, type Architecture, type ModelSpec, type RopeScaling } from './spec.js';

type Json = Record<string, unknown>;

/** Per-model_type defaults where transformers' config classes differ. */
const LLAMA_FAMILY_DEFAULTS: Record<Exclude<Architecture, 'gpt2'>, {
  maxPositionEmbeddings: number;
  /** num_key_value_heads when the key is absent (null always means "= num_attention_heads"). */
  numKvHeads: number | 'heads';
  /** head_dim when absent: a number, or hidden_size / num_attention_heads. */
  headDim: number | 'derived';
  bosTokenId?: number;
  eosTokenId?: number;
}> = {
  llama: { maxPositionEmbeddings: 2048, numKvHeads: 'heads', headDim: 'derived', bosTokenId: 1, eosTokenId: 2 },
  mistral: { maxPositionEmbeddings: 4096 * 32, numKvHeads: 8, headDim: 'derived', bosTokenId: 1, eosTokenId: 2 },
  qwen2: { maxPositionEmbeddings: 32768, numKvHeads: 32, headDim: 'derived' },
  qwen3: { maxPositionEmbeddings: 32768, numKvHeads: 32, headDim: 128 },
};

/** transformers' RotaryEmbeddingConfigMixin.default_theta. */
const DEFAULT_ROPE_THETA = 10000;
/** MistralConfig / Qwen2Config / Qwen3Config sliding_window default when the key is absent. */
const DEFAULT_SLIDING_WINDOW = 4096;
/** Qwen2Config / Qwen3Config max_window_layers default. */
const DEFAULT_MAX_WINDOW_LAYERS = 28;

/** Reads typed fields of one JSON object, throwing ConfigError(file, "<field>: …"). */
class Fields {
  constructor(
    readonly obj: Json,
    readonly file: string,
    readonly prefix = '',
  ) {}

  private fail(key: string, why: string): never {
    throw new ConfigError(this.file, `${this.prefix}${key}: ${why}`);
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  present(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.obj, key);
  }

  /** A positive integer that must be there. */
  dim(key: string, alias?: string): number {
    const k = !this.has(key) && alias !== undefined && this.has(alias) ? alias : key;
    if (!this.has(k)) this.fail(key, 'missing (required)');
    return this.positiveInt(k);
  }

  positiveInt(key: string): number {
    const v = this.obj[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) this.fail(key, `expected a positive integer, got ${show(v)}`);
    return v;
  }

  optDim(key: string, fallback: number): number {
    return this.has(key) ? this.positiveInt(key) : fallback;
  }

  number(key: string, fallback?: number): number {
    if (!this.has(key)) {
      if (fallback === undefined) this.fail(key, 'missing (required)');
      return fallback;
    }
    const v = this.obj[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `expected a number, got ${show(v)}`);
    return v;
  }

  positive(key: string, fallback?: number): number {
    const v = this.number(key, fallback);
    if (!(v > 0)) this.fail(key, `expected a positive number, got ${show(this.obj[key])}`);
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    if (!this.has(key)) return fallback;
    const v = this.obj[key];
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${show(v)}`);
    return v;
  }

  string(key: string, fallback: string): string {
    if (!this.has(key)) return fallback;
    const v = this.obj[key];
    if (typeof v !== 'string') this.fail(key, `expected a string, got ${show(v)}`);
    return v;
  }

  tokenId(key: string, fallback?: number): number | undefined {
    if (!this.present(key)) return fallback;
    const v = this.obj[key];
    if (v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(key, `expected a token id, got ${show(v)}`);
    return v;
  }

  tokenIds(key: string, fallback?: number): number | number[] | undefined {
    const v = this.obj[key];
    if (Array.isArray(v)) {
      if (!v.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) this.fail(key, `expected token ids, got ${show(v)}`);
      return v as number[];
    }
    return this.tokenId(key, fallback);
  }
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses a config.json value (already JSON.parse'd) into a ModelSpec. `file` names the config in
 * error messages.
 */
export function parseModelConfig(json: unknown, file: string): ModelSpec {
  if (!isObject(json)) throw new ConfigError(file, `expected a JSON object, got ${show(json)}`);
  const modelType = json.model_type;
  if (typeof modelType !== 'string') {
    throw new ConfigError(file, `model_type: missing or not a string (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  }
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(modelType)) {
    throw new ConfigError(file, `model_type "${modelType}" is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`);
  }
  const arch = modelType as Architecture;
  const f = new Fields(json, file);
  return arch === 'gpt2' ? parseGpt2(f) : parseLlamaFamily(arch, f);
}

function parseLlamaFamily(arch: Exclude<Architecture, 'gpt2'>, f: Fields): ModelSpec {
  const d = LLAMA_FAMILY_DEFAULTS[arch];
  const hiddenSize = f.dim('hidden_size');
  const numHeads = f.dim('num_attention_heads');
  const numKvHeads = f.has('num_key_value_heads')
    ? f.positiveInt('num_key_value_heads')
    : f.present('num_key_value_heads') || d.numKvHeads === 'heads'
      ? numHeads
      : d.numKvHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(f.file, `num_attention_heads (${numHeads}) is not a multiple of num_key_value_heads (${numKvHeads})`);
  }
  let headDim: number;
  if (f.has('head_dim')) headDim = f.positiveInt('head_dim');
  else if (d.headDim !== 'derived') {
    if (f.present('head_dim')) throw new ConfigError(f.file, `head_dim: null is not allowed for ${arch} (transformers requires an integer)`);
    headDim = d.headDim;
  } else {
    if (hiddenSize % numHeads !== 0) {
      throw new ConfigError(f.file, `head_dim: missing, and hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads})`);
    }
    headDim = hiddenSize / numHeads;
  }

  const act = f.string('hidden_act', 'silu');
  if (act !== 'silu') throw new ConfigError(f.file, `hidden_act "${act}" is not supported for ${arch} (only "silu")`);

  const maxPositionEmbeddings = f.optDim('max_position_embeddings', d.maxPositionEmbeddings);
  const rope = parseRope(f, maxPositionEmbeddings);
  if (rope.partialRotaryFactor !== 1) {
    throw new ConfigError(
      f.file,
      `partial_rotary_factor ${rope.partialRotaryFactor}: transformers' ${arch} rotates the whole head, so a partial rotary factor cannot be reproduced`,
    );
  }
  const numLayers = f.dim('num_hidden_layers');
  const attentionBias = arch === 'llama' || arch === 'qwen3' ? f.bool('attention_bias', false) : false;
  const window = parseSlidingWindow(arch, f, numLayers);

  return {
    architecture: arch,
    vocabSize: f.dim('vocab_size'),
    hiddenSize,
    intermediateSize: f.dim('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    maxPositionEmbeddings,
    norm: 'rms',
    normEps: f.positive('rms_norm_eps', 1e-6),
    activation: 'silu',
    positions: 'rope',
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    partialRotaryFactor: rope.partialRotaryFactor,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    qkvBias: arch === 'qwen2' || attentionBias,
    oBias: attentionBias,
    mlpBias: arch === 'llama' ? f.bool('mlp_bias', false) : false,
    qkNorm: arch === 'qwen3',
    ...window,
    bosTokenId: f.tokenId('bos_token_id', d.bosTokenId),
    eosTokenId: f.tokenIds('eos_token_id', d.eosTokenId),
    rawConfig: f.obj,
  };
}

interface ParsedRope {
  theta: number;
  scaling: RopeScaling;
  partialRotaryFactor: number;
}

/**
 * Both config styles: classic (`rope_theta` + `rope_scaling` {type|rope_type, factor, …}) and
 * transformers 5 (`rope_parameters` {rope_type, rope_theta, factor, …}). As in transformers'
 * convert_rope_params_to_dict, a non-empty rope_scaling wins over rope_parameters, and rope_theta
 * inside the dict wins over the top-level key.
 */
function parseRope(f: Fields, maxPositionEmbeddings: number): ParsedRope {
  const scalingRaw = f.obj.rope_scaling;
  const paramsRaw = f.obj.rope_parameters;
  for (const [key, v] of [['rope_scaling', scalingRaw], ['rope_parameters', paramsRaw]] as const) {
    if (v !== undefined && v !== null && !isObject(v)) throw new ConfigError(f.file, `${key}: expected an object or null, got ${show(v)}`);
  }
  const useScaling = isObject(scalingRaw) && Object.keys(scalingRaw).length > 0;
  const key = useScaling ? 'rope_scaling' : 'rope_parameters';
  const params: Json = useScaling ? (scalingRaw as Json) : isObject(paramsRaw) ? paramsRaw : {};
  if (Object.values(params).some(isObject)) {
    throw new ConfigError(f.file, `${key}: per-layer-type rope parameters are not supported`);
  }
  const p = new Fields(params, f.file, `${key}.`);
  const theta = p.has('rope_theta') ? p.positive('rope_theta') : f.positive('rope_theta', DEFAULT_ROPE_THETA);
  const partialRotaryFactor = p.has('partial_rotary_factor')
    ? p.positive('partial_rotary_factor')
    : f.positive('partial_rotary_factor', 1);
  if (partialRotaryFactor > 1) throw new ConfigError(f.file, `partial_rotary_factor: must be at most 1, got ${partialRotaryFactor}`);

  const type = p.has('rope_type') ? p.string('rope_type', 'default') : p.string('type', 'default');
  let scaling: RopeScaling;
  switch (type) {
    case 'default':
      scaling = { type: 'default' };
      break;
    case 'linear':
      scaling = { type: 'linear', factor: p.positive('factor') };
      break;
    case 'llama3': {
      const low = p.positive('low_freq_factor');
      const high = p.positive('high_freq_factor');
      if (high === low) throw new ConfigError(f.file, `${key}: high_freq_factor must differ from low_freq_factor (both ${low})`);
      scaling = {
        type: 'llama3',
        factor: p.positive('factor'),
        lowFreqFactor: low,
        highFreqFactor: high,
        // transformers' standardize_rope_params: a top-level original_max_position_embeddings wins.
        originalMaxPositionEmbeddings: f.has('original_max_position_embeddings')
          ? f.positiveInt('original_max_position_embeddings')
          : p.optDim('original_max_position_embeddings', maxPositionEmbeddings),
      };
      break;
    }
    default:
      throw new ConfigError(f.file, `${key}: rope type "${type}" is not supported (supported: default, linear, llama3)`);
  }
  return { theta, scaling, partialRotaryFactor };
}

/**
 * transformers' rules: Mistral slides every layer when sliding_window is set (4096 when absent).
 * Qwen2/Qwen3 slide only with use_sliding_window, and only the layers that layer_types marks
 * "sliding_attention" — by default those with index >= max_window_layers. Llama never slides.
 */
function parseSlidingWindow(
  arch: Exclude<Architecture, 'gpt2'>,
  f: Fields,
  numLayers: number,
): { slidingWindow?: number; slidingWindowLayers?: readonly boolean[] } {
  if (arch === 'llama') return {};
  const windowOrNull = (): number | undefined =>
    !f.present('sliding_window') ? DEFAULT_SLIDING_WINDOW : f.has('sliding_window') ? f.positiveInt('sliding_window') : undefined;
  if (arch === 'mistral') {
    const w = windowOrNull();
    return w === undefined ? {} : { slidingWindow: w };
  }
  const window = f.bool('use_sliding_window', false) ? windowOrNull() : undefined;
  let sliding: boolean[];
  const lt = f.obj.layer_types;
  if (lt !== undefined && lt !== null) {
    if (!Array.isArray(lt) || lt.length !== numLayers || !lt.every((t) => t === 'full_attention' || t === 'sliding_attention')) {
      throw new ConfigError(f.file, `layer_types: expected ${numLayers} entries of "full_attention" or "sliding_attention", got ${show(lt)}`);
    }
    sliding = lt.map((t) => t === 'sliding_attention');
  } else {
    const maxWindowLayers = f.has('max_window_layers') ? f.number('max_window_layers') : DEFAULT_MAX_WINDOW_LAYERS;
    sliding = Array.from({ length: numLayers }, (_, i) => window !== undefined && i >= maxWindowLayers);
  }
  if (!sliding.some(Boolean)) return {};
  if (window === undefined) {
    throw new ConfigError(f.file, 'layer_types has "sliding_attention" layers but no sliding window is in effect (use_sliding_window false or sliding_window null)');
  }
  return sliding.every(Boolean) ? { slidingWindow: window } : { slidingWindow: window, slidingWindowLayers: sliding };
}

function parseGpt2(f: Fields): ModelSpec {
  const hiddenSize = f.dim('n_embd', 'hidden_size');
  const numHeads = f.dim('n_head', 'num_attention_heads');
  if (hiddenSize % numHeads !== 0) {
    throw new ConfigError(f.file, `n_embd (${hiddenSize}) is not a multiple of n_head (${numHeads})`);
  }
  const act = f.string('activation_function', 'gelu_new');
  if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh') {
    throw new ConfigError(f.file, `activation_function "${act}" is not supported for gpt2 (only "gelu_new" / "gelu_pytorch_tanh")`);
  }
  if (!f.bool('scale_attn_weights', true)) throw new ConfigError(f.file, 'scale_attn_weights: false is not supported');
  if (f.bool('scale_attn_by_inverse_layer_idx', false)) {
    throw new ConfigError(f.file, 'scale_attn_by_inverse_layer_idx: true is not supported');
  }
  if (f.bool('add_cross_attention', false)) throw new ConfigError(f.file, 'add_cross_attention: true is not supported');
  return {
    architecture: 'gpt2',
    vocabSize: f.dim('vocab_size'),
    hiddenSize,
    intermediateSize: f.has('n_inner') ? f.positiveInt('n_inner') : 4 * hiddenSize,
    numLayers: f.dim('n_layer', 'num_hidden_layers'),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    maxPositionEmbeddings: f.dim('n_positions', 'max_position_embeddings'),
    norm: 'layer',
    normEps: f.positive('layer_norm_epsilon', 1e-5),
    activation: 'gelu_tanh',
    positions: 'learned',
    // Unused with learned positions.
    ropeTheta: 0,
    ropeScaling: { type: 'default' },
    partialRotaryFactor: 1,
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    qkvBias: true,
    oBias: true,
    mlpBias: true,
    qkNorm: false,
    bosTokenId: f.tokenId('bos_token_id', 50256),
    eosTokenId: f.tokenIds('eos_token_id', 50256),
    rawConfig: f.obj,
  };
}

/** The sliding window layer `layer` attends with, or undefined for full causal attention. */
export function layerSlidingWindow(spec: ModelSpec, layer: number): number | undefined {
  if (spec.slidingWindow === undefined) return undefined;
  if (spec.slidingWindowLayers === undefined) return spec.slidingWindow;
  return spec.slidingWindowLayers[layer] ? spec.slidingWindow : undefined;
}

/** Elements of the rotating part of each head. */
export function rotaryDim(spec: ModelSpec): number {
  return Math.trunc(spec.headDim * spec.partialRotaryFactor);
}
