// Small order statistics over per-token metrics.

/**
 * The exact q-quantile (0 ≤ q ≤ 1) of `values`, interpolating linearly between the two nearest
 * order statistics (numpy's default "linear" method): rank = q·(n−1). Sorts a copy.
 */
export function quantile(values: Float64Array, q: number): number {
  if (values.length === 0) throw new RangeError('quantile of an empty set');
  if (!(q >= 0 && q <= 1)) throw new RangeError(`quantile must be in [0, 1], got ${q}`);
  const sorted = Float64Array.from(values).sort();
  const rank = q * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (rank - lo);
}

/** Mean in float64. */
export function mean(values: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  return sum / values.length;
}
