#!/usr/bin/env bash
# The GPU check of the CUDA backend, in two phases (bench/gpu/README.md):
#
#   bench/gpu/run.sh quick   (<= 3 minutes) environment report, every CUDA
#                            test, compute-sanitizer memcheck and racecheck
#                            over all of them, parity (transformers, else the
#                            numpy reference), one batch-1 decode figure;
#   bench/gpu/run.sh full    (<= 7 minutes) the benchmark suite in one
#                            process, the per-kernel byte/FLOP model of its
#                            scenarios (kernel_model.py, a model), the
#                            transformers baseline, host tests.
#                            Refused unless quick passed on this machine with
#                            this bundle (--force overrides).
#
#   bench/gpu/run.sh quick|full|all --emulated [--build=DIR]
#       The same steps on this machine, against the emulated CUDA backend of
#       build tree DIR (default build) with tiny models; exit 77 (skipped)
#       when DIR has no emulated module. 'all' runs quick, then full.
#
# On the GPU machine it needs build-gpu-bundle/bundle.tar.gz (make_bundle.sh,
# carried: carry=["build-gpu-bundle"]) and writes under $OUT, at most 8
# files per phase: run.log, steps.jsonl (one line per step), tests.xml or
# host_tests.xml, hf_parity.json, bench_quick.jsonl or bench_full.jsonl and
# hf_bench.jsonl (one line per measurement, as measured), kernel_model.json
# (full; its text in run.log), the summary
# <date>-h200-quick.{json,md} or <date>-h200.{json,md} (full: both phases
# when quick ran on the same machine), and quick.passed when quick passed
# (copy it into build-gpu-bundle/ if the machine went back before full).
#
# Each phase keeps to its budget (SKIPSERVE_GPU_BUDGET_S; quick 175 s, full
# 400 s): a step gets at most its own limit and what is left; one that runs
# out is recorded as such and the phase goes on to write its summary.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/bench/gpu/run.sh

# --- Internal helpers, run under `timeout` as separate processes. -----------

# __tests XML_DIR BIN[|GTEST_FILTER]...: runs each gtest binary; all of them
# run even when one fails; a missing binary is a failure.
if [[ ${1:-} == __tests ]]; then
  xml=$2; shift 2
  rc=0
  declare -A seen=()
  for entry in "$@"; do
    bin=${entry%%|*}
    filter=*
    [[ $entry == *"|"* ]] && filter=${entry#*|}
    name=$(basename "$bin")
    # A binary run twice (apart from its device-fault case) gets two files.
    seen[$name]=$((${seen[$name]:-0} + 1))
    xml_name=$name
    ((${seen[$name]} > 1)) && xml_name=$name.${seen[$name]}
    if [[ ! -x $bin ]]; then
      echo "MISSING test binary $bin"
      echo "missing: $name" >> "${STEP_NOTE:-/dev/null}"
      rc=1
      continue
    fi
    echo "=== $name --gtest_filter=$filter"
    "$bin" --gtest_brief=1 --gtest_filter="$filter" --gtest_output="xml:$xml/$xml_name.xml" || {
      rc=1
      echo "failed: $name" >> "${STEP_NOTE:-/dev/null}"
    }
    # On the GPU a test binary whose every test skipped (no usable device)
    # has checked nothing.
    if [[ ${REQUIRE_DEVICE:-0} == 1 && -f $xml/$xml_name.xml ]]; then
      total=$(grep -c '<testcase' "$xml/$xml_name.xml")
      skipped=$(grep -c 'result="skipped"' "$xml/$xml_name.xml")
      if ((total > 0 && skipped == total)); then
        echo "all $total tests of $name skipped (no usable CUDA device?)" | tee -a "${STEP_NOTE:-/dev/null}"
        rc=1
      fi
    fi
  done
  exit $rc
fi

# __sanitize TOOL BIN[|GTEST_FILTER]...: compute-sanitizer --tool TOOL over
# the tests of each binary. Exit 0: clean; 1: errors or test failures; 75: the sanitizer
# cannot run here (its message goes to $STEP_NOTE).
if [[ ${1:-} == __sanitize ]]; then
  tool=$2; shift 2
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer \
       /usr/local/cuda*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
  if [[ -z $cs ]]; then
    echo "compute-sanitizer not found (PATH, /usr/local/cuda*/bin)" | tee -a "$STEP_NOTE"
    exit 75
  fi
  rc=0
  for entry in "$@"; do
    bin=${entry%%|*}
    filter=*
    [[ $entry == *"|"* ]] && filter=${entry#*|}
    name=$(basename "$bin")
    [[ -x $bin ]] || { echo "MISSING $bin"; echo "missing: $name" >> "$STEP_NOTE"; rc=1; continue; }
    log=$(mktemp)
    echo "=== $tool $name --gtest_filter=$filter"
    "$cs" --tool "$tool" --error-exitcode 17 "$bin" --gtest_brief=1 \
      --gtest_filter="$filter" 2>&1 | tee "$log"
    r=${PIPESTATUS[0]}
    # A sandbox (gVisor) that refuses the sanitizer: "Device not supported",
    # then CUDA error 999 in the program. Not a finding about our code.
    refusal=$(grep -E '^========= .*(not supported|Internal Sanitizer Error|Unable to|Failed to|cannot be used)' "$log" | head -1)
    rm -f "$log"
    if [[ -n $refusal ]]; then
      echo "skipped: compute-sanitizer refused to run here: ${refusal#========= }" | tee -a "$STEP_NOTE"
      exit 75
    fi
    if ((r == 17)); then
      echo "$tool errors in $name" >> "$STEP_NOTE"; rc=1
    elif ((r != 0)); then
      echo "$name failed under $tool (rc $r)" >> "$STEP_NOTE"; rc=1
    fi
  done
  exit $rc
fi

# --- Arguments ---------------------------------------------------------------

usage() {
  sed -n '2,/^set -uo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}
PHASE=${1:-}
[[ $PHASE == quick || $PHASE == full || $PHASE == all ]] || usage
shift
EMULATED=0 FORCE=0 BUILD=build
for arg in "$@"; do
  case $arg in
    --emulated) EMULATED=1 ;;
    --build=*) BUILD=${arg#--build=} ;;
    --force) FORCE=1 ;;
    *) usage ;;
  esac
done
[[ $BUILD == /* ]] || BUILD=$ROOT/$BUILD
export PYTHONUNBUFFERED=1
# Transparent huge pages for glibc's large allocations (glibc >= 2.35;
# ignored before): building the 7B model's 13.5 GB of weights on the host
# took 55.6 s without and 6.9 s with them on the 2-core development VM,
# where first touches of fresh memory dominate.
BENCH_ENV=(env GLIBC_TUNABLES=glibc.malloc.hugetlb=1)
# The device the benchmarks and the parity check run on, and the GPU run's
# model; only tests of the script itself change them (cpu: plumbing without
# any CUDA module).
DEVICE=${SKIPSERVE_GPU_CHECK_DEVICE:-cuda}
DATE=$(date -u +%Y-%m-%d)

# A build tree's artifact: in engine/ or in engine/cuda/emulator/.
built() {
  local d
  for d in "$BUILD/engine" "$BUILD/engine/cuda/emulator"; do
    [[ -e $d/$1 ]] && { echo "$d/$1"; return; }
  done
  echo "$BUILD/engine/$1"  # reported missing where it is used
}
if ((EMULATED)); then
  EMU_MODULE=$(built libskipserve_cuda_emu_module.so)
  if [[ ! -f $EMU_MODULE ]]; then
    echo "skipped: $EMU_MODULE is not built (CMake target" \
         "skipserve_cuda_emu_module); nothing to run the GPU check's steps against"
    exit 77
  fi
  MACHINE=emulated
  # Time limits x4: this run shares 2 cores with the rest of ctest, and its
  # limits guard against hangs, not the GPU's budget.
  SCALE=4
  OUT=${OUT:-$BUILD/bench-gpu-emulated/out}
  STATE=${SKIPSERVE_GPU_STATE:-$BUILD/bench-gpu-emulated/state}
  PY=${SKIPSERVE_PYTHON3:-python3}
  export SKIPSERVE_CUDA_MODULE=$EMU_MODULE
  MODEL=synthetic:tiny:bf16:fast
  SUITE_SUFFIX=-emulated
  PARITY_SIZE=small
else
  [[ $PHASE == all ]] && { echo "'all' is for --emulated: on the GPU run quick and full as two calls" >&2; exit 2; }
  : "${OUT:?set OUT to the output directory}"
  MACHINE=h200
  SCALE=1
  STATE=${SKIPSERVE_GPU_STATE:-/tmp/skipserve-gpu/state}
  PY=python3
  MODEL=${SKIPSERVE_GPU_CHECK_MODEL:-synthetic:llama2-7b:bf16:fast}
  SUITE_SUFFIX=
  PARITY_SIZE=full
fi
mkdir -p "$OUT" "$STATE"
# Each phase's own outputs start afresh ($OUT is new on the GPU machine; not
# here, where run.log and steps.jsonl would otherwise pile up).
if [[ $PHASE != full ]]; then
  rm -f "$OUT"/{run.log,steps.jsonl,tests.xml,hf_parity.json,bench_quick.jsonl,quick.passed} \
        "$OUT"/*-"$MACHINE"-quick.{json,md}
fi
if [[ $PHASE != quick ]]; then
  rm -f "$OUT"/{host_tests.xml,bench_full.jsonl,hf_bench.jsonl,kernel_model.json} "$OUT"/*-"$MACHINE".{json,md}
fi
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT
export STEP_NOTE=$TMPD/note
exec > >(tee -a "$OUT/run.log") 2>&1

START=$(date +%s)
now() { echo $(($(date +%s) - START)); }
log() { echo "[$(now)s] $*"; }
# JSON string escaping for the step records.
jstr() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/; }
  s=${s//$'\t'/ }
  printf '"%s"' "${s//[$'\001'-$'\037']/ }"
}
record() {  # record STEP STATUS RC SECONDS MESSAGE
  printf '{"type":"step","phase":%s,"step":%s,"status":%s,"rc":%s,"seconds":%s,"message":%s,"t":%s}\n' \
    "$(jstr "$CUR_PHASE")" "$(jstr "$1")" "$(jstr "$2")" "$3" "$4" "$(jstr "$5")" \
    "$(now)" >> "$OUT/steps.jsonl"
}

FAILED=()
# step NAME MAX_SECONDS COMMAND...: runs COMMAND with at most MAX_SECONDS and
# at most what is left of the phase's budget (RESERVE kept for the summary).
# Exit 75 from COMMAND means "skipped" (the reason in $STEP_NOTE).
RESERVE=10
step() {
  local name=$1 max=$(($2 * SCALE)); shift 2
  local left=$((PHASE_END - $(date +%s) - RESERVE))
  local limit=$((max < left ? max : left))
  : > "$STEP_NOTE"
  if ((limit < 5)); then
    log "SKIP $name: out of time (phase budget ${BUDGET}s)"
    record "$name" no_time 0 0 "out of time (phase budget ${BUDGET}s)"
    FAILED+=("$name(no time)")
    return 1
  fi
  log "RUN  $name (limit ${limit}s)"
  export STEP_LIMIT=$limit
  local t0 rc secs note
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  secs=$(($(date +%s) - t0))
  note=$(head -c 2000 "$STEP_NOTE")
  if ((rc == 0)); then
    log "OK   $name (${secs}s)"
    record "$name" ok 0 "$secs" "$note"
  elif ((rc == 75)); then
    log "SKIPPED $name: $note"
    record "$name" skipped 75 "$secs" "$note"
  elif ((rc == 124 || rc == 137)); then
    log "FAIL $name: timed out after ${limit}s"
    record "$name" timeout "$rc" "$secs" "timed out after ${limit}s; $note"
    FAILED+=("$name(timeout)")
  else
    log "FAIL $name (rc $rc) $note"
    record "$name" fail "$rc" "$secs" "$note"
    FAILED+=("$name")
  fi
  return $rc
}
# bench_partial STEP FILE: records measurements the deadline cut short.
bench_partial() {
  local n
  n=$(grep -c '"type":"skipped"' "$2" 2>/dev/null)
  if ((n > 0)); then
    log "PARTIAL $1: $n measurement(s) cut short by the deadline"
    record "$1" partial 0 0 "$n measurement(s) cut short by the deadline (lines of type skipped in $(basename "$2"))"
  fi
}
skip() {  # skip NAME REASON
  log "SKIPPED $1: $2"
  record "$1" skipped 75 0 "$2"
}

# --- Binaries ----------------------------------------------------------------

BUNDLE=build-gpu-bundle/bundle.tar.gz
SK=/tmp/skipserve-gpu/bundle
BUNDLE_ID=none
setup_bundle() {
  if ((EMULATED)); then
    BIN=$BUILD/engine
    # A few of the CUDA tests on the emulator (ctest runs all of them, in
    # both fiber orders and under ASan): this run checks the plumbing, and
    # must stay quick on a loaded machine. The device-fault case leaves its
    # process's device unusable: run apart.
    local emu
    emu=$(built cuda_emu_test)
    CUDA_TESTS=("$emu|KernelsTest.Gemm*:PagedAttentionTest.EveryHeadDim:CudaBackendTest.MixedPolicy*"
                "$emu|*DeviceFault*")
    SAN_TESTS=()
    HOST_TESTS=("$BIN/launch_plan_test" "$BIN/cpu_backend_test")
    BUNDLE_ID=emulated:$BUILD
    return 0
  fi
  if [[ ! -f $BUNDLE ]]; then
    log "no $BUNDLE: run bench/gpu/make_bundle.sh on the development machine and carry build-gpu-bundle"
    return 2
  fi
  BUNDLE_ID=$(sha256sum "$BUNDLE" | cut -c1-16)
  if [[ ! -f $SK/.id || $(cat "$SK/.id") != "$BUNDLE_ID" ]]; then
    rm -rf "$SK" && mkdir -p "$SK/wrap" && tar -C "$SK" -xzf "$BUNDLE" || return 1
    echo "$BUNDLE_ID" > "$SK/.id"
  fi
  # glibc: the bundle was built against Debian 12's; its needs were measured
  # (GLIBC_REQUIRED, from objdump) when it was made.
  local need have
  need=$(cat "$SK/GLIBC_REQUIRED")
  have=$(ldd --version 2>&1 | head -1 | grep -o '[0-9]\+\.[0-9]\+$')
  if [[ $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
    log "this machine's glibc is ${have:-unknown} ($(ldd --version 2>&1 | head -1));" \
        "the bundle needs glibc >= $need (see $SK/manifest.txt)." \
        "Use a newer image, or build the bundle on an older distribution."
    return 3
  fi
  # libstdc++ and libgcc_s: this machine's own (the bundle ships none).
  local stdcxx cxx_need cxx_have
  cxx_need=$(cat "$SK/GLIBCXX_REQUIRED" 2>/dev/null)
  stdcxx=$(LD_LIBRARY_PATH=$SK/lib ldd "$SK/bin/launch_plan_test" 2>/dev/null \
           | awk '/libstdc\+\+\.so\.6 => \//{print $3}')
  if [[ -z $stdcxx ]]; then
    log "no libstdc++.so.6 on this machine; the bundle's programs need one" \
        "providing GLIBCXX_$cxx_need (GCC 11 or later)"
    return 3
  fi
  cxx_have=$(grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$stdcxx" | sed 's/GLIBCXX_//' | sort -uV | tail -1)
  if [[ -n $cxx_need && $(printf '%s\n%s\n' "$cxx_need" "$cxx_have" | sort -V | head -1) != "$cxx_need" ]]; then
    log "this machine's $stdcxx provides GLIBCXX_$cxx_have; the bundle needs" \
        "GLIBCXX_$cxx_need (libstdc++ of GCC 11 or later; see $SK/manifest.txt)"
    return 3
  fi
  # cuBLAS 13 from this machine: the CUDA install, else PyTorch's wheels.
  CUBLAS_DIR=${SKIPSERVE_CUBLAS_DIR:-}
  if [[ -z $CUBLAS_DIR ]]; then
    local site cand
    site=$(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
    for cand in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
                /usr/local/cuda/lib /usr/local/cuda-13*/lib64 \
                /usr/local/cuda-13*/targets/x86_64-linux/lib /usr/local/cuda-13*/lib \
                $(for s in $site; do echo "$s"/nvidia/cu13/lib "$s"/nvidia/cublas/lib; done) \
                /usr/lib/x86_64-linux-gnu; do
      if [[ -e $cand/libcublas.so.13 && -e $cand/libcublasLt.so.13 ]]; then
        CUBLAS_DIR=$cand
        break
      fi
    done
  fi
  if [[ -z $CUBLAS_DIR ]]; then
    log "cuBLAS 13 not found: no directory with both libcublas.so.13 and" \
        "libcublasLt.so.13 in /usr/local/cuda*/{lib64,lib,targets/x86_64-linux/lib}," \
        "site-packages/nvidia/{cu13,cublas}/lib or /usr/lib/x86_64-linux-gnu." \
        "Set SKIPSERVE_CUBLAS_DIR to the directory that holds them."
    return 4
  fi
  # Wrappers: the bundle's libraries for skipserve's programs only (not for
  # Python's).
  local b
  for b in "$SK"/bin/*; do
    [[ $b == *.so ]] && continue  # the CUDA module, loaded from bin/
    cat > "$SK/wrap/$(basename "$b")" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH=$SK/lib:$CUBLAS_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
exec $b "\$@"
WRAP
    chmod +x "$SK/wrap/$(basename "$b")"
  done
  BIN=$SK/wrap
  # cuda_backend_test's device-fault case leaves the device unusable for the
  # rest of its process (CUDA faults are sticky): it runs in a process of
  # its own, and not under the sanitizers (a deliberate fault is a finding
  # for them; so is the failed allocation of the larger-than-the-device KV
  # case). The kernel tests come first in the sanitizer runs, which are
  # slow: a step cut short keeps what ran.
  CUDA_TESTS=("$BIN/cuda_attention_test" "$BIN/cuda_prefill_attention_test"
              "$BIN/cuda_kernels_test" "$BIN/cuda_backend_test|-*DeviceFault*"
              "$BIN/cuda_backend_test|*DeviceFault*" "$BIN/cuda_module_test")
  # The sanitizer runs the programs themselves (with the wrappers' paths).
  SAN_TESTS=("$SK/bin/cuda_attention_test" "$SK/bin/cuda_prefill_attention_test"
             "$SK/bin/cuda_kernels_test"
             "$SK/bin/cuda_backend_test|-*DeviceFault*:*LargerThanTheDevice*"
             "$SK/bin/cuda_module_test")
  HOST_TESTS=("$BIN/launch_plan_test" "$BIN/cpu_backend_test")
  return 0
}

env_report() {
  local rc=0 b out
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "os: $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}"); kernel $(uname -r)"
  echo "cpu: $(nproc) cores; memory $(awk '/MemTotal/{print $2 " kB"}' /proc/meminfo)"
  echo "ldd --version: $(ldd --version 2>&1 | head -1)"
  if command -v nvidia-smi > /dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
  else
    echo "gpu: nvidia-smi not found$( ((EMULATED)) && echo ' (emulated run)')"
  fi
  # Versions from the installed metadata (importing torch takes seconds).
  echo "python: $($PY --version 2>&1); $(timeout 30 "$PY" -c '
from importlib import metadata
for m in ("numpy", "torch", "transformers"):
    try:
        print(m, metadata.version(m), end="; ")
    except Exception:
        print(m, "absent", end="; ")
' 2>&1)"
  local cs
  cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  echo "compute-sanitizer: ${cs:-not found}${cs:+ ($("$cs" --version 2>&1 | tail -1))}"
  if ((EMULATED)); then
    echo "cuda module: $SKIPSERVE_CUDA_MODULE (emulated)"
  else
    echo "bundle: $BUNDLE_ID; needs glibc >= $(cat "$SK/GLIBC_REQUIRED")," \
         "libstdc++ with GLIBCXX_$(cat "$SK/GLIBCXX_REQUIRED" 2>/dev/null)"
    echo "cuBLAS from: $CUBLAS_DIR"
  fi
  # Every program and the module must resolve all its libraries.
  for b in "${BIN_FILES[@]}"; do
    out=$(LD_LIBRARY_PATH=${LDP:-} ldd "$b" 2>&1)
    if ((EMULATED)); then  # the build tree's programs: problems only
      echo "ldd $b: $(grep -c '=>' <<< "$out") libraries$(grep 'not found' <<< "$out")"
    else
      echo "--- ldd $b"
      echo "$out"
    fi
    if grep -q "not found" <<< "$out"; then
      echo "unresolved libraries in $b" | tee -a "$STEP_NOTE"
      rc=1
    fi
  done
  return $rc
}

# JSON record of the environment for the summary.
env_record() {
  local gpu py
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  py=$(grep -m1 '^python: ' "$OUT/env.txt" 2>/dev/null | cut -c9-)
  printf '{"type":"env","os":%s,"glibc":%s,"gpu":%s,"python":%s,"bundle":%s,"cublas":%s,"sanitizer":%s}\n' \
    "$(jstr "$(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")")" \
    "$(jstr "$(ldd --version 2>&1 | head -1)")" "$(jstr "${gpu:-none}")" \
    "$(jstr "$py")" "$(jstr "$BUNDLE_ID")" "$(jstr "${CUBLAS_DIR:-}")" \
    "$(jstr "$(grep -m1 '^compute-sanitizer: ' "$OUT/env.txt" 2>/dev/null | cut -c20-)")" \
    >> "$OUT/steps.jsonl"
}

# --- Phases ------------------------------------------------------------------

summarize() {  # summarize NAME TITLE DIR...
  local name=$1 title=$2; shift 2
  "$PY" bench/gpu/summarize.py report --out_dir "$OUT" --name "$name" \
    --title "$title" "$@" > /dev/null || log "summary failed; the parts stay in \$OUT"
}

run_quick() {
  CUR_PHASE=quick
  BUDGET=${SKIPSERVE_GPU_BUDGET_S:-$((175 * SCALE))}
  PHASE_END=$(($(date +%s) + BUDGET))
  FAILED=()
  rm -f "$STATE/quick.passed"
  rm -rf "$STATE/quick" && mkdir -p "$STATE/quick"
  log "quick phase ($MACHINE), budget ${BUDGET}s"
  local t0 rc
  t0=$(date +%s)
  setup_bundle
  rc=$?
  record bundle "$( ((rc == 0)) && echo ok || echo fail)" $rc $(($(date +%s) - t0)) ""
  if ((rc != 0)); then
    FAILED+=(bundle)
    summarize "$DATE-$MACHINE-quick" "skipserve GPU check, quick phase, $MACHINE, $DATE" "$OUT"
    return 1
  fi
  if ((EMULATED)); then
    BIN_FILES=("$BIN/skipserve-bench" "$SKIPSERVE_CUDA_MODULE" "${CUDA_TESTS[@]%%|*}")
    LDP=
  else
    BIN_FILES=("$SK"/bin/*)
    LDP=$SK/lib:$CUBLAS_DIR
  fi
  : > "$STEP_NOTE"
  env_report > "$OUT/env.txt" 2>&1
  rc=$?
  cat "$OUT/env.txt"
  record env "$( ((rc == 0)) && echo ok || echo fail)" $rc 0 "$(cat "$STEP_NOTE")"
  ((rc == 0)) || FAILED+=(env)
  env_record
  rm -f "$OUT/env.txt"

  mkdir -p "$TMPD/xml"
  step cuda_tests 45 env REQUIRE_DEVICE=$((!EMULATED)) bash "$SELF" __tests \
    "$TMPD/xml" "${CUDA_TESTS[@]}"
  "$PY" bench/gpu/summarize.py merge-xml "$OUT/tests.xml" "$TMPD"/xml/*.xml

  step hf_parity 50 "$PY" bench/gpu/hf_parity.py --bench_tool "$BIN/skipserve-bench" \
    --out "$OUT/hf_parity.json" --size "$PARITY_SIZE" \
    --devices "$([[ $DEVICE == cpu ]] && echo cpu || echo "$DEVICE,cpu")"

  local left=$((PHASE_END - $(date +%s) - RESERVE))
  local lim=$((left < 50 * SCALE ? left : 50 * SCALE))
  step bench_quick 50 "${BENCH_ENV[@]}" "$BIN/skipserve-bench" --device="$DEVICE" --model="$MODEL" \
    --suite=bench/gpu/suites.json --suite_name="quick$SUITE_SUFFIX" \
    --results="$OUT/bench_quick.jsonl" --deadline_s=$((lim > 15 ? lim - 10 : 5)) \
    --bandwidth_mb=$( ((EMULATED)) && echo 16 || echo 1024)
  bench_partial bench_quick "$OUT/bench_quick.jsonl"

  if ((EMULATED)); then
    skip memcheck "emulated backend: no device code for compute-sanitizer to check"
    skip racecheck "emulated backend: no device code for compute-sanitizer to check"
    # The real suites, checked against the 7B shape (a typo fails here).
    step suite_check 20 bash -c "for s in quick full; do
      '$BIN/skipserve-bench' --dry_run --device=cuda --model=synthetic:llama2-7b:bf16:fast \
        --suite=bench/gpu/suites.json --suite_name=\$s > /dev/null || exit 1; done"
  else
    step memcheck 45 env LD_LIBRARY_PATH="$LDP" bash "$SELF" __sanitize memcheck "${SAN_TESTS[@]}"
    step racecheck 45 env LD_LIBRARY_PATH="$LDP" bash "$SELF" __sanitize racecheck "${SAN_TESTS[@]}"
  fi

  cp "$OUT"/{steps.jsonl,tests.xml,hf_parity.json,bench_quick.jsonl} "$STATE/quick/" 2>/dev/null
  if ((${#FAILED[@]} == 0)); then
    echo "$BUNDLE_ID $(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$STATE/quick.passed"
    cp "$STATE/quick.passed" "$OUT/quick.passed"
    log "quick phase PASSED: the full phase may run"
  else
    log "quick phase FAILED: ${FAILED[*]}; the full phase will refuse to run (--force overrides)"
  fi
  summarize "$DATE-$MACHINE-quick" "skipserve GPU check, quick phase, $MACHINE, $DATE" "$OUT"
  ((${#FAILED[@]} == 0))
}

run_full() {
  CUR_PHASE=full
  BUDGET=${SKIPSERVE_GPU_BUDGET_S:-$((400 * SCALE))}
  PHASE_END=$(($(date +%s) + BUDGET))
  FAILED=()
  log "full phase ($MACHINE), budget ${BUDGET}s"
  local rc
  setup_bundle
  rc=$?
  if ((rc != 0)); then
    record bundle fail $rc 0 ""
    return 1
  fi
  # The quick phase's verdict: left on this machine by quick, or carried
  # back in the bundle's folder when the machine was not kept warm.
  local passed=$STATE/quick.passed
  [[ -f $passed ]] || passed=$ROOT/build-gpu-bundle/quick.passed
  if [[ ! -f $passed || $(cut -d' ' -f1 "$passed") != "$BUNDLE_ID" ]]; then
    if ((FORCE)); then
      log "WARNING: quick has not passed with this bundle here; running anyway (--force)"
      record gate forced 0 0 "quick not passed; --force"
    else
      log "REFUSED: the quick phase has not passed with this bundle (no" \
          "$STATE/quick.passed, nor a carried build-gpu-bundle/quick.passed" \
          "naming bundle $BUNDLE_ID); run 'bench/gpu/run.sh quick' first, or --force"
      record gate refused 1 0 "quick phase not passed here with this bundle"
      FAILED+=("gate(quick not passed)")
      return 1
    fi
  fi

  local left=$((PHASE_END - $(date +%s) - RESERVE - 30))
  local lim=$((left < 300 * SCALE ? left : 300 * SCALE))
  step bench_full 300 "${BENCH_ENV[@]}" "$BIN/skipserve-bench" --device="$DEVICE" --model="$MODEL" \
    --suite=bench/gpu/suites.json --suite_name="full$SUITE_SUFFIX" \
    --results="$OUT/bench_full.jsonl" --deadline_s=$((lim > 25 ? lim - 15 : 10)) \
    --bandwidth_mb=$( ((EMULATED)) && echo 16 || echo 1024) \
    $( ((EMULATED)) && echo --prefill_tokens=128)
  bench_partial bench_full "$OUT/bench_full.jsonl"

  # The per-kernel byte/FLOP model of the suite's scenarios (a model, not a
  # measurement; bench/gpu/kernel_model.py), at the copy bandwidth the
  # benchmark just measured (nominal when it wrote none). JSON to $OUT, the
  # text into run.log: a ninth file would not come back from the device.
  step kernel_model 20 "$PY" bench/gpu/kernel_model.py --model "$MODEL" \
    --suite bench/gpu/suites.json --suite_name "full$SUITE_SUFFIX" \
    --from_bench "$OUT/bench_full.jsonl" --from_bench "$STATE/quick/bench_quick.jsonl" \
    --json_out "$OUT/kernel_model.json"

  left=$((PHASE_END - $(date +%s) - RESERVE - 25))
  lim=$((left < 120 * SCALE ? left : 120 * SCALE))
  if ((EMULATED)); then
    step hf_bench 60 "$PY" bench/gpu/hf_bench.py --out "$OUT/hf_bench.jsonl" \
      --prompt_lens=16 --decode="64:1,2" --decode_tokens=2 --rounds=1
  else
    step hf_bench 120 "$PY" bench/gpu/hf_bench.py --rounds=2 \
      --deadline_s=$((lim > 20 ? lim - 10 : 5)) --out "$OUT/hf_bench.jsonl"
  fi

  mkdir -p "$TMPD/host-xml"
  step host_tests 40 bash "$SELF" __tests "$TMPD/host-xml" "${HOST_TESTS[@]}"
  "$PY" bench/gpu/summarize.py merge-xml "$OUT/host_tests.xml" "$TMPD"/host-xml/*.xml

  summarize "$DATE-$MACHINE" "skipserve GPU check, $MACHINE, $DATE" "$STATE/quick" "$OUT"
  ((${#FAILED[@]} == 0))
}

rc=0
case $PHASE in
  quick) run_quick || rc=1 ;;
  full) run_full || rc=1 ;;
  all) if run_quick; then run_full || rc=1; else rc=1; log "full phase not run: quick failed"; fi ;;
esac
log "done: ${FAILED[*]:-no failures}"
exit $rc
