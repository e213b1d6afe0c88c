import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, LlmoptError, SafetensorsError } from '../src/errors.js';
import { CheckpointTensors, readJsonFile, resolveModelPath, writeCheckpointTensors } from '../src/io/checkpoint.js';
import type { DType } from '../src/io/dtypes.js';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { bytesOf, makeTempDir, mulberry32, randomBytes } from './helpers/safetensors-fixtures.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const storiesDir = path.resolve(root, '../shared/models/stories260K');

let tmp: string;
beforeAll(() => {
  tmp = makeTempDir('llmopt-ckpt-');
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let dirCounter = 0;
function freshDir(withConfig = true): string {
  const d = path.join(tmp, `m${dirCounter++}`);
  fs.mkdirSync(d);
  if (withConfig) fs.writeFileSync(path.join(d, 'config.json'), '{"model_type": "llama"}\n');
  return d;
}

const rand = mulberry32(11);
function t(name: string, dtype: DType, shape: number[]): TensorToWrite & { data: Uint8Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const size = { F32: 4, BF16: 2, U8: 1, I32: 4 }[dtype as 'F32'] ?? 4;
  return { name, dtype, shape, data: randomBytes(rand, n * size) };
}

describe('writeCheckpointTensors', () => {
  it('shards like transformers and reads back through the index', () => {
    const dir = freshDir();
    // Sizes 40, 24, 16, 40, 8, 32 bytes with maxShardBytes 64 → [40+24], [16+40+8], [32].
    const tensors = [
      t('model.embed_tokens.weight', 'F32', [10]),
      t('model.layers.0.q_proj.weight', 'BF16', [3, 4]),
      t('model.layers.0.k_proj.weight', 'U8', [16]),
      t('model.layers.1.q_proj.weight', 'F32', [2, 5]),
      t('model.layers.1.k_proj.weight', 'I32', [2]),
      t('model.norm.weight', 'F32', [8]),
    ];
    const written = writeCheckpointTensors(dir, tensors, { maxShardBytes: 64 });
    const shardNames = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'];
    expect(written.files).toEqual(shardNames.map((n) => path.join(dir, n)));
    expect(written.totalSize).toBe(160);
    expect(written.indexFile).toBe(path.join(dir, 'model.safetensors.index.json'));
    expect(fs.existsSync(path.join(dir, 'model.safetensors'))).toBe(false);

    // Byte for byte what json.dumps(index, indent=2, sort_keys=True) + "\n" gives.
    const expectedIndex = [
      '{',
      '  "metadata": {',
      '    "total_size": 160',
      '  },',
      '  "weight_map": {',
      '    "model.embed_tokens.weight": "model-00001-of-00003.safetensors",',
      '    "model.layers.0.k_proj.weight": "model-00002-of-00003.safetensors",',
      '    "model.layers.0.q_proj.weight": "model-00001-of-00003.safetensors",',
      '    "model.layers.1.k_proj.weight": "model-00002-of-00003.safetensors",',
      '    "model.layers.1.q_proj.weight": "model-00002-of-00003.safetensors",',
      '    "model.norm.weight": "model-00003-of-00003.safetensors"',
      '  }',
      '}',
      '',
    ].join('\n');
    expect(fs.readFileSync(written.indexFile!, 'utf8')).toBe(expectedIndex);

    const resolved = resolveModelPath(dir);
    expect(resolved).toEqual({
      dir,
      configFile: path.join(dir, 'config.json'),
      weightFiles: written.files,
      indexFile: written.indexFile,
    });
    const ckpt = CheckpointTensors.open(resolved);
    try {
      expect(ckpt.names().sort()).toEqual(tensors.map((x) => x.name).sort());
      expect(ckpt.metadata).toEqual({ format: 'pt' });
      expect(ckpt.indexMetadata).toEqual({ total_size: 160 });
      for (const x of tensors) {
        expect(ckpt.has(x.name)).toBe(true);
        expect(ckpt.readBytes(x.name)).toEqual(x.data);
        const info = ckpt.info(x.name);
        expect(info.dtype).toBe(x.dtype);
        expect(info.shape).toEqual(x.shape);
      }
      expect(path.basename(ckpt.info('model.norm.weight').file)).toBe(shardNames[2]);
      expect([...ckpt.readFloat32('model.layers.1.k_proj.weight')]).toEqual([...new Int32Array(tensors[4]!.data.buffer)].map(Math.fround));
      expect(ckpt.has('lm_head.weight')).toBe(false);
      expect(() => ckpt.readBytes('lm_head.weight')).toThrow(/3 shards .*: no tensor "lm_head.weight" in this checkpoint/);
    } finally {
      ckpt.close();
    }
  });

  it('puts a tensor larger than the limit in its own shard, as huggingface_hub does', () => {
    const dir = freshDir();
    const tensors = [t('a', 'U8', [4]), t('big', 'U8', [12]), t('c', 'U8', [4])];
    const written = writeCheckpointTensors(dir, tensors, { maxShardBytes: 10 });
    const index = readJsonFile(written.indexFile!) as { weight_map: Record<string, string> };
    expect(index.weight_map).toEqual({
      a: 'model-00002-of-00002.safetensors',
      big: 'model-00001-of-00002.safetensors',
      c: 'model-00002-of-00002.safetensors',
    });
    const ckpt = CheckpointTensors.open(dir);
    expect(ckpt.readBytes('big')).toEqual(tensors[1]!.data);
    ckpt.close();
  });

  it('writes one model.safetensors when everything fits, with user metadata', () => {
    const dir = freshDir();
    const calls: string[] = [];
    const tensors: TensorToWrite[] = ['x', 'y'].map((name) => ({
      name,
      dtype: 'F32',
      shape: [2],
      data: () => {
        calls.push(name);
        return bytesOf(Float32Array.from([name === 'x' ? 1 : 2, 3]));
      },
    }));
    const written = writeCheckpointTensors(dir, tensors, { metadata: { producer: 'llmopt' } });
    expect(written).toEqual({ files: [path.join(dir, 'model.safetensors')], totalSize: 16 });
    expect(calls).toEqual(['x', 'y']);
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors']);
    const ckpt = CheckpointTensors.open(resolveModelPath(dir));
    expect(ckpt.metadata).toEqual({ format: 'pt', producer: 'llmopt' });
    expect(ckpt.indexMetadata).toBeUndefined();
    expect([...ckpt.readFloat32('y')]).toEqual([2, 3]);
    ckpt.close();
  });
});

describe('index validation', () => {
  function shardedDir(): string {
    const dir = freshDir();
    writeCheckpointTensors(dir, [t('a', 'U8', [4]), t('b', 'U8', [4]), t('c', 'U8', [4])], { maxShardBytes: 8 });
    return dir;
  }
  const indexPath = (dir: string) => path.join(dir, 'model.safetensors.index.json');
  function editIndex(dir: string, edit: (index: { metadata?: unknown; weight_map: Record<string, unknown> }) => void): void {
    const index = JSON.parse(fs.readFileSync(indexPath(dir), 'utf8'));
    edit(index);
    fs.writeFileSync(indexPath(dir), JSON.stringify(index));
  }
  function openError(dir: string): Error {
    try {
      CheckpointTensors.open(resolveModelPath(dir)).close();
    } catch (e) {
      expect(e).toBeInstanceOf(LlmoptError);
      return e as Error;
    }
    throw new Error('opened');
  }

  it('rejects a shard that does not exist', () => {
    const dir = shardedDir();
    editIndex(dir, (i) => (i.weight_map.c = 'model-00009-of-00009.safetensors'));
    const err = openError(dir);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toBe(`${indexPath(dir)}: weight_map["c"] names model-00009-of-00009.safetensors, which does not exist in ${dir}`);
  });

  it('rejects a tensor mapped to the wrong shard, or to a shard without it', () => {
    const dir = shardedDir();
    editIndex(dir, (i) => (i.weight_map.a = 'model-00002-of-00002.safetensors'));
    expect(openError(dir).message).toBe(
      `${indexPath(dir)}: weight_map puts "a" in model-00002-of-00002.safetensors, but it is in model-00001-of-00002.safetensors`,
    );
    editIndex(dir, (i) => {
      i.weight_map.a = 'model-00001-of-00002.safetensors';
      i.weight_map.ghost = 'model-00001-of-00002.safetensors';
    });
    expect(openError(dir).message).toMatch(/weight_map puts "ghost" in model-00001-of-00002.safetensors, which does not contain it/);
  });

  it('rejects a tensor that is in two shards or missing from weight_map', () => {
    const dir = shardedDir();
    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [t('c', 'U8', [4]), t('a', 'U8', [1])], { format: 'pt' });
    const err = openError(dir);
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toMatch(/model-00002-of-00002.safetensors: tensor "a": tensor is also in .*model-00001-of-00002.safetensors/);

    writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [t('c', 'U8', [4]), t('extra', 'U8', [1])], { format: 'pt' });
    expect(openError(dir).message).toMatch(/tensor "extra" in model-00002-of-00002.safetensors is missing from weight_map/);
  });

  it('rejects malformed indexes', () => {
    const dir = shardedDir();
    editIndex(dir, (i) => (i.weight_map.c = '../elsewhere.safetensors'));
    expect(openError(dir).message).toMatch(/weight_map\["c"\] = "..\/elsewhere.safetensors" points outside the checkpoint folder/);
    editIndex(dir, (i) => (i.weight_map.c = 5));
    expect(openError(dir).message).toMatch(/weight_map\["c"\] must be a file name, found 5/);
    editIndex(dir, (i) => (i.weight_map = [] as unknown as Record<string, unknown>));
    expect(openError(dir).message).toMatch(/"weight_map" must be an object/);
    editIndex(dir, (i) => (i.weight_map = {}));
    expect(openError(dir).message).toMatch(/"weight_map" is empty/);
    fs.writeFileSync(indexPath(dir), '{\n  "weight_map": {\n    "a": "x",\n  }\n}\n');
    expect(openError(dir).message).toBe(`${indexPath(dir)}: invalid JSON at line 4 col 3: expected a property name in double quotes, found '}'`);
  });
});

describe('resolveModelPath', () => {
  it('resolves the stories260K folder and its weights file', () => {
    expect(resolveModelPath(storiesDir)).toEqual({
      dir: storiesDir,
      configFile: path.join(storiesDir, 'config.json'),
      weightFiles: [path.join(storiesDir, 'model.safetensors')],
    });
    expect(resolveModelPath(path.join(storiesDir, 'model.safetensors')).weightFiles).toEqual([path.join(storiesDir, 'model.safetensors')]);
    const ckpt = CheckpointTensors.open(storiesDir);
    expect(ckpt.names()).toHaveLength(47); // 5 layers × 9 + embeddings + final norm (lm_head tied)
    expect(ckpt.info('model.norm.weight')).toMatchObject({ dtype: 'F32', shape: [64], file: path.join(storiesDir, 'model.safetensors') });
    expect(ckpt.readFloat32('model.norm.weight').some((v) => v !== 0)).toBe(true);
    ckpt.close();
  });

  it('accepts a single safetensors file with another name', () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, 'weights.safetensors'), [t('a', 'U8', [1])]);
    expect(resolveModelPath(dir).weightFiles).toEqual([path.join(dir, 'weights.safetensors')]);
  });

  it('says what is wrong, naming the path', () => {
    const missing = path.join(tmp, 'no-such-model');
    expect(() => resolveModelPath(missing)).toThrow(new LlmoptError(`${missing}: no such file or folder`));

    const noConfig = freshDir(false);
    writeSafetensors(path.join(noConfig, 'model.safetensors'), [t('a', 'U8', [1])]);
    expect(() => resolveModelPath(noConfig)).toThrow(ConfigError);
    expect(() => resolveModelPath(noConfig)).toThrow(`${path.join(noConfig, 'config.json')}: not found: the model folder ${noConfig} needs a config.json`);
    expect(() => resolveModelPath(path.join(noConfig, 'model.safetensors'))).toThrow(/config.json: not found: .*model.safetensors needs a config.json beside it/);

    const noWeights = freshDir();
    fs.writeFileSync(path.join(noWeights, 'pytorch_model.bin'), 'x');
    expect(() => resolveModelPath(noWeights)).toThrow(
      `${noWeights}: no weights: expected model.safetensors, model.safetensors.index.json or one *.safetensors file; found pytorch_model.bin: only safetensors weights are supported`,
    );

    const two = freshDir();
    writeSafetensors(path.join(two, 'a.safetensors'), [t('a', 'U8', [1])]);
    writeSafetensors(path.join(two, 'b.safetensors'), [t('b', 'U8', [1])]);
    expect(() => resolveModelPath(two)).toThrow(/2 .safetensors files \(a.safetensors, b.safetensors\) but no model.safetensors.index.json/);

    expect(() => resolveModelPath(path.join(two, 'config.json'))).toThrow(/config.json: not a model folder or a .safetensors file/);
  });
});

describe('readJsonFile', () => {
  it('parses JSON, tolerating a byte order mark', () => {
    const f = path.join(tmp, 'ok.json');
    fs.writeFileSync(f, '\ufeff{"a": [1, 2.5, "x"], "b": null}');
    expect(readJsonFile(f)).toEqual({ a: [1, 2.5, 'x'], b: null });
  });

  it('reports invalid JSON with line and column, and unreadable files', () => {
    const f = path.join(tmp, 'bad.json');
    fs.writeFileSync(f, '{\n  "hidden_size": 64,\n  "eps": 1e-,\n}');
    expect(() => readJsonFile(f)).toThrow(new ConfigError(f, "invalid JSON at line 3 col 13: expected a digit in the exponent, found ','"));
    fs.writeFileSync(f, '{"a": 1} trailing');
    expect(() => readJsonFile(f)).toThrow(/invalid JSON at line 1 col 10: unexpected 't' after the JSON value/);
    fs.writeFileSync(f, '');
    expect(() => readJsonFile(f)).toThrow(/invalid JSON at line 1 col 1: empty input/);
    const missing = path.join(tmp, 'missing.json');
    expect(() => readJsonFile(missing)).toThrow(ConfigError);
    expect(() => readJsonFile(missing)).toThrow(new RegExp(`^${missing}: cannot read: ENOENT`));
  });
});
