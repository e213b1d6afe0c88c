// The eval result as one JSON-ready object: protocol, metrics, gates. `--json` prints it as is; the
// human output renders the same object, so the two never disagree.

import type { GateResult, MetricValues } from './gates.js';
import type { PerplexityResult } from './perplexity.js';
import { protocolName, protocolStride, type Protocol } from './windows.js';

export interface EvalReport {
  model: string;
  baseline: string | null;
  data: { file: string; tokens_in_file: number; tokens_used: number };
  protocol: {
    name: string;
    window: number;
    stride: number;
    keep_last: boolean;
    windows: number;
    tokens_scored: number;
    max_tokens: number | null;
    batch: number;
    dtype: string;
    device: string;
  };
  metrics: {
    ppl: number;
    nll: number;
    nll_sum: number;
    tokens_per_s: number;
    forward_s: number;
    wall_s: number;
    baseline_ppl?: number;
    ppl_ratio?: number;
    kld_mean?: number;
    kld_p99?: number;
    top1?: number;
    baseline_forward_s?: number;
  };
  gates: GateResult[];
  passed: boolean;
}

export interface EvalRun {
  model: string;
  baseline?: string;
  dataFile: string;
  tokensInFile: number;
  tokensUsed: number;
  maxTokens?: number;
  protocol: Protocol;
  batch: number;
  dtype: string;
  device: string;
  result: PerplexityResult;
  wallSeconds: number;
}

/** Metric values a gate can test, for this run. */
export function gateMetrics(r: PerplexityResult): MetricValues {
  const values: MetricValues = { ppl: r.ppl, nll: r.nll, tokens_per_s: r.tokensPerSecond };
  if (r.baseline) {
    Object.assign(values, { ppl_ratio: r.baseline.pplRatio, kld_mean: r.baseline.kldMean, kld_p99: r.baseline.kldP99, top1: r.baseline.top1 });
  }
  return values;
}

export function buildEvalReport(run: EvalRun, gates: GateResult[]): EvalReport {
  const r = run.result;
  const metrics: EvalReport['metrics'] = {
    ppl: r.ppl,
    nll: r.nll,
    nll_sum: r.nllSum,
    tokens_per_s: r.tokensPerSecond,
    forward_s: r.forwardSeconds,
    wall_s: run.wallSeconds,
  };
  if (r.baseline) {
    Object.assign(metrics, {
      baseline_ppl: r.baseline.ppl,
      ppl_ratio: r.baseline.pplRatio,
      kld_mean: r.baseline.kldMean,
      kld_p99: r.baseline.kldP99,
      top1: r.baseline.top1,
      baseline_forward_s: r.baseline.forwardSeconds,
    });
  }
  return {
    model: run.model,
    baseline: run.baseline ?? null,
    data: { file: run.dataFile, tokens_in_file: run.tokensInFile, tokens_used: run.tokensUsed },
    protocol: {
      name: protocolName(run.protocol),
      window: run.protocol.window,
      stride: protocolStride(run.protocol),
      keep_last: run.protocol.kind === 'chunks' && run.protocol.keepLast,
      windows: r.windows,
      tokens_scored: r.tokensScored,
      max_tokens: run.maxTokens ?? null,
      batch: run.batch,
      dtype: run.dtype,
      device: run.device,
    },
    metrics,
    gates,
    passed: gates.every((g) => g.pass),
  };
}
