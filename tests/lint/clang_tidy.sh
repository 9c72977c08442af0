#!/usr/bin/env bash
# clang-tidy (root .clang-tidy, warnings are errors) over the non-test
# sources of engine/, server/ and client/, using the build's
# compile_commands.json.
set -euo pipefail
clang_tidy=$1
source_dir=$2
build_dir=$3
cd "$source_dir"
files=$(git ls-files 'engine/*.cc' 'server/*.cc' 'client/*.cc' 2>/dev/null |
        grep -v '_test\.cc$' || true)
failed=0
for f in $files; do
  # Only files this build compiled (the CUDA or serving parts may be off).
  grep -q "\"file\": \"$source_dir/$f\"" "$build_dir/compile_commands.json" ||
      continue
  if ! "$clang_tidy" -p "$build_dir" --quiet "$f" 2>/dev/null; then
    failed=$((failed + 1))
  fi
done
echo "clang-tidy: $failed file(s) with findings"
[ "$failed" -eq 0 ]
