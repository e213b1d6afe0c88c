#!/usr/bin/env bash
# The quantize job on the GPU, for one device call (after scripts/gpu/bundle.sh
# scripts/gpu/run-cuda-tests.ts scripts/gpu/quantize-check.ts bench/quantize-job-bench.ts
# scripts/gpu/llmopt-cli.ts, with stories260K + tinystories-valid.txt in .gpu/data/ as for run-all.sh):
#   1. quant-job op cases (every QuantJobOps op on cuda against the cpu, f32/bf16/f16)
#   2. quantize-check: stories260K quantized on cuda and cpu (W4A16-GPTQ, W8A8+SQ, FP8), compared tensor by tensor
#   3. the CLI on cuda (auto device, the notice-free path, the report's device memory per phase)
#   4. the quantize-job bench at Llama-3.2-1B shape (FP8_DYNAMIC, W8A8+SQ, W4A16-GPTQ g128; 128 × 2048)
# Logs in $OUT/quant-job.log, JSON beside it. SKIP_OPS=1 / SKIP_CHECK=1 / SKIP_BENCH=1 skip steps;
# BENCH_ARGS adds flags to the bench (e.g. "--samples 64").
set -u
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
export XDG_CACHE_HOME=$PWD/.gpu/cache LLMOPT_CUDA_KERNELS=$PWD/.gpu/kernels
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/quant-job.log
step() { local name=$1 limit=$2; shift 2; echo "== $name" | tee -a "$LOG"; local t0=$SECONDS; timeout "$limit" "$@" >> "$LOG" 2>&1; echo "   rc $?, $((SECONDS - t0)) s" | tee -a "$LOG"; }
M=.gpu/data/stories260K
[ "${SKIP_OPS:-0}" = 1 ] || step quant-job-ops 200 bash -c 'cd .gpu && node run-cuda-tests.mjs --skip-smoke --skip-ops --skip-quant --skip-quant-model --skip-train | grep -v "^ok "'
[ "${SKIP_CHECK:-0}" = 1 ] || step quantize-check 150 node .gpu/quantize-check.mjs --model $M --data .gpu/data/tinystories-valid.txt
[ "${SKIP_CHECK:-0}" = 1 ] || step cli-quantize 60 bash -c "node .gpu/cli/bin/llmopt.mjs quantize $M --scheme W4A16 --group-size channel --method gptq --calib-samples 32 --calib-seq-len 256 -o /tmp/cli-w4 --force && python3 -c \"import json; r=json.load(open('/tmp/cli-w4/llmopt-report.json')); print('report device', r['device'], r['device_dtype'], 'memory', json.dumps(r['memory']))\""
[ "${SKIP_BENCH:-0}" = 1 ] || step quantize-job-bench 420 node .gpu/quantize-job-bench.mjs --tokenizer-from $M --results "$OUT" ${BENCH_ARGS:-}
grep -v "^ok " "$LOG" | tail -c 11000
