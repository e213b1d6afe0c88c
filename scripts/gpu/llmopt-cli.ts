// The llmopt CLI as one bundle for the GPU machine (scripts/gpu/bundle.sh writes it to
// .gpu/cli/bin/llmopt.mjs, with package.json at .gpu/package.json where main.ts looks for it).
// Run there with LLMOPT_CUDA_KERNELS=$PWD/.gpu/kernels node .gpu/cli/bin/llmopt.mjs <command> …
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv);
