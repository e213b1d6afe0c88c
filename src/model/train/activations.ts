// What the trainable decoder's forward keeps for backward, and backward's own scratch, for one
// (batch, seq). Activations are in the device's compute dtype; the attention log-sum-exps are f32.

import type { Device, Tensor, TrainingOps } from '../../tensor/device.js';
import type { ModelSpec } from '../spec.js';

/** Allocates [rows, cols] tensors and remembers them for free(). */
class Allocator {
  readonly all: Tensor[] = [];
  constructor(private readonly device: Device, private readonly training: TrainingOps, private readonly rows: number) {}
  t(cols: number): Tensor {
    const t = this.device.empty([this.rows, cols]);
    this.all.push(t);
    return t;
  }
  f32(cols: number): Tensor {
    const t = this.training.emptyF32([this.rows, cols]);
    this.all.push(t);
    return t;
  }
}

/** One decoder layer's internals (its input is Activations.inputs[i]). */
export interface LayerActs {
  /** attention norm output, input of q/k/v. */
  xn1: Tensor;
  /** q/k projections before the per-head norm (Qwen3). */
  qRaw?: Tensor;
  kRaw?: Tensor;
  /** q, k after norm and rotary; v. */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** attention output (input of o_proj) and its log-sum-exps [rows, nHead] (f32). */
  att: Tensor;
  lse: Tensor;
  /** residual after attention = input of the MLP norm. */
  mid: Tensor;
  /** MLP norm output, input of gate/up (GPT-2: c_fc). */
  xn2: Tensor;
  gate?: Tensor;
  /** up_proj output (GPT-2: c_fc output, the GELU input). */
  up: Tensor;
  /** silu(gate)·up (GPT-2: gelu(up)), input of down_proj. */
  act: Tensor;
}

function layerActs(a: Allocator, spec: ModelSpec): LayerActs {
  const H = spec.hiddenSize, I = spec.intermediateSize;
  const qDim = spec.numHeads * spec.headDim, kvDim = spec.numKvHeads * spec.headDim;
  return {
    xn1: a.t(H),
    qRaw: spec.qkNorm ? a.t(qDim) : undefined,
    kRaw: spec.qkNorm ? a.t(kvDim) : undefined,
    q: a.t(qDim),
    k: a.t(kvDim),
    v: a.t(kvDim),
    att: a.t(qDim),
    lse: a.f32(spec.numHeads),
    mid: a.t(H),
    xn2: a.t(H),
    gate: spec.activation === 'silu' ? a.t(I) : undefined,
    up: a.t(I),
    act: a.t(I),
  };
}

/** Gradients of activations, shared by every layer's backward. */
export interface BackwardScratch {
  /** ∂L/∂ the residual stream at the point backward has reached. */
  dResid: Tensor;
  /** ∂L/∂ a norm output (final, MLP or attention norm). */
  dXn: Tensor;
  dAtt: Tensor;
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** ∂L/∂ q/k before the per-head norm (Qwen3). */
  dqRaw?: Tensor;
  dkRaw?: Tensor;
  dAct: Tensor;
  dGate?: Tensor;
  dUp: Tensor;
}

export class Activations {
  readonly rows: number;
  /** Residual stream entering layer i; inputs[numLayers] is the final norm's input. */
  readonly inputs: Tensor[];
  /** Per layer, or one set reused by every layer when recomputing. */
  readonly layers: LayerActs[];
  /** Final norm output, input of lm_head. */
  readonly xf: Tensor;
  /** o_proj / down_proj output before the residual add. */
  readonly proj: Tensor;
  readonly logits: Tensor;
  readonly scratch: BackwardScratch;
  /** Position of every row (0…seq−1 per sequence). */
  readonly positions: Int32Array;
  /** The ids of the forward that filled these (backward's embedding gradient). */
  readonly ids: Int32Array;
  private readonly alloc: Allocator;

  constructor(private readonly device: Device, training: TrainingOps, spec: ModelSpec, readonly batch: number, readonly seq: number, recompute: boolean) {
    const rows = batch * seq;
    this.rows = rows;
    const a = new Allocator(device, training, rows);
    this.alloc = a;
    const H = spec.hiddenSize, I = spec.intermediateSize;
    const qDim = spec.numHeads * spec.headDim, kvDim = spec.numKvHeads * spec.headDim;
    this.inputs = Array.from({ length: spec.numLayers + 1 }, () => a.t(H));
    this.layers = Array.from({ length: recompute ? 1 : spec.numLayers }, () => layerActs(a, spec));
    this.xf = a.t(H);
    this.proj = a.t(H);
    this.logits = a.t(spec.vocabSize);
    this.scratch = {
      dResid: a.t(H), dXn: a.t(H), dAtt: a.t(qDim), dq: a.t(qDim), dk: a.t(kvDim), dv: a.t(kvDim),
      dqRaw: spec.qkNorm ? a.t(qDim) : undefined, dkRaw: spec.qkNorm ? a.t(kvDim) : undefined,
      dAct: a.t(I), dGate: spec.activation === 'silu' ? a.t(I) : undefined, dUp: a.t(I),
    };
    this.positions = new Int32Array(rows);
    for (let b = 0; b < batch; b++) for (let t = 0; t < seq; t++) this.positions[b * seq + t] = t;
    this.ids = new Int32Array(rows);
  }

  free(): void {
    for (const t of this.alloc.all) this.device.free(t);
  }
}
