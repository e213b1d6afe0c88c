// Decode attention (seqQ < 8) cases aimed at the fused split-KV kernel's merge (attention_decode_fused_*:
// the last split of each (row, head group) merges, counted through a fixed counter buffer that every
// launch leaves zeroed): many splits, key counts just past a split boundary, splits left empty by
// ragged kvLens and windows, back-to-back launches of different layouts, and captured-graph replays.
// References are the cpu device's attention,
// per sequence for ragged batches. Shared by test/cuda-attn-decode.test.ts and scripts/gpu/run-cuda-tests.ts.

import type { CudaDevice, CudaInts } from '../src/tensor/cuda/index.js';
import type { AttentionShape, ComputeDType, Device, Tensor } from '../src/tensor/device.js';
import { attentionCase, compare, freeAll, Inputs, type CaseRun, type Check, runCaseList, type OpCase } from './cuda-cases.js';

type Dims = Omit<AttentionShape, 'scale' | 'batch' | 'kvLen'>;

/** One ragged decode problem: host inputs, the cpu reference (per sequence), and the device tensors. */
class RaggedProblem {
  readonly q: Float32Array;
  readonly k: Float32Array;
  readonly v: Float32Array;
  constructor(readonly dims: Dims, maxBatch: number, seed: number, dtype: ComputeDType) {
    const inp = new Inputs(seed, dtype);
    this.q = inp.floats(maxBatch * dims.seqQ * dims.nHead * dims.headDim, 2);
    this.k = inp.floats(maxBatch * dims.kvStride * dims.nKvHead * dims.headDim, 2);
    this.v = inp.floats(maxBatch * dims.kvStride * dims.nKvHead * dims.headDim);
  }
  shape(kvLens: readonly number[]): AttentionShape {
    return { ...this.dims, batch: kvLens.length, kvLen: Math.max(...kvLens), scale: 1 / Math.sqrt(this.dims.headDim) };
  }
  /** The cpu's attention of each sequence with its own kvLen, rows concatenated. */
  reference(cpu: Device, kvLens: readonly number[]): Float32Array {
    const { seqQ, nHead, nKvHead, headDim, kvStride } = this.dims;
    const qRow = nHead * headDim, kvRow = nKvHead * headDim;
    const out = new Float32Array(kvLens.length * seqQ * qRow);
    kvLens.forEach((kvLen, b) => {
      const q = cpu.upload(this.q.subarray(b * seqQ * qRow, (b + 1) * seqQ * qRow), [seqQ, qRow]);
      const k = cpu.upload(this.k.subarray(b * kvStride * kvRow, (b + 1) * kvStride * kvRow), [kvStride, kvRow]);
      const v = cpu.upload(this.v.subarray(b * kvStride * kvRow, (b + 1) * kvStride * kvRow), [kvStride, kvRow]);
      const o = cpu.empty([seqQ, qRow]);
      cpu.attention(o, q, k, v, { ...this.shape([kvLen]), batch: 1 });
      out.set(cpu.download(o), b * seqQ * qRow);
      freeAll(cpu, q, k, v, o);
    });
    return out;
  }
  upload(dev: Device, batch: number): { q: Tensor; k: Tensor; v: Tensor; out: Tensor } {
    const { seqQ, nHead, nKvHead, headDim, kvStride } = this.dims;
    const qRow = nHead * headDim, kvRow = nKvHead * headDim;
    return {
      q: dev.upload(this.q.subarray(0, batch * seqQ * qRow), [batch * seqQ, qRow]),
      k: dev.upload(this.k.subarray(0, batch * kvStride * kvRow), [batch * kvStride, kvRow]),
      v: dev.upload(this.v.subarray(0, batch * kvStride * kvRow), [batch * kvStride, kvRow]),
      out: dev.empty([batch * seqQ, qRow]),
    };
  }
}

function isCuda(dev: Device): dev is CudaDevice {
  return 'attentionAt' in dev;
}

/** attentionAt with device kvLens on cuda; elsewhere (the runner's --self-test) each sequence on its own. */
function raggedAttention(dev: Device, t: { q: Tensor; k: Tensor; v: Tensor; out: Tensor }, shape: AttentionShape, kvLens: readonly number[]): void {
  if (isCuda(dev)) {
    const lens = dev.allocInts(kvLens.length);
    dev.setInts(lens, Int32Array.from(kvLens));
    dev.attentionAt(t.out, t.q, t.k, t.v, shape, lens);
    dev.synchronize();
    dev.freeInts(lens);
    return;
  }
  const { seqQ, kvStride } = shape;
  kvLens.forEach((kvLen, b) => {
    dev.attention(dev.rows(t.out, b * seqQ, seqQ), dev.rows(t.q, b * seqQ, seqQ), dev.rows(t.k, b * kvStride, kvStride),
      dev.rows(t.v, b * kvStride, kvStride), { ...shape, batch: 1, kvLen });
  });
}

function raggedCase(label: string, dims: Dims, kvLens: number[]): OpCase {
  const name = `attention decode ragged ${label}: q${dims.seqQ} kvLens [${kvLens.join(',')}]/${dims.kvStride} h${dims.nHead}/${dims.nKvHead} d${dims.headDim}` +
    (dims.window !== undefined ? ` win${dims.window}` : '');
  return {
    name,
    run(cpu, gpu, dtype) {
      const problem = new RaggedProblem(dims, kvLens.length, 500 + kvLens.length * 7 + dims.headDim, dtype);
      const t = problem.upload(gpu, kvLens.length);
      raggedAttention(gpu, t, problem.shape(kvLens), kvLens);
      const check = compare(name, dtype, gpu.download(t.out), problem.reference(cpu, kvLens));
      freeAll(gpu, t.q, t.k, t.v, t.out);
      return [check];
    },
  };
}

/** Three launches of different layouts back to back on the same device: each against the cpu (the counters must be back at 0 after every launch). */
function backToBackCase(): OpCase {
  const name = 'attention decode back to back: b1 kv8000 h32/8 d64, b4 q3 kv900 h12/2 d128, b1 kv8000 again';
  return {
    name,
    run(cpu, gpu, dtype) {
      const runs: [Dims, number[]][] = [
        [{ seqQ: 1, kvStride: 8192, nHead: 32, nKvHead: 8, headDim: 64 }, [8000]],
        [{ seqQ: 3, kvStride: 901, nHead: 12, nKvHead: 2, headDim: 128 }, [900, 900, 900, 900]],
      ];
      const problems = runs.map(([dims, lens], i) => ({ p: new RaggedProblem(dims, lens.length, 900 + i, dtype), lens }));
      const checks: Check[] = [];
      for (const [i, which] of [0, 1, 0].entries()) {
        const { p, lens } = problems[which]!;
        const t = p.upload(gpu, lens.length);
        gpu.attention(t.out, t.q, t.k, t.v, p.shape(lens));
        checks.push(compare(`${name} (launch ${i + 1})`, dtype, gpu.download(t.out), p.reference(cpu, lens)));
        freeAll(gpu, t.q, t.k, t.v, t.out);
      }
      return checks;
    },
  };
}

/** The decode cases of this file (cpu vs device; they run in the runner's --self-test too). */
export function attnDecodeCases(): OpCase[] {
  const llama = { nHead: 32, nKvHead: 8, headDim: 64 };
  return [
    attentionCase('decode fused many splits', { batch: 1, seqQ: 1, kvLen: 8000, kvStride: 8192, ...llama }),
    attentionCase('decode fused split boundary +1', { batch: 1, seqQ: 1, kvLen: 2049, kvStride: 2056, ...llama }),
    attentionCase('decode fused split boundary +1 small', { batch: 1, seqQ: 1, kvLen: 129, kvStride: 130, nHead: 8, nKvHead: 2, headDim: 128 }),
    attentionCase('decode fused b8 kv576', { batch: 8, seqQ: 1, kvLen: 576, kvStride: 580, ...llama }),
    attentionCase('decode fused q7 window', { batch: 1, seqQ: 7, kvLen: 3000, kvStride: 3001, nHead: 16, nKvHead: 2, headDim: 64, window: 250 }),
    attentionCase('decode fused MHA d256', { batch: 1, seqQ: 2, kvLen: 1500, kvStride: 1500, nHead: 3, nKvHead: 3, headDim: 256 }),
    attentionCase('decode fused group 6 d96', { batch: 2, seqQ: 1, kvLen: 1111, kvStride: 1120, nHead: 12, nKvHead: 2, headDim: 96 }),
    attentionCase('decode fused MQA 32 d32', { batch: 1, seqQ: 1, kvLen: 3333, kvStride: 3333, nHead: 32, nKvHead: 1, headDim: 32 }),
    raggedCase('empty splits', { seqQ: 1, kvStride: 5000, ...llama }, [5000, 40, 1]),
    raggedCase('seqQ 3', { seqQ: 3, kvStride: 2100, nHead: 8, nKvHead: 2, headDim: 64 }, [2100, 3, 700, 129]),
    raggedCase('window, empty splits', { seqQ: 1, kvStride: 3000, nHead: 8, nKvHead: 2, headDim: 128, window: 700 }, [3000, 50, 7]),
    raggedCase('odd head dim', { seqQ: 2, kvStride: 1300, nHead: 6, nKvHead: 3, headDim: 40 }, [1300, 2, 513]),
    backToBackCase(),
  ];
}

/** Runs attnDecodeCases on one device against the cpu. */
export function runAttnDecodeCases(cpu: Device, gpu: Device, dtype: ComputeDType, filter?: (name: string) => boolean): CaseRun {
  return runCaseList(attnDecodeCases(), cpu, gpu, dtype, filter);
}

/** GPU only: a captured attentionAt replayed with three kvLens settings (each against the cpu). */
export function runAttnDecodeGpuCases(cpu: Device, gpu: CudaDevice, dtype: ComputeDType): CaseRun {
  const checks: Check[] = [];
  const guard = (name: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      checks.push({ case: name, dtype, error: Infinity, tol: 0, ok: false, note: `threw: ${(e as Error).message}` });
    }
  };
  const graphName = 'attention decode graph replay: attentionAt b3 kvLens changed between replays';
  guard(graphName, () => {
    const dims: Dims = { seqQ: 1, kvStride: 4096, nHead: 32, nKvHead: 8, headDim: 64 };
    const settings = [[4096, 100, 2000], [1, 4096, 3000], [129, 128, 4095]];
    const p = new RaggedProblem(dims, 3, 4242, dtype);
    const t = p.upload(gpu, 3);
    const lens: CudaInts = gpu.allocInts(3);
    gpu.setInts(lens, Int32Array.from(settings[0]!));
    const shape = p.shape([4096, 4096, 4096]);
    gpu.attentionAt(t.out, t.q, t.k, t.v, shape, lens); // compiles outside the capture
    const graph = gpu.captureGraph(() => gpu.attentionAt(t.out, t.q, t.k, t.v, shape, lens));
    for (const [i, kvLens] of [...settings, settings[0]!].entries()) {
      gpu.setInts(lens, Int32Array.from(kvLens));
      graph.launch();
      graph.launch();
      checks.push(compare(`${graphName} (replay ${i + 1}: [${kvLens.join(',')}])`, dtype, gpu.download(t.out), p.reference(cpu, kvLens)));
    }
    graph.destroy();
    gpu.freeInts(lens);
    freeAll(gpu, t.q, t.k, t.v, t.out);
  });
  return { checks, failures: checks.filter((c) => !c.ok).map((c) => `${c.dtype} ${c.case}: ${c.note ?? `error ${c.error}`}`) };
}
