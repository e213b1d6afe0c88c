// Output folders appear whole or not at all: everything is written into a temporary sibling
// (same file system, so rename is atomic), fsynced, then renamed into place. Inputs are never
// modified: an output that is, contains, or sits inside an input is refused.

import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { LlmoptError } from '../errors.js';

export interface WriteOutputDirOptions {
  /** Replace an existing outDir (the old one is removed only after the new one is in place). */
  overwrite?: boolean;
  /** Files or folders the command reads; outDir may not be, contain, or be inside any of them. */
  inputs?: string[];
}

/** Absolute path with symlinks resolved, also for paths that do not exist yet (their existing ancestor is resolved). */
function realResolve(p: string): string {
  const abs = path.resolve(p);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(fs.realpathSync(cur), ...rest.reverse());
    } catch {
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      rest.push(path.basename(cur));
      cur = parent;
    }
  }
}

/** True when `inner` is `outer` or lies under it. */
function isWithin(inner: string, outer: string): boolean {
  const rel = path.relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** Throws LlmoptError when outDir is, contains, or lies inside one of `inputs` (writeOutputDir checks this too; commands call it up front). */
export function checkNotAnInput(outDir: string, inputs: readonly string[]): void {
  const out = realResolve(outDir);
  for (const input of inputs) {
    const inp = realResolve(input);
    if (out === inp) throw new LlmoptError(`${outDir}: the output folder is the input ${input}; inputs are never overwritten`);
    if (isWithin(out, inp)) throw new LlmoptError(`${outDir}: the output folder is inside the input ${input}; choose a folder outside it`);
    if (isWithin(inp, out)) throw new LlmoptError(`${outDir}: the output folder contains the input ${input}; choose another folder`);
  }
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsyncs every file and folder under `dir` (and `dir` itself), so a rename publishes durable data. */
function fsyncTree(dir: string): void {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) fsyncTree(p);
    else if (entry.isFile()) fsyncPath(p);
  }
  fsyncPath(dir);
}

function uniqueSuffix(): string {
  return `${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Creates `outDir` atomically: `fill` writes everything into a temporary sibling folder
 * (`<parent>/.<name>.tmp-<pid>-<random>`), which is then fsynced and renamed to outDir. On any error
 * the temporary folder is removed and the error rethrown; outDir is left as it was.
 */
export async function writeOutputDir<T>(
  outDir: string,
  fill: (tmpDir: string) => Promise<T>,
  opts: WriteOutputDirOptions = {},
): Promise<T> {
  const target = path.resolve(outDir);
  const parent = path.dirname(target);
  const name = path.basename(target);
  if (parent === target) throw new LlmoptError(`${outDir}: cannot write output to the file-system root`);
  checkNotAnInput(outDir, opts.inputs ?? []);

  const existing = fs.statSync(target, { throwIfNoEntry: false });
  if (existing) {
    if (!existing.isDirectory()) throw new LlmoptError(`${outDir}: exists and is not a folder; refusing to replace it`);
    if (!opts.overwrite) throw new LlmoptError(`${outDir}: already exists; refusing to replace it unless overwriting is allowed`);
  }
  try {
    fs.mkdirSync(parent, { recursive: true });
  } catch (e) {
    throw new LlmoptError(`${outDir}: cannot create the parent folder: ${(e as Error).message}`);
  }

  const tmp = path.join(parent, `.${name}.tmp-${uniqueSuffix()}`);
  fs.mkdirSync(tmp);
  try {
    const result = await fill(tmp);
    fsyncTree(tmp);
    if (fs.existsSync(target)) {
      if (!opts.overwrite) throw new LlmoptError(`${outDir}: appeared while the output was being written; not replacing it`);
      const old = path.join(parent, `.${name}.old-${uniqueSuffix()}`);
      fs.renameSync(target, old);
      try {
        fs.renameSync(tmp, target);
      } catch (e) {
        fs.renameSync(old, target);
        throw e;
      }
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmp, target);
    }
    fsyncPath(parent);
    return result;
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

export interface CopyFilesOptions {
  /** Skip names that do not exist in srcDir instead of failing. */
  missingOk?: boolean;
}

/**
 * Copies the named files (plain names, e.g. tokenizer.json) from srcDir to dstDir and returns the
 * names copied. A missing file is an error unless `missingOk`.
 */
export function copyFiles(srcDir: string, dstDir: string, names: readonly string[], opts: CopyFilesOptions = {}): string[] {
  const copied: string[] = [];
  for (const name of names) {
    if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\\')) {
      throw new LlmoptError(`copyFiles: "${name}" is not a plain file name`);
    }
    const src = path.join(srcDir, name);
    const stat = fs.statSync(src, { throwIfNoEntry: false });
    if (!stat) {
      if (opts.missingOk) continue;
      throw new LlmoptError(`${src}: not found`);
    }
    if (!stat.isFile()) throw new LlmoptError(`${src}: not a regular file`);
    const dst = path.join(dstDir, name);
    fs.copyFileSync(src, dst);
    // An output is the user's to edit: don't carry over a read-only input's mode.
    fs.chmodSync(dst, 0o644);
    copied.push(name);
  }
  return copied;
}
