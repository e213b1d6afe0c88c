// Compiles every kernel family (src/tensor/cuda/kernels/*.cu) with NVRTC into the cubin cache
// ($XDG_CACHE_HOME/llmopt/cubin), the way KernelLibrary does on first use — without a GPU. Run it where
// only NVRTC is installed (e.g. the nvidia-cuda-nvrtc wheel unpacked, LLMOPT_CUDA_LIBS and
// LD_LIBRARY_PATH pointing at its lib/) with XDG_CACHE_HOME=.gpu/cache, so that the GPU machine (same
// NVRTC version and architecture: the cache key has both) loads cubins instead of compiling them.
// Usage: node .gpu/compile-kernels.mjs [--arch sm_90a] [family.cu ...]

import fs from 'node:fs';
import path from 'node:path';
import { kernelSourceDir } from '../../src/tensor/cuda/kernels.js';
import { Nvrtc, cubinCacheDir } from '../../src/tensor/cuda/nvrtc.js';

const args = process.argv.slice(2);
const archAt = args.indexOf('--arch');
const arch = archAt >= 0 ? args[archAt + 1]! : 'sm_90a';
const only = args.filter((a, i) => a.endsWith('.cu') && (archAt < 0 || i !== archAt + 1));
const dir = kernelSourceDir();
const headers: Record<string, string> = {};
for (const f of fs.readdirSync(dir)) if (f.endsWith('.cuh')) headers[f] = fs.readFileSync(path.join(dir, f), 'utf8');
const nvrtc = new Nvrtc();
console.log(`NVRTC ${nvrtc.version.join('.')} (${nvrtc.path}), ${arch}, cache ${cubinCacheDir()}`);
let failed = 0;
for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.cu')).sort()) {
  if (only.length > 0 && !only.includes(file)) continue;
  const t0 = performance.now();
  try {
    const cubin = nvrtc.compile(file, fs.readFileSync(path.join(dir, file), 'utf8'), headers, arch);
    console.log(`ok   ${file.padEnd(24)} ${String(cubin.length).padStart(8)} bytes  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${file}: ${(e as Error).message}`);
  }
}
console.log(`compiled ${nvrtc.stats.compiled}, already cached ${nvrtc.stats.cached}`);
process.exit(failed ? 1 : 0);
