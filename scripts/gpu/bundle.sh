#!/usr/bin/env bash
# Bundles the GPU-machine entry points into .gpu/ (which `run` carries with carry: [".gpu"]):
# esbuild bundles the TypeScript (koffi stays external), then koffi's JS + linux-x64 binary and
# the kernel sources are copied beside the bundles. Usage: scripts/gpu/bundle.sh [entry.ts ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
entries=("$@")
[ ${#entries[@]} -eq 0 ] && entries=(scripts/gpu/run-cuda-tests.ts)
mkdir -p .gpu/node_modules/@koromix
for entry in "${entries[@]}"; do
  npx --yes esbuild@0.28.2 "$entry" --bundle --platform=node --format=esm --target=node20 \
    --external:koffi --log-level=warning --outfile=".gpu/$(basename "${entry%.ts}").mjs"
done
rm -rf .gpu/node_modules/koffi .gpu/node_modules/@koromix/koffi-linux-x64 .gpu/kernels
cp -r node_modules/koffi .gpu/node_modules/koffi
cp -r node_modules/@koromix/koffi-linux-x64 .gpu/node_modules/@koromix/koffi-linux-x64
cp -r src/tensor/cuda/kernels .gpu/kernels
du -sh .gpu
