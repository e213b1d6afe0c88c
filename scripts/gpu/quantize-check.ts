// End-to-end check of the quantize job on the GPU (bundled by scripts/gpu/bundle.sh): stories260K
// quantized on cuda (f32 calibration forward) and on the cpu for W4A16-GPTQ (per channel; its dims
// 64 and 172 take no group of 32 or 128), W8A8 + SmoothQuant 0.5 and FP8 (static input scales),
// then the written checkpoints compared tensor by tensor, and both scored against the original.
//
// What may differ, and why:
//   - FP8 weights: RTN of the same source weights with the same observer → bitwise equal. Input
//     scales come from absmax of activations the GPU computed in f32 (other summation order), so
//     they may differ in the last bits, and so may the later layers' inputs.
//   - W8A8 + SmoothQuant: the smoothing scales come from the GPU forward's channel ranges; a last-bit
//     difference there moves a smoothed weight across a rounding boundary now and then (±1 step).
//   - W4A16 GPTQ: the GPU runs GPTQ in f32 (as llm-compressor does), the cpu in f64: a few codes
//     round the other way and the difference propagates along their row (a few steps at most).
//   Everything that is not quantized or smoothed must be bitwise equal.
//   - Schemes that quantize activations (W8A8, FP8 static): the calibration inputs of layer N ≥ 1 come
//     from the quantized layers before it, whose int8/fp8 activation codes flip at rounding boundaries
//     when the GPU's f32 sums differ from the cpu's in the last bit; each flip moves an output by a
//     whole quantization step, so later layers see slightly different activations (measured on the
//     H200, 2026-12-01: scales/smoothed norms 2e-3 apart at layer 1, 7e-3 at layer 4). The tensor
//     tolerances therefore hold for layer 0 only (strictLayers); deeper layers are reported, and the
//     models must agree in quality (ppl within 0.5%).
// Usage: node .gpu/quantize-check.mjs --model DIR [--samples 64] [--seq-len 256] [--max-tokens 40000] [--data FILE] [--keep DIR] [--self-test]
// --self-test puts a second cpu device where the GPU would be (no GPU needed: checks the harness and the bundle).
// Exit 0 when every check passes; writes $OUT/quantize-check.json when $OUT is set.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantizeModel, type QuantizeReport, type QuantizeSettings } from '../../src/compress/quant/index.js';
import { runEval } from '../../src/eval/run.js';
import { CheckpointTensors, resolveModelPath } from '../../src/io/checkpoint.js';
import { decodeToFloat32 } from '../../src/io/dtypes.js';
import { unpackInt32 } from '../../src/model/compressed-tensors.js';
import { createCpuDevice } from '../../src/tensor/cpu/index.js';
import { CudaDevice } from '../../src/tensor/cuda/index.js';
import type { Device } from '../../src/tensor/device.js';

function flag(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const model = flag('model', '.gpu/data/stories260K')!;
const dataFile = flag('data', path.join(path.dirname(model), 'tinystories-valid.txt'))!;
const samples = Number(flag('samples', '64'));
const seqLen = Number(flag('seq-len', '256'));
const maxTokens = Number(flag('max-tokens', '40000'));
const keep = flag('keep');
const log = (line: string) => console.log(line);

interface SchemeCheck {
  name: string;
  opts: Omit<QuantizeSettings, 'model' | 'output'>;
  /** Largest share of a quantized weight's codes that may differ, and by how many steps. */
  codeShare: number;
  codeSteps: number;
  /** Largest relative difference of scales / smoothed norms. */
  scaleRel: number;
  /** Tensors of layers ≥ this are reported, not held to the tolerances (activation-quantized propagation, see above). */
  strictLayers?: number;
}

const SCHEMES: SchemeCheck[] = [
  { name: 'w4a16-gptq', opts: { scheme: 'W4A16', groupSize: 'channel', method: 'gptq' }, codeShare: 0.05, codeSteps: 3, scaleRel: 0 },
  { name: 'w8a8-sq', opts: { scheme: 'W8A8', smoothquant: 0.5 }, codeShare: 0.01, codeSteps: 1, scaleRel: 1e-3, strictLayers: 1 },
  { name: 'fp8-static', opts: { scheme: 'FP8' }, codeShare: 0, codeSteps: 0, scaleRel: 1e-3, strictLayers: 1 },
];

/** Position on the quantization grid: the integer code, or the E4M3 value's rank. */
function steps(codes: ArrayLike<number>, fp8: boolean): Int32Array {
  return Int32Array.from(codes as ArrayLike<number>, (c) => (fp8 ? (c & 0x80 ? -(c & 0x7f) : c & 0x7f) : c));
}

interface TensorDiff {
  name: string;
  kind: 'bitwise' | 'codes' | 'values';
  /** codes: share that differ and the largest difference in steps; values: max relative difference. */
  share?: number;
  maxSteps?: number;
  maxRel?: number;
  ok: boolean;
}

function compareTensors(cpuDir: string, gpuDir: string, check: SchemeCheck): TensorDiff[] {
  const a = CheckpointTensors.open(resolveModelPath(cpuDir));
  const b = CheckpointTensors.open(resolveModelPath(gpuDir));
  const out: TensorDiff[] = [];
  const config = JSON.parse(fs.readFileSync(path.join(cpuDir, 'config.json'), 'utf8')) as { quantization_config: { config_groups: { group_0: { weights: { num_bits: number } } } } };
  const bits = config.quantization_config.config_groups.group_0.weights.num_bits;
  try {
    const names = a.names();
    const bNames = new Set(b.names());
    for (const name of names) {
      if (!bNames.has(name)) {
        out.push({ name, kind: 'bitwise', ok: false });
        continue;
      }
      const ia = a.info(name);
      const ra = a.readBytes(name), rb = b.readBytes(name);
      if (Buffer.compare(Buffer.from(ra), Buffer.from(rb)) === 0) {
        out.push({ name, kind: 'bitwise', ok: true });
        continue;
      }
      const quantized = name.endsWith('.weight_packed') || (name.endsWith('.weight') && (ia.dtype === 'I8' || ia.dtype === 'F8_E4M3'));
      if (quantized) {
        let ca: ArrayLike<number>, cb: ArrayLike<number>;
        if (name.endsWith('.weight_packed')) {
          const shape = a.readFloat32(name.replace(/weight_packed$/, 'weight_shape'));
          const [rows, cols] = [shape[0]!, shape[1]!];
          const toI32 = (u: Uint8Array) => new Int32Array(u.buffer.slice(u.byteOffset, u.byteOffset + u.byteLength));
          ca = unpackInt32(toI32(ra), rows, cols, bits);
          cb = unpackInt32(toI32(rb), rows, cols, bits);
        } else if (ia.dtype === 'I8') {
          ca = new Int8Array(ra.buffer, ra.byteOffset, ra.byteLength);
          cb = new Int8Array(rb.buffer, rb.byteOffset, rb.byteLength);
        } else {
          ca = ra;
          cb = rb;
        }
        const sa = steps(ca, ia.dtype === 'F8_E4M3'), sb = steps(cb, ia.dtype === 'F8_E4M3');
        let differ = 0, maxSteps = 0;
        for (let i = 0; i < sa.length; i++) {
          const d = Math.abs(sa[i]! - sb[i]!);
          if (d > 0) differ++;
          maxSteps = Math.max(maxSteps, d);
        }
        const share = differ / sa.length;
        out.push({ name, kind: 'codes', share, maxSteps, ok: share <= check.codeShare && maxSteps <= check.codeSteps });
        continue;
      }
      const va = decodeToFloat32(ia.dtype, ra), vb = decodeToFloat32(ia.dtype, rb);
      let maxRel = 0;
      for (let i = 0; i < va.length; i++) maxRel = Math.max(maxRel, Math.abs(va[i]! - vb[i]!) / Math.max(Math.abs(va[i]!), 1e-30));
      // Scales and SmoothQuant-rescaled norms follow the GPU's statistics; anything else must be bitwise.
      const follows = /(_scale|layernorm\.weight)$/.test(name);
      out.push({ name, kind: 'values', maxRel, ok: follows && maxRel <= check.scaleRel });
    }
  } finally {
    a.close();
    b.close();
  }
  return out;
}

async function score(dir: string, device: Device): Promise<{ ppl: number; ppl_ratio: number; kld_mean: number; top1: number }> {
  const r = await runEval({ model: dir, baseline: model, dataFile, keepLast: false, maxTokens, seqLen: 512, device, deviceName: 'cpu' });
  const b = r.result.baseline!;
  return { ppl: r.result.ppl, ppl_ratio: b.pplRatio, kld_mean: b.kldMean, top1: b.top1 };
}

async function main(): Promise<void> {
  const work = keep ?? fs.mkdtempSync(path.join(os.tmpdir(), 'llmopt-quantize-check-'));
  const cpu = createCpuDevice();
  const gpu = process.argv.includes('--self-test') ? createCpuDevice({ threads: 2 }) : new CudaDevice({ dtype: 'f32' });
  const gpuName = gpu instanceof CudaDevice ? gpu.info.name : 'cpu (self-test)';
  log(`GPU: ${gpuName}; stories260K ${model}; calibration moby-dick ${samples} × ${seqLen}`);
  const calibration = { source: 'moby-dick', samples, seqLen, seed: 0 };
  const results: Record<string, unknown>[] = [];
  let failures = 0;
  for (const s of SCHEMES) {
    const reports: Record<string, QuantizeReport> = {};
    for (const [where, device] of [['cpu', cpu], ['cuda', gpu]] as const) {
      const output = path.join(work, `${s.name}-${where}`);
      const t0 = performance.now();
      reports[where] = await quantizeModel({
        model, output, force: true, device, deviceName: where, toolVersion: 'check', calibration,
        memory: device instanceof CudaDevice ? device : undefined, ...s.opts,
      });
      log(`${s.name} on ${where}: ${((performance.now() - t0) / 1000).toFixed(2)} s, layer errors ${reports[where]!.layers.map((l) => l.output_rel_error.toFixed(5)).join(' ')}`);
    }
    // Activations kept on the host between layers (what a model too big for the GPU does) must give the same tensors, bit for bit.
    let hostResidency: { bitwise: number; tensors: number } | undefined;
    if (s.name === 'w8a8-sq' && gpu instanceof CudaDevice) {
      const output = path.join(work, `${s.name}-cuda-host`);
      await quantizeModel({ model, output, force: true, device: gpu, deviceName: 'cuda', toolVersion: 'check', calibration, activations: 'host', ...s.opts });
      const same = compareTensors(path.join(work, `${s.name}-cuda`), output, { ...s, codeShare: 0, codeSteps: 0, scaleRel: 0 });
      hostResidency = { bitwise: same.filter((d) => d.kind === 'bitwise').length, tensors: same.length };
      const ok = hostResidency.bitwise === hostResidency.tensors;
      log(`  activations on the host instead of the GPU: ${hostResidency.bitwise}/${hostResidency.tensors} tensors bitwise equal${ok ? '' : ' — FAIL'}`);
      if (!ok) failures++;
    }
    const diffs = compareTensors(path.join(work, `${s.name}-cpu`), path.join(work, `${s.name}-cuda`), s);
    const layerOf = (name: string) => Number(/\.layers\.(\d+)\./.exec(name)?.[1] ?? -1);
    const held = (name: string) => s.strictLayers === undefined || layerOf(name) < s.strictLayers;
    const bad = diffs.filter((d) => !d.ok && held(d.name));
    const propagated = diffs.filter((d) => !d.ok && !held(d.name)).length;
    if (propagated > 0) log(`  ${propagated} tensor(s) of layers ≥ ${s.strictLayers} differ past the tolerances (activation-quantized propagation; reported, not failed)`);
    const bitwise = diffs.filter((d) => d.kind === 'bitwise' && d.ok).length;
    const codes = diffs.filter((d) => d.kind === 'codes');
    const values = diffs.filter((d) => d.kind === 'values');
    const worstShare = Math.max(0, ...codes.map((d) => d.share!));
    const worstSteps = Math.max(0, ...codes.map((d) => d.maxSteps!));
    const worstRel = Math.max(0, ...values.map((d) => d.maxRel!));
    log(`  tensors: ${bitwise}/${diffs.length} bitwise equal; ${codes.length} quantized weights differ (worst ${(100 * worstShare).toFixed(3)}% of codes, ` +
      `at most ${worstSteps} step(s)); ${values.length} scale/norm tensors differ (max rel ${worstRel.toExponential(2)})`);
    for (const d of bad) log(`  FAIL ${d.name}: ${d.kind} ${JSON.stringify(d)}`);
    const scores = { cpu: await score(path.join(work, `${s.name}-cpu`), cpu), cuda: await score(path.join(work, `${s.name}-cuda`), cpu) };
    log(`  against the original (cpu eval, ${maxTokens} tokens): ppl cpu-quantized ${scores.cpu.ppl.toFixed(5)} vs cuda-quantized ${scores.cuda.ppl.toFixed(5)}; ` +
      `KLD ${scores.cpu.kld_mean.toFixed(6)} vs ${scores.cuda.kld_mean.toFixed(6)}`);
    const pplTol = s.strictLayers === undefined ? 0.01 : 0.005;
    const pplClose = Math.abs(scores.cuda.ppl / scores.cpu.ppl - 1) <= pplTol;
    if (!pplClose) log(`  FAIL ppl differs by more than ${100 * pplTol}%`);
    failures += bad.length + (pplClose ? 0 : 1);
    results.push({
      scheme: s.name, options: s.opts, tolerances: { codeShare: s.codeShare, codeSteps: s.codeSteps, scaleRel: s.scaleRel },
      tensors: diffs.length, bitwise, differing: diffs.filter((d) => d.kind !== 'bitwise'), failed: bad.map((d) => d.name),
      scores, host_residency: hostResidency ?? null, cuda_report: { timings_s: reports.cuda!.timings_s, memory: reports.cuda!.memory, layers: reports.cuda!.layers.map((l) => l.output_rel_error) },
      cpu_layers: reports.cpu!.layers.map((l) => l.output_rel_error),
    });
  }
  cpu.close();
  if (!(gpu instanceof CudaDevice)) gpu.close();
  if (keep === undefined) fs.rmSync(work, { recursive: true, force: true });
  log(failures === 0 ? '== quantize on cuda matches the cpu (within the stated reasons)' : `== ${failures} check(s) failed`);
  if (process.env.OUT) fs.writeFileSync(path.join(process.env.OUT, 'quantize-check.json'), JSON.stringify({ gpu: gpuName, samples, seqLen, results }, null, 1));
  process.exit(failures === 0 ? 0 : 1);
}

await main();
