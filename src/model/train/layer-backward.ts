// The trainable decoder's backward blocks, each the exact reverse of its forward in layer-forward.ts.
// Residual adds pass the gradient through unchanged, so one buffer (scratch.dResid) carries
// ∂L/∂residual down the layers: each block's norm backward adds its branch into it (accumulate).
// Weight gradients go to the views in `g` (the same LayerWeights structure over the grads).

import type { Tensor } from '../../tensor/device.js';
import type { LayerWeights } from '../weights.js';
import type { BackwardScratch, LayerActs } from './activations.js';
import { attentionShape, type BlockContext } from './layer-forward.js';

/** Backward of norm(x) with dy = ∂L/∂out: dx (= or +=), the weight's (and LayerNorm bias's) gradients +=. */
export function normBackward(
  ctx: BlockContext, dx: Tensor, dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | undefined,
  gWeight: Tensor, gBias: Tensor | undefined, accumulate: boolean,
): void {
  const eps = ctx.spec.normEps;
  if (ctx.spec.norm === 'rms') ctx.training.rmsNormBackward(dx, gWeight, dy, x, weight, eps, accumulate);
  else ctx.training.layerNormBackward(dx, gWeight, gBias!, dy, x, weight, bias!, eps, accumulate);
}

/** y = x·Wᵀ + b: gW += dyᵀ·x, gb += Σ dy, dx (= or +=) dy·W. */
function linearBackward(ctx: BlockContext, dx: Tensor, dy: Tensor, x: Tensor, w: Tensor, gW: Tensor, gB: Tensor | undefined, accumulate: boolean): void {
  ctx.training.matmulGradWeight(gW, dy, x);
  if (gB !== undefined) ctx.training.biasGrad(gB, dy);
  ctx.training.matmulGradInput(dx, dy, w, accumulate);
}

/** From s.dResid = ∂L/∂(layer output) to ∂L/∂a.mid (in place). */
export function mlpBlockBackward(ctx: BlockContext, w: LayerWeights, g: LayerWeights, a: LayerActs, s: BackwardScratch): void {
  const t = ctx.training;
  linearBackward(ctx, s.dAct, s.dResid, a.act, w.down, g.down, g.downBias, false);
  if (ctx.spec.activation === 'silu') {
    t.siluMulBackward(s.dGate!, s.dUp, s.dAct, a.gate!, a.up);
    linearBackward(ctx, s.dXn, s.dGate!, a.xn2, w.gate!, g.gate!, g.gateBias, false);
    linearBackward(ctx, s.dXn, s.dUp, a.xn2, w.up, g.up, g.upBias, true);
  } else {
    t.geluTanhBackward(s.dUp, s.dAct, a.up);
    linearBackward(ctx, s.dXn, s.dUp, a.xn2, w.up, g.up, g.upBias, false);
  }
  normBackward(ctx, s.dResid, s.dXn, a.mid, w.mlpNorm, w.mlpNormBias, g.mlpNorm, g.mlpNormBias, true);
}

/** From s.dResid = ∂L/∂a.mid to ∂L/∂x, the layer's input (in place). */
export function attentionBlockBackward(
  ctx: BlockContext, w: LayerWeights, g: LayerWeights, window: number | undefined, x: Tensor, a: LayerActs, s: BackwardScratch,
): void {
  const d = ctx.device;
  const t = ctx.training;
  const sp = ctx.spec;
  linearBackward(ctx, s.dAtt, s.dResid, a.att, w.o, g.o, g.oBias, false);
  t.attentionBackward(s.dq, s.dk, s.dv, s.dAtt, a.att, a.lse, a.q, a.k, a.v, attentionShape(ctx, window));
  if (sp.positions === 'rope') {
    t.ropeBackward(s.dq, ctx.positions, ctx.rope!.cos, ctx.rope!.sin, sp.numHeads, sp.headDim, ctx.rotaryDim);
    t.ropeBackward(s.dk, ctx.positions, ctx.rope!.cos, ctx.rope!.sin, sp.numKvHeads, sp.headDim, ctx.rotaryDim);
  }
  let dq = s.dq;
  let dk = s.dk;
  if (sp.qkNorm) {
    const heads = (x: Tensor, n: number) => d.view(x, [ctx.rows * n, sp.headDim]);
    t.rmsNormBackward(heads(s.dqRaw!, sp.numHeads), g.qNorm!, heads(s.dq, sp.numHeads), heads(a.qRaw!, sp.numHeads), w.qNorm!, sp.normEps, false);
    t.rmsNormBackward(heads(s.dkRaw!, sp.numKvHeads), g.kNorm!, heads(s.dk, sp.numKvHeads), heads(a.kRaw!, sp.numKvHeads), w.kNorm!, sp.normEps, false);
    dq = s.dqRaw!;
    dk = s.dkRaw!;
  }
  linearBackward(ctx, s.dXn, dq, a.xn1, w.q, g.q, g.qBias, false);
  linearBackward(ctx, s.dXn, dk, a.xn1, w.k, g.k, g.kBias, true);
  linearBackward(ctx, s.dXn, s.dv, a.xn1, w.v, g.v, g.vBias, true);
  normBackward(ctx, s.dResid, s.dXn, x, w.attnNorm, w.attnNormBias, g.attnNorm, g.attnNormBias, true);
}
