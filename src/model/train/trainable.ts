// TrainableDecoder: the decoder with an explicit backward pass (llm.c style), for distillation.
//
// forward: embed → per layer attentionBlockForward, mlpBlockInternals, mlpBlockOutput
// (layer-forward.ts) → final norm → lm_head, the Decoder's ops in the Decoder's order (the logits
// are Decoder.forward's), keeping every block's intermediates in Activations. backward runs the
// blocks' backward functions (layer-backward.ts) in reverse: lm_head, final norm, layers L−1…0,
// then the embedding (and GPT-2's learned positions). With `recompute`, forward keeps only each
// layer's input and backward reruns a layer's forward into one shared set of buffers just before
// its backward; the same ops on the same inputs, so the gradients are the same bit for bit.

import path from 'node:path';
import { LlmoptError } from '../../errors.js';
import { CheckpointTensors, readJsonFile, resolveModelPath } from '../../io/checkpoint.js';
import type { Device, Tensor, TrainingOps } from '../../tensor/device.js';
import { layerSlidingWindow, parseModelConfig, rotaryDim } from '../config.js';
import { Decoder } from '../decoder.js';
import { ropeTables } from '../rope.js';
import type { ModelSpec } from '../spec.js';
import { isQuantizedConfig, type DecoderWeights, type WeightSource } from '../weights.js';
import { Activations } from './activations.js';
import { attentionBlockBackward, mlpBlockBackward, normBackward } from './layer-backward.js';
import { attentionBlockForward, mlpBlockInternals, mlpBlockOutput, norm, type BlockContext } from './layer-forward.js';
import { exportParams, freeParams, loadParams, type ModelParam } from './params.js';

export interface TrainParam {
  /** Hugging Face tensor name, e.g. "model.layers.0.self_attn.q_proj.weight" (tied lm_head: not a separate param). */
  name: string;
  /**
   * Shape of master/grad/compute: the checkpoint's, except GPT-2's Conv1D weights, which train in
   * nn.Linear layout [out, in] (the transpose; exportWeights writes them back as [in, out]).
   */
  shape: readonly number[];
  /** f32 master value. */
  master: Tensor;
  /** f32 gradient (accumulates across backward calls until zeroGrads). */
  grad: Tensor;
  /** Compute-dtype copy the forward reads (CUDA bf16); undefined where compute = master (CPU). */
  compute?: Tensor;
  /** Excluded from weight decay (norm weights, biases), as the usual AdamW recipes do. */
  noDecay: boolean;
}

export interface TrainableOptions {
  /** Keep only each layer's input and recompute its internals in backward (bounded activation memory). */
  recompute?: boolean;
}

export class TrainableDecoder {
  /** From a checkpoint folder/file (as loadModel accepts; refuses quantized checkpoints), on `device`. */
  static async load(modelPath: string, device: Device, opts: TrainableOptions = {}): Promise<TrainableDecoder> {
    const paths = resolveModelPath(modelPath);
    const spec = parseModelConfig(readJsonFile(paths.configFile), paths.configFile);
    if (isQuantizedConfig(spec)) {
      throw new LlmoptError(`${paths.configFile}: the checkpoint is quantized (quantization_config); only a dense (F32/F16/BF16) model can be trained`);
    }
    const checkpoint = CheckpointTensors.open(paths);
    try {
      return TrainableDecoder.fromWeights(spec, checkpoint, device, opts);
    } finally {
      checkpoint.close();
    }
  }

  /** From a spec and its Hugging Face tensors (a checkpoint, or any WeightSource: tests build tiny models this way). */
  static fromWeights(spec: ModelSpec, src: WeightSource, device: Device, opts: TrainableOptions = {}): TrainableDecoder {
    const training = device.training;
    if (training === undefined) throw new LlmoptError(`the ${device.kind} device cannot train (no training ops)`);
    if (isQuantizedConfig(spec)) throw new LlmoptError(`${path.join(path.dirname(src.files()[0] ?? '.'), 'config.json')}: the checkpoint is quantized; only a dense model can be trained`);
    return new TrainableDecoder(spec, device, training, loadParams(spec, src, device, training), opts.recompute ?? false);
  }

  readonly params: TrainParam[];
  private readonly weights: DecoderWeights;
  private readonly grads: DecoderWeights;
  private readonly modelParams: ModelParam[];
  private readonly rotaryDim: number;
  private acts: Activations | undefined;
  private rope: { cos: Tensor; sin: Tensor; maxPos: number } | undefined;
  private inference: Decoder | undefined;
  /** Whether acts hold a forward that backward may use. */
  private forwardDone = false;

  private constructor(
    readonly spec: ModelSpec,
    readonly device: Device,
    private readonly training: TrainingOps,
    p: { params: ModelParam[]; weights: DecoderWeights; grads: DecoderWeights },
    private readonly recompute: boolean,
  ) {
    this.modelParams = p.params;
    this.params = p.params;
    this.weights = p.weights;
    this.grads = p.grads;
    this.rotaryDim = rotaryDim(spec);
  }

  /** Logits [batch*seq, vocab] for ids [batch, seq] (positions 0…seq−1); keeps what backward needs. Model-owned, valid until the next forward. */
  forward(ids: Int32Array, batch: number, seq: number): Tensor {
    const s = this.spec;
    if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seq) || seq < 1) throw new Error(`forward: batch ${batch} and seq ${seq} must be positive integers`);
    if (ids.length !== batch * seq) throw new Error(`forward: ${ids.length} ids for batch ${batch} × seq ${seq}`);
    for (let r = 0; r < ids.length; r++) {
      if (!(ids[r]! >= 0 && ids[r]! < s.vocabSize)) throw new LlmoptError(`token id ${ids[r]} (row ${r}) is outside the vocabulary [0, ${s.vocabSize})`);
    }
    if (s.positions === 'learned' && seq > s.maxPositionEmbeddings) {
      throw new LlmoptError(`seq ${seq} exceeds the model's ${s.maxPositionEmbeddings} learned positions`);
    }
    const acts = this.activations(batch, seq);
    acts.ids.set(ids);
    const ctx = this.context(acts);
    const d = this.device;
    const w = this.weights;
    d.embedding(acts.inputs[0]!, w.embed, ids);
    if (s.positions === 'learned') d.addEmbedding(acts.inputs[0]!, w.positions!, acts.positions);
    for (let i = 0; i < s.numLayers; i++) {
      const a = acts.layers[this.recompute ? 0 : i]!;
      const lw = w.layers[i]!;
      attentionBlockForward(ctx, lw, layerSlidingWindow(s, i), acts.inputs[i]!, a, acts.proj);
      mlpBlockInternals(ctx, lw, a);
      mlpBlockOutput(ctx, lw, a, acts.proj, acts.inputs[i + 1]!);
    }
    norm(ctx, acts.xf, acts.inputs[s.numLayers]!, w.finalNorm, w.finalNormBias);
    d.matmul(acts.logits, acts.xf, w.lmHead);
    this.forwardDone = true;
    return acts.logits;
  }

  /** Backward of the last forward from dLogits (same shape); every param.grad += its gradient. */
  backward(dLogits: Tensor): void {
    const acts = this.acts;
    if (acts === undefined || !this.forwardDone) throw new Error('backward: no forward to differentiate');
    if (dLogits.shape.length !== 2 || dLogits.shape[0] !== acts.rows || dLogits.shape[1] !== this.spec.vocabSize) {
      throw new Error(`backward: dLogits [${dLogits.shape.join(',')}] for logits [${acts.rows},${this.spec.vocabSize}]`);
    }
    const s = this.spec;
    const t = this.training;
    const w = this.weights;
    const g = this.grads;
    const sc = acts.scratch;
    const ctx = this.context(acts);
    t.matmulGradWeight(g.lmHead, dLogits, acts.xf);
    t.matmulGradInput(sc.dXn, dLogits, w.lmHead, false);
    normBackward(ctx, sc.dResid, sc.dXn, acts.inputs[s.numLayers]!, w.finalNorm, w.finalNormBias, g.finalNorm, g.finalNormBias, false);
    for (let i = s.numLayers - 1; i >= 0; i--) {
      const a = acts.layers[this.recompute ? 0 : i]!;
      const lw = w.layers[i]!;
      const window = layerSlidingWindow(s, i);
      if (this.recompute) {
        attentionBlockForward(ctx, lw, window, acts.inputs[i]!, a, acts.proj);
        mlpBlockInternals(ctx, lw, a);
      }
      mlpBlockBackward(ctx, lw, g.layers[i]!, a, sc);
      attentionBlockBackward(ctx, lw, g.layers[i]!, window, acts.inputs[i]!, a, sc);
    }
    t.embeddingBackward(g.embed, sc.dResid, acts.ids);
    if (s.positions === 'learned') t.embeddingBackward(g.positions!, sc.dResid, acts.positions);
  }

  zeroGrads(): void {
    for (const p of this.params) this.training.fill(p.grad, 0);
  }

  /** An inference Decoder over the current compute weights (shares them; for eval/generate between steps). */
  decoder(): Decoder {
    this.inference ??= new Decoder(this.spec, this.weights, this.device);
    return this.inference;
  }

  /** Current master weights as host float32 by HF name (lm_head omitted when tied), for writing checkpoints. */
  exportWeights(): { name: string; shape: number[]; data: Float32Array }[] {
    return exportParams(this.device, this.modelParams);
  }

  dispose(): void {
    this.acts?.free();
    this.acts = undefined;
    this.forwardDone = false;
    this.inference?.dispose();
    this.inference = undefined;
    if (this.rope !== undefined) {
      this.device.free(this.rope.cos);
      this.device.free(this.rope.sin);
      this.rope = undefined;
    }
    freeParams(this.device, this.params);
    this.params.length = 0;
  }

  private activations(batch: number, seq: number): Activations {
    if (this.acts !== undefined && this.acts.batch === batch && this.acts.seq === seq) return this.acts;
    this.acts?.free();
    this.acts = undefined;
    this.forwardDone = false;
    this.acts = new Activations(this.device, this.training, this.spec, batch, seq, this.recompute);
    return this.acts;
  }

  private context(acts: Activations): BlockContext {
    return {
      spec: this.spec, device: this.device, training: this.training, batch: acts.batch, seq: acts.seq, rows: acts.rows,
      positions: acts.positions, rope: this.spec.positions === 'rope' ? this.ropeFor(acts.seq) : undefined, rotaryDim: this.rotaryDim,
    };
  }

  /** cos/sin tables covering positions [0, needed) (the values per position do not depend on the table's length). */
  private ropeFor(needed: number): { cos: Tensor; sin: Tensor } {
    if (this.rope !== undefined && this.rope.maxPos >= needed) return this.rope;
    if (this.rope !== undefined) {
      this.device.free(this.rope.cos);
      this.device.free(this.rope.sin);
    }
    const t = ropeTables(this.spec, needed);
    this.rope = { cos: this.device.upload(t.cos, [needed, t.half]), sin: this.device.upload(t.sin, [needed, t.half]), maxPos: needed };
    return this.rope;
  }
}
