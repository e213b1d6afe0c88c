// The trainable parameters of a ModelSpec: which Hugging Face tensors there are, how each is laid
// out for the engine, and the two DecoderWeights-shaped views over them that forward and backward
// use (the compute weights, and the gradients in the same places).
//
// Layout: Linear weights [out, in] (nn.Linear), as the Decoder reads them. GPT-2's Conv1D weights are
// stored [in, out] in the checkpoint, so their masters are the transposes (exportWeights transposes
// back), and its fused c_attn stays one parameter [3H, H] whose row blocks are q, k and v (weights
// and gradients alike are views of it). A tied lm_head is the embedding parameter, used twice.

import { LlmoptError } from '../../errors.js';
import type { Device, Tensor, TrainingOps } from '../../tensor/device.js';
import type { ModelSpec } from '../spec.js';
import type { DecoderWeights, LayerWeights, WeightSource } from '../weights.js';
import type { TrainParam } from './trainable.js';

/** One parameter's description. */
interface ParamDef {
  name: string;
  /** Engine layout (the master's shape). */
  shape: number[];
  /** Conv1D: the checkpoint holds the transpose, [shape[1], shape[0]]. */
  transposed: boolean;
}

/** A parameter with its HF layout, for export. */
export interface ModelParam extends TrainParam {
  transposed: boolean;
}

export interface ModelParams {
  params: ModelParam[];
  /** What forward reads: views of each parameter's compute tensor (the master where there is none). */
  weights: DecoderWeights;
  /** The same structure over the gradients (a tied lmHead is embed's gradient). */
  grads: DecoderWeights;
}

/** Reads every parameter of `spec` from `src` onto `device` (f32 masters and gradients, compute copies where the device dtype is not f32). */
export function loadParams(spec: ModelSpec, src: WeightSource, device: Device, training: TrainingOps): ModelParams {
  const defs = spec.architecture === 'gpt2' ? gpt2Defs(spec, src) : llamaDefs(spec, src);
  const where = src.files().length === 1 ? src.files()[0]! : `the checkpoint (${src.files().length} shards)`;
  const params: ModelParam[] = [];
  try {
    for (const d of defs) {
      const hfShape = d.transposed ? [d.shape[1]!, d.shape[0]!] : d.shape;
      if (!src.has(d.name)) throw new LlmoptError(`${where}: missing tensor "${d.name}" (the config needs it)`);
      const actual = src.info(d.name).shape;
      if (actual.length !== hfShape.length || actual.some((n, i) => n !== hfShape[i])) {
        throw new LlmoptError(`${where}: tensor "${d.name}" has shape [${actual.join(', ')}], expected [${hfShape.join(', ')}]`);
      }
      let data = src.readFloat32(d.name);
      if (d.transposed) data = transpose(data, hfShape[0]!, hfShape[1]!);
      const master = training.uploadF32(data, d.shape);
      const param: ModelParam = {
        name: d.name, shape: d.shape, master, grad: training.emptyF32(d.shape), noDecay: d.shape.length === 1, transposed: d.transposed,
      };
      params.push(param);
      if (device.dtype !== 'f32') {
        param.compute = device.empty(d.shape);
        training.castCopy(param.compute, master);
      }
    }
  } catch (e) {
    freeParams(device, params);
    throw e;
  }
  const byName = new Map(params.map((p) => [p.name, p]));
  const pick = (which: 'weights' | 'grads') => (name: string): Tensor => {
    const p = byName.get(name)!;
    return which === 'grads' ? p.grad : (p.compute ?? p.master);
  };
  const build = spec.architecture === 'gpt2' ? gpt2Weights : llamaWeights;
  return { params, weights: build(spec, src, pick('weights'), device), grads: build(spec, src, pick('grads'), device) };
}

export function freeParams(device: Device, params: readonly TrainParam[]): void {
  for (const p of params) {
    device.free(p.master);
    device.free(p.grad);
    if (p.compute !== undefined) device.free(p.compute);
  }
}

/** HF name → host float32 in the checkpoint's layout. */
export function exportParams(device: Device, params: readonly ModelParam[]): { name: string; shape: number[]; data: Float32Array }[] {
  return params.map((p) => {
    const data = device.download(p.master);
    if (!p.transposed) return { name: p.name, shape: [...p.shape], data };
    return { name: p.name, shape: [p.shape[1]!, p.shape[0]!], data: transpose(data, p.shape[0]!, p.shape[1]!) };
  });
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

// --- Llama family (llama, mistral, qwen2, qwen3) ----------------------------------------------------

function llamaPrefix(src: WeightSource): string {
  // Base-model checkpoints (LlamaModel rather than LlamaForCausalLM) have no "model." prefix.
  return !src.has('model.embed_tokens.weight') && src.has('embed_tokens.weight') ? '' : 'model.';
}

function llamaDefs(spec: ModelSpec, src: WeightSource): ParamDef[] {
  const p = llamaPrefix(src);
  const H = spec.hiddenSize, I = spec.intermediateSize;
  const qDim = spec.numHeads * spec.headDim, kvDim = spec.numKvHeads * spec.headDim;
  const defs: ParamDef[] = [];
  const add = (name: string, ...shape: number[]) => defs.push({ name, shape, transposed: false });
  add(`${p}embed_tokens.weight`, spec.vocabSize, H);
  for (let i = 0; i < spec.numLayers; i++) {
    const l = `${p}layers.${i}.`;
    add(`${l}input_layernorm.weight`, H);
    const linear = (name: string, outF: number, inF: number, bias: boolean) => {
      add(`${l}${name}.weight`, outF, inF);
      if (bias) add(`${l}${name}.bias`, outF);
    };
    linear('self_attn.q_proj', qDim, H, spec.qkvBias);
    linear('self_attn.k_proj', kvDim, H, spec.qkvBias);
    linear('self_attn.v_proj', kvDim, H, spec.qkvBias);
    linear('self_attn.o_proj', H, qDim, spec.oBias);
    if (spec.qkNorm) {
      add(`${l}self_attn.q_norm.weight`, spec.headDim);
      add(`${l}self_attn.k_norm.weight`, spec.headDim);
    }
    add(`${l}post_attention_layernorm.weight`, H);
    linear('mlp.gate_proj', I, H, spec.mlpBias);
    linear('mlp.up_proj', I, H, spec.mlpBias);
    linear('mlp.down_proj', H, I, spec.mlpBias);
  }
  add(`${p}norm.weight`, H);
  if (!spec.tieWordEmbeddings) add('lm_head.weight', spec.vocabSize, H);
  return defs;
}

function llamaWeights(spec: ModelSpec, src: WeightSource, t: (name: string) => Tensor, _device: Device): DecoderWeights {
  const p = llamaPrefix(src);
  const opt = (name: string, on: boolean) => (on ? t(name) : undefined);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const l = `${p}layers.${i}.`;
    layers.push({
      attnNorm: t(`${l}input_layernorm.weight`),
      q: t(`${l}self_attn.q_proj.weight`),
      k: t(`${l}self_attn.k_proj.weight`),
      v: t(`${l}self_attn.v_proj.weight`),
      qBias: opt(`${l}self_attn.q_proj.bias`, spec.qkvBias),
      kBias: opt(`${l}self_attn.k_proj.bias`, spec.qkvBias),
      vBias: opt(`${l}self_attn.v_proj.bias`, spec.qkvBias),
      o: t(`${l}self_attn.o_proj.weight`),
      oBias: opt(`${l}self_attn.o_proj.bias`, spec.oBias),
      qNorm: opt(`${l}self_attn.q_norm.weight`, spec.qkNorm),
      kNorm: opt(`${l}self_attn.k_norm.weight`, spec.qkNorm),
      mlpNorm: t(`${l}post_attention_layernorm.weight`),
      gate: t(`${l}mlp.gate_proj.weight`),
      gateBias: opt(`${l}mlp.gate_proj.bias`, spec.mlpBias),
      up: t(`${l}mlp.up_proj.weight`),
      upBias: opt(`${l}mlp.up_proj.bias`, spec.mlpBias),
      down: t(`${l}mlp.down_proj.weight`),
      downBias: opt(`${l}mlp.down_proj.bias`, spec.mlpBias),
    });
  }
  const embed = t(`${p}embed_tokens.weight`);
  return { embed, layers, finalNorm: t(`${p}norm.weight`), lmHead: spec.tieWordEmbeddings ? embed : t('lm_head.weight') };
}

// --- GPT-2 -----------------------------------------------------------------------------------------

function gpt2Prefix(src: WeightSource): string {
  // GPT2LMHeadModel.save_pretrained writes "transformer.*"; the original hub gpt2 files have no prefix.
  return !src.has('transformer.wte.weight') && src.has('wte.weight') ? '' : 'transformer.';
}

function gpt2Defs(spec: ModelSpec, src: WeightSource): ParamDef[] {
  const p = gpt2Prefix(src);
  const H = spec.hiddenSize, I = spec.intermediateSize;
  const defs: ParamDef[] = [];
  const add = (name: string, shape: number[], transposed = false) => defs.push({ name, shape, transposed });
  add(`${p}wte.weight`, [spec.vocabSize, H]);
  add(`${p}wpe.weight`, [spec.maxPositionEmbeddings, H]);
  for (let i = 0; i < spec.numLayers; i++) {
    const l = `${p}h.${i}.`;
    add(`${l}ln_1.weight`, [H]);
    add(`${l}ln_1.bias`, [H]);
    add(`${l}attn.c_attn.weight`, [3 * H, H], true);
    add(`${l}attn.c_attn.bias`, [3 * H]);
    add(`${l}attn.c_proj.weight`, [H, H], true);
    add(`${l}attn.c_proj.bias`, [H]);
    add(`${l}ln_2.weight`, [H]);
    add(`${l}ln_2.bias`, [H]);
    add(`${l}mlp.c_fc.weight`, [I, H], true);
    add(`${l}mlp.c_fc.bias`, [I]);
    add(`${l}mlp.c_proj.weight`, [H, I], true);
    add(`${l}mlp.c_proj.bias`, [H]);
  }
  add(`${p}ln_f.weight`, [H]);
  add(`${p}ln_f.bias`, [H]);
  if (!spec.tieWordEmbeddings) add('lm_head.weight', [spec.vocabSize, H]);
  return defs;
}

function gpt2Weights(spec: ModelSpec, src: WeightSource, t: (name: string) => Tensor, device: Device): DecoderWeights {
  const p = gpt2Prefix(src);
  const H = spec.hiddenSize;
  // Row block j of the fused c_attn weight [3H, H] / bias [3H]: q, k, v.
  const block = (w: Tensor, j: number) => device.rows(w, j * H, H);
  const biasBlock = (b: Tensor, j: number) => device.view(device.rows(device.view(b, [3, H]), j, 1), [H]);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const l = `${p}h.${i}.`;
    const qkv = t(`${l}attn.c_attn.weight`);
    const qkvBias = t(`${l}attn.c_attn.bias`);
    layers.push({
      attnNorm: t(`${l}ln_1.weight`),
      attnNormBias: t(`${l}ln_1.bias`),
      q: block(qkv, 0),
      k: block(qkv, 1),
      v: block(qkv, 2),
      qBias: biasBlock(qkvBias, 0),
      kBias: biasBlock(qkvBias, 1),
      vBias: biasBlock(qkvBias, 2),
      o: t(`${l}attn.c_proj.weight`),
      oBias: t(`${l}attn.c_proj.bias`),
      mlpNorm: t(`${l}ln_2.weight`),
      mlpNormBias: t(`${l}ln_2.bias`),
      up: t(`${l}mlp.c_fc.weight`),
      upBias: t(`${l}mlp.c_fc.bias`),
      down: t(`${l}mlp.c_proj.weight`),
      downBias: t(`${l}mlp.c_proj.bias`),
    });
  }
  const embed = t(`${p}wte.weight`);
  return {
    embed, positions: t(`${p}wpe.weight`), layers, finalNorm: t(`${p}ln_f.weight`), finalNormBias: t(`${p}ln_f.bias`),
    lmHead: spec.tieWordEmbeddings ? embed : t('lm_head.weight'),
  };
}
