// Scores several models against one baseline on the same chunks512 windows of a token stream:
// the baseline runs once per batch and each model is scored against its logits with
// device.scoreLogits (the op `llmopt eval --baseline` uses), so a table of N models costs N + 1
// forwards per batch instead of 2N. Shared by bench/quant-table.js and bench/prune-table.js.
import { batchWindows, countScored, makeWindows } from '../dist/eval/windows.js';
import { mean } from '../dist/eval/stats.js';

/** Returns { basePpl, scored, models: [{ ppl, kld_mean, top1 }] } in the order of `decoders`. */
export function scoreAgainstBaseline(device, baseDecoder, decoders, tokens) {
  const windows = makeWindows({ kind: 'chunks', window: 512, keepLast: false }, tokens.length);
  const total = countScored(windows);
  const acc = decoders.map(() => ({ nll: 0, kld: new Float64Array(total), top1: 0 }));
  let baseNll = 0;
  let scored = 0;
  for (const batch of batchWindows(windows, 8)) {
    const seq = batch[0].length;
    const ids = new Int32Array(batch.length * seq);
    const targets = new Int32Array(batch.length * seq).fill(-1);
    batch.forEach((w, b) => {
      ids.set(tokens.subarray(w.start, w.start + seq), b * seq);
      for (let j = w.firstTarget; j < seq; j++) targets[b * seq + j - 1] = tokens[w.start + j];
    });
    const baseLogits = baseDecoder.forward(ids, batch.length, seq);
    const baseScore = device.scoreLogits(baseLogits, targets);
    for (let r = 0; r < targets.length; r++) if (targets[r] >= 0) baseNll += baseScore.nll[r];
    decoders.forEach((decoder, i) => {
      const s = device.scoreLogits(decoder.forward(ids, batch.length, seq), targets, baseLogits);
      let k = scored;
      for (let r = 0; r < targets.length; r++) {
        if (targets[r] < 0) continue;
        acc[i].nll += s.nll[r];
        acc[i].kld[k++] = s.kld[r];
        acc[i].top1 += s.top1[r];
      }
    });
    for (let r = 0; r < targets.length; r++) if (targets[r] >= 0) scored++;
    process.stderr.write(`\rscored ${scored}/${total} tokens`);
  }
  process.stderr.write('\n');
  return {
    basePpl: Math.exp(baseNll / scored),
    scored,
    models: acc.map((a) => ({ ppl: Math.exp(a.nll / scored), kld_mean: mean(a.kld), top1: a.top1 / scored })),
  };
}
