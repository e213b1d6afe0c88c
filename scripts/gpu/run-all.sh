#!/usr/bin/env bash
# Everything for one GPU-machine call (after scripts/gpu/bundle.sh scripts/gpu/run-cuda-tests.ts
# scripts/gpu/eval-ppl.ts bench/gpu-bench.ts scripts/gpu/llmopt-cli.ts [bench/quant-bench.ts]
# [bench/distill-bench.ts]): op suite, quantized-linear and training-op suites, stories260K perplexity +
# greedy, the CLI on cuda (generate, eval, eval --latency), then bench:gpu, bench:quant and
# bench:distill (each when bundled). All logs go to $OUT/run.log (few files: the machine returns a
# limited count); JSON results beside it. Steps continue past failures; each has its own time limit.
# SKIP_OPS=1 / SKIP_QUANT=1 / SKIP_TRAIN=1 / SKIP_BENCH=1 / SKIP_QBENCH=1 / SKIP_DISTILL=1 skip steps.
set -u
xz -dc .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
export XDG_CACHE_HOME=$PWD/.gpu/cache LLMOPT_CUDA_KERNELS=$PWD/.gpu/kernels
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; LOG=$OUT/run.log
step() { local name=$1 limit=$2; shift 2; echo "== $name" | tee -a "$LOG"; local t0=$SECONDS; timeout "$limit" "$@" >> "$LOG" 2>&1; echo "   rc $?, $((SECONDS - t0)) s" | tee -a "$LOG"; }
M=.gpu/data/stories260K D=.gpu/data/tinystories-valid.txt
[ "${SKIP_OPS:-0}" = 1 ] || step op-tests 240 bash -c 'cd .gpu && node run-cuda-tests.mjs --skip-quant --skip-quant-model --skip-train --skip-quant-job | grep -v "^ok "'
[ "${SKIP_QUANT:-0}" = 1 ] || step quant-tests 480 bash -c 'cd .gpu && node run-cuda-tests.mjs --skip-smoke --skip-ops --skip-train --skip-quant-job | grep -v "^ok "'
[ "${SKIP_TRAIN:-0}" = 1 ] || step train-tests 480 bash -c 'cd .gpu && node run-cuda-tests.mjs --skip-smoke --train-only --skip-quant-job | grep -v "^ok "'
step eval-ppl 120 node .gpu/eval-ppl.mjs --model $M --data $D --ref .gpu/data/stories260K-perplexity.json --greedy-ref .gpu/data/stories260K-greedy.json --dtypes f32,bf16
step cli-generate 90 bash -c "node .gpu/cli/bin/llmopt.mjs generate $M --device cuda --dtype fp32 -n 200 --json > /tmp/g.json; python3 -c \"import json; a=json.load(open('/tmp/g.json')); r=json.load(open('.gpu/data/stories260K-greedy.json'))['greedy_from_bos_200_steps']; print('greedy fp32 on cuda == reference ids:', a['token_ids']==r['token_ids'][1:], 'text:', a['text']==r['text'], 'graph:', a['cuda_graph'], 'tok/s', a['decode_tokens_per_s'])\"; node .gpu/cli/bin/llmopt.mjs generate $M --prompt 'Once upon a time' -n 60; node .gpu/cli/bin/llmopt.mjs generate $M --prompt 'Lily' -n 40 --temperature 0.9 --top-k 40 --seed 3; node .gpu/cli/bin/llmopt.mjs generate $M --prompt 'Lily' -n 40 --temperature 0.9 --top-k 40 --seed 3"
step cli-eval 90 bash -c "node .gpu/cli/bin/llmopt.mjs eval $M --data $D --device cuda --dtype fp32 | tail -3; node .gpu/cli/bin/llmopt.mjs eval $M --data $D | tail -4; node .gpu/cli/bin/llmopt.mjs eval $M --latency --batch 4; node .gpu/cli/bin/llmopt.mjs eval $M --latency --json --gate decode_tps'>='500 > $OUT/latency-stories.json; echo exit \$?"
[ "${SKIP_BENCH:-0}" = 1 ] || step bench-gpu 420 node .gpu/gpu-bench.mjs --results "$OUT" ${BENCH_ARGS:-}
[ "${SKIP_QBENCH:-0}" = 1 ] || [ ! -f .gpu/quant-bench.mjs ] || step bench-quant 420 node .gpu/quant-bench.mjs --results "$OUT" ${QBENCH_ARGS:-}
[ "${SKIP_DISTILL:-0}" = 1 ] || [ ! -f .gpu/distill-bench.mjs ] || step bench-distill 420 node .gpu/distill-bench.mjs --results "$OUT" ${DISTILL_ARGS:-}
grep -v "^ok " "$LOG" | tail -c 11000
