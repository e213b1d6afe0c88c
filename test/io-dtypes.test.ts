import { describe, expect, it } from 'vitest';
import {
  DTYPES,
  DTYPE_SIZE,
  FP8_E4M3_MAX,
  bf16BitsToF32,
  clampFp8E4M3,
  decodeToFloat32,
  encodeFromFloat32,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  f32ToFp8E4M3,
  f32ToFp8E5M2,
  fp8E4M3ToF32,
  fp8E5M2ToF32,
  isDType,
  roundHalfEven,
  type DType,
} from '../src/io/dtypes.js';
import { seededRandom as mulberry32 } from '../src/random.js';

// Expected values straight from the format definitions: (-1)^s · 2^(e - bias) · (1 + m / 2^M) for
// normals, (-1)^s · 2^(1 - bias) · (m / 2^M) for subnormals.
function expectedFloat(code: number, expBits: number, mantBits: number, bias: number): { value: number; nan: boolean } {
  const sign = (code >> (expBits + mantBits)) & 1 ? -1 : 1;
  const e = (code >> mantBits) & ((1 << expBits) - 1);
  const m = code & ((1 << mantBits) - 1);
  const frac = m / Math.pow(2, mantBits);
  if (e === 0) return { value: sign * Math.pow(2, 1 - bias) * frac, nan: false };
  return { value: sign * Math.pow(2, e - bias) * (1 + frac), nan: false };
}

function expectedE4M3(code: number): { value: number; nan: boolean } {
  // OCP E4M3: no infinities; only S.1111.111 is NaN, so exponent 15 still holds normal numbers.
  if ((code & 0x7f) === 0x7f) return { value: NaN, nan: true };
  return expectedFloat(code, 4, 3, 7);
}

function expectedE5M2(code: number): { value: number; nan: boolean } {
  const e = (code >> 2) & 0x1f;
  if (e === 31) return (code & 3) === 0 ? { value: code & 0x80 ? -Infinity : Infinity, nan: false } : { value: NaN, nan: true };
  return expectedFloat(code, 5, 2, 15);
}

function expectedF16(code: number): { value: number; nan: boolean } {
  const e = (code >> 10) & 0x1f;
  if (e === 31) return (code & 0x3ff) === 0 ? { value: code & 0x8000 ? -Infinity : Infinity, nan: false } : { value: NaN, nan: true };
  return expectedFloat(code, 5, 10, 15);
}

function expectedBf16(code: number): { value: number; nan: boolean } {
  const e = (code >> 7) & 0xff;
  if (e === 255) return (code & 0x7f) === 0 ? { value: code & 0x8000 ? -Infinity : Infinity, nan: false } : { value: NaN, nan: true };
  return expectedFloat(code, 8, 7, 127);
}

function sameFloat(actual: number, expected: number): boolean {
  return Object.is(actual, expected) || (Number.isNaN(actual) && Number.isNaN(expected));
}

function f32FromBits(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0]!;
}

describe('dtype table', () => {
  it('lists every safetensors dtype with its size', () => {
    expect(DTYPES).toHaveLength(12);
    const sizes = Object.fromEntries(DTYPES.map((d) => [d, DTYPE_SIZE[d]]));
    expect(sizes).toEqual({ F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 });
    expect(isDType('BF16')).toBe(true);
    expect(isDType('bf16')).toBe(false);
    expect(isDType('F8_E8M0')).toBe(false);
    expect(isDType(4)).toBe(false);
  });
});

describe('FP8 E4M3 (all 256 codes)', () => {
  it('decodes every code to the value its bits define, and re-encodes it to the same code', () => {
    let nans = 0;
    for (let code = 0; code < 256; code++) {
      const exp = expectedE4M3(code);
      const got = fp8E4M3ToF32(code);
      expect(sameFloat(got, exp.value), `code 0x${code.toString(16)}: got ${got}, want ${exp.value}`).toBe(true);
      if (exp.nan) {
        nans++;
        expect(f32ToFp8E4M3(got) & 0x7f).toBe(0x7f);
      } else {
        expect(f32ToFp8E4M3(got), `round trip of code 0x${code.toString(16)}`).toBe(code);
      }
    }
    expect(nans).toBe(2); // 0x7F and 0xFF
    expect(fp8E4M3ToF32(0x7e)).toBe(448);
    expect(fp8E4M3ToF32(0x01)).toBe(2 ** -9);
    expect(fp8E4M3ToF32(0x08)).toBe(2 ** -6);
    expect(Object.is(fp8E4M3ToF32(0x80), -0)).toBe(true);
  });

  it('bulk decode and encode agree with the scalar functions on all codes', () => {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const values = decodeToFloat32('F8_E4M3', codes);
    for (let i = 0; i < 256; i++) expect(sameFloat(values[i]!, expectedE4M3(i).value)).toBe(true);
    const back = encodeFromFloat32('F8_E4M3', values);
    for (let i = 0; i < 256; i++) {
      if (expectedE4M3(i).nan) expect(back[i]! & 0x7f).toBe(0x7f);
      else expect(back[i]).toBe(i);
    }
  });

  it('rounds to nearest even and does what torch does out of range', () => {
    expect(f32ToFp8E4M3(1.0625)).toBe(0x38); // tie between 1 (even) and 1.125
    expect(f32ToFp8E4M3(1.1875)).toBe(0x3a); // tie between 1.125 and 1.25 (even)
    expect(f32ToFp8E4M3(1.07)).toBe(0x39);
    expect(f32ToFp8E4M3(2 ** -9)).toBe(0x01); // min subnormal
    expect(f32ToFp8E4M3(2 ** -10)).toBe(0x00); // half the min subnormal: tie to even 0
    expect(f32ToFp8E4M3(2 ** -10 * 1.01)).toBe(0x01);
    expect(f32ToFp8E4M3(3 * 2 ** -10)).toBe(0x02); // tie between 1 and 2 (even)
    expect(f32ToFp8E4M3(7.5 * 2 ** -9)).toBe(0x08); // tie between max subnormal 0x07 and min normal 0x08
    expect(f32ToFp8E4M3(-(2 ** -6))).toBe(0x88);
    expect(f32ToFp8E4M3(448)).toBe(0x7e);
    expect(f32ToFp8E4M3(464)).toBe(0x7e); // tie between 448 and the NaN code: even → 448
    expect(f32ToFp8E4M3(465)).toBe(0x7f); // past the tie: torch gives NaN, not saturation
    expect(f32ToFp8E4M3(480)).toBe(0x7f);
    expect(f32ToFp8E4M3(-1000)).toBe(0xff);
    expect(f32ToFp8E4M3(Infinity)).toBe(0x7f);
    expect(f32ToFp8E4M3(-Infinity)).toBe(0xff);
    expect(f32ToFp8E4M3(NaN) & 0x7f).toBe(0x7f);
    expect(f32ToFp8E4M3(0)).toBe(0x00);
    expect(f32ToFp8E4M3(-0)).toBe(0x80);
  });

  it('saturates when clamped first, as quantizers do', () => {
    expect(FP8_E4M3_MAX).toBe(448);
    expect(clampFp8E4M3(1000)).toBe(448);
    expect(clampFp8E4M3(-1e30)).toBe(-448);
    expect(clampFp8E4M3(3.5)).toBe(3.5);
    expect(Number.isNaN(clampFp8E4M3(NaN))).toBe(true);
    expect(f32ToFp8E4M3(clampFp8E4M3(1000))).toBe(0x7e);
    expect(f32ToFp8E4M3(clampFp8E4M3(-Infinity))).toBe(0xfe);
  });
});

describe('FP8 E5M2 (all 256 codes)', () => {
  it('decodes every code to the value its bits define, and re-encodes it to the same code', () => {
    let nans = 0;
    for (let code = 0; code < 256; code++) {
      const exp = expectedE5M2(code);
      const got = fp8E5M2ToF32(code);
      expect(sameFloat(got, exp.value), `code 0x${code.toString(16)}: got ${got}, want ${exp.value}`).toBe(true);
      if (exp.nan) {
        nans++;
        expect(Number.isNaN(fp8E5M2ToF32(f32ToFp8E5M2(got)))).toBe(true);
      } else {
        expect(f32ToFp8E5M2(got), `round trip of code 0x${code.toString(16)}`).toBe(code);
      }
    }
    expect(nans).toBe(6); // S.11111.{01,10,11}
    expect(fp8E5M2ToF32(0x7b)).toBe(57344);
    expect(fp8E5M2ToF32(0x7c)).toBe(Infinity);
    expect(fp8E5M2ToF32(0xfc)).toBe(-Infinity);
    expect(fp8E5M2ToF32(0x01)).toBe(2 ** -16);
  });

  it('bulk decode and encode agree on all codes', () => {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const values = decodeToFloat32('F8_E5M2', codes);
    const back = encodeFromFloat32('F8_E5M2', values);
    for (let i = 0; i < 256; i++) {
      expect(sameFloat(values[i]!, expectedE5M2(i).value)).toBe(true);
      if (expectedE5M2(i).nan) expect(Number.isNaN(fp8E5M2ToF32(back[i]!))).toBe(true);
      else expect(back[i]).toBe(i);
    }
  });

  it('rounds to nearest even; overflow goes to infinity', () => {
    expect(f32ToFp8E5M2(1.125)).toBe(0x3c); // tie between 1 (even) and 1.25
    expect(f32ToFp8E5M2(1.375)).toBe(0x3e); // tie between 1.25 and 1.5 (even)
    expect(f32ToFp8E5M2(2 ** -16)).toBe(0x01);
    expect(f32ToFp8E5M2(2 ** -17)).toBe(0x00);
    expect(f32ToFp8E5M2(3 * 2 ** -17)).toBe(0x02);
    expect(f32ToFp8E5M2(57344)).toBe(0x7b);
    expect(f32ToFp8E5M2(61439)).toBe(0x7b);
    expect(f32ToFp8E5M2(61440)).toBe(0x7c); // tie between 57344 (odd mantissa) and 65536: → inf
    expect(f32ToFp8E5M2(-1e6)).toBe(0xfc);
    expect(f32ToFp8E5M2(Infinity)).toBe(0x7c);
    expect(f32ToFp8E5M2(NaN) & 0x7f).toBe(0x7f);
  });
});

describe('F16', () => {
  it('decodes all 65536 codes as the format defines and round-trips every non-NaN code', () => {
    const codes = new Uint16Array(65536).map((_, i) => i);
    const bulk = decodeToFloat32('F16', new Uint8Array(codes.buffer));
    const encoded = new Uint16Array(encodeFromFloat32('F16', bulk).buffer);
    for (let code = 0; code < 65536; code++) {
      const exp = expectedF16(code);
      const scalar = f16BitsToF32(code);
      if (!sameFloat(scalar, exp.value) || !sameFloat(bulk[code]!, exp.value)) {
        expect.fail(`F16 code 0x${code.toString(16)}: got ${scalar}/${bulk[code]}, want ${exp.value}`);
      }
      if (exp.nan) {
        if ((encoded[code]! & 0x7c00) !== 0x7c00 || (encoded[code]! & 0x3ff) === 0) expect.fail(`NaN code 0x${code.toString(16)}`);
      } else if (f32ToF16Bits(scalar) !== code || encoded[code] !== code) {
        expect.fail(`F16 round trip of 0x${code.toString(16)}: ${f32ToF16Bits(scalar)} / ${encoded[code]}`);
      }
    }
  });

  it('handles the edge values', () => {
    expect(f32ToF16Bits(0)).toBe(0x0000);
    expect(f32ToF16Bits(-0)).toBe(0x8000);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001); // min subnormal
    expect(f32ToF16Bits(1023 * 2 ** -24)).toBe(0x03ff); // max subnormal
    expect(f32ToF16Bits(2 ** -14)).toBe(0x0400); // min normal
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000); // tie → even 0
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 → 2
    expect(f32ToF16Bits(2 ** -26)).toBe(0x0000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff); // max finite
    expect(f32ToF16Bits(65519)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // tie past max: odd mantissa → rounds to inf
    expect(f32ToF16Bits(1e10)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e10)).toBe(0xfc00);
    expect(f32ToF16Bits(Infinity)).toBe(0x7c00);
    expect(f32ToF16Bits(-Infinity)).toBe(0xfc00);
    expect(f32ToF16Bits(NaN)).toBe(0x7e00);
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
  });
});

describe('BF16', () => {
  it('decodes all 65536 codes as the format defines and round-trips every non-NaN code', () => {
    const codes = new Uint16Array(65536).map((_, i) => i);
    const bulk = decodeToFloat32('BF16', new Uint8Array(codes.buffer));
    const encoded = new Uint16Array(encodeFromFloat32('BF16', bulk).buffer);
    for (let code = 0; code < 65536; code++) {
      const exp = expectedBf16(code);
      const scalar = bf16BitsToF32(code);
      if (!sameFloat(scalar, exp.value) || !sameFloat(bulk[code]!, exp.value)) {
        expect.fail(`BF16 code 0x${code.toString(16)}: got ${scalar}/${bulk[code]}, want ${exp.value}`);
      }
      if (exp.nan) {
        if (encoded[code] !== 0x7fc0) expect.fail(`BF16 NaN code 0x${code.toString(16)} encoded to ${encoded[code]}`);
      } else if (f32ToBf16Bits(scalar) !== code || encoded[code] !== code) {
        expect.fail(`BF16 round trip of 0x${code.toString(16)}`);
      }
    }
  });

  it('handles the edge values', () => {
    expect(f32ToBf16Bits(0)).toBe(0x0000);
    expect(f32ToBf16Bits(-0)).toBe(0x8000);
    expect(bf16BitsToF32(0x0001)).toBe(2 ** -133); // min subnormal
    expect(f32ToBf16Bits(2 ** -133)).toBe(0x0001);
    expect(bf16BitsToF32(0x007f)).toBe(127 * 2 ** -133); // max subnormal
    expect(bf16BitsToF32(0x7f7f)).toBe((1 + 127 / 128) * 2 ** 127); // max finite
    expect(f32ToBf16Bits(f32FromBits(0x7f7f7fff))).toBe(0x7f7f);
    expect(f32ToBf16Bits(f32FromBits(0x7f7f8000))).toBe(0x7f80); // tie past max → inf
    expect(f32ToBf16Bits(f32FromBits(0x7f7fffff))).toBe(0x7f80); // float32 max overflows to inf
    expect(f32ToBf16Bits(Infinity)).toBe(0x7f80);
    expect(f32ToBf16Bits(-Infinity)).toBe(0xff80);
    expect(f32ToBf16Bits(NaN)).toBe(0x7fc0);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even (down)
    expect(f32ToBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    expect(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(f32ToBf16Bits(-(1 + 3 * 2 ** -8))).toBe(0xbf82);
  });
});

describe('bulk float encoders match the scalar ones', () => {
  it('on random and special float32 values', () => {
    const rand = mulberry32(7);
    const n = 20000;
    const bits = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      // Mix arbitrary bit patterns with values near each format's interesting ranges.
      const r = rand();
      if (r < 0.4) bits[i] = Math.floor(rand() * 4294967296);
      else bits[i] = new Uint32Array(new Float32Array([(rand() - 0.5) * 2 ** Math.floor(rand() * 60 - 30)]).buffer)[0]!;
    }
    const specials = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x43e80000, 0x43f00000, 0x47700000, 0x477fefff, 0x477ff000];
    specials.forEach((b, i) => (bits[i] = b));
    const values = new Float32Array(bits.buffer);
    const cases: Array<[DType, (x: number) => number]> = [
      ['F16', f32ToF16Bits],
      ['BF16', f32ToBf16Bits],
      ['F8_E4M3', f32ToFp8E4M3],
      ['F8_E5M2', f32ToFp8E5M2],
    ];
    for (const [dtype, scalar] of cases) {
      const bytes = encodeFromFloat32(dtype, values);
      const codes = DTYPE_SIZE[dtype] === 2 ? new Uint16Array(bytes.buffer) : bytes;
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        const want = scalar(v);
        // A NaN's sign cannot survive a JS number; compare NaN-ness there.
        if (Number.isNaN(v)) continue;
        if (codes[i] !== want) expect.fail(`${dtype} bulk vs scalar at ${v}: ${codes[i]} vs ${want}`);
      }
    }
  });

  it('keeps the sign of a NaN in F16 and FP8 bulk encodes', () => {
    const values = new Float32Array(new Uint32Array([0xffc00000, 0x7fc00000]).buffer);
    expect([...new Uint16Array(encodeFromFloat32('F16', values).buffer)]).toEqual([0xfe00, 0x7e00]);
    expect([...encodeFromFloat32('F8_E4M3', values)]).toEqual([0xff, 0x7f]);
    expect([...encodeFromFloat32('F8_E5M2', values)]).toEqual([0xff, 0x7f]);
  });
});

describe('integers and BOOL', () => {
  it('round half to even and saturate', () => {
    const v = Float32Array.from([2.5, 3.5, -2.5, -3.5, 0.5, 127.5, -128.5, 1e10, -1e10, NaN, 126.4, -0.49]);
    expect([...new Int8Array(encodeFromFloat32('I8', v).buffer)]).toEqual([2, 4, -2, -4, 0, 127, -128, 127, -128, 0, 126, 0]);
    const u = Float32Array.from([-1, 254.5, 255.5, 253.5, 1000, 0.5, 1.5]);
    expect([...encodeFromFloat32('U8', u)]).toEqual([0, 254, 255, 254, 255, 0, 2]);
    const s = Float32Array.from([32767.5, -32768.5, 40000, -40000, 12345.5]);
    expect([...new Int16Array(encodeFromFloat32('I16', s).buffer)]).toEqual([32767, -32768, 32767, -32768, 12346]);
    const w = Float32Array.from([2 ** 31, -(2 ** 31), 1e20, -1e20, 16777216, -7.5]);
    expect([...new Int32Array(encodeFromFloat32('I32', w).buffer)]).toEqual([2147483647, -2147483648, 2147483647, -2147483648, 16777216, -8]);
  });

  it('I64 saturates at ±2^63 and round-trips exactly representable values', () => {
    const v = Float32Array.from([2 ** 63, -(2 ** 63), 1e30, -1e30, 123456789, -3.5, 2 ** 40 + 2 ** 20, -1, NaN]);
    const got = [...new BigInt64Array(encodeFromFloat32('I64', v).buffer)];
    expect(got).toEqual([
      2n ** 63n - 1n,
      -(2n ** 63n),
      2n ** 63n - 1n,
      -(2n ** 63n),
      123456792n, // nearest float32 of 123456789
      -4n,
      2n ** 40n + 2n ** 20n,
      -1n,
      0n,
    ]);
    const src = BigInt64Array.from([-1n, 2n ** 53n, -(2n ** 40n) + 5n, 7n, -(2n ** 62n)]);
    const back = decodeToFloat32('I64', new Uint8Array(src.buffer));
    expect([...back]).toEqual([-1, 2 ** 53, Math.fround(-(2 ** 40) + 5), 7, -(2 ** 62)]);
  });

  it('decodes signed and unsigned integers', () => {
    expect([...decodeToFloat32('I8', Uint8Array.from([0x80, 0xff, 0x7f, 1]))]).toEqual([-128, -1, 127, 1]);
    expect([...decodeToFloat32('U8', Uint8Array.from([0x80, 0xff, 0]))]).toEqual([128, 255, 0]);
    expect([...decodeToFloat32('I16', new Uint8Array(Int16Array.from([-32768, 32767, -2]).buffer))]).toEqual([-32768, 32767, -2]);
    expect([...decodeToFloat32('I32', new Uint8Array(Int32Array.from([-(2 ** 31), 2 ** 31 - 1, 3]).buffer))]).toEqual([
      -(2 ** 31),
      2 ** 31,
      3,
    ]);
  });

  it('BOOL is x != 0 (NaN is true) and decodes any non-zero byte as 1', () => {
    expect([...encodeFromFloat32('BOOL', Float32Array.from([0, -0, 1, -2, NaN, 0.5]))]).toEqual([0, 0, 1, 1, 1, 1]);
    expect([...decodeToFloat32('BOOL', Uint8Array.from([0, 1, 2, 255]))]).toEqual([0, 1, 1, 1]);
  });

  it('roundHalfEven', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001].map(roundHalfEven)).toEqual([0, 2, 2, -0, -2, 2, 3]);
  });
});

describe('bulk decode', () => {
  it('round-trips every dtype through float32 for values it can hold', () => {
    const values = Float32Array.from([0, 1, -2, 3, 96, -7, 1, 0]); // exact in every dtype, FP8 included
    for (const dtype of DTYPES) {
      const src = dtype === 'U8' ? values.map(Math.abs) : dtype === 'BOOL' ? values.map((x) => (x !== 0 ? 1 : 0)) : values;
      const bytes = encodeFromFloat32(dtype, src);
      expect(bytes.byteLength).toBe(src.length * DTYPE_SIZE[dtype]);
      expect([...decodeToFloat32(dtype, bytes)], dtype).toEqual([...src]);
    }
  });

  it('works on unaligned byte offsets and never shares memory with the input', () => {
    const values = Float32Array.from([1.5, -2.25, 3e-5, 65504, -0.125]);
    for (const dtype of ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16'] as const) {
      const bytes = encodeFromFloat32(dtype, values);
      const expected = decodeToFloat32(dtype, bytes);
      const shifted = new Uint8Array(bytes.byteLength + 3);
      shifted.set(bytes, 3);
      const view = shifted.subarray(3);
      expect(view.byteOffset % 2).toBe(1);
      const decoded = decodeToFloat32(dtype, view);
      expect([...decoded], dtype).toEqual([...expected]);
      decoded[0] = 42;
      expect(decodeToFloat32(dtype, view)[0]).toBe(expected[0]);
    }
  });

  it('rejects a byte length that is not whole elements', () => {
    expect(() => decodeToFloat32('F32', new Uint8Array(6))).toThrow(/6 bytes is not a whole number of F32 elements/);
  });
});
