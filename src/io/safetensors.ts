// safetensors: a lazy reader for untrusted files and a streaming writer.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON header (may be padded with
// spaces), then the data section. The header maps each tensor name to
// {dtype, shape, data_offsets: [begin, end]} (offsets relative to the data section) and may hold
// "__metadata__": a string→string map. Tensors must tile the data section exactly: no overlaps,
// no holes, nothing after the last one.
//
// The reader keeps a file descriptor and reads each tensor on demand with positioned reads in
// chunks of at most 1 GiB (fs.readSync takes at most 2^31-1 bytes), so files and tensors over
// 2 GiB work and nothing reads the whole file.

import fs from 'node:fs';
import { constants as bufferConstants } from 'node:buffer';
import { SafetensorsError } from '../errors.js';
import { DTYPES, DTYPE_SIZE, decodeToFloat32, isDType, type DType } from './dtypes.js';
import { describeJsonProblem, parseJsonStrict } from './json.js';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offsets within the data section (add the reader's dataStart for file offsets). */
  begin: number;
  end: number;
  byteLength: number;
}

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: number[];
  /** The bytes, or a function producing them when the writer gets to this tensor. */
  data: Uint8Array | (() => Uint8Array);
}

/** Headers larger than this are refused (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Largest single read or write; fs.readSync/writeSync lengths must fit in an int32. */
export const DEFAULT_IO_CHUNK_BYTES = 1024 * 1024 * 1024;
const METADATA_KEY = '__metadata__';
const JSON_MAX_DEPTH = 64;

export interface SafetensorsReadOptions {
  /** Largest positioned read (bytes). Only tests change it, to exercise the chunked path. */
  readChunkBytes?: number;
}

export interface SafetensorsWriteOptions {
  /** Largest single write (bytes). Only tests change it. */
  writeChunkBytes?: number;
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Product of the dims as a bigint (exact for any shape). */
function elementCount(shape: readonly number[]): bigint {
  let n = 1n;
  for (const d of shape) n *= BigInt(d);
  return n;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describeJsonValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

function describeOffset(v: unknown): string {
  return typeof v === 'number' ? String(v) : describeJsonValue(v);
}

/** Reads exactly `length` bytes at `position` into buf[offset..], in chunks of at most chunkBytes. */
function readFully(
  fd: number,
  buf: Uint8Array,
  offset: number,
  length: number,
  position: number,
  chunkBytes: number,
  onShortRead: () => never,
): void {
  let done = 0;
  while (done < length) {
    const want = Math.min(chunkBytes, length - done);
    const got = fs.readSync(fd, buf, offset + done, want, position + done);
    if (got === 0) onShortRead();
    done += got;
  }
}

export class SafetensorsReader {
  private fd: number | undefined;

  private constructor(
    readonly file: string,
    fd: number,
    /** Size of the file in bytes when it was opened. */
    readonly fileSize: number,
    readonly metadata: Record<string, string> | undefined,
    /** In file order (by begin offset). */
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    /** File offset of the data section: 8 + header length. */
    readonly dataStart: number,
    private readonly readChunkBytes: number,
  ) {
    this.fd = fd;
  }

  /** Opens and validates `file`; reads only the header. Throws SafetensorsError on any violation. */
  static open(file: string, options: SafetensorsReadOptions = {}): SafetensorsReader {
    const chunk = options.readChunkBytes ?? DEFAULT_IO_CHUNK_BYTES;
    if (!Number.isSafeInteger(chunk) || chunk < 1 || chunk > DEFAULT_IO_CHUNK_BYTES) {
      throw new RangeError(`readChunkBytes must be an integer in [1, ${DEFAULT_IO_CHUNK_BYTES}], got ${chunk}`);
    }
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (e) {
      throw new SafetensorsError(file, undefined, `cannot open: ${(e as Error).message}`);
    }
    try {
      const stat = fs.fstatSync(fd);
      if (!stat.isFile()) throw new SafetensorsError(file, undefined, 'not a regular file');
      const parsed = parseHeader(file, fd, stat.size, chunk);
      return new SafetensorsReader(file, fd, stat.size, parsed.metadata, parsed.tensors, parsed.dataStart, chunk);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  /** Names in file order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.file, name, 'no such tensor in this file');
    return info;
  }

  /** The tensor's raw little-endian bytes, in a new buffer (byteOffset 0, so any typed view is aligned). */
  readBytes(name: string): Uint8Array<ArrayBuffer> {
    const info = this.info(name);
    if (this.fd === undefined) throw new SafetensorsError(this.file, name, 'read after close()');
    if (info.byteLength > bufferConstants.MAX_LENGTH) {
      throw new SafetensorsError(
        this.file,
        name,
        `${info.byteLength} bytes is more than one Node buffer can hold (${bufferConstants.MAX_LENGTH})`,
      );
    }
    const bytes = new Uint8Array(info.byteLength);
    readFully(this.fd, bytes, 0, info.byteLength, this.dataStart + info.begin, this.readChunkBytes, () => {
      throw new SafetensorsError(this.file, name, 'file ended before the tensor data (was it truncated after opening?)');
    });
    return bytes;
  }

  /** The tensor converted to float32 (see decodeToFloat32). */
  readFloat32(name: string): Float32Array<ArrayBuffer> {
    const info = this.info(name);
    const bytes = this.readBytes(name);
    // Fresh, aligned buffer: F32 needs no conversion and no copy.
    if (info.dtype === 'F32') return new Float32Array(bytes.buffer, 0, info.byteLength / 4);
    return decodeToFloat32(info.dtype, bytes);
  }

  close(): void {
    if (this.fd !== undefined) {
      fs.closeSync(this.fd);
      this.fd = undefined;
    }
  }
}

interface ParsedHeader {
  metadata: Record<string, string> | undefined;
  tensors: Map<string, TensorInfo>;
  dataStart: number;
}

function parseHeader(file: string, fd: number, fileSize: number, chunk: number): ParsedHeader {
  const fail = (reason: string, tensor?: string): never => {
    throw new SafetensorsError(file, tensor, reason);
  };
  if (fileSize < 8) fail(`file is ${fileSize} bytes: too short for the 8-byte header length`);
  const lengthBytes = Buffer.alloc(8);
  readFully(fd, lengthBytes, 0, 8, 0, chunk, () => fail('file ended while reading the header length'));
  const headerLength64 = lengthBytes.readBigUInt64LE(0);
  if (headerLength64 === 0n) fail('header length is 0');
  if (headerLength64 > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${headerLength64} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const headerLength = Number(headerLength64);
  if (8 + headerLength > fileSize) {
    fail(`header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
  }
  const headerBytes = Buffer.alloc(headerLength);
  readFully(fd, headerBytes, 0, headerLength, 8, chunk, () => fail('file ended while reading the header'));

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail('header is not valid UTF-8');
  }
  if (text.charCodeAt(0) !== 0x7b) fail(`header must start with '{', found ${JSON.stringify(text.slice(0, 1))}`);
  const parsed = parseJsonStrict(text, { rejectDuplicateKeys: true, maxDepth: JSON_MAX_DEPTH });
  if (!parsed.ok) return fail(`header: ${describeJsonProblem(parsed.problem)}`);
  if (!isPlainObject(parsed.value)) return fail('header is not a JSON object');

  const dataStart = 8 + headerLength;
  const dataSize = fileSize - dataStart;
  let metadata: Record<string, string> | undefined;
  const infos: TensorInfo[] = [];
  for (const [name, entry] of Object.entries(parsed.value)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(entry, fail);
    } else {
      infos.push(parseEntry(name, entry, dataSize, fail));
    }
  }
  checkTiling(infos, dataSize, fail);
  return { metadata, tensors: new Map(infos.map((t) => [t.name, t])), dataStart };
}

function parseMetadata(entry: unknown, fail: (reason: string, tensor?: string) => never): Record<string, string> {
  if (!isPlainObject(entry)) return fail(`"${METADATA_KEY}" must be an object of strings, found ${describeJsonValue(entry)}`);
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== 'string') fail(`"${METADATA_KEY}" value for ${JSON.stringify(k)} must be a string, found ${describeJsonValue(v)}`);
    // defineProperty: a key named "__proto__" must stay a plain entry.
    Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return metadata;
}

function parseEntry(
  name: string,
  entry: unknown,
  dataSize: number,
  fail: (reason: string, tensor?: string) => never,
): TensorInfo {
  const bad = (reason: string): never => fail(reason, name);
  if (!isPlainObject(entry)) return bad(`entry must be an object with dtype, shape and data_offsets, found ${describeJsonValue(entry)}`);
  for (const key of Object.keys(entry)) {
    if (key !== 'dtype' && key !== 'shape' && key !== 'data_offsets') bad(`unexpected field ${JSON.stringify(key)}`);
  }
  for (const key of ['dtype', 'shape', 'data_offsets']) {
    if (!Object.hasOwn(entry, key)) bad(`missing field "${key}"`);
  }
  const { dtype, shape, data_offsets: offsets } = entry;
  if (!isDType(dtype)) {
    return bad(`unknown dtype ${typeof dtype === 'string' ? JSON.stringify(dtype) : describeJsonValue(dtype)}; known: ${DTYPES.join(', ')}`);
  }
  if (!Array.isArray(shape)) return bad(`shape must be an array of integers, found ${describeJsonValue(shape)}`);
  shape.forEach((d: unknown, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      bad(`shape[${i}] must be a non-negative integer, found ${describeOffset(d)}`);
    }
  });
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    return bad(`data_offsets must be [begin, end], found ${Array.isArray(offsets) ? `${offsets.length} values` : describeJsonValue(offsets)}`);
  }
  const [begin, end] = offsets as unknown[];
  for (const [label, v] of [['begin', begin], ['end', end]] as const) {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      bad(`data_offsets ${label} must be a non-negative integer below 2^53, found ${describeOffset(v)}`);
    }
  }
  const b = begin as number;
  const e = end as number;
  if (b > e) bad(`data_offsets [${b}, ${e}] end before they begin`);
  const dims = shape as number[];
  const needed = elementCount(dims) * BigInt(DTYPE_SIZE[dtype]);
  if (needed !== BigInt(e - b)) {
    bad(`shape ${formatShape(dims)} of ${dtype} needs ${needed} bytes, data_offsets give ${e - b}`);
  }
  if (e > dataSize) bad(`data_offsets [${b}, ${e}] run past the end of the data section (${dataSize} bytes)`);
  return { name, dtype, shape: dims.slice(), begin: b, end: e, byteLength: e - b };
}

/** Tensors must cover [0, dataSize) exactly, in order, with no overlap and no hole. */
function checkTiling(infos: TensorInfo[], dataSize: number, fail: (reason: string, tensor?: string) => never): void {
  infos.sort((x, y) => x.begin - y.begin || x.end - y.end);
  let cursor = 0;
  let previous: TensorInfo | undefined;
  for (const t of infos) {
    if (t.begin < cursor) {
      fail(`data_offsets [${t.begin}, ${t.end}] overlap tensor "${previous!.name}" at [${previous!.begin}, ${previous!.end}]`, t.name);
    }
    if (t.begin > cursor) {
      const after = previous ? `tensor "${previous.name}" ends at ${cursor}` : 'the data section starts at 0';
      fail(`data_offsets begin at ${t.begin} but ${after}: ${t.begin - cursor} unused bytes (the format forbids holes)`, t.name);
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor !== dataSize) {
    fail(`${dataSize - cursor} unused bytes after the last tensor (data section is ${dataSize} bytes, tensors end at ${cursor})`);
  }
}

// --- writer --------------------------------------------------------------------------------------

export interface SafetensorsLayoutEntry {
  tensor: TensorToWrite;
  begin: number;
  end: number;
}

export interface SafetensorsLayout {
  /** The 8-byte length followed by the space-padded JSON header. */
  prefix: Uint8Array;
  /** Tensors in the order their bytes follow the header. */
  entries: SafetensorsLayoutEntry[];
  /** Total file size in bytes. */
  fileSize: number;
}

/**
 * Computes offsets and the header for `tensors` without touching their data. Like the reference
 * writer, tensors are ordered by element size, largest first (stable otherwise), so every tensor
 * starts at a multiple of its element size and memory-mapping readers can use it in place.
 */
export function safetensorsLayout(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): SafetensorsLayout {
  const seen = new Set<string>();
  for (const t of tensors) {
    const bad = (reason: string): never => {
      throw new SafetensorsError(file, t.name, reason);
    };
    if (t.name === METADATA_KEY) bad(`"${METADATA_KEY}" is reserved and cannot name a tensor`);
    if (seen.has(t.name)) bad('two tensors with this name');
    seen.add(t.name);
    if (!isDType(t.dtype)) bad(`unknown dtype ${JSON.stringify(t.dtype)}; known: ${DTYPES.join(', ')}`);
    t.shape.forEach((d, i) => {
      if (!Number.isSafeInteger(d) || d < 0) bad(`shape[${i}] must be a non-negative integer, got ${d}`);
    });
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(file, undefined, `metadata value for ${JSON.stringify(k)} must be a string`);
    }
  }
  const ordered = tensors
    .map((tensor, index) => ({ tensor, index }))
    .sort((x, y) => DTYPE_SIZE[y.tensor.dtype] - DTYPE_SIZE[x.tensor.dtype] || x.index - y.index)
    .map((x) => x.tensor);

  // Null prototype: a tensor named "__proto__" must become a plain key.
  const header = Object.create(null) as Record<string, unknown>;
  if (metadata !== undefined) header[METADATA_KEY] = metadata;
  const entries: SafetensorsLayoutEntry[] = [];
  let offset = 0;
  for (const tensor of ordered) {
    const bytes = elementCount(tensor.shape) * BigInt(DTYPE_SIZE[tensor.dtype]);
    const end = BigInt(offset) + bytes;
    if (end > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new SafetensorsError(file, tensor.name, `shape ${formatShape(tensor.shape)} makes the file larger than 2^53 bytes`);
    }
    entries.push({ tensor, begin: offset, end: Number(end) });
    header[tensor.name] = { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [offset, Number(end)] };
    offset = Number(end);
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const prefix = Buffer.alloc(8 + padded, 0x20);
  prefix.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(prefix, 8);
  return { prefix, entries, fileSize: prefix.length + offset };
}

function writeFully(fd: number, bytes: Uint8Array, chunkBytes: number): void {
  let done = 0;
  while (done < bytes.byteLength) {
    done += fs.writeSync(fd, bytes, done, Math.min(chunkBytes, bytes.byteLength - done));
  }
}

/**
 * Writes a safetensors file: header first, then each tensor's bytes in order. A producer function is
 * called only when its tensor is written, so only one tensor needs to be in memory. The file is
 * fsynced; on any error the partial file is removed.
 */
export function writeSafetensors(
  file: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
  options: SafetensorsWriteOptions = {},
): void {
  const chunk = options.writeChunkBytes ?? DEFAULT_IO_CHUNK_BYTES;
  const layout = safetensorsLayout(file, tensors, metadata);
  const fd = fs.openSync(file, 'w');
  try {
    writeFully(fd, layout.prefix, chunk);
    for (const { tensor, begin, end } of layout.entries) {
      const data = typeof tensor.data === 'function' ? tensor.data() : tensor.data;
      if (!(data instanceof Uint8Array)) {
        throw new SafetensorsError(file, tensor.name, `data must be a Uint8Array, got ${describeJsonValue(data)}`);
      }
      if (data.byteLength !== end - begin) {
        throw new SafetensorsError(
          file,
          tensor.name,
          `shape ${formatShape(tensor.shape)} of ${tensor.dtype} needs ${end - begin} bytes, data has ${data.byteLength}`,
        );
      }
      writeFully(fd, data, chunk);
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw e;
  }
  fs.closeSync(fd);
}
