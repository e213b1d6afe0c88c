// The CPU kernels: plain functions over Float32Arrays, each computing a range of its op's work
// units so that the op can be split across threads.
//
// Every function here is ALSO compiled into the worker threads from its source text
// (`fn.toString()`, see pool.ts), so each must be self-contained: it may call only the other
// functions of KERNEL_FUNCTIONS, by name, and globals (Math). No imports, no closures over module
// state, no nested function declarations. That keeps one copy of each kernel, working the same
// from dist/ (compiled JS) and under vitest (TS transformed on the fly).
//
// Arrays are whole storages (`CpuTensor.base`) with element offsets passed beside them.
//
// Two families: the plain JS kernels (matmulKernel, attentionKernel, …: the reference, every op,
// accumulating in JS doubles) and the simd*Kernel glue that copies operands into a thread's
// WebAssembly memory and runs the f32x4 kernels of wasm/simd-kernels.ts (the fast path).

/** Op codes of the kernels a worker can run (see `runKernel`). */
export const OP_MATMUL = 1;
export const OP_ATTENTION = 2;
export const OP_RMSNORM = 3;
export const OP_LAYERNORM = 4;
export const OP_SILUMUL = 5;
export const OP_GELU = 6;
export const OP_ADD = 7;
export const OP_SCORE = 8;
export const OP_MATMUL_SIMD = 9;
export const OP_ATTENTION_SIMD = 10;
export const OP_SILUMUL_SIMD = 11;
export const OP_ADD_SIMD = 12;
export const OP_RMSNORM_SIMD = 13;
export const OP_SCORE_SIMD = 14;
/** Training's attention kernels (CpuTrainingOps). */
export const OP_ATTENTION_LSE = 15;
export const OP_ATTENTION_BACKWARD = 16;
export const OP_ATTENTION_BACKWARD_SIMD = 17;
export const OP_SILUMUL_BACKWARD_SIMD = 18;

// --- JS kernels (the reference) ---------------------------------------------------------------

/**
 * out[r, c] = Σ_k x[r, k] · w[c, k] (+ bias[c]) for rows [r0, r1) and columns [c0, c1).
 * 4×4 register blocks: per k, 4 loads of x and 4 of w feed 16 multiply-adds.
 */
export function matmulKernel(
  o: Float32Array, oOff: number, x: Float32Array, xOff: number, w: Float32Array, wOff: number,
  b: Float32Array, bOff: number, hasBias: number, N: number, K: number,
  r0: number, r1: number, c0: number, c1: number,
): void {
  let r = r0;
  for (; r + 4 <= r1; r += 4) {
    const xa = xOff + r * K;
    const xb = xa + K;
    const xc = xb + K;
    const xd = xc + K;
    let c = c0;
    for (; c + 4 <= c1; c += 4) {
      const wa = wOff + c * K;
      const wb = wa + K;
      const wc = wb + K;
      const wd = wc + K;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
      let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
      let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
      for (let k = 0; k < K; k++) {
        const x0 = x[xa + k], x1 = x[xb + k], x2 = x[xc + k], x3 = x[xd + k];
        const w0 = w[wa + k], w1 = w[wb + k], w2 = w[wc + k], w3 = w[wd + k];
        s00 += x0 * w0; s01 += x0 * w1; s02 += x0 * w2; s03 += x0 * w3;
        s10 += x1 * w0; s11 += x1 * w1; s12 += x1 * w2; s13 += x1 * w3;
        s20 += x2 * w0; s21 += x2 * w1; s22 += x2 * w2; s23 += x2 * w3;
        s30 += x3 * w0; s31 += x3 * w1; s32 += x3 * w2; s33 += x3 * w3;
      }
      if (hasBias !== 0) {
        const b0 = b[bOff + c], b1 = b[bOff + c + 1], b2 = b[bOff + c + 2], b3 = b[bOff + c + 3];
        s00 += b0; s01 += b1; s02 += b2; s03 += b3;
        s10 += b0; s11 += b1; s12 += b2; s13 += b3;
        s20 += b0; s21 += b1; s22 += b2; s23 += b3;
        s30 += b0; s31 += b1; s32 += b2; s33 += b3;
      }
      const oa = oOff + r * N + c;
      o[oa] = s00; o[oa + 1] = s01; o[oa + 2] = s02; o[oa + 3] = s03;
      const ob = oa + N;
      o[ob] = s10; o[ob + 1] = s11; o[ob + 2] = s12; o[ob + 3] = s13;
      const oc = ob + N;
      o[oc] = s20; o[oc + 1] = s21; o[oc + 2] = s22; o[oc + 3] = s23;
      const od = oc + N;
      o[od] = s30; o[od + 1] = s31; o[od + 2] = s32; o[od + 3] = s33;
    }
    for (; c < c1; c++) {
      const wa = wOff + c * K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < K; k++) {
        const wv = w[wa + k];
        s0 += x[xa + k] * wv; s1 += x[xb + k] * wv; s2 += x[xc + k] * wv; s3 += x[xd + k] * wv;
      }
      const bv = hasBias !== 0 ? b[bOff + c] : 0;
      const oa = oOff + r * N + c;
      o[oa] = s0 + bv; o[oa + N] = s1 + bv; o[oa + 2 * N] = s2 + bv; o[oa + 3 * N] = s3 + bv;
    }
  }
  for (; r < r1; r++) {
    const xa = xOff + r * K;
    let c = c0;
    for (; c + 4 <= c1; c += 4) {
      const wa = wOff + c * K;
      const wb = wa + K;
      const wc = wb + K;
      const wd = wc + K;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let k = 0; k < K; k++) {
        const xv = x[xa + k];
        s0 += xv * w[wa + k]; s1 += xv * w[wb + k]; s2 += xv * w[wc + k]; s3 += xv * w[wd + k];
      }
      const oa = oOff + r * N + c;
      if (hasBias !== 0) {
        s0 += b[bOff + c]; s1 += b[bOff + c + 1]; s2 += b[bOff + c + 2]; s3 += b[bOff + c + 3];
      }
      o[oa] = s0; o[oa + 1] = s1; o[oa + 2] = s2; o[oa + 3] = s3;
    }
    for (; c < c1; c++) {
      const wa = wOff + c * K;
      let s = 0;
      for (let k = 0; k < K; k++) s += x[xa + k] * w[wa + k];
      o[oOff + r * N + c] = hasBias !== 0 ? s + b[bOff + c] : s;
    }
  }
}

/**
 * Causal GQA attention for work units [u0, u1). A unit is 4 consecutive queries of one
 * (sequence, head): unit = ((b * nHead) + h) * ceil(seqQ / 4) + block. The 4 queries share each
 * key/value row load. `sc` is scratch of at least 4 * kvLen floats.
 */
export function attentionKernel(
  o: Float32Array, oOff: number, q: Float32Array, qOff: number, k: Float32Array, kOff: number,
  v: Float32Array, vOff: number, sc: Float32Array,
  seqQ: number, kvLen: number, kvStride: number, nHead: number, nKvHead: number, hd: number,
  scale: number, window: number, u0: number, u1: number,
): void {
  const qBlocks = (seqQ + 3) >> 2;
  const qRow = nHead * hd;
  const kvRow = nKvHead * hd;
  const group = nHead / nKvHead;
  const past = kvLen - seqQ;
  for (let u = u0; u < u1; u++) {
    const blk = u % qBlocks;
    const bh = (u - blk) / qBlocks;
    const h = bh % nHead;
    const bIdx = (bh - h) / nHead;
    const g = Math.floor(h / group);
    const t0 = blk * 4;
    const nq = Math.min(4, seqQ - t0);
    // Query i (0..nq-1) at position p_i = past + t0 + i sees keys [lo_i, p_i].
    const pFirst = past + t0;
    const pLast = pFirst + nq - 1;
    const jLo = window > 0 ? Math.max(0, pFirst - window + 1) : 0;
    const jHi = pLast + 1;
    const kBase = kOff + bIdx * kvStride * kvRow + g * hd;
    const vBase = vOff + bIdx * kvStride * kvRow + g * hd;
    const qa = qOff + (bIdx * seqQ + t0) * qRow + h * hd;
    // Queries past the end of the block reuse the last one (their results are not stored).
    const qb = nq > 1 ? qa + qRow : qa;
    const qc = nq > 2 ? qa + 2 * qRow : qb;
    const qd = nq > 3 ? qa + 3 * qRow : qc;
    const s1 = kvLen, s2 = 2 * kvLen, s3 = 3 * kvLen;
    for (let j = jLo; j < jHi; j++) {
      const kr = kBase + j * kvRow;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let d = 0; d < hd; d++) {
        const kv = k[kr + d];
        a0 += q[qa + d] * kv; a1 += q[qb + d] * kv; a2 += q[qc + d] * kv; a3 += q[qd + d] * kv;
      }
      sc[j] = a0 * scale; sc[s1 + j] = a1 * scale; sc[s2 + j] = a2 * scale; sc[s3 + j] = a3 * scale;
    }
    // Softmax per query over its own keys; keys outside its range get probability 0.
    for (let i = 0; i < 4; i++) {
      const row = i * kvLen;
      const p = pFirst + (i < nq ? i : nq - 1);
      const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
      let m = -Infinity;
      for (let j = lo; j <= p; j++) if (sc[row + j] > m) m = sc[row + j];
      let sum = 0;
      for (let j = lo; j <= p; j++) {
        const e = Math.exp(sc[row + j] - m);
        sc[row + j] = e;
        sum += e;
      }
      const inv = 1 / sum;
      for (let j = lo; j <= p; j++) sc[row + j] *= inv;
      for (let j = jLo; j < lo; j++) sc[row + j] = 0;
      for (let j = p + 1; j < jHi; j++) sc[row + j] = 0;
    }
    const oa = oOff + (bIdx * seqQ + t0) * qRow + h * hd;
    for (let d = 0; d < hd; d++) {
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      let vr = vBase + jLo * kvRow + d;
      for (let j = jLo; j < jHi; j++, vr += kvRow) {
        const vv = v[vr];
        a0 += sc[j] * vv; a1 += sc[s1 + j] * vv; a2 += sc[s2 + j] * vv; a3 += sc[s3 + j] * vv;
      }
      o[oa + d] = a0;
      if (nq > 1) o[oa + qRow + d] = a1;
      if (nq > 2) o[oa + 2 * qRow + d] = a2;
      if (nq > 3) o[oa + 3 * qRow + d] = a3;
    }
  }
}

/** out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, rows [r0, r1). */
export function rmsNormKernel(
  o: Float32Array, oOff: number, x: Float32Array, xOff: number, w: Float32Array, wOff: number,
  C: number, eps: number, r0: number, r1: number,
): void {
  for (let r = r0; r < r1; r++) {
    const xa = xOff + r * C;
    const oa = oOff + r * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[xa + c] * x[xa + c];
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) o[oa + c] = x[xa + c] * inv * w[wOff + c];
  }
}

/** out[r] = (x[r] - mean) / sqrt(var + eps) * weight + bias (biased variance), rows [r0, r1). */
export function layerNormKernel(
  o: Float32Array, oOff: number, x: Float32Array, xOff: number, w: Float32Array, wOff: number,
  b: Float32Array, bOff: number, C: number, eps: number, r0: number, r1: number,
): void {
  for (let r = r0; r < r1; r++) {
    const xa = xOff + r * C;
    const oa = oOff + r * C;
    let s = 0;
    for (let c = 0; c < C; c++) s += x[xa + c];
    const mean = s / C;
    let ss = 0;
    for (let c = 0; c < C; c++) {
      const d = x[xa + c] - mean;
      ss += d * d;
    }
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) o[oa + c] = (x[xa + c] - mean) * inv * w[wOff + c] + b[bOff + c];
  }
}

/** out = silu(gate) * up = gate / (1 + e^-gate) * up, elements [e0, e1). */
export function siluMulKernel(
  o: Float32Array, oOff: number, g: Float32Array, gOff: number, u: Float32Array, uOff: number,
  e0: number, e1: number,
): void {
  for (let i = e0; i < e1; i++) {
    const gv = g[gOff + i];
    o[oOff + i] = (gv / (1 + Math.exp(-gv))) * u[uOff + i];
  }
}

/** out = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), elements [e0, e1). */
export function geluTanhKernel(o: Float32Array, oOff: number, x: Float32Array, xOff: number, e0: number, e1: number): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = e0; i < e1; i++) {
    const xv = x[xOff + i];
    o[oOff + i] = 0.5 * xv * (1 + Math.tanh(c * (xv + 0.044715 * xv * xv * xv)));
  }
}

/** x += y, elements [e0, e1). */
export function addKernel(x: Float32Array, xOff: number, y: Float32Array, yOff: number, e0: number, e1: number): void {
  for (let i = e0; i < e1; i++) x[xOff + i] += y[yOff + i];
}

/**
 * Scores rows [r0, r1) of logits [rows, V] (see Device.scoreLogits). Writes per row, into res at
 * resOff: res[r] = nll, res[rows + r] = kld, res[2 rows + r] = argmax, res[3 rows + r] = top1.
 * KL(b ‖ m) = Σ p_b (b - m) - lse_b + lse_m with p_b = e^(b - max_b) / s_b, so one pass after the
 * maxima gives both log-sum-exps and the KL sum. Rows with target < 0 score 0 (argmax still set).
 */
export function scoreKernel(
  l: Float32Array, lOff: number, bl: Float32Array, bOff: number, hasBase: number,
  tg: Int32Array, tOff: number, res: Float64Array, resOff: number, rows: number, V: number,
  r0: number, r1: number,
): void {
  for (let r = r0; r < r1; r++) {
    const la = lOff + r * V;
    let m = l[la];
    let am = 0;
    for (let i = 1; i < V; i++) {
      if (l[la + i] > m) {
        m = l[la + i];
        am = i;
      }
    }
    res[resOff + 2 * rows + r] = am;
    const target = tg[tOff + r];
    if (target < 0) {
      res[resOff + r] = 0;
      res[resOff + rows + r] = 0;
      res[resOff + 3 * rows + r] = 0;
      continue;
    }
    if (hasBase === 0) {
      let s = 0;
      for (let i = 0; i < V; i++) s += Math.exp(l[la + i] - m);
      res[resOff + r] = m + Math.log(s) - l[la + target];
      continue;
    }
    const ba = bOff + r * V;
    let mb = bl[ba];
    let amb = 0;
    for (let i = 1; i < V; i++) {
      if (bl[ba + i] > mb) {
        mb = bl[ba + i];
        amb = i;
      }
    }
    let s = 0, sb = 0, t = 0;
    for (let i = 0; i < V; i++) {
      const lv = l[la + i];
      const bv = bl[ba + i];
      s += Math.exp(lv - m);
      const eb = Math.exp(bv - mb);
      sb += eb;
      t += eb * (bv - lv);
    }
    const lse = m + Math.log(s);
    const lseB = mb + Math.log(sb);
    res[resOff + r] = lse - l[la + target];
    const kl = t / sb - lseB + lse;
    res[resOff + rows + r] = kl > 0 ? kl : 0;
    res[resOff + 3 * rows + r] = am === amb ? 1 : 0;
  }
}

// --- SIMD glue: operands in and out of the thread's WebAssembly memory -----------------------

interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

/** One thread's instance of the SIMD module (simd-kernels.ts) and its memory. */
export interface SimdContext {
  mem: WasmMemory;
  f32: Float32Array;
  matmul: (x: number, wp: number, bias: number, o: number, M: number, N: number, K: number) => void;
  pack: (w: number, wp: number, Np: number, K: number) => void;
  /** attention functions by head size; key 0 is the generic one. */
  attention: Map<number, (...args: number[]) => void>;
  /** The same with softmax statistics (lseAttention…), for training. */
  lseAttention: Map<number, (...args: number[]) => void>;
  /** Attention backward functions (attnGrad…) by head size; key 0 is the generic one. */
  attnGrad: Map<number, (...args: number[]) => void>;
  siluMul: (g: number, u: number, o: number, n: number) => void;
  siluMulGrad: (g: number, u: number, da: number, dg: number, du: number, n: number) => void;
  add: (x: number, y: number, n: number) => void;
  rmsNorm: (x: number, w: number, o: number, rows: number, C: number, eps: number) => void;
  score: (l: number, b: number, hasBase: number, rows: number, Vp: number, res: number) => void;
}

/** Instantiates the SIMD module with a fresh memory. */
export function createSimdContext(bytes: Uint8Array): SimdContext {
  const wa = (globalThis as unknown as {
    WebAssembly: {
      Memory: new (d: { initial: number; maximum: number }) => WasmMemory;
      Module: new (b: Uint8Array) => object;
      Instance: new (m: object, imports: object) => { exports: Record<string, unknown> };
    };
  }).WebAssembly;
  const mem = new wa.Memory({ initial: 16, maximum: 65536 });
  const inst = new wa.Instance(new wa.Module(bytes), { env: { mem } });
  const attention = new Map<number, (...args: number[]) => void>();
  const lseAttention = new Map<number, (...args: number[]) => void>();
  const attnGrad = new Map<number, (...args: number[]) => void>();
  for (const name of Object.keys(inst.exports)) {
    if (name.startsWith('attention')) attention.set(Number(name.slice(9)), inst.exports[name] as (...args: number[]) => void);
    if (name.startsWith('lseAttention')) lseAttention.set(Number(name.slice(12)), inst.exports[name] as (...args: number[]) => void);
    if (name.startsWith('attnGrad')) attnGrad.set(Number(name.slice(8)), inst.exports[name] as (...args: number[]) => void);
  }
  const ex = inst.exports;
  return {
    mem, f32: new Float32Array(mem.buffer), attention, lseAttention, attnGrad, matmul: ex.matmul as SimdContext['matmul'],
    pack: ex.pack as SimdContext['pack'],
    siluMul: ex.siluMul as SimdContext['siluMul'], siluMulGrad: ex.siluMulGrad as SimdContext['siluMulGrad'], add: ex.add as SimdContext['add'], rmsNorm: ex.rmsNorm as SimdContext['rmsNorm'],
    score: ex.score as SimdContext['score'],
  };
}

/** Grows the context's memory to at least `floats` floats; returns its current float view. */
export function simdReserve(ctx: SimdContext, floats: number): Float32Array {
  const bytes = floats * 4;
  if (bytes > 4 * 65536 * 65536 - 65536) throw new Error(`cpu simd: ${bytes} bytes do not fit a wasm memory`);
  const have = ctx.mem.buffer.byteLength;
  if (have < bytes) ctx.mem.grow(Math.ceil((bytes - have) / 65536));
  if (ctx.f32.buffer !== ctx.mem.buffer) ctx.f32 = new Float32Array(ctx.mem.buffer);
  return ctx.f32;
}

/**
 * matmulKernel's rows [r0, r1), all columns, through the SIMD module: x rows are copied in
 * (padded to the row block with zeros); then, per chunk of columns (at most ~256K floats of
 * w, so wasm memory stays bounded for a 128K vocabulary), w is packed into column blocks,
 * the kernel runs and the chunk of the result is copied out.
 */
export function simdMatmulKernel(
  ctx: SimdContext, o: Float32Array, oOff: number, x: Float32Array, xOff: number, w: Float32Array, wOff: number,
  b: Float32Array, bOff: number, hasBias: number, N: number, K: number, r0: number, r1: number,
): void {
  const R = 4; // = MATMUL_ROWS of simd-kernels.ts
  const W = 8; // = MATMUL_COLS of simd-kernels.ts
  const rows = r1 - r0;
  if (rows <= 0) return;
  const Mp = Math.ceil(rows / R) * R;
  const Nc = Math.min(Math.ceil(N / W) * W, Math.max(W, Math.floor(262144 / K / W) * W));
  const xP = 0;
  const rawP = (xP + Mp * K + 3) & ~3;
  const wP = (rawP + Nc * K + 3) & ~3;
  const bP = (wP + Nc * K + 3) & ~3;
  const oP = bP + Nc;
  const mem = simdReserve(ctx, oP + Mp * Nc);
  mem.set(x.subarray(xOff + r0 * K, xOff + r1 * K), xP);
  mem.fill(0, xP + rows * K, xP + Mp * K);
  for (let c0 = 0; c0 < N; c0 += Nc) {
    const nc = Math.min(Nc, N - c0);
    const ncp = Math.ceil(nc / W) * W;
    mem.set(w.subarray(wOff + c0 * K, wOff + (c0 + nc) * K), rawP);
    mem.fill(0, rawP + nc * K, rawP + ncp * K);
    ctx.pack(rawP * 4, wP * 4, ncp, K);
    for (let c = 0; c < ncp; c++) mem[bP + c] = hasBias !== 0 && c < nc ? b[bOff + c0 + c] : 0;
    ctx.matmul(xP * 4, wP * 4, bP * 4, oP * 4, Mp, nc, K);
    if (nc === N) {
      o.set(mem.subarray(oP, oP + rows * N), oOff + r0 * N);
    } else {
      for (let r = 0; r < rows; r++) o.set(mem.subarray(oP + r * nc, oP + r * nc + nc), oOff + (r0 + r) * N + c0);
    }
  }
}

/**
 * attentionKernel's units [u0, u1) through the SIMD module (headDim a multiple of 4): copies
 * the q/k/v rows of the sequences those units touch, runs, and scatters the compact outputs.
 * withLse (training): also lse[lOff + row·nHead + h] = the log-sum-exp of each query's scores.
 */
export function simdAttentionKernel(
  ctx: SimdContext, o: Float32Array, oOff: number, q: Float32Array, qOff: number, k: Float32Array, kOff: number,
  v: Float32Array, vOff: number,
  seqQ: number, kvLen: number, kvStride: number, nHead: number, nKvHead: number, hd: number,
  scale: number, window: number, u0: number, u1: number, lse: Float32Array, lOff: number, withLse: number,
): void {
  if (u0 >= u1) return;
  const qBlocks = (seqQ + 3) >> 2;
  const perSeq = nHead * qBlocks;
  const bStart = Math.floor(u0 / perSeq);
  const bEnd = Math.floor((u1 - 1) / perSeq) + 1;
  const qRow = nHead * hd;
  const kvRow = nKvHead * hd;
  const qN = (bEnd - bStart) * seqQ * qRow;
  const kvN = ((bEnd - 1 - bStart) * kvStride + kvLen) * kvRow;
  const qP = 0;
  const kP = (qP + qN + 3) & ~3;
  const vP = (kP + kvN + 3) & ~3;
  const sP = (vP + kvN + 3) & ~3;
  const tP = sP + 4 * kvLen;
  const oP = tP + 4 * hd;
  const stP = oP + (u1 - u0) * 4 * hd;
  const mem = simdReserve(ctx, stP + (withLse !== 0 ? (u1 - u0) * 8 : 0));
  mem.set(q.subarray(qOff + bStart * seqQ * qRow, qOff + bStart * seqQ * qRow + qN), qP);
  mem.set(k.subarray(kOff + bStart * kvStride * kvRow, kOff + bStart * kvStride * kvRow + kvN), kP);
  mem.set(v.subarray(vOff + bStart * kvStride * kvRow, vOff + bStart * kvStride * kvRow + kvN), vP);
  const fns = withLse !== 0 ? ctx.lseAttention : ctx.attention;
  const fn = fns.get(hd) ?? fns.get(0)!;
  fn(qP * 4, kP * 4, vP * 4, oP * 4, sP * 4, tP * 4, u0, u1, bStart, seqQ, kvLen, kvStride, nHead, nKvHead, hd,
    scale, window, stP * 4);
  const out = ctx.f32;
  for (let u = u0; u < u1; u++) {
    const blk = u % qBlocks;
    const bh = (u - blk) / qBlocks;
    const h = bh % nHead;
    const bIdx = (bh - h) / nHead;
    const t0 = blk * 4;
    const nq = Math.min(4, seqQ - t0);
    for (let i = 0; i < nq; i++) {
      const dst = oOff + (bIdx * seqQ + t0 + i) * qRow + h * hd;
      const src = oP + ((u - u0) * 4 + i) * hd;
      for (let d = 0; d < hd; d++) o[dst + d] = out[src + d];
      if (withLse !== 0) {
        const stat = stP + (u - u0) * 8;
        lse[lOff + (bIdx * seqQ + t0 + i) * nHead + h] = out[stat + i] * Math.LN2 + Math.log(out[stat + 4 + i]);
      }
    }
  }
}

/**
 * attentionBackwardUnits through the SIMD module (headDim a multiple of 4, see attnGrad in
 * wasm/simd-kernels.ts): per unit, packs its keys/values and its heads' q, dOut, lse·log2 e and D
 * (rows padded to a multiple of 4 with probability-0 rows), runs, and scatters dq, dk, dv.
 */
export function simdAttentionBackwardKernel(
  ctx: SimdContext, dq: Float32Array, dqOff: number, dkv: Float32Array, dkOff: number, dvOff: number, dOut: Float32Array, doOff: number,
  dl: Float32Array, dOffD: number, lseOff: number, q: Float32Array, qOff: number, kv: Float32Array, kOff: number, vOff: number,
  seqQ: number, kvLen: number, kvStride: number, nHead: number, nKvHead: number, hd: number,
  scale: number, window: number, u0: number, u1: number,
): void {
  const qRow = nHead * hd, kvRow = nKvHead * hd, group = nHead / nKvHead, past = kvLen - seqQ;
  const seqQp = (seqQ + 3) & ~3;
  const KP = 0, VP = KP + kvLen * hd, QP = VP + kvLen * hd, OP = QP + group * seqQp * hd, LP = OP + group * seqQp * hd;
  const DP = LP + group * seqQp, GQ = DP + group * seqQp, DK = GQ + group * seqQp * hd, DV = DK + kvLen * hd;
  const QT = DV + kvLen * hd, OT = QT + 4 * hd, GT = OT + 4 * hd;
  const mem = simdReserve(ctx, GT + 4 * hd);
  const fn = ctx.attnGrad.get(hd) ?? ctx.attnGrad.get(0)!;
  for (let u = u0; u < u1; u++) {
    const g = u % nKvHead;
    const b = (u - g) / nKvHead;
    // Rows are short (hd floats): plain loops beat subarray copies.
    for (let j = 0; j < kvLen; j++) {
      const src = (b * kvStride + j) * kvRow + g * hd;
      for (let d = 0; d < hd; d++) {
        mem[KP + j * hd + d] = kv[kOff + src + d];
        mem[VP + j * hd + d] = kv[vOff + src + d];
      }
    }
    for (let hh = 0; hh < group; hh++) {
      const h = g * group + hh;
      for (let t = 0; t < seqQp; t++) {
        const at = hh * seqQp + t;
        if (t < seqQ) {
          const src = (b * seqQ + t) * qRow + h * hd;
          for (let d = 0; d < hd; d++) {
            mem[QP + at * hd + d] = q[qOff + src + d];
            mem[OP + at * hd + d] = dOut[doOff + src + d];
          }
          const r = (b * seqQ + t) * nHead + h;
          mem[LP + at] = dl[lseOff + r] * Math.LOG2E;
          mem[DP + at] = dl[dOffD + r];
        } else {
          mem.fill(0, QP + at * hd, QP + (at + 1) * hd);
          mem.fill(0, OP + at * hd, OP + (at + 1) * hd);
          mem[LP + at] = Infinity;
          mem[DP + at] = 0;
        }
      }
    }
    mem.fill(0, DK, DV + kvLen * hd);
    fn(KP * 4, VP * 4, QP * 4, OP * 4, LP * 4, DP * 4, GQ * 4, DK * 4, DV * 4, QT * 4, OT * 4, GT * 4,
      group, seqQp, kvLen, past, hd, scale, window);
    for (let hh = 0; hh < group; hh++) {
      const h = g * group + hh;
      for (let t = 0; t < seqQ; t++) {
        const from = GQ + (hh * seqQp + t) * hd;
        const to = dqOff + (b * seqQ + t) * qRow + h * hd;
        for (let d = 0; d < hd; d++) dq[to + d] = mem[from + d];
      }
    }
    for (let j = 0; j < kvStride; j++) {
      const dst = (b * kvStride + j) * kvRow + g * hd;
      for (let d = 0; d < hd; d++) {
        dkv[dkOff + dst + d] = j < kvLen ? mem[DK + j * hd + d] : 0;
        dkv[dvOff + dst + d] = j < kvLen ? mem[DV + j * hd + d] : 0;
      }
    }
  }
}

// The elementwise SIMD kernels copy 16384 floats per operand per step (64 KiB: stays in L2).

/** siluMulKernel through the SIMD module, in chunks. */
export function simdSiluMulKernel(
  ctx: SimdContext, o: Float32Array, oOff: number, g: Float32Array, gOff: number, u: Float32Array, uOff: number,
  e0: number, e1: number,
): void {
  const CH = 16384;
  const mem = simdReserve(ctx, 3 * CH);
  for (let s = e0; s < e1; s += CH) {
    const n = Math.min(CH, e1 - s);
    mem.set(g.subarray(gOff + s, gOff + s + n), 0);
    mem.set(u.subarray(uOff + s, uOff + s + n), CH);
    ctx.siluMul(0, CH * 4, 2 * CH * 4, (n + 3) & ~3);
    o.set(mem.subarray(2 * CH, 2 * CH + n), oOff + s);
  }
}

/** The backward of siluMul through the SIMD module (siluMulGrad), elements [e0, e1), in chunks. */
export function simdSiluMulBackwardKernel(
  ctx: SimdContext, dg: Float32Array, dgOff: number, du: Float32Array, duOff: number, da: Float32Array, daOff: number,
  g: Float32Array, gOff: number, u: Float32Array, uOff: number, e0: number, e1: number,
): void {
  const CH = 8192;
  const mem = simdReserve(ctx, 5 * CH);
  for (let s = e0; s < e1; s += CH) {
    const n = Math.min(CH, e1 - s);
    mem.set(g.subarray(gOff + s, gOff + s + n), 0);
    mem.set(u.subarray(uOff + s, uOff + s + n), CH);
    mem.set(da.subarray(daOff + s, daOff + s + n), 2 * CH);
    ctx.siluMulGrad(0, CH * 4, 2 * CH * 4, 3 * CH * 4, 4 * CH * 4, (n + 3) & ~3);
    dg.set(mem.subarray(3 * CH, 3 * CH + n), dgOff + s);
    du.set(mem.subarray(4 * CH, 4 * CH + n), duOff + s);
  }
}

/** addKernel through the SIMD module, in chunks. */
export function simdAddKernel(ctx: SimdContext, x: Float32Array, xOff: number, y: Float32Array, yOff: number, e0: number, e1: number): void {
  const CH = 16384;
  const mem = simdReserve(ctx, 2 * CH);
  for (let s = e0; s < e1; s += CH) {
    const n = Math.min(CH, e1 - s);
    mem.set(x.subarray(xOff + s, xOff + s + n), 0);
    mem.set(y.subarray(yOff + s, yOff + s + n), CH);
    ctx.add(0, CH * 4, (n + 3) & ~3);
    x.set(mem.subarray(0, n), xOff + s);
  }
}

/** rmsNormKernel through the SIMD module (float32 sums, as HF Llama), in chunks of rows. */
export function simdRmsNormKernel(
  ctx: SimdContext, o: Float32Array, oOff: number, x: Float32Array, xOff: number, w: Float32Array, wOff: number,
  C: number, eps: number, r0: number, r1: number,
): void {
  const rowsPerChunk = Math.max(1, Math.floor(16384 / C));
  const span = rowsPerChunk * C;
  const wP = 0;
  const xP = (C + 3) & ~3;
  const oP = xP + ((span + 3) & ~3);
  const mem = simdReserve(ctx, oP + span);
  mem.set(w.subarray(wOff, wOff + C), wP);
  for (let r = r0; r < r1; r += rowsPerChunk) {
    const rows = Math.min(rowsPerChunk, r1 - r);
    mem.set(x.subarray(xOff + r * C, xOff + (r + rows) * C), xP);
    ctx.rmsNorm(xP * 4, wP * 4, oP * 4, rows, C, eps);
    o.set(mem.subarray(oP, oP + rows * C), oOff + r * C);
  }
}

/**
 * scoreKernel through the SIMD module: maxima, argmaxes and the sums of exponentials per row
 * come from wasm (f32 exponentials, f64 sums); logs and the per-row results are formed here.
 */
export function simdScoreKernel(
  ctx: SimdContext, l: Float32Array, lOff: number, bl: Float32Array, bOff: number, hasBase: number,
  tg: Int32Array, tOff: number, res: Float64Array, resOff: number, rows: number, V: number,
  r0: number, r1: number,
): void {
  const Vp = (V + 3) & ~3;
  const per = Math.max(1, Math.floor(65536 / Vp));
  const lP = 0;
  const bP = lP + per * Vp;
  const rP = bP + (hasBase !== 0 ? per * Vp : 0);
  const mem = simdReserve(ctx, rP + per * 16);
  for (let r = r0; r < r1; r += per) {
    const n = Math.min(per, r1 - r);
    for (let i = 0; i < n; i++) {
      const src = (r + i) * V;
      mem.set(l.subarray(lOff + src, lOff + src + V), lP + i * Vp);
      if (Vp > V) mem.fill(-1e30, lP + i * Vp + V, lP + (i + 1) * Vp);
      if (hasBase !== 0) {
        mem.set(bl.subarray(bOff + src, bOff + src + V), bP + i * Vp);
        if (Vp > V) mem.fill(-1e30, bP + i * Vp + V, bP + (i + 1) * Vp);
      }
    }
    ctx.score(lP * 4, bP * 4, hasBase, n, Vp, rP * 4);
    const out = new Float64Array(ctx.mem.buffer, rP * 4, n * 8);
    for (let i = 0; i < n; i++) {
      const row = r + i;
      const o = i * 8;
      res[resOff + 2 * rows + row] = out[o + 2];
      const target = tg[tOff + row];
      if (target < 0) {
        res[resOff + row] = 0;
        res[resOff + rows + row] = 0;
        res[resOff + 3 * rows + row] = 0;
        continue;
      }
      const lse = out[o] + Math.log(out[o + 1]);
      res[resOff + row] = lse - l[lOff + row * V + target];
      if (hasBase !== 0) {
        const kl = out[o + 5] / out[o + 4] - (out[o + 3] + Math.log(out[o + 4])) + lse;
        res[resOff + rows + row] = kl > 0 ? kl : 0;
        res[resOff + 3 * rows + row] = out[o + 2] === out[o + 6] ? 1 : 0;
      }
    }
  }
}

// --- training: attention log-sum-exps and backward (CpuTrainingOps) ----------------------------
//
// A work unit is one (sequence b, KV group g): u = b·nKvHead + g. It covers every query head of the
// group, so the gradients of the group's keys and values are summed by one thread in a fixed order
// (results never depend on how units are split across threads). The unit's keys (and values) are
// first copied into contiguous float64 scratch; queries go in blocks of 4 that share each key's loads.
// Query t sits at position kvLen − seqQ + t and sees keys (p − window, p] (window 0: all ≤ p).

/** lse[(b·seqQ + t)·nHead + h] = log Σ_j exp(scale·q·k_j) over the keys query t sees, units [u0, u1). */
export function attentionLseUnits(
  lse: Float32Array, lOff: number, q: Float32Array, qOff: number, k: Float32Array, kOff: number,
  seqQ: number, kvLen: number, kvStride: number, nHead: number, nKvHead: number, hd: number,
  scale: number, window: number, u0: number, u1: number,
): void {
  const qRow = nHead * hd, kvRow = nKvHead * hd, group = nHead / nKvHead, past = kvLen - seqQ;
  const kp = new Float64Array(kvLen * hd);
  const qv = new Float64Array(4 * hd);
  const s = new Float64Array(4 * kvLen);
  const h1 = hd, h2 = 2 * hd, h3 = 3 * hd;
  for (let u = u0; u < u1; u++) {
    const g = u % nKvHead;
    const b = (u - g) / nKvHead;
    for (let j = 0; j < kvLen; j++) {
      const src = kOff + (b * kvStride + j) * kvRow + g * hd;
      for (let d = 0; d < hd; d++) kp[j * hd + d] = k[src + d];
    }
    for (let h = g * group; h < (g + 1) * group; h++) {
      for (let t0 = 0; t0 < seqQ; t0 += 4) {
        const nq = Math.min(4, seqQ - t0);
        const pFirst = past + t0;
        const pLast = pFirst + nq - 1;
        const jLo = window > 0 ? Math.max(0, pFirst - window + 1) : 0;
        qv.fill(0);
        for (let i = 0; i < nq; i++) {
          const src = qOff + (b * seqQ + t0 + i) * qRow + h * hd;
          for (let d = 0; d < hd; d++) qv[i * hd + d] = q[src + d];
        }
        for (let j = jLo; j <= pLast; j++) {
          const ka = j * hd;
          let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
          for (let d = 0; d < hd; d++) {
            const kd = kp[ka + d];
            a0 += qv[d] * kd; a1 += qv[h1 + d] * kd; a2 += qv[h2 + d] * kd; a3 += qv[h3 + d] * kd;
          }
          s[j] = a0 * scale; s[kvLen + j] = a1 * scale; s[2 * kvLen + j] = a2 * scale; s[3 * kvLen + j] = a3 * scale;
        }
        for (let i = 0; i < nq; i++) {
          const p = pFirst + i;
          const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
          const row = i * kvLen;
          let m = -Infinity;
          for (let j = lo; j <= p; j++) if (s[row + j] > m) m = s[row + j];
          let sum = 0;
          for (let j = lo; j <= p; j++) sum += Math.exp(s[row + j] - m);
          lse[lOff + (b * seqQ + t0 + i) * nHead + h] = m + Math.log(sum);
        }
      }
    }
  }
}

/**
 * Attention backward for units [u0, u1). Per query row i (head h) the probabilities are
 * recomputed from q, k and lse (nothing seq×seq is stored, only the unit's keys and values):
 *   P_ij = exp(scale·q_i·k_j − lse_i),  dS_ij = P_ij·(dO_i·v_j − D_i)  with D_i = dO_i·O_i,
 *   dq_i = scale·Σ_j dS_ij k_j,  dk_j += scale·dS_ij q_i,  dv_j += P_ij dO_i.
 * dl holds D at dOffD and lse at lseOff, both [(b·seqQ + t)·nHead + h]. k/v may share one storage
 * (kv at kOff, vOff), as may dk/dv (dkv). dq, dk, dv are overwritten; key rows past kvLen get 0.
 */
export function attentionBackwardUnits(
  dq: Float32Array, dqOff: number, dkv: Float32Array, dkOff: number, dvOff: number, dOut: Float32Array, doOff: number,
  dl: Float32Array, dOffD: number, lseOff: number, q: Float32Array, qOff: number, kv: Float32Array, kOff: number, vOff: number,
  seqQ: number, kvLen: number, kvStride: number, nHead: number, nKvHead: number, hd: number,
  scale: number, window: number, u0: number, u1: number,
): void {
  const qRow = nHead * hd, kvRow = nKvHead * hd, group = nHead / nKvHead, past = kvLen - seqQ;
  const kp = new Float64Array(kvLen * hd);
  const vp = new Float64Array(kvLen * hd);
  const dk = new Float64Array(kvLen * hd);
  const dv = new Float64Array(kvLen * hd);
  const qv = new Float64Array(4 * hd);
  const ov = new Float64Array(4 * hd);
  const gq = new Float64Array(4 * hd);
  const h1 = hd, h2 = 2 * hd, h3 = 3 * hd;
  for (let u = u0; u < u1; u++) {
    const g = u % nKvHead;
    const b = (u - g) / nKvHead;
    for (let j = 0; j < kvLen; j++) {
      const src = (b * kvStride + j) * kvRow + g * hd;
      for (let d = 0; d < hd; d++) {
        kp[j * hd + d] = kv[kOff + src + d];
        vp[j * hd + d] = kv[vOff + src + d];
      }
    }
    dk.fill(0);
    dv.fill(0);
    for (let h = g * group; h < (g + 1) * group; h++) {
      for (let t0 = 0; t0 < seqQ; t0 += 4) {
        const nq = Math.min(4, seqQ - t0);
        const pFirst = past + t0;
        const pLast = pFirst + nq - 1;
        const jLo = window > 0 ? Math.max(0, pFirst - window + 1) : 0;
        qv.fill(0);
        ov.fill(0);
        gq.fill(0);
        // Per query of the block: its D, lse and key range; queries past nq see nothing.
        let D0 = 0, D1 = 0, D2 = 0, D3 = 0, L0 = 0, L1 = 0, L2 = 0, L3 = 0;
        let lo0 = 0, lo1 = 0, lo2 = 0, lo3 = 0, hi0 = -1, hi1 = -1, hi2 = -1, hi3 = -1;
        for (let i = 0; i < nq; i++) {
          const row = (b * seqQ + t0 + i) * qRow + h * hd;
          for (let d = 0; d < hd; d++) {
            qv[i * hd + d] = q[qOff + row + d];
            ov[i * hd + d] = dOut[doOff + row + d];
          }
          const r = (b * seqQ + t0 + i) * nHead + h;
          const p = pFirst + i;
          const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
          if (i === 0) { D0 = dl[dOffD + r]; L0 = dl[lseOff + r]; lo0 = lo; hi0 = p; }
          else if (i === 1) { D1 = dl[dOffD + r]; L1 = dl[lseOff + r]; lo1 = lo; hi1 = p; }
          else if (i === 2) { D2 = dl[dOffD + r]; L2 = dl[lseOff + r]; lo2 = lo; hi2 = p; }
          else { D3 = dl[dOffD + r]; L3 = dl[lseOff + r]; lo3 = lo; hi3 = p; }
        }
        for (let j = jLo; j <= pLast; j++) {
          const ka = j * hd;
          let s0 = 0, s1 = 0, s2 = 0, s3 = 0, e0 = 0, e1 = 0, e2 = 0, e3 = 0;
          for (let d = 0; d < hd; d++) {
            const kd = kp[ka + d], vd = vp[ka + d];
            s0 += qv[d] * kd; s1 += qv[h1 + d] * kd; s2 += qv[h2 + d] * kd; s3 += qv[h3 + d] * kd;
            e0 += ov[d] * vd; e1 += ov[h1 + d] * vd; e2 += ov[h2 + d] * vd; e3 += ov[h3 + d] * vd;
          }
          const P0 = j >= lo0 && j <= hi0 ? Math.exp(s0 * scale - L0) : 0;
          const P1 = j >= lo1 && j <= hi1 ? Math.exp(s1 * scale - L1) : 0;
          const P2 = j >= lo2 && j <= hi2 ? Math.exp(s2 * scale - L2) : 0;
          const P3 = j >= lo3 && j <= hi3 ? Math.exp(s3 * scale - L3) : 0;
          const c0 = P0 * (e0 - D0) * scale, c1 = P1 * (e1 - D1) * scale, c2 = P2 * (e2 - D2) * scale, c3 = P3 * (e3 - D3) * scale;
          for (let d = 0; d < hd; d++) {
            const kd = kp[ka + d];
            dk[ka + d] += c0 * qv[d] + c1 * qv[h1 + d] + c2 * qv[h2 + d] + c3 * qv[h3 + d];
            dv[ka + d] += P0 * ov[d] + P1 * ov[h1 + d] + P2 * ov[h2 + d] + P3 * ov[h3 + d];
            gq[d] += c0 * kd; gq[h1 + d] += c1 * kd; gq[h2 + d] += c2 * kd; gq[h3 + d] += c3 * kd;
          }
        }
        for (let i = 0; i < nq; i++) {
          const row = dqOff + (b * seqQ + t0 + i) * qRow + h * hd;
          for (let d = 0; d < hd; d++) dq[row + d] = gq[i * hd + d];
        }
      }
    }
    for (let j = 0; j < kvStride; j++) {
      const dst = (b * kvStride + j) * kvRow + g * hd;
      for (let d = 0; d < hd; d++) {
        dkv[dkOff + dst + d] = j < kvLen ? dk[j * hd + d] : 0;
        dkv[dvOff + dst + d] = j < kvLen ? dv[j * hd + d] : 0;
      }
    }
  }
}

// --- dispatch ----------------------------------------------------------------------------------

/**
 * Runs one op's work range. The single entry point of the worker threads; the main thread uses
 * it too, so both sides read the same argument layout: f[i] are float storages, p numeric
 * parameters (offsets first), [lo, hi) the unit range and, for matmul, [c0, c1) the columns.
 */
export function runKernel(
  op: number, f: Float32Array[], i32: Int32Array, f64: Float64Array, sc: Float32Array, simd: SimdContext | null,
  p: Float64Array, lo: number, hi: number, c0: number, c1: number,
): void {
  // Offsets and sizes arrive as doubles: `| 0` makes them small integers again, which keeps the
  // kernels' index arithmetic in int32 (several times faster than double-typed indices).
  switch (op) {
    case 1: // OP_MATMUL
      matmulKernel(f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, f[3], p[3] | 0, p[4] | 0, p[5] | 0, p[6] | 0, lo, hi, c0, c1);
      break;
    case 2: // OP_ATTENTION
      attentionKernel(f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, f[3], p[3] | 0, sc,
        p[4] | 0, p[5] | 0, p[6] | 0, p[7] | 0, p[8] | 0, p[9] | 0, p[10], p[11] | 0, lo, hi);
      break;
    case 3: // OP_RMSNORM
      rmsNormKernel(f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, p[3] | 0, p[4], lo, hi);
      break;
    case 4: // OP_LAYERNORM
      layerNormKernel(f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, f[3], p[3] | 0, p[4] | 0, p[5], lo, hi);
      break;
    case 5: // OP_SILUMUL
      siluMulKernel(f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, lo, hi);
      break;
    case 6: // OP_GELU
      geluTanhKernel(f[0], p[0] | 0, f[1], p[1] | 0, lo, hi);
      break;
    case 7: // OP_ADD
      addKernel(f[0], p[0] | 0, f[1], p[1] | 0, lo, hi);
      break;
    case 8: // OP_SCORE
      scoreKernel(f[0], p[0] | 0, f[1], p[1] | 0, p[2] | 0, i32, p[3] | 0, f64, p[4] | 0, p[5] | 0, p[6] | 0, lo, hi);
      break;
    case 9: // OP_MATMUL_SIMD
      simdMatmulKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, f[3], p[3] | 0, p[4] | 0, p[5] | 0, p[6] | 0, lo, hi);
      break;
    case 10: // OP_ATTENTION_SIMD (f[4], p[12] and p[13]: lse storage, offset, on/off)
      simdAttentionKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, f[3], p[3] | 0,
        p[4] | 0, p[5] | 0, p[6] | 0, p[7] | 0, p[8] | 0, p[9] | 0, p[10], p[11] | 0, lo, hi, f[4], p[12] | 0, p[13] | 0);
      break;
    case 11: // OP_SILUMUL_SIMD
      simdSiluMulKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, lo, hi);
      break;
    case 12: // OP_ADD_SIMD
      simdAddKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, lo, hi);
      break;
    case 13: // OP_RMSNORM_SIMD
      simdRmsNormKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, p[3] | 0, p[4], lo, hi);
      break;
    case 14: // OP_SCORE_SIMD
      simdScoreKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, p[2] | 0, i32, p[3] | 0, f64, p[4] | 0, p[5] | 0, p[6] | 0, lo, hi);
      break;
    case 15: // OP_ATTENTION_LSE
      attentionLseUnits(f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0,
        p[3] | 0, p[4] | 0, p[5] | 0, p[6] | 0, p[7] | 0, p[8] | 0, p[9], p[10] | 0, lo, hi);
      break;
    case 16: // OP_ATTENTION_BACKWARD
      attentionBackwardUnits(f[0], p[0] | 0, f[1], p[1] | 0, p[2] | 0, f[2], p[3] | 0, f[3], p[4] | 0, p[5] | 0, f[4], p[6] | 0,
        f[5], p[7] | 0, p[8] | 0, p[9] | 0, p[10] | 0, p[11] | 0, p[12] | 0, p[13] | 0, p[14] | 0, p[15], p[16] | 0, lo, hi);
      break;
    case 18: // OP_SILUMUL_BACKWARD_SIMD
      simdSiluMulBackwardKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, f[2], p[2] | 0, f[3], p[3] | 0, f[4], p[4] | 0, lo, hi);
      break;
    case 17: // OP_ATTENTION_BACKWARD_SIMD
      simdAttentionBackwardKernel(simd!, f[0], p[0] | 0, f[1], p[1] | 0, p[2] | 0, f[2], p[3] | 0, f[3], p[4] | 0, p[5] | 0, f[4], p[6] | 0,
        f[5], p[7] | 0, p[8] | 0, p[9] | 0, p[10] | 0, p[11] | 0, p[12] | 0, p[13] | 0, p[14] | 0, p[15], p[16] | 0, lo, hi);
      break;
    default:
      throw new Error(`cpu kernel: unknown op ${op}`);
  }
}

/** Every function the worker source needs, in dependency order (runKernel last). */
export const KERNEL_FUNCTIONS: readonly ((...args: never[]) => void)[] = [
  matmulKernel, attentionKernel, rmsNormKernel, layerNormKernel, siluMulKernel, geluTanhKernel,
  addKernel, scoreKernel, createSimdContext, simdReserve, simdMatmulKernel, simdAttentionKernel, simdSiluMulKernel, simdAddKernel, simdRmsNormKernel, simdScoreKernel,
  attentionLseUnits, attentionBackwardUnits, simdAttentionBackwardKernel, simdSiluMulBackwardKernel, runKernel,
];
