// Attention for training on the CUDA device: the forward with the softmax log-sum-exp (the prefill
// kernels with an lse output), and a memory-bounded backward built from strided-batched cuBLASLt
// GEMMs (kernels/attention_backward.cu holds the layout, delta and softmax-backward kernels).
//
// Backward plan. Queries are cut into blocks of Lq rows (Lq = 256, or seqQ rounded up to 8 when
// shorter). q and dO are copied into query-block layout [nb][batch][nHead][Lq][hd], k and v into
// head-major [batch][nKvHead][kvStride][hd]; then the Lq rows of the g = nHead/nKvHead query heads of
// one KV head are one matrix of g·Lq rows, and every GEMM is one strided batch over (sequence, KV
// head). Per query block (keys kStart..kEnd: causal, and the sliding window when there is one):
//   S  = scale·Q Kᵀ,  dP = dO Vᵀ                    f32 [g·Lq, kLen] per batch entry
//   P  = exp(S − lse) (masked),  dS = P∘(dP − δ),  δ = rowsum(dO∘O)    (written over S and dP)
//   dV += Pᵀ dO,  dK += scale·dSᵀ Q                 f32 accumulators (the sum over the group is the GEMM's K)
//   dQ  = scale·dS K                                 compute dtype
// Key blocks past the diagonal are never computed (about 44% of a dense seq² at seq 2048).
// Fused path (16-bit dtype, head dim 64/128, aligned tensors; Lq a multiple of 64): the first three
// steps and dQ are one tensor-core kernel (attn_bwd_dq_mma) that keeps S and dP in registers and writes
// only P and dS (compute dtype) for the two GEMMs; k/v need no copies and dq is written in place.
// LLMOPT_CUDA_ATTENTION_BACKWARD=gemm forces the GEMM path (A/B comparisons).
// Scratch (held by the device for reuse, grows to the largest call), with Bc = sequences per chunk =
// max(1, min(batch, ⌊ATTENTION_BACKWARD_BUDGET / per-sequence block bytes⌋)):
//   block: fused 2·e·Bc·nHead·Lq·roundUp(kvLen, 8) bytes (P, dS; e = 2 for bf16), gemm 8·Bc·nHead·Lq·roundUp(kvLen, 8);
//   q/dO in query-block layout 2·nb·Lq·batch·nHead·hd elements (gemm: + dq); gemm only: k/v head-major
//   2·batch·kvStride·nKvHead·hd elements; dK/dV f32 accumulators 8·batch·kvStride·nKvHead·hd bytes;
//   δ 4·batch·seqQ·nHead bytes.

import type { AttentionShape, ComputeDType, Tensor } from '../device.js';
import type { GemmArgs } from './cublaslt.js';
import type { DevicePtr } from './driver.js';
import type { CudaDevice } from './device.js';
import { elementBytes, type CudaTensor } from './tensor.js';

/** Query rows per block of the backward. */
export const ATTENTION_QUERY_BLOCK = 256;
/** Bytes of S/dP scratch one backward call may use before it splits the batch (at least one sequence is always taken). */
export const ATTENTION_BACKWARD_BUDGET = 1024 * 1024 * 1024;

const PREFILL_QUERY_TILE = 16;
const PREFILL_KEY_TILE = 32;

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

function fmt(t: CudaTensor): string {
  return `[${t.shape.join(',')}]`;
}

/** Growable device scratch buffers by name (stream-ordered: a regrow frees the old one after queued work). */
export class ScratchBuffers {
  private readonly buffers = new Map<string, { ptr: DevicePtr; bytes: number }>();
  constructor(private readonly dev: CudaDevice) {}

  get(name: string, bytes: number): DevicePtr {
    const have = this.buffers.get(name);
    if (have !== undefined && have.bytes >= bytes) return have.ptr;
    if (have !== undefined) this.dev.releaseBytes(have.ptr, have.bytes);
    const size = Math.max(256, roundUp(bytes, 256));
    const ptr = this.dev.allocateBytes(size);
    this.buffers.set(name, { ptr, bytes: size });
    return ptr;
  }
}

interface Checked {
  o: CudaTensor;
  q: CudaTensor;
  k: CudaTensor;
  v: CudaTensor;
  lse: CudaTensor;
  window: number;
}

function checkShape(dev: CudaDevice, op: string, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): Checked {
  const o = dev.tensor(out, op, op === 'attentionBackward' ? 'dOut' : 'out');
  const qc = dev.tensor(q, op, 'q');
  const kc = dev.tensor(k, op, 'k');
  const vc = dev.tensor(v, op, 'v');
  const l = dev.tensor(lse, op, 'lse', 'f32');
  const { batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim } = shape;
  const qLen = batch * seqQ * nHead * headDim;
  const kvTotal = batch * kvStride * nKvHead * headDim;
  const ints = [batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim];
  if (!ints.every((n) => Number.isInteger(n) && n >= 0) || nKvHead < 1 || nHead % nKvHead !== 0 ||
    seqQ > kvLen || kvLen > kvStride || o.size !== qLen || qc.size !== qLen || kc.size !== kvTotal || vc.size !== kvTotal ||
    l.size !== batch * seqQ * nHead ||
    (shape.window !== undefined && !(Number.isInteger(shape.window) && shape.window >= 1))) {
    throw new Error(`${op}: shape mismatch: out ${fmt(o)}, lse ${fmt(l)}, q ${fmt(qc)}, k ${fmt(kc)}, v ${fmt(vc)}, ` +
      `shape ${JSON.stringify(shape)} (expects q/out [batch*seqQ, nHead*headDim], k/v [batch*kvStride, nKvHead*headDim], ` +
      'lse [batch*seqQ, nHead] f32, seqQ ≤ kvLen ≤ kvStride, nHead % nKvHead = 0)');
  }
  if (headDim > 256) throw new Error(`${op}: headDim ${headDim} > 256 is not supported on cuda`);
  return { o, q: qc, k: kc, v: vc, lse: l, window: shape.window ?? 0 };
}

/** Device.attention plus lse [batch*seqQ, nHead] (f32): the prefill kernels' lse entry points, for any seqQ. */
export function attentionForward(dev: CudaDevice, out: Tensor, lse: Tensor, q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape): void {
  const c = checkShape(dev, 'attentionForward', out, lse, q, k, v, shape);
  const { batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale } = shape;
  if (batch === 0 || seqQ === 0 || nHead === 0) return;
  const args = [c.o.ptr, c.q.ptr, c.k.ptr, c.v.ptr, seqQ, kvLen, kvStride, nHead, nKvHead, headDim, scale, c.window, 0n, c.lse.ptr];
  const sig = 'ppppiiiiiifipp';
  if (dev.dtype !== 'f32' && (headDim === 64 || headDim === 128) && [c.o, c.q, c.k, c.v].every((t) => t.ptr % 16n === 0n)) {
    const kern = dev.kernel('flash', `attention_prefill_mma_lse_${dev.suffix}_d${headDim}`, sig);
    dev.kernels.launch(kern, [Math.ceil(seqQ / 64), nHead, batch], [128], 5 * 64 * (headDim + 8) * 2, args);
  } else {
    const D = headDim <= 32 ? 32 : headDim <= 64 ? 64 : headDim <= 128 ? 128 : 256;
    const kern = dev.kernel('attention', `attention_prefill_lse_${dev.suffix}_d${D}`, sig);
    const shared = (PREFILL_KEY_TILE * (D + 1) + PREFILL_KEY_TILE * D + PREFILL_QUERY_TILE * D) * 4;
    dev.kernels.launch(kern, [Math.ceil(seqQ / PREFILL_QUERY_TILE), nHead, batch], [128], shared, args);
  }
}

/** Which backward runs: 'fused' (attn_bwd_dq_mma + the dV/dK GEMMs) or 'gemm' (five GEMMs + the softmax kernel per block). */
export type AttentionBackwardPath = 'fused' | 'gemm';

/** The fused path needs a 16-bit dtype, head dim 64 or 128 and 16-byte aligned tensors (the mma kernel's loads). */
export function fusedBackwardApplies(dtype: ComputeDType, headDim: number, tensors: readonly CudaTensor[]): boolean {
  return dtype !== 'f32' && (headDim === 64 || headDim === 128) && tensors.every((t) => t.ptr % 16n === 0n);
}

/** The backward's block geometry for a shape (exported for the scratch formula in tests and docs). */
export function attentionBackwardPlan(shape: AttentionShape, path: AttentionBackwardPath, elementSize: number, budget = ATTENTION_BACKWARD_BUDGET): { Lq: number; nb: number; seqsPerChunk: number; blockBytes: number } {
  // The fused kernel takes 64 query rows per block, so its query blocks are multiples of 64.
  const Lq = Math.min(ATTENTION_QUERY_BLOCK, roundUp(Math.max(shape.seqQ, 1), path === 'fused' ? 64 : 8));
  const nb = Math.ceil(shape.seqQ / Lq);
  // gemm: S and dP in f32 (P and dS written over them); fused: P and dS in the compute dtype
  const perSeq = (path === 'fused' ? 2 * elementSize : 8) * shape.nHead * Lq * roundUp(Math.max(shape.kvLen, 1), 8);
  const seqsPerChunk = Math.max(1, Math.min(shape.batch, Math.floor(budget / perSeq)));
  return { Lq, nb, seqsPerChunk, blockBytes: seqsPerChunk * perSeq };
}

export function attentionBackward(
  dev: CudaDevice, scratch: ScratchBuffers, dq: Tensor, dk: Tensor, dv: Tensor, dOut: Tensor, out: Tensor, lse: Tensor,
  q: Tensor, k: Tensor, v: Tensor, shape: AttentionShape, allowFused = true,
): void {
  const op = 'attentionBackward';
  const c = checkShape(dev, op, dOut, lse, q, k, v, shape);
  const oc = dev.tensor(out, op, 'out');
  const dqc = dev.tensor(dq, op, 'dq');
  const dkc = dev.tensor(dk, op, 'dk');
  const dvc = dev.tensor(dv, op, 'dv');
  if (oc.size !== c.q.size || dqc.size !== c.q.size || dkc.size !== c.k.size || dvc.size !== c.k.size) {
    throw new Error(`${op}: shape mismatch: out ${fmt(oc)}, dq ${fmt(dqc)}, dk ${fmt(dkc)}, dv ${fmt(dvc)} (dq/out as q ${fmt(c.q)}, dk/dv as k ${fmt(c.k)})`);
  }
  const { batch: B, seqQ, kvLen, kvStride, nHead: H, nKvHead: Hkv, headDim: hd, scale } = shape;
  const dtype = dev.dtype;
  const T = dtype as ComputeDType;
  const el = elementBytes(dtype);
  if (B === 0 || seqQ === 0 || H === 0 || hd === 0) {
    dev.driver.memsetZero(dqc.ptr, dqc.bytes);
    dev.driver.memsetZero(dkc.ptr, dkc.bytes);
    dev.driver.memsetZero(dvc.ptr, dvc.bytes);
    return;
  }
  const path: AttentionBackwardPath = allowFused && fusedBackwardApplies(dtype, hd, [c.q, c.k, c.v, c.o, dqc]) ? 'fused' : 'gemm';
  const g = H / Hkv, past = kvLen - seqQ, window = c.window;
  const { Lq, nb, seqsPerChunk, blockBytes } = attentionBackwardPlan(shape, path, el);
  const qBlkElems = nb * B * H * Lq * hd;
  const kvElems = B * Hkv * kvStride * hd;
  const qBlk = scratch.get('attn.q', qBlkElems * el);
  const doBlk = scratch.get('attn.dO', qBlkElems * el);
  const dk32 = scratch.get('attn.dk32', kvElems * 4);
  const dv32 = scratch.get('attn.dv32', kvElems * 4);
  const delta = scratch.get('attn.delta', B * seqQ * H * 4);
  const blockScratch = scratch.get('attn.block', blockBytes);

  const s = dev.suffix;
  const toBlocks = dev.kernel('attention_backward', `attn_to_blocks_${s}`, 'ppiiiiiq');
  dev.launch1d(toBlocks, qBlkElems, [qBlk, c.q.ptr, B, seqQ, H, hd, Lq, qBlkElems]);
  dev.launch1d(toBlocks, qBlkElems, [doBlk, c.o.ptr, B, seqQ, H, hd, Lq, qBlkElems]);
  const rowsHeads = B * seqQ * H;
  const deltaKernel = dev.kernel('attention_backward', `attn_delta_${s}`, 'pppqi');
  dev.kernels.launch(deltaKernel, [Math.ceil(rowsHeads / 8)], [256], 0, [delta, c.o.ptr, oc.ptr, rowsHeads, hd]);
  dev.driver.memsetZero(dk32, kvElems * 4);
  dev.driver.memsetZero(dv32, kvElems * 4);

  const Mg = g * Lq;
  const qBatchStride = g * Lq * hd;
  const kvBatchStride = kvStride * hd;
  const gemm = (label: string, args: GemmArgs) => {
    dev.kernels.profiler?.begin(`cublasLt attention backward ${label}`);
    dev.blas.gemm(args);
    dev.kernels.profiler?.end();
  };
  // gemm path only: k, v head-major, dq in query-block layout
  const kHm = path === 'gemm' ? scratch.get('attn.k', kvElems * el) : 0n;
  const vHm = path === 'gemm' ? scratch.get('attn.v', kvElems * el) : 0n;
  const dqBlk = path === 'gemm' ? scratch.get('attn.dq', qBlkElems * el) : 0n;
  if (path === 'gemm') {
    dev.launch1d(toBlocks, kvElems, [kHm, c.k.ptr, B, kvStride, Hkv, hd, kvStride, kvElems]);
    dev.launch1d(toBlocks, kvElems, [vHm, c.v.ptr, B, kvStride, Hkv, hd, kvStride, kvElems]);
  }
  const softmax = dev.kernel('attention_backward', `attn_softmax_backward_${s}`, 'ppppiiiiiiiiiii');
  const fused = path === 'fused' ? dev.kernel('attention_backward', `attn_bwd_dq_mma_${s}_d${hd}`, 'pppppppppiiiifiiiiiiii') : undefined;
  for (let b0 = 0; b0 < B; b0 += seqsPerChunk) {
    const nbc = Math.min(seqsPerChunk, B - b0);
    const nbat = nbc * Hkv;
    for (let qb = 0; qb < nb; qb++) {
      const t0 = qb * Lq, tEnd = Math.min(seqQ, t0 + Lq);
      const kEnd = past + tEnd;
      const kStart = window > 0 ? Math.floor(Math.max(0, past + t0 - window + 1) / 8) * 8 : 0;
      const kLen = kEnd - kStart;
      const ldS = roundUp(kLen, 8);
      const qOff = BigInt(((qb * B + b0) * H) * Lq * hd * el);
      const kvAccOff = BigInt((b0 * Hkv * kvStride + kStart) * hd * 4);
      const accD = { type: 'f32' as const, ld: hd, batchStride: kvBatchStride };
      // P and dS: [nbat][Mg][ldP] in the compute dtype
      let pPtr: bigint, dsPtr: bigint, ldP: number;
      if (fused !== undefined) {
        ldP = ldS;
        pPtr = blockScratch;
        dsPtr = blockScratch + BigInt(nbat * Mg * ldP * el);
        dev.kernels.launch(fused, [Lq / 64, H, nbc], [128], 5 * 64 * (hd + 8) * el, [
          dqc.ptr, pPtr, dsPtr, c.q.ptr, c.k.ptr, c.v.ptr, c.o.ptr, c.lse.ptr, delta, seqQ, kvStride, H, Hkv, scale, window, past,
          t0, Lq, kStart, kEnd, ldP, b0,
        ]);
      } else {
        // S and dP in f32, then P and dS (compute dtype) written over them: ld in elements of the compute dtype
        ldP = (ldS * 4) / el;
        pPtr = blockScratch;
        dsPtr = blockScratch + BigInt(nbat * Mg * ldS * 4);
        const kOff = BigInt((b0 * Hkv * kvStride + kStart) * hd * el);
        const qA = { type: T, trans: false, ld: hd, batchStride: qBatchStride };
        const kB = { type: T, ld: hd, batchStride: kvBatchStride };
        const sD = { type: 'f32' as const, ld: ldS, batchStride: Mg * ldS };
        gemm('S = QKᵀ', { M: Mg, N: kLen, K: hd, batch: nbat, alpha: scale,
          a: { ...qA, ptr: qBlk + qOff }, b: { ...kB, ptr: kHm + kOff, trans: true }, d: { ...sD, ptr: pPtr } });
        gemm('dP = dO Vᵀ', { M: Mg, N: kLen, K: hd, batch: nbat,
          a: { ...qA, ptr: doBlk + qOff }, b: { ...kB, ptr: vHm + kOff, trans: true }, d: { ...sD, ptr: dsPtr } });
        dev.kernels.launch(softmax, [nbat * Mg], [256], 0, [pPtr, dsPtr, c.lse.ptr, delta, ldS, kLen, kStart, t0, Lq, g, Hkv, seqQ, past, window, b0]);
        gemm('dQ = dS K', { M: Mg, N: hd, K: kLen, batch: nbat, alpha: scale,
          a: { ptr: dsPtr, type: T, trans: false, ld: ldP, batchStride: Mg * ldP },
          b: { ...kB, ptr: kHm + kOff, trans: false }, d: { ptr: dqBlk + qOff, type: T, ld: hd, batchStride: qBatchStride } });
      }
      const pA = { type: T, trans: true, ld: ldP, batchStride: Mg * ldP };
      gemm('dV += PᵀdO', { M: kLen, N: hd, K: Mg, batch: nbat, beta: 1,
        a: { ...pA, ptr: pPtr }, b: { ptr: doBlk + qOff, type: T, trans: false, ld: hd, batchStride: qBatchStride },
        d: { ...accD, ptr: dv32 + kvAccOff } });
      gemm('dK += dSᵀQ', { M: kLen, N: hd, K: Mg, batch: nbat, beta: 1, alpha: scale,
        a: { ...pA, ptr: dsPtr }, b: { ptr: qBlk + qOff, type: T, trans: false, ld: hd, batchStride: qBatchStride },
        d: { ...accD, ptr: dk32 + kvAccOff } });
    }
  }
  const fromF32 = dev.kernel('attention_backward', `attn_from_blocks_f32_to_${s}`, 'ppiiiiii');
  if (path === 'gemm') {
    const fromBlocks = dev.kernel('attention_backward', `attn_from_blocks_${s}`, 'ppiiiiii');
    dev.launch1d(fromBlocks, dqc.size, [dqc.ptr, dqBlk, B, seqQ, seqQ, H, hd, Lq]);
  }
  dev.launch1d(fromF32, dkc.size, [dkc.ptr, dk32, B, kvStride, kvLen, Hkv, hd, kvStride]);
  dev.launch1d(fromF32, dvc.size, [dvc.ptr, dv32, B, kvStride, kvLen, Hkv, hd, kvStride]);
}
