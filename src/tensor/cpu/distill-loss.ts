// The fused distillation loss (softmax + KL/CE + gradient over the vocabulary) and the teacher's
// top-k, on host float32 rows (CpuTrainingOps.distillLoss / topK validate and call these).
//
// Per scored row, with student logits z, u = z/T, q = softmax(u) and teacher p = softmax(t/T):
//   loss = (1−α)·T²·D + α·CE,  CE = logsumexp(z) − z[target]  (unsoftened)
//   'kl'         D = KL(p‖q) = Σ p (log p − log q)          ∂D/∂u_i = q_i − p_i
//   'reverse-kl' D = KL(q‖p) = Σ q (log q − log p)          ∂D/∂u_i = q_i (log q_i − log p_i − D)
//   'skew-kl'    D = KL(p‖m), m = λp + (1−λ)q, r = p/m       ∂D/∂u_i = (1−λ) q_i (Σ_j q_j r_j − r_i)
// and ∂/∂z = ∂/∂u / T, so the distillation gradient on z is (1−α)·T·∂D/∂u.
//
// Top-k teacher (ids K, raw logits, lse = logsumexp(t/T) over the whole vocabulary): the teacher is
// known on the k tokens of K plus one bucket holding the rest of its mass, R = 1 − Σ_K p_k. Both
// distributions are coarsened the same way (the student's bucket Q_R = Σ_{i∉K} q_i) and D is the
// exact divergence between the coarsened distributions over the k+1 classes. For a class c with
// masses P_c, Q_c and a token i in class c(i), ∂Q_c/∂u_i = q_i·[i∈c] − q_i·Q_c, which gives:
//   'kl'         D = Σ_c P_c log(P_c/Q_c);   ∂D/∂u_i = q_i − p_i (i ∈ K),  q_i − R·q_i/Q_R (i ∉ K)
//                (the bucket's teacher mass is spread over its tokens in the student's proportions)
//   'reverse-kl' a_c = log(Q_c/P_c), D = Σ_c Q_c a_c;   ∂D/∂u_i = q_i (a_{c(i)} − D)
//   'skew-kl'    M_c = λP_c + (1−λ)Q_c, r_c = P_c/M_c, D = Σ_c P_c log(P_c/M_c);
//                ∂D/∂u_i = (1−λ) q_i (Σ_c Q_c r_c − r_{c(i)})
// With k = V the bucket is empty and these are the full-vocabulary formulas. R comes from the
// float32 lse, so it is known to about |lse|·1e-7; it is floored at BUCKET_FLOOR so that log R stays
// finite (reverse/skew KL) when rounding leaves the top-k with all of the mass.

/** Smallest teacher (and student) bucket mass used in a log. */
const BUCKET_FLOOR = 1e-20;

export const LOSS_KL = 0;
export const LOSS_REVERSE_KL = 1;
export const LOSS_SKEW_KL = 2;

export interface LossKernelArgs {
  /** Student logits [rows, V]. */
  z: Float32Array;
  /** Gradient out [rows, V]; may be z itself. */
  dz: Float32Array;
  rows: number;
  V: number;
  /** Full teacher logits [rows, V]. */
  teacher: Float32Array | null;
  /** Teacher top-k: ids/logits [rows·k], lse [rows]. */
  topIds: Int32Array | null;
  topLogits: Float32Array | null;
  topLse: Float32Array | null;
  k: number;
  targets: Int32Array;
  kind: number;
  temperature: number;
  alpha: number;
  lambda: number;
  gradScale: number;
  loss: Float64Array;
  distill: Float64Array;
  ce: Float64Array;
}

export function distillLossKernel(a: LossKernelArgs): void {
  const { z, dz, rows, V, teacher, topIds, topLogits, topLse, k, targets, kind, temperature: T, alpha, lambda, gradScale } = a;
  const hasTeacher = teacher !== null || topIds !== null;
  const wCe = hasTeacher ? alpha : 1;
  const wD = hasTeacher ? 1 - alpha : 0;
  const zr = new Float64Array(V);
  // Log-probabilities and probabilities: student at T (q), student at 1 (for CE, when T ≠ 1), teacher at T (p).
  const logq = new Float64Array(V), q = new Float64Array(V);
  const logs = new Float64Array(V), sm = new Float64Array(V);
  const logp = new Float64Array(V), p = new Float64Array(V);
  const grad = new Float64Array(V);
  // Per token: its position in the row's top-k, valid where stamp = row + 1 (else it is in the bucket).
  const slot = new Int32Array(V);
  const stamp = new Int32Array(V);
  for (let r = 0; r < rows; r++) {
    const base = r * V;
    const target = targets[r];
    if (target < 0) {
      dz.fill(0, base, base + V);
      a.loss[r] = 0;
      a.distill[r] = 0;
      a.ce[r] = 0;
      continue;
    }
    for (let i = 0; i < V; i++) zr[i] = z[base + i];
    grad.fill(0);
    logSoftmax(zr, V, 1 / T, logq, q);

    // Hard-label cross-entropy on the unsoftened logits.
    const [logS, S] = T === 1 ? [logq, q] : [logs, sm];
    if (T !== 1) logSoftmax(zr, V, 1, logs, sm);
    const ce = -logS[target];
    if (wCe > 0) {
      for (let i = 0; i < V; i++) grad[i] = wCe * S[i];
      grad[target] -= wCe;
    }

    let D = 0;
    if (hasTeacher) {
      const g = wD * T; // ∂/∂z of (1−α)·T²·D per unit of ∂D/∂u
      if (teacher !== null) {
        for (let i = 0; i < V; i++) p[i] = teacher[base + i];
        logSoftmax(p, V, 1 / T, logp, p);
        D = fullDivergence(kind, lambda, logq, q, logp, p, V, grad, g);
      } else {
        D = topKDivergence(kind, lambda, logq, q, V, topIds!, topLogits!, topLse![r], k, r, T, slot, stamp, grad, g);
      }
    }
    a.loss[r] = wD * T * T * D + wCe * ce;
    a.distill[r] = D;
    a.ce[r] = ce;
    for (let i = 0; i < V; i++) dz[base + i] = gradScale * grad[i];
  }
}

/** logOut = log softmax(s·x), probOut = softmax(s·x) (one exponential per element); probOut may be x. */
function logSoftmax(x: Float64Array, n: number, s: number, logOut: Float64Array, probOut: Float64Array): void {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (s * x[i] > m) m = s * x[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const xs = s * x[i] - m;
    logOut[i] = xs;
    const e = Math.exp(xs);
    probOut[i] = e;
    sum += e;
  }
  const logSum = Math.log(sum), inv = 1 / sum;
  for (let i = 0; i < n; i++) {
    logOut[i] -= logSum;
    probOut[i] *= inv;
  }
}

/** D over the whole vocabulary; grad += g·∂D/∂u. */
function fullDivergence(
  kind: number, lambda: number, logq: Float64Array, q: Float64Array, logp: Float64Array, p: Float64Array, V: number, grad: Float64Array, g: number,
): number {
  let D = 0;
  if (kind === LOSS_KL) {
    for (let i = 0; i < V; i++) {
      if (p[i] > 0) D += p[i] * (logp[i] - logq[i]);
      grad[i] += g * (q[i] - p[i]);
    }
  } else if (kind === LOSS_REVERSE_KL) {
    for (let i = 0; i < V; i++) D += q[i] * (logq[i] - logp[i]);
    for (let i = 0; i < V; i++) grad[i] += g * q[i] * (logq[i] - logp[i] - D);
  } else {
    // r_i = p_i / m_i, kept in p (no longer needed as such) after D and S.
    let S = 0;
    for (let i = 0; i < V; i++) {
      const m = lambda * p[i] + (1 - lambda) * q[i];
      if (p[i] > 0) D += p[i] * (logp[i] - Math.log(m));
      const ri = m > 0 ? p[i] / m : 0;
      S += q[i] * ri;
      p[i] = ri;
    }
    for (let i = 0; i < V; i++) grad[i] += g * (1 - lambda) * q[i] * (S - p[i]);
  }
  return D;
}

/** D between the coarsened distributions (top-k + bucket, see the top of the file); grad += g·∂D/∂u. */
function topKDivergence(
  kind: number, lambda: number, logq: Float64Array, q: Float64Array, V: number, ids: Int32Array, logits: Float32Array, lse: number,
  k: number, row: number, T: number, slot: Int32Array, stamp: Int32Array, grad: Float64Array, g: number,
): number {
  const off = row * k;
  const tag = row + 1;
  let mass = 0;
  for (let c = 0; c < k; c++) {
    const id = ids[off + c];
    stamp[id] = tag;
    slot[id] = c;
    mass += Math.exp(logits[off + c] / T - lse);
  }
  const bucket = k < V;
  let qBucket = 0;
  if (bucket) for (let i = 0; i < V; i++) if (stamp[i] !== tag) qBucket += q[i];
  const R = bucket ? Math.max(1 - mass, BUCKET_FLOOR) : 0;
  const QR = bucket ? Math.max(qBucket, BUCKET_FLOOR) : 0;
  let D = 0;
  if (kind === LOSS_KL) {
    for (let c = 0; c < k; c++) {
      const lp = logits[off + c] / T - lse;
      D += Math.exp(lp) * (lp - logq[ids[off + c]]);
    }
    if (bucket) D += R * (Math.log(R) - Math.log(QR));
    for (let i = 0; i < V; i++) {
      const p = stamp[i] === tag ? Math.exp(logits[off + slot[i]] / T - lse) : (R * q[i]) / QR;
      grad[i] += g * (q[i] - p);
    }
  } else if (kind === LOSS_REVERSE_KL) {
    const aBucket = bucket ? Math.log(QR) - Math.log(R) : 0;
    for (let c = 0; c < k; c++) {
      const id = ids[off + c];
      D += q[id] * (logq[id] - (logits[off + c] / T - lse));
    }
    if (bucket) D += qBucket * aBucket;
    for (let i = 0; i < V; i++) {
      const a = stamp[i] === tag ? logq[i] - (logits[off + slot[i]] / T - lse) : aBucket;
      grad[i] += g * q[i] * (a - D);
    }
  } else {
    // r_c = P_c / M_c per class; the bucket's uses the student's unfloored mass in M.
    let S = 0;
    for (let c = 0; c < k; c++) {
      const lp = logits[off + c] / T - lse;
      const p = Math.exp(lp), qc = q[ids[off + c]];
      const m = lambda * p + (1 - lambda) * qc;
      D += p * (lp - Math.log(m));
      S += (qc * p) / m;
    }
    let rBucket = 0;
    if (bucket) {
      const m = lambda * R + (1 - lambda) * qBucket;
      D += R * (Math.log(R) - Math.log(m));
      rBucket = R / m;
      S += qBucket * rBucket;
    }
    for (let i = 0; i < V; i++) {
      let rc = rBucket;
      if (stamp[i] === tag) {
        const p = Math.exp(logits[off + slot[i]] / T - lse);
        rc = p / (lambda * p + (1 - lambda) * q[i]);
      }
      grad[i] += g * (1 - lambda) * q[i] * (S - rc);
    }
  }
  return D;
}

/**
 * Top-k per row of logits [rows, V], largest first (ties: the lower id first), and
 * lse[r] = logsumexp(logits[r] / T), through a size-k min-heap per row.
 */
export function topKKernel(
  logits: Float32Array, rows: number, V: number, k: number, T: number,
  ids: Int32Array, vals: Float32Array, lse: Float32Array,
): void {
  const hv = new Float64Array(k);
  const hi = new Int32Array(k);
  // a ranks below b: smaller value, or the same value and a larger id.
  const below = (va: number, ia: number, vb: number, ib: number) => va < vb || (va === vb && ia > ib);
  const siftDown = (n: number, start: number) => {
    let i = start;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < n && below(hv[l], hi[l], hv[m], hi[m])) m = l;
      if (r < n && below(hv[r], hi[r], hv[m], hi[m])) m = r;
      if (m === i) return;
      const tv = hv[i], ti = hi[i];
      hv[i] = hv[m]; hi[i] = hi[m];
      hv[m] = tv; hi[m] = ti;
      i = m;
    }
  };
  for (let r = 0; r < rows; r++) {
    const base = r * V;
    for (let i = 0; i < k; i++) {
      hv[i] = logits[base + i];
      hi[i] = i;
    }
    for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(k, i);
    for (let i = k; i < V; i++) {
      const x = logits[base + i];
      if (below(hv[0], hi[0], x, i)) {
        hv[0] = x;
        hi[0] = i;
        siftDown(k, 0);
      }
    }
    // Pop the heap minimum into the last free place: largest first.
    for (let n = k; n > 0; n--) {
      ids[r * k + n - 1] = hi[0];
      vals[r * k + n - 1] = hv[0];
      hv[0] = hv[n - 1];
      hi[0] = hi[n - 1];
      siftDown(n - 1, 0);
    }
    const m = vals[r * k] / T;
    let s = 0;
    for (let i = 0; i < V; i++) s += Math.exp(logits[base + i] / T - m);
    lse[r] = m + Math.log(s);
  }
}
