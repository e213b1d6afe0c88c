// The trainable decoder's forward blocks: the Decoder's (decoder.ts) op for op, so the logits are
// the same, but writing every intermediate into LayerActs for backward instead of reusing buffers.

import type { AttentionShape, Device, Tensor, TrainingOps } from '../../tensor/device.js';
import type { ModelSpec } from '../spec.js';
import type { LayerWeights } from '../weights.js';
import type { LayerActs } from './activations.js';

/** What a block needs besides its weights and activations. */
export interface BlockContext {
  spec: ModelSpec;
  device: Device;
  training: TrainingOps;
  batch: number;
  seq: number;
  rows: number;
  positions: Int32Array;
  /** Rotary tables covering positions [0, seq) (rope models). */
  rope?: { cos: Tensor; sin: Tensor };
  rotaryDim: number;
}

export function attentionShape(ctx: BlockContext, window: number | undefined): AttentionShape {
  const s = ctx.spec;
  return {
    batch: ctx.batch, seqQ: ctx.seq, kvLen: ctx.seq, kvStride: ctx.seq, nHead: s.numHeads, nKvHead: s.numKvHeads,
    headDim: s.headDim, scale: 1 / Math.sqrt(s.headDim), window,
  };
}

/** out = norm(x) with the spec's norm (RMSNorm, or LayerNorm with its bias). */
export function norm(ctx: BlockContext, out: Tensor, x: Tensor, weight: Tensor, bias: Tensor | undefined): void {
  if (ctx.spec.norm === 'rms') ctx.device.rmsNorm(out, x, weight, ctx.spec.normEps);
  else ctx.device.layerNorm(out, x, weight, bias!, ctx.spec.normEps);
}

/**
 * a.mid = x + o_proj(attention(norm(x))), keeping xn1, q/k (raw and rotated), v, att and lse.
 * `proj` is scratch [rows, hidden].
 */
export function attentionBlockForward(ctx: BlockContext, w: LayerWeights, window: number | undefined, x: Tensor, a: LayerActs, proj: Tensor): void {
  const d = ctx.device;
  const s = ctx.spec;
  norm(ctx, a.xn1, x, w.attnNorm, w.attnNormBias);
  if (s.qkNorm) {
    d.matmul(a.qRaw!, a.xn1, w.q, w.qBias);
    d.matmul(a.kRaw!, a.xn1, w.k, w.kBias);
    d.rmsNorm(d.view(a.q, [ctx.rows * s.numHeads, s.headDim]), d.view(a.qRaw!, [ctx.rows * s.numHeads, s.headDim]), w.qNorm!, s.normEps);
    d.rmsNorm(d.view(a.k, [ctx.rows * s.numKvHeads, s.headDim]), d.view(a.kRaw!, [ctx.rows * s.numKvHeads, s.headDim]), w.kNorm!, s.normEps);
  } else {
    d.matmul(a.q, a.xn1, w.q, w.qBias);
    d.matmul(a.k, a.xn1, w.k, w.kBias);
  }
  d.matmul(a.v, a.xn1, w.v, w.vBias);
  if (s.positions === 'rope') {
    d.rope(a.q, ctx.positions, ctx.rope!.cos, ctx.rope!.sin, s.numHeads, s.headDim, ctx.rotaryDim);
    d.rope(a.k, ctx.positions, ctx.rope!.cos, ctx.rope!.sin, s.numKvHeads, s.headDim, ctx.rotaryDim);
  }
  ctx.training.attentionForward(a.att, a.lse, a.q, a.k, a.v, attentionShape(ctx, window));
  d.matmul(proj, a.att, w.o, w.oBias);
  ctx.training.castCopy(a.mid, x);
  d.addInPlace(a.mid, proj);
}

/** The MLP's internals from a.mid: xn2, gate/up and act (everything but down_proj). */
export function mlpBlockInternals(ctx: BlockContext, w: LayerWeights, a: LayerActs): void {
  const d = ctx.device;
  norm(ctx, a.xn2, a.mid, w.mlpNorm, w.mlpNormBias);
  if (ctx.spec.activation === 'silu') {
    d.matmul(a.gate!, a.xn2, w.gate!, w.gateBias);
    d.matmul(a.up, a.xn2, w.up, w.upBias);
    d.siluMul(a.act, a.gate!, a.up);
  } else {
    d.matmul(a.up, a.xn2, w.up, w.upBias);
    d.geluTanh(a.act, a.up);
  }
}

/** out = a.mid + down_proj(a.act): the layer's output residual. */
export function mlpBlockOutput(ctx: BlockContext, w: LayerWeights, a: LayerActs, proj: Tensor, out: Tensor): void {
  ctx.device.matmul(proj, a.act, w.down, w.downBias);
  ctx.training.castCopy(out, a.mid);
  ctx.device.addInPlace(out, proj);
}
