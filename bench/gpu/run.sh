#!/usr/bin/env bash
# The GPU check of the CUDA backend, for one device call of at most 8 minutes
# (bench/gpu/README.md). Runs from the repository root on the GPU machine and
# writes everything under $OUT:
#   run.log                      this script's log
#   tests.xml                    the CUDA tests (gtest XML)
#   hf_parity.json               parity with transformers
#   <date>-h200.json, .md        benchmark results (also copied to
#                                bench/results/ on that machine; the session
#                                that called it copies them from $OUT)
# Needs build-gpu-bundle/bundle.tar.xz (bench/gpu/make_bundle.sh, made on the
# development machine and carried: carry=["build-gpu-bundle"]).
set -uo pipefail
: "${OUT:?set OUT to the output directory}"
cd "$(dirname "$0")/../.."
START=$(date +%s)
BUDGET=${SKIPSERVE_GPU_BUDGET_S:-450}  # seconds for all steps
DATE=$(date -u +%Y-%m-%d)
exec > >(tee "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1

log() { echo "[$(($(date +%s) - START))s] $*"; }
FAILED=()
# step NAME MAX_SECONDS COMMAND...: runs COMMAND with at most MAX_SECONDS and
# at most what is left of the budget (15 s kept for the summary).
step() {
  local name=$1 max=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START) - 15))
  local limit=$((max < left ? max : left))
  if ((limit < 10)); then log "SKIP $name: out of time"; FAILED+=("$name(no time)"); return; fi
  log "RUN  $name (limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@"
  local rc=$?
  if ((rc == 0)); then log "OK   $name"; else log "FAIL $name (rc $rc)"; FAILED+=("$name"); fi
}

log "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
BUNDLE=build-gpu-bundle/bundle.tar.xz
if [[ ! -f $BUNDLE ]]; then
  log "no $BUNDLE: run bench/gpu/make_bundle.sh on the development machine and carry build-gpu-bundle"
  exit 2
fi
SK=/tmp/skipserve-gpu
rm -rf "$SK" && mkdir -p "$SK/wrap" && tar -C "$SK" -xJf "$BUNDLE"
# cuBLAS 13 from this machine's CUDA install (or PyTorch's wheels).
CUBLAS_DIR=$(dirname "$(find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu \
  "$(python3 -c 'import site; print(site.getsitepackages()[0])')" \
  -name 'libcublas.so.13*' 2>/dev/null | head -1)" 2>/dev/null)
log "cuBLAS from: ${CUBLAS_DIR:-not found}"
# Wrappers: the bundle's libraries for skipserve's programs only (not for
# Python, whose libstdc++ may be newer).
for b in "$SK"/bin/*; do
  [[ $b == *.so ]] && continue  # the CUDA module, loaded from bin/
  cat > "$SK/wrap/$(basename "$b")" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH=$SK/lib:${CUBLAS_DIR}\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
exec $b "\$@"
WRAP
  chmod +x "$SK/wrap/$(basename "$b")"
done
W=$SK/wrap

step cuda_tests 90 "$W/cuda_backend_test" --gtest_output="xml:$OUT/tests.xml"
step cuda_module 30 "$W/cuda_module_test" --gtest_brief=1
step host_tests 30 bash -c "$W/launch_plan_test --gtest_brief=1 && $W/cpu_backend_test --gtest_brief=1"
step hf_parity 75 python3 bench/gpu/hf_parity.py --logits_tool "$W/skipserve-logits" \
  --out "$OUT/hf_parity.json"
MODEL=synthetic:llama2-7b:bf16
step bench_grid 110 "$W/skipserve-bench" --device=cuda --model=$MODEL \
  --prompt_lens=128,512 --decode_context=512 --decode_tokens=32 --rounds=3 \
  --out="$OUT/bench_grid.json"
step hf_bench 110 python3 bench/gpu/hf_bench.py --rounds=2 \
  --out="$OUT/hf_bench.json"
step bench_batch512 90 "$W/skipserve-bench" --device=cuda --model=$MODEL \
  --policies=none --prompt_lens=128 --decode_context=512 --decode_tokens=16 \
  --decode_batches=1,8,64,256 --mixed='none|layer:last=25%' --rounds=2 \
  --out="$OUT/bench_batch512.json"
# Batch 256 at context 2048 needs 275 GB of bf16 KV for 7B: left out.
step bench_batch2048 70 "$W/skipserve-bench" --device=cuda --model=$MODEL \
  --policies=none --prompt_lens=128 --decode_context=2048 --decode_tokens=16 \
  --decode_batches=1,8,64 --rounds=1 --out="$OUT/bench_batch2048.json"
if command -v compute-sanitizer > /dev/null; then
  step sanitizer 60 env PATH="$PATH" compute-sanitizer --tool memcheck \
    --error-exitcode 1 "$W/cuda_backend_test" \
    --gtest_filter='*Mixed*:*RowResult*'
fi

[[ -f $OUT/bench_batch512.json ]] && cp "$OUT/bench_batch512.json" "$OUT/bench_mixed.json"
# At most 8 files come back from $OUT: once merged, the parts go.
if python3 bench/gpu/summarize.py "$OUT" "$DATE" > /dev/null; then
  mkdir -p bench/results && cp "$OUT/$DATE-h200."{json,md} bench/results/
  rm -f "$OUT"/{hf_parity,bench_grid,hf_bench,bench_batch512,bench_batch2048}.json
else
  log "summary failed; the parts stay in \$OUT"
fi
rm -f "$OUT/bench_mixed.json"
log "failed: ${FAILED[*]:-none}"
[[ ${#FAILED[@]} -eq 0 ]]
