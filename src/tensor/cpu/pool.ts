// A persistent pool of worker threads that run kernels.ts on SharedArrayBuffer storages, so one
// op is split across cores while the Device API stays synchronous.
//
// Worker code: the kernels' own source text (`fn.toString()`) joined into one CommonJS script
// and started with `new Worker(code, { eval: true })`. That needs no separate worker file, so
// it runs the same from dist/ (compiled JS) and under vitest (TS transformed on the fly).
//
// Protocol (all synchronous):
// - Storages are registered once: the main thread posts {id, sab} on a MessagePort; a worker
//   drains that port with receiveMessageOnPort when it wakes for a job. A FinalizationRegistry
//   posts {id} (no sab: forget it) when the main thread's storage is collected.
// - Each worker instantiates the SIMD module (kernels.ts createSimdContext) with its own memory.
// - A job: the main thread writes the op, storage ids, parameters and a list of chunks (work
//   ranges) into shared arrays, bumps GEN (the job's generation) and notifies. Every
//   participant, the main thread included, takes chunks by Atomics.add on NEXT until none are
//   left (so a thread that wakes late, or that the OS deschedules, just takes fewer); each worker
//   then stores the generation it finished in its own DONE slot, and the main thread returns
//   once every slot holds this job's generation. Workers spin briefly, then Atomics.wait on GEN.
// - A worker runs a job only when GEN differs from the last generation it ran: a wake-up alone
//   is not a job. The main thread can be descheduled between bumping GEN and notifying, so a
//   worker that saw the new GEN while spinning may have finished the job and be waiting again
//   when that notify arrives (taken as a job, it ran the generation twice: the second pass
//   counted as done for the next job and took the next job's chunks under the old op).
// - A worker posts its error, tagged with the generation, before it reports done, so the error
//   is thrown by the run() of the job that caused it.
// - Workers are unref'd, so they never keep a CLI process alive; close() ends them.

import { Worker, MessageChannel, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { KERNEL_FUNCTIONS, createSimdContext, runKernel, type SimdContext } from './kernels.js';

/** Indices of the shared control words (Int32Array). */
const CTRL = {
  /** The current job's generation: bumped once per job (and by close()). */
  GEN: 0,
  OP: 1,
  /** Next chunk to take. */
  NEXT: 2,
  /** Chunks of the current job. */
  CHUNKS: 3,
  /** Workers started. */
  READY: 4,
  /** Set when a worker failed in the current job (its message is on its port). */
  ERR: 5,
  /** DONE + i - 1: the last generation worker i finished. */
  DONE: 8,
} as const;
type ControlSlots = typeof CTRL;
/** Most chunks one job may have. */
export const MAX_CHUNKS = 64;
/** Float storages an op may name, then the int and double host scratch. */
export const MAX_ARRAYS = 6;
const ID_I32 = MAX_ARRAYS;
const ID_F64 = MAX_ARRAYS + 1;
export const MAX_PARAMS = 31;
/** params[SCRATCH_PARAM] = scratch floats each participant needs. */
const SCRATCH_PARAM = 31;
const OP_QUIT = -1;
const SPIN_WORKER = 20000;
const SPIN_MAIN = 20000;
const READY_TIMEOUT_MS = 20000;

interface WorkerData {
  port: MessagePort;
  slots: ControlSlots;
  ctrl: SharedArrayBuffer;
  params: SharedArrayBuffer;
  ids: SharedArrayBuffer;
  chunks: SharedArrayBuffer;
  index: number;
  spin: number;
  /** The SIMD module's bytes, or null when SIMD kernels are off. */
  simdBytes: Uint8Array | null;
}

/** What a failing worker posts on its port. */
interface WorkerFailure {
  gen: number;
  text: string;
}

/**
 * The worker's main loop. Embedded by source text: it may use only its arguments and globals.
 * `run` is runKernel, `wt` the node:worker_threads module.
 */
function workerMain(
  run: typeof runKernel, simdContext: typeof createSimdContext, wt: typeof import('node:worker_threads'),
): void {
  const data = wt.workerData as WorkerData;
  const simd = data.simdBytes !== null ? simdContext(data.simdBytes) : null;
  const port = data.port;
  const ctrl = new Int32Array(data.ctrl);
  const params = new Float64Array(data.params);
  const ids = new Int32Array(data.ids);
  const chunks = new Int32Array(data.chunks);
  const me = data.index;
  const storages = new Map<number, SharedArrayBuffer>();
  const f32 = new Map<number, Float32Array>();
  const empty32 = new Float32Array(0);
  const f: Float32Array[] = [empty32, empty32, empty32, empty32, empty32, empty32];
  let sc = new Float32Array(4096);
  const { GEN, OP, NEXT, CHUNKS, READY, ERR } = data.slots;
  const doneSlot = data.slots.DONE + me - 1;
  let seen = 0;
  Atomics.add(ctrl, READY, 1);
  Atomics.notify(ctrl, READY);
  for (;;) {
    for (let s = 0; s < data.spin && Atomics.load(ctrl, GEN) === seen; s++);
    // Only a new generation is a job: a notify can arrive after this worker already ran its job.
    while (Atomics.load(ctrl, GEN) === seen) Atomics.wait(ctrl, GEN, seen);
    seen = Atomics.load(ctrl, GEN);
    const op = Atomics.load(ctrl, OP);
    if (op === -1) break;
    try {
      for (let m = wt.receiveMessageOnPort(port); m !== undefined; m = wt.receiveMessageOnPort(port)) {
        const msg = m.message as { id: number; sab?: SharedArrayBuffer };
        if (msg.sab !== undefined) {
          storages.set(msg.id, msg.sab);
          f32.set(msg.id, new Float32Array(msg.sab, 0, msg.sab.byteLength >> 2));
        } else {
          storages.delete(msg.id);
          f32.delete(msg.id);
        }
      }
      for (let i = 0; i < 6; i++) {
        const id = ids[i];
        const arr = id >= 0 ? f32.get(id) : empty32;
        if (arr === undefined) throw new Error(`storage ${id} was not registered`);
        f[i] = arr;
      }
      const intSab = ids[6] >= 0 ? storages.get(ids[6]) : undefined;
      const dblSab = ids[7] >= 0 ? storages.get(ids[7]) : undefined;
      const i32 = intSab !== undefined ? new Int32Array(intSab) : new Int32Array(0);
      const f64 = dblSab !== undefined ? new Float64Array(dblSab) : new Float64Array(0);
      if (sc.length < params[31]) sc = new Float32Array(params[31]);
      const n = Atomics.load(ctrl, CHUNKS);
      for (let c = Atomics.add(ctrl, NEXT, 1); c < n; c = Atomics.add(ctrl, NEXT, 1)) {
        run(op, f, i32, f64, sc, simd, params, chunks[4 * c], chunks[4 * c + 1], chunks[4 * c + 2], chunks[4 * c + 3]);
      }
    } catch (e) {
      const failure: WorkerFailure = { gen: seen, text: `worker ${me}, op ${op}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}` };
      port.postMessage(failure);
      Atomics.store(ctrl, ERR, 1);
    }
    Atomics.store(ctrl, doneSlot, seen);
    Atomics.notify(ctrl, doneSlot);
  }
}

function workerSource(): string {
  const kernels = KERNEL_FUNCTIONS.map((fn) => fn.toString()).join('\n\n');
  return `'use strict';\n${kernels}\n\n(${workerMain.toString()})(runKernel, createSimdContext, require('node:worker_threads'));\n`;
}

export class WorkerPool {
  /** Participants in a job: the main thread plus the workers. */
  readonly size: number;
  private readonly workers: Worker[] = [];
  /** Registration/error channel to worker 1; extraPorts to workers 2.. */
  private readonly port: MessagePort;
  private readonly extraPorts: MessagePort[] = [];
  private readonly ctrl: Int32Array;
  private readonly params: Float64Array;
  private readonly ids: Int32Array;
  private readonly chunks: Int32Array;
  private readonly storageIds = new WeakMap<ArrayBufferLike, number>();
  private readonly finalizer: FinalizationRegistry<number>;
  private nextId = 0;
  private ready = false;
  private closed = false;
  private mainScratch = new Float32Array(4096);
  private hostInts = new Int32Array(new SharedArrayBuffer(4096 * 4));
  private hostDoubles = new Float64Array(new SharedArrayBuffer(4096 * 8));

  constructor(threads: number, private readonly simd: SimdContext | null, simdBytes: Uint8Array | null) {
    this.size = threads;
    this.ctrl = new Int32Array(new SharedArrayBuffer((CTRL.DONE + threads) * 4));
    this.params = new Float64Array(new SharedArrayBuffer((MAX_PARAMS + 1) * 8));
    this.ids = new Int32Array(new SharedArrayBuffer((MAX_ARRAYS + 2) * 4));
    this.chunks = new Int32Array(new SharedArrayBuffer(MAX_CHUNKS * 4 * 4));
    const channel = new MessageChannel();
    this.port = channel.port1;
    this.port.unref();
    const code = workerSource();
    for (let i = 1; i < threads; i++) {
      // A MessagePort has one receiver: each worker gets its own registration channel.
      const ch = i === 1 ? channel : new MessageChannel();
      const workerData: WorkerData = {
        port: ch.port2, slots: CTRL, ctrl: this.ctrl.buffer as SharedArrayBuffer, params: this.params.buffer as SharedArrayBuffer,
        ids: this.ids.buffer as SharedArrayBuffer, chunks: this.chunks.buffer as SharedArrayBuffer, index: i,
        spin: SPIN_WORKER, simdBytes,
      };
      const worker = new Worker(code, { eval: true, workerData, transferList: [ch.port2] });
      worker.unref();
      this.workers.push(worker);
      if (i > 1) {
        ch.port1.unref();
        this.extraPorts.push(ch.port1);
      }
    }
    this.finalizer = new FinalizationRegistry((id: number) => {
      if (!this.closed) this.post({ id });
    });
  }

  private post(msg: { id: number; sab?: SharedArrayBuffer }): void {
    this.port.postMessage(msg);
    for (const p of this.extraPorts) p.postMessage(msg);
  }

  /** Shared host scratch for int inputs (token ids, targets) of at least n elements. */
  ints(n: number): Int32Array {
    if (this.hostInts.length < n) this.hostInts = new Int32Array(new SharedArrayBuffer(n * 4));
    return this.hostInts;
  }

  /** Shared host scratch for float64 results of at least n elements. */
  doubles(n: number): Float64Array {
    if (this.hostDoubles.length < n) this.hostDoubles = new Float64Array(new SharedArrayBuffer(n * 8));
    return this.hostDoubles;
  }

  private idOf(buffer: ArrayBufferLike): number {
    let id = this.storageIds.get(buffer);
    if (id === undefined) {
      if (!(buffer instanceof SharedArrayBuffer)) throw new Error('cpu pool: storage is not a SharedArrayBuffer');
      id = this.nextId++;
      this.storageIds.set(buffer, id);
      this.post({ id, sab: buffer });
      this.finalizer.register(buffer, id);
    }
    return id;
  }

  private waitReady(): void {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const n = Atomics.load(this.ctrl, CTRL.READY);
      if (n === this.workers.length) break;
      if (Date.now() > deadline) throw new Error(`cpu pool: ${this.workers.length - n} worker thread(s) did not start`);
      Atomics.wait(this.ctrl, CTRL.READY, n, 50);
    }
    this.ready = true;
  }

  /**
   * Runs op over its chunks on every participant. arrays are whole storages; params numeric
   * arguments; chunks holds [lo, hi, c0, c1] per chunk (at most MAX_CHUNKS); scratch the floats
   * of scratch each participant needs.
   */
  run(
    op: number, arrays: readonly Float32Array[], i32: Int32Array | null, f64: Float64Array | null,
    params: readonly number[], chunks: Int32Array, scratch: number,
  ): void {
    if (this.closed) throw new Error('cpu pool: used after close()');
    if (!this.ready) this.waitReady();
    const ids = this.ids;
    for (let i = 0; i < MAX_ARRAYS; i++) ids[i] = i < arrays.length && arrays[i].length > 0 ? this.idOf(arrays[i].buffer) : -1;
    ids[ID_I32] = i32 !== null ? this.idOf(i32.buffer) : -1;
    ids[ID_F64] = f64 !== null ? this.idOf(f64.buffer) : -1;
    const p = this.params;
    for (let i = 0; i < params.length; i++) p[i] = params[i];
    p[SCRATCH_PARAM] = scratch;
    const nChunks = chunks.length >> 2;
    if (nChunks > MAX_CHUNKS) throw new Error(`cpu pool: ${nChunks} chunks, at most ${MAX_CHUNKS}`);
    this.chunks.set(chunks);
    if (this.mainScratch.length < scratch) this.mainScratch = new Float32Array(scratch);
    const ctrl = this.ctrl;
    Atomics.store(ctrl, CTRL.ERR, 0);
    Atomics.store(ctrl, CTRL.OP, op);
    Atomics.store(ctrl, CTRL.NEXT, 0);
    Atomics.store(ctrl, CTRL.CHUNKS, nChunks);
    const gen = (Atomics.add(ctrl, CTRL.GEN, 1) + 1) | 0;
    Atomics.notify(ctrl, CTRL.GEN);
    // The workers are running this job now: nothing below may leave before waitDone(gen).
    let mainError: unknown;
    try {
      const fs = arrays as Float32Array[], ints = i32 ?? this.hostInts, dbls = f64 ?? this.hostDoubles;
      for (let c = Atomics.add(ctrl, CTRL.NEXT, 1); c < nChunks; c = Atomics.add(ctrl, CTRL.NEXT, 1)) {
        runKernel(op, fs, ints, dbls, this.mainScratch, this.simd, p, chunks[4 * c], chunks[4 * c + 1], chunks[4 * c + 2], chunks[4 * c + 3]);
      }
    } catch (e) {
      mainError = e;
    }
    this.waitDone(gen);
    const failures = Atomics.load(ctrl, CTRL.ERR) !== 0 ? this.workerFailures(gen) : [];
    if (failures.length === 0) {
      if (mainError !== undefined) throw mainError;
      return;
    }
    const main = mainError !== undefined ? `main thread: ${mainError instanceof Error ? mainError.message : String(mainError)}; ` : '';
    throw new Error(`cpu pool: op ${op}: ${main}${failures.join('; ')}`, mainError !== undefined ? { cause: mainError } : undefined);
  }

  /** Returns once every worker has finished generation gen. */
  private waitDone(gen: number): void {
    const ctrl = this.ctrl;
    const n = this.workers.length;
    const allDone = () => {
      for (let i = 0; i < n; i++) if (Atomics.load(ctrl, CTRL.DONE + i) !== gen) return false;
      return true;
    };
    for (let s = 0; s < SPIN_MAIN && !allDone(); s++);
    for (let i = 0; i < n; i++) {
      const slot = CTRL.DONE + i;
      for (let d = Atomics.load(ctrl, slot); d !== gen; d = Atomics.load(ctrl, slot)) Atomics.wait(ctrl, slot, d);
    }
  }

  /** The workers' error messages of job gen (posted before they reported it done). */
  private workerFailures(gen: number): string[] {
    const texts: string[] = [];
    for (const port of [this.port, ...this.extraPorts]) {
      for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
        const f = m.message as WorkerFailure;
        // Cannot happen while every worker runs each generation once; says so if it ever does.
        texts.push(f.gen === gen ? f.text : `${f.text} (posted by job ${f.gen}, not this job ${gen})`);
      }
    }
    return texts.length > 0 ? texts : ['a worker failed without a message'];
  }

  /** Ends the workers. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    Atomics.store(this.ctrl, CTRL.OP, OP_QUIT);
    Atomics.add(this.ctrl, CTRL.GEN, 1);
    Atomics.notify(this.ctrl, CTRL.GEN);
    for (const w of this.workers) void w.terminate();
    this.port.close();
    for (const p of this.extraPorts) p.close();
  }
}
