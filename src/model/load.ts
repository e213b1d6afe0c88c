// A model folder (or .safetensors file) → spec, decoder on a device, tokenizer.

import fs from 'node:fs';
import path from 'node:path';
import { CheckpointTensors, readJsonFile, resolveModelPath } from '../io/checkpoint.js';
import type { Device } from '../tensor/device.js';
import { parseModelConfig } from './config.js';
import { Decoder } from './decoder.js';
import type { ModelSpec } from './spec.js';
import { TextTokenizer, TOKENIZER_FILE } from './tokenizer.js';
import { loadDecoderWeights } from './weights.js';

export interface LoadedModel {
  spec: ModelSpec;
  decoder: Decoder;
  /** Present when the folder has a tokenizer.json. */
  tokenizer?: TextTokenizer;
  /** The checkpoint the weights came from, already closed: names() and info() work, reading data does not. */
  checkpoint: CheckpointTensors;
  paths: ReturnType<typeof resolveModelPath>;
}

/** Resolves `modelPath`, parses config.json, uploads the weights to `device`, loads the tokenizer. */
export async function loadModel(modelPath: string, device: Device): Promise<LoadedModel> {
  const paths = resolveModelPath(modelPath);
  const spec = parseModelConfig(readJsonFile(paths.configFile), paths.configFile);
  const tokenizer = fs.existsSync(path.join(paths.dir, TOKENIZER_FILE)) ? await TextTokenizer.load(paths.dir) : undefined;
  const checkpoint = CheckpointTensors.open(paths);
  let decoder: Decoder;
  try {
    decoder = new Decoder(spec, loadDecoderWeights(spec, checkpoint, device), device);
  } finally {
    checkpoint.close();
  }
  return { spec, decoder, tokenizer, checkpoint, paths };
}
