#!/usr/bin/env bash
# The engine benchmark on this machine's CPU: the paper's skip-policy grid on
# a synthetic ~110M-parameter fp32 Llama (llama2.c's 110M shape), written to
# bench/results/<date>-cpu.json plus the table it printed (.txt).
#
#   bash bench/run_cpu.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
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
