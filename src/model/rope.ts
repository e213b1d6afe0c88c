// Rotary embedding tables, computed the way transformers does so the angles match it bit for bit
// (or within an ulp where float32 pow/cos differ between libms):
// - inv_freq: float32 tensor math (rope_init_fn: default, linear, llama3), attention_factor 1.0;
// - angles: float32 product inv_freq * position (LlamaRotaryEmbedding.forward forces float32);
// - cos/sin: float32, also for a float64 model (they are computed in float32, then cast).
// Every intermediate is rounded to float32 with Math.fround, mirroring the torch ops one by one.

import type { ModelSpec } from './spec.js';
import { rotaryDim } from './config.js';

const f32 = Math.fround;

/** inv_freq [rotaryDim/2] as float32 values, for the spec's rope type. */
export function ropeInvFreq(spec: ModelSpec): Float32Array {
  const dim = rotaryDim(spec);
  const base = f32(spec.ropeTheta);
  const half = Math.ceil(dim / 2);
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    // 1.0 / (base ** (arange(0, dim, 2).float() / dim))
    const exponent = f32((2 * i) / dim);
    inv[i] = f32(1 / f32(Math.pow(base, exponent)));
  }
  const s = spec.ropeScaling;
  if (s.type === 'linear') {
    const factor = f32(s.factor);
    for (let i = 0; i < half; i++) inv[i] = f32(inv[i] / factor);
  } else if (s.type === 'llama3') {
    applyLlama3(inv, s.factor, s.lowFreqFactor, s.highFreqFactor, s.originalMaxPositionEmbeddings);
  }
  return inv;
}

/** transformers' _compute_llama3_parameters, elementwise in float32. */
function applyLlama3(inv: Float32Array, factor: number, low: number, high: number, oldContextLen: number): void {
  const lowFreqWavelen = f32(oldContextLen / low);
  const highFreqWavelen = f32(oldContextLen / high);
  const twoPi = f32(2 * Math.PI);
  const factor32 = f32(factor);
  const oldLen32 = f32(oldContextLen);
  const low32 = f32(low);
  const span32 = f32(high - low);
  for (let i = 0; i < inv.length; i++) {
    const wavelen = f32(twoPi / inv[i]);
    // wavelen > low_freq_wavelen: divide by factor; wavelen < high_freq_wavelen: keep.
    const invLlama = wavelen > lowFreqWavelen ? f32(inv[i] / factor32) : inv[i];
    const isMedium = !(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen);
    if (isMedium) {
      const smooth = f32(f32(f32(oldLen32 / wavelen) - low32) / span32);
      const scaled = f32(f32(f32(1 - smooth) * invLlama) / factor32);
      inv[i] = f32(scaled + f32(smooth * invLlama));
    } else {
      inv[i] = invLlama;
    }
  }
}

export interface RopeTables {
  /** Positions covered: rows 0 … maxPos-1. */
  maxPos: number;
  /** Columns: rotaryDim / 2. */
  half: number;
  /** [maxPos, half], row-major. */
  cos: Float32Array;
  sin: Float32Array;
}

/** cos/sin of inv_freq * position for positions [0, maxPos). */
export function ropeTables(spec: ModelSpec, maxPos: number): RopeTables {
  const inv = ropeInvFreq(spec);
  const half = inv.length;
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    const pos = f32(p);
    for (let i = 0; i < half; i++) {
      const angle = f32(inv[i] * pos);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { maxPos, half, cos, sin };
}
