// TrainableDecoder: the decoder with an explicit backward pass (llm.c style), for distillation.

import type { Device, Tensor } from '../../tensor/device.js';
import type { Decoder } from '../decoder.js';
import type { ModelSpec } from '../spec.js';

export interface TrainParam {
  /** Hugging Face tensor name, e.g. "model.layers.0.self_attn.q_proj.weight" (tied lm_head: not a separate param). */
  name: string;
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
  static load(_modelPath: string, _device: Device, _opts?: TrainableOptions): Promise<TrainableDecoder> {
    throw new Error('TrainableDecoder.load: not implemented yet');
  }

  private constructor(
    readonly spec: ModelSpec,
    readonly device: Device,
    readonly params: TrainParam[],
  ) {}

  /** Logits [batch*seq, vocab] for ids [batch, seq] (positions 0…seq−1); keeps what backward needs. Model-owned, valid until the next forward. */
  forward(_ids: Int32Array, _batch: number, _seq: number): Tensor {
    throw new Error('TrainableDecoder.forward: not implemented yet');
  }

  /** Backward of the last forward from dLogits (same shape); every param.grad += its gradient. */
  backward(_dLogits: Tensor): void {
    throw new Error('TrainableDecoder.backward: not implemented yet');
  }

  zeroGrads(): void {
    throw new Error('TrainableDecoder.zeroGrads: not implemented yet');
  }

  /** An inference Decoder over the current compute weights (shares them; for eval/generate between steps). */
  decoder(): Decoder {
    throw new Error('TrainableDecoder.decoder: not implemented yet');
  }

  /** Current master weights as host float32 by HF name (lm_head omitted when tied), for writing checkpoints. */
  exportWeights(): { name: string; shape: number[]; data: Float32Array }[] {
    throw new Error('TrainableDecoder.exportWeights: not implemented yet');
  }

  dispose(): void {
    throw new Error('TrainableDecoder.dispose: not implemented yet');
  }
}
