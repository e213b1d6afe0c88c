// Checkpoint surgery: the input's tensors → the pruned checkpoint's tensors, sliced as raw bytes so
// every tensor keeps its dtype (F32, BF16, F16, …) bit for bit. Removed layers are dropped and the
// kept ones renumbered 0…n-1. Tensors are produced lazily, one at a time, for writeCheckpointTensors.

import { LlmoptError } from '../../errors.js';
import { DTYPE_SIZE, type DType } from '../../io/dtypes.js';
import type { TensorToWrite } from '../../io/safetensors.js';
import type { ModelSpec } from '../../model/spec.js';
import { GLOBAL_TENSORS, LAYER_TENSORS, layerTensorName, modelPrefix, parseTensorName, type Axis, type SliceRule } from './names.js';
import type { LayerSelection, Selection } from './select.js';

/** What surgery reads: names, shapes and raw bytes (CheckpointTensors implements it). */
export interface TensorSource {
  names(): string[];
  has(name: string): boolean;
  info(name: string): { dtype: DType; shape: readonly number[] };
  readBytes(name: string): Uint8Array;
}

/** Element indices along one axis of one layer: undefined = keep everything. */
type AxisIndices = Partial<Record<Axis, { full: number; kept: number[] }>>;

/** Units → element indices (unit u covers elements u*size … u*size+size-1). */
function expand(units: readonly number[], size: number): number[] {
  const out: number[] = [];
  for (const u of units) for (let i = 0; i < size; i++) out.push(u * size + i);
  return out;
}

function axisIndices(spec: ModelSpec, sel: Selection, layer: LayerSelection | undefined): AxisIndices {
  const a: AxisIndices = {};
  if (sel.keptHidden.length !== spec.hiddenSize) a.hidden = { full: spec.hiddenSize, kept: sel.keptHidden };
  if (layer === undefined) return a;
  if (layer.keptHeads.length !== spec.numHeads) a.heads = { full: spec.numHeads * spec.headDim, kept: expand(layer.keptHeads, spec.headDim) };
  if (layer.keptKvGroups.length !== spec.numKvHeads) a.kv = { full: spec.numKvHeads * spec.headDim, kept: expand(layer.keptKvGroups, spec.headDim) };
  if (layer.keptChannels.length !== spec.intermediateSize) a.mlp = { full: spec.intermediateSize, kept: layer.keptChannels };
  return a;
}

/** Full size of an axis in the unpruned model (for shape checks). */
function axisSize(spec: ModelSpec, axis: Axis): number {
  switch (axis) {
    case 'heads':
      return spec.numHeads * spec.headDim;
    case 'kv':
      return spec.numKvHeads * spec.headDim;
    case 'mlp':
      return spec.intermediateSize;
    case 'hidden':
      return spec.hiddenSize;
  }
}

/**
 * Rows `rowIdx` and columns `colIdx` (undefined = all) of a row-major [rows, cols] tensor of
 * `elem`-byte elements. Contiguous runs of columns are copied at once.
 */
export function sliceMatrixBytes(
  src: Uint8Array,
  rows: number,
  cols: number,
  elem: number,
  rowIdx: readonly number[] | undefined,
  colIdx: readonly number[] | undefined,
): Uint8Array {
  const outRows = rowIdx ?? Array.from({ length: rows }, (_, i) => i);
  const rowBytes = cols * elem;
  if (colIdx === undefined) {
    const out = new Uint8Array(outRows.length * rowBytes);
    outRows.forEach((r, i) => out.set(src.subarray(r * rowBytes, (r + 1) * rowBytes), i * rowBytes));
    return out;
  }
  const runs: [number, number][] = [];
  for (const c of colIdx) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last[0] + last[1] === c) last[1]++;
    else runs.push([c, 1]);
  }
  const outRowBytes = colIdx.length * elem;
  const out = new Uint8Array(outRows.length * outRowBytes);
  outRows.forEach((r, i) => {
    let o = i * outRowBytes;
    for (const [start, len] of runs) {
      const from = r * rowBytes + start * elem;
      out.set(src.subarray(from, from + len * elem), o);
      o += len * elem;
    }
  });
  return out;
}

/** The pruned version of one tensor (name, shape, lazily sliced bytes). */
function slicedTensor(src: TensorSource, name: string, newName: string, rule: SliceRule, spec: ModelSpec, axes: AxisIndices): TensorToWrite {
  const { dtype, shape } = src.info(name);
  const expectRank = rule.cols !== undefined ? 2 : rule.rows !== undefined ? 1 : undefined;
  const wrongShape = (why: string) => new LlmoptError(`${name}: shape [${shape.join(', ')}] ${why}; cannot prune it`);
  if (expectRank !== undefined && shape.length !== expectRank) throw wrongShape(`is not ${expectRank}-D as the config implies`);
  const rowSel = rule.rows !== undefined ? axes[rule.rows] : undefined;
  const colSel = rule.cols !== undefined ? axes[rule.cols] : undefined;
  if (rule.rows !== undefined && shape[0] !== axisSize(spec, rule.rows)) throw wrongShape(`does not have ${axisSize(spec, rule.rows)} rows as the config implies`);
  if (rule.cols !== undefined && shape[1] !== axisSize(spec, rule.cols)) throw wrongShape(`does not have ${axisSize(spec, rule.cols)} columns as the config implies`);
  if (rowSel === undefined && colSel === undefined) {
    return { name: newName, dtype, shape: [...shape], data: () => src.readBytes(name) };
  }
  const rows = shape[0]!;
  const cols = shape.length === 2 ? shape[1]! : 1;
  const newShape = shape.length === 2 ? [rowSel?.kept.length ?? rows, colSel?.kept.length ?? cols] : [rowSel?.kept.length ?? rows];
  return {
    name: newName,
    dtype,
    shape: newShape,
    data: () => sliceMatrixBytes(src.readBytes(name), rows, cols, DTYPE_SIZE[dtype], rowSel?.kept, colSel?.kept),
  };
}

/**
 * The pruned checkpoint's tensors, in the input's order (kept layers renumbered). Refuses tensors
 * whose layout prune does not know where slicing is needed.
 */
export function prunedTensors(spec: ModelSpec, src: TensorSource, sel: Selection): TensorToWrite[] {
  const prefix = modelPrefix((n) => src.has(n));
  const newIndex = new Map(sel.keptLayers.map((l, i) => [l, i]));
  const byLayer = new Map(sel.layers.map((s) => [s.layer, s]));
  const globalAxes = axisIndices(spec, sel, undefined);
  const out: TensorToWrite[] = [];
  for (const name of src.names()) {
    const parsed = parseTensorName(name, prefix);
    if (parsed.layer === undefined) {
      const rule = GLOBAL_TENSORS.get(parsed.suffix);
      if (rule === undefined) {
        if (globalAxes.hidden !== undefined) throw new LlmoptError(`${name}: prune does not know this tensor's layout, so cannot slice hidden channels from it`);
        out.push(slicedTensor(src, name, name, {}, spec, {}));
      } else {
        out.push(slicedTensor(src, name, name, rule, spec, globalAxes));
      }
      continue;
    }
    if (parsed.layer >= spec.numLayers) throw new LlmoptError(`${name}: layer ${parsed.layer} is beyond num_hidden_layers ${spec.numLayers}`);
    const target = newIndex.get(parsed.layer);
    if (target === undefined) continue; // a removed layer
    const rule = LAYER_TENSORS.get(parsed.suffix);
    if (rule === undefined) {
      throw new LlmoptError(`${name}: prune does not know this tensor's layout (known: ${[...LAYER_TENSORS.keys()].join(', ')})`);
    }
    const axes = axisIndices(spec, sel, byLayer.get(parsed.layer)!);
    out.push(slicedTensor(src, name, layerTensorName(prefix, target, parsed.suffix), rule, spec, axes));
  }
  return out;
}
