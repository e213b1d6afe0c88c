// Number and table formatting for human output.

/** 260032 → "260,032" */
export function formatInt(n: number): string {
  return n.toLocaleString('en-US');
}

/** 1040128 → "1.04 MB" (SI units; exact bytes are shown beside where they matter). */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(2)} ${units[unit]}`;
}

/** Significant digits without exponent noise for ordinary magnitudes: 5.065265 → "5.0653". */
export function formatFloat(x: number, digits = 5): string {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  if (Math.abs(x) < 1e-4 || Math.abs(x) >= 1e9) return x.toExponential(digits - 1);
  return Number(x.toPrecision(digits)).toString();
}

/** Columns padded to their widest cell; `right` marks columns to right-align (numbers). */
export function renderTable(header: readonly string[], rows: readonly (readonly string[])[], right: readonly boolean[] = []): string[] {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, c) => (right[c] ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** 42.3 → "42 s", 185 → "3m05s", 7384 → "2h03m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
