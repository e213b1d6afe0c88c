// Rotary tables: transformers' inv_freq for default / linear / llama3, and cos/sin of the angles.
import { describe, expect, test } from 'vitest';
import { parseModelConfig } from '../src/model/config.js';
import { ropeInvFreq, ropeTables } from '../src/model/rope.js';

const base = { model_type: 'llama', vocab_size: 8, hidden_size: 64, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 8 };

describe('rope', () => {
  test('default: inv_freq[i] = theta^(-2i/d) in float32', () => {
    const inv = ropeInvFreq(parseModelConfig(base, 'c')); // head_dim 8
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  test('linear divides every frequency by factor', () => {
    const inv = ropeInvFreq(parseModelConfig({ ...base, rope_scaling: { type: 'linear', factor: 4 } }, 'c'));
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map((x) => Math.fround(Math.fround(x) / 4)));
  });

  test('llama3 (Llama 3.1 8B parameters) follows the three bands of _compute_llama3_parameters', () => {
    const spec = parseModelConfig({
      ...base, hidden_size: 4096, num_attention_heads: 32, rope_theta: 500000,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    }, 'c');
    const inv = ropeInvFreq(spec);
    const plain = ropeInvFreq({ ...spec, ropeScaling: { type: 'default' } });
    expect(inv.length).toBe(64);
    let bands = [0, 0, 0];
    for (let i = 0; i < 64; i++) {
      // float64 re-derivation of the same formula
      const wavelen = (2 * Math.PI) / plain[i]!;
      let want: number;
      if (wavelen < 8192 / 4) { want = plain[i]!; bands[0]++; }
      else if (wavelen > 8192 / 1) { want = plain[i]! / 8; bands[2]++; }
      else {
        const smooth = (8192 / wavelen - 1) / (4 - 1);
        want = ((1 - smooth) * plain[i]!) / 8 + smooth * plain[i]!;
        bands[1]++;
      }
      expect(Math.abs(inv[i]! - want) / want).toBeLessThan(1e-6);
    }
    // All three bands occur for these parameters.
    expect(bands.every((n) => n > 0)).toBe(true);
    bands = [];
  });

  test('tables: cos/sin of float32 inv_freq × position', () => {
    const spec = parseModelConfig({ ...base, rope_theta: 500 }, 'c');
    const inv = ropeInvFreq(spec);
    const t = ropeTables(spec, 40);
    expect([t.maxPos, t.half, t.cos.length]).toEqual([40, 4, 160]);
    for (const p of [0, 1, 17, 39]) {
      for (let i = 0; i < 4; i++) {
        const angle = Math.fround(inv[i]! * p);
        expect(t.cos[p * 4 + i]).toBe(Math.fround(Math.cos(angle)));
        expect(t.sin[p * 4 + i]).toBe(Math.fround(Math.sin(angle)));
      }
    }
    expect(t.cos[0]).toBe(1);
    expect(t.sin[39 * 4]).not.toBe(0);
  });
});
