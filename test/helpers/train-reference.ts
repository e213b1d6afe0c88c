// Float64 reference forwards for the training tests: the ops, and a whole decoder written
// directly from the Hugging Face layouts (GPT-2's Conv1D [in, out] weights and fused c_attn
// included), independent of src/model.

import { layerSlidingWindow, rotaryDim } from '../../src/model/config.js';
import { ropeTables } from '../../src/model/rope.js';
import type { ModelSpec } from '../../src/model/spec.js';
import type { AttentionShape } from '../../src/tensor/device.js';

/** y[M,N] = x[M,K]·w[N,K]ᵀ + b (nn.Linear layout). */
export function refLinear(x: Float64Array, w: Float64Array, b: Float64Array | null, M: number, N: number, K: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[n * K + k];
      y[m * N + n] = s;
    }
  }
  return y;
}

/** y[M,N] = x[M,K]·w[K,N] + b (GPT-2 Conv1D layout). */
export function refConv1d(x: Float64Array, w: Float64Array, b: Float64Array, M: number, K: number, N: number): Float64Array {
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = b[n];
      for (let k = 0; k < K; k++) s += x[m * K + k] * w[k * N + n];
      y[m * N + n] = s;
    }
  }
  return y;
}

export function refRmsNorm(x: Float64Array, w: Float64Array, C: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / C; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c] ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = x[r * C + c] * inv * w[c];
  }
  return y;
}

export function refLayerNorm(x: Float64Array, w: Float64Array, b: Float64Array, C: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < x.length / C; r++) {
    let s = 0;
    for (let c = 0; c < C; c++) s += x[r * C + c];
    const mean = s / C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += (x[r * C + c] - mean) ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = (x[r * C + c] - mean) * inv * w[c] + b[c];
  }
  return y;
}

/** Rotate-half rotary on x [rows, nHeads, hd] (first `rot` dims of each head). */
export function refRope(x: Float64Array, pos: Int32Array, cos: ArrayLike<number>, sin: ArrayLike<number>, nHeads: number, hd: number, rot: number): Float64Array {
  const y = Float64Array.from(x);
  const half = rot / 2;
  for (let r = 0; r < pos.length; r++) {
    for (let h = 0; h < nHeads; h++) {
      const a = (r * nHeads + h) * hd;
      for (let i = 0; i < half; i++) {
        const c = cos[pos[r] * half + i], s = sin[pos[r] * half + i];
        y[a + i] = x[a + i] * c - x[a + i + half] * s;
        y[a + i + half] = x[a + i + half] * c + x[a + i] * s;
      }
    }
  }
  return y;
}

/** Causal GQA attention (Device.attention semantics), with the lse per (row, head). */
export function refAttention(q: Float64Array, k: Float64Array, v: Float64Array, s: AttentionShape): { out: Float64Array; lse: Float64Array } {
  const { batch, seqQ, kvLen, kvStride, nHead, nKvHead, headDim: hd, scale } = s;
  const out = new Float64Array(batch * seqQ * nHead * hd);
  const lse = new Float64Array(batch * seqQ * nHead);
  const group = nHead / nKvHead;
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seqQ; t++) {
      const p = kvLen - seqQ + t;
      const lo = s.window !== undefined ? Math.max(0, p - s.window + 1) : 0;
      for (let h = 0; h < nHead; h++) {
        const g = Math.floor(h / group);
        const qa = ((b * seqQ + t) * nHead + h) * hd;
        const sc: number[] = [];
        for (let j = lo; j <= p; j++) {
          const ka = ((b * kvStride + j) * nKvHead + g) * hd;
          let d = 0;
          for (let i = 0; i < hd; i++) d += q[qa + i] * k[ka + i];
          sc.push(d * scale);
        }
        const m = Math.max(...sc);
        const e = sc.map((x) => Math.exp(x - m));
        const sum = e.reduce((a, c) => a + c, 0);
        lse[(b * seqQ + t) * nHead + h] = m + Math.log(sum);
        for (let j = lo; j <= p; j++) {
          const va = ((b * kvStride + j) * nKvHead + g) * hd;
          for (let i = 0; i < hd; i++) out[qa + i] += (e[j - lo] / sum) * v[va + i];
        }
      }
    }
  }
  return { out, lse };
}

export const refSilu = (g: number) => g / (1 + Math.exp(-g));
export const refGelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

/** Logits [batch·seq, vocab] of a decoder from its HF tensors (float64), positions 0…seq−1. */
export function refDecoderLogits(spec: ModelSpec, W: Map<string, Float64Array>, ids: Int32Array, batch: number, seq: number): Float64Array {
  const get = (name: string) => {
    const t = W.get(name);
    if (t === undefined) throw new Error(`reference: no tensor ${name}`);
    return t;
  };
  const rows = batch * seq, H = spec.hiddenSize, I = spec.intermediateSize, hd = spec.headDim;
  const qDim = spec.numHeads * hd, kvDim = spec.numKvHeads * hd;
  const pos = new Int32Array(rows).map((_, r) => r % seq);
  const gpt2 = spec.architecture === 'gpt2';
  const p = gpt2 ? 'transformer.' : 'model.';
  const embed = get(gpt2 ? `${p}wte.weight` : `${p}embed_tokens.weight`);
  let x = new Float64Array(rows * H);
  for (let r = 0; r < rows; r++) for (let c = 0; c < H; c++) x[r * H + c] = embed[ids[r] * H + c];
  if (gpt2) {
    const wpe = get(`${p}wpe.weight`);
    for (let r = 0; r < rows; r++) for (let c = 0; c < H; c++) x[r * H + c] += wpe[pos[r] * H + c];
  }
  const rot = rotaryDim(spec);
  const tables = spec.positions === 'rope' ? ropeTables(spec, seq) : undefined;
  const norm = (t: Float64Array, name: string) =>
    gpt2 ? refLayerNorm(t, get(`${name}.weight`), get(`${name}.bias`), H, spec.normEps) : refRmsNorm(t, get(`${name}.weight`), H, spec.normEps);
  const lin = (t: Float64Array, name: string, N: number, K: number, bias: boolean) =>
    refLinear(t, get(`${name}.weight`), bias ? get(`${name}.bias`) : null, rows, N, K);
  const add = (a: Float64Array, b: Float64Array) => a.map((v, i) => v + b[i]);
  for (let i = 0; i < spec.numLayers; i++) {
    const l = gpt2 ? `${p}h.${i}.` : `${p}layers.${i}.`;
    const shape: AttentionShape = {
      batch, seqQ: seq, kvLen: seq, kvStride: seq, nHead: spec.numHeads, nKvHead: spec.numKvHeads, headDim: hd,
      scale: 1 / Math.sqrt(hd), window: layerSlidingWindow(spec, i),
    };
    if (gpt2) {
      const a = norm(x, `${l}ln_1`);
      const qkv = refConv1d(a, get(`${l}attn.c_attn.weight`), get(`${l}attn.c_attn.bias`), rows, H, 3 * H);
      const part = (j: number) => {
        const o = new Float64Array(rows * H);
        for (let r = 0; r < rows; r++) for (let c = 0; c < H; c++) o[r * H + c] = qkv[r * 3 * H + j * H + c];
        return o;
      };
      const att = refAttention(part(0), part(1), part(2), shape).out;
      x = add(x, refConv1d(att, get(`${l}attn.c_proj.weight`), get(`${l}attn.c_proj.bias`), rows, H, H));
      const m = norm(x, `${l}ln_2`);
      const h = refConv1d(m, get(`${l}mlp.c_fc.weight`), get(`${l}mlp.c_fc.bias`), rows, H, I).map(refGelu);
      x = add(x, refConv1d(h, get(`${l}mlp.c_proj.weight`), get(`${l}mlp.c_proj.bias`), rows, I, H));
    } else {
      const a = norm(x, `${l}input_layernorm`);
      let q = lin(a, `${l}self_attn.q_proj`, qDim, H, spec.qkvBias);
      let k = lin(a, `${l}self_attn.k_proj`, kvDim, H, spec.qkvBias);
      const v = lin(a, `${l}self_attn.v_proj`, kvDim, H, spec.qkvBias);
      if (spec.qkNorm) {
        q = refRmsNorm(q, get(`${l}self_attn.q_norm.weight`), hd, spec.normEps);
        k = refRmsNorm(k, get(`${l}self_attn.k_norm.weight`), hd, spec.normEps);
      }
      q = refRope(q, pos, tables!.cos, tables!.sin, spec.numHeads, hd, rot);
      k = refRope(k, pos, tables!.cos, tables!.sin, spec.numKvHeads, hd, rot);
      const att = refAttention(q, k, v, shape).out;
      x = add(x, refLinear(att, get(`${l}self_attn.o_proj.weight`), spec.oBias ? get(`${l}self_attn.o_proj.bias`) : null, rows, H, qDim));
      const m = norm(x, `${l}post_attention_layernorm`);
      const gate = lin(m, `${l}mlp.gate_proj`, I, H, spec.mlpBias);
      const upv = lin(m, `${l}mlp.up_proj`, I, H, spec.mlpBias);
      const act = gate.map((g, j) => refSilu(g) * upv[j]);
      x = add(x, lin(act, `${l}mlp.down_proj`, H, I, spec.mlpBias));
    }
  }
  const xf = norm(x, gpt2 ? `${p}ln_f` : `${p}norm`);
  const head = spec.tieWordEmbeddings ? embed : get('lm_head.weight');
  return refLinear(xf, head, null, rows, spec.vocabSize, H);
}
