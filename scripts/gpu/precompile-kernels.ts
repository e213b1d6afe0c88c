// Compiles kernel families (kernels/*.cu) for one GPU architecture into the cubin cache without a GPU:
// NVRTC alone (for instance the nvidia-cuda-nvrtc wheel, see src/tensor/cuda/NOTES.md). A GPU machine
// with the same NVRTC version then loads them from the cache instead of compiling (about a minute of
// device time for all families): bundle this script, run it here with XDG_CACHE_HOME=.gpu/cache, and
// run the GPU steps with the same XDG_CACHE_HOME (scripts/gpu/run-all.sh does).
// Usage: XDG_CACHE_HOME=.gpu/cache LLMOPT_CUDA_LIBS=<folder with libnvrtc.so.13> node .gpu/precompile-kernels.mjs
//        [--arch sm_90a] [family ...]   (default: every family)

import fs from 'node:fs';
import path from 'node:path';
import { kernelSourceDir } from '../../src/tensor/cuda/kernels.js';
import { Nvrtc } from '../../src/tensor/cuda/nvrtc.js';

const args = process.argv.slice(2);
const archAt = args.indexOf('--arch');
const arch = archAt >= 0 ? args[archAt + 1]! : 'sm_90a';
const named = args.filter((a, i) => !a.startsWith('--') && (archAt < 0 || i !== archAt + 1));
const dir = kernelSourceDir();
const headers: Record<string, string> = {};
for (const f of fs.readdirSync(dir)) if (f.endsWith('.cuh')) headers[f] = fs.readFileSync(path.join(dir, f), 'utf8');
const families = named.length > 0 ? named : fs.readdirSync(dir).filter((f) => f.endsWith('.cu')).map((f) => f.slice(0, -3)).sort();
const nvrtc = new Nvrtc();
console.log(`NVRTC ${nvrtc.version.join('.')} (${nvrtc.path}), ${arch}, kernels in ${dir}`);
for (const family of families) {
  const t0 = performance.now();
  const file = `${family}.cu`;
  const cubin = nvrtc.compile(file, fs.readFileSync(path.join(dir, file), 'utf8'), headers, arch);
  console.log(`${family.padEnd(12)} ${String(cubin.length).padStart(8)} bytes  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
console.log(`compiled ${nvrtc.stats.compiled}, already cached ${nvrtc.stats.cached}`);
