// Backward kernels of the CPU training ops (train-ops.ts validates shapes and calls these).
// Plain loops over Float32Arrays (each a tensor's own elements, index 0 = its first), float64
// accumulators, and a fixed summation order: results never depend on timing, so a resumed run
// reproduces an uninterrupted one bit for bit.

/** dst[c, r] = src[r, c] for src [rows, cols]. */
export function transposeInto(dst: Float32Array, src: Float32Array, rows: number, cols: number): void {
  // Blocks of 32×32 keep both sides in cache for wide matrices.
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const s = r * cols;
        for (let c = c0; c < c1; c++) dst[c * rows + r] = src[s + c];
      }
    }
  }
}

/** db[c] += Σ_r dy[r, c]. */
export function biasGradKernel(db: Float32Array, dy: Float32Array, rows: number, cols: number): void {
  const acc = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const a = r * cols;
    for (let c = 0; c < cols; c++) acc[c] += dy[a + c];
  }
  for (let c = 0; c < cols; c++) db[c] += acc[c];
}

/**
 * y = x·r·w with r = 1/√(mean(x²) + eps), per row of C. With g = dy·w:
 * dx = r·g − x·r³·Σ(g·x)/C;  dw += Σ_rows dy·x·r.
 */
export function rmsNormBackwardKernel(
  dx: Float32Array, dw: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array,
  rows: number, C: number, eps: number, accumulate: boolean,
): void {
  const dwAcc = new Float64Array(C);
  for (let row = 0; row < rows; row++) {
    const a = row * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[a + c] * x[a + c];
    const r = 1 / Math.sqrt(ss / C + eps);
    let gx = 0;
    for (let c = 0; c < C; c++) {
      gx += dy[a + c] * w[c] * x[a + c];
      dwAcc[c] += dy[a + c] * x[a + c] * r;
    }
    const k = (r * r * r * gx) / C;
    for (let c = 0; c < C; c++) {
      const v = r * dy[a + c] * w[c] - x[a + c] * k;
      dx[a + c] = accumulate ? dx[a + c] + v : v;
    }
  }
  for (let c = 0; c < C; c++) dw[c] += dwAcc[c];
}

/**
 * y = x̂·w + b with x̂ = (x − μ)·r, r = 1/√(var + eps) (biased variance). With g = dy·w:
 * dx = r·(g − mean(g) − x̂·mean(g·x̂));  dw += Σ dy·x̂;  db += Σ dy.
 */
export function layerNormBackwardKernel(
  dx: Float32Array, dw: Float32Array, db: Float32Array, dy: Float32Array, x: Float32Array, w: Float32Array,
  rows: number, C: number, eps: number, accumulate: boolean,
): void {
  const dwAcc = new Float64Array(C);
  const dbAcc = new Float64Array(C);
  for (let row = 0; row < rows; row++) {
    const a = row * C;
    let s = 0;
    for (let c = 0; c < C; c++) s += x[a + c];
    const mean = s / C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += (x[a + c] - mean) ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    let gSum = 0, gxSum = 0;
    for (let c = 0; c < C; c++) {
      const xh = (x[a + c] - mean) * r;
      const g = dy[a + c] * w[c];
      gSum += g;
      gxSum += g * xh;
      dwAcc[c] += dy[a + c] * xh;
      dbAcc[c] += dy[a + c];
    }
    const gMean = gSum / C, gxMean = gxSum / C;
    for (let c = 0; c < C; c++) {
      const xh = (x[a + c] - mean) * r;
      const v = r * (dy[a + c] * w[c] - gMean - xh * gxMean);
      dx[a + c] = accumulate ? dx[a + c] + v : v;
    }
  }
  for (let c = 0; c < C; c++) {
    dw[c] += dwAcc[c];
    db[c] += dbAcc[c];
  }
}

/**
 * The transpose of rope (rotate-half): forward y1 = x1·c − x2·s, y2 = x2·c + x1·s, so
 * dx1 = dy1·c + dy2·s, dx2 = dy2·c − dy1·s. In place on dx [rows, nHeads, headDim].
 */
export function ropeBackwardKernel(
  dx: Float32Array, positions: Int32Array, cos: Float32Array, sin: Float32Array,
  nHeads: number, headDim: number, half: number,
): void {
  for (let r = 0; r < positions.length; r++) {
    const t = positions[r] * half;
    for (let h = 0; h < nHeads; h++) {
      const a = (r * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const d1 = dx[a + i], d2 = dx[a + i + half];
        const c = cos[t + i], s = sin[t + i];
        dx[a + i] = d1 * c + d2 * s;
        dx[a + i + half] = d2 * c - d1 * s;
      }
    }
  }
}

/** act = silu(g)·u: dUp = dAct·silu(g); dGate = dAct·u·σ(g)·(1 + g·(1 − σ(g))). */
export function siluMulBackwardKernel(dGate: Float32Array, dUp: Float32Array, dAct: Float32Array, gate: Float32Array, up: Float32Array): void {
  for (let i = 0; i < dAct.length; i++) {
    const g = gate[i];
    const s = 1 / (1 + Math.exp(-g));
    const da = dAct[i];
    dUp[i] = da * g * s;
    dGate[i] = da * up[i] * s * (1 + g * (1 - s));
  }
}

/** y = ½x(1 + tanh a), a = c(x + 0.044715x³): dy/dx = ½(1 + tanh a) + ½x(1 − tanh²a)·c(1 + 3·0.044715x²). */
export function geluTanhBackwardKernel(dx: Float32Array, dy: Float32Array, x: Float32Array): void {
  const c = Math.sqrt(2 / Math.PI);
  for (let i = 0; i < dy.length; i++) {
    const xv = x[i];
    const th = Math.tanh(c * (xv + 0.044715 * xv * xv * xv));
    dx[i] = dy[i] * (0.5 * (1 + th) + 0.5 * xv * (1 - th * th) * c * (1 + 3 * 0.044715 * xv * xv));
  }
}

/** dTable[ids[i], :] += dOut[i, :], in row order. */
export function embeddingBackwardKernel(dTable: Float32Array, dOut: Float32Array, ids: Int32Array, C: number): void {
  for (let i = 0; i < ids.length; i++) {
    const t = ids[i] * C, o = i * C;
    for (let c = 0; c < C; c++) dTable[t + c] += dOut[o + c];
  }
}

/** Σ x² in float64. */
export function sumSquaresKernel(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

/** Fused AdamW (see TrainingOps.adamw), element by element in float64, stored as float32. */
export function adamwKernel(
  master: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array,
  lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number, gradScale: number,
): void {
  const c1 = 1 - Math.pow(beta1, step);
  const c2 = 1 - Math.pow(beta2, step);
  for (let i = 0; i < master.length; i++) {
    const g = grad[i] * gradScale;
    const mi = Math.fround(beta1 * m[i] + (1 - beta1) * g);
    const vi = Math.fround(beta2 * v[i] + (1 - beta2) * g * g);
    m[i] = mi;
    v[i] = vi;
    const w = master[i];
    master[i] = w - lr * (mi / c1 / (Math.sqrt(vi / c2) + eps) + weightDecay * w);
  }
}
