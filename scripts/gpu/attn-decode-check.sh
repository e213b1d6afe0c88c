#!/usr/bin/env bash
# One device call for decode attention: the attention cases (op cases named "attention", the fused
# kernel's merge cases, graph replays, the old split + combine path) in f32/bf16/f16 against the cpu,
# then the fused vs split + combine timings. Bundle first:
#   bash scripts/gpu/bundle.sh scripts/gpu/run-cuda-tests.ts scripts/gpu/attn-timings.ts
# then run `bash scripts/gpu/attn-decode-check.sh` from the repository root with carry [".gpu"].
# Logs and JSON go to $OUT (attn-tests.log, cuda-tests.json, attn-timings.log, attn-timings.json).
set -u
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
export XDG_CACHE_HOME=$PWD/.gpu/cache LLMOPT_CUDA_KERNELS=$PWD/.gpu/kernels
R=${OUT:-/tmp}
cd .gpu
timeout 400 node run-cuda-tests.mjs --skip-smoke --skip-quant --skip-quant-model --skip-train --skip-quant-job --only attention > "$R/attn-tests.log" 2>&1
echo "tests rc $?"
timeout 150 node attn-timings.mjs > "$R/attn-timings.log" 2>&1
echo "timings rc $?"
grep -hE "FAIL|passed|failure" "$R/attn-tests.log" | cut -c1-250 | head -40
cat "$R/attn-timings.log"
