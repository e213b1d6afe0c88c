// ModelSpec: everything the decoder needs to know about an architecture, parsed from config.json.

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3' | 'gpt2';
export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ['llama', 'mistral', 'qwen2', 'qwen3', 'gpt2'];

export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface ModelSpec {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  /** 'rms' for the Llama family, 'layer' for GPT-2. */
  norm: 'rms' | 'layer';
  normEps: number;
  /** 'silu' = SwiGLU MLP (gate/up/down); 'gelu_tanh' = GPT-2 MLP (fc/proj). */
  activation: 'silu' | 'gelu_tanh';
  /** Rotary positions (Llama family) or learned absolute positions (GPT-2). */
  positions: 'rope' | 'learned';
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Fraction of head_dim that rotates (partial_rotary_factor). */
  partialRotaryFactor: number;
  tieWordEmbeddings: boolean;
  /** Bias on q/k/v projections (Qwen2, GPT-2). */
  qkvBias: boolean;
  /** Bias on o_proj (GPT-2, attention_bias=true models). */
  oBias: boolean;
  /** Bias on MLP linears (GPT-2, mlp_bias=true). */
  mlpBias: boolean;
  /** Per-head RMSNorm on q and k before rotary (Qwen3). */
  qkNorm: boolean;
  /** Sliding-window attention span in tokens (Mistral v0.1 style); undefined = full causal. */
  slidingWindow?: number;
  /**
   * Per layer, whether slidingWindow applies (Qwen2/Qwen3: only layers >= max_window_layers, or
   * as config.layer_types says). Undefined = every layer, when slidingWindow is set.
   */
  slidingWindowLayers?: readonly boolean[];
  bosTokenId?: number;
  eosTokenId?: number | number[];
  /** The parsed config.json, kept so outputs (prune, quantize) can rewrite it faithfully. */
  rawConfig: Record<string, unknown>;
}
