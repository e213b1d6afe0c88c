// The training checkpoint: OUT/train-state/ holds state.json (step, data position, settings,
// input hashes, the curve so far) and optimizer.safetensors (every parameter's f32 master weights
// and AdamW moments). It is written inside the output folder's atomic replacement (see run.ts), so
// a kill at any moment leaves the previous checkpoint or the new one, never a mix.

import fs from 'node:fs';
import path from 'node:path';
import { LlmoptError } from '../../errors.js';
import { SafetensorsReader, encodeFromFloat32, readJsonFile, writeSafetensors, type TensorToWrite } from '../../io/index.js';
import type { SamplerState } from './data.js';
import type { CurvePoint, EvalPoint, EvalProtocolReport, RunSegment } from './report.js';
import type { TrajectorySettings } from './settings.js';

export const STATE_DIR = 'train-state';
export const STATE_FILE = 'state.json';
export const TENSORS_FILE = 'optimizer.safetensors';
const FORMAT = 'llmopt-distill-state';
const VERSION = 1;

/** Fingerprints of what the run reads; a resume must see the same ones. */
export interface InputHashes {
  teacher: string;
  student: string;
  /** sha256 of the training token stream (int32 little-endian): covers the text and its tokenization. */
  data_tokens: string;
}

export interface TrainState {
  format: typeof FORMAT;
  version: typeof VERSION;
  /** Optimizer steps done. */
  step: number;
  sampler: SamplerState;
  settings: TrajectorySettings;
  /** Whether settings.lr came from --lr or from the size rule (for the report). */
  lr_source: 'flag' | 'default rule';
  inputs: InputHashes;
  curve: CurvePoint[];
  evals: EvalPoint[];
  /** The teacher's perplexity on the eval data (null without --eval-data). */
  teacher_eval: EvalPoint | null;
  /** What the eval points measure (null when no eval ran). */
  eval_protocol: EvalProtocolReport | null;
  segments: RunSegment[];
}

/** One tensor of the optimizer file: a parameter's master weights or a moment, read back lazily. */
export interface StateTensor {
  name: string;
  shape: readonly number[];
  data: () => Float32Array;
}

export const masterName = (param: string): string => `master.${param}`;
export const momentName = (which: 'm' | 'v', param: string): string => `adam_${which}.${param}`;

/** Writes `dir`/train-state/ (state.json + optimizer.safetensors). Tensors are produced one at a time. */
export function writeTrainState(dir: string, state: Omit<TrainState, 'format' | 'version'>, tensors: readonly StateTensor[]): void {
  const stateDir = path.join(dir, STATE_DIR);
  fs.mkdirSync(stateDir);
  const toWrite: TensorToWrite[] = tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: [...t.shape], data: () => encodeFromFloat32('F32', t.data()) }));
  writeSafetensors(path.join(stateDir, TENSORS_FILE), toWrite, { format: FORMAT });
  const full: TrainState = { format: FORMAT, version: VERSION, ...state };
  fs.writeFileSync(path.join(stateDir, STATE_FILE), `${JSON.stringify(full, null, 1)}\n`);
}

export interface LoadedTrainState {
  /** The folder the checkpoint was found in (OUT, or a leftover of an interrupted replacement). */
  dir: string;
  state: TrainState;
  /** optimizer.safetensors (open it with SafetensorsReader when restoring). */
  tensorsFile: string;
}

/**
 * Where a checkpoint of `out` is: out/train-state, or, when a kill came between the two renames of
 * an atomic replacement (out moved aside, the new folder not yet in place), the moved-aside folder.
 */
function findStateDir(out: string): string | undefined {
  const target = path.resolve(out);
  const direct = path.join(target, STATE_DIR, STATE_FILE);
  if (fs.existsSync(direct)) return target;
  if (fs.existsSync(target)) return undefined;
  const parent = path.dirname(target);
  const prefix = `.${path.basename(target)}.old-`;
  const aside = fs.existsSync(parent) ? fs.readdirSync(parent).filter((f) => f.startsWith(prefix) && fs.existsSync(path.join(parent, f, STATE_DIR, STATE_FILE))) : [];
  return aside.length === 1 ? path.join(parent, aside[0]!) : undefined;
}

/** Reads the checkpoint of output folder `out` for --resume; LlmoptError when there is none or it is not ours. */
export function readTrainState(out: string): LoadedTrainState {
  const dir = findStateDir(out);
  if (dir === undefined) {
    const why = fs.existsSync(out) ? `has no ${STATE_DIR}/${STATE_FILE}` : 'does not exist';
    throw new LlmoptError(`--resume: ${out} ${why}, so there is no checkpoint to resume from (run without --resume to start)`);
  }
  const file = path.join(dir, STATE_DIR, STATE_FILE);
  const json = readJsonFile(file) as Partial<TrainState> | null;
  if (json === null || typeof json !== 'object' || json.format !== FORMAT) throw new LlmoptError(`${file}: not an llmopt distill checkpoint`);
  if (json.version !== VERSION) throw new LlmoptError(`${file}: checkpoint format version ${String(json.version)}; this llmopt reads version ${VERSION}`);
  const tensorsFile = path.join(dir, STATE_DIR, TENSORS_FILE);
  SafetensorsReader.open(tensorsFile).close(); // a missing or broken file fails here, before any work
  return { dir, state: json as TrainState, tensorsFile };
}
