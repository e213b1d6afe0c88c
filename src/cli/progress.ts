// Progress on stderr: a live bar with tokens/s on a terminal; on anything else (CI logs, pipes) a
// plain line every few seconds, so logs never fill with carriage returns and escape codes.

import cliProgress from 'cli-progress';
import { formatInt } from './format.js';

export interface Progress {
  update(done: number, tokensPerSecond: number): void;
  stop(): void;
}

const PLAIN_INTERVAL_MS = 10_000;

export function createProgress(label: string, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: `${label} [{bar}] {percentage}% | {value}/{total} tokens | {speed} tok/s | ETA {eta_formatted}`,
        barsize: 30,
        hideCursor: true,
        clearOnComplete: true,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { speed: '-' });
    return {
      update: (done, tps) => bar.update(done, { speed: formatInt(Math.round(tps)) }),
      stop: () => bar.stop(),
    };
  }
  let last = Date.now();
  return {
    update(done, tps) {
      const now = Date.now();
      if (now - last < PLAIN_INTERVAL_MS || done >= total) return;
      last = now;
      const pct = ((100 * done) / total).toFixed(0);
      stream.write(`${label}: ${formatInt(done)}/${formatInt(total)} tokens (${pct}%), ${formatInt(Math.round(tps))} tok/s\n`);
    },
    stop() {},
  };
}
