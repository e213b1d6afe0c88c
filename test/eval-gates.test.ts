import { describe, expect, it } from 'vitest';
import { UsageError } from '../src/errors.js';
import { checkGatesComputable, evaluateGates, parseGate } from '../src/eval/gates.js';
import { mean, quantile } from '../src/eval/stats.js';

describe('gates', () => {
  it('parses every operator, with or without spaces and exponents', () => {
    expect(parseGate('ppl<=5.2')).toEqual({ expr: 'ppl<=5.2', metric: 'ppl', op: '<=', threshold: 5.2 });
    expect(parseGate(' kld_p99 < 1e-2 ')).toMatchObject({ metric: 'kld_p99', op: '<', threshold: 0.01 });
    expect(parseGate('top1>=.99')).toMatchObject({ metric: 'top1', op: '>=', threshold: 0.99 });
    expect(parseGate('tokens_per_s>1000')).toMatchObject({ op: '>', threshold: 1000 });
    expect(parseGate('ppl_ratio==1')).toMatchObject({ op: '==', threshold: 1 });
  });

  it('rejects bad expressions with a usage error naming the expression and the metrics', () => {
    for (const bad of ['ppl', 'ppl<=', 'ppl=<5', 'ppl<=abc', '<=5', 'ppl<=5;rm']) {
      expect(() => parseGate(bad)).toThrow(UsageError);
      expect(() => parseGate(bad)).toThrow(`"${bad}"`);
    }
    expect(() => parseGate('perplexity<5')).toThrow(/unknown metric "perplexity".*ppl, nll, ppl_ratio, kld_mean, kld_p99, top1, tokens_per_s/);
  });

  it('refuses a gate on a metric the run does not compute', () => {
    for (const metric of ['ppl_ratio', 'kld_mean', 'kld_p99', 'top1']) {
      expect(() => checkGatesComputable([parseGate(`${metric}<0.1`)], false)).toThrow(`${metric} compares against a baseline; add --baseline`);
      expect(() => checkGatesComputable([parseGate(`${metric}<0.1`)], true)).not.toThrow();
    }
    expect(() => checkGatesComputable([parseGate('ppl<10'), parseGate('tokens_per_s>1')], false)).not.toThrow();
  });

  it('evaluates every gate, passing and failing', () => {
    const results = evaluateGates([parseGate('ppl<=5.1'), parseGate('ppl>5.1'), parseGate('top1==1')], { ppl: 5.065, top1: 1 });
    expect(results.map((r) => [r.pass, r.actual])).toEqual([[true, 5.065], [false, 5.065], [true, 1]]);
  });
});

describe('stats', () => {
  it('quantile interpolates linearly between order statistics (numpy "linear")', () => {
    const v = Float64Array.from([5, 1, 4, 2, 3]);
    expect(quantile(v, 0)).toBe(1);
    expect(quantile(v, 1)).toBe(5);
    expect(quantile(v, 0.5)).toBe(3);
    expect(quantile(v, 0.99)).toBeCloseTo(4.96, 12); // rank 3.96 → 4 + 0.96·(5 − 4)
    const hundred = Float64Array.from({ length: 101 }, (_, i) => 100 - i);
    expect(quantile(hundred, 0.99)).toBe(99);
    expect(v[0]).toBe(5); // input left unsorted
  });

  it('mean', () => {
    expect(mean(Float64Array.from([1, 2, 3, 4]))).toBe(2.5);
  });
});
