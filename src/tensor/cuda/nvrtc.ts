// NVRTC: compiles our .cu kernel sources for the GPU's own architecture at run time. Cubins are
// cached on disk ($XDG_CACHE_HOME/llmopt/cubin or ~/.cache/llmopt/cubin), keyed by a hash of the
// source, headers, options, target arch and NVRTC version, so a kernel compiles once per machine.

import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LibraryHandle } from 'koffi';
import { CudaError } from './errors.js';
import { bindFirst, openLibrary, type NativeFunction } from './libs.js';

interface NvrtcFunctions {
  nvrtcVersion: NativeFunction;
  nvrtcGetErrorString: NativeFunction;
  nvrtcCreateProgram: NativeFunction;
  nvrtcCompileProgram: NativeFunction;
  nvrtcGetProgramLogSize: NativeFunction;
  nvrtcGetProgramLog: NativeFunction;
  nvrtcGetCUBINSize: NativeFunction;
  nvrtcGetCUBIN: NativeFunction;
  nvrtcDestroyProgram: NativeFunction;
}

function bindNvrtc(lib: LibraryHandle): NvrtcFunctions {
  const f = (proto: string) => bindFirst(lib, [proto]);
  return {
    nvrtcVersion: f('int nvrtcVersion(void *major, void *minor)'),
    nvrtcGetErrorString: f('const char *nvrtcGetErrorString(int result)'),
    nvrtcCreateProgram: f(
      'int nvrtcCreateProgram(void *prog, const char *src, const char *name, int numHeaders, ' +
        'const char **headers, const char **includeNames)',
    ),
    nvrtcCompileProgram: f('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)'),
    nvrtcGetProgramLogSize: f('int nvrtcGetProgramLogSize(void *prog, void *size)'),
    nvrtcGetProgramLog: f('int nvrtcGetProgramLog(void *prog, void *log)'),
    nvrtcGetCUBINSize: f('int nvrtcGetCUBINSize(void *prog, void *size)'),
    nvrtcGetCUBIN: f('int nvrtcGetCUBIN(void *prog, void *cubin)'),
    nvrtcDestroyProgram: f('int nvrtcDestroyProgram(void *prog)'),
  };
}

export function cubinCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'llmopt', 'cubin');
}

/** `sm_90a` on Hopper (to allow its arch-specific instructions), `sm_XY` elsewhere. */
export function gpuArchitecture(major: number, minor: number): string {
  return major === 9 && minor === 0 ? 'sm_90a' : `sm_${major}${minor}`;
}

export class Nvrtc {
  readonly path: string;
  readonly version: [number, number];
  private readonly fn: NvrtcFunctions;
  /** Compiles done and cache hits in this process (for logs and tests). */
  readonly stats = { compiled: 0, cached: 0 };

  constructor() {
    const opened = openLibrary('NVRTC', ['libnvrtc.so.13', 'libnvrtc.so.12', 'libnvrtc.so']);
    this.path = opened.path;
    this.fn = bindNvrtc(opened.lib);
    const major = new Int32Array(1);
    const minor = new Int32Array(1);
    this.check(this.fn.nvrtcVersion(major, minor), 'nvrtcVersion');
    this.version = [major[0], minor[0]];
  }

  private check(status: number, what: string, log?: string): void {
    if (status === 0) return;
    const text = this.fn.nvrtcGetErrorString(status) as string;
    throw new CudaError(`NVRTC error in ${what}: ${text}${log ? `\n${log}` : ''}`);
  }

  /**
   * Returns the cubin for `source` compiled for `arch`, from the disk cache when present.
   * `headers` maps include names to their text (our .cuh files), so no include path is needed.
   */
  compile(name: string, source: string, headers: Record<string, string>, arch: string, extraOptions: string[] = []): Buffer {
    const options = [`--gpu-architecture=${arch}`, '--std=c++17', '-default-device', ...extraOptions];
    const includeNames = Object.keys(headers).sort();
    const key = crypto
      .createHash('sha256')
      .update(JSON.stringify({ name, source, headers: includeNames.map((n) => [n, headers[n]]), options, arch, nvrtc: this.version }))
      .digest('hex');
    const cacheDir = cubinCacheDir();
    const cacheFile = path.join(cacheDir, `${path.basename(name, '.cu')}-${arch}-${key.slice(0, 24)}.cubin`);
    try {
      const cached = fs.readFileSync(cacheFile);
      this.stats.cached++;
      return cached;
    } catch {
      // not cached yet
    }

    const prog = new BigUint64Array(1);
    this.check(
      this.fn.nvrtcCreateProgram(
        prog,
        source,
        name,
        includeNames.length,
        includeNames.length ? includeNames.map((n) => headers[n]) : null,
        includeNames.length ? includeNames : null,
      ),
      `nvrtcCreateProgram(${name})`,
    );
    try {
      const status = this.fn.nvrtcCompileProgram(prog[0], options.length, options) as number;
      if (status !== 0) this.check(status, `nvrtcCompileProgram(${name}, ${options.join(' ')})`, this.log(prog[0]));
      const size = new BigUint64Array(1);
      this.check(this.fn.nvrtcGetCUBINSize(prog[0], size), `nvrtcGetCUBINSize(${name})`);
      const cubin = Buffer.alloc(Number(size[0]));
      this.check(this.fn.nvrtcGetCUBIN(prog[0], cubin), `nvrtcGetCUBIN(${name})`);
      this.stats.compiled++;
      writeCacheFile(cacheFile, cubin);
      return cubin;
    } finally {
      this.fn.nvrtcDestroyProgram(prog);
    }
  }

  private log(prog: bigint): string {
    const size = new BigUint64Array(1);
    if ((this.fn.nvrtcGetProgramLogSize(prog, size) as number) !== 0) return '';
    const buf = Buffer.alloc(Number(size[0]));
    if ((this.fn.nvrtcGetProgramLog(prog, buf) as number) !== 0) return '';
    return buf.toString('utf8').replace(/\0+$/, '');
  }
}

/** Writes atomically (temp file + rename); a cache that cannot be written is not an error. */
function writeCacheFile(file: string, data: Buffer): void {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch {
    // read-only home or full disk: compile again next time
  }
}
