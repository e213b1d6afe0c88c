// The compressed-tensors checkpoint format (what llm-compressor writes and vLLM/transformers load):
// the quantization_config in config.json, which scheme applies to which Linear, int32 packing of
// 4/8-bit weights, and dequantization of a Linear's stored tensors back to float32.
//
// Layout per quantized Linear <p> (format → tensors):
//   float-quantized  <p>.weight F8_E4M3 [out, in], <p>.weight_scale [1] | [out, 1] | [out, in/g], <p>.input_scale [1] (static)
//   int-quantized    <p>.weight I8 [out, in],      <p>.weight_scale …, <p>.weight_zero_point I8 (asymmetric), <p>.input_scale
//   pack-quantized   <p>.weight_packed I32 [out, ⌈in·bits/32⌉] (values + 2^(bits−1), LSB first), <p>.weight_shape I64 [2],
//                    <p>.weight_scale [out, in/g] | [out, 1], <p>.weight_zero_point I32 packed along dim 0 (asymmetric)
//   KV cache         model.layers.N.self_attn.k_scale / v_scale [1]  (older: self_attn.k_proj.output_scale / v_proj.output_scale)
// Dequantized weight = (q − zero_point) · scale, the scale broadcast per tensor, row, or row group.

import { ConfigError, LlmoptError } from '../errors.js';
import { decodeToFloat32 } from '../io/dtypes.js';
import type { QuantizedCodes, QuantizedLinearData } from '../tensor/device.js';

/** compressed-tensors' QuantizationArgs, as serialized in config.json (only the keys it defines). */
export interface QuantArgsJson {
  num_bits: number;
  type: 'int' | 'float';
  symmetric: boolean;
  group_size: number | null;
  strategy: 'tensor' | 'channel' | 'group' | 'block' | 'token' | 'tensor_group' | 'attn_head' | null;
  block_structure: number[] | null;
  dynamic: boolean | 'local';
  actorder: 'group' | 'weight' | 'static' | 'dynamic' | null;
  observer: string | null;
  observer_kwargs: Record<string, unknown>;
}

export interface CtScheme {
  name: string;
  targets: string[];
  weights?: QuantArgsJson;
  inputActivations?: QuantArgsJson;
  outputActivations?: QuantArgsJson;
  /** Per-group format (mixed-precision checkpoints); else the config's format. */
  format?: string;
}

export interface CtConfig {
  format: string;
  quantizationStatus: string;
  schemes: CtScheme[];
  ignore: string[];
  kvCacheScheme?: QuantArgsJson;
}

export const CT_FORMATS = ['float-quantized', 'int-quantized', 'pack-quantized', 'naive-quantized'] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** QuantizationArgs JSON → a complete QuantArgsJson with compressed-tensors' defaults and inferred strategy. */
function parseArgs(v: unknown, where: string, file: string): QuantArgsJson | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw new ConfigError(file, `${where} must be an object of quantization arguments`);
  const numBits = v.num_bits ?? 8;
  if (typeof numBits !== 'number' || !Number.isInteger(numBits) || numBits < 1) throw new ConfigError(file, `${where}.num_bits: expected a positive integer`);
  const type = typeof v.type === 'string' ? v.type.toLowerCase() : 'int';
  if (type !== 'int' && type !== 'float') throw new ConfigError(file, `${where}.type: expected "int" or "float", got ${JSON.stringify(v.type)}`);
  const groupSize = v.group_size ?? null;
  if (groupSize !== null && (typeof groupSize !== 'number' || !Number.isInteger(groupSize))) throw new ConfigError(file, `${where}.group_size: expected an integer or null`);
  let strategy = (typeof v.strategy === 'string' ? v.strategy.toLowerCase() : null) as QuantArgsJson['strategy'];
  if (strategy === null) strategy = groupSize === null ? 'tensor' : groupSize > 0 ? 'group' : 'channel';
  const dynamic = v.dynamic === 'local' ? 'local' : v.dynamic === true;
  const actorder = v.actorder === true ? 'group' : typeof v.actorder === 'string' ? (v.actorder.toLowerCase() as QuantArgsJson['actorder']) : null;
  return {
    num_bits: numBits,
    type,
    symmetric: v.symmetric !== false,
    group_size: groupSize as number | null,
    strategy,
    block_structure: Array.isArray(v.block_structure) ? (v.block_structure as number[]) : null,
    dynamic,
    actorder,
    observer: typeof v.observer === 'string' ? v.observer : null,
    observer_kwargs: isObject(v.observer_kwargs) ? v.observer_kwargs : {},
  };
}

function stringList(v: unknown, where: string, file: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new ConfigError(file, `${where} must be a list of strings`);
  return v as string[];
}

/** config.json's quantization_config → CtConfig; ConfigError for anything that is not a compressed-tensors config we can run. */
export function parseCompressedTensorsConfig(raw: unknown, file: string): CtConfig {
  if (!isObject(raw)) throw new ConfigError(file, 'quantization_config must be an object');
  const method = raw.quant_method;
  if (method !== 'compressed-tensors') {
    throw new ConfigError(
      file,
      `quantization_config.quant_method ${JSON.stringify(method)} is not supported; llmopt runs compressed-tensors checkpoints (llm-compressor, llmopt quantize)`,
    );
  }
  if (!isObject(raw.config_groups) || Object.keys(raw.config_groups).length === 0) {
    throw new ConfigError(file, 'quantization_config has no config_groups: nothing says how the Linear layers are stored');
  }
  const format = typeof raw.format === 'string' ? raw.format : 'dense';
  const schemes: CtScheme[] = [];
  for (const [name, g] of Object.entries(raw.config_groups)) {
    if (!isObject(g)) {
      throw new ConfigError(file, `quantization_config.config_groups.${name}: preset names as group keys are not supported; give the scheme's arguments`);
    }
    const where = `quantization_config.config_groups.${name}`;
    schemes.push({
      name,
      targets: stringList(g.targets, `${where}.targets`, file),
      weights: parseArgs(g.weights, `${where}.weights`, file),
      inputActivations: parseArgs(g.input_activations, `${where}.input_activations`, file),
      outputActivations: parseArgs(g.output_activations, `${where}.output_activations`, file),
      format: typeof g.format === 'string' ? g.format : undefined,
    });
  }
  return {
    format,
    quantizationStatus: typeof raw.quantization_status === 'string' ? raw.quantization_status : 'compressed',
    schemes,
    ignore: stringList(raw.ignore, 'quantization_config.ignore', file),
    kvCacheScheme: parseArgs(raw.kv_cache_scheme, 'quantization_config.kv_cache_scheme', file),
  };
}

/**
 * compressed-tensors' name matching: "re:<regex>" matches from the start of the module name (Python
 * re.match); anything else matches the whole name, or the module's class ("Linear" for every Linear).
 */
export function matchesTarget(moduleName: string, target: string, moduleClass = 'Linear'): boolean {
  if (target.startsWith('re:')) return new RegExp(`^(?:${target.slice(3)})`).test(moduleName);
  return target === moduleName || target === moduleClass;
}

/** The scheme a Linear module uses, or undefined when it is ignored or targeted by none. */
export function schemeFor(config: CtConfig, moduleName: string): CtScheme | undefined {
  if (config.ignore.some((t) => matchesTarget(moduleName, t, ''))) return undefined;
  return config.schemes.find((s) => s.targets.some((t) => matchesTarget(moduleName, t)));
}

// --- int32 packing (compressed-tensors pack_to_int32 / unpack_from_int32) -------------------------

/** Elements of `bits` bits per int32 word. */
export function packFactor(bits: number): number {
  if (bits !== 4 && bits !== 8) throw new LlmoptError(`int32 packing supports 4 or 8 bits, got ${bits}`);
  return 32 / bits;
}

/**
 * Signed values [rows, cols] in [−2^(bits−1), 2^(bits−1)) → int32 words [rows, ⌈cols/factor⌉]: each
 * value offset by 2^(bits−1), value j of a word in bits [j·bits, (j+1)·bits). Rows are padded with 0.
 */
export function packInt32(values: ArrayLike<number>, rows: number, cols: number, bits: number): Int32Array {
  const factor = packFactor(bits);
  const offset = 1 << (bits - 1);
  const mask = (1 << bits) - 1;
  const words = Math.ceil(cols / factor);
  const out = new Int32Array(rows * words);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const u = (values[r * cols + c]! + offset) & mask;
      const w = r * words + ((c / factor) | 0);
      out[w] = out[w]! | (u << ((c % factor) * bits));
    }
  }
  return out;
}

/** The inverse of packInt32: words [rows, words] → signed values [rows, cols] (padding dropped). */
export function unpackInt32(packed: Int32Array, rows: number, cols: number, bits: number): Int32Array {
  const factor = packFactor(bits);
  const offset = 1 << (bits - 1);
  const mask = (1 << bits) - 1;
  const words = packed.length / rows;
  if (!Number.isInteger(words) || words < Math.ceil(cols / factor)) {
    throw new LlmoptError(`packed tensor has ${packed.length} words for ${rows} rows of ${cols} ${bits}-bit values`);
  }
  const out = new Int32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      out[r * cols + c] = ((packed[r * words + ((c / factor) | 0)]! >>> ((c % factor) * bits)) & mask) - offset;
    }
  }
  return out;
}

/** pack_to_int32(…, packed_dim=0): packs along rows (zero points [out, groups] → [⌈out/factor⌉, groups]). */
export function packInt32Dim0(values: ArrayLike<number>, rows: number, cols: number, bits: number): Int32Array {
  return transposeInt(packInt32(transposeInt(values, rows, cols), cols, rows, bits), cols, Math.ceil(rows / packFactor(bits)));
}

export function unpackInt32Dim0(packed: Int32Array, rows: number, cols: number, bits: number): Int32Array {
  const packedRows = packed.length / cols;
  return transposeInt(unpackInt32(transposeInt(packed, packedRows, cols), cols, rows, bits), cols, rows);
}

function transposeInt(a: ArrayLike<number>, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

// --- dequantization ------------------------------------------------------------------------------

/** What dequantizing needs from a checkpoint. */
export interface QuantTensorSource {
  has(name: string): boolean;
  info(name: string): { shape: readonly number[]; dtype: string };
  readFloat32(name: string): Float32Array;
  readBytes(name: string): Uint8Array;
}

function int32Data(src: QuantTensorSource, name: string): Int32Array {
  const bytes = src.readBytes(name);
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return new Int32Array(copy.buffer);
}

function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * A quantized Linear's stored tensors as QuantizedLinearData (what Device.uploadQuantizedLinear takes
 * and dequantizeQuantizedLinear turns into floats): int32-packed weights, or F8_E4M3 / I8 weights,
 * with a per-tensor [1], per-channel [out, 1] or group [out, groups] scale (act-order g_idx, zero
 * points when the scheme is asymmetric). undefined: the weight is stored as floats (an ignored layer,
 * a decompressed checkpoint) or in a layout outside that type (block scales, I16/I32 weights), which
 * dequantizeLinear handles. Malformed tensors throw, naming the checkpoint (`where`) and tensor.
 */
export function readQuantizedLinear(
  src: QuantTensorSource,
  prefix: string,
  outF: number,
  inF: number,
  weights: QuantArgsJson | undefined,
  where: string,
): QuantizedLinearData | undefined {
  const fail = (tensor: string, why: string): never => {
    throw new LlmoptError(`${where}: tensor "${tensor}": ${why}`);
  };
  const packedName = `${prefix}.weight_packed`;
  const weightName = `${prefix}.weight`;
  let codes: QuantizedCodes;
  if (src.has(packedName)) {
    if (weights === undefined) fail(packedName, 'packed weight but no quantization scheme targets this layer');
    const bits = weights!.num_bits;
    const shapeName = `${prefix}.weight_shape`;
    if (src.has(shapeName)) {
      const shape = Array.from(src.readFloat32(shapeName));
      if (!sameShape(shape, [outF, inF])) fail(shapeName, `says [${shape.join(', ')}], the config needs [${outF}, ${inF}]`);
    }
    const packedShape = src.info(packedName).shape;
    const words = Math.ceil(inF / packFactor(bits));
    if (src.info(packedName).dtype !== 'I32' || !sameShape(packedShape, [outF, words])) {
      fail(packedName, `expected I32 [${outF}, ${words}] (${bits}-bit values of [${outF}, ${inF}]), found ${src.info(packedName).dtype} [${packedShape.join(', ')}]`);
    }
    codes = { type: 'packed', bits: bits as 4 | 8, words: int32Data(src, packedName) };
  } else {
    if (!src.has(weightName)) fail(weightName, 'missing (the config needs it)');
    const info = src.info(weightName);
    if (!sameShape(info.shape, [outF, inF])) fail(weightName, `has shape [${info.shape.join(', ')}], expected [${outF}, ${inF}]`);
    if (info.dtype === 'F8_E4M3') codes = { type: 'fp8_e4m3', bytes: src.readBytes(weightName) };
    else if (info.dtype === 'I8') codes = { type: 'int8', values: new Int8Array(src.readBytes(weightName).slice().buffer) };
    else return undefined;
  }

  const scaleName = `${prefix}.weight_scale`;
  if (!src.has(scaleName)) fail(scaleName, 'missing: a quantized weight needs its scale');
  const scaleShape = src.info(scaleName).shape;
  let groups: number;
  if (shapeSize(scaleShape) === 1) groups = 1;
  else if (scaleShape.length === 2 && scaleShape[0] === outF) groups = scaleShape[1]!;
  else if (scaleShape.length === 2) return undefined; // block scales
  else return fail(scaleName, `shape [${scaleShape.join(', ')}] is not a per-tensor, per-channel, group or block scale for [${outF}, ${inF}]`);
  const scale = src.readFloat32(scaleName);
  let gIdx: Int32Array | undefined;
  const gIdxName = `${prefix}.weight_g_idx`;
  if (groups > 1 && src.has(gIdxName)) {
    const g = src.readFloat32(gIdxName);
    if (g.length !== inF) fail(gIdxName, `has ${g.length} entries for ${inF} input columns`);
    if (g.some((v) => !(Number.isInteger(v) && v >= 0 && v < groups))) fail(gIdxName, `has entries outside the ${groups} groups of ${scaleName}`);
    gIdx = Int32Array.from(g);
  } else if (inF % groups !== 0) {
    fail(scaleName, `[${scaleShape.join(', ')}]: ${groups} groups do not divide the ${inF} input columns`);
  }

  let zeroPoint: Int32Array | undefined;
  const zpName = `${prefix}.weight_zero_point`;
  if (weights !== undefined && !weights.symmetric && src.has(zpName)) {
    const zInfo = src.info(zpName);
    const zp = zInfo.dtype === 'I32' && codes.type === 'packed'
      ? unpackInt32Dim0(int32Data(src, zpName), scale.length === 1 ? 1 : outF, groups, weights.num_bits)
      : Int32Array.from(src.readFloat32(zpName));
    if (zp.length !== 1 && zp.length !== scale.length) fail(zpName, `has ${zp.length} values for ${scale.length} scales`);
    zeroPoint = zp.length === scale.length ? zp : new Int32Array(scale.length).fill(zp[0]!);
  }
  return { outFeatures: outF, inFeatures: inF, codes, scale, groups, zeroPoint, gIdx };
}

/** The float32 weight [out, in] of a quantized Linear: (code − zero point) · scale. */
export function dequantizeQuantizedLinear(w: QuantizedLinearData): Float32Array {
  const { outFeatures: outF, inFeatures: inF, scale, groups, zeroPoint, gIdx, codes } = w;
  let q: ArrayLike<number>;
  if (codes.type === 'packed') q = unpackInt32(codes.words, outF, inF, codes.bits);
  else if (codes.type === 'int8') q = codes.values;
  else q = decodeToFloat32('F8_E4M3', codes.bytes);
  const groupSize = inF / groups;
  const out = new Float32Array(outF * inF);
  for (let r = 0; r < outF; r++) {
    for (let c = 0; c < inF; c++) {
      const s = scale.length === 1 ? 0 : r * groups + (gIdx !== undefined ? gIdx[c]! : Math.floor(c / groupSize));
      const z = zeroPoint === undefined ? 0 : zeroPoint[s]!;
      out[r * inF + c] = (q[r * inF + c]! - z) * scale[s]!;
    }
  }
  return out;
}

/**
 * A Linear's weight [out, in] as float32, from whichever layout the checkpoint stores: a plain float
 * weight (ignored layers, or a decompressed checkpoint), a quantized one (readQuantizedLinear), or
 * wide-integer weights / block scales. `where` names the checkpoint in errors.
 */
export function dequantizeLinear(
  src: QuantTensorSource,
  prefix: string,
  outF: number,
  inF: number,
  weights: QuantArgsJson | undefined,
  where: string,
): Float32Array {
  const stored = readQuantizedLinear(src, prefix, outF, inF, weights, where);
  if (stored !== undefined) return dequantizeQuantizedLinear(stored);
  const weightName = `${prefix}.weight`;
  const info = src.info(weightName);
  const q = src.readFloat32(weightName);
  const quantized = info.dtype === 'F8_E4M3' || info.dtype === 'I8' || info.dtype === 'I16' || info.dtype === 'I32';
  if (!quantized) return q;

  // I16/I32 weights (any scale layout) or F8_E4M3/I8 with block scales.
  const scaleName = `${prefix}.weight_scale`;
  if (!src.has(scaleName)) throw new LlmoptError(`${where}: tensor "${scaleName}": missing: a quantized weight needs its scale`);
  const scaleShape = src.info(scaleName).shape;
  const scale = src.readFloat32(scaleName);
  let colGroup: (c: number) => number;
  let rowBlock: (r: number) => number;
  let scaleCols: number;
  if (scale.length === 1) {
    scaleCols = 1;
    colGroup = () => 0;
    rowBlock = () => 0;
  } else if (scaleShape[0] === outF) {
    scaleCols = scaleShape[1]!;
    const g = inF / scaleCols;
    colGroup = (c) => (c / g) | 0;
    rowBlock = (r) => r;
  } else {
    // Block strategy (e.g. FP8_BLOCK 128×128): scale [⌈out/bh⌉, ⌈in/bw⌉].
    const bh = Math.ceil(outF / scaleShape[0]!);
    const bw = Math.ceil(inF / scaleShape[1]!);
    scaleCols = scaleShape[1]!;
    colGroup = (c) => (c / bw) | 0;
    rowBlock = (r) => (r / bh) | 0;
  }

  let zp: ArrayLike<number> | undefined;
  const zpName = `${prefix}.weight_zero_point`;
  if (weights !== undefined && !weights.symmetric && src.has(zpName)) zp = src.readFloat32(zpName);

  const out = new Float32Array(outF * inF);
  for (let r = 0; r < outF; r++) {
    const sRow = rowBlock(r) * scaleCols;
    for (let c = 0; c < inF; c++) {
      const s = scale.length === 1 ? 0 : sRow + colGroup(c);
      const z = zp === undefined ? 0 : zp.length === 1 ? zp[0]! : zp[s]!;
      out[r * inF + c] = (q[r * inF + c]! - z) * scale[s]!;
    }
  }
  return out;
}
