// The two checkpoints a distill run reads, checked before anything heavy runs: config parsed, not
// quantized, one shared vocabulary and tokenizer; parameter counts and weight dtypes from the
// headers alone; and their hashes for the report and for --resume.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { LlmoptError } from '../../errors.js';
import { CheckpointTensors, readJsonFile, resolveModelPath, sha256File, type DType, type ResolvedModelPath } from '../../io/index.js';
import { countParameters } from '../../eval/params.js';
import { parseModelConfig } from '../../model/config.js';
import type { ModelSpec } from '../../model/spec.js';
import { TextTokenizer, TOKENIZER_FILE } from '../../model/tokenizer.js';
import { isQuantizedConfig } from '../../model/weights.js';
import type { ModelInput } from './report.js';

export interface CheckedModel {
  role: 'teacher' | 'student';
  /** As the user wrote it. */
  arg: string;
  paths: ResolvedModelPath;
  spec: ModelSpec;
  parameters: number;
  /** Stored dtype of each tensor, by name. */
  dtypes: Map<string, DType>;
  tokenizer?: TextTokenizer;
}

/** Resolves and checks one model folder (reads config.json, tokenizer.json and the weight headers). */
export async function checkModel(arg: string, role: 'teacher' | 'student'): Promise<CheckedModel> {
  const flag = `--${role}`;
  const where = (e: unknown): never => {
    if (e instanceof LlmoptError) throw new LlmoptError(`${flag}: ${e.message}`);
    throw e;
  };
  let paths: ResolvedModelPath;
  let spec: ModelSpec;
  try {
    paths = resolveModelPath(arg);
    spec = parseModelConfig(readJsonFile(paths.configFile), paths.configFile);
  } catch (e) {
    return where(e);
  }
  if (isQuantizedConfig(spec)) {
    throw new LlmoptError(`${flag} ${arg}: a quantized checkpoint (config.json has quantization_config); distill trains and reads float checkpoints only`);
  }
  const ckpt = CheckpointTensors.open(paths);
  const dtypes = new Map<string, DType>();
  let parameters: number;
  try {
    const infos = ckpt.names().map((n) => ckpt.info(n));
    for (const t of infos) dtypes.set(t.name, t.dtype);
    parameters = countParameters(infos, spec.tieWordEmbeddings).total;
  } finally {
    ckpt.close();
  }
  const tokenizer = fs.existsSync(path.join(paths.dir, TOKENIZER_FILE)) ? await TextTokenizer.load(paths.dir) : undefined;
  return { role, arg, paths, spec, parameters, dtypes, tokenizer };
}

function sameIds(a: Int32Array, b: Int32Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Teacher and student must score the same token ids: equal vocab_size, and (when the student has
 * its own tokenizer.json that differs from the teacher's) the same token for every id and the same
 * ids for a sample of the training text. The teacher needs a tokenizer (it tokenizes --data).
 */
export function checkSameVocabulary(teacher: CheckedModel, student: CheckedModel, sample?: string): void {
  if (teacher.spec.vocabSize !== student.spec.vocabSize) {
    throw new LlmoptError(
      `--student ${student.arg}: vocab_size ${student.spec.vocabSize} differs from the teacher's ${teacher.spec.vocabSize}; distillation needs one shared tokenizer and vocabulary`,
    );
  }
  const t = teacher.tokenizer;
  const s = student.tokenizer;
  if (t === undefined) throw new LlmoptError(`--teacher ${teacher.arg}: no ${TOKENIZER_FILE}; the teacher's tokenizer tokenizes --data`);
  if (s === undefined) return;
  if (fs.readFileSync(t.file).equals(fs.readFileSync(s.file))) return;
  const n = Math.max(t.vocabSize, s.vocabSize);
  for (let id = 0; id < n; id++) {
    if (t.idToToken(id) !== s.idToToken(id)) {
      throw new LlmoptError(
        `--student ${student.arg}: its tokenizer differs from the teacher's (token id ${id} is ${JSON.stringify(s.idToToken(id) ?? null)}, the teacher's ${JSON.stringify(t.idToToken(id) ?? null)}); distillation needs one shared tokenizer`,
      );
    }
  }
  if (sample !== undefined && !sameIds(t.encode(sample), s.encode(sample))) {
    throw new LlmoptError(`--student ${student.arg}: its tokenizer gives other ids than the teacher's for the start of --data; distillation needs one shared tokenizer`);
  }
}

/** The report's description of a model input, with sha256 of config.json and every weight file. */
export function describeModel(m: CheckedModel): ModelInput {
  return {
    path: m.paths.dir,
    architecture: m.spec.architecture,
    parameters: m.parameters,
    config_sha256: sha256File(m.paths.configFile),
    weights: m.paths.weightFiles.map((f) => ({ file: path.basename(f), bytes: fs.statSync(f).size, sha256: sha256File(f) })),
  };
}

/** One hash over a model's config and weights (what --resume compares). */
export function modelFingerprint(d: ModelInput): string {
  const h = createHash('sha256').update(`config ${d.config_sha256}\n`);
  for (const w of d.weights) h.update(`${w.file} ${w.sha256}\n`);
  return h.digest('hex');
}

export function tokensSha256(tokens: Int32Array): string {
  return createHash('sha256').update(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength)).digest('hex');
}
