#!/usr/bin/env bash
# The serving benchmark: `skipserve loadgen` against skipserve-server on
# loopback, one server per configuration, every run in this one script so the
# ratios compare like with like.
#   (a) the embedded model, policy none, concurrency 1, 8, 32;
#   (b) A/B: none vs attn:last=33%, 50/50, under --batching=mixed and
#       --batching=grouped, against 100% of each policy alone, at
#       concurrency 32, on the embedded model and on synthetic:llama2-110m.
# Results: bench/results/<date>-serving.json and .md (bench/serving_summary.py).
#
#   bash bench/run_serving.sh [BUILD_DIR] [SECONDS_PER_RUN]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
seconds=${2:-20}
python=/usr/bin/python3
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

server_pid=""
start_server() {  # MODEL BATCHING [extra flags...]
  local model=$1 batching=$2
  shift 2
  rm -f "$work/port"
  "$build/server/skipserve-server" --model="$model" --batching="$batching" \
      --host=127.0.0.1 --port=0 --port_file="$work/port" --metrics_port=-1 \
      "$@" 2>"$work/server.log" &
  server_pid=$!
  for _ in $(seq 600); do
    [ -s "$work/port" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.5
  done
  echo "server did not start"; cat "$work/server.log"; exit 1
}
stop_server() {
  kill -TERM "$server_pid"
  wait "$server_pid" || true
}
run_load() {  # NAME CONCURRENCY MIX MAX_TOKENS
  local name=$1 concurrency=$2 mix=$3 max_tokens=$4
  echo "== $name" >&2
  "$build/client/skipserve" loadgen --target="127.0.0.1:$(cat "$work/port")" \
      --concurrency="$concurrency" --duration="${seconds}s" \
      --max_tokens="$max_tokens" --prompt_len=uniform:16:64 --seed=1 \
      --mix="$mix" --out="$work/$name.json" >&2
}

start_server "$build/models/default" mixed
for c in 1 8 32; do run_load "default-none-c$c" "$c" "none=1" 64; done
stop_server

llama_tokenizer=../shared/models/llama2-tokenizer.model
for model in default llama2-110m; do
  if [ "$model" = default ]; then
    spec="$build/models/default"; extra=(); tokens=64
  else
    spec="synthetic:llama2-110m"; tokens=32
    if [ -f "$llama_tokenizer" ]; then
      extra=(--tokenizer="$llama_tokenizer")
    else
      extra=(--tokenizer="$build/models/default/tokenizer.model")
    fi
  fi
  for batching in mixed grouped; do
    start_server "$spec" "$batching" "${extra[@]}"
    run_load "$model-$batching-ab" 32 "none=50,attn:last=33%=50" "$tokens"
    run_load "$model-$batching-none" 32 "none=1" "$tokens"
    run_load "$model-$batching-attn33" 32 "attn:last=33%=1" "$tokens"
    stop_server
  done
done

out=bench/results/$(date +%Y-%m-%d)-serving
"$python" bench/serving_summary.py "$work" "$out" "$seconds"
