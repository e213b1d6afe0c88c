// Perplexity protocols → windows over a token stream.
//
// A window is a slice [start, start + length) of the token stream fed to the model at once; it
// scores the targets at relative positions firstTarget .. length-1 (target j is predicted from the
// logits at j-1, so firstTarget ≥ 1). Definitions match /shared/references/stories260K-perplexity.json:
//
// - chunksN:           non-overlapping windows of N tokens; a last window shorter than N is dropped;
//                      every window scores its N-1 shifted targets.
// - chunksN_keep_last: as chunksN, but a last shorter window (≥ 2 tokens) is scored too.
// - strideN_S:         Hugging Face "perplexity of fixed-length models": windows of N tokens starting
//                      every S tokens (the last one ends at the end of the stream, so may be shorter);
//                      each token is scored once, in the first window that has it as a new target.
//                      The first window scores N-1 targets, each later one the tokens past the end of
//                      the previous window (S of them while windows are full).

export type Protocol =
  | { kind: 'chunks'; window: number; keepLast: boolean }
  | { kind: 'stride'; window: number; stride: number };

export interface Window {
  /** Index of the window's first token in the token stream. */
  start: number;
  /** Tokens in the window (the model sees them all). */
  length: number;
  /** Relative index of the first scored target; targets firstTarget .. length-1 are scored. */
  firstTarget: number;
}

/** The protocol's name as the reference file keys it: chunks512, chunks512_keep_last, stride512_256. */
export function protocolName(p: Protocol): string {
  if (p.kind === 'chunks') return `chunks${p.window}${p.keepLast ? '_keep_last' : ''}`;
  return `stride${p.window}_${p.stride}`;
}

/** Distance between window starts. */
export function protocolStride(p: Protocol): number {
  return p.kind === 'chunks' ? p.window : p.stride;
}

/** Windows of `p` over a stream of `tokenCount` tokens, in stream order. Windows scoring nothing are left out. */
export function makeWindows(p: Protocol, tokenCount: number): Window[] {
  assertPositiveInteger(p.window, 'window');
  if (!Number.isInteger(tokenCount) || tokenCount < 0) throw new RangeError(`token count must be an integer ≥ 0, got ${tokenCount}`);
  return p.kind === 'chunks' ? chunkWindows(p.window, p.keepLast, tokenCount) : strideWindows(p.window, p.stride, tokenCount);
}

function chunkWindows(n: number, keepLast: boolean, tokenCount: number): Window[] {
  const windows: Window[] = [];
  for (let start = 0; start < tokenCount; start += n) {
    const length = Math.min(n, tokenCount - start);
    if (length < n && !(keepLast && length >= 2)) break;
    windows.push({ start, length, firstTarget: 1 });
  }
  return windows;
}

function strideWindows(n: number, stride: number, tokenCount: number): Window[] {
  assertPositiveInteger(stride, 'stride');
  if (stride > n) throw new RangeError(`stride ${stride} is larger than the window ${n}: tokens between windows would never be scored`);
  const windows: Window[] = [];
  let prevEnd = 0;
  for (let start = 0; start < tokenCount; start += stride) {
    const end = Math.min(start + n, tokenCount);
    // New targets are the tokens past the previous window's end; a window's first token has no context.
    const firstTarget = Math.max(1, prevEnd - start);
    if (end - start > firstTarget) windows.push({ start, length: end - start, firstTarget });
    prevEnd = end;
    if (end === tokenCount) break;
  }
  return windows;
}

/** Targets scored by a window list. */
export function countScored(windows: readonly Window[]): number {
  let total = 0;
  for (const w of windows) total += w.length - w.firstTarget;
  return total;
}

/** Consecutive runs of windows with equal length, at most `maxBatch` per run: one forward pass each. */
export function batchWindows(windows: readonly Window[], maxBatch: number): Window[][] {
  assertPositiveInteger(maxBatch, 'batch');
  const batches: Window[][] = [];
  let current: Window[] = [];
  for (const w of windows) {
    if (current.length > 0 && (current.length === maxBatch || current[0]!.length !== w.length)) {
      batches.push(current);
      current = [];
    }
    current.push(w);
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

function assertPositiveInteger(v: number, what: string): void {
  if (!Number.isInteger(v) || v <= 0) throw new RangeError(`${what} must be a positive integer, got ${v}`);
}
