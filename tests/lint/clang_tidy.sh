#!/usr/bin/env bash
# clang-tidy (root .clang-tidy, warnings are errors) over the non-test
# sources of engine/, server/ and client/, using the build's
# compile_commands.json; one clang-tidy per core at a time
# (SKIPSERVE_TIDY_JOBS overrides).
set -euo pipefail
clang_tidy=$1
source_dir=$2
build_dir=$3
cd "$source_dir"
files=$(git ls-files 'engine/*.cc' 'server/*.cc' 'client/*.cc' 2>/dev/null |
        grep -v '_test\.cc$' || true)
list=()
for f in $files; do
  # Only files this build compiled (the CUDA or serving parts may be off).
  grep -q "\"file\": \"$source_dir/$f\"" "$build_dir/compile_commands.json" ||
      continue
  list+=("$f")
done
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
# Each file's findings go to <results>/<file with / as _>.out; a file with
# findings also leaves a .failed marker.
printf '%s\n' "${list[@]}" |
  xargs -P "${SKIPSERVE_TIDY_JOBS:-$(nproc)}" -I{} sh -c '
    out="$3/$(printf %s "$2" | tr / _)"
    "$0" -p "$1" --quiet "$2" > "$out.out" 2>/dev/null || touch "$out.failed"
  ' "$clang_tidy" "$build_dir" {} "$results"
failed=0
for f in "${list[@]}"; do
  out="$results/$(printf %s "$f" | tr / _)"
  if [ -e "$out.failed" ]; then
    failed=$((failed + 1))
    cat "$out.out"
  fi
done
echo "clang-tidy: ${#list[@]} files, $failed with findings"
[ "$failed" -eq 0 ]
