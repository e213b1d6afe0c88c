// WorkerPool under the timing that broke it: the main thread descheduled between publishing a
// job (bumping its generation) and notifying the workers. A spinning worker then sees the job,
// runs all of it and is waiting again when the notify arrives; a pool that took that wake-up for
// a new job ran the generation twice, counted the second pass as done for the next job and ran
// the next job's chunks under the old op (`worker 1: RangeError: offset is out of bounds` in
// simdMatmulKernel, thrown by the addInPlace after it, or silently wrong outputs).
//
// Late notifies are made by wrapping Atomics.notify on this thread: the pool's only notify from
// the main thread is a job's (or close()'s), on the control words it shares with its workers.

import { describe, expect, it } from 'vitest';
import { OP_ADD, OP_GELU, addKernel, geluTanhKernel } from '../src/tensor/cpu/kernels.js';
import { WorkerPool } from '../src/tensor/cpu/pool.js';
import { seededRandom } from '../src/random.js';

function shared(n: number, seed: number): Float32Array {
  const r = seededRandom(seed);
  const a = new Float32Array(new SharedArrayBuffer(n * 4));
  for (let i = 0; i < n; i++) a[i] = r() * 2 - 1;
  return a;
}

/** [lo, hi, 0, 0] per chunk: n elements in `parts` chunks. */
function chunksOf(n: number, parts: number): Int32Array {
  const c = new Int32Array(parts * 4);
  const step = Math.ceil(n / parts);
  for (let i = 0; i < parts; i++) c.set([Math.min(n, i * step), Math.min(n, (i + 1) * step), 0, 0], i * 4);
  return c;
}

function spinFor(us: number): void {
  const until = performance.now() + us / 1000;
  while (performance.now() < until);
}

/**
 * Runs body with every Atomics.notify of this thread made `lateUs` microseconds late, and the
 * thread held up to `afterUs` more (seeded, varying) after it: where the main thread resumes
 * relative to the woken worker decides which parts of a job a wrongly woken worker would read.
 */
function withLateNotify(lateUs: number, afterUs: number, body: () => void): void {
  const notify = Atomics.notify;
  const r = seededRandom(11);
  Atomics.notify = ((ta: Int32Array, index: number, count?: number) => {
    spinFor(lateUs);
    const woken = notify(ta, index, count);
    spinFor(r() * afterUs);
    return woken;
  }) as typeof Atomics.notify;
  try {
    body();
  } finally {
    Atomics.notify = notify;
  }
}

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('WorkerPool with late notifies', () => {
  it('a wake-up that carries no new job leaves every shared control word as it was', () => {
    // The control words and the index the pool notifies a job on, seen through Atomics.notify.
    const pool = new WorkerPool(3, null, null);
    let ctrl: Int32Array | undefined;
    let jobIndex = -1;
    const notify = Atomics.notify;
    Atomics.notify = ((ta: Int32Array, index: number, count?: number) => {
      ctrl ??= ta;
      if (jobIndex < 0) jobIndex = index;
      return notify(ta, index, count);
    }) as typeof Atomics.notify;
    const x = shared(64, 1), y = shared(64, 2);
    const want = x.slice();
    try {
      pool.run(OP_ADD, [x, y], null, null, [0, 0], chunksOf(64, 8), 0);
      Atomics.notify = notify;
      expect(ctrl).toBeDefined();
      for (let wake = 0; wake < 5; wake++) {
        sleep(30); // both workers are past their spin, waiting for the next job
        const before = Array.from(ctrl!);
        Atomics.notify(ctrl!, jobIndex); // what a late notify of the finished job looks like
        sleep(30);
        expect(Array.from(ctrl!)).toEqual(before);
      }
      pool.run(OP_ADD, [x, y], null, null, [0, 0], chunksOf(64, 8), 0);
      addKernel(want, 0, y, 0, 0, 64);
      addKernel(want, 0, y, 0, 0, 64);
      expect(Array.from(x)).toEqual(Array.from(want));
    } finally {
      Atomics.notify = notify;
      pool.close();
    }
  });

  // The outputs under that timing. The old race hit here only now and then (it needs the woken
  // worker's reads to straddle the next job's set-up); the test above catches it every time.
  it('runs each job once, on its own op and chunks, jobs back to back', () => {
    const n = 4096;
    const pool = new WorkerPool(2, null, null);
    const x = shared(n, 1), y = shared(n, 2), g = shared(n, 3), o = shared(n, 4);
    const chunks = chunksOf(n, 8);
    try {
      pool.run(OP_ADD, [x, y], null, null, [0, 0], chunks, 0); // starts the worker
      const wantX = x.slice(), wantO = new Float32Array(n);
      withLateNotify(300, 100, () => {
        // Three different jobs back to back per round, as a decoder step runs them: a pass of
        // one under another's op writes the wrong storage or leaves chunks undone.
        for (let round = 0; round < 200; round++) {
          pool.run(OP_ADD, [x, y], null, null, [0, 0], chunks, 0);
          pool.run(OP_GELU, [o, g], null, null, [0, 0], chunks, 0);
          pool.run(OP_ADD, [x, o], null, null, [0, 0], chunks, 0);
          addKernel(wantX, 0, y, 0, 0, n);
          geluTanhKernel(wantO, 0, g, 0, 0, n);
          addKernel(wantX, 0, wantO, 0, 0, n);
          let wrong = 0;
          for (let i = 0; i < n; i++) if (x[i] !== wantX[i] || o[i] !== wantO[i]) wrong++;
          if (wrong > 0) throw new Error(`round ${round}: ${wrong} wrong values`);
          // Keep x bounded (it accumulates y + gelu(g) every round).
          x.set(y);
          wantX.set(y);
        }
      });
    } finally {
      pool.close();
    }
  });

  it("throws a worker's error from the job that caused it, and the next job runs clean", () => {
    const pool = new WorkerPool(2, null, null);
    try {
      const x = shared(64, 5), y = shared(64, 6);
      const want = x.slice();
      addKernel(want, 0, y, 0, 0, 64);
      withLateNotify(300, 100, () => {
        // The main thread fails on its first chunk and stops taking chunks, so the worker takes
        // (and fails on) the next: both messages belong to this job.
        expect(() => pool.run(999, [], null, null, [], chunksOf(64, 8), 0))
          .toThrow(/^cpu pool: op 999: main thread: cpu kernel: unknown op 999; worker 1, op 999: Error: cpu kernel: unknown op 999/);
        pool.run(OP_ADD, [x, y], null, null, [0, 0], chunksOf(64, 8), 0);
      });
      expect(Array.from(x)).toEqual(Array.from(want));
    } finally {
      pool.close();
    }
  });
});
