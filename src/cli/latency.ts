// llmopt eval <model> --latency: prefill, time to first token, decode ms/token and memory (src/eval/latency.ts),
// printed as a table or --json, with gates on the latency metrics.

import chalk from 'chalk';
import { LlmoptError } from '../errors.js';
import { evaluateGates, type GateResult, type Gate, type MetricValues } from '../eval/gates.js';
import { measureLatency, type LatencyResult } from '../eval/latency.js';
import { loadModel } from '../model/load.js';
import type { OpenedDevice } from './device.js';
import { EXIT_GATE_FAILED, EXIT_OK } from './exit.js';
import { formatBytes, formatFloat, formatInt } from './format.js';

export interface LatencyFlags {
  promptLen?: number;
  genLen?: number;
  batch?: number;
  json?: boolean;
}

export interface LatencyReport {
  model: string;
  mode: 'latency';
  device: string;
  gpu: string | null;
  dtype: string;
  settings: { batch: number; prompt_len: number; gen_len: number; clock: string; cuda_graph: boolean };
  metrics: {
    prefill_ms: number;
    prefill_tps: number;
    ttft_ms: number;
    decode_ms: number;
    decode_ms_p90: number;
    decode_tps: number;
    peak_memory_mb: number;
    memory: { source: string; weights_bytes: number; kv_cache_bytes: number; activations_bytes: number; peak_bytes: number };
  };
  gates: GateResult[];
  passed: boolean;
}

export function latencyGateMetrics(r: LatencyResult): MetricValues {
  return {
    prefill_tps: r.prefillTokensPerS,
    ttft_ms: r.timeToFirstTokenMs,
    decode_ms: r.decodeMsMedian,
    decode_ms_p90: r.decodeMsP90,
    decode_tps: r.decodeTokensPerS,
    peak_memory_mb: r.memory.peakBytes / 1e6,
  };
}

function render(r: LatencyReport): string[] {
  const m = r.metrics;
  const s = r.settings;
  const lines = [
    `model      ${r.model}`,
    `device     ${r.device}${r.gpu ? ` (${r.gpu})` : ''}, ${r.dtype}${s.cuda_graph ? ', decode step replayed as a CUDA graph' : ''}; timed by ${s.clock}`,
    `shape      batch ${s.batch}, prompt ${formatInt(s.prompt_len)} tokens, ${formatInt(s.gen_len)} generated (greedy)`,
    '',
    `prefill    ${formatFloat(m.prefill_ms, 4)} ms, ${chalk.bold(formatInt(Math.round(m.prefill_tps)))} tokens/s`,
    `first tok  ${formatFloat(m.ttft_ms, 4)} ms`,
    `decode     ${chalk.bold(formatFloat(m.decode_ms, 4))} ms/step median, ${formatFloat(m.decode_ms_p90, 4)} p90, ` +
      `${chalk.bold(formatInt(Math.round(m.decode_tps)))} tokens/s`,
    `memory     peak ${formatBytes(m.memory.peak_bytes)}: weights ${formatBytes(m.memory.weights_bytes)}, ` +
      `KV cache ${formatBytes(m.memory.kv_cache_bytes)}, activations ${formatBytes(m.memory.activations_bytes)} (${m.memory.source})`,
  ];
  if (r.gates.length > 0) {
    lines.push('');
    for (const g of r.gates) {
      lines.push(`gate ${g.pass ? chalk.green('PASS') : chalk.red('FAIL')}  ${g.metric} ${g.op} ${g.threshold}  (${g.metric} = ${formatFloat(g.actual, 6)})`);
    }
  }
  return lines;
}

export async function latencyCommand(model: string, flags: LatencyFlags, gates: Gate[], opened: OpenedDevice): Promise<number> {
  const loaded = await loadModel(model, opened.device);
  const maxPos = loaded.spec.maxPositionEmbeddings;
  const genLen = flags.genLen ?? Math.min(128, Math.floor(maxPos / 4));
  const promptLen = flags.promptLen ?? Math.min(512, maxPos - genLen);
  if (promptLen + genLen > maxPos) {
    throw new LlmoptError(`--prompt-len ${promptLen} + --gen-len ${genLen} exceed the model's context (max_position_embeddings ${maxPos})`);
  }
  if (promptLen < 1) throw new LlmoptError(`--gen-len ${genLen} leaves no room for a prompt (max_position_embeddings ${maxPos})`);
  const r = measureLatency({ decoder: loaded.decoder, promptLen, genLen, batch: flags.batch ?? 1 });
  const gateResults = evaluateGates(gates, latencyGateMetrics(r));
  const report: LatencyReport = {
    model,
    mode: 'latency',
    device: opened.name,
    gpu: opened.gpu ?? null,
    dtype: opened.dtypeName,
    settings: { batch: r.batch, prompt_len: r.promptLen, gen_len: r.genLen, clock: r.clock, cuda_graph: r.cudaGraph },
    metrics: {
      prefill_ms: r.prefillMs,
      prefill_tps: r.prefillTokensPerS,
      ttft_ms: r.timeToFirstTokenMs,
      decode_ms: r.decodeMsMedian,
      decode_ms_p90: r.decodeMsP90,
      decode_tps: r.decodeTokensPerS,
      peak_memory_mb: r.memory.peakBytes / 1e6,
      memory: {
        source: r.memory.source,
        weights_bytes: r.memory.weightsBytes,
        kv_cache_bytes: r.memory.kvCacheBytes,
        activations_bytes: r.memory.activationsBytes,
        peak_bytes: r.memory.peakBytes,
      },
    },
    gates: gateResults,
    passed: gateResults.every((g) => g.pass),
  };
  loaded.decoder.dispose({ weights: true });
  process.stdout.write(flags.json ? JSON.stringify(report, null, 2) + '\n' : render(report).join('\n') + '\n');
  return report.passed ? EXIT_OK : EXIT_GATE_FAILED;
}
