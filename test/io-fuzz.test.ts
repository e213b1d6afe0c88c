// Fuzzes the safetensors reader: every mutated file must either open (and then every tensor reads
// back with its declared length) or be rejected with SafetensorsError. Anything else is a bug.

import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsError } from '../src/errors.js';
import { DTYPES, DTYPE_SIZE, type DType } from '../src/io/dtypes.js';
import { SafetensorsReader, writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { makeTempDir, mulberry32, randomBytes, rawSafetensors } from './helpers/safetensors-fixtures.js';

const CASES = 3600;

let dir: string;
beforeAll(() => {
  dir = makeTempDir('llmopt-fuzz-');
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Seed {
  header: Record<string, unknown>;
  data: Uint8Array;
  bytes: Uint8Array;
}

function tensor(rand: () => number, name: string, dtype: DType, shape: number[]): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype, shape, data: randomBytes(rand, n * DTYPE_SIZE[dtype]) };
}

function makeSeeds(rand: () => number): Seed[] {
  const sets: Array<{ tensors: TensorToWrite[]; metadata?: Record<string, string> }> = [
    { tensors: [tensor(rand, 'w', 'F32', [2, 3])], metadata: { format: 'pt' } },
    {
      tensors: [
        tensor(rand, 'model.embed', 'F64', [3]),
        tensor(rand, 'layers.0.q', 'BF16', [4, 2]),
        tensor(rand, 'layers.0.k', 'I8', [5]),
        tensor(rand, 'mask', 'BOOL', [3, 1]),
        tensor(rand, 'qw', 'F8_E4M3', [2, 2]),
        tensor(rand, 'qs', 'F8_E5M2', [1]),
        tensor(rand, 'u', 'U8', [7]),
      ],
      metadata: { format: 'pt', quant: 'fp8', empty: '' },
    },
    {
      tensors: [
        tensor(rand, 'e0', 'F32', [0]),
        tensor(rand, 'a', 'I64', [2]),
        tensor(rand, 'e1', 'F16', [3, 0, 2]),
        tensor(rand, 's', 'I32', []),
        tensor(rand, 'h', 'F16', [3]),
        tensor(rand, 'i16', 'I16', [1, 1, 1]),
      ],
    },
    { tensors: DTYPES.map((d, i) => tensor(rand, `t${i}`, d, [i % 3 + 1, 2])), metadata: { a: 'b' } },
  ];
  return sets.map(({ tensors, metadata }, i) => {
    const file = path.join(dir, `seed-${i}.safetensors`);
    writeSafetensors(file, tensors, metadata);
    const bytes = new Uint8Array(fs.readFileSync(file));
    const headerLength = Number(Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigUInt64LE(0));
    const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + headerLength)).toString('utf8')) as Record<string, unknown>;
    return { header, data: bytes.subarray(8 + headerLength), bytes };
  });
}

const WEIRD_NUMBERS: unknown[] = [-1, -0, 0.5, 1e300, -1e300, 2 ** 53, 2 ** 64, 2 ** 63 - 1, Number.MAX_SAFE_INTEGER, 3, 1, 0, '8', null, true, [], {}];
const WEIRD_DTYPES: unknown[] = ['F4', 'U16', 'F8_E8M0', 'f32', '', 7, null, ...DTYPES];

type Mutation = (rand: () => number, seed: Seed) => { bytes: Uint8Array; what: string };

const pick = <T>(rand: () => number, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

function tensorNames(header: Record<string, unknown>): string[] {
  return Object.keys(header).filter((k) => k !== '__metadata__');
}

function withHeader(header: Record<string, unknown> | string, data: Uint8Array, padTo = 8): Uint8Array {
  return rawSafetensors(header, data, { padTo });
}

const mutations: Array<[string, Mutation]> = [
  [
    'truncate',
    (rand, seed) => {
      const at = Math.floor(rand() * seed.bytes.length);
      return { bytes: seed.bytes.subarray(0, at), what: `truncate at ${at}` };
    },
  ],
  [
    'flip bytes',
    (rand, seed) => {
      const bytes = seed.bytes.slice();
      const flips = 1 + Math.floor(rand() * 6);
      const at: number[] = [];
      for (let i = 0; i < flips; i++) {
        // Mostly in the header, where flips matter.
        const headerEnd = seed.bytes.length - seed.data.length;
        const pos = rand() < 0.75 ? Math.floor(rand() * headerEnd) : Math.floor(rand() * bytes.length);
        bytes[pos] = bytes[pos]! ^ (1 << Math.floor(rand() * 8));
        at.push(pos);
      }
      return { bytes, what: `flip bits at ${at.join(',')}` };
    },
  ],
  [
    'set byte',
    (rand, seed) => {
      const bytes = seed.bytes.slice();
      const pos = Math.floor(rand() * (seed.bytes.length - seed.data.length));
      bytes[pos] = pick(rand, [0x00, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0xff, 0xc3, 0x20, 0x0a, 0x30, 0x2d]);
      return { bytes, what: `set byte ${pos} to ${bytes[pos]}` };
    },
  ],
  [
    'dtype',
    (rand, seed) => {
      const header = structuredClone(seed.header);
      const name = pick(rand, tensorNames(header));
      const value = pick(rand, WEIRD_DTYPES);
      (header[name] as Record<string, unknown>).dtype = value;
      return { bytes: withHeader(header, seed.data), what: `${name}.dtype = ${JSON.stringify(value)}` };
    },
  ],
  [
    'shape',
    (rand, seed) => {
      const header = structuredClone(seed.header);
      const name = pick(rand, tensorNames(header));
      const entry = header[name] as { shape: unknown[] };
      const r = rand();
      let what: string;
      if (r < 0.4 && entry.shape.length > 0) {
        const i = Math.floor(rand() * entry.shape.length);
        entry.shape[i] = rand() < 0.5 ? (entry.shape[i] as number) + pick(rand, [-1, 1, 2]) : pick(rand, WEIRD_NUMBERS);
        what = `${name}.shape[${i}] = ${JSON.stringify(entry.shape[i])}`;
      } else if (r < 0.6) {
        entry.shape.push(pick(rand, [1, 0, 2, 2 ** 40]));
        what = `${name}.shape push`;
      } else if (r < 0.7) {
        entry.shape.pop();
        what = `${name}.shape pop`;
      } else {
        (entry as Record<string, unknown>).shape = pick(rand, [null, 3, '3', {}, [[1]], [1, [2]]]);
        what = `${name}.shape = ${JSON.stringify((entry as Record<string, unknown>).shape)}`;
      }
      return { bytes: withHeader(header, seed.data), what };
    },
  ],
  [
    'offsets',
    (rand, seed) => {
      const header = structuredClone(seed.header);
      const names = tensorNames(header);
      const name = pick(rand, names);
      const entry = header[name] as { data_offsets: unknown[] };
      const [b, e] = entry.data_offsets as number[];
      const k = pick(rand, [1, 2, 4, 8, 16]);
      const options: Array<() => unknown> = [
        () => [e, b],
        () => [b! + k, e! + k],
        () => [b! - k, e! - k],
        () => [-b!, -e!],
        () => [b, pick(rand, WEIRD_NUMBERS)],
        () => [pick(rand, WEIRD_NUMBERS), e],
        () => [b],
        () => [b, e, e],
        () => 'x',
        () => {
          // Exchange offsets with another tensor.
          const other = header[pick(rand, names)] as { data_offsets: unknown[] };
          const mine = entry.data_offsets;
          entry.data_offsets = other.data_offsets;
          other.data_offsets = mine;
          return entry.data_offsets;
        },
      ];
      entry.data_offsets = pick(rand, options)() as unknown[];
      return { bytes: withHeader(header, seed.data), what: `${name}.data_offsets = ${JSON.stringify(entry.data_offsets)}` };
    },
  ],
  [
    'fields',
    (rand, seed) => {
      const header = structuredClone(seed.header);
      const name = pick(rand, Object.keys(header));
      const entry = header[name] as Record<string, unknown>;
      const r = rand();
      let what: string;
      if (r < 0.3) {
        const field = pick(rand, Object.keys(entry).length > 0 ? Object.keys(entry) : ['x']);
        delete entry[field];
        what = `delete ${name}.${field}`;
      } else if (r < 0.5) {
        entry[pick(rand, ['extra', 'dtype ', '__proto__', 'offsets'])] = 1;
        what = `add field to ${name}`;
      } else if (r < 0.7) {
        header[name] = pick(rand, [null, 1, 'x', [], [1, 2, 3], true]);
        what = `${name} = ${JSON.stringify(header[name])}`;
      } else if (r < 0.85) {
        delete header[name];
        what = `delete ${name}`;
      } else {
        header[pick(rand, ['__metadata__', 'new', ''])] = pick(rand, [{ a: 1 }, { a: null }, ['x'], 'x', {}, { k: 'v' }]);
        what = 'metadata/extra entry';
      }
      return { bytes: withHeader(header, seed.data), what };
    },
  ],
  [
    'duplicate key',
    (rand, seed) => {
      const text = JSON.stringify(seed.header);
      const names = Object.keys(seed.header);
      const name = pick(rand, names);
      const dup = `${JSON.stringify(name)}:${JSON.stringify(seed.header[name])}`;
      const edited = rand() < 0.5 ? `{${dup},${text.slice(1)}` : `${text.slice(0, -1)},${dup}}`;
      return { bytes: withHeader(edited, seed.data), what: `duplicate ${name}` };
    },
  ],
  [
    'text edit',
    (rand, seed) => {
      let text = JSON.stringify(seed.header);
      const r = rand();
      if (r < 0.25) {
        const pos = Math.floor(rand() * text.length);
        text = text.slice(0, pos) + pick(rand, ['"', ',', '}', ']', '{', '[', ':', '\\', 'e', '-', '1e999', '\u0000', '\ud800', 'é']) + text.slice(pos);
      } else if (r < 0.45) {
        const pos = Math.floor(rand() * text.length);
        text = text.slice(0, pos) + text.slice(pos + 1 + Math.floor(rand() * 4));
      } else if (r < 0.6) {
        // Big literal numbers that JSON.stringify would not write.
        text = text.replace(/\d+/, pick(rand, ['18446744073709551616', '1e300', '9007199254740993', '-0', '0.0', '1E1', '00']));
      } else if (r < 0.75) {
        const depth = pick(rand, [10, 65, 1000, 100000]);
        text = `{"deep":${'['.repeat(depth)}${']'.repeat(depth)},${text.slice(1)}`;
      } else if (r < 0.9) {
        text = pick(rand, ['', ' ', '{', '}', 'null', '[]', '{}', '"x"', '{"a":1}', 'garbage', '\u00ff\u00fe', '{"a":{"b":{"c":[]}}}']);
      } else {
        text = Buffer.from(randomBytes(rand, 1 + Math.floor(rand() * 40))).toString('latin1');
      }
      return { bytes: withHeader(text, seed.data, rand() < 0.5 ? 8 : 1), what: `text ${JSON.stringify(text.slice(0, 60))}` };
    },
  ],
  [
    'header length',
    (rand, seed) => {
      const bytes = Buffer.from(seed.bytes);
      const real = bytes.readBigUInt64LE(0);
      const r = rand();
      const value =
        r < 0.4
          ? real + BigInt(pick(rand, [-8, -4, -1, 1, 2, 8, 64]))
          : r < 0.6
            ? BigInt(Math.floor(rand() * bytes.length))
            : r < 0.8
              ? pick(rand, [0n, 1n, 2n ** 63n, 2n ** 64n - 1n, 2n ** 32n, 100n * 1024n * 1024n + 1n])
              : BigInt.asUintN(64, BigInt(Math.floor(rand() * 2 ** 32)) * 2n ** 32n + BigInt(Math.floor(rand() * 2 ** 32)));
      const clamped = value < 0n ? 0n : BigInt.asUintN(64, value);
      bytes.writeBigUInt64LE(clamped, 0);
      return { bytes, what: `header length ${clamped}` };
    },
  ],
  [
    'data length',
    (rand, seed) => {
      const extra = pick(rand, [1, 3, 8]);
      const bytes = rand() < 0.5 ? Buffer.concat([seed.bytes, new Uint8Array(extra)]) : seed.bytes.subarray(0, seed.bytes.length - extra);
      return { bytes, what: `data ${bytes.length - seed.bytes.length} bytes` };
    },
  ],
];

describe('safetensors reader fuzz', () => {
  it(`${CASES} mutated files either open and read fully or throw SafetensorsError`, () => {
    const rand = mulberry32(20240611);
    const seeds = makeSeeds(rand);
    const file = path.join(dir, 'case.safetensors');
    const outcome: Record<string, { ok: number; rejected: number }> = {};
    const reasons = new Set<string>();
    for (let c = 0; c < CASES; c++) {
      const [kind, mutate] = mutations[c % mutations.length]!;
      const seed = pick(rand, seeds);
      const { bytes, what } = mutate(rand, seed);
      fs.writeFileSync(file, bytes);
      const o = (outcome[kind] ??= { ok: 0, rejected: 0 });
      let reader: SafetensorsReader | undefined;
      try {
        reader = SafetensorsReader.open(file);
        for (const info of reader.tensors.values()) {
          // Plain checks: expect() per read would dominate the run time.
          const bytes = reader.readBytes(info.name).byteLength;
          const elements = reader.readFloat32(info.name).length;
          if (bytes !== info.byteLength || elements * DTYPE_SIZE[info.dtype] !== info.byteLength) {
            throw new Error(`case ${c} (${kind}: ${what}): ${info.name} read ${bytes} bytes / ${elements} elements, declared ${info.byteLength} bytes`);
          }
        }
        o.ok++;
      } catch (e) {
        if (!(e instanceof SafetensorsError)) {
          throw new Error(`case ${c} (${kind}: ${what}) threw ${String(e)}\n${(e as Error).stack ?? ''}`);
        }
        if (!e.message.startsWith(file)) throw new Error(`case ${c} (${kind}: ${what}): message does not name the file: ${e.message}`);
        reasons.add(e.reason.replace(/[\d"[\]].*$/, ''));
        o.rejected++;
      } finally {
        reader?.close();
      }
    }
    // Every mutation kind ran, and most produce rejections (flips in the data section parse fine).
    for (const [kind] of mutations) {
      expect(outcome[kind]!.ok + outcome[kind]!.rejected, kind).toBeGreaterThan(CASES / mutations.length - 2);
    }
    const rejected = Object.values(outcome).reduce((s, o) => s + o.rejected, 0);
    const ok = Object.values(outcome).reduce((s, o) => s + o.ok, 0);
    expect(rejected).toBeGreaterThan(CASES * 0.6);
    expect(ok).toBeGreaterThan(20);
    expect(reasons.size).toBeGreaterThan(15);
  });
});
