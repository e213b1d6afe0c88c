// Finds and opens the CUDA libraries at run time (no native build step): the driver (libcuda.so.1),
// NVRTC and cuBLASLt of CUDA 12 or 13. Search order: $LLMOPT_CUDA_LIBS (colon-separated folders),
// the standard loader path (bare soname), $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64.

import fs from 'node:fs';
import path from 'node:path';
import koffi, { type LibraryHandle } from 'koffi';
import { CudaUnavailableError } from './errors.js';

export interface OpenedLibrary {
  lib: LibraryHandle;
  /** The soname or path that loaded. */
  path: string;
}

const LOADER_PATH = '(loader path)';

function envDirs(name: string, suffix?: string): string[] {
  const value = process.env[name];
  if (!value) return [];
  return value
    .split(':')
    .filter((d) => d.length > 0)
    .map((d) => (suffix ? path.join(d, suffix) : d));
}

/** Folders searched after the loader path, in order, without duplicates. */
export function librarySearchPlaces(): string[] {
  const places = [
    ...envDirs('LLMOPT_CUDA_LIBS'),
    LOADER_PATH,
    ...envDirs('CUDA_HOME', 'lib64'),
    ...envDirs('CUDA_PATH', 'lib64'),
    '/usr/local/cuda/lib64',
    '/usr/local/cuda/targets/x86_64-linux/lib',
  ];
  return [...new Set(places)];
}

/** Versioned files in `dir` such as libnvrtc.so.13.0.48 when the bare soname link is missing. */
function versionedFiles(dir: string, soname: string): string[] {
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => f.startsWith(soname + '.'))
      .sort()
      .reverse()
      .map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

/**
 * Opens the first library that loads among `sonames` (most preferred first) across the search
 * places. Throws one line saying what was looked for and where.
 */
export function openLibrary(what: string, sonames: readonly string[]): OpenedLibrary {
  const places = librarySearchPlaces();
  for (const soname of sonames) {
    for (const place of places) {
      const candidates =
        place === LOADER_PATH ? [soname] : [path.join(place, soname), ...versionedFiles(place, soname)];
      for (const candidate of candidates) {
        if (place !== LOADER_PATH && !fs.existsSync(candidate)) continue;
        try {
          return { lib: koffi.load(candidate), path: candidate };
        } catch {
          // try the next candidate
        }
      }
    }
  }
  throw new CudaUnavailableError(
    `CUDA unavailable: could not load ${what} (looked for ${sonames.join(', ')} in ${places.join(', ')}; ` +
      'set LLMOPT_CUDA_LIBS to the folder that holds it)',
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type NativeFunction = (...args: any[]) => any;

/** Binds `proto` in `lib`, trying each symbol name in turn (e.g. `_v2` first). */
export function bindFirst(lib: LibraryHandle, protos: readonly string[]): NativeFunction {
  let lastError: unknown;
  for (const proto of protos) {
    try {
      return lib.func(proto);
    } catch (e) {
      lastError = e;
    }
  }
  throw new CudaUnavailableError(`CUDA unavailable: missing symbol for ${protos[0]} (${String(lastError)})`);
}
