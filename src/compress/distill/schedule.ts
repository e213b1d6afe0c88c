// Learning rate per optimizer step: linear warmup, then cosine decay to a floor, and the default
// peak learning rate for a student of a given size.

/** The cosine ends at this fraction of the peak (GPT-3 / Chinchilla recipes decay to 10%). */
export const FINAL_LR_FRACTION = 0.1;

export interface LrSchedule {
  /** Peak learning rate. */
  lr: number;
  /** Warmup steps (the first `warmup` steps ramp linearly up to lr). */
  warmup: number;
  /** Total optimizer steps. */
  steps: number;
}

/**
 * The learning rate of 0-based step `i`: (i+1)/warmup · lr during warmup; then
 * lr · (f + (1−f) · ½(1 + cos(π · (i−warmup)/(steps−warmup)))) with f = FINAL_LR_FRACTION, so the
 * first step after warmup runs at the peak and the last one just above f · lr.
 */
export function learningRate(s: LrSchedule, i: number): number {
  if (i < s.warmup) return (s.lr * (i + 1)) / s.warmup;
  const decaySteps = s.steps - s.warmup;
  if (decaySteps <= 0) return s.lr;
  const progress = Math.min(1, (i - s.warmup) / decaySteps);
  return s.lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** Warmup when --warmup is not given: 5% of the steps, at most 100. */
export function defaultWarmup(steps: number): number {
  return Math.min(100, Math.floor(steps / 20));
}

/**
 * The default peak learning rate for a student of `params` parameters:
 * 1e-4 · (1e9 / params)^(1/3), clamped to [1e-5, 3e-3]. 1B → 1e-4 (the rate Minitron-style
 * recovery distillation uses at that scale), 8B → 5e-5, 125M → 2e-4, 260K → 1.6e-3. Smaller
 * models tolerate (and need) larger steps; the cube root keeps the rule gentle.
 */
export function defaultLearningRate(params: number): number {
  const lr = 1e-4 * Math.cbrt(1e9 / Math.max(1, params));
  return Math.min(3e-3, Math.max(1e-5, lr));
}
