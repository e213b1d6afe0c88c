// What a distill run records: the loss curve, eval points, run segments (a resumed run has several),
// and the llmopt-report.json written beside the trained student.

import type { TrajectorySettings } from './settings.js';

export const REPORT_FILE = 'llmopt-report.json';

export interface CurvePoint {
  step: number;
  /** Training tokens seen after this step. */
  tokens: number;
  lr: number;
  loss: number;
  /** The distillation term alone (before the (1−alpha)·T² weight) and the hard-label CE alone. */
  distill: number;
  ce: number;
  grad_norm: number;
}

export interface EvalPoint {
  step: number;
  tokens: number;
  ppl: number;
  nll: number;
  tokens_scored: number;
}

export interface RunSegment {
  /** ISO time this process started training. */
  started: string;
  device: string;
  from_step: number;
  to_step: number;
  /** Seconds in optimizer steps (evals and checkpoint writes excluded). */
  train_s: number;
  tokens_per_s: number;
}

export interface ModelInput {
  path: string;
  architecture: string;
  parameters: number;
  config_sha256: string;
  weights: { file: string; bytes: number; sha256: string }[];
}

export interface EvalProtocolReport {
  file: string;
  sha256: string;
  /** protocolName(): chunksN. */
  name: string;
  window: number;
  windows: number;
  tokens_in_file: number;
  tokens_used: number;
  tokens_scored: number;
  max_tokens: number | null;
}

export interface DistillReport {
  tool: { name: 'llmopt'; version: string };
  command: 'distill';
  created: string;
  inputs: {
    teacher: ModelInput;
    student: ModelInput;
    data: {
      source: string;
      description: string;
      sha256: string | null;
      tokens: number;
      tokens_sha256: string;
      records: number | null;
      windows_per_epoch: number;
    };
  };
  output: { path: string; files: string[]; dtypes: string[] };
  settings: TrajectorySettings & {
    tokens: number;
    tokens_per_step: number;
    epochs: number;
    lr_source: 'flag' | 'default rule';
    eval_every: number | null;
    save_every: number;
    final_lr_fraction: number;
  };
  device: { name: string; dtype: string };
  /** True when the teacher ran (alpha < 1). */
  teacher_forward: boolean;
  eval: { protocol: EvalProtocolReport; teacher: EvalPoint | null; points: EvalPoint[] } | null;
  curve: CurvePoint[];
  segments: RunSegment[];
  warnings: string[];
  timings_s: { load: number; hash: number; train: number; eval: number; checkpoints: number; write: number; total: number };
  tokens_per_s: number;
}
