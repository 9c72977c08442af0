#!/usr/bin/env bash
# The engine benchmarks on this machine's CPU, in one run:
#
# 1. the paper's skip-policy grid on a synthetic ~110M-parameter fp32 Llama
#    (llama2.c's 110M shape): bench/results/<date>-cpu.{json,txt};
# 2. the weight dtypes side by side: the same bf16 checkpoint kept as f32
#    (widened), bf16 (as stored) and f16 (converted) by --cpu_weights,
#    decode at batch 1 and TTFT at 128 and 512 tokens, in rounds that
#    alternate the three (REPEATS rounds, default 3), each with its own
#    bandwidth measurement; bench/dtype_summary.py turns them into
#    bench/results/<date>-cpu-dtypes.{json,md};
# 3. skipserve-kernel-bench: the decode GEMV per dtype and instruction set
#    against the read bandwidth: bench/results/<date>-cpu-kernels.{json,txt}.
#
#   bash bench/run_cpu.sh [BUILD_DIR]        (REPEATS=N to change 2.)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
repeats=${REPEATS:-3}
out=bench/results/$(date +%Y-%m-%d)-cpu
mkdir -p bench/results
"$build/engine/skipserve-bench" \
  --model=synthetic:llama2-110m \
  --prompt_lens=128,512 \
  --decode_context=128 \
  --decode_tokens=32 \
  --rounds=5 \
  --out="$out.json" | tee "$out.txt"
echo "wrote $out.json and $out.txt"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq 1 "$repeats"); do
  for weights in f32 bf16 f16; do
    echo "dtypes: round $round of $repeats, --cpu_weights=$weights"
    "$build/engine/skipserve-bench" \
      --model=synthetic:llama2-110m:bf16 \
      --cpu_weights="$weights" \
      --policies=none \
      --prompt_lens=128,512 \
      --decode_context=128 \
      --decode_tokens=32 \
      --rounds=3 \
      --out="$work/$weights-$round.json" >/dev/null
  done
done
/usr/bin/python3 bench/dtype_summary.py "$work" "$out-dtypes"
echo "wrote $out-dtypes.json and $out-dtypes.md"
# OpenBLAS's OpenMP threads must not spin between calls (they would take
# the read passes' cores).
OMP_WAIT_POLICY=passive "$build/engine/skipserve-kernel-bench" \
  --out="$out-kernels.json" | tee "$out-kernels.txt"
echo "wrote $out-kernels.json and $out-kernels.txt"
