import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlmoptError } from '../src/errors.js';
import { copyFiles, writeOutputDir } from '../src/io/atomic.js';
import { makeTempDir } from './helpers/safetensors-fixtures.js';

let tmp: string;
beforeAll(() => {
  tmp = makeTempDir('llmopt-atomic-');
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
function freshParent(): string {
  const d = path.join(tmp, `p${counter++}`);
  fs.mkdirSync(d);
  return d;
}

/** Names in `dir`, sorted; temp and old folders start with a dot. */
const ls = (dir: string) => fs.readdirSync(dir).sort();

async function writeTwoFiles(dir: string, marker: string): Promise<void> {
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ marker }));
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'sub', 'weights.bin'), Buffer.from([1, 2, 3]));
}

describe('writeOutputDir', () => {
  it('publishes the folder whole, through a hidden temporary sibling', async () => {
    const parent = freshParent();
    const out = path.join(parent, 'quantized');
    let seenTmp = '';
    const result = await writeOutputDir(out, async (tmpDir) => {
      seenTmp = tmpDir;
      expect(path.dirname(tmpDir)).toBe(parent);
      expect(path.basename(tmpDir)).toMatch(new RegExp(`^\\.quantized\\.tmp-${process.pid}-[0-9a-f]{12}$`));
      expect(fs.existsSync(out)).toBe(false);
      await writeTwoFiles(tmpDir, 'new');
      return 42;
    });
    expect(result).toBe(42);
    expect(ls(parent)).toEqual(['quantized']);
    expect(fs.existsSync(seenTmp)).toBe(false);
    expect(ls(out)).toEqual(['config.json', 'sub']);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'))).toEqual({ marker: 'new' });
    expect([...fs.readFileSync(path.join(out, 'sub', 'weights.bin'))]).toEqual([1, 2, 3]);
  });

  it('creates missing parent folders', async () => {
    const out = path.join(freshParent(), 'a', 'b', 'out');
    await writeOutputDir(out, (d) => writeTwoFiles(d, 'x'));
    expect(ls(out)).toEqual(['config.json', 'sub']);
  });

  it('leaves nothing behind when fill fails', async () => {
    const parent = freshParent();
    const out = path.join(parent, 'out');
    const boom = new Error('disk on fire');
    await expect(
      writeOutputDir(out, async (d) => {
        await writeTwoFiles(d, 'partial');
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(ls(parent)).toEqual([]);
  });

  it('refuses an existing folder unless overwriting, and then replaces it whole', async () => {
    const parent = freshParent();
    const out = path.join(parent, 'out');
    await writeOutputDir(out, (d) => writeTwoFiles(d, 'first'));
    let called = false;
    await expect(
      writeOutputDir(out, async () => {
        called = true;
      }),
    ).rejects.toThrow(new LlmoptError(`${out}: already exists; refusing to replace it unless overwriting is allowed`));
    expect(called).toBe(false);

    // A failed overwrite keeps the old folder intact.
    await expect(
      writeOutputDir(
        out,
        async (d) => {
          fs.writeFileSync(path.join(d, 'config.json'), 'half');
          throw new Error('interrupted');
        },
        { overwrite: true },
      ),
    ).rejects.toThrow('interrupted');
    expect(ls(parent)).toEqual(['out']);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'))).toEqual({ marker: 'first' });

    await writeOutputDir(out, async (d) => fs.writeFileSync(path.join(d, 'only.txt'), 'second'), { overwrite: true });
    expect(ls(parent)).toEqual(['out']);
    expect(ls(out)).toEqual(['only.txt']);
  });

  it('refuses a path that is an existing file', async () => {
    const parent = freshParent();
    const file = path.join(parent, 'model.safetensors');
    fs.writeFileSync(file, 'x');
    await expect(writeOutputDir(file, async () => {}, { overwrite: true })).rejects.toThrow(`${file}: exists and is not a folder`);
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  it('never writes onto, into or around an input', async () => {
    const parent = freshParent();
    const model = path.join(parent, 'model');
    fs.mkdirSync(model);
    fs.writeFileSync(path.join(model, 'model.safetensors'), 'weights');
    const link = path.join(parent, 'link-to-model');
    fs.symlinkSync(model, link);
    const fill = async (d: string) => writeTwoFiles(d, 'x');

    await expect(writeOutputDir(model, fill, { overwrite: true, inputs: [model] })).rejects.toThrow(
      `${model}: the output folder is the input ${model}; inputs are never overwritten`,
    );
    await expect(writeOutputDir(link, fill, { overwrite: true, inputs: [model] })).rejects.toThrow(/the output folder is the input/);
    await expect(writeOutputDir(path.join(model, 'q'), fill, { inputs: [model] })).rejects.toThrow(/the output folder is inside the input/);
    await expect(writeOutputDir(path.join(link, 'q', 'r'), fill, { inputs: [model] })).rejects.toThrow(/is inside the input/);
    // An input file inside the output folder would be deleted by the overwrite.
    await expect(writeOutputDir(parent, fill, { overwrite: true, inputs: [path.join(model, 'model.safetensors')] })).rejects.toThrow(
      /the output folder contains the input .*model.safetensors/,
    );
    // A sibling whose name merely starts with the input's name is fine.
    await writeOutputDir(`${model}-fp8`, fill, { inputs: [model] });
    expect(ls(parent)).toEqual(['link-to-model', 'model', 'model-fp8']);
    expect(ls(model)).toEqual(['model.safetensors']);
  });
});

describe('copyFiles', () => {
  it('copies named files, optionally skipping missing ones', () => {
    const src = freshParent();
    const dst = freshParent();
    fs.writeFileSync(path.join(src, 'tokenizer.json'), '{"a":1}');
    fs.writeFileSync(path.join(src, 'tokenizer_config.json'), '{}');
    expect(copyFiles(src, dst, ['tokenizer.json', 'special_tokens_map.json', 'tokenizer_config.json'], { missingOk: true })).toEqual([
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    expect(ls(dst)).toEqual(['tokenizer.json', 'tokenizer_config.json']);
    expect(fs.readFileSync(path.join(dst, 'tokenizer.json'), 'utf8')).toBe('{"a":1}');
    expect(() => copyFiles(src, dst, ['special_tokens_map.json'])).toThrow(`${path.join(src, 'special_tokens_map.json')}: not found`);
    expect(() => copyFiles(src, dst, ['../x'])).toThrow(/not a plain file name/);
    fs.mkdirSync(path.join(src, 'dir'));
    expect(() => copyFiles(src, dst, ['dir'])).toThrow(/not a regular file/);
  });
});
