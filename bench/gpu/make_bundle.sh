#!/usr/bin/env bash
# Builds, on the development machine (Debian 12 with the CUDA toolkit, Abseil,
# OpenBLAS, GoogleTest), what bench/gpu/run.sh runs on the GPU machine, which
# has none of those libraries: the CUDA tests, the benchmark and the logits
# tool, and the CUDA backend module they load (libskipserve_cuda_module.so,
# next to them in bin/, where the programs look for it).
#
# Portability (bench/gpu/README.md): the bundle ships no C++ runtime (no
# libstdc++, no libgcc_s: Debian 12's need glibc 2.36 / 2.35); the GPU
# machine's own are used. It carries Abseil's shared libraries, libgomp,
# OpenBLAS and its libgfortran/libquadmath. Linking libstdc++ statically does
# not remove the need: the CUDA module is a shared object, Debian's static
# Abseil archives are not position-independent (local-exec TLS relocations)
# so the module must take the shared Abseil, which needs the system's
# libstdc++. What every bundled file needs is measured with objdump and
# written to manifest.txt, GLIBC_REQUIRED and GLIBCXX_REQUIRED (run.sh
# checks both first).
#
# Writes build-gpu-bundle/bundle.tar.gz (ignored by git via /build*/), which a
# device call carries: carry=["build-gpu-bundle"]. Builds in build-cuda.
#
# SKIPSERVE_BUNDLE_WITHOUT="name ..." leaves out test binaries this tree does
# not define yet (with a warning; run.sh then reports them missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=build-cuda

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSKIPSERVE_NATIVE=OFF \
  -DCMAKE_DISABLE_FIND_PACKAGE_gRPC=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_prometheus-cpp=ON
TARGETS=(cuda_backend_test cuda_kernels_test cuda_attention_test
         cuda_prefill_attention_test cuda_module_test
         launch_plan_test cpu_backend_test skipserve-bench skipserve-logits)
WITHOUT=" ${SKIPSERVE_BUNDLE_WITHOUT:-} "
KNOWN=$(ninja -C "$BUILD" -t targets all | sed -n 's/^\([^:]*\): .*/\1/p')
BUILT=()
for t in "${TARGETS[@]}"; do
  if grep -qx "$t" <<< "$KNOWN"; then
    BUILT+=("$t")
  elif [[ $WITHOUT == *" $t "* ]]; then
    echo "make_bundle: WARNING: $t is not a target of this tree; left out" \
         "because SKIPSERVE_BUNDLE_WITHOUT names it (run.sh will report it missing)" >&2
  else
    echo "make_bundle: $t is not a target of this tree (CMake found no CUDA" \
         "toolkit, or the test has not landed yet). The GPU check runs it;" \
         "set SKIPSERVE_BUNDLE_WITHOUT=\"$t\" to build a bundle without it." >&2
    exit 1
  fi
done
# The tools reach the CUDA backend only through its module (dlopen; see
# engine/cuda/cuda_module.h); building them builds it.
MODULE=libskipserve_cuda_module.so
ninja -C "$BUILD" -j"$(nproc)" "${BUILT[@]}" skipserve_cuda_module

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib"
for t in "${BUILT[@]}"; do cp "$BUILD/engine/$t" "$STAGE/bin/"; done
cp "$BUILD/engine/$MODULE" "$STAGE/bin/"
# Shared libraries outside glibc, libgcc_s and CUDA (the module's too).
for t in "$STAGE"/bin/*; do
  ldd "$t" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*) ;;
    libgcc_s.so*) ;;
    libcuda.so*|libcublas*|libcudart*) ;;
    libstdc++.so*) ;;  # the GPU machine's own (GLIBCXX_REQUIRED)
    *) cp -L "$lib" "$STAGE/lib/" ;;
  esac
done
# What each file needs, measured with objdump: the highest symbol version of
# glibc (GLIBC_), of libstdc++ (GLIBCXX_, CXXABI_) and of libgcc_s (GCC_).
{
  echo "# skipserve GPU bundle, built $(date -u +%Y-%m-%dT%H:%M:%SZ) on" \
       "$(. /etc/os-release; echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  echo "# file GLIBC GLIBCXX CXXABI GCC NEEDED"
  for f in "$STAGE"/bin/* "$STAGE"/lib/*; do
    syms=$(objdump -T "$f")
    top() { grep -o "\b$1[0-9.]*[0-9]" <<< "$syms" | sort -uV | tail -1; }
    deps=$(objdump -p "$f" | awk '/NEEDED/{print $2}' | tr '\n' ' ')
    echo "${f#"$STAGE"/} $(top GLIBC_) $(top GLIBCXX_) $(top CXXABI_) $(top GCC_) $deps"
  done
} > "$STAGE/manifest.txt"
for lib in "$STAGE"/lib/*; do
  case "$(basename "$lib")" in
    libstdc++*|libgcc_s*)
      echo "make_bundle: $lib must not be shipped (the GPU machine's own is used)" >&2
      exit 1 ;;
  esac
done
need() {
  grep -v '^#' "$STAGE/manifest.txt" | grep -o "\b$1[0-9.]*[0-9]" \
    | sed "s/^$1//" | sort -uV | tail -1
}
need GLIBC_ > "$STAGE/GLIBC_REQUIRED"
need GLIBCXX_ > "$STAGE/GLIBCXX_REQUIRED"
cat "$STAGE/manifest.txt"
echo "bundle needs glibc >= $(cat "$STAGE/GLIBC_REQUIRED")," \
     "libstdc++ with GLIBCXX_$(cat "$STAGE/GLIBCXX_REQUIRED")"
mkdir -p build-gpu-bundle
rm -f build-gpu-bundle/bundle.tar.xz
tar -C "$STAGE" -czf build-gpu-bundle/bundle.tar.gz bin lib manifest.txt \
  GLIBC_REQUIRED GLIBCXX_REQUIRED
ls -la build-gpu-bundle/bundle.tar.gz
