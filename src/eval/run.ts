// One eval run, start to end: load model (and baseline), tokenize the data, cut windows, score.
// Every input problem becomes an LlmoptError naming the file or flag; nothing is written.

import { readFileSync, statSync } from 'node:fs';
import { LlmoptError } from '../errors.js';
import { loadModel, type LoadedModel } from '../model/load.js';
import type { ModelSpec } from '../model/spec.js';
import type { Device } from '../tensor/device.js';
import { evaluatePerplexity, type PerplexityProgress } from './perplexity.js';
import type { EvalRun } from './report.js';
import { countScored, makeWindows, protocolName, type Protocol } from './windows.js';

export interface EvalOptions {
  model: string;
  baseline?: string;
  dataFile: string;
  /** Window length; default min(2048, max_position_embeddings). */
  seqLen?: number;
  /** Given: strideN_S protocol. Absent: chunksN. */
  stride?: number;
  keepLast: boolean;
  /** Truncate the token stream (BOS included) to its first N tokens. */
  maxTokens?: number;
  /** Windows per forward pass; default: up to 8, bounded so one batch's activations stay near 1 GiB. */
  batch?: number;
  device: Device;
  /** How the device is named in the report ("cpu"). */
  deviceName: string;
  /** Called once windows are known, with the number of tokens that will be scored. */
  onStart?: (tokensToScore: number, protocol: string) => void;
  onProgress?: (p: PerplexityProgress) => void;
}

const DEFAULT_MAX_WINDOW = 2048;
const MAX_DEFAULT_BATCH = 8;
/** Float32 values of activations one batch may hold (1 GiB). */
const ACTIVATION_BUDGET_ELEMENTS = 2 ** 28;

/**
 * Windows per forward pass: up to 8, fewer when a batch's activations (about 8 hidden-size and 3
 * FFN-size buffers per token row) would pass the budget.
 */
export function defaultBatch(window: number, spec: ModelSpec): number {
  const perRow = 8 * spec.hiddenSize + 3 * spec.intermediateSize;
  return Math.max(1, Math.min(MAX_DEFAULT_BATCH, Math.floor(ACTIVATION_BUDGET_ELEMENTS / (window * perRow))));
}

function readDataText(file: string): string {
  let isFile: boolean;
  try {
    isFile = statSync(file).isFile();
  } catch {
    throw new LlmoptError(`--data ${file}: no such file`);
  }
  if (!isFile) throw new LlmoptError(`--data ${file}: not a file`);
  return readFileSync(file, 'utf8');
}

function tokenize(model: LoadedModel, text: string, what: string): Int32Array {
  if (!model.tokenizer) throw new LlmoptError(`${model.paths.dir}: no tokenizer.json; ${what} needs one to tokenize --data`);
  return model.tokenizer.encode(text);
}

function sameIds(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function chooseProtocol(opts: EvalOptions, maxPositions: number): Protocol {
  const window = opts.seqLen ?? Math.min(DEFAULT_MAX_WINDOW, maxPositions);
  if (window > maxPositions) throw new LlmoptError(`--seq-len ${window} is longer than the model's context (max_position_embeddings ${maxPositions})`);
  if (opts.stride === undefined) return { kind: 'chunks', window, keepLast: opts.keepLast };
  if (opts.stride > window) throw new LlmoptError(`--stride ${opts.stride} is larger than the window (${window} tokens): tokens between windows would never be scored`);
  return { kind: 'stride', window, stride: opts.stride };
}

export async function runEval(opts: EvalOptions): Promise<EvalRun> {
  const started = performance.now();
  const text = readDataText(opts.dataFile);

  const model = await loadModel(opts.model, opts.device);
  const baseline = opts.baseline !== undefined ? await loadModel(opts.baseline, opts.device) : undefined;

  const allTokens = tokenize(model, text, 'eval');
  if (allTokens.length < 2) throw new LlmoptError(`--data ${opts.dataFile}: no text to score (${allTokens.length} token after tokenizing)`);
  if (baseline) {
    if (baseline.spec.vocabSize !== model.spec.vocabSize) {
      throw new LlmoptError(`--baseline ${opts.baseline}: vocab size ${baseline.spec.vocabSize} differs from the model's ${model.spec.vocabSize}; KLD needs one tokenizer`);
    }
    if (!sameIds(tokenize(baseline, text, '--baseline'), allTokens)) {
      throw new LlmoptError(`--baseline ${opts.baseline}: its tokenizer gives different ids for --data than the model's; KLD needs one tokenizer`);
    }
  }

  const tokens = opts.maxTokens !== undefined ? allTokens.subarray(0, opts.maxTokens) : allTokens;
  const protocol = chooseProtocol(opts, model.spec.maxPositionEmbeddings);
  const windows = makeWindows(protocol, tokens.length);
  if (windows.length === 0) {
    throw new LlmoptError(
      `--data ${opts.dataFile}: ${tokens.length} tokens are fewer than one ${protocol.window}-token window; use --keep-last or a smaller --seq-len`,
    );
  }
  const batch = opts.batch ?? defaultBatch(protocol.window, model.spec);

  opts.onStart?.(countScored(windows), protocolName(protocol));
  const result = await evaluatePerplexity({
    device: opts.device,
    model: model.decoder,
    baseline: baseline?.decoder,
    tokens,
    windows,
    batch,
    vocabSize: model.spec.vocabSize,
    onProgress: opts.onProgress,
  });

  return {
    model: opts.model,
    baseline: opts.baseline,
    dataFile: opts.dataFile,
    tokensInFile: allTokens.length,
    tokensUsed: tokens.length,
    maxTokens: opts.maxTokens,
    protocol,
    batch,
    dtype: opts.device.dtype,
    device: opts.deviceName,
    result,
    wallSeconds: (performance.now() - started) / 1000,
  };
}
