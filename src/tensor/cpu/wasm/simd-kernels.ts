// The WebAssembly SIMD (f32x4) kernels, emitted with asm.ts. Each thread instantiates the
// module with its own memory; the JS side (kernels.ts: wasmMatmulKernel, wasmAttentionKernel)
// copies a tile of the operands in, calls the kernel, and copies the result out. All pointers
// are byte offsets into that memory.

import { buildModule, F32, Fn, I32, V128, type ValType } from './asm.js';

/** Rows × columns of the matmul register block (MATMUL_COLS a multiple of 4). */
export const MATMUL_ROWS = 4;
export const MATMUL_COLS = 8;

/**
 * matmul(x, wp, bias, o, M, N, K): o[M, N] = x[M, K] · wᵀ + bias, where wp is w packed in
 * blocks of MATMUL_COLS columns, [Np / COLS][K][COLS] with Np = N rounded up to COLS (zero
 * columns), and bias is [Np]. M is a multiple of MATMUL_ROWS. o has row stride N: the last,
 * partial column block is stored lane by lane. Each k step splats one x value per row and
 * multiplies it into the row's column vectors: ROWS × COLS/4 accumulators stay in registers.
 */
function matmulFn(R: number, W: number): Fn {
  const CV = W / 4;
  const f = new Fn('matmul', [I32, I32, I32, I32, I32, I32, I32]);
  const [x, wp, bias, o, M, N, K] = [0, 1, 2, 3, 4, 5, 6];
  const r = f.local(I32), cb = f.local(I32), kp = f.local(I32), wpp = f.local(I32), K4 = f.local(I32);
  const xr = Array.from({ length: R }, () => f.local(I32));
  const orow = f.local(I32), N4 = f.local(I32), left = f.local(I32);
  const acc = Array.from({ length: R }, () => Array.from({ length: CV }, () => f.local(V128)));
  const wv = Array.from({ length: CV }, () => f.local(V128));
  const s = f.local(V128);
  f.get(K).i32(2).i32Shl().set(K4);
  f.get(N).i32(2).i32Shl().set(N4);
  f.forLoop(r, () => f.i32(0), () => f.get(M), R, () => {
    f.get(r).get(K4).i32Mul().get(x).i32Add().set(xr[0]);
    for (let i = 1; i < R; i++) f.get(xr[i - 1]).get(K4).i32Add().set(xr[i]);
    f.forLoop(cb, () => f.i32(0), () => f.get(N), W, () => {
      for (let c = 0; c < CV; c++) {
        f.get(bias).get(cb).i32(2).i32Shl().i32Add().v128Load(16 * c).set(acc[0][c]);
        for (let i = 1; i < R; i++) f.get(acc[0][c]).set(acc[i][c]);
      }
      f.get(cb).get(K4).i32Mul().get(wp).i32Add().set(wpp);
      f.forLoop(kp, () => f.i32(0), () => f.get(K4), 4, () => {
        for (let c = 0; c < CV; c++) f.get(wpp).v128Load(16 * c).set(wv[c]);
        for (let i = 0; i < R; i++) {
          f.get(xr[i]).get(kp).i32Add().loadSplat().set(s);
          for (let c = 0; c < CV; c++) f.get(acc[i][c]).get(s).get(wv[c]).f32x4Mul().f32x4Add().set(acc[i][c]);
        }
        f.inc(wpp, 4 * W);
      });
      // o + (r · N + cb) · 4
      f.get(r).get(N).i32Mul().get(cb).i32Add().i32(2).i32Shl().get(o).i32Add().set(orow);
      f.get(N).get(cb).i32Sub().set(left);
      f.block(() => {
        f.block(() => {
          f.get(left).i32(W).i32LtS().brIf(0);
          for (let i = 0; i < R; i++) {
            for (let c = 0; c < CV; c++) f.get(orow).get(acc[i][c]).v128Store(16 * c);
            if (i + 1 < R) f.get(orow).get(N4).i32Add().set(orow);
          }
          f.br(1);
        });
        // partial block: lanes c < left
        for (let i = 0; i < R; i++) {
          for (let c = 0; c < W; c++) {
            f.get(left).i32(c).i32GtS().ifThen(() => {
              f.get(orow).get(acc[i][c >> 2]).f32x4ExtractLane(c & 3).f32Store(4 * c);
            });
          }
          if (i + 1 < R) f.get(orow).get(N4).i32Add().set(orow);
        }
      });
    });
  });
  return f;
}

/**
 * pack(w, wp, Np, K): wp [Np / COLS][K][COLS] = w [Np, K] regrouped in blocks of MATMUL_COLS
 * columns (Np a multiple of COLS; the caller zero-pads w's rows). Reads COLS rows in step.
 */
function packFn(W: number): Fn {
  const f = new Fn('pack', [I32, I32, I32, I32]);
  const [w, wp, Np, K] = [0, 1, 2, 3];
  const cb = f.local(I32), k = f.local(I32), dst = f.local(I32), K4 = f.local(I32);
  const src = Array.from({ length: W }, () => f.local(I32));
  f.get(K).i32(2).i32Shl().set(K4);
  f.get(wp).set(dst);
  f.forLoop(cb, () => f.i32(0), () => f.get(Np), W, () => {
    for (let c = 0; c < W; c++) f.get(cb).i32(c).i32Add().get(K4).i32Mul().get(w).i32Add().set(src[c]);
    f.forLoop(k, () => f.i32(0), () => f.get(K4), 4, () => {
      for (let c = 0; c < W; c++) f.get(dst).get(src[c]).get(k).i32Add().f32Load().f32Store(4 * c);
      f.inc(dst, 4 * W);
    });
  });
  return f;
}

/** Constants of emitExp, hoisted into v128 locals by `expConstants`. */
interface ExpConstants {
  negLog2e: number; minExp: number; maxExp: number; magic: number; bias: number; coef: number[];
}

/**
 * 2^f ≈ Σ c_k f^k on [-1/2, 1/2], degree 5, fitted for least maximum relative error (float32
 * evaluation: ≤ 2.4e-7). Highest degree first, for Horner.
 */
const EXP2_COEFFICIENTS = [
  0.001327647129073739, 0.009675540961325169, 0.05550713092088699, 0.24022120237350464, 0.6931469440460205, 1.0000001192092896,
];
/** 1.5 · 2^23: adding it rounds an f32 to an integer held in the low mantissa bits. */
const ROUND_MAGIC = 12582912;

function expConstants(f: Fn): ExpConstants {
  const splat = (x: number) => {
    const l = f.local(V128);
    f.f32(x).f32x4Splat().set(l);
    return l;
  };
  const bias = f.local(V128);
  f.i32(127 - 0x4b400000).i32x4Splat().set(bias);
  return {
    negLog2e: splat(-Math.LOG2E), minExp: splat(-127), maxExp: splat(128),
    magic: splat(ROUND_MAGIC), bias, coef: EXP2_COEFFICIENTS.map(splat),
  };
}

/**
 * Emits 2^x ('exp2', lanes ≤ 0) or e^-x ('expNeg', any lanes) for the f32x4 in local `x` into
 * local `out` (-inf allowed): t = x in log2 units, clamped to ≥ -127
 * (and ≤ 128 for expNeg); n = round(t) via ROUND_MAGIC, whose bits also give n as an integer;
 * 2^(t - n) from EXP2_COEFFICIENTS; times 2^n built from exponent bits ((n + 127) << 23):
 * n = -127 gives exactly 0, n = 128 +inf. Only single-instruction ops (pmax/pmin, no
 * float→int conversion): V8 expands wasm's f32x4.max and i32x4.trunc_sat into several each.
 */
function emitExp(f: Fn, c: ExpConstants, x: number, out: number, t: number, n: number, mode: 'exp2' | 'expNeg'): void {
  f.get(c.minExp).get(x);
  if (mode === 'expNeg') f.get(c.negLog2e).f32x4Mul();
  f.f32x4Pmax();
  if (mode === 'expNeg') f.get(c.maxExp).f32x4Pmin();
  f.tee(t).get(c.magic).f32x4Add().set(n); // bits: 0x4b400000 + round(t)
  f.get(t).get(n).get(c.magic).f32x4Sub().f32x4Sub().set(t);
  f.get(c.coef[0]);
  for (let i = 1; i < c.coef.length; i++) f.get(t).f32x4Mul().get(c.coef[i]).f32x4Add();
  f.get(n).get(c.bias).i32x4Add().i32(23).i32x4Shl().f32x4Mul().set(out);
}

/**
 * attention(q, k, v, o, S, qT, u0, u1, bStart, seqQ, kvLen, kvStride, nHead, nKvHead, hd, scale, window)
 * Units as in kernels.ts attentionKernel (4 queries of one sequence and head). q/k/v hold the
 * rows of sequences bStart.. in their original layout; unit u writes its 4 × hd outputs
 * compactly at o + (u - u0) · 16 · hd. The 4 queries are the 4 lanes: qT[d] holds
 * q[·, d] · scale · log2 e, each key costs hd splat-multiply-adds, S[j] keeps the 4 scores of key j.
 * hd must be a multiple of 4. With `hdConst` the function only serves that head size and its
 * loops over dimensions are unrolled (qT kept in registers when hd ≤ 8).
 * `stats` (training, 'lseAttention…'): one more parameter, st; unit u also stores its 4 lanes'
 * softmax max (log2 units) and sum of 2^(s − max) at st + (u - u0) · 32, so lse = max·ln 2 + ln(sum).
 */
function attentionFn(hdConst: number | null, stats = false): Fn {
  const base = stats ? 'lseAttention' : 'attention';
  const f = new Fn(hdConst === null ? base : `${base}${hdConst}`,
    [I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, F32, I32, ...(stats ? [I32] : [])] as ValType[]);
  const [q, k, v, o, S, qT, u0, u1, bStart, seqQ, kvLen, kvStride, nHead, nKvHead, hd, scale, window, st] =
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];
  const L = () => f.local(I32);
  const u = L(), blk = L(), bh = L(), h = L(), b = L(), g = L(), t0 = L(), nq = L();
  const pFirst = L(), pLast = L(), jLo = L(), jMid = L(), jHi = L(), kB = L(), vB = L();
  const qRowB = L(), kvRowB = L(), qBlocks = L(), group = L(), past = L(), hd4 = L();
  const j = L(), d = L(), kp = L(), kd = L(), qp = L(), sp = L(), vp = L(), op = L(), dc = L(), tmp = L();
  const qr = Array.from({ length: 4 }, () => L());
  const V = () => f.local(V128);
  const acc = V(), mvec = V(), sum = V(), loVec = V(), pVec = V(), jv = V(), e = V(), t = V(), n = V();
  const inv = Array.from({ length: 4 }, () => V());
  const pv = Array.from({ length: 4 }, () => [V(), V()]);
  const vv = [V(), V()];
  const pj = V();
  const qTRegs = hdConst !== null && hdConst <= 8 ? Array.from({ length: hdConst }, () => V()) : null;
  const ec = expConstants(f);
  // Scores are kept in log2 units (q scaled by scale · log2 e), so the softmax takes 2^(s - max).
  const scale2 = f.local(F32);
  f.get(scale).f32(Math.LOG2E).f32Mul().set(scale2);

  f.get(seqQ).i32(3).i32Add().i32(2).i32ShrS().set(qBlocks);
  f.get(nHead).get(hd).i32Mul().i32(2).i32Shl().set(qRowB);
  f.get(nKvHead).get(hd).i32Mul().i32(2).i32Shl().set(kvRowB);
  f.get(nHead).get(nKvHead).i32DivS().set(group);
  f.get(kvLen).get(seqQ).i32Sub().set(past);
  f.get(hd).i32(2).i32Shl().set(hd4);

  /** acc += splat(k[kd + 4dd]) · qT[dd] */
  const mulAdd = (dd: number, kOffset: number) => {
    f.get(acc).get(kd).loadSplat(kOffset);
    if (qTRegs !== null) f.get(qTRegs[dd]);
    else f.get(qT).v128Load(16 * dd);
    f.f32x4Mul().f32x4Add().set(acc);
  };

  /** Keys [from, to): S[j] = Σ_d splat(k[j, d]) · qT[d]; masked: lanes that cannot see j get -inf. */
  const scoreKeys = (from: () => void, to: () => void, masked: boolean) => {
    from();
    f.set(tmp);
    f.get(tmp).get(kvRowB).i32Mul().get(kB).i32Add().set(kp);
    f.get(tmp).i32(4).i32Shl().get(S).i32Add().set(sp);
    f.forLoop(j, () => f.get(tmp), to, 1, () => {
      f.f32(0).f32x4Splat().set(acc);
      f.get(kp).set(kd);
      if (hdConst !== null) {
        for (let dd = 0; dd < hdConst; dd++) mulAdd(dd, 4 * dd);
      } else {
        f.get(qT).set(qp);
        f.forLoop(d, () => f.i32(0), () => f.get(hd), 4, () => {
          for (let dd = 0; dd < 4; dd++) f.get(acc).get(kd).loadSplat(4 * dd).get(qp).v128Load(16 * dd).f32x4Mul().f32x4Add().set(acc);
          f.inc(kd, 16).inc(qp, 64);
        });
      }
      if (masked) {
        f.get(j).i32x4Splat().set(jv);
        f.get(acc).f32(-Infinity).f32x4Splat();
        f.get(jv).get(loVec).i32x4GeS().get(jv).get(pVec).i32x4LeS().v128And();
        f.v128Bitselect().set(acc);
      }
      f.get(sp).get(acc).v128Store();
      f.get(acc).get(mvec).f32x4Pmax().set(mvec);
      f.get(kp).get(kvRowB).i32Add().set(kp);
      f.inc(sp, 16);
    });
  };

  /** o[·, dc .. dc + 4·CV) for the 4 queries: Σ_j S[j] · v[j, dc ..] · inv. dcConst: dc known. */
  const weightedValues = (CV: number, dcConst: number | null) => {
    for (let i = 0; i < 4; i++) for (let c = 0; c < CV; c++) f.f32(0).f32x4Splat().set(pv[i][c]);
    f.get(jLo).get(kvRowB).i32Mul().get(vB).i32Add();
    if (dcConst !== null) f.i32(4 * dcConst);
    else f.get(dc).i32(2).i32Shl();
    f.i32Add().set(vp);
    f.get(jLo).i32(4).i32Shl().get(S).i32Add().set(sp);
    f.forLoop(j, () => f.get(jLo), () => f.get(jHi), 1, () => {
      for (let c = 0; c < CV; c++) f.get(vp).v128Load(16 * c).set(vv[c]);
      for (let i = 0; i < 4; i++) {
        f.get(sp).loadSplat(4 * i).set(pj);
        for (let c = 0; c < CV; c++) f.get(pv[i][c]).get(pj).get(vv[c]).f32x4Mul().f32x4Add().set(pv[i][c]);
      }
      f.get(vp).get(kvRowB).i32Add().set(vp);
      f.inc(sp, 16);
    });
    f.get(u).get(u0).i32Sub().get(hd4).i32Mul().i32(2).i32Shl().get(o).i32Add();
    if (dcConst !== null) f.i32(4 * dcConst);
    else f.get(dc).i32(2).i32Shl();
    f.i32Add().set(op);
    for (let i = 0; i < 4; i++) {
      for (let c = 0; c < CV; c++) f.get(op).get(pv[i][c]).get(inv[i]).f32x4Mul().v128Store(16 * c);
      if (i < 3) f.get(op).get(hd4).i32Add().set(op);
    }
  };

  f.forLoop(u, () => f.get(u0), () => f.get(u1), 1, () => {
    f.get(u).get(qBlocks).i32RemS().set(blk);
    f.get(u).get(qBlocks).i32DivS().set(bh);
    f.get(bh).get(nHead).i32RemS().set(h);
    f.get(bh).get(nHead).i32DivS().get(bStart).i32Sub().set(b);
    f.get(h).get(group).i32DivS().set(g);
    f.get(blk).i32(2).i32Shl().set(t0);
    // nq = min(4, seqQ - t0)
    f.get(seqQ).get(t0).i32Sub().set(nq);
    f.i32(4).get(nq).get(nq).i32(4).i32GtS().select().set(nq);
    f.get(past).get(t0).i32Add().set(pFirst);
    f.get(pFirst).get(nq).i32Add().i32(-1).i32Add().set(pLast);
    f.get(pLast).i32(1).i32Add().set(jHi);
    // Key window of the block: [jLo, jHi); keys in [jMid, pFirst] are visible to all 4 queries.
    f.i32(0).set(jLo);
    f.i32(0).set(jMid);
    f.get(window).ifThen(() => {
      f.get(pFirst).get(window).i32Sub().i32(1).i32Add().set(tmp);
      f.get(tmp).i32(0).get(tmp).i32(0).i32GtS().select().set(jLo);
      f.get(pLast).get(window).i32Sub().i32(1).i32Add().set(tmp);
      f.get(tmp).i32(0).get(tmp).i32(0).i32GtS().select().set(jMid);
      f.get(pFirst).i32(1).i32Add().set(tmp);
      f.get(tmp).get(jMid).get(jMid).get(tmp).i32GtS().select().set(jMid);
    });
    // Per-lane visible range [lo_i, p_i]; lanes past nq repeat the last query.
    for (let i = 0; i < 4; i++) {
      f.get(pFirst).i32(i).get(nq).i32(-1).i32Add().get(nq).i32(i).i32GtS().select().i32Add().set(tmp);
      if (i === 0) f.get(tmp).i32x4Splat().set(pVec);
      else f.get(pVec).get(tmp).i32x4ReplaceLane(i).set(pVec);
      // lo_i = window ? max(0, p_i - window + 1) : 0
      f.get(tmp).get(window).i32Sub().i32(1).i32Add().set(tmp);
      f.get(tmp).i32(0).get(tmp).i32(0).i32GtS().get(window).i32(0).i32GtS().i32Mul().select().set(tmp);
      if (i === 0) f.get(tmp).i32x4Splat().set(loVec);
      else f.get(loVec).get(tmp).i32x4ReplaceLane(i).set(loVec);
    }
    // qT[d] = q[t0 + i, h, d] · scale for lanes i
    for (let i = 0; i < 4; i++) {
      // row b·seqQ + t0 + min(i, nq - 1)
      f.get(b).get(seqQ).i32Mul().get(t0).i32Add();
      f.i32(i).get(nq).i32(-1).i32Add().get(nq).i32(i).i32GtS().select().i32Add();
      f.get(qRowB).i32Mul().get(q).i32Add().get(h).get(hd4).i32Mul().i32Add().set(qr[i]);
    }
    f.get(qT).set(qp);
    f.forLoop(d, () => f.i32(0), () => f.get(hd4), 4, () => {
      for (let i = 0; i < 4; i++) f.get(qp).get(qr[i]).get(d).i32Add().f32Load().get(scale2).f32Mul().f32Store(4 * i);
      f.inc(qp, 16);
    });
    if (qTRegs !== null) qTRegs.forEach((r, dd) => f.get(qT).v128Load(16 * dd).set(r));
    f.get(b).get(kvStride).i32Mul().get(kvRowB).i32Mul().get(g).get(hd4).i32Mul().i32Add().set(tmp);
    f.get(tmp).get(k).i32Add().set(kB);
    f.get(tmp).get(v).i32Add().set(vB);
    // scores, masked only at the edges of the block's key window
    f.f32(-Infinity).f32x4Splat().set(mvec);
    scoreKeys(() => f.get(jLo), () => f.get(jMid), true);
    scoreKeys(() => f.get(jMid), () => f.get(pFirst).i32(1).i32Add(), false);
    scoreKeys(() => f.get(pFirst).i32(1).i32Add(), () => f.get(jHi), true);
    // softmax numerators and sums
    f.f32(0).f32x4Splat().set(sum);
    f.get(jLo).i32(4).i32Shl().get(S).i32Add().set(sp);
    f.forLoop(j, () => f.get(jLo), () => f.get(jHi), 1, () => {
      f.get(sp).v128Load().get(mvec).f32x4Sub().set(acc);
      emitExp(f, ec, acc, e, t, n, 'exp2');
      f.get(sp).get(e).v128Store();
      f.get(sum).get(e).f32x4Add().set(sum);
      f.inc(sp, 16);
    });
    if (stats) {
      f.get(u).get(u0).i32Sub().i32(5).i32Shl().get(st).i32Add().set(tmp);
      f.get(tmp).get(mvec).v128Store(0);
      f.get(tmp).get(sum).v128Store(16);
    }
    for (let i = 0; i < 4; i++) f.f32(1).get(sum).f32x4ExtractLane(i).f32Div().f32x4Splat().set(inv[i]);
    // values: 8 dims at a time, then 4
    if (hdConst !== null) {
      let c = 0;
      for (; c + 8 <= hdConst; c += 8) weightedValues(2, c);
      if (c < hdConst) weightedValues(1, c);
    } else {
      f.i32(0).set(dc);
      f.block(() => {
        f.loop(() => {
          f.get(dc).i32(8).i32Add().get(hd).i32GtS().brIf(1);
          weightedValues(2, null);
          f.inc(dc, 8).br(0);
        });
      });
      f.get(dc).get(hd).i32LtS().ifThen(() => weightedValues(1, null));
    }
  });
  return f;
}

/**
 * attnGrad(K, V, Q, O, L2, D, dQ, dK, dV, qT, oT, gT, group, seqQp, kvLen, past, hd, scale, window):
 * the attention backward of one (sequence, KV group) (kernels.ts simdAttentionBackwardKernel
 * packs the operands). K, V, dK, dV are [kvLen][hd]; Q, O (= dOut), dQ [group][seqQp][hd];
 * L2 (lse · log2 e) and D (dOut·out) [group][seqQp], padded rows with L2 = +inf so that their
 * probabilities are exactly 0. Queries go 4 at a time as the 4 lanes (qT[d] holds their q[d] ·
 * scale · log2 e, oT[d] their dOut[d], gT[d] their dq[d]); per key j:
 *   P = 2^(qT·k_j − L2),  dS = P · (oT·v_j − D) · scale,  gT += dS · k_j,
 *   dK[j] += Σ_lanes dS_i · q_i,  dV[j] += Σ_lanes P_i · dOut_i   (masked keys: P = 0).
 * dK, dV accumulate (the caller zeroes them); dQ is written. With `hdConst` the loops over
 * dimensions are unrolled for that head size.
 */
function attnGradFn(hdConst: number | null): Fn {
  const f = new Fn(hdConst === null ? 'attnGrad' : `attnGrad${hdConst}`,
    [I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, I32, F32, I32]);
  const [K, Vv, Q, O, L2, D, dQ, dK, dV, qT, oT, gT, group, seqQp, kvLen, past, hd, scale, window] =
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
  const L = () => f.local(I32);
  const hh = L(), t0 = L(), j = L(), d = L(), hd4 = L(), row = L(), tmp = L(), kp = L(), vp = L(), dkp = L(), dvp = L();
  const pFirst = L(), jLo = L(), jMid = L(), jAll = L(), jHi = L(), qp = L(), op = L(), gp = L(), i4 = L();
  const Vr = () => f.local(V128);
  const sv = Vr(), ev = Vr(), lv = Vr(), dv = Vr(), pVec = Vr(), loVec = Vr(), jv = Vr(), x = Vr(), P = Vr(), dS = Vr();
  const e = Vr(), t = Vr(), n = Vr(), acc = Vr(), scaleV = Vr(), ks = Vr();
  const dsI = Array.from({ length: 4 }, () => Vr());
  const pI = Array.from({ length: 4 }, () => Vr());
  const ec = expConstants(f);
  const scale2 = f.local(F32);
  f.get(scale).f32(Math.LOG2E).f32Mul().set(scale2);
  f.get(scale).f32x4Splat().set(scaleV);
  f.get(hd).i32(2).i32Shl().set(hd4);

  /** body(dimBytes) per dimension d (step 1) or per 4 dimensions (step 4): dimBytes = 4·d unrolled, null in the generic loop over local d. */
  const eachDim = (step: 1 | 4, body: (dimBytes: number | null) => void) => {
    if (hdConst !== null) {
      for (let dd = 0; dd < hdConst; dd += step) body(4 * dd);
    } else {
      f.forLoop(d, () => f.i32(0), () => f.get(hd), step, () => body(null));
    }
  };
  /**
   * Pushes the address of dimension d in an array at local `ptr` with `scaleBy` bytes per dimension
   * (4: rows of floats; 16: the [hd][4] transposed scratch) and returns the constant offset for the
   * load/store (unrolled: the whole offset; generic: 0, as d·scaleBy is added to the address).
   */
  const at = (ptr: number, dimBytes: number | null, scaleBy: 4 | 16 = 4) => {
    f.get(ptr);
    if (dimBytes === null) f.get(d).i32(scaleBy === 4 ? 2 : 4).i32Shl().i32Add();
    return dimBytes === null ? 0 : (scaleBy === 4 ? dimBytes : dimBytes * 4);
  };

  const keys = (from: () => void, to: () => void, masked: boolean) => {
    f.forLoop(j, from, to, 1, () => {
      f.get(j).get(hd4).i32Mul().tee(tmp).get(K).i32Add().set(kp);
      f.get(tmp).get(Vv).i32Add().set(vp);
      f.get(tmp).get(dK).i32Add().set(dkp);
      f.get(tmp).get(dV).i32Add().set(dvp);
      f.f32(0).f32x4Splat().tee(sv).set(ev);
      eachDim(1, (db) => {
        let off = at(kp, db);
        f.loadSplat(off);
        off = at(qT, db, 16);
        f.v128Load(off).f32x4Mul().get(sv).f32x4Add().set(sv);
        off = at(vp, db);
        f.loadSplat(off);
        off = at(oT, db, 16);
        f.v128Load(off).f32x4Mul().get(ev).f32x4Add().set(ev);
      });
      if (masked) {
        f.get(j).i32x4Splat().set(jv);
        f.get(sv).f32(-Infinity).f32x4Splat();
        f.get(jv).get(loVec).i32x4GeS().get(jv).get(pVec).i32x4LeS().v128And();
        f.v128Bitselect().set(sv);
      }
      f.get(sv).get(lv).f32x4Sub().set(x);
      emitExp(f, ec, x, P, t, n, 'exp2');
      f.get(P).get(ev).get(dv).f32x4Sub().f32x4Mul().get(scaleV).f32x4Mul().set(dS);
      // gT[d] += dS · k[j, d]
      eachDim(1, (db) => {
        let off = at(gT, db, 16);
        const gOff = off;
        off = at(gT, db, 16);
        f.v128Load(off);
        off = at(kp, db);
        f.loadSplat(off).get(dS).f32x4Mul().f32x4Add().v128Store(gOff);
      });
      for (let i = 0; i < 4; i++) {
        f.get(dS).f32x4ExtractLane(i).f32x4Splat().set(dsI[i]);
        f.get(P).f32x4ExtractLane(i).f32x4Splat().set(pI[i]);
      }
      // dK[j] += Σ_i dS_i · Q_i; dV[j] += Σ_i P_i · O_i, 4 dims at a time
      for (const [dst, src, w] of [[dkp, qp, dsI], [dvp, op, pI]] as const) {
        eachDim(4, (db) => {
          const off = at(dst, db);
          const stOff = off;
          f.get(dst);
          if (db === null) f.get(d).i32(2).i32Shl().i32Add();
          f.v128Load(off).set(acc);
          for (let i = 0; i < 4; i++) {
            f.get(acc);
            f.get(src);
            if (db === null) f.get(d).i32(2).i32Shl().i32Add();
            if (i > 0) f.get(hd4).i32(i).i32Mul().i32Add();
            f.v128Load(db ?? 0).get(w[i]).f32x4Mul().f32x4Add().set(acc);
          }
          f.get(acc).v128Store(stOff);
        });
      }
    });
  };

  f.forLoop(hh, () => f.i32(0), () => f.get(group), 1, () => {
    f.forLoop(t0, () => f.i32(0), () => f.get(seqQp), 4, () => {
      // rows t0..t0+3 of head hh: byte offset into Q, O, dQ; L2/D vectors
      f.get(hh).get(seqQp).i32Mul().get(t0).i32Add().tee(row).i32(2).i32Shl().set(i4);
      f.get(L2).get(i4).i32Add().v128Load().set(lv);
      f.get(D).get(i4).i32Add().v128Load().set(dv);
      f.get(row).get(hd4).i32Mul().set(row);
      f.get(Q).get(row).i32Add().set(qp);
      f.get(O).get(row).i32Add().set(op);
      f.get(past).get(t0).i32Add().set(pFirst);
      // jHi = min(pFirst + 4, kvLen); jAll = min(pFirst + 1, jHi): keys < jAll are causal for all lanes
      f.get(pFirst).i32(4).i32Add().set(tmp);
      f.get(tmp).get(kvLen).get(tmp).get(kvLen).i32LtS().select().set(jHi);
      f.get(pFirst).i32(1).i32Add().set(tmp);
      f.get(tmp).get(jHi).get(tmp).get(jHi).i32LtS().select().set(jAll);
      // window: jLo = max(0, pFirst − w + 1); jMid = min(max(0, pFirst + 3 − w + 1), jAll): keys ≥ jMid are inside every lane's window
      f.i32(0).set(jLo);
      f.i32(0).set(jMid);
      f.get(window).ifThen(() => {
        f.get(pFirst).get(window).i32Sub().i32(1).i32Add().set(tmp);
        f.get(tmp).i32(0).get(tmp).i32(0).i32GtS().select().set(jLo);
        f.get(pFirst).i32(3).i32Add().get(window).i32Sub().i32(1).i32Add().set(tmp);
        f.get(tmp).i32(0).get(tmp).i32(0).i32GtS().select().set(tmp);
        f.get(tmp).get(jAll).get(tmp).get(jAll).i32LtS().select().set(jMid);
      });
      for (let i = 0; i < 4; i++) {
        f.get(pFirst).i32(i).i32Add().set(tmp);
        if (i === 0) f.get(tmp).i32x4Splat().set(pVec);
        else f.get(pVec).get(tmp).i32x4ReplaceLane(i).set(pVec);
        // lo_i = window ? max(0, p_i − window + 1) : 0
        f.get(tmp).get(window).i32Sub().i32(1).i32Add().set(tmp);
        f.get(tmp).i32(0).get(tmp).i32(0).i32GtS().get(window).i32(0).i32GtS().i32Mul().select().set(tmp);
        if (i === 0) f.get(tmp).i32x4Splat().set(loVec);
        else f.get(loVec).get(tmp).i32x4ReplaceLane(i).set(loVec);
      }
      // qT[d] = q[t0 + i, d] · scale · log2 e; oT[d] = dOut[t0 + i, d]; gT[d] = 0
      eachDim(1, (db) => {
        for (let i = 0; i < 4; i++) {
          let off = at(qT, db, 16);
          const qtOff = off + 4 * i;
          f.get(qp);
          if (db === null) f.get(d).i32(2).i32Shl().i32Add();
          if (i > 0) f.get(hd4).i32(i).i32Mul().i32Add();
          f.f32Load(db ?? 0).get(scale2).f32Mul().f32Store(qtOff);
          off = at(oT, db, 16);
          const otOff = off + 4 * i;
          f.get(op);
          if (db === null) f.get(d).i32(2).i32Shl().i32Add();
          if (i > 0) f.get(hd4).i32(i).i32Mul().i32Add();
          f.f32Load(db ?? 0).f32Store(otOff);
        }
        const off = at(gT, db, 16);
        f.f32(0).f32x4Splat().v128Store(off);
      });
      keys(() => f.get(jLo), () => f.get(jMid), true);
      keys(() => f.get(jMid), () => f.get(jAll), false);
      keys(() => f.get(jAll), () => f.get(jHi), true);
      // dQ rows: lane i of gT[d]
      f.get(dQ).get(row).i32Add().set(gp);
      eachDim(1, (db) => {
        for (let i = 0; i < 4; i++) {
          f.get(gp);
          if (db === null) f.get(d).i32(2).i32Shl().i32Add();
          if (i > 0) f.get(hd4).i32(i).i32Mul().i32Add();
          const off = at(gT, db, 16);
          f.v128Load(off).f32x4ExtractLane(i).f32Store(db ?? 0);
        }
      });
    });
  });
  return f;
}

/** siluMul(g, u, o, n): o = g · u / (1 + e^-g) for n (a multiple of 4) floats. */
function siluMulFn(): Fn {
  const f = new Fn('siluMul', [I32, I32, I32, I32]);
  const [g, u, o, n] = [0, 1, 2, 3];
  const i = f.local(I32), gv = f.local(V128), e = f.local(V128), t = f.local(V128), m = f.local(V128);
  const one = f.local(V128);
  const ec = expConstants(f);
  f.f32(1).f32x4Splat().set(one);
  f.forLoop(i, () => f.i32(0), () => f.get(n).i32(2).i32Shl(), 16, () => {
    f.get(g).get(i).i32Add().v128Load().set(gv);
    emitExp(f, ec, gv, e, t, m, 'expNeg');
    f.get(o).get(i).i32Add();
    f.get(gv).get(u).get(i).i32Add().v128Load().f32x4Mul();
    f.get(one).get(e).f32x4Add().f32x4Div();
    f.v128Store();
  });
  return f;
}

/**
 * siluMulGrad(g, u, da, dg, du, n): the backward of act = silu(g)·u for n (a multiple of 4) floats:
 * with s = 1 / (1 + e^-g), du = da·g·s and dg = da·u·s·(1 + g·(1 − s)).
 */
function siluMulGradFn(): Fn {
  const f = new Fn('siluMulGrad', [I32, I32, I32, I32, I32, I32]);
  const [g, u, da, dg, du, n] = [0, 1, 2, 3, 4, 5];
  const i = f.local(I32), gv = f.local(V128), e = f.local(V128), t = f.local(V128), m = f.local(V128);
  const one = f.local(V128), sg = f.local(V128), av = f.local(V128);
  const ec = expConstants(f);
  f.f32(1).f32x4Splat().set(one);
  f.forLoop(i, () => f.i32(0), () => f.get(n).i32(2).i32Shl(), 16, () => {
    f.get(g).get(i).i32Add().v128Load().set(gv);
    f.get(da).get(i).i32Add().v128Load().set(av);
    emitExp(f, ec, gv, e, t, m, 'expNeg');
    f.get(one).get(one).get(e).f32x4Add().f32x4Div().set(sg);
    f.get(du).get(i).i32Add();
    f.get(av).get(gv).f32x4Mul().get(sg).f32x4Mul();
    f.v128Store();
    f.get(dg).get(i).i32Add();
    f.get(av).get(u).get(i).i32Add().v128Load().f32x4Mul().get(sg).f32x4Mul();
    f.get(one).get(gv).get(one).get(sg).f32x4Sub().f32x4Mul().f32x4Add().f32x4Mul();
    f.v128Store();
  });
  return f;
}

/** add(x, y, n): x += y for n (a multiple of 4) floats. */
function addFn(): Fn {
  const f = new Fn('add', [I32, I32, I32]);
  const [x, y, n] = [0, 1, 2];
  const i = f.local(I32);
  f.forLoop(i, () => f.i32(0), () => f.get(n).i32(2).i32Shl(), 16, () => {
    f.get(x).get(i).i32Add();
    f.get(x).get(i).i32Add().v128Load().get(y).get(i).i32Add().v128Load().f32x4Add();
    f.v128Store();
  });
  return f;
}

/** rmsNorm(x, w, o, rows, C, eps): o[r] = x[r] · (1 / sqrt(mean(x[r]²) + eps)) · w, in float32. */
function rmsNormFn(): Fn {
  const f = new Fn('rmsNorm', [I32, I32, I32, I32, I32, F32]);
  const [x, w, o, rows, C, eps] = [0, 1, 2, 3, 4, 5];
  const r = f.local(I32), c = f.local(I32), xr = f.local(I32), or = f.local(I32), C4b = f.local(I32), Cb = f.local(I32);
  const ss = f.local(F32), inv = f.local(F32), acc = f.local(V128), v = f.local(V128), invv = f.local(V128);
  f.get(C).i32(2).i32Shl().set(Cb);
  f.get(C).i32(-4).i32And().i32(2).i32Shl().set(C4b);
  f.forLoop(r, () => f.i32(0), () => f.get(rows), 1, () => {
    f.get(r).get(Cb).i32Mul().tee(xr).get(o).i32Add().set(or);
    f.get(xr).get(x).i32Add().set(xr);
    f.f32(0).f32x4Splat().set(acc);
    f.forLoop(c, () => f.i32(0), () => f.get(C4b), 16, () => {
      f.get(xr).get(c).i32Add().v128Load().tee(v).get(v).f32x4Mul().get(acc).f32x4Add().set(acc);
    });
    f.get(acc).f32x4ExtractLane(0).get(acc).f32x4ExtractLane(1).f32Add();
    f.get(acc).f32x4ExtractLane(2).get(acc).f32x4ExtractLane(3).f32Add().f32Add().set(ss);
    f.forLoop(c, () => f.get(C4b), () => f.get(Cb), 4, () => {
      f.get(xr).get(c).i32Add().f32Load().tee(inv).get(inv).f32Mul().get(ss).f32Add().set(ss);
    });
    f.f32(1).get(ss).get(C).f32ConvertI32S().f32Div().get(eps).f32Add().f32Sqrt().f32Div().set(inv);
    f.get(inv).f32x4Splat().set(invv);
    f.forLoop(c, () => f.i32(0), () => f.get(C4b), 16, () => {
      f.get(or).get(c).i32Add();
      f.get(xr).get(c).i32Add().v128Load().get(invv).f32x4Mul().get(w).get(c).i32Add().v128Load().f32x4Mul();
      f.v128Store();
    });
    f.forLoop(c, () => f.get(C4b), () => f.get(Cb), 4, () => {
      f.get(or).get(c).i32Add();
      f.get(xr).get(c).i32Add().f32Load().get(inv).f32Mul().get(w).get(c).i32Add().f32Load().f32Mul();
      f.f32Store();
    });
  });
  return f;
}

/** Constants of emitExp64, hoisted into v128 locals. */
interface Exp64Constants {
  minX: number; log2e: number; magic: number; ln2Hi: number; ln2Lo: number; bias: number; coef: number[];
}

function exp64Constants(f: Fn): Exp64Constants {
  const splat = (x: number) => {
    const l = f.local(V128);
    f.f64(x).f64x2Splat().set(l);
    return l;
  };
  const bias = f.local(V128);
  f.i64(1023).i64x2Splat().set(bias);
  const coef: number[] = [];
  let fact = 1;
  for (let k = 1; k <= 12; k++) fact *= k;
  for (let k = 12; k >= 0; k--) {
    coef.push(splat(1 / fact));
    fact = k > 0 ? fact / k : 1;
  }
  return {
    // fdlibm's split of ln 2 (ln2Hi has 32 trailing zero bits, so n · ln2Hi is exact)
    minX: splat(-708), log2e: splat(Math.LOG2E), magic: splat(6755399441055744), ln2Hi: splat(6.93147180369123816490e-1),
    ln2Lo: splat(1.90821492927058770002e-10), bias, coef,
  };
}

/**
 * Emits e^x in float64 for the f64x2 in local `x` (lanes ≤ 0) into local `out`: x clamped to
 * ≥ -708, n = round(x log2 e) via the 1.5 · 2^52 rounding constant, y = x - n ln 2 (Cody-Waite,
 * two parts), e^y from its degree-12 Taylor series (|y| ≤ 0.35: error ≈ 1e-16), times 2^n
 * from exponent bits. The low 12 bits of the rounded constant's bits are n + 2^51's, so
 * ((bits + 1023) << 52) is 2^n.
 */
function emitExp64(f: Fn, c: Exp64Constants, x: number, out: number, y: number, n: number, nm: number): void {
  f.get(c.minX).get(x).f64x2Pmax().set(y);
  f.get(y).get(c.log2e).f64x2Mul().get(c.magic).f64x2Add().set(nm);
  f.get(nm).get(c.magic).f64x2Sub().set(n);
  f.get(y).get(n).get(c.ln2Hi).f64x2Mul().f64x2Sub().get(n).get(c.ln2Lo).f64x2Mul().f64x2Sub().set(y);
  f.get(c.coef[0]);
  for (let i = 1; i < c.coef.length; i++) f.get(y).f64x2Mul().get(c.coef[i]).f64x2Add();
  f.get(nm).get(c.bias).i64x2Add().i32(52).i64x2Shl().f64x2Mul().set(out);
}

/**
 * score(l, b, hasBase, rows, Vp, res): per row r of logits l [rows, Vp] (and baseline b), with
 * Vp a multiple of 4 (rows padded with a very negative finite value), writes 8 doubles at
 * res + 64 r: max l, Σ e^(l - max l), argmax l (first), and with a baseline: max b,
 * Σ e^(b - max b), Σ e^(b - max b) · (b - l), argmax b. All in float64 (f64x2 lanes), so the
 * results match the scalar reference to rounding: a KL divergence of 1e-5 keeps its digits.
 */
function scoreFn(): Fn {
  const f = new Fn('score', [I32, I32, I32, I32, I32, I32]);
  const [l, bl, hasBase, rows, Vp, res] = [0, 1, 2, 3, 4, 5];
  const r = f.local(I32), i = f.local(I32), lr = f.local(I32), br = f.local(I32), rp = f.local(I32), Vb = f.local(I32);
  const m = f.local(F32), mb = f.local(F32);
  const V = () => f.local(V128);
  const mv = V(), mbv = V(), m64 = V(), mb64 = V(), lv = V(), bv = V();
  const lLo = V(), lHi = V(), bLo = V(), bHi = V(), eLo = V(), eHi = V(), y = V(), n = V(), nm = V();
  const s = V(), sb = V(), t = V();
  const ec = exp64Constants(f);
  const maxOf = (row: number, out: number, vec: number, vec64: number) => {
    f.f32(-Infinity).f32x4Splat().set(vec);
    f.forLoop(i, () => f.i32(0), () => f.get(Vb), 16, () => {
      f.get(row).get(i).i32Add().v128Load().get(vec).f32x4Pmax().set(vec);
    });
    f.get(vec).f32x4ExtractLane(0).get(vec).f32x4ExtractLane(1).f32Max();
    f.get(vec).f32x4ExtractLane(2).get(vec).f32x4ExtractLane(3).f32Max().f32Max().set(out);
    f.get(out).f64PromoteF32().f64x2Splat().set(vec64);
  };
  /** First index of `value` in row (or Vp if absent, e.g. NaN), as f64, stored at res offset. */
  const argmaxOf = (row: number, value: number, offset: number) => {
    f.i32(0).set(i);
    f.block(() => f.loop(() => {
      f.get(i).get(Vb).i32GeS().brIf(1);
      f.get(row).get(i).i32Add().f32Load().get(value).f32Ne().i32Eqz().brIf(1);
      f.inc(i, 4).br(0);
    }));
    f.get(rp).get(i).i32(2).i32ShrS().f64ConvertI32S().f64Store(offset);
  };
  /** The 4 floats at row + i as two f64x2 (lo, hi). */
  const load64 = (row: number, lo: number, hi: number, tmp: number) => {
    f.get(row).get(i).i32Add().v128Load().tee(tmp).f64x2PromoteLow().set(lo);
    f.get(tmp).get(tmp).f32x4SwapHalves().f64x2PromoteLow().set(hi);
  };
  /** acc += e^(lo - max) + e^(hi - max); leaves the exponentials in eLo, eHi. */
  const expSum = (lo: number, hi: number, max64: number, acc: number) => {
    f.get(lo).get(max64).f64x2Sub().set(eLo);
    emitExp64(f, ec, eLo, eLo, y, n, nm);
    f.get(hi).get(max64).f64x2Sub().set(eHi);
    emitExp64(f, ec, eHi, eHi, y, n, nm);
    f.get(acc).get(eLo).f64x2Add().get(eHi).f64x2Add().set(acc);
  };
  const storeSum = (acc: number, offset: number) => {
    f.get(rp).get(acc).f64x2ExtractLane(0).get(acc).f64x2ExtractLane(1).f64Add().f64Store(offset);
  };
  const zero = (...vs: number[]) => vs.forEach((v) => f.f64(0).f64x2Splat().set(v));
  f.get(Vp).i32(2).i32Shl().set(Vb);
  f.forLoop(r, () => f.i32(0), () => f.get(rows), 1, () => {
    f.get(r).get(Vb).i32Mul().tee(lr).get(bl).i32Add().set(br);
    f.get(lr).get(l).i32Add().set(lr);
    f.get(r).i32(6).i32Shl().get(res).i32Add().set(rp);
    maxOf(lr, m, mv, m64);
    f.get(rp).get(m).f64PromoteF32().f64Store(0);
    argmaxOf(lr, m, 16);
    zero(s);
    f.get(hasBase).i32Eqz().ifThen(() => {
      f.forLoop(i, () => f.i32(0), () => f.get(Vb), 16, () => {
        load64(lr, lLo, lHi, lv);
        expSum(lLo, lHi, m64, s);
      });
    });
    f.get(hasBase).ifThen(() => {
      maxOf(br, mb, mbv, mb64);
      f.get(rp).get(mb).f64PromoteF32().f64Store(24);
      argmaxOf(br, mb, 48);
      zero(sb, t);
      f.forLoop(i, () => f.i32(0), () => f.get(Vb), 16, () => {
        load64(lr, lLo, lHi, lv);
        load64(br, bLo, bHi, bv);
        expSum(lLo, lHi, m64, s);
        expSum(bLo, bHi, mb64, sb);
        // t += e_b · (b - l)
        f.get(t).get(eLo).get(bLo).get(lLo).f64x2Sub().f64x2Mul().f64x2Add();
        f.get(eHi).get(bHi).get(lHi).f64x2Sub().f64x2Mul().f64x2Add().set(t);
      });
      storeSum(sb, 32);
      storeSum(t, 40);
    });
    storeSum(s, 8);
  });
  return f;
}

/** Head sizes with an unrolled attention function; others use the generic one. */
export const ATTENTION_HEAD_SIZES = [4, 8, 16, 32, 64, 128];
/** The same for attnGrad, whose unrolled body grows much faster with the head size. */
export const ATTENTION_GRAD_HEAD_SIZES = [4, 8, 16];

let cached: Uint8Array | undefined;

/**
 * The module binary (exports matmul, pack, attention, attention<hd>, lseAttention, lseAttention<hd>,
 * attnGrad, attnGrad<hd>, siluMul, siluMulGrad, add, rmsNorm, score; imports env.mem).
 */
export function simdModuleBytes(): Uint8Array {
  cached ??= buildModule([
    matmulFn(MATMUL_ROWS, MATMUL_COLS), packFn(MATMUL_COLS), attentionFn(null), ...ATTENTION_HEAD_SIZES.map((hd) => attentionFn(hd)),
    attentionFn(null, true), ...ATTENTION_HEAD_SIZES.map((hd) => attentionFn(hd, true)),
    attnGradFn(null), ...ATTENTION_GRAD_HEAD_SIZES.map((hd) => attnGradFn(hd)), siluMulFn(), siluMulGradFn(), addFn(), rmsNormFn(), scoreFn(),
  ]);
  return cached;
}
