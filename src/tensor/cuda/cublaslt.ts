// GEMMs through cuBLASLt, in row-major terms: D[M,N] = alpha · opA(A)[M,K] · opB(B)[K,N] + beta · C (+ bias[N]).
//
// cuBLAS is column-major: a row-major [r, c] buffer with leading dimension ld is the column-major
// [c, r] matrix with the same ld. So we compute Dᵀ[N,M] = opB(B)ᵀ · opA(A)ᵀ: cuBLAS's A is our B and
// its B is our A, each with op T exactly when our operand is stored transposed. The Device's
// matmul (out = x · wᵀ, nn.Linear) is a = x, b = w stored [N,K] (transposed): cuBLAS's "TN" case,
// the one FP8 and INT8 tensor-core GEMMs require.
// Types: BF16/FP16/FP32 with FP32 compute (CUBLAS_COMPUTE_32F: no TF32 for f32), FP8 E4M3 with
// per-tensor scale pointers (A/B scales multiply the stored values), INT8 → INT32 (IMMA). One plan
// (descriptors + heuristic algorithm) is cached per shape, types, ops, ld, batch and pointer alignment.

import type { LibraryHandle } from 'koffi';
import type { ComputeDType } from '../device.js';
import { CudaError } from './errors.js';
import { bindFirst, openLibrary, type NativeFunction } from './libs.js';
import type { CudaDriver, DevicePtr, Handle } from './driver.js';

const CUDA_R_32F = 0;
const CUDA_R_16F = 2;
const CUDA_R_8I = 3;
const CUDA_R_32I = 10;
const CUDA_R_16BF = 14;
const CUDA_R_8F_E4M3 = 28;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_COMPUTE_32I = 72;
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
const DESC_TRANSA = 3;
const DESC_TRANSB = 4;
const DESC_EPILOGUE = 7;
const DESC_BIAS_POINTER = 8;
const DESC_A_SCALE_POINTER = 17;
const DESC_B_SCALE_POINTER = 18;
const LAYOUT_BATCH_COUNT = 5;
const LAYOUT_STRIDED_BATCH_OFFSET = 6;
const EPILOGUE_DEFAULT = 1;
const EPILOGUE_BIAS = 4;
const PREF_MAX_WORKSPACE_BYTES = 1;
const PREF_MIN_ALIGNMENT_A = 5;
const PREF_MIN_ALIGNMENT_B = 6;
const PREF_MIN_ALIGNMENT_C = 7;
const PREF_MIN_ALIGNMENT_D = 8;
/** sizeof(cublasLtMatmulHeuristicResult_t): algo (64) + workspaceSize (8) + state (4) + wavesCount (4) + reserved (16). */
const HEURISTIC_RESULT_BYTES = 96;
const HEURISTIC_CANDIDATES = 8;

export const WORKSPACE_BYTES = 32 * 1024 * 1024;

const STATUS_NAMES: Record<number, string> = {
  1: 'CUBLAS_STATUS_NOT_INITIALIZED',
  3: 'CUBLAS_STATUS_ALLOC_FAILED',
  7: 'CUBLAS_STATUS_INVALID_VALUE',
  8: 'CUBLAS_STATUS_ARCH_MISMATCH',
  11: 'CUBLAS_STATUS_MAPPING_ERROR',
  13: 'CUBLAS_STATUS_EXECUTION_FAILED',
  14: 'CUBLAS_STATUS_INTERNAL_ERROR',
  15: 'CUBLAS_STATUS_NOT_SUPPORTED',
  16: 'CUBLAS_STATUS_LICENSE_ERROR',
};

interface LtFunctions {
  cublasLtCreate: NativeFunction;
  cublasLtGetVersion: NativeFunction;
  cublasLtMatmulDescCreate: NativeFunction;
  cublasLtMatmulDescSetAttribute: NativeFunction;
  cublasLtMatrixLayoutCreate: NativeFunction;
  cublasLtMatrixLayoutSetAttribute: NativeFunction;
  cublasLtMatmulPreferenceCreate: NativeFunction;
  cublasLtMatmulPreferenceSetAttribute: NativeFunction;
  cublasLtMatmulPreferenceDestroy: NativeFunction;
  cublasLtMatmulAlgoGetHeuristic: NativeFunction;
  cublasLtMatmul: NativeFunction;
}

function bindLt(lib: LibraryHandle): LtFunctions {
  const f = (proto: string) => bindFirst(lib, [proto]);
  return {
    cublasLtCreate: f('int cublasLtCreate(void *handle)'),
    cublasLtGetVersion: f('size_t cublasLtGetVersion()'),
    cublasLtMatmulDescCreate: f('int cublasLtMatmulDescCreate(void *desc, int computeType, int scaleType)'),
    cublasLtMatmulDescSetAttribute: f('int cublasLtMatmulDescSetAttribute(void *desc, int attr, void *buf, size_t size)'),
    cublasLtMatrixLayoutCreate: f('int cublasLtMatrixLayoutCreate(void *layout, int type, uint64_t rows, uint64_t cols, int64_t ld)'),
    cublasLtMatrixLayoutSetAttribute: f('int cublasLtMatrixLayoutSetAttribute(void *layout, int attr, void *buf, size_t size)'),
    cublasLtMatmulPreferenceCreate: f('int cublasLtMatmulPreferenceCreate(void *pref)'),
    cublasLtMatmulPreferenceSetAttribute: f('int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, void *buf, size_t size)'),
    cublasLtMatmulPreferenceDestroy: f('int cublasLtMatmulPreferenceDestroy(void *pref)'),
    cublasLtMatmulAlgoGetHeuristic: f(
      'int cublasLtMatmulAlgoGetHeuristic(void *handle, void *op, void *a, void *b, void *c, void *d, void *pref, ' +
        'int requested, void *results, void *count)',
    ),
    cublasLtMatmul: f(
      'int cublasLtMatmul(void *handle, void *op, void *alpha, uint64_t A, void *Adesc, uint64_t B, void *Bdesc, ' +
        'void *beta, uint64_t C, void *Cdesc, uint64_t D, void *Ddesc, void *algo, uint64_t workspace, size_t workspaceSize, void *stream)',
    ),
  };
}

/** Element types a GEMM operand may have. */
export type GemmType = 'f32' | 'bf16' | 'f16' | 'fp8e4m3' | 'i8' | 'i32';

/** One operand in row-major terms. */
export interface GemmOperand {
  ptr: DevicePtr;
  type: GemmType;
  /** A: stored [M,K] (false) or [K,M] (true); B: stored [K,N] (false) or [N,K] (true, the nn.Linear weight layout). */
  trans: boolean;
  /** Leading dimension (elements between rows of the stored matrix). */
  ld: number;
  /** Elements between consecutive matrices of a batch. */
  batchStride?: number;
  /** FP8 only: device pointer to one f32 that multiplies the stored values. */
  scale?: DevicePtr;
}

export interface GemmArgs {
  M: number;
  N: number;
  K: number;
  a: GemmOperand;
  b: GemmOperand;
  /** Output, stored [M,N] row-major. */
  d: { ptr: DevicePtr; type: GemmType; ld: number; batchStride?: number };
  /** beta's matrix; default D itself (D = alpha·A·B + beta·D, accumulation in place). */
  c?: { ptr: DevicePtr; type: GemmType; ld: number; batchStride?: number };
  /** Default 1. */
  alpha?: number;
  /** Default 0. */
  beta?: number;
  /** Independent GEMMs over batchStride-spaced matrices; default 1. */
  batch?: number;
  /** bias[N] of D's type, added to every row (not with i32 compute). */
  bias?: DevicePtr;
}

interface GemmPlan {
  desc: Handle;
  a: Handle;
  b: Handle;
  c: Handle;
  d: Handle;
  algo: Buffer;
  workspaceBytes: number;
  integer: boolean;
}

/** Largest power of two (≤ 256) that divides the address: what the algorithm may assume. */
function alignmentOf(ptr: bigint): number {
  let a = 256;
  while (a > 1 && ptr % BigInt(a) !== 0n) a >>= 1;
  return a;
}

const CUDA_TYPES: Record<GemmType, number> = {
  f32: CUDA_R_32F, bf16: CUDA_R_16BF, f16: CUDA_R_16F, fp8e4m3: CUDA_R_8F_E4M3, i8: CUDA_R_8I, i32: CUDA_R_32I,
};

export class CublasLt {
  readonly path: string;
  readonly version: number;
  private readonly fn: LtFunctions;
  private readonly handle: Handle;
  private readonly workspace: DevicePtr;
  private readonly plans = new Map<string, GemmPlan>();
  private readonly out = new BigUint64Array(1);
  private readonly alphaF = new Float32Array(1);
  private readonly betaF = new Float32Array(1);
  private readonly alphaI = new Int32Array(1);
  private readonly betaI = new Int32Array(1);
  private readonly pointerAttr = new BigUint64Array(1);

  constructor(private readonly driver: CudaDriver) {
    const opened = openLibrary('cuBLASLt', ['libcublasLt.so.13', 'libcublasLt.so.12', 'libcublasLt.so']);
    this.path = opened.path;
    this.fn = bindLt(opened.lib);
    this.version = Number(this.fn.cublasLtGetVersion());
    this.check(this.fn.cublasLtCreate(this.out), 'cublasLtCreate');
    this.handle = this.out[0];
    this.workspace = driver.allocPermanent(WORKSPACE_BYTES);
  }

  private check(status: number, what: string): void {
    if (status !== 0) throw new CudaError(`cuBLASLt error in ${what}: ${STATUS_NAMES[status] ?? `status ${status}`}`);
  }

  /** Number of cached GEMM plans (one per shape/dtype/bias/alignment seen). */
  get planCount(): number {
    return this.plans.size;
  }

  /** out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]), all in `dtype` (the Device's matmul). */
  matmul(dtype: ComputeDType, M: number, N: number, K: number, out: DevicePtr, x: DevicePtr, w: DevicePtr, bias?: DevicePtr): void {
    this.gemm({
      M, N, K,
      a: { ptr: x, type: dtype, trans: false, ld: K },
      b: { ptr: w, type: dtype, trans: true, ld: K },
      d: { ptr: out, type: dtype, ld: N },
      bias,
    });
  }

  /** The general GEMM (see GemmArgs); queued on the device's stream. */
  gemm(g: GemmArgs): void {
    const batch = g.batch ?? 1;
    if (g.M === 0 || g.N === 0 || batch === 0) return;
    const alpha = g.alpha ?? 1, beta = g.beta ?? 0;
    const c = g.c ?? g.d;
    const key = [
      g.M, g.N, g.K, batch,
      g.a.type, g.a.trans ? 'T' : 'N', g.a.ld, g.a.batchStride ?? 0, alignmentOf(g.a.ptr), g.a.scale !== undefined ? 's' : '',
      g.b.type, g.b.trans ? 'T' : 'N', g.b.ld, g.b.batchStride ?? 0, alignmentOf(g.b.ptr), g.b.scale !== undefined ? 's' : '',
      c.type, c.ld, c.batchStride ?? 0, alignmentOf(c.ptr),
      g.d.type, g.d.ld, g.d.batchStride ?? 0, alignmentOf(g.d.ptr),
      g.bias !== undefined ? `bias${alignmentOf(g.bias)}` : '', beta !== 0 ? 'beta' : '',
    ].join(':');
    let plan = this.plans.get(key);
    if (!plan) {
      plan = this.createPlan(g, c, batch, key);
      this.plans.set(key, plan);
    }
    const setPointer = (attr: number, ptr: DevicePtr, what: string) => {
      this.pointerAttr[0] = ptr;
      this.check(this.fn.cublasLtMatmulDescSetAttribute(plan.desc, attr, this.pointerAttr, 8), what);
    };
    if (g.bias !== undefined) setPointer(DESC_BIAS_POINTER, g.bias, 'set BIAS_POINTER');
    // cuBLAS's A is our b and its B our a.
    if (g.b.scale !== undefined) setPointer(DESC_A_SCALE_POINTER, g.b.scale, 'set A_SCALE_POINTER');
    if (g.a.scale !== undefined) setPointer(DESC_B_SCALE_POINTER, g.a.scale, 'set B_SCALE_POINTER');
    let alphaBuf: Float32Array | Int32Array, betaBuf: Float32Array | Int32Array;
    if (plan.integer) {
      this.alphaI[0] = alpha;
      this.betaI[0] = beta;
      alphaBuf = this.alphaI;
      betaBuf = this.betaI;
    } else {
      this.alphaF[0] = alpha;
      this.betaF[0] = beta;
      alphaBuf = this.alphaF;
      betaBuf = this.betaF;
    }
    this.check(
      this.fn.cublasLtMatmul(
        this.handle, plan.desc, alphaBuf, g.b.ptr, plan.a, g.a.ptr, plan.b, betaBuf, c.ptr, plan.c, g.d.ptr, plan.d,
        plan.algo, this.workspace, plan.workspaceBytes, this.driver.stream,
      ),
      `cublasLtMatmul(${key})`,
    );
  }

  private createPlan(g: GemmArgs, c: NonNullable<GemmArgs['c']>, batch: number, key: string): GemmPlan {
    const integer = g.a.type === 'i8';
    if (integer && (g.b.type !== 'i8' || g.d.type !== 'i32' || g.bias !== undefined)) {
      throw new CudaError(`gemm: int8 GEMMs take i8 × i8 → i32 without bias (${key})`);
    }
    const int32 = (v: number) => new Int32Array([v]);
    const computeType = integer ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
    const scaleType = integer ? CUDA_R_32I : CUDA_R_32F;
    this.check(this.fn.cublasLtMatmulDescCreate(this.out, computeType, scaleType), 'cublasLtMatmulDescCreate');
    const desc = this.out[0];
    this.check(this.fn.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, int32(g.b.trans ? CUBLAS_OP_T : CUBLAS_OP_N), 4), 'set TRANSA');
    this.check(this.fn.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSB, int32(g.a.trans ? CUBLAS_OP_T : CUBLAS_OP_N), 4), 'set TRANSB');
    this.check(
      this.fn.cublasLtMatmulDescSetAttribute(desc, DESC_EPILOGUE, new Uint32Array([g.bias !== undefined ? EPILOGUE_BIAS : EPILOGUE_DEFAULT]), 4),
      'set EPILOGUE',
    );
    // Scale pointers must be set before the heuristic query for FP8 (their presence selects kernels).
    const setPointer = (attr: number, ptr: DevicePtr | undefined, what: string) => {
      if (ptr === undefined) return;
      this.check(this.fn.cublasLtMatmulDescSetAttribute(desc, attr, new BigUint64Array([ptr]), 8), what);
    };
    setPointer(DESC_BIAS_POINTER, g.bias, 'set BIAS_POINTER');
    setPointer(DESC_A_SCALE_POINTER, g.b.scale, 'set A_SCALE_POINTER');
    setPointer(DESC_B_SCALE_POINTER, g.a.scale, 'set B_SCALE_POINTER');
    const layout = (type: GemmType, rows: number, cols: number, ld: number, stride: number | undefined): Handle => {
      this.check(this.fn.cublasLtMatrixLayoutCreate(this.out, CUDA_TYPES[type], BigInt(rows), BigInt(cols), BigInt(ld)), 'cublasLtMatrixLayoutCreate');
      const l = this.out[0];
      if (batch > 1) {
        this.check(this.fn.cublasLtMatrixLayoutSetAttribute(l, LAYOUT_BATCH_COUNT, int32(batch), 4), 'set BATCH_COUNT');
        this.check(this.fn.cublasLtMatrixLayoutSetAttribute(l, LAYOUT_STRIDED_BATCH_OFFSET, new BigInt64Array([BigInt(stride ?? 0)]), 8), 'set STRIDED_BATCH_OFFSET');
      }
      return l;
    };
    const { M, N, K } = g;
    // Column-major shapes of the stored buffers (see the header): our B is cuBLAS's A, our A its B.
    const a = g.b.trans ? layout(g.b.type, K, N, g.b.ld, g.b.batchStride) : layout(g.b.type, N, K, g.b.ld, g.b.batchStride);
    const b = g.a.trans ? layout(g.a.type, M, K, g.a.ld, g.a.batchStride) : layout(g.a.type, K, M, g.a.ld, g.a.batchStride);
    const d = layout(g.d.type, N, M, g.d.ld, g.d.batchStride);
    const sameC = c.ptr === g.d.ptr && c.type === g.d.type && c.ld === g.d.ld && (c.batchStride ?? 0) === (g.d.batchStride ?? 0);
    const cl = sameC ? d : layout(c.type, N, M, c.ld, c.batchStride);

    this.check(this.fn.cublasLtMatmulPreferenceCreate(this.out), 'cublasLtMatmulPreferenceCreate');
    const pref = this.out[0];
    try {
      const setPref = (attr: number, value: BigUint64Array | Uint32Array, what: string) =>
        this.check(this.fn.cublasLtMatmulPreferenceSetAttribute(pref, attr, value, value.byteLength), what);
      setPref(PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(WORKSPACE_BYTES)]), 'set MAX_WORKSPACE_BYTES');
      setPref(PREF_MIN_ALIGNMENT_A, new Uint32Array([alignmentOf(g.b.ptr)]), 'set MIN_ALIGNMENT_A');
      setPref(PREF_MIN_ALIGNMENT_B, new Uint32Array([alignmentOf(g.a.ptr)]), 'set MIN_ALIGNMENT_B');
      setPref(PREF_MIN_ALIGNMENT_C, new Uint32Array([alignmentOf(c.ptr)]), 'set MIN_ALIGNMENT_C');
      setPref(PREF_MIN_ALIGNMENT_D, new Uint32Array([alignmentOf(g.d.ptr)]), 'set MIN_ALIGNMENT_D');

      const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * HEURISTIC_CANDIDATES);
      const count = new Int32Array(1);
      this.check(
        this.fn.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, cl, d, pref, HEURISTIC_CANDIDATES, results, count),
        `cublasLtMatmulAlgoGetHeuristic(${key})`,
      );
      for (let i = 0; i < count[0]; i++) {
        const base = i * HEURISTIC_RESULT_BYTES;
        const state = results.readInt32LE(base + 72);
        if (state !== 0) continue;
        const workspaceBytes = Number(results.readBigUInt64LE(base + 64));
        return { desc, a, b, c: cl, d, algo: Buffer.from(results.subarray(base, base + 64)), workspaceBytes, integer };
      }
    } finally {
      this.fn.cublasLtMatmulPreferenceDestroy(pref);
    }
    throw new CudaError(`cuBLASLt has no algorithm for GEMM ${key}`);
  }
}
