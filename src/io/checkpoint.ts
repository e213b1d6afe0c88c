// Checkpoint folders in Hugging Face layout: config.json beside model.safetensors, or beside shards
// listed by model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map": {tensor: file}}).

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, LlmoptError, SafetensorsError } from '../errors.js';
import { describeJsonProblem, parseJsonStrict } from './json.js';
import { SafetensorsReader, safetensorsLayout, writeSafetensors, type TensorInfo, type TensorToWrite } from './safetensors.js';

export const CONFIG_FILE = 'config.json';
export const SINGLE_WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';
/** transformers' default max_shard_size ("5GB" = 5·10^9 bytes). */
export const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

export interface ResolvedModelPath {
  /** Absolute folder holding config.json and the weights. */
  dir: string;
  configFile: string;
  /** Absolute paths of the safetensors files (shards in index order). */
  weightFiles: string[];
  /** Absolute path of model.safetensors.index.json when the weights are sharded. */
  indexFile?: string;
}

/** Reads and parses a JSON file; ConfigError on an unreadable file or invalid JSON (with line and column). */
export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, `cannot read: ${(e as Error).message}`);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // UTF-8 byte order mark
  const parsed = parseJsonStrict(text);
  if (!parsed.ok) throw new ConfigError(file, describeJsonProblem(parsed.problem));
  return parsed.value;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

interface WeightIndex {
  metadata: Record<string, unknown> | undefined;
  /** tensor name → absolute shard path */
  weightMap: Map<string, string>;
  /** Absolute shard paths in first-mention order. */
  files: string[];
}

function readWeightIndex(indexFile: string): WeightIndex {
  const dir = path.dirname(indexFile);
  const json = readJsonFile(indexFile);
  if (!isPlainObject(json)) throw new ConfigError(indexFile, 'must be a JSON object with "weight_map"');
  const { metadata, weight_map: weightMap } = json;
  if (metadata !== undefined && !isPlainObject(metadata)) throw new ConfigError(indexFile, '"metadata" must be an object');
  if (!isPlainObject(weightMap)) throw new ConfigError(indexFile, '"weight_map" must be an object of tensor name → file name');
  const map = new Map<string, string>();
  const files: string[] = [];
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || shard === '') {
      throw new ConfigError(indexFile, `weight_map["${tensor}"] must be a file name, found ${JSON.stringify(shard)}`);
    }
    const segments = shard.split(/[\\/]/);
    if (path.isAbsolute(shard) || segments.includes('..')) {
      throw new ConfigError(indexFile, `weight_map["${tensor}"] = "${shard}" points outside the checkpoint folder`);
    }
    const abs = path.join(dir, shard);
    if (!files.includes(abs)) {
      if (!fs.existsSync(abs)) throw new ConfigError(indexFile, `weight_map["${tensor}"] names ${shard}, which does not exist in ${dir}`);
      files.push(abs);
    }
    map.set(tensor, abs);
  }
  if (files.length === 0) throw new ConfigError(indexFile, '"weight_map" is empty');
  return { metadata: metadata as Record<string, unknown> | undefined, weightMap: map, files };
}

function folderWeights(dir: string, configFile: string): ResolvedModelPath {
  const single = path.join(dir, SINGLE_WEIGHTS_FILE);
  if (fs.existsSync(single)) return { dir, configFile, weightFiles: [single] };
  const indexFile = path.join(dir, WEIGHTS_INDEX_FILE);
  if (fs.existsSync(indexFile)) return { dir, configFile, weightFiles: readWeightIndex(indexFile).files, indexFile };
  const entries = fs.readdirSync(dir);
  const safetensors = entries.filter((f) => f.endsWith('.safetensors')).sort();
  if (safetensors.length === 1) return { dir, configFile, weightFiles: [path.join(dir, safetensors[0]!)] };
  if (safetensors.length > 1) {
    throw new LlmoptError(
      `${dir}: ${safetensors.length} .safetensors files (${safetensors.join(', ')}) but no ${WEIGHTS_INDEX_FILE} saying which tensors each holds`,
    );
  }
  const other = entries.filter((f) => /\.(bin|pt|pth|gguf|ckpt)$/.test(f));
  const hint = other.length > 0 ? `; found ${other.join(', ')}: only safetensors weights are supported` : '';
  throw new LlmoptError(`${dir}: no weights: expected ${SINGLE_WEIGHTS_FILE}, ${WEIGHTS_INDEX_FILE} or one *.safetensors file${hint}`);
}

/**
 * Resolves `<model>`: a folder with config.json and weights (model.safetensors, a sharded
 * model.safetensors.index.json, or a single *.safetensors), or a .safetensors file with config.json beside it.
 */
export function resolveModelPath(p: string): ResolvedModelPath {
  const abs = path.resolve(p);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch {
    throw new LlmoptError(`${p}: no such file or folder`);
  }
  if (stat.isDirectory()) {
    const configFile = path.join(abs, CONFIG_FILE);
    if (!fs.existsSync(configFile)) throw new ConfigError(configFile, `not found: the model folder ${p} needs a config.json`);
    return folderWeights(abs, configFile);
  }
  if (!abs.endsWith('.safetensors')) {
    throw new LlmoptError(`${p}: not a model folder or a .safetensors file`);
  }
  const dir = path.dirname(abs);
  const configFile = path.join(dir, CONFIG_FILE);
  if (!fs.existsSync(configFile)) throw new ConfigError(configFile, `not found: ${p} needs a config.json beside it`);
  return { dir, configFile, weightFiles: [abs] };
}

/** All tensors of a checkpoint (one file or a sharded set), read lazily by name. */
export class CheckpointTensors {
  private constructor(
    private readonly readers: SafetensorsReader[],
    /** tensor name → reader, in file order then offset order */
    private readonly owner: Map<string, SafetensorsReader>,
    /** The first weights file's "__metadata__" (transformers writes {"format": "pt"} in every shard). */
    readonly metadata: Record<string, string> | undefined,
    /** The index file's "metadata" object (e.g. total_size) when sharded. */
    readonly indexMetadata: Record<string, unknown> | undefined,
  ) {}

  /** Opens every weights file. For a sharded index, checks it against the shards' contents. */
  static open(resolved: ResolvedModelPath | string): CheckpointTensors {
    const r = typeof resolved === 'string' ? resolveModelPath(resolved) : resolved;
    const readers: SafetensorsReader[] = [];
    try {
      for (const f of r.weightFiles) readers.push(SafetensorsReader.open(f));
      const owner = new Map<string, SafetensorsReader>();
      for (const reader of readers) {
        for (const name of reader.tensors.keys()) {
          const other = owner.get(name);
          if (other) {
            throw new SafetensorsError(reader.file, name, `tensor is also in ${other.file}: each tensor must be in exactly one shard`);
          }
          owner.set(name, reader);
        }
      }
      let indexMetadata: Record<string, unknown> | undefined;
      if (r.indexFile !== undefined) {
        const index = readWeightIndex(r.indexFile);
        indexMetadata = index.metadata;
        checkIndexAgainstShards(r.indexFile, index, owner);
      }
      return new CheckpointTensors(readers, owner, readers[0]?.metadata, indexMetadata);
    } catch (e) {
      for (const reader of readers) reader.close();
      throw e;
    }
  }

  /** All tensor names, shard by shard, in file order. */
  names(): string[] {
    return [...this.owner.keys()];
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  /** The files this checkpoint reads. */
  files(): string[] {
    return this.readers.map((r) => r.file);
  }

  info(name: string): TensorInfo & { file: string } {
    return { ...this.reader(name).info(name), file: this.reader(name).file };
  }

  readBytes(name: string): Uint8Array<ArrayBuffer> {
    return this.reader(name).readBytes(name);
  }

  readFloat32(name: string): Float32Array<ArrayBuffer> {
    return this.reader(name).readFloat32(name);
  }

  close(): void {
    for (const r of this.readers) r.close();
  }

  private reader(name: string): SafetensorsReader {
    const r = this.owner.get(name);
    if (!r) {
      const where = this.readers.length === 1 ? this.readers[0]!.file : `${this.readers.length} shards (${path.dirname(this.readers[0]!.file)})`;
      throw new LlmoptError(`${where}: no tensor "${name}" in this checkpoint`);
    }
    return r;
  }
}

function checkIndexAgainstShards(indexFile: string, index: WeightIndex, owner: Map<string, SafetensorsReader>): void {
  for (const [tensor, file] of index.weightMap) {
    const actual = owner.get(tensor);
    if (!actual) {
      throw new ConfigError(indexFile, `weight_map puts "${tensor}" in ${path.basename(file)}, which does not contain it`);
    }
    if (actual.file !== file) {
      throw new ConfigError(indexFile, `weight_map puts "${tensor}" in ${path.basename(file)}, but it is in ${path.basename(actual.file)}`);
    }
  }
  for (const [tensor, reader] of owner) {
    if (!index.weightMap.has(tensor)) {
      throw new ConfigError(indexFile, `tensor "${tensor}" in ${path.basename(reader.file)} is missing from weight_map`);
    }
  }
}

// --- writing -------------------------------------------------------------------------------------

export interface WriteCheckpointOptions {
  /** Largest shard (sum of tensor bytes) before splitting; default 5·10^9 like transformers. */
  maxShardBytes?: number;
  /** Safetensors "__metadata__" for every file; "format": "pt" is added unless given (transformers requires it). */
  metadata?: Record<string, string>;
}

export interface WrittenCheckpoint {
  /** Absolute paths of the weight files written. */
  files: string[];
  /** Absolute path of model.safetensors.index.json when sharded. */
  indexFile?: string;
  /** Sum of all tensors' byte sizes (the index's metadata.total_size). */
  totalSize: number;
}

/** huggingface_hub's split_state_dict_into_shards_factory: greedy in order; an oversized tensor gets its own shard. */
function planShards(tensors: readonly TensorToWrite[], sizes: number[], maxShardBytes: number): TensorToWrite[][] {
  const shards: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [];
  let currentSize = 0;
  tensors.forEach((t, i) => {
    const size = sizes[i]!;
    if (size > maxShardBytes) {
      shards.push([t]);
      return;
    }
    if (currentSize + size > maxShardBytes) {
      shards.push(current);
      current = [];
      currentSize = 0;
    }
    current.push(t);
    currentSize += size;
  });
  if (current.length > 0 || shards.length === 0) shards.push(current);
  return shards;
}

/** JSON as Python's json.dumps(obj, indent=2, sort_keys=True) writes it (ASCII-escaped). */
function pythonJsonDumps(value: unknown): string {
  const sortKeys = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sortKeys);
    if (isPlainObject(v)) {
      const out = Object.create(null) as Record<string, unknown>;
      for (const k of Object.keys(v).sort()) out[k] = sortKeys(v[k]);
      return out;
    }
    return v;
  };
  // Python sorts by code point; JS sort compares UTF-16 units, which differs only above U+FFFF.
  return JSON.stringify(sortKeys(value), null, 2).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * Writes tensors into `dir` as transformers does: one model.safetensors when everything fits in
 * maxShardBytes, else model-0000i-of-0000N.safetensors shards plus model.safetensors.index.json.
 * Producers are called one at a time, so only one tensor is in memory.
 */
export function writeCheckpointTensors(dir: string, tensors: readonly TensorToWrite[], opts: WriteCheckpointOptions = {}): WrittenCheckpoint {
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new RangeError(`maxShardBytes must be positive, got ${maxShardBytes}`);
  const metadata = { format: 'pt', ...opts.metadata };
  const absDir = path.resolve(dir);
  fs.mkdirSync(absDir, { recursive: true });

  // Validates names, dtypes and shapes for the whole set before anything is written.
  const layout = safetensorsLayout(path.join(absDir, SINGLE_WEIGHTS_FILE), tensors, metadata);
  const sizeOf = new Map(layout.entries.map((e) => [e.tensor, e.end - e.begin]));
  const sizes = tensors.map((t) => sizeOf.get(t)!);
  const totalSize = sizes.reduce((a, b) => a + b, 0);
  const shards = planShards(tensors, sizes, maxShardBytes);

  if (shards.length === 1) {
    const file = path.join(absDir, SINGLE_WEIGHTS_FILE);
    writeSafetensors(file, tensors, metadata);
    return { files: [file], totalSize };
  }
  const n = shards.length;
  const pad = (i: number): string => String(i).padStart(5, '0');
  const files: string[] = [];
  const weightMap: Record<string, string> = Object.create(null) as Record<string, string>;
  shards.forEach((shard, i) => {
    const name = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    const file = path.join(absDir, name);
    writeSafetensors(file, shard, metadata);
    files.push(file);
    for (const t of shard) weightMap[t.name] = name;
  });
  const indexFile = path.join(absDir, WEIGHTS_INDEX_FILE);
  const index = { metadata: { total_size: totalSize }, weight_map: weightMap };
  const fd = fs.openSync(indexFile, 'w');
  try {
    fs.writeSync(fd, `${pythonJsonDumps(index)}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return { files, indexFile, totalSize };
}
