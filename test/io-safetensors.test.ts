import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SafetensorsError } from '../src/errors.js';
import { DTYPES, DTYPE_SIZE, decodeToFloat32, type DType } from '../src/io/dtypes.js';
import { MAX_HEADER_BYTES, SafetensorsReader, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { bytesOf, concatBytes, makeTempDir, mulberry32, randomBytes, rawSafetensors } from './helpers/safetensors-fixtures.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stories = path.resolve(root, '../shared/models/stories260K/model.safetensors');

let dir: string;
beforeAll(() => {
  dir = makeTempDir();
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

let fileCounter = 0;
function writeRaw(bytes: Uint8Array): string {
  const file = path.join(dir, `case-${fileCounter++}.safetensors`);
  fs.writeFileSync(file, bytes);
  return file;
}

/** Opens `file`, expecting a SafetensorsError; returns it. */
function openError(file: string): SafetensorsError {
  try {
    SafetensorsReader.open(file).close();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    return e as SafetensorsError;
  }
  throw new Error(`${file} opened without error`);
}

function expectRejected(header: string | object, data: Uint8Array, tensor: string | undefined, reason: RegExp, opts = {}): void {
  const file = writeRaw(rawSafetensors(header, data, opts));
  const err = openError(file);
  expect(err.file).toBe(file);
  expect(err.tensor).toBe(tensor);
  expect(err.reason).toMatch(reason);
  expect(err.message).toContain(file);
  if (tensor !== undefined) expect(err.message).toContain(`tensor "${tensor}"`);
}

describe('round trip', () => {
  it('writes and reads every dtype with metadata', () => {
    const rand = mulberry32(1);
    const shapes: number[][] = [[3, 5], [7], [2, 1, 3], [], [0, 4], [4, 2]];
    const tensors: TensorToWrite[] = DTYPES.map((dtype, i) => {
      const shape = shapes[i % shapes.length]!;
      const n = shape.reduce((a, b) => a * b, 1);
      return { name: `t.${dtype.toLowerCase()}`, dtype, shape, data: randomBytes(rand, n * DTYPE_SIZE[dtype]) };
    });
    const file = path.join(dir, 'all-dtypes.safetensors');
    const metadata = { format: 'pt', note: 'héllo "quoted"', __proto__x: 'ok' };
    writeSafetensors(file, tensors, metadata);

    const headerLength = Number(fs.readFileSync(file).readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);

    const r = SafetensorsReader.open(file);
    try {
      expect(r.metadata).toEqual(metadata);
      expect(r.dataStart).toBe(8 + headerLength);
      expect(r.tensors.size).toBe(tensors.length);
      for (const t of tensors) {
        const info = r.tensors.get(t.name)!;
        expect(info.dtype).toBe(t.dtype);
        expect(info.shape).toEqual(t.shape);
        expect(info.byteLength).toBe((t.data as Uint8Array).byteLength);
        // Larger elements come first, so every tensor starts at a multiple of its element size.
        expect(info.begin % DTYPE_SIZE[t.dtype]).toBe(0);
        expect(r.readBytes(t.name)).toEqual(t.data);
        const f32 = r.readFloat32(t.name);
        expect(f32).toEqual(decodeToFloat32(t.dtype, t.data as Uint8Array));
      }
    } finally {
      r.close();
    }
  });

  it('calls producers lazily, one tensor at a time, in file order', () => {
    const events: string[] = [];
    const mk = (name: string, dtype: DType, values: number[]): TensorToWrite => ({
      name,
      dtype,
      shape: [values.length],
      data: () => {
        events.push(name);
        return bytesOf(dtype === 'F32' ? Float32Array.from(values) : Int16Array.from(values));
      },
    });
    const file = path.join(dir, 'lazy.safetensors');
    writeSafetensors(file, [mk('small', 'I16', [1, -2, 3]), mk('a', 'F32', [0.5, 1.5]), mk('b', 'F32', [-4])]);
    expect(events).toEqual(['a', 'b', 'small']); // 4-byte elements before 2-byte ones, stable otherwise
    const r = SafetensorsReader.open(file);
    expect([...r.readFloat32('a')]).toEqual([0.5, 1.5]);
    expect([...r.readFloat32('small')]).toEqual([1, -2, 3]);
    expect(r.names()).toEqual(['a', 'b', 'small']);
    r.close();
  });

  it('checks the byte length a producer returns and removes the partial file', () => {
    const file = path.join(dir, 'bad-producer.safetensors');
    expect(() =>
      writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [2, 3], data: () => new Uint8Array(20) }]),
    ).toThrow(/tensor "w": shape \[2, 3\] of F32 needs 24 bytes, data has 20/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('refuses bad tensors to write', () => {
    const file = path.join(dir, 'bad-write.safetensors');
    const t = (name: string, shape = [1]): TensorToWrite => ({ name, dtype: 'U8', shape, data: new Uint8Array(Math.max(0, shape[0]!)) });
    expect(() => writeSafetensors(file, [t('x'), t('x')])).toThrow(/tensor "x": two tensors with this name/);
    expect(() => writeSafetensors(file, [t('__metadata__')])).toThrow(/reserved/);
    expect(() => writeSafetensors(file, [t('x', [-1])])).toThrow(/shape\[0\] must be a non-negative integer/);
    expect(() => writeSafetensors(file, [t('x')], { a: 1 as unknown as string })).toThrow(/metadata value for "a" must be a string/);
    expect(fs.existsSync(file)).toBe(false);
  });

  it('writes a file with no tensors', () => {
    const file = path.join(dir, 'empty.safetensors');
    writeSafetensors(file, []);
    const r = SafetensorsReader.open(file);
    expect(r.tensors.size).toBe(0);
    expect(r.metadata).toBeUndefined();
    r.close();
  });
});

describe('python-written layout', () => {
  it('reads a file laid out byte by byte as safetensors (python) writes it', () => {
    // safetensors.torch.save_file({"a": tensor([1.5, -2.0]), "b": tensor([[7]])}, f, {"format": "pt"})
    const header =
      '{"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[1,1],"data_offsets":[0,8]},' +
      '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}';
    const data = concatBytes(bytesOf(BigInt64Array.from([7n])), bytesOf(Float32Array.from([1.5, -2])));
    const bytes = rawSafetensors(header, data);
    expect((bytes.byteLength - 8 - 16) % 8).toBe(0);
    const r = SafetensorsReader.open(writeRaw(bytes));
    expect(r.metadata).toEqual({ format: 'pt' });
    expect(r.names()).toEqual(['b', 'a']);
    expect(r.info('a')).toEqual({ name: 'a', dtype: 'F32', shape: [2], begin: 8, end: 16, byteLength: 8 });
    expect([...r.readFloat32('a')]).toEqual([1.5, -2]);
    expect([...r.readFloat32('b')]).toEqual([7]);
    expect([...new BigInt64Array(r.readBytes('b').buffer)]).toEqual([7n]);
    r.close();
  });

  it('accepts headers padded with spaces (and other JSON whitespace)', () => {
    const data = bytesOf(Float32Array.from([3]));
    const header = '{ "x" : {"dtype":"F32","shape":[1],"data_offsets":[0,4]}\n}';
    for (const padTo of [1, 8, 64]) {
      const r = SafetensorsReader.open(writeRaw(rawSafetensors(header + '   ', data, { padTo })));
      expect([...r.readFloat32('x')]).toEqual([3]);
      r.close();
    }
  });

  it('reads zero-sized tensors anywhere in the order', () => {
    const header = {
      e1: { dtype: 'F32', shape: [0], data_offsets: [0, 0] },
      x: { dtype: 'U8', shape: [2], data_offsets: [0, 2] },
      e2: { dtype: 'BF16', shape: [3, 0], data_offsets: [2, 2] },
      y: { dtype: 'U8', shape: [1], data_offsets: [2, 3] },
    };
    const r = SafetensorsReader.open(writeRaw(rawSafetensors(header, Uint8Array.from([1, 2, 3]))));
    expect(r.readBytes('e2').byteLength).toBe(0);
    expect([...r.readBytes('y')]).toEqual([3]);
    r.close();
  });
});

describe('validation', () => {
  const f32 = (n: number, begin: number) => ({ dtype: 'F32', shape: [n], data_offsets: [begin, begin + 4 * n] });
  const data8 = new Uint8Array(8);

  it('rejects files too short for the length field', () => {
    const err = openError(writeRaw(Uint8Array.from([1, 0, 0, 0, 0])));
    expect(err.reason).toMatch(/file is 5 bytes: too short/);
  });

  it('rejects bad header lengths', () => {
    expectRejected({}, new Uint8Array(0), undefined, /header length is 0/, { headerLengthField: 0n });
    expectRejected({}, new Uint8Array(0), undefined, /exceeds the 104857600-byte limit/, { headerLengthField: BigInt(MAX_HEADER_BYTES) + 1n });
    expectRejected({}, new Uint8Array(0), undefined, /exceeds/, { headerLengthField: 2n ** 64n - 1n });
    expectRejected({}, new Uint8Array(0), undefined, /header length 4096 runs past the end of the file \(16 bytes\)/, {
      headerLengthField: 4096n,
    });
  });

  it('rejects headers that are not UTF-8, not JSON, or not an object', () => {
    const bad = Buffer.concat([Buffer.from('{"a\xff":1}', 'latin1')]);
    const file = writeRaw(concatBytes(Buffer.from([bad.length, 0, 0, 0, 0, 0, 0, 0]), bad));
    expect(openError(file).reason).toMatch(/not valid UTF-8/);
    expectRejected('{"a": }', new Uint8Array(0), undefined, /invalid JSON at line 1 col 7: expected a value, found '}'/);
    expectRejected('{"a": 1,}', new Uint8Array(0), undefined, /invalid JSON at line 1 col 9/);
    expectRejected("{'a': 1}", new Uint8Array(0), undefined, /expected a property name in double quotes/);
    expectRejected('{} {}', new Uint8Array(0), undefined, /after the JSON value/);
    expectRejected('[1, 2]', new Uint8Array(0), undefined, /header must start with '\{'/);
    expectRejected('{"x": NaN}', new Uint8Array(0), undefined, /expected a value/);
    expectRejected('{"a": ' + '['.repeat(100) + ']'.repeat(100) + '}', new Uint8Array(0), undefined, /nested deeper than 64 levels/);
  });

  it('rejects duplicate keys, also when spelled with escapes', () => {
    expectRejected(`{"x": ${JSON.stringify(f32(1, 0))}, "x": ${JSON.stringify(f32(1, 4))}}`, data8, undefined, /duplicate key "x"/);
    expectRejected(`{"x": ${JSON.stringify(f32(2, 0))}, "\\u0078": ${JSON.stringify(f32(2, 0))}}`, data8, undefined, /duplicate key "x"/);
    expectRejected(`{"x": {"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, data8, undefined, /duplicate key "dtype"/);
  });

  it('rejects bad __metadata__', () => {
    expectRejected({ __metadata__: { a: 1 }, x: f32(2, 0) }, data8, undefined, /"__metadata__" value for "a" must be a string, found number 1/);
    expectRejected({ __metadata__: ['a'], x: f32(2, 0) }, data8, undefined, /"__metadata__" must be an object of strings, found an array/);
    expectRejected({ __metadata__: null, x: f32(2, 0) }, data8, undefined, /found null/);
  });

  it('rejects entries with missing, extra or malformed fields', () => {
    expectRejected({ x: { dtype: 'F32', shape: [2] } }, data8, 'x', /missing field "data_offsets"/);
    expectRejected({ x: { ...f32(2, 0), extra: 1 } }, data8, 'x', /unexpected field "extra"/);
    expectRejected({ x: [1, 2] }, data8, 'x', /entry must be an object/);
    expectRejected({ x: { ...f32(2, 0), dtype: 'F4' } }, data8, 'x', /unknown dtype "F4"; known: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2/);
    expectRejected({ x: { ...f32(2, 0), dtype: 4 } }, data8, 'x', /unknown dtype number 4/);
    expectRejected({ x: { ...f32(2, 0), shape: 2 } }, data8, 'x', /shape must be an array of integers, found number 2/);
    expectRejected({ x: { ...f32(2, 0), shape: [-2] } }, data8, 'x', /shape\[0\] must be a non-negative integer, found -2/);
    expectRejected({ x: { ...f32(2, 0), shape: [1.5] } }, data8, 'x', /shape\[0\] must be a non-negative integer, found 1.5/);
    expectRejected({ x: { ...f32(2, 0), shape: ['2'] } }, data8, 'x', /shape\[0\] must be a non-negative integer, found the string "2"/);
    expectRejected('{"x":{"dtype":"F32","shape":[1e300],"data_offsets":[0,8]}}', data8, 'x', /shape\[0\] must be a non-negative integer, found 1e\+300/);
  });

  it('rejects bad data_offsets', () => {
    const x = (offsets: unknown) => ({ x: { dtype: 'F32', shape: [2], data_offsets: offsets } });
    expectRejected(x([0]), data8, 'x', /data_offsets must be \[begin, end\], found 1 values/);
    expectRejected(x('0,8'), data8, 'x', /data_offsets must be \[begin, end\], found the string/);
    expectRejected(x([-8, 0]), data8, 'x', /data_offsets begin must be a non-negative integer below 2\^53, found -8/);
    expectRejected(x([0, 8.5]), data8, 'x', /data_offsets end must be a non-negative integer below 2\^53, found 8.5/);
    expectRejected(x([0, null]), data8, 'x', /data_offsets end must be a non-negative integer below 2\^53, found null/);
    expectRejected('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}}', data8, 'x', /below 2\^53, found 18446744073709552000/);
    expectRejected('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,1e300]}}', data8, 'x', /found 1e\+300/);
    expectRejected(x([8, 0]), data8, 'x', /data_offsets \[8, 0\] end before they begin/);
  });

  it('rejects a byte length that does not match dtype × shape', () => {
    const header = { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } };
    expectRejected(header, new Uint8Array(20), 'w', /^shape \[2, 3\] of F32 needs 24 bytes, data_offsets give 20$/);
    // A product far beyond 2^53 must be compared exactly, not rounded.
    const huge = { w: { dtype: 'BF16', shape: [2 ** 40, 2 ** 40, 0, 1], data_offsets: [0, 0] } };
    const r = SafetensorsReader.open(writeRaw(rawSafetensors(huge)));
    expect(r.readBytes('w').byteLength).toBe(0);
    r.close();
    expectRejected({ w: { dtype: 'U8', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] } }, data8, 'w', /needs 1237940039285380274899124224 bytes/);
  });

  it('rejects offsets past the data section', () => {
    expectRejected({ x: f32(4, 0) }, data8, 'x', /data_offsets \[0, 16\] run past the end of the data section \(8 bytes\)/);
  });

  it('rejects overlaps, holes and unused trailing bytes', () => {
    const d16 = new Uint8Array(16);
    expectRejected({ a: f32(2, 0), b: f32(2, 4), c: f32(1, 12) }, d16, 'b', /data_offsets \[4, 12\] overlap tensor "a" at \[0, 8\]/);
    expectRejected({ a: f32(2, 0), b: f32(2, 0) }, data8, 'b', /overlap tensor "a"/);
    expectRejected({ a: f32(1, 0), b: f32(2, 8) }, d16, 'b', /data_offsets begin at 8 but tensor "a" ends at 4: 4 unused bytes/);
    expectRejected({ a: f32(2, 8) }, d16, 'a', /begin at 8 but the data section starts at 0/);
    expectRejected({ a: f32(2, 0) }, d16, undefined, /8 unused bytes after the last tensor \(data section is 16 bytes, tensors end at 8\)/);
    expectRejected({}, Uint8Array.from([1]), undefined, /1 unused bytes after the last tensor/);
  });

  it('names the file when it cannot be opened', () => {
    const missing = path.join(dir, 'nope.safetensors');
    expect(openError(missing).message).toMatch(new RegExp(`^${missing}: cannot open: ENOENT`));
    expect(openError(dir).reason).toBe('not a regular file');
  });

  it('reports unknown tensors and reads after close', () => {
    const file = writeRaw(rawSafetensors({ a: f32(2, 0) }, data8));
    const r = SafetensorsReader.open(file);
    expect(() => r.readBytes('b')).toThrow(new SafetensorsError(file, 'b', 'no such tensor in this file'));
    r.close();
    r.close();
    expect(() => r.readBytes('a')).toThrow(/read after close/);
  });
});

describe('stories260K', () => {
  it('lists the tensors and reads the embedding', () => {
    const r = SafetensorsReader.open(stories);
    try {
      expect(r.names()).toContain('model.embed_tokens.weight');
      expect(r.names()).toContain('model.layers.4.mlp.down_proj.weight');
      const total = [...r.tensors.values()].reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
      expect(total).toBe(260032);
      for (const t of r.tensors.values()) expect(t.dtype).toBe('F32');
      const info = r.info('model.embed_tokens.weight');
      expect(info.shape).toEqual([512, 64]);
      expect(info.byteLength).toBe(512 * 64 * 4);
      const emb = r.readFloat32('model.embed_tokens.weight');
      expect(emb.length).toBe(512 * 64);
      expect(emb.every(Number.isFinite)).toBe(true);
      const absSum = emb.reduce((s, v) => s + Math.abs(v), 0);
      expect(absSum).toBeGreaterThan(100);
    } finally {
      r.close();
    }
  });
});

describe('large-file addressing', () => {
  it('reads in chunks of the injected size', () => {
    const rand = mulberry32(3);
    const payload = randomBytes(rand, 1000);
    const file = writeRaw(rawSafetensors({ head: { dtype: 'U8', shape: [3], data_offsets: [0, 3] }, p: { dtype: 'U8', shape: [1000], data_offsets: [3, 1003] } }, concatBytes(Uint8Array.from([9, 8, 7]), payload)));
    const spy = vi.spyOn(fs, 'readSync');
    try {
      for (const chunk of [1, 7, 999, 1000, 4096]) {
        const r = SafetensorsReader.open(file, { readChunkBytes: chunk });
        spy.mockClear();
        expect(r.readBytes('p')).toEqual(payload);
        expect(spy).toHaveBeenCalledTimes(Math.ceil(1000 / chunk));
        expect([...r.readBytes('head')]).toEqual([9, 8, 7]);
        r.close();
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('reads a tensor that starts beyond 4 GiB in a sparse file', () => {
    const bigBytes = 2 ** 32 + 24; // a U8 tensor just over 4 GiB, never read
    const header = {
      __metadata__: { purpose: 'addressing' },
      big: { dtype: 'U8', shape: [bigBytes], data_offsets: [0, bigBytes] },
      tail: { dtype: 'F32', shape: [4], data_offsets: [bigBytes, bigBytes + 16] },
    };
    const prefix = rawSafetensors(header);
    const file = path.join(dir, 'sparse.safetensors');
    const fd = fs.openSync(file, 'w');
    try {
      fs.writeSync(fd, prefix, 0, prefix.length, 0);
      fs.ftruncateSync(fd, prefix.length + bigBytes + 16);
      const tail = bytesOf(Float32Array.from([1.25, -3, 1e-7, 65504]));
      fs.writeSync(fd, tail, 0, tail.length, prefix.length + bigBytes);
    } finally {
      fs.closeSync(fd);
    }
    try {
      const r = SafetensorsReader.open(file);
      expect(r.fileSize).toBeGreaterThan(2 ** 32);
      expect(r.info('big').byteLength).toBe(bigBytes);
      expect(r.info('tail').begin).toBe(bigBytes);
      expect([...r.readFloat32('tail')]).toEqual([1.25, -3, Math.fround(1e-7), 65504]);
      r.close();
    } finally {
      fs.rmSync(file);
    }
  });
});
