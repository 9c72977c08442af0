#!/bin/sh
# Prints, one per line, the Debian/Ubuntu packages that provide the shared
# libraries the given ELF files load (ldd + dpkg -S). The image builds run it
# in the build stage, whose distribution release matches the runtime stage's,
# so the runtime stage installs exactly these packages and nothing of the
# toolchain. Fails when a library is missing or belongs to no package.
#
#   docker/list-runtime-packages.sh build/server/skipserve-server ...
set -eu

if [ "$#" -eq 0 ]; then
  echo "usage: $0 ELF..." >&2
  exit 2
fi

libs=$(mktemp)
pkgs=$(mktemp)
trap 'rm -f "$libs" "$pkgs"' EXIT

# "--also LIB": a library the binaries dlopen() (libcurl, for the etcd
# registry store): its own package and those of its libraries.
also=0
for f in "$@"; do
  if [ "$f" = "--also" ]; then
    also=1
    continue
  fi
  if [ "$also" -eq 1 ]; then
    also=0
    readlink -f "$f" >>"$libs"
  fi
  out=$(ldd "$f") || { echo "ldd failed on $f" >&2; exit 1; }
  if printf '%s\n' "$out" | grep -q 'not found'; then
    echo "$f: unresolved libraries:" >&2
    printf '%s\n' "$out" | grep 'not found' >&2
    exit 1
  fi
  # "libfoo.so.1 => /lib/x86_64-linux-gnu/libfoo.so.1 (0x...)"
  printf '%s\n' "$out" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' >>"$libs"
done

for lib in $(sort -u "$libs"); do
  real=$(readlink -f "$lib")
  pkg=""
  # usrmerge: a file may be registered under /lib or /usr/lib; a library
  # chosen through update-alternatives (libopenblas.so.0) only under its
  # real path.
  for candidate in "$real" "$lib" "/usr$real" "${real#/usr}" "/usr$lib" "${lib#/usr}"; do
    pkg=$(dpkg -S "$candidate" 2>/dev/null | grep -v '^diversion' | head -n 1 | cut -d: -f1) || true
    [ -n "$pkg" ] && break
  done
  if [ -z "$pkg" ]; then
    echo "no package provides $lib ($real)" >&2
    exit 1
  fi
  echo "$pkg" >>"$pkgs"
done
sort -u "$pkgs"
