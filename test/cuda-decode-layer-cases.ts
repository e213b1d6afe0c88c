// The fused decode layer (src/tensor/cuda/decode-layer.ts, kernels/decode_layer.cu) against the per-op
// fused decode path it replaces, on small random Llama checkpoints of awkward shapes: head dim 64 with
// 5 query heads per KV head (two heads for one warp's head slot), head dim 128 without GQA; hidden sizes that are not
// multiples of the 512-byte spans; q/k weights scaled up so attention is peaked (a wrong key or head
// shows). Per weight format (BF16 as stored, FP8 static, FP8_DYNAMIC, W8A8 dynamic and static, W8A16,
// W4A16 group 64 symmetric and asymmetric; quantized on the cpu from random-id calibration windows) and
// dtype (bf16, f16): 4 teacher-forced decode steps after a 700-token prefill (22 key tiles: 6 attention
// splits of 4 tiles, the last one partial), each step's logits with decodeLayerAt on against off; the step must
// have run decode_layer_* (and no per-op layer kernels); a CUDA graph of the step, replayed at two
// later positions, equals the eager step bit for bit (the grid barrier leaves its state ready for the
// next launch).
// Shared by test/cuda-decode-layer.test.ts (vitest, skipped without a GPU) and scripts/gpu/run-cuda-tests.ts.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeRandomCheckpoint, type LlamaConfig } from '../bench/random-checkpoint.js';
import { quantizeModel, type SchemeName } from '../src/compress/quant/index.js';
import { Workspace, type DecodeStepAt } from '../src/model/decoder.js';
import { loadModel } from '../src/model/load.js';
import { createCpuDevice } from '../src/tensor/cpu/index.js';
import type { CudaDevice, CudaInts } from '../src/tensor/cuda/index.js';
import type { ComputeDType } from '../src/tensor/device.js';
import { compare, type CaseRun, type Check } from './cuda-cases.js';

interface LayerShape {
  label: string;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  inter: number;
}

const SHAPES: LayerShape[] = [
  { label: 'd64 gqa5', hidden: 320, heads: 5, kvHeads: 1, headDim: 64, inter: 896 },
  { label: 'd128', hidden: 256, heads: 2, kvHeads: 2, headDim: 128, inter: 640 },
];

interface Scheme {
  label: string;
  scheme?: SchemeName;
  groupSize?: number;
  asym?: boolean;
  staticActivations?: boolean;
  activations: boolean;
}

const SCHEMES: Scheme[] = [
  { label: 'BF16', activations: false },
  { label: 'FP8', scheme: 'FP8', activations: true },
  { label: 'FP8_DYNAMIC', scheme: 'FP8_DYNAMIC', activations: true },
  { label: 'W8A8', scheme: 'W8A8', activations: true },
  { label: 'W8A8 static', scheme: 'W8A8', staticActivations: true, activations: true },
  { label: 'W8A16 g64', scheme: 'W8A16', groupSize: 64, activations: false },
  { label: 'W4A16 g64', scheme: 'W4A16', groupSize: 64, activations: false },
  { label: 'W4A16 g64 asym', scheme: 'W4A16', groupSize: 64, asym: true, activations: false },
];

const PREFILL = 700;
const STEPS = 4;
/** max |Δ| / max |ref| of the logits: sums in other orders, and a bf16 / f16 rounding (or an activation code) that moves by one step. */
const TOL = 3e-2;
const TOL_ACTIVATIONS = 6e-2;

function config(s: LayerShape): LlamaConfig {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: s.hidden, intermediate_size: s.inter, num_hidden_layers: 2,
    num_attention_heads: s.heads, num_key_value_heads: s.kvHeads, head_dim: s.headDim, max_position_embeddings: 4096, rms_norm_eps: 1e-5,
    rope_theta: 10000.0, tie_word_embeddings: true, vocab_size: 384, bos_token_id: 1, eos_token_id: 2, hidden_act: 'silu',
    attention_bias: false, mlp_bias: false, torch_dtype: 'bfloat16', initializer_range: 0.02,
  } as unknown as LlamaConfig;
}

async function quantized(src: string, out: string, s: Scheme): Promise<string> {
  if (s.scheme === undefined) return src;
  const cpu = createCpuDevice({ threads: 2 });
  let seed = 11;
  const windows = Array.from({ length: 2 }, () => Int32Array.from({ length: 64 }, () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) % 384));
  try {
    await quantizeModel({
      model: src, output: out, scheme: s.scheme, groupSize: s.groupSize, asym: s.asym, staticActivations: s.staticActivations, force: true,
      device: cpu, calibrationSet: { source: 'random token ids (decode-layer cases)', windows, tokens: 128, seed: 11 },
    });
  } finally {
    cpu.close();
  }
  return out;
}

/** One scheme × dtype: eager steps on vs off, the kernels a step ran, graph replays vs eager. */
async function checkModel(name: string, dir: string, dev: CudaDevice, dtype: ComputeDType, tol: number): Promise<Check[]> {
  const checks: Check[] = [];
  const model = await loadModel(dir, dev);
  const d = model.decoder;
  const V = d.spec.vocabSize;
  const ints: CudaInts[] = [dev.allocInts(1), dev.allocInts(1), dev.allocInts(1)];
  const cache = d.newCache(1, PREFILL + STEPS + 8);
  const ws = new Workspace(dev, d.spec, 1, 1);
  const logits = dev.empty([1, V]);
  const saved = dev.fusedDecodeLayer;
  try {
    const ids = Int32Array.from({ length: PREFILL + STEPS + 2 }, (_, i) => (i * 97 + 5) % V);
    d.forwardHidden(ids.subarray(0, PREFILL), 1, PREFILL, { cache });
    const at: DecodeStepAt<CudaInts> = { ops: dev, ids: ints[0]!, positions: ints[1]!, kvLens: ints[2]! };
    const setStep = (pos: number) => {
      dev.setInts(ints[0]!, ids.subarray(pos, pos + 1));
      dev.setInts(ints[1]!, Int32Array.of(pos));
      dev.setInts(ints[2]!, Int32Array.of(pos + 1));
    };
    const step = () => dev.matmul(logits, d.decodeStepAt(ws, at, cache), d.weights.lmHead);
    for (let t = 0; t < STEPS; t++) {
      const pos = PREFILL + t;
      setStep(pos);
      dev.fusedDecodeLayer = false;
      step();
      const want = dev.download(logits);
      setStep(pos);
      dev.fusedDecodeLayer = true;
      const ops = dev.profile(step);
      const got = dev.download(logits);
      checks.push(compare(`${name} ${dtype}: step at ${pos} (kv ${pos + 1}) decode_layer = per-op layers`, dtype, got, want, tol));
      if (t === 0) {
        const kernels = [...new Set(ops.map((o) => o.name))];
        const layer = kernels.filter((k) => k.startsWith('decode_layer_'));
        const perOp = kernels.filter((k) => /^(qgemv|gemv3|gemv_qkv|gemv_silu|attention_decode|add_rms_norm)/.test(k));
        checks.push({ case: `${name} ${dtype}: the step ran ${layer.join(', ') || 'no decode_layer kernel'}`, dtype, error: 0, tol: 0,
          ok: layer.length === 1 && ops.filter((o) => o.name.startsWith('decode_layer_')).length === d.spec.numLayers && perOp.length === 0,
          note: kernels.join(', ') });
      }
    }
    // graph replays at later positions = eager steps there
    dev.fusedDecodeLayer = true;
    const graph = dev.captureGraph(step);
    try {
      for (const pos of [PREFILL + STEPS, PREFILL + STEPS + 1]) {
        setStep(pos);
        graph.launch();
        const replayed = dev.download(logits);
        setStep(pos);
        step();
        const eager = dev.download(logits);
        checks.push(compare(`${name} ${dtype}: graph replay at ${pos} = eager`, dtype, replayed, eager, 0));
      }
    } finally {
      graph.destroy();
    }
  } finally {
    dev.fusedDecodeLayer = saved;
    cache.free();
    ws.free();
    dev.free(logits);
    for (const t of ints) dev.freeInts(t);
    d.dispose({ weights: true });
  }
  return checks;
}

export async function runDecodeLayerChecks(makeGpu: (dtype: ComputeDType) => CudaDevice, log: (line: string) => void): Promise<CaseRun> {
  const checks: Check[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-decode-layer-'));
  const gpus = new Map<ComputeDType, CudaDevice>();
  const gpu = (dtype: ComputeDType) => gpus.get(dtype) ?? gpus.set(dtype, makeGpu(dtype)).get(dtype)!;
  try {
    for (const shape of SHAPES) {
      const src = path.join(tmp, shape.label.replace(/\W+/g, '-'));
      writeRandomCheckpoint(src, config(shape), 3, { qkStd: 0.12 });
      for (const s of SCHEMES) {
        const name = `decode layer ${shape.label} ${s.label}`;
        try {
          const dir = await quantized(src, `${src}-${s.label.replace(/\W+/g, '-')}`, s);
          for (const dtype of ['bf16', 'f16'] as ComputeDType[]) {
            const run = await checkModel(name, dir, gpu(dtype), dtype, s.activations ? TOL_ACTIVATIONS : TOL);
            checks.push(...run);
            log(`${name} ${dtype}: ${run.map((c) => (c.tol > 0 ? c.error.toExponential(1) : c.ok ? 'ok' : 'FAIL')).join(' ')}`);
          }
        } catch (e) {
          checks.push({ case: name, dtype: 'bf16', error: Infinity, tol: 0, ok: false, note: `threw: ${(e as Error).stack ?? String(e)}` });
        }
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  return { checks, failures: checks.filter((c) => !c.ok).map((c) => `${c.dtype} ${c.case}: ${c.note ?? `error ${c.error}`}`) };
}
