#!/usr/bin/env bash
# Fails when a tracked C++ file differs from what clang-format makes of it.
set -euo pipefail
clang_format=$1
cd "$2"
files=$(git ls-files '*.cc' '*.h' 2>/dev/null || find engine server client tests -name '*.cc' -o -name '*.h')
"$clang_format" --dry-run -Werror $files
echo "clang-format: $(echo "$files" | wc -w) files clean"
