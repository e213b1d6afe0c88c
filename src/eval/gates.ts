// CI gates: `metric op number` expressions evaluated against eval's metrics.

import { UsageError } from '../errors.js';

/** Metrics a gate can test, with what they mean (shown in usage errors and --help). */
export const GATE_METRICS = {
  // eval --latency
  prefill_tps: 'prompt tokens per second of prefill (--latency)',
  ttft_ms: 'time to first token, ms (--latency)',
  decode_ms: 'median decode time per step, ms (--latency)',
  decode_ms_p90: '90th percentile decode time per step, ms (--latency)',
  decode_tps: 'generated tokens per second of decode, all sequences (--latency)',
  peak_memory_mb: 'peak tensor memory, MB (--latency)',
  // eval (perplexity)
  ppl: 'perplexity of the model',
  nll: 'mean negative log-likelihood per scored token, nats',
  ppl_ratio: 'model ppl / baseline ppl',
  kld_mean: 'mean per-token KL(baseline ‖ model), nats',
  kld_p99: '99th percentile of per-token KL(baseline ‖ model)',
  top1: 'fraction of tokens whose argmax matches the baseline',
  tokens_per_s: 'scored tokens per second of model forward time',
} as const;

/** Metrics that exist only with eval --latency (and then only these). */
export const LATENCY_METRICS: readonly GateMetric[] = ['prefill_tps', 'ttft_ms', 'decode_ms', 'decode_ms_p90', 'decode_tps', 'peak_memory_mb'];

/** Fails (usage) when a gate's metric belongs to the other mode (latency vs perplexity). */
export function checkGatesForMode(gates: readonly Gate[], latency: boolean): void {
  for (const g of gates) {
    const isLatency = LATENCY_METRICS.includes(g.metric);
    if (isLatency !== latency) {
      throw new UsageError(`--gate "${g.expr}": ${g.metric} ${isLatency ? 'is measured by eval --latency' : 'is not measured by eval --latency'}`);
    }
  }
}

/** Metrics that exist only when eval compares against a --baseline. */
export const BASELINE_METRICS: readonly GateMetric[] = ['ppl_ratio', 'kld_mean', 'kld_p99', 'top1'];

export type GateMetric = keyof typeof GATE_METRICS;
export type GateOp = '<=' | '>=' | '<' | '>' | '==';
export type MetricValues = Partial<Record<GateMetric, number>>;

export interface Gate {
  expr: string;
  metric: GateMetric;
  op: GateOp;
  threshold: number;
}

export interface GateResult extends Gate {
  actual: number;
  pass: boolean;
}

const GATE_PATTERN = /^\s*([a-z_0-9]+)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*$/i;

function metricList(): string {
  return Object.keys(GATE_METRICS).join(', ');
}

/** Parses `metric(<=|>=|<|>|==)number`, e.g. `ppl<=5.2`, `kld_p99 < 0.05`. */
export function parseGate(expr: string): Gate {
  const m = GATE_PATTERN.exec(expr);
  if (!m) throw new UsageError(`bad --gate "${expr}": expected metric(<=|>=|<|>|==)number, metrics: ${metricList()}`);
  const metric = m[1]!;
  if (!Object.hasOwn(GATE_METRICS, metric)) throw new UsageError(`bad --gate "${expr}": unknown metric "${metric}", metrics: ${metricList()}`);
  return { expr, metric: metric as GateMetric, op: m[2] as GateOp, threshold: Number(m[3]) };
}

/** Fails (usage) when a gate tests a metric this run does not compute, e.g. kld_mean without --baseline. */
export function checkGatesComputable(gates: readonly Gate[], hasBaseline: boolean): void {
  for (const g of gates) {
    if (!hasBaseline && BASELINE_METRICS.includes(g.metric)) {
      throw new UsageError(`--gate "${g.expr}": ${g.metric} compares against a baseline; add --baseline <model>`);
    }
  }
}

function compare(actual: number, op: GateOp, threshold: number): boolean {
  switch (op) {
    case '<=': return actual <= threshold;
    case '>=': return actual >= threshold;
    case '<': return actual < threshold;
    case '>': return actual > threshold;
    case '==': return actual === threshold;
  }
}

/** Evaluates every gate (none short-circuits). */
export function evaluateGates(gates: readonly Gate[], metrics: MetricValues): GateResult[] {
  return gates.map((g) => {
    const actual = metrics[g.metric];
    if (actual === undefined) throw new UsageError(`--gate "${g.expr}": metric ${g.metric} was not computed`);
    return { ...g, actual, pass: compare(actual, g.op, g.threshold) };
  });
}
