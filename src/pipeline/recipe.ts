// Recipes: the options of a command in a YAML file (`--recipe FILE.yaml`), in the spirit of
// llm-compressor's recipes. Flags given on the command line override the recipe's values.
//
//   quantize:
//     scheme: W4A16            # FP8, FP8_DYNAMIC, W8A8, W8A16, W4A16
//     method: gptq             # rtn | gptq
//     observer: minmax         # minmax | mse
//     group_size: 128          # or channel (W4A16, W8A16)
//     asym: false              # W4A16, W8A16
//     static_activations: false  # W8A8
//     smoothquant: 0.5         # strength α (true = 0.5); W8A8, FP8, FP8_DYNAMIC
//     kv_cache: fp8
//     actorder: false          # GPTQ
//     dampening: 0.01          # GPTQ
//     ignore: [lm_head]
//     calibration: { source: moby-dick, samples: 512, seq_len: 2048, seed: 0 }
//
// Every key is checked: an unknown key or a value of the wrong type is an error naming the file and key.

import fs from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { LlmoptError } from '../errors.js';

export interface QuantizeRecipe {
  scheme?: string;
  method?: string;
  observer?: string;
  groupSize?: number | 'channel';
  asym?: boolean;
  staticActivations?: boolean;
  smoothquant?: number;
  kvCache?: 'fp8';
  actorder?: boolean;
  dampening?: number;
  ignore?: string[];
  calibration?: { source?: string; samples?: number; seqLen?: number; seed?: number };
}

export interface Recipe {
  file: string;
  quantize?: QuantizeRecipe;
}

type Json = Record<string, unknown>;

class RecipeReader {
  constructor(readonly file: string) {}

  fail(key: string, why: string): never {
    throw new LlmoptError(`${this.file}: ${key}: ${why}`);
  }

  object(v: unknown, key: string, allowed: readonly string[]): Json {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(key, 'expected a mapping');
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k)) this.fail(`${key}.${k}`, `unknown key (known: ${allowed.join(', ')})`);
    }
    return v as Json;
  }

  string(v: unknown, key: string): string | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string' || v === '') this.fail(key, `expected a string, got ${JSON.stringify(v)}`);
    return v;
  }

  bool(v: unknown, key: string): boolean | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  int(v: unknown, key: string, min: number): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.fail(key, `expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    return v;
  }

  number(v: unknown, key: string): number | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(key, `expected a number, got ${JSON.stringify(v)}`);
    return v;
  }
}

const QUANTIZE_KEYS = [
  'scheme', 'method', 'observer', 'group_size', 'asym', 'static_activations', 'smoothquant', 'kv_cache', 'actorder', 'dampening', 'ignore', 'calibration',
] as const;
const CALIBRATION_KEYS = ['source', 'samples', 'seq_len', 'seed'] as const;

function parseQuantize(r: RecipeReader, v: unknown): QuantizeRecipe {
  const q = r.object(v, 'quantize', QUANTIZE_KEYS);
  const out: QuantizeRecipe = {};
  out.scheme = r.string(q.scheme, 'quantize.scheme');
  out.method = r.string(q.method, 'quantize.method');
  out.observer = r.string(q.observer, 'quantize.observer');
  if (q.group_size !== undefined && q.group_size !== null) {
    out.groupSize = q.group_size === 'channel' ? 'channel' : r.int(q.group_size, 'quantize.group_size (or "channel")', 1);
  }
  out.asym = r.bool(q.asym, 'quantize.asym');
  out.staticActivations = r.bool(q.static_activations, 'quantize.static_activations');
  if (q.smoothquant === true) out.smoothquant = 0.5;
  else if (q.smoothquant !== false) out.smoothquant = r.number(q.smoothquant, 'quantize.smoothquant');
  const kv = r.string(q.kv_cache, 'quantize.kv_cache');
  if (kv !== undefined && kv !== 'fp8') r.fail('quantize.kv_cache', `only "fp8" is supported, got ${JSON.stringify(kv)}`);
  out.kvCache = kv;
  out.actorder = r.bool(q.actorder, 'quantize.actorder');
  out.dampening = r.number(q.dampening, 'quantize.dampening');
  if (q.ignore !== undefined && q.ignore !== null) {
    if (!Array.isArray(q.ignore) || q.ignore.some((s) => typeof s !== 'string')) r.fail('quantize.ignore', 'expected a list of module names or "re:" patterns');
    out.ignore = q.ignore as string[];
  }
  if (q.calibration !== undefined && q.calibration !== null) {
    const c = r.object(q.calibration, 'quantize.calibration', CALIBRATION_KEYS);
    out.calibration = {
      source: r.string(c.source, 'quantize.calibration.source'),
      samples: r.int(c.samples, 'quantize.calibration.samples', 1),
      seqLen: r.int(c.seq_len, 'quantize.calibration.seq_len', 2),
      seed: r.int(c.seed, 'quantize.calibration.seed', 0),
    };
  }
  return out;
}

/** Reads and checks a recipe file. */
export function loadRecipe(file: string): Recipe {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new LlmoptError(`--recipe ${file}: cannot read: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new LlmoptError(`${file}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
  }
  const r = new RecipeReader(file);
  const top = r.object(doc ?? {}, '(top level)', ['quantize']);
  return { file, ...(top.quantize !== undefined ? { quantize: parseQuantize(r, top.quantize) } : {}) };
}

/** `flags` over `recipe`: each field from the flags when they set it, else from the recipe. */
export function mergeOverRecipe<T extends object>(recipe: Partial<T> | undefined, flags: Partial<T>): Partial<T> {
  const out: Partial<T> = { ...(recipe ?? {}) };
  for (const [k, v] of Object.entries(flags) as [keyof T, T[keyof T]][]) {
    if (v === undefined) continue;
    const base = out[k];
    out[k] =
      typeof v === 'object' && v !== null && !Array.isArray(v) && typeof base === 'object' && base !== null && !Array.isArray(base)
        ? ({ ...base, ...Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined)) } as T[keyof T])
        : v;
  }
  return out;
}
