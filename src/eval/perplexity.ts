// Perplexity (and, against a baseline, per-token KL divergence and top-1 agreement) over a token
// stream cut into protocol windows. Windows of equal length run through the decoder together; every
// sum is float64.

import type { Device, Tensor } from '../tensor/device.js';
import { mean, quantile } from './stats.js';
import { batchWindows, countScored, type Window } from './windows.js';

/** What eval needs from a decoder: logits [batch*seq, vocab] for ids [batch*seq], valid until its next forward. */
export interface LogitsModel {
  forward(ids: Int32Array, batch: number, seq: number): Tensor | Promise<Tensor>;
}

export interface PerplexityProgress {
  scored: number;
  total: number;
  /** Seconds spent in the model's forward passes and scoring so far. */
  forwardSeconds: number;
}

export interface PerplexityOptions {
  device: Device;
  model: LogitsModel;
  /** Same windows through this model too: KLD(baseline ‖ model), top-1 agreement, ppl ratio. */
  baseline?: LogitsModel;
  tokens: Int32Array;
  windows: readonly Window[];
  /** Most windows per forward pass. */
  batch: number;
  onProgress?: (p: PerplexityProgress) => void;
}

export interface BaselineComparison {
  nllSum: number;
  ppl: number;
  /** model ppl / baseline ppl */
  pplRatio: number;
  kldMean: number;
  /** Exact 99th percentile of per-token KLD (linear interpolation between order statistics). */
  kldP99: number;
  /** Fraction of scored tokens whose argmax agrees between model and baseline. */
  top1: number;
  forwardSeconds: number;
}

export interface PerplexityResult {
  tokensScored: number;
  windows: number;
  batches: number;
  nllSum: number;
  /** Mean NLL per scored token (nats). */
  nll: number;
  ppl: number;
  /** Seconds in the model's forward passes and scoring (the baseline's are counted apart). */
  forwardSeconds: number;
  tokensPerSecond: number;
  baseline?: BaselineComparison;
}

/** Per-row targets for a batch of equal-length windows: row j predicts token j+1; unscored rows get -1. */
function batchInputs(tokens: Int32Array, batch: readonly Window[]): { ids: Int32Array; targets: Int32Array; seq: number } {
  const seq = batch[0]!.length;
  const ids = new Int32Array(batch.length * seq);
  const targets = new Int32Array(batch.length * seq).fill(-1);
  batch.forEach((w, b) => {
    ids.set(tokens.subarray(w.start, w.start + seq), b * seq);
    for (let j = w.firstTarget; j < seq; j++) targets[b * seq + j - 1] = tokens[w.start + j]!;
  });
  return { ids, targets, seq };
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function evaluatePerplexity(opts: PerplexityOptions): Promise<PerplexityResult> {
  const { device, model, baseline, tokens, windows } = opts;
  if (baseline === model) throw new RangeError('the baseline must be its own decoder: logits are valid only until the next forward');
  const total = countScored(windows);
  if (total === 0) throw new RangeError('the windows score no tokens');
  const batches = batchWindows(windows, opts.batch);

  let nllSum = 0;
  let baseNllSum = 0;
  let top1Sum = 0;
  let scored = 0;
  let forwardSeconds = 0;
  let baseForwardSeconds = 0;
  const kld = baseline ? new Float64Array(total) : undefined;

  for (const batch of batches) {
    const { ids, targets, seq } = batchInputs(tokens, batch);

    let baseLogits: Tensor | undefined;
    if (baseline) {
      const t0 = performance.now();
      baseLogits = await baseline.forward(ids, batch.length, seq);
      const baseScore = device.scoreLogits(baseLogits, targets);
      baseForwardSeconds += (performance.now() - t0) / 1000;
      for (let r = 0; r < targets.length; r++) if (targets[r]! >= 0) baseNllSum += baseScore.nll[r]!;
    }

    const t0 = performance.now();
    const logits = await model.forward(ids, batch.length, seq);
    const score = device.scoreLogits(logits, targets, baseLogits);
    forwardSeconds += (performance.now() - t0) / 1000;

    for (let r = 0; r < targets.length; r++) {
      if (targets[r]! < 0) continue;
      nllSum += score.nll[r]!;
      if (kld) {
        kld[scored] = score.kld![r]!;
        top1Sum += score.top1![r]!;
      }
      scored++;
    }
    opts.onProgress?.({ scored, total, forwardSeconds });
    await yieldToEventLoop();
  }

  const ppl = Math.exp(nllSum / scored);
  const result: PerplexityResult = {
    tokensScored: scored,
    windows: windows.length,
    batches: batches.length,
    nllSum,
    nll: nllSum / scored,
    ppl,
    forwardSeconds,
    tokensPerSecond: scored / forwardSeconds,
  };
  if (kld) {
    const basePpl = Math.exp(baseNllSum / scored);
    result.baseline = {
      nllSum: baseNllSum,
      ppl: basePpl,
      pplRatio: ppl / basePpl,
      kldMean: mean(kld),
      kldP99: quantile(kld, 0.99),
      top1: top1Sum / scored,
      forwardSeconds: baseForwardSeconds,
    };
  }
  return result;
}
