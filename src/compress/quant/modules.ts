// The Linear layers quantize touches in a Llama-family decoder layer, where their inputs are observed,
// and the checks every plan must pass before any work starts (ignore list, fused groups, group size).

import { LlmoptError } from '../../errors.js';
import { matchesTarget } from '../../model/compressed-tensors.js';
import { hookNames } from '../../model/decoder.js';
import type { ModelSpec } from '../../model/spec.js';
import type { ResolvedScheme } from './scheme.js';

/** Where a Linear's input is observed; q/k/v and gate/up share theirs (one norm output each). */
export type InputPoint = 'qkv' | 'o' | 'gateUp' | 'down';
export const INPUT_POINTS: readonly InputPoint[] = ['qkv', 'o', 'gateUp', 'down'];

export type LinearKey = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

export interface LinearDef {
  key: LinearKey;
  /** Name inside the layer, e.g. "self_attn.q_proj". */
  name: string;
  input: InputPoint;
}

export const LINEARS: readonly LinearDef[] = [
  { key: 'q', name: 'self_attn.q_proj', input: 'qkv' },
  { key: 'k', name: 'self_attn.k_proj', input: 'qkv' },
  { key: 'v', name: 'self_attn.v_proj', input: 'qkv' },
  { key: 'o', name: 'self_attn.o_proj', input: 'o' },
  { key: 'gate', name: 'mlp.gate_proj', input: 'gateUp' },
  { key: 'up', name: 'mlp.up_proj', input: 'gateUp' },
  { key: 'down', name: 'mlp.down_proj', input: 'down' },
];

export function inputHook(point: InputPoint, layer: number): string {
  switch (point) {
    case 'qkv':
      return hookNames.qProjInput(layer);
    case 'o':
      return hookNames.oProjInput(layer);
    case 'gateUp':
      return hookNames.gateProjInput(layer);
    case 'down':
      return hookNames.downProjInput(layer);
  }
}

/** [out, in] of a Linear. */
export function linearShape(spec: ModelSpec, key: LinearKey): [number, number] {
  const H = spec.hiddenSize;
  const qDim = spec.numHeads * spec.headDim;
  const kvDim = spec.numKvHeads * spec.headDim;
  const I = spec.intermediateSize;
  switch (key) {
    case 'q':
      return [qDim, H];
    case 'k':
    case 'v':
      return [kvDim, H];
    case 'o':
      return [H, qDim];
    case 'gate':
    case 'up':
      return [I, H];
    case 'down':
      return [H, I];
  }
}

export interface LayerPlan {
  /** "model.layers.N." */
  prefix: string;
  /** Linears that are quantized (the rest stay as they are). */
  quantized: Set<LinearKey>;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** Which Linears each layer quantizes; LlmoptError for an ignore list that splits a fused group or a group size that does not divide. */
export function planLayers(spec: ModelSpec, modelPrefix: string, scheme: ResolvedScheme, ignore: readonly string[]): LayerPlan[] {
  const plans: LayerPlan[] = [];
  const groupSize = scheme.weights.strategy === 'group' ? scheme.weights.group_size! : undefined;
  const inDims = [...new Set(LINEARS.map((l) => linearShape(spec, l.key)[1]))];
  for (let i = 0; i < spec.numLayers; i++) {
    const prefix = `${modelPrefix}layers.${i}.`;
    const quantized = new Set<LinearKey>();
    for (const l of LINEARS) {
      const name = `${prefix}${l.name}`;
      if (!ignore.some((t) => matchesTarget(name, t, ''))) quantized.add(l.key);
    }
    for (const fused of [['q', 'k', 'v'], ['gate', 'up']] as LinearKey[][]) {
      const inCount = fused.filter((k) => quantized.has(k)).length;
      if (inCount !== 0 && inCount !== fused.length) {
        const names = fused.map((k) => `${prefix}${LINEARS.find((l) => l.key === k)!.name}`);
        throw new LlmoptError(`ignore list splits the fused group ${names.join(', ')}: quantize all of them or ignore all of them (vLLM fuses them)`);
      }
    }
    if (groupSize !== undefined) {
      for (const l of LINEARS) {
        if (!quantized.has(l.key)) continue;
        const [outF, inF] = linearShape(spec, l.key);
        if (inF % groupSize !== 0) {
          const g = inDims.reduce(gcd);
          throw new LlmoptError(
            `--group-size ${groupSize} does not divide the input dim ${inF} of ${prefix}${l.name}.weight [${outF}, ${inF}]; use --group-size channel` +
              (g > 1 ? ` or a divisor of ${g} (every Linear's input dim is a multiple of ${g})` : ''),
          );
        }
      }
    }
    plans.push({ prefix, quantized });
  }
  return plans;
}
