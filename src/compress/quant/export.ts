// Writing compressed-tensors: the quantization_config block for config.json and each quantized
// Linear's tensors, in the layout src/model/compressed-tensors.ts documents (and reads back).

import type { TensorToWrite } from '../../io/safetensors.js';
import { encodeFromFloat32 } from '../../io/dtypes.js';
import { packFactor, packInt32, packInt32Dim0 } from '../../model/compressed-tensors.js';
import type { QuantValueArgs, ScaleDType, WeightQParams } from '../../tensor/quant-job.js';
import type { ResolvedScheme } from './scheme.js';

/** A quantized Linear weight as written: its codes (row-major; integers, or E4M3 bytes for fp8) and qparams. */
export interface QuantizedCodes {
  rows: number;
  cols: number;
  args: QuantValueArgs;
  qparams: WeightQParams;
  codes: Int32Array;
}

/** config.json's quantization_config for a resolved scheme (keys as compressed-tensors' QuantizationConfig dumps them). */
export function quantizationConfig(scheme: ResolvedScheme, ignore: readonly string[], toolMetadata: Record<string, unknown>): Record<string, unknown> {
  return {
    config_groups: {
      group_0: {
        targets: ['Linear'],
        weights: scheme.weights,
        input_activations: scheme.inputActivations ?? null,
        output_activations: null,
      },
    },
    format: scheme.format,
    global_compression_ratio: null,
    ignore: [...ignore],
    kv_cache_scheme: scheme.kvCacheScheme ?? null,
    quant_method: 'compressed-tensors',
    quantization_status: 'compressed',
    sparsity_config: {},
    // compressed-tensors' QuantizationConfig ignores keys it does not define; tools keep their notes here.
    llmopt: toolMetadata,
  };
}

function bytesOf(a: Int32Array | Int8Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** The tensors of one quantized Linear `prefix` (e.g. "model.layers.0.self_attn.q_proj"). */
export function linearTensors(
  prefix: string,
  qw: QuantizedCodes,
  format: ResolvedScheme['format'],
  scaleDtype: ScaleDType,
  inputScale?: number,
): TensorToWrite[] {
  const { rows, cols, args, qparams } = qw;
  const out: TensorToWrite[] = [];
  const scale = { name: `${prefix}.weight_scale`, dtype: scaleDtype, shape: qparams.grid.scaleShape, data: encodeFromFloat32(scaleDtype, qparams.scale) };
  const asymmetric = !args.symmetric;
  if (format === 'pack-quantized') {
    const bits = args.num_bits;
    out.push(
      { name: `${prefix}.weight_packed`, dtype: 'I32', shape: [rows, Math.ceil(cols / packFactor(bits))], data: bytesOf(packInt32(qw.codes, rows, cols, bits)) },
      scale,
      { name: `${prefix}.weight_shape`, dtype: 'I64', shape: [2], data: encodeFromFloat32('I64', Float32Array.of(rows, cols)) },
    );
    if (asymmetric) {
      const [zr, zc] = qparams.grid.scaleShape.length === 2 ? qparams.grid.scaleShape : [1, 1];
      const packed = packInt32Dim0(qparams.zeroPoint, zr!, zc!, bits);
      out.push({ name: `${prefix}.weight_zero_point`, dtype: 'I32', shape: [Math.ceil(zr! / packFactor(bits)), zc!], data: bytesOf(packed) });
    }
  } else {
    const weight: TensorToWrite =
      format === 'float-quantized'
        ? { name: `${prefix}.weight`, dtype: 'F8_E4M3', shape: [rows, cols], data: Uint8Array.from(qw.codes) }
        : { name: `${prefix}.weight`, dtype: 'I8', shape: [rows, cols], data: bytesOf(Int8Array.from(qw.codes)) };
    out.push(weight, scale);
    if (asymmetric) {
      out.push({ name: `${prefix}.weight_zero_point`, dtype: 'I8', shape: qparams.grid.scaleShape, data: bytesOf(Int8Array.from(qparams.zeroPoint)) });
    }
  }
  if (inputScale !== undefined) out.push({ name: `${prefix}.input_scale`, dtype: scaleDtype, shape: [1], data: encodeFromFloat32(scaleDtype, Float32Array.of(inputScale)) });
  return out;
}

/** k_scale / v_scale of layer `layerPrefix` (e.g. "model.layers.0."). */
export function kvScaleTensors(layerPrefix: string, kScale: number, vScale: number, scaleDtype: ScaleDType): TensorToWrite[] {
  return [
    { name: `${layerPrefix}self_attn.k_scale`, dtype: scaleDtype, shape: [1], data: encodeFromFloat32(scaleDtype, Float32Array.of(kScale)) },
    { name: `${layerPrefix}self_attn.v_scale`, dtype: scaleDtype, shape: [1], data: encodeFromFloat32(scaleDtype, Float32Array.of(vScale)) },
  ];
}
