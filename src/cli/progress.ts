// Progress on stderr: a live bar with tokens/s on a terminal; on anything else (CI logs, pipes) a
// plain line every few seconds, so logs never fill with carriage returns and escape codes.

import cliProgress from 'cli-progress';
import { formatDuration, formatInt } from './format.js';

export interface Progress {
  /** `detail` (e.g. "step 12/100 loss 1.23") is shown after the numbers. */
  update(done: number, tokensPerSecond: number, detail?: string): void;
  /** A line of its own (an eval result, a checkpoint written), printed above a live bar. */
  log(line: string): void;
  stop(): void;
}

const PLAIN_INTERVAL_MS = 10_000;

export function createProgress(label: string, total: number, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (stream.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        stream,
        format: `${label} [{bar}] {percentage}% | {value}/{total} tokens | {speed} tok/s | ETA {eta_formatted}{detail}`,
        barsize: 30,
        hideCursor: true,
        clearOnComplete: true,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { speed: '-', detail: '' });
    return {
      update: (done, tps, detail) => bar.update(done, { speed: formatInt(Math.round(tps)), detail: detail ? ` | ${detail}` : '' }),
      log: (line) => {
        stream.write(`\r\x1b[K${line}\n`);
        // GenericBar.render(force) redraws even though the bar's text has not changed (SingleBar's type omits the flag).
        (bar as unknown as { render(force: boolean): void }).render(true);
      },
      stop: () => bar.stop(),
    };
  }
  let last = Date.now();
  return {
    update(done, tps, detail) {
      const now = Date.now();
      if (now - last < PLAIN_INTERVAL_MS || done >= total) return;
      last = now;
      const pct = ((100 * done) / total).toFixed(0);
      const eta = tps > 0 ? `, ETA ${formatDuration((total - done) / tps)}` : '';
      stream.write(`${label}: ${formatInt(done)}/${formatInt(total)} tokens (${pct}%), ${formatInt(Math.round(tps))} tok/s${eta}${detail ? `, ${detail}` : ''}\n`);
    },
    log: (line) => stream.write(`${line}\n`),
    stop() {},
  };
}
