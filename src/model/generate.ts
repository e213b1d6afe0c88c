// Greedy decoding with the KV cache: the argmax token, one step at a time.

import type { Decoder } from './decoder.js';

export interface GreedyOptions {
  /** Stop after emitting one of these ids (it is included in the output). */
  eosTokenId?: number | readonly number[];
}

/** Generates up to maxNewTokens ids after `prompt` (one sequence); returns only the new ids. */
export function generateGreedy(decoder: Decoder, prompt: Int32Array, maxNewTokens: number, opts: GreedyOptions = {}): Int32Array {
  if (prompt.length === 0) throw new Error('generateGreedy: the prompt needs at least one token');
  const device = decoder.device;
  const eos = new Set(opts.eosTokenId === undefined ? [] : typeof opts.eosTokenId === 'number' ? [opts.eosTokenId] : opts.eosTokenId);
  const cache = decoder.newCache(1, prompt.length + maxNewTokens);
  const out: number[] = [];
  const noTarget = new Int32Array([-1]);
  try {
    let input = prompt;
    while (out.length < maxNewTokens) {
      const hidden = decoder.forwardHidden(input, 1, input.length, { cache });
      const logits = decoder.logitsForRows(hidden, input.length - 1, 1);
      const next = device.scoreLogits(logits, noTarget).argmax[0]!;
      out.push(next);
      if (eos.has(next)) break;
      input = new Int32Array([next]);
    }
  } finally {
    cache.free();
  }
  return Int32Array.from(out);
}
