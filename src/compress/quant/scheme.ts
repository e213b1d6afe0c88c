// Quantization schemes, named and defined as compressed-tensors' presets (quant_scheme.py) so
// llm-compressor users recognise them, plus the options that vary them (group size, asymmetric
// weights, static activations, observer, act-order, FP8 KV cache).

import { LlmoptError, UsageError } from '../../errors.js';
import type { QuantArgsJson } from '../../model/compressed-tensors.js';

export const SCHEME_NAMES = ['FP8', 'FP8_DYNAMIC', 'W8A8', 'W8A16', 'W4A16'] as const;
export type SchemeName = (typeof SCHEME_NAMES)[number];

export type ObserverName = 'minmax' | 'mse';
export type Method = 'rtn' | 'gptq';
export type CtFormat = 'float-quantized' | 'int-quantized' | 'pack-quantized';

export interface SchemeOptions {
  scheme: string;
  /** Weight-only schemes: group size, or 'channel' for one scale per output row. Default 128. */
  groupSize?: number | 'channel';
  /** Weight-only schemes: asymmetric weights with zero points. */
  asym?: boolean;
  /** W8A8: static per-tensor input scales from calibration instead of dynamic per-token. */
  staticActivations?: boolean;
  observer?: ObserverName;
  /** GPTQ act-order ("weight": columns in descending Hessian-diagonal order; the format is unchanged). */
  actorder?: boolean;
  kvCache?: 'fp8';
}

export interface ResolvedScheme {
  name: SchemeName;
  format: CtFormat;
  weights: QuantArgsJson;
  inputActivations?: QuantArgsJson;
  kvCacheScheme?: QuantArgsJson;
}

export const DEFAULT_GROUP_SIZE = 128;

function args(partial: Partial<QuantArgsJson> & Pick<QuantArgsJson, 'num_bits' | 'type' | 'strategy'>): QuantArgsJson {
  return {
    num_bits: partial.num_bits,
    type: partial.type,
    symmetric: partial.symmetric ?? true,
    group_size: partial.group_size ?? null,
    strategy: partial.strategy,
    block_structure: null,
    dynamic: partial.dynamic ?? false,
    actorder: partial.actorder ?? null,
    observer: partial.observer ?? null,
    observer_kwargs: {},
  };
}

export function isSchemeName(s: string): s is SchemeName {
  return (SCHEME_NAMES as readonly string[]).includes(s);
}

/** True for schemes that quantize Linear inputs (SmoothQuant and static scales apply). */
export function quantizesActivations(name: SchemeName): boolean {
  return name === 'FP8' || name === 'FP8_DYNAMIC' || name === 'W8A8';
}

/** Validates the option combination and builds the compressed-tensors arguments. */
export function resolveScheme(opts: SchemeOptions): ResolvedScheme {
  const name = opts.scheme.toUpperCase();
  if (!isSchemeName(name)) {
    throw new LlmoptError(`unknown scheme ${JSON.stringify(opts.scheme)}; choose one of ${SCHEME_NAMES.join(', ')}`);
  }
  const weightOnly = name === 'W8A16' || name === 'W4A16';
  if (!weightOnly) {
    if (opts.groupSize !== undefined) throw new UsageError(`--group-size applies to W4A16 and W8A16; ${name} uses the preset's ${name === 'FP8' ? 'per-tensor' : 'per-channel'} weight scales`);
    if (opts.asym) throw new UsageError(`--asym applies to W4A16 and W8A16; ${name} weights are symmetric`);
  }
  if (opts.staticActivations && name !== 'W8A8') {
    throw new UsageError(`--static-activations applies to W8A8${name === 'FP8' ? ' (FP8 is already static; FP8_DYNAMIC is its dynamic form)' : ''}`);
  }
  const observer = opts.observer ?? 'minmax';
  const actorder = opts.actorder ? 'weight' : null;

  let resolved: ResolvedScheme;
  switch (name) {
    case 'FP8':
      resolved = {
        name,
        format: 'float-quantized',
        weights: args({ num_bits: 8, type: 'float', strategy: 'tensor', observer, actorder }),
        inputActivations: args({ num_bits: 8, type: 'float', strategy: 'tensor', observer: 'static_minmax' }),
      };
      break;
    case 'FP8_DYNAMIC':
      resolved = {
        name,
        format: 'float-quantized',
        weights: args({ num_bits: 8, type: 'float', strategy: 'channel', observer, actorder }),
        inputActivations: args({ num_bits: 8, type: 'float', strategy: 'token', dynamic: true }),
      };
      break;
    case 'W8A8':
      resolved = {
        name,
        format: 'int-quantized',
        weights: args({ num_bits: 8, type: 'int', strategy: 'channel', observer, actorder }),
        inputActivations: opts.staticActivations
          ? args({ num_bits: 8, type: 'int', strategy: 'tensor', observer: 'static_minmax' })
          : args({ num_bits: 8, type: 'int', strategy: 'token', dynamic: true }),
      };
      break;
    case 'W8A16':
    case 'W4A16': {
      const group = opts.groupSize ?? DEFAULT_GROUP_SIZE;
      if (group !== 'channel' && !(Number.isInteger(group) && group > 0)) throw new UsageError(`--group-size must be a positive integer or "channel", got ${group}`);
      resolved = {
        name,
        format: 'pack-quantized',
        weights: args({
          num_bits: name === 'W4A16' ? 4 : 8,
          type: 'int',
          strategy: group === 'channel' ? 'channel' : 'group',
          group_size: group === 'channel' ? null : group,
          symmetric: !opts.asym,
          observer,
          actorder,
        }),
      };
      break;
    }
  }
  if (opts.kvCache === 'fp8') resolved.kvCacheScheme = args({ num_bits: 8, type: 'float', strategy: 'tensor', observer: 'static_minmax' });
  return resolved;
}

/** One line describing the scheme for humans: "W4A16: int4 weights, group 128, symmetric; activations unquantized". */
export function describeScheme(s: ResolvedScheme): string {
  const w = s.weights;
  const wText = `${w.type === 'float' ? 'fp8' : `int${w.num_bits}`} weights, ${w.strategy === 'group' ? `group ${w.group_size}` : `per-${w.strategy}`}, ${w.symmetric ? 'symmetric' : 'asymmetric'}`;
  const a = s.inputActivations;
  const aText = a === undefined ? 'activations unquantized' : `${a.type === 'float' ? 'fp8' : 'int8'} activations, ${a.dynamic ? 'dynamic per-token' : 'static per-tensor'}`;
  return `${s.name}: ${wText}; ${aText}${s.kvCacheScheme ? '; fp8 KV cache' : ''}`;
}
