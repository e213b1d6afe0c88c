// A minimal WebAssembly assembler: enough to emit the SIMD kernels of simd-kernels.ts as a
// module binary at run time, with no build step and no dependency. Function bodies are written
// as chained stack-machine instructions (`f.get(a).get(b).i32Add().set(c)`).

export const I32 = 0x7f;
export const F32 = 0x7d;
export const F64 = 0x7c;
export const V128 = 0x7b;
export type ValType = typeof I32 | typeof F32 | typeof F64 | typeof V128;

function uleb(out: number[], n: number): void {
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
}

function sleb(out: number[], n: number): void {
  for (;;) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return;
    }
    out.push(byte | 0x80);
  }
}

const f32Bytes = new Uint8Array(4);
const f32View = new DataView(f32Bytes.buffer);

/** One function body under construction. Locals are numbered after the parameters. */
export class Fn {
  readonly code: number[] = [];
  readonly localTypes: ValType[] = [];

  constructor(readonly name: string, readonly params: readonly ValType[], readonly results: readonly ValType[] = []) {}

  /** A new local of type t; returns its index. */
  local(t: ValType): number {
    this.localTypes.push(t);
    return this.params.length + this.localTypes.length - 1;
  }

  private op(...bytes: number[]): this {
    this.code.push(...bytes);
    return this;
  }

  private simd(opcode: number, ...imm: number[]): this {
    this.code.push(0xfd);
    uleb(this.code, opcode);
    this.code.push(...imm);
    return this;
  }

  private mem(opcode: number, align: number, offset: number, simd: boolean): this {
    if (simd) this.simd(opcode);
    else this.code.push(opcode);
    uleb(this.code, align);
    uleb(this.code, offset);
    return this;
  }

  // variables and constants
  get(i: number): this { this.code.push(0x20); uleb(this.code, i); return this; }
  set(i: number): this { this.code.push(0x21); uleb(this.code, i); return this; }
  tee(i: number): this { this.code.push(0x22); uleb(this.code, i); return this; }
  i32(n: number): this { this.code.push(0x41); sleb(this.code, n | 0); return this; }
  f32(x: number): this {
    f32View.setFloat32(0, x, true);
    return this.op(0x43, ...f32Bytes);
  }
  f64(x: number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, x, true);
    return this.op(0x44, ...b);
  }
  /** An i64 constant (|n| < 2^31). */
  i64(n: number): this { this.code.push(0x42); sleb(this.code, n | 0); return this; }
  drop(): this { return this.op(0x1a); }
  select(): this { return this.op(0x1b); }

  // i32 arithmetic and comparisons
  i32Add(): this { return this.op(0x6a); }
  i32Sub(): this { return this.op(0x6b); }
  i32Mul(): this { return this.op(0x6c); }
  i32DivS(): this { return this.op(0x6d); }
  i32RemS(): this { return this.op(0x6f); }
  i32And(): this { return this.op(0x71); }
  i32Shl(): this { return this.op(0x74); }
  i32ShrS(): this { return this.op(0x75); }
  i32Eqz(): this { return this.op(0x45); }
  i32LtS(): this { return this.op(0x48); }
  i32GtS(): this { return this.op(0x4a); }
  i32LeS(): this { return this.op(0x4c); }
  i32GeS(): this { return this.op(0x4e); }

  // f32 scalar
  f32Load(offset = 0): this { return this.mem(0x2a, 2, offset, false); }
  f32Store(offset = 0): this { return this.mem(0x38, 2, offset, false); }
  f32Add(): this { return this.op(0x92); }
  f32Mul(): this { return this.op(0x94); }
  f32Sqrt(): this { return this.op(0x91); }
  f32Div(): this { return this.op(0x95); }
  f32ConvertI32S(): this { return this.op(0xb2); }
  f32Max(): this { return this.op(0x97); }
  f32Ne(): this { return this.op(0x5c); }

  // f64 scalar
  f64Store(offset = 0): this { return this.mem(0x39, 3, offset, false); }
  f64Add(): this { return this.op(0xa0); }
  f64PromoteF32(): this { return this.op(0xbb); }
  f64ConvertI32S(): this { return this.op(0xb7); }

  // v128 / f32x4
  v128Load(offset = 0): this { return this.mem(0x00, 4, offset, true); }
  v128Store(offset = 0): this { return this.mem(0x0b, 4, offset, true); }
  /** Loads one f32 and splats it to all 4 lanes. */
  loadSplat(offset = 0): this { return this.mem(0x09, 2, offset, true); }
  f32x4Splat(): this { return this.simd(0x13); }
  /** (a, any) → lanes [a2, a3, a0, a1] of a (i8x16.shuffle; its second operand goes unused). */
  f32x4SwapHalves(): this {
    this.code.push(0xfd);
    uleb(this.code, 0x0d); // i8x16.shuffle of the vector with itself
    this.code.push(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    return this;
  }
  /** f64x2 of lanes 0 and 1 of an f32x4. */
  f64x2PromoteLow(): this { return this.simd(0x5f); }
  f64x2Splat(): this { return this.simd(0x14); }
  f64x2Add(): this { return this.simd(0xf0); }
  f64x2Sub(): this { return this.simd(0xf1); }
  f64x2Mul(): this { return this.simd(0xf2); }
  /** Pseudo-max as x86 maxpd. */
  f64x2Pmax(): this { return this.simd(0xf7); }
  i64x2Splat(): this { return this.simd(0x12); }
  i64x2Add(): this { return this.simd(0xce); }
  i64x2Shl(): this { return this.simd(0xcb); }
  f64x2ExtractLane(lane: number): this { return this.simd(0x21, lane); }
  i32x4Splat(): this { return this.simd(0x11); }
  f32x4ExtractLane(lane: number): this { return this.simd(0x1f, lane); }
  f32x4ReplaceLane(lane: number): this { return this.simd(0x20, lane); }
  i32x4ReplaceLane(lane: number): this { return this.simd(0x1c, lane); }
  i32x4LeS(): this { return this.simd(0x3d); }
  i32x4GeS(): this { return this.simd(0x3f); }
  v128And(): this { return this.simd(0x4e); }
  /** (a, b, mask) → mask ? a : b, bitwise. */
  v128Bitselect(): this { return this.simd(0x52); }
  i32x4Shl(): this { return this.simd(0xab); }
  i32x4Add(): this { return this.simd(0xae); }
  f32x4Add(): this { return this.simd(0xe4); }
  f32x4Sub(): this { return this.simd(0xe5); }
  f32x4Mul(): this { return this.simd(0xe6); }
  f32x4Div(): this { return this.simd(0xe7); }
  /** Pseudo-max b < a ? a : b … as x86 maxps (wasm's f32x4.max costs several instructions). */
  f32x4Pmax(): this { return this.simd(0xeb); }
  /** Pseudo-min b < a ? b : a … as x86 minps. */
  f32x4Pmin(): this { return this.simd(0xea); }

  // control flow
  /** block … end; `br(depth)` inside leaves it (depth 0 = this block). */
  block(body: () => void): this {
    this.op(0x02, 0x40);
    body();
    return this.op(0x0b);
  }
  loop(body: () => void): this {
    this.op(0x03, 0x40);
    body();
    return this.op(0x0b);
  }
  ifThen(body: () => void): this {
    this.op(0x04, 0x40);
    body();
    return this.op(0x0b);
  }
  br(depth: number): this { this.code.push(0x0c); uleb(this.code, depth); return this; }
  brIf(depth: number): this { this.code.push(0x0d); uleb(this.code, depth); return this; }

  /**
   * for (i = from; i < to; i += step) body — `from`/`to` emit an i32 each; `to` is evaluated
   * once into a fresh local. The body runs at least zero times.
   */
  forLoop(i: number, from: () => void, to: () => void, step: number, body: () => void): this {
    const end = this.local(I32);
    from();
    this.set(i);
    to();
    this.set(end);
    return this.block(() => {
      this.get(i).get(end).i32GeS().brIf(0);
      this.loop(() => {
        body();
        this.get(i).i32(step).i32Add().tee(i).get(end).i32LtS().brIf(0);
      });
    });
  }

  /** x += step for an i32 local. */
  inc(x: number, step: number): this {
    return this.get(x).i32(step).i32Add().set(x);
  }
}

/** Encodes a module that imports its memory as env.mem and exports every function by name. */
export function buildModule(fns: readonly Fn[]): Uint8Array {
  const out: number[] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
  const section = (id: number, body: number[]) => {
    out.push(id);
    uleb(out, body.length);
    out.push(...body);
  };
  const vec = (items: number[][]): number[] => {
    const b: number[] = [];
    uleb(b, items.length);
    for (const it of items) b.push(...it);
    return b;
  };
  const name = (s: string): number[] => {
    const bytes = [...Buffer.from(s, 'utf8')];
    const b: number[] = [];
    uleb(b, bytes.length);
    return [...b, ...bytes];
  };
  // types: one per function (duplicates are allowed)
  section(1, vec(fns.map((f) => [0x60, ...vec(f.params.map((t) => [t])), ...vec(f.results.map((t) => [t]))])));
  // import: env.mem, a memory with min 1 page
  section(2, vec([[...name('env'), ...name('mem'), 0x02, 0x00, 0x01]]));
  const funcs: number[] = [];
  uleb(funcs, fns.length);
  fns.forEach((_, i) => uleb(funcs, i));
  section(3, funcs);
  section(7, vec(fns.map((f, i) => {
    const b = [...name(f.name), 0x00];
    uleb(b, i);
    return b;
  })));
  section(10, vec(fns.map((f) => {
    const body: number[] = [];
    const groups: [number, ValType][] = [];
    for (const t of f.localTypes) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    uleb(body, groups.length);
    for (const [n, t] of groups) {
      uleb(body, n);
      body.push(t);
    }
    body.push(...f.code, 0x0b);
    const sized: number[] = [];
    uleb(sized, body.length);
    return [...sized, ...body];
  })));
  return Uint8Array.from(out);
}
