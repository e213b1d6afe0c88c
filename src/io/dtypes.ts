// safetensors dtypes and exact conversions between them and float32.
//
// Every float conversion rounds to nearest, ties to even (RNE), bit-exactly as PyTorch's
// `tensor.to(dtype)` does on a float32 tensor. Scalar functions take a JS number and first round it
// to float32 (Math.fround), so they describe what happens to a float32 tensor.
// Bulk functions work on raw little-endian bytes and are the ones to use over whole checkpoints.

export type DType =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U8'
  | 'BOOL'
  | 'F8_E4M3'
  | 'F8_E5M2';

export const DTYPES: readonly DType[] = [
  'F64',
  'F32',
  'F16',
  'BF16',
  'I64',
  'I32',
  'I16',
  'I8',
  'U8',
  'BOOL',
  'F8_E4M3',
  'F8_E5M2',
];

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && (DTYPES as readonly string[]).includes(s);
}

/** Bytes per element. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

// Typed-array views of the bytes are read in host order; safetensors is little-endian.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('llmopt reads safetensors through typed arrays and needs a little-endian host');
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0]!;
}

function f32FromBits(bits: number): number {
  scratchU32[0] = bits;
  return scratchF32[0]!;
}

/** Rounds a non-negative number to an integer, ties to even. Exact for all doubles. */
function roundHalfEvenNonNeg(q: number): number {
  const f = Math.floor(q);
  const d = q - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** Rounds to an integer, ties to even (banker's rounding), for any sign. */
export function roundHalfEven(x: number): number {
  return x < 0 ? -roundHalfEvenNonNeg(-x) : roundHalfEvenNonNeg(x);
}

// --- BF16 ---------------------------------------------------------------------------------------

/** float32 bits → bf16 bits, RNE. Every NaN becomes 0x7FC0, as in torch. */
function bf16FromF32Bits(u: number): number {
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  // Adding 0x7FFF plus the lowest kept bit rounds half to even; a carry moves into the exponent,
  // which is exactly right (up to and including rounding the largest finite values to inf).
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bf16 bits for x (round to nearest even; NaN → 0x7FC0). */
export function f32ToBf16Bits(x: number): number {
  return bf16FromF32Bits(f32Bits(x));
}

export function bf16BitsToF32(bits: number): number {
  return f32FromBits((bits & 0xffff) << 16);
}

// --- F16 (IEEE binary16) -------------------------------------------------------------------------

/** float32 bits → f16 bits, RNE; subnormals; overflow → ±inf; NaN → sign | 0x7E00 (as torch). */
function f16FromF32Bits(u: number, value: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7e00;
  if (a >= 0x47800000) return sign | 0x7c00; // ≥ 65536 (and inf): beyond even the rounding range
  if (a < 0x38800000) {
    // Below 2^-14, the smallest normal: a multiple of 2^-24. A result of 0x400 is the smallest normal,
    // which the same bit pattern encodes correctly.
    return sign | roundHalfEvenNonNeg(Math.abs(value) * 16777216);
  }
  const mant = a & 0x7fffff;
  let h = (((a >>> 23) - 112) << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1; // carry may make 0x7C00 = inf
  return sign | h;
}

/** IEEE half bits for x (round to nearest even; subnormals; overflow → ±inf; NaN → 0x7E00). */
export function f32ToF16Bits(x: number): number {
  const u = f32Bits(x);
  return f16FromF32Bits(u, scratchF32[0]!);
}

function f16Value(h: number): number {
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  let v: number;
  if (e === 0) v = m * 2 ** -24;
  else if (e === 31) v = m === 0 ? Infinity : NaN;
  else v = (1024 + m) * 2 ** (e - 25);
  return h & 0x8000 ? -v : v;
}

export function f16BitsToF32(bits: number): number {
  return f16Value(bits & 0xffff);
}

// --- FP8 (OCP 8-bit floating point, E4M3 "fn" and E5M2) ------------------------------------------

/** Largest finite E4M3 value. E4M3 has no infinity: S.1111.111 is NaN. */
export const FP8_E4M3_MAX = 448;
/** Largest finite E5M2 value; E5M2 has ±inf (0x7C/0xFC). */
export const FP8_E5M2_MAX = 57344;

/**
 * Clamps to [-448, 448] (NaN stays NaN). Quantizers do `f32ToFp8E4M3(clampFp8E4M3(x / scale))`,
 * exactly as compressed-tensors does `torch.clamp(x / scale, finfo.min, finfo.max).to(float8_e4m3fn)`.
 */
export function clampFp8E4M3(x: number): number {
  return x > FP8_E4M3_MAX ? FP8_E4M3_MAX : x < -FP8_E4M3_MAX ? -FP8_E4M3_MAX : x;
}

/**
 * float32 bits → E4M3 (bias 7), RNE, bit-exact with torch's cast to float8_e4m3fn, which does NOT
 * saturate: |x| ≤ 464 rounds to at most 448 (464 is the tie between 448 and the NaN code, and goes
 * to even 448), while |x| > 464, ±inf and NaN all give NaN (0x7F, or 0xFF when the sign bit is set).
 * Clamp first (clampFp8E4M3) whenever out-of-range values must saturate.
 */
function e4m3FromF32Bits(u: number, value: number): number {
  const sign = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a >= 0x43f00000) return sign | 0x7f; // ≥ 480, inf, NaN
  if (a < 0x3c800000) {
    // Below 2^-6, the smallest normal: a multiple of 2^-9 (8 × 2^-9 is the smallest normal code 0x08).
    return sign | roundHalfEvenNonNeg(Math.abs(value) * 512);
  }
  const mant = a & 0x7fffff;
  let h = (((a >>> 23) - 120) << 3) | (mant >>> 20);
  const rest = mant & 0xfffff;
  if (rest > 0x80000 || (rest === 0x80000 && (h & 1) === 1)) h += 1; // (464, 480) → 0x7F = NaN
  return sign | h;
}

/**
 * E4M3 code for x, exactly as torch's `.to(torch.float8_e4m3fn)`: no saturation, |x| > 464 gives NaN.
 * The quantizers' path is `f32ToFp8E4M3(clampFp8E4M3(x / scale))`.
 */
export function f32ToFp8E4M3(x: number): number {
  const u = f32Bits(x);
  return e4m3FromF32Bits(u, scratchF32[0]!);
}

function e4m3Value(b: number): number {
  const e = (b >>> 3) & 0xf;
  const m = b & 7;
  let v: number;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) v = m * 2 ** -9;
  else v = (8 + m) * 2 ** (e - 10);
  return b & 0x80 ? -v : v;
}

export function fp8E4M3ToF32(code: number): number {
  return e4m3Value(code & 0xff);
}

/**
 * float32 bits → E5M2 (bias 15), RNE, bit-exact with torch's cast to float8_e5m2: like IEEE, values
 * that round past 57344 (|x| ≥ 61440) become ±inf (0x7C/0xFC); NaN gives 0x7F/0xFF.
 */
function e5m2FromF32Bits(u: number, value: number): number {
  const sign = (u >>> 24) & 0x80;
  const a = u & 0x7fffffff;
  if (a > 0x7f800000) return sign | 0x7f;
  if (a >= 0x47800000) return sign | 0x7c; // ≥ 65536 and inf
  if (a < 0x38800000) {
    // Below 2^-14: a multiple of 2^-16 (4 × 2^-16 is the smallest normal code 0x04).
    return sign | roundHalfEvenNonNeg(Math.abs(value) * 65536);
  }
  const mant = a & 0x7fffff;
  let h = (((a >>> 23) - 112) << 2) | (mant >>> 21);
  const rest = mant & 0x1fffff;
  if (rest > 0x100000 || (rest === 0x100000 && (h & 1) === 1)) h += 1;
  return sign | h;
}

/** E5M2 code for x, exactly as torch's `.to(torch.float8_e5m2)`: |x| ≥ 61440 gives ±inf. */
export function f32ToFp8E5M2(x: number): number {
  const u = f32Bits(x);
  return e5m2FromF32Bits(u, scratchF32[0]!);
}

function e5m2Value(b: number): number {
  const e = (b >>> 2) & 0x1f;
  const m = b & 3;
  let v: number;
  if (e === 31) v = m === 0 ? Infinity : NaN;
  else if (e === 0) v = m * 2 ** -16;
  else v = (4 + m) * 2 ** (e - 17);
  return b & 0x80 ? -v : v;
}

export function fp8E5M2ToF32(code: number): number {
  return e5m2Value(code & 0xff);
}

// --- decode tables -------------------------------------------------------------------------------

let f16Table: Float32Array | undefined;
function f16DecodeTable(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16Value(h);
  }
  return f16Table;
}

const E4M3_TABLE = Float32Array.from({ length: 256 }, (_, b) => e4m3Value(b));
const E5M2_TABLE = Float32Array.from({ length: 256 }, (_, b) => e5m2Value(b));

// --- bulk ---------------------------------------------------------------------------------------

/** A view of `bytes` as elements of `size` bytes; copies first when the offset is unaligned. */
function alignedBuffer(bytes: Uint8Array, size: number): { buffer: ArrayBufferLike; offset: number } {
  if (bytes.byteOffset % size === 0) return { buffer: bytes.buffer, offset: bytes.byteOffset };
  return { buffer: bytes.slice().buffer, offset: 0 };
}

function checkLength(dtype: DType, byteLength: number): number {
  const size = DTYPE_SIZE[dtype];
  if (byteLength % size !== 0) {
    throw new RangeError(`${byteLength} bytes is not a whole number of ${dtype} elements (${size} bytes each)`);
  }
  return byteLength / size;
}

/**
 * Decodes little-endian `dtype` elements to a new Float32Array (never shares memory with `bytes`).
 * Floats convert exactly (F64 rounds to nearest float32); integers convert to the nearest float32;
 * BOOL gives 0 or 1.
 */
export function decodeToFloat32(dtype: DType, bytes: Uint8Array): Float32Array<ArrayBuffer> {
  const n = checkLength(dtype, bytes.byteLength);
  const out = new Float32Array(n);
  const { buffer, offset } = alignedBuffer(bytes, DTYPE_SIZE[dtype]);
  switch (dtype) {
    case 'F32':
      out.set(new Float32Array(buffer, offset, n));
      break;
    case 'F64':
      out.set(new Float64Array(buffer, offset, n));
      break;
    case 'BF16': {
      const src = new Uint16Array(buffer, offset, n);
      const dst = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = src[i]! << 16;
      break;
    }
    case 'F16': {
      const src = new Uint16Array(buffer, offset, n);
      const table = f16DecodeTable();
      for (let i = 0; i < n; i++) out[i] = table[src[i]!]!;
      break;
    }
    case 'F8_E4M3':
      for (let i = 0; i < n; i++) out[i] = E4M3_TABLE[bytes[i]!]!;
      break;
    case 'F8_E5M2':
      for (let i = 0; i < n; i++) out[i] = E5M2_TABLE[bytes[i]!]!;
      break;
    case 'I64': {
      // Each element as (high int32) × 2^32 + (low uint32): one rounding to double, like Number(bigint).
      const lo = new Uint32Array(buffer, offset, 2 * n);
      const hi = new Int32Array(buffer, offset, 2 * n);
      for (let i = 0; i < n; i++) out[i] = hi[2 * i + 1]! * 4294967296 + lo[2 * i]!;
      break;
    }
    case 'I32':
      out.set(new Int32Array(buffer, offset, n));
      break;
    case 'I16':
      out.set(new Int16Array(buffer, offset, n));
      break;
    case 'I8':
      out.set(new Int8Array(buffer, offset, n));
      break;
    case 'U8':
      out.set(bytes);
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = bytes[i] !== 0 ? 1 : 0;
      break;
  }
  return out;
}

/** Round half to even, then clamp to [lo, hi]. NaN becomes 0 (torch leaves it undefined). */
function toIntSaturated(x: number, lo: number, hi: number): number {
  if (x !== x) return 0;
  const r = roundHalfEven(x);
  return r < lo ? lo : r > hi ? hi : r;
}

/**
 * Encodes float32 values as little-endian `dtype` elements. Floats round to nearest even (FP8 E4M3
 * without saturation, like torch: clamp first with clampFp8E4M3); integers round half to even and
 * saturate to the dtype's range (NaN → 0); BOOL is x != 0 (NaN → true, like torch).
 */
export function encodeFromFloat32(dtype: DType, values: Float32Array): Uint8Array<ArrayBuffer> {
  const n = values.length;
  const out = new Uint8Array(n * DTYPE_SIZE[dtype]);
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  switch (dtype) {
    case 'F32':
      out.set(new Uint8Array(values.buffer, values.byteOffset, 4 * n));
      break;
    case 'F64':
      new Float64Array(out.buffer).set(values);
      break;
    case 'BF16': {
      const dst = new Uint16Array(out.buffer);
      for (let i = 0; i < n; i++) {
        const u = bits[i]!;
        dst[i] = (u & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
      }
      break;
    }
    case 'F16': {
      const dst = new Uint16Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = f16FromF32Bits(bits[i]!, values[i]!);
      break;
    }
    case 'F8_E4M3':
      for (let i = 0; i < n; i++) out[i] = e4m3FromF32Bits(bits[i]!, values[i]!);
      break;
    case 'F8_E5M2':
      for (let i = 0; i < n; i++) out[i] = e5m2FromF32Bits(bits[i]!, values[i]!);
      break;
    case 'I64': {
      const lo = new Uint32Array(out.buffer);
      const hi = new Int32Array(out.buffer);
      for (let i = 0; i < n; i++) {
        const v = values[i]!;
        if (v !== v) continue; // NaN → 0
        const r = roundHalfEven(v);
        if (r >= 2 ** 63) {
          hi[2 * i + 1] = 0x7fffffff;
          lo[2 * i] = 0xffffffff;
        } else if (r <= -(2 ** 63)) {
          hi[2 * i + 1] = -0x80000000;
        } else {
          const h = Math.floor(r / 4294967296);
          hi[2 * i + 1] = h;
          lo[2 * i] = r - h * 4294967296;
        }
      }
      break;
    }
    case 'I32': {
      const dst = new Int32Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = toIntSaturated(values[i]!, -2147483648, 2147483647);
      break;
    }
    case 'I16': {
      const dst = new Int16Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = toIntSaturated(values[i]!, -32768, 32767);
      break;
    }
    case 'I8': {
      const dst = new Int8Array(out.buffer);
      for (let i = 0; i < n; i++) dst[i] = toIntSaturated(values[i]!, -128, 127);
      break;
    }
    case 'U8':
      for (let i = 0; i < n; i++) out[i] = toIntSaturated(values[i]!, 0, 255);
      break;
    case 'BOOL':
      for (let i = 0; i < n; i++) out[i] = values[i] !== 0 ? 1 : 0;
      break;
  }
  return out;
}
