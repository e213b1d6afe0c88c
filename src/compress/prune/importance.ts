// Importance scores for every prunable unit: query heads, KV groups, MLP channels, hidden channels
// and whole layers. Higher = more important; selection removes the lowest.
//
// activation (default, Minitron-style, from calibration forward passes):
//   query head     mean over tokens of the L2 norm of its attention output (its slice of o_proj's input)
//   KV group       sum of its query heads' scores
//   MLP channel    mean over tokens of |silu(gate)·up| (down_proj's input)
//   hidden channel mean over tokens of |norm output|, summed over every norm that feeds a projection
//                  (input_layernorm, post_attention_layernorm of each layer, and the final norm)
//   layer          block influence: mean over tokens of 1 − cos(layer input, layer output)
// magnitude (weights only): the L2 norm of every weight removed with the unit — a head's q_proj rows
//   (and bias) and o_proj columns; a group's k/v rows plus its heads'; a channel's gate/up rows and
//   down column; a hidden channel's embedding column, norm weights, projection input columns and
//   output rows; a layer's output projections (o_proj, down_proj: what it writes to the residual).
// random: seeded uniform scores, a baseline.

import { hookNames, type ActivationHooks, type Decoder } from '../../model/decoder.js';
import type { ModelSpec } from '../../model/spec.js';
import type { Device, Tensor } from '../../tensor/device.js';
import { seededRandom } from '../../random.js';
import { layerTensorName, modelPrefix } from './names.js';

export type ImportanceMethod = 'activation' | 'magnitude' | 'random';
export const IMPORTANCE_METHODS: readonly ImportanceMethod[] = ['activation', 'magnitude', 'random'];

export interface ImportanceScores {
  method: ImportanceMethod;
  /** [layer][query head] */
  heads: Float64Array[];
  /** [layer][KV group] */
  kvGroups: Float64Array[];
  /** [layer][intermediate channel] */
  channels: Float64Array[];
  /** [hidden channel] */
  hidden: Float64Array;
  /** [layer] */
  layers: Float64Array;
}

function emptyScores(spec: ModelSpec, method: ImportanceMethod): ImportanceScores {
  const perLayer = (n: number) => Array.from({ length: spec.numLayers }, () => new Float64Array(n));
  return {
    method,
    heads: perLayer(spec.numHeads),
    kvGroups: perLayer(spec.numKvHeads),
    channels: perLayer(spec.intermediateSize),
    hidden: new Float64Array(spec.hiddenSize),
    layers: new Float64Array(spec.numLayers),
  };
}

/** A KV group's score as the sum of its query heads' scores. */
function groupsFromHeads(spec: ModelSpec, s: ImportanceScores): void {
  const P = spec.numHeads / spec.numKvHeads;
  for (let l = 0; l < spec.numLayers; l++) {
    for (let h = 0; h < spec.numHeads; h++) s.kvGroups[l]![Math.floor(h / P)]! += s.heads[l]![h]!;
  }
}

// --- activation --------------------------------------------------------------------------------

export interface ActivationImportanceOptions {
  decoder: Decoder;
  device: Device;
  /** Calibration samples (token ids, BOS first), each run as its own sequence. */
  windows: readonly Int32Array[];
  onProgress?: (done: number, total: number) => void;
}

/** Adds |x| per column of a [rows, cols] host matrix into acc[cols]. */
function addAbsColumns(acc: Float64Array, x: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) acc[c]! += Math.abs(x[o + c]!);
  }
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function activationImportance(opts: ActivationImportanceOptions): Promise<ImportanceScores & { tokens: number }> {
  const { decoder, device, windows } = opts;
  const spec = decoder.spec;
  const s = emptyScores(spec, 'activation');
  const { numHeads, headDim, intermediateSize: I, hiddenSize: H } = spec;
  let tokens = 0;
  let layerInput: Float32Array | undefined;

  const hooks: ActivationHooks = {};
  const hiddenHook = (t: Tensor) => addAbsColumns(s.hidden, device.download(t), t.shape[0]!, H);
  for (let l = 0; l < spec.numLayers; l++) {
    hooks[hookNames.layerInput(l)] = (t) => {
      layerInput = device.download(t);
    };
    hooks[hookNames.qProjInput(l)] = hiddenHook;
    hooks[hookNames.gateProjInput(l)] = hiddenHook;
    hooks[hookNames.oProjInput(l)] = (t) => {
      const att = device.download(t);
      const rows = t.shape[0]!;
      const acc = s.heads[l]!;
      for (let r = 0; r < rows; r++) {
        for (let h = 0; h < numHeads; h++) {
          const o = r * numHeads * headDim + h * headDim;
          let ss = 0;
          for (let d = 0; d < headDim; d++) ss += att[o + d]! * att[o + d]!;
          acc[h]! += Math.sqrt(ss);
        }
      }
    };
    hooks[hookNames.downProjInput(l)] = (t) => addAbsColumns(s.channels[l]!, device.download(t), t.shape[0]!, I);
    hooks[hookNames.layerOutput(l)] = (t) => {
      const out = device.download(t);
      const rows = t.shape[0]!;
      let sum = 0;
      for (let r = 0; r < rows; r++) {
        let dot = 0, na = 0, nb = 0;
        for (let c = r * H; c < (r + 1) * H; c++) {
          const a = layerInput![c]!, b = out[c]!;
          dot += a * b;
          na += a * a;
          nb += b * b;
        }
        const denom = Math.sqrt(na * nb);
        sum += 1 - (denom > 0 ? dot / denom : 1);
      }
      s.layers[l]! += sum;
    };
  }
  hooks[hookNames.finalNormOutput] = hiddenHook;

  for (let i = 0; i < windows.length; i++) {
    const ids = windows[i]!;
    decoder.forwardHidden(ids, 1, ids.length, { hooks });
    tokens += ids.length;
    opts.onProgress?.(i + 1, windows.length);
    await yieldToEventLoop();
  }
  const scale = (a: Float64Array) => a.forEach((v, i) => (a[i] = v / tokens));
  for (let l = 0; l < spec.numLayers; l++) {
    scale(s.heads[l]!);
    scale(s.channels[l]!);
  }
  scale(s.hidden);
  scale(s.layers);
  groupsFromHeads(spec, s);
  return { ...s, tokens };
}

// --- magnitude ---------------------------------------------------------------------------------

/** What magnitude importance reads: float32 weights by name (CheckpointTensors implements it). */
export interface WeightReader {
  has(name: string): boolean;
  readFloat32(name: string): Float32Array;
}

/** Sum of squares per row of a [rows, cols] matrix into acc[rows / unit] (unit rows per slot). */
function addRowSquares(acc: Float64Array, w: Float32Array, rows: number, cols: number, unit = 1): void {
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = r * cols; c < (r + 1) * cols; c++) ss += w[c]! * w[c]!;
    acc[Math.floor(r / unit)]! += ss;
  }
}

/** Sum of squares per column of a [rows, cols] matrix into acc[cols / unit]. */
function addColSquares(acc: Float64Array, w: Float32Array, rows: number, cols: number, unit = 1): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let c = 0; c < cols; c++) acc[Math.floor(c / unit)]! += w[o + c]! * w[o + c]!;
  }
}

function sumSquares(w: Float32Array): number {
  let ss = 0;
  for (let i = 0; i < w.length; i++) ss += w[i]! * w[i]!;
  return ss;
}

/** Which scores a magnitude pass must compute (reading weights is the cost). */
export interface ScoreNeeds {
  attention: boolean;
  mlp: boolean;
  hidden: boolean;
  layers: boolean;
}

export function magnitudeImportance(spec: ModelSpec, src: WeightReader, needs: ScoreNeeds): ImportanceScores {
  const s = emptyScores(spec, 'magnitude');
  const p = modelPrefix((n) => src.has(n));
  const { hiddenSize: H, headDim: hd, numHeads, numKvHeads, intermediateSize: I } = spec;
  const P = numHeads / numKvHeads;
  const read = (name: string) => src.readFloat32(name);
  const opt = (name: string) => (src.has(name) ? src.readFloat32(name) : undefined);

  if (needs.hidden) {
    addColSquares(s.hidden, read(`${p}embed_tokens.weight`), spec.vocabSize, H);
    if (!spec.tieWordEmbeddings && src.has('lm_head.weight')) addColSquares(s.hidden, read('lm_head.weight'), spec.vocabSize, H);
    addRowSquares(s.hidden, read(`${p}norm.weight`), H, 1);
  }
  for (let l = 0; l < spec.numLayers; l++) {
    const n = (suffix: string) => layerTensorName(p, l, suffix);
    if (needs.attention || needs.hidden || needs.layers) {
      const q = read(n('self_attn.q_proj.weight'));
      const k = read(n('self_attn.k_proj.weight'));
      const v = read(n('self_attn.v_proj.weight'));
      const o = read(n('self_attn.o_proj.weight'));
      if (needs.attention) {
        const heads = s.heads[l]!;
        addRowSquares(heads, q, numHeads * hd, H, hd);
        const qb = opt(n('self_attn.q_proj.bias'));
        if (qb) addRowSquares(heads, qb, numHeads * hd, 1, hd);
        addColSquares(heads, o, H, numHeads * hd, hd);
        const groups = s.kvGroups[l]!;
        for (const name of ['k_proj', 'v_proj']) {
          addRowSquares(groups, name === 'k_proj' ? k : v, numKvHeads * hd, H, hd);
          const b = opt(n(`self_attn.${name}.bias`));
          if (b) addRowSquares(groups, b, numKvHeads * hd, 1, hd);
        }
        for (let h = 0; h < numHeads; h++) groups[Math.floor(h / P)]! += heads[h]!;
      }
      if (needs.hidden) {
        for (const w of [q, k, v]) addColSquares(s.hidden, w, w.length / H, H);
        addRowSquares(s.hidden, o, H, numHeads * hd);
        addRowSquares(s.hidden, read(n('input_layernorm.weight')), H, 1);
        const ob = opt(n('self_attn.o_proj.bias'));
        if (ob) addRowSquares(s.hidden, ob, H, 1);
      }
      if (needs.layers) s.layers[l]! += sumSquares(o);
    }
    if (needs.mlp || needs.hidden || needs.layers) {
      const gate = read(n('mlp.gate_proj.weight'));
      const up = read(n('mlp.up_proj.weight'));
      const down = read(n('mlp.down_proj.weight'));
      if (needs.mlp) {
        const ch = s.channels[l]!;
        addRowSquares(ch, gate, I, H);
        addRowSquares(ch, up, I, H);
        addColSquares(ch, down, H, I);
        for (const name of ['gate_proj', 'up_proj']) {
          const b = opt(n(`mlp.${name}.bias`));
          if (b) addRowSquares(ch, b, I, 1);
        }
      }
      if (needs.hidden) {
        addColSquares(s.hidden, gate, I, H);
        addColSquares(s.hidden, up, I, H);
        addRowSquares(s.hidden, down, H, I);
        addRowSquares(s.hidden, read(n('post_attention_layernorm.weight')), H, 1);
        const db = opt(n('mlp.down_proj.bias'));
        if (db) addRowSquares(s.hidden, db, H, 1);
      }
      if (needs.layers) s.layers[l]! += sumSquares(down);
    }
  }
  const sqrtAll = (a: Float64Array) => a.forEach((v, i) => (a[i] = Math.sqrt(v)));
  for (let l = 0; l < spec.numLayers; l++) {
    sqrtAll(s.heads[l]!);
    sqrtAll(s.kvGroups[l]!);
    sqrtAll(s.channels[l]!);
  }
  sqrtAll(s.hidden);
  sqrtAll(s.layers);
  return s;
}

// --- random ------------------------------------------------------------------------------------

/** Seeded uniform scores, drawn in a fixed order (layers, then per layer heads, groups, channels; then hidden). */
export function randomImportance(spec: ModelSpec, seed: number): ImportanceScores {
  const s = emptyScores(spec, 'random');
  const rand = seededRandom(seed);
  const fill = (a: Float64Array) => a.forEach((_, i) => (a[i] = rand()));
  fill(s.layers);
  for (let l = 0; l < spec.numLayers; l++) {
    fill(s.heads[l]!);
    fill(s.kvGroups[l]!);
    fill(s.channels[l]!);
  }
  fill(s.hidden);
  return s;
}
