// GEMMs through cuBLASLt: out[M,N] = x[M,K] · w[N,K]ᵀ (+ bias[N]) for row-major tensors.
//
// cuBLAS is column-major, so we compute outᵀ[N,M] = w · xᵀ: A = w seen as a column-major K×N matrix
// with op T, B = x seen as column-major K×M with op N, D column-major N×M (ld N) = row-major out.
// The bias (length N = rows of D) goes through the BIAS epilogue. Inputs BF16/FP16/FP32, always
// FP32 compute (CUBLAS_COMPUTE_32F: no TF32 for f32). One plan (descriptors + heuristic algorithm)
// is cached per shape, dtype, bias and pointer alignment.

import type { LibraryHandle } from 'koffi';
import type { ComputeDType } from '../device.js';
import { CudaError } from './errors.js';
import { bindFirst, openLibrary, type NativeFunction } from './libs.js';
import type { CudaDriver, DevicePtr, Handle } from './driver.js';

const CUDA_R_32F = 0;
const CUDA_R_16F = 2;
const CUDA_R_16BF = 14;
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;
const DESC_TRANSA = 3;
const DESC_TRANSB = 4;
const DESC_EPILOGUE = 7;
const DESC_BIAS_POINTER = 8;
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

interface GemmPlan {
  desc: Handle;
  a: Handle;
  b: Handle;
  d: Handle;
  algo: Buffer;
  workspaceBytes: number;
}

/** Largest power of two (≤ 256) that divides the address: what the algorithm may assume. */
function alignmentOf(ptr: bigint): number {
  let a = 256;
  while (a > 1 && ptr % BigInt(a) !== 0n) a >>= 1;
  return a;
}

function dataType(dtype: ComputeDType): number {
  return dtype === 'bf16' ? CUDA_R_16BF : dtype === 'f16' ? CUDA_R_16F : CUDA_R_32F;
}

export class CublasLt {
  readonly path: string;
  readonly version: number;
  private readonly fn: LtFunctions;
  private readonly handle: Handle;
  private readonly workspace: DevicePtr;
  private readonly plans = new Map<string, GemmPlan>();
  private readonly out = new BigUint64Array(1);
  private readonly one = new Float32Array([1]);
  private readonly zero = new Float32Array([0]);
  private readonly biasAttr = new BigUint64Array(1);

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

  matmul(dtype: ComputeDType, M: number, N: number, K: number, out: DevicePtr, x: DevicePtr, w: DevicePtr, bias?: DevicePtr): void {
    if (M === 0 || N === 0) return;
    const hasBias = bias !== undefined;
    const key = `${dtype}:${M}:${N}:${K}:${hasBias ? 1 : 0}:${alignmentOf(w)}:${alignmentOf(x)}:${alignmentOf(out)}${hasBias ? ':' + alignmentOf(bias) : ''}`;
    let plan = this.plans.get(key);
    if (!plan) {
      plan = this.createPlan(dtype, M, N, K, hasBias, w, x, out, key);
      this.plans.set(key, plan);
    }
    if (hasBias) {
      this.biasAttr[0] = bias;
      this.check(this.fn.cublasLtMatmulDescSetAttribute(plan.desc, DESC_BIAS_POINTER, this.biasAttr, 8), 'set BIAS_POINTER');
    }
    this.check(
      this.fn.cublasLtMatmul(
        this.handle, plan.desc, this.one, w, plan.a, x, plan.b, this.zero, out, plan.d, out, plan.d,
        plan.algo, this.workspace, plan.workspaceBytes, this.driver.stream,
      ),
      `cublasLtMatmul(${key})`,
    );
  }

  private createPlan(dtype: ComputeDType, M: number, N: number, K: number, hasBias: boolean, w: DevicePtr, x: DevicePtr, out: DevicePtr, key: string): GemmPlan {
    const type = dataType(dtype);
    const int32 = (v: number) => new Int32Array([v]);
    this.check(this.fn.cublasLtMatmulDescCreate(this.out, CUBLAS_COMPUTE_32F, CUDA_R_32F), 'cublasLtMatmulDescCreate');
    const desc = this.out[0];
    this.check(this.fn.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSA, int32(CUBLAS_OP_T), 4), 'set TRANSA');
    this.check(this.fn.cublasLtMatmulDescSetAttribute(desc, DESC_TRANSB, int32(CUBLAS_OP_N), 4), 'set TRANSB');
    this.check(
      this.fn.cublasLtMatmulDescSetAttribute(desc, DESC_EPILOGUE, new Uint32Array([hasBias ? EPILOGUE_BIAS : EPILOGUE_DEFAULT]), 4),
      'set EPILOGUE',
    );
    const layout = (rows: number, cols: number, ld: number): Handle => {
      this.check(this.fn.cublasLtMatrixLayoutCreate(this.out, type, BigInt(rows), BigInt(cols), BigInt(ld)), 'cublasLtMatrixLayoutCreate');
      return this.out[0];
    };
    const a = layout(K, N, K);
    const b = layout(K, M, K);
    const d = layout(N, M, N);

    this.check(this.fn.cublasLtMatmulPreferenceCreate(this.out), 'cublasLtMatmulPreferenceCreate');
    const pref = this.out[0];
    try {
      const setPref = (attr: number, value: BigUint64Array | Uint32Array, what: string) =>
        this.check(this.fn.cublasLtMatmulPreferenceSetAttribute(pref, attr, value, value.byteLength), what);
      setPref(PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(WORKSPACE_BYTES)]), 'set MAX_WORKSPACE_BYTES');
      setPref(PREF_MIN_ALIGNMENT_A, new Uint32Array([alignmentOf(w)]), 'set MIN_ALIGNMENT_A');
      setPref(PREF_MIN_ALIGNMENT_B, new Uint32Array([alignmentOf(x)]), 'set MIN_ALIGNMENT_B');
      setPref(PREF_MIN_ALIGNMENT_C, new Uint32Array([alignmentOf(out)]), 'set MIN_ALIGNMENT_C');
      setPref(PREF_MIN_ALIGNMENT_D, new Uint32Array([alignmentOf(out)]), 'set MIN_ALIGNMENT_D');

      const results = Buffer.alloc(HEURISTIC_RESULT_BYTES * HEURISTIC_CANDIDATES);
      const count = new Int32Array(1);
      this.check(
        this.fn.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, d, d, pref, HEURISTIC_CANDIDATES, results, count),
        `cublasLtMatmulAlgoGetHeuristic(${key})`,
      );
      for (let i = 0; i < count[0]; i++) {
        const base = i * HEURISTIC_RESULT_BYTES;
        const state = results.readInt32LE(base + 72);
        if (state !== 0) continue;
        const workspaceBytes = Number(results.readBigUInt64LE(base + 64));
        return { desc, a, b, d, algo: Buffer.from(results.subarray(base, base + 64)), workspaceBytes };
      }
    } finally {
      this.fn.cublasLtMatmulPreferenceDestroy(pref);
    }
    throw new CudaError(`cuBLASLt has no algorithm for ${dtype} GEMM M=${M} N=${N} K=${K}${hasBias ? ' with bias' : ''}`);
  }
}
