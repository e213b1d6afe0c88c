// The fused decode layer (kernels/decode_layer.cu): one launch per decoder layer of a batch-1 decode
// step — which layers it takes, its grid (one resident block per SM: the stages meet at grid-wide
// barriers), shared memory and K splits. Anything it does not take returns false and queues nothing,
// and the decoder runs the per-op fused path for that layer.

import type { DecodeLayerAtArgs } from '../device.js';
import type { CudaDevice, CudaInts } from './device.js';
import type { DevicePtr } from './driver.js';
import { CudaQuantLinear, type QuantFormat } from './quant-linear.js';
import { CudaTensor } from './tensor.js';

const WARPS = 16;
const MAX_GQ = 8;
/** Attention: a block's warps as 4 query-head slots × 4 tile slots (decode_layer.cu DL_TILE_SLOTS). */
const TILE_SLOTS = 4;
const MAX_SPLITS = 32;
/** u64 timestamps a launch writes when given a stamps buffer (kernels/decode_layer.cu dl_stamp): 10 per block. */
export const DECODE_LAYER_STAMPS = 10;
/** u32 slots of the sync buffer: the grid barrier's count and generation. */
export const DECODE_LAYER_SYNC_WORDS = 2;
const SHARED_LIMIT = 227 * 1024;
const WORD_COLUMNS: Record<QuantFormat, number> = { fp8: 4, s8: 4, u4: 8 };
const LOG2E = 1.4426950408889634;

/** Dynamic shared memory of a launch: x (+ its codes) and the small arrays, or the attention stage's, whichever is larger. */
export function decodeLayerSmemBytes(xsElems: number, codesBytes: number, headDim: number, nHeads: number): number {
  const up16 = (n: number) => Math.ceil(n / 16) * 16;
  const rows = up16(2 * xsElems) + up16(codesBytes) + (8 + WARPS * 8 + 2 * WARPS + nHeads * MAX_SPLITS * 2) * 4;
  const attention = (MAX_GQ * headDim + WARPS * 32 + TILE_SLOTS * MAX_GQ * (headDim + 2)) * 4;
  return Math.max(rows, attention);
}

/**
 * Warps sharing a row pair of a stage with `pairs` pairs of `spans` 512-byte spans: the largest power of
 * two ≤ 16 that keeps pairs × split within the grid's warps and leaves every warp a span.
 */
export function decodeLayerSplit(pairs: number, spans: number, warps: number): number {
  let split = 1;
  while (split < 16 && pairs * split * 2 <= warps && split * 2 <= spans) split *= 2;
  return split;
}

/** What the launch reads of a Linear: its stored bytes, scales and zero points (0n when absent) and row geometry. */
type Weight = { ptr: DevicePtr; scales: DevicePtr; zeros: DevicePtr; Kp: number; rowBytes: number; G: number };

/** One decoder layer in one launch (see the header); false, queueing nothing, where it does not apply. */
export function launchDecodeLayer(dev: CudaDevice, a: DecodeLayerAtArgs<CudaInts>, sync: DevicePtr, scratch: { ptr: DevicePtr; bytes: number },
  stamps: DevicePtr = 0n): boolean {
  if (dev.dtype === 'f32') return false;
  const D = a.headDim, H = a.hidden.shape[a.hidden.shape.length - 1]!;
  const qDim = a.nHeads * D, Nkv = a.nKvHeads * D;
  const gq = a.nHeads / a.nKvHeads;
  if (!((D === 64 || D === 128) && a.rotaryDim === D && a.window === undefined && Number.isInteger(gq) && gq >= 1 && gq <= MAX_GQ &&
    MAX_SPLITS * a.nHeads * (D + 2) * 4 <= scratch.bytes)) return false;
  const live = (t: unknown): t is CudaTensor => t instanceof CudaTensor && t.device === dev && t.dtype === dev.dtype && !t.storage.freed;
  const vectors = [a.hidden, a.q, a.act, a.cacheK, a.cacheV, a.cos, a.sin, a.attnNorm, a.mlpNorm];
  if (!vectors.every(live)) return false;
  const [h, q, act, ck, cv, cos, sin, n1, n2] = vectors as CudaTensor[];
  const I = act!.cols;
  if (!(h!.rowCount === 1 && q!.size === qDim && act!.size === I && ck!.cols === Nkv && cv!.cols === Nkv &&
    cos!.cols === D / 2 && sin!.cols === D / 2 && n1!.size === H && n2!.size === H && a.positions.length >= 1 && a.kvLens.length >= 1)) return false;
  if (![H, qDim, I].every((k) => k % 8 === 0) || ![h, q, act, ck, cv, n1, n2].every((t) => t!.ptr % 16n === 0n)) return false;

  const ws = [a.wq, a.wk, a.wv, a.wo, a.wg, a.wu, a.wd];
  const shapes: [number, number][] = [[qDim, H], [Nkv, H], [Nkv, H], [H, qDim], [I, H], [I, H], [H, I]];
  let format: QuantFormat | 'dense';
  let quantize = false;
  let weights: Weight[];
  const scales = [0, 0, 0, 0, 0, 0, 0];
  let gmagic = 0, chunkGroups = 0;
  if (ws.every(live)) {
    format = 'dense';
    const dense = ws as CudaTensor[];
    if (!dense.every((w, i) => w.rowCount === shapes[i]![0] && w.cols === shapes[i]![1] && w.ptr % 16n === 0n)) return false;
    weights = dense.map((w) => ({ ptr: w.ptr, scales: 0n, zeros: 0n, Kp: w.cols, rowBytes: 2 * w.cols, G: 1 }));
  } else if (ws.every((w) => w instanceof CudaQuantLinear && w.device === dev && !w.freed)) {
    const qs = ws as CudaQuantLinear[];
    const w0 = qs[0]!;
    format = w0.format;
    quantize = w0.act === 'quantize';
    // one scale per row everywhere, or the same group size everywhere (the kernel takes one gmagic)
    const grouped = w0.groups > 1;
    if (!qs.every((w, i) => w.format === w0.format && w.act === w0.act && w.perm === 0n && (w.groups > 1) === grouped &&
      (!grouped || (w.groupSize === w0.groupSize && w.gmagic === w0.gmagic)) && w.N === shapes[i]![0] && w.K === shapes[i]![1])) return false;
    // x is quantized once per stage: Linears sharing an input share its static scale
    if (qs[1]!.staticScale !== qs[0]!.staticScale || qs[2]!.staticScale !== qs[0]!.staticScale || qs[5]!.staticScale !== qs[4]!.staticScale) return false;
    weights = qs.map((w) => ({ ptr: w.weights, scales: w.scales, zeros: w.zeros, Kp: w.Kp, rowBytes: w.rowBytes, G: w.groups }));
    [0, 1, 2, 3, 4, 5, 6].forEach((i) => (scales[i] = qs[i]!.staticScale));
    gmagic = w0.gmagic;
    chunkGroups = w0.groups > 1 && w0.groupSize % (16 * WORD_COLUMNS[w0.format]) === 0 ? 1 : 0;
  } else {
    return false;
  }
  const [wq, , , wo, , , wd] = weights;
  const xsElems = Math.max(H, qDim, I);
  const codesBytes = quantize ? Math.max(wq!.Kp, wo!.Kp, wd!.Kp) : 0;
  const smem = decodeLayerSmemBytes(xsElems, codesBytes, D, a.nHeads);
  if (smem > SHARED_LIMIT) return false;
  const blocks = dev.info.multiprocessors;
  const spans = (w: Weight) => Math.ceil(w.rowBytes / 512);
  const splitO = decodeLayerSplit(H / 2, spans(wo!), blocks * WARPS);
  const splitD = decodeLayerSplit(H / 2, spans(wd!), blocks * WARPS);
  dev.ints(a.positions, 'decodeLayerAt', 'positions');
  dev.ints(a.kvLens, 'decodeLayerAt', 'kvLens');
  const name = `decode_layer_${format}_${quantize ? 'a' : 'w'}_${dev.suffix}_d${D}`;
  const kernel = dev.kernel('decode_layer', name, 'p'.repeat(34) + 'i'.repeat(15) + 'q' + 'iii' + 'ffffff' + 'p');
  dev.kernels.launch(kernel, [blocks], [WARPS * 32], smem, [
    h!.ptr, q!.ptr, act!.ptr, scratch.ptr, sync, ck!.ptr, cv!.ptr, a.positions.ptr, a.kvLens.ptr, cos!.ptr, sin!.ptr, n1!.ptr, n2!.ptr,
    ...weights.map((w) => w.ptr), ...weights.map((w) => w.scales), ...weights.map((w) => w.zeros),
    H, I, a.nHeads, a.nKvHeads, xsElems, codesBytes, wq!.Kp, wq!.rowBytes, wo!.Kp, wo!.rowBytes, wd!.Kp, wd!.rowBytes, wq!.G, wo!.G, wd!.G,
    gmagic, chunkGroups, splitO, splitD, a.eps, a.scale * LOG2E, scales[0]!, scales[3]!, scales[4]!, scales[6]!, stamps,
  ]);
  return true;
}
