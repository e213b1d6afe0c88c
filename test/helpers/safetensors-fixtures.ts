// Builds safetensors bytes by hand (independently of src/io's writer) and scratch folders for tests.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { seededRandom } from '../../src/random.js';

export interface RawSafetensorsOptions {
  /** Pad the header with spaces to a multiple of this many bytes (python's safetensors uses 8). */
  padTo?: number;
  /** Write this value in the 8-byte length field instead of the real header length. */
  headerLengthField?: bigint;
}

/** u64 LE header length + header text (JSON or anything) + data. */
export function rawSafetensors(header: string | object, data: Uint8Array = new Uint8Array(0), opts: RawSafetensorsOptions = {}): Uint8Array {
  let headerBytes = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const padTo = opts.padTo ?? 8;
  if (headerBytes.length % padTo !== 0) {
    headerBytes = Buffer.concat([headerBytes, Buffer.alloc(padTo - (headerBytes.length % padTo), 0x20)]);
  }
  const out = Buffer.alloc(8 + headerBytes.length + data.byteLength);
  out.writeBigUInt64LE(opts.headerLengthField ?? BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  out.set(data, 8 + headerBytes.length);
  return out;
}

export function bytesOf(typed: ArrayBufferView): Uint8Array {
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

/** A fresh folder under the OS temp dir; remove it with `fs.rmSync(dir, { recursive: true })`. */
export function makeTempDir(prefix = 'llmopt-io-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function randomBytes(rand: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * 256);
  return out;
}

/** Deterministic PRNG for fixtures and fuzzing. */
export const mulberry32 = seededRandom;
