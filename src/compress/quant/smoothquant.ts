// SmoothQuant (Xiao et al. 2022, https://arxiv.org/abs/2211.10438) as llm-compressor's
// SmoothQuantModifier applies it: per input channel j of the Linears that share a norm's output,
//   s_j = range_j^α / w_j^(1−α),  range_j = max_j − min_j of the norm output over calibration,
//   w_j = 2 · max over the balanced Linears of max_r |W[r, j]|   (s_j = range_j where w_j = 0),
//   s_j ≥ 1e-5
// then norm.weight_j /= s_j and W[:, j] *= s_j: the same function, with activation outliers moved
// into the weights. Its default mappings (Llama, Mistral, Qwen2) smooth only
//   input_layernorm → q/k/v_proj   and   post_attention_layernorm → gate/up_proj
// (no v→o or up→down), and so does llmopt.

export const MINIMUM_SMOOTHING_SCALE = 1e-5;

/** Per-channel min and max of an activation over the calibration set (QuantJobOps.channelRange). */
export interface ChannelRange {
  min: ArrayLike<number>;
  max: ArrayLike<number>;
}

/** A Linear weight [rows, cols] (row-major) that balances the smoothing. */
export interface BalanceWeight {
  data: Float32Array;
  rows: number;
  cols: number;
}

export function smoothingScales(range: ChannelRange, balance: readonly BalanceWeight[], alpha: number): Float64Array {
  const n = range.min.length;
  const wMax = new Float64Array(n);
  for (const w of balance) {
    if (w.cols !== n) throw new Error(`smoothing: balance weight has ${w.cols} columns for ${n} channels`);
    for (let r = 0; r < w.rows; r++) {
      for (let c = 0; c < n; c++) {
        const a = Math.abs(w.data[r * n + c]!);
        if (a > wMax[c]!) wMax[c] = a;
      }
    }
  }
  const scales = new Float64Array(n);
  for (let c = 0; c < n; c++) {
    const act = range.max[c]! - range.min[c]!;
    const wScale = 2 * wMax[c]!;
    const s = wScale > 0 ? act ** alpha / wScale ** (1 - alpha) : act;
    scales[c] = Math.max(s, MINIMUM_SMOOTHING_SCALE);
  }
  return scales;
}

/** norm /= s (per channel), each balance weight's columns *= s; in place. */
export function applySmoothing(norm: Float32Array, balance: readonly BalanceWeight[], scales: Float64Array): void {
  const n = scales.length;
  for (let c = 0; c < n; c++) norm[c] = norm[c]! / scales[c]!;
  for (const w of balance) {
    for (let r = 0; r < w.rows; r++) for (let c = 0; c < n; c++) w.data[r * n + c] = w.data[r * n + c]! * scales[c]!;
  }
}
