// Decode attention (seqQ < 8) as one fused split-KV launch (attention.cu, attention_decode_fused_*):
// the split count, the head-group chunk size and the scratch layout. The partials live in the
// device's fixed attention scratch and the per-(row, head group) arrival counters in a small fixed,
// zeroed buffer beside it (the kernel resets each counter it used), so the launch is graph-safe.

import type { AttentionShape } from '../device.js';
import type { CudaDevice } from './device.js';
import type { DevicePtr } from './driver.js';
import type { KernelArg } from './kernels.js';

/** Warps per block (fused::NW) × 32 keys per warp tile: a split holds a multiple of this many keys per round. */
const KEYS_PER_ROUND = 4 * 32;
/** fused::SPLIT_MAX: the last block merges at most this many splits (two per lane). */
export const FUSED_SPLIT_MAX = 64;
/** Counters in the fixed buffer: one per (query row, KV head × group chunk) of a split launch. */
export const DECODE_COUNTERS = 4096;

export interface FusedDecodePlan {
  /** Query heads per block (template GC: 1, 2, 4 or 8, the group size rounded up to a power of two). */
  group: number;
  /** Blocks per (row, KV head): chunks of `group` heads of a GQA group. */
  chunks: number;
  splits: number;
}

/**
 * Group chunk = the GQA group rounded up to a power of two (≤ 8); splits = as many as keep the blocks
 * within two per SM (one wave), but no more than one 128-key round per split over the longest key range a row can have (the
 * window when set), at most FUSED_SPLIT_MAX, and 1 when the counters or the scratch cannot hold them.
 */
export function planFusedDecode(shape: AttentionShape, multiprocessors: number, scratchBytes: number, maxSplits = FUSED_SPLIT_MAX): FusedDecodePlan {
  const { batch, seqQ, kvLen, nHead, nKvHead, headDim } = shape;
  const groupSize = nHead / nKvHead;
  const group = groupSize > 4 ? 8 : groupSize > 2 ? 4 : groupSize;
  const chunks = Math.ceil(groupSize / group);
  const rows = batch * seqQ;
  const blocks = rows * nKvHead * chunks;
  const keys = shape.window !== undefined ? Math.min(kvLen, shape.window + seqQ - 1) : kvLen;
  // floor: at ~200 registers a block, two blocks fit an SM, so more than 2·SMs blocks would start a second wave
  let splits = Math.min(FUSED_SPLIT_MAX, maxSplits, Math.floor((2 * multiprocessors) / blocks), Math.ceil(keys / KEYS_PER_ROUND));
  const bytesPerSplit = rows * nHead * (headDim + 2) * 4 + 512;
  splits = Math.min(splits, Math.floor(scratchBytes / bytesPerSplit));
  if (blocks > DECODE_COUNTERS) splits = 1;
  return { group, chunks, splits: Math.max(1, splits) };
}

/** Launches the fused decode kernel; `args` are the attention kernels' common arguments (out, q, k, v, …, kvLens). */
export function launchFusedDecode(dev: CudaDevice, shape: AttentionShape, D: number, args: KernelArg[],
  scratch: { partials: DevicePtr; bytes: number; counters: DevicePtr }, maxSplits = FUSED_SPLIT_MAX): void {
  const { batch, seqQ, nHead, nKvHead, headDim } = shape;
  const { group, chunks, splits } = planFusedDecode(shape, dev.info.multiprocessors, scratch.bytes, maxSplits);
  const rows = batch * seqQ;
  const partO = scratch.partials;
  const partML = partO + BigInt(Math.ceil((rows * nHead * splits * headDim * 4) / 256) * 256);
  const [, , kPtr, vPtr] = args as bigint[];
  const elem = dev.dtype === 'f32' ? 4 : 2;
  const aligned = kPtr! % 16n === 0n && vPtr! % 16n === 0n;
  const vecK = aligned && headDim % (16 / elem) === 0 && (nKvHead * headDim) % (16 / elem) === 0;
  const vec = vecK && headDim === D && D * elem <= 128 ? 2 : vecK ? 1 : 0;
  const kern = dev.kernel('attention', `attention_decode_fused_${dev.suffix}_d${D}_g${group}`, 'pppppppiiiiiifipii');
  dev.kernels.launch(kern, [splits, nKvHead * chunks, rows], [128], 0, [partO, partML, scratch.counters, ...args, splits, vec]);
}
