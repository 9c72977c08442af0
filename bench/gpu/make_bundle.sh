#!/usr/bin/env bash
# Builds, on the development machine (Debian 12 with the CUDA toolkit, Abseil,
# OpenBLAS, GoogleTest), what bench/gpu/run.sh runs on the GPU machine, which
# has CMake and nvcc but none of those libraries: the CUDA tests, the
# benchmark and the logits tool, the CUDA backend module they load
# (libskipserve_cuda_module.so, next to them in bin/, where the programs look
# for it), with every shared library they need except the C library and the
# CUDA driver/cuBLAS (taken from the GPU machine's own CUDA 13 install).
# Writes build-gpu-bundle/bundle.tar.xz (ignored by git via /build*/), which a
# device call carries: carry=["build-gpu-bundle"].
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=build-cuda
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSKIPSERVE_NATIVE=OFF \
  -DCMAKE_DISABLE_FIND_PACKAGE_gRPC=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_Protobuf=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_prometheus-cpp=ON
TARGETS=(cuda_backend_test cuda_module_test launch_plan_test cpu_backend_test
         skipserve-bench skipserve-logits)
# The tools reach the CUDA backend only through its module (dlopen; see
# engine/cuda/cuda_module.h); building them builds it.
MODULE=libskipserve_cuda_module.so
ninja -C "$BUILD" -j"$(nproc)" "${TARGETS[@]}" skipserve_cuda_module

STAGE=$(mktemp -d)
mkdir -p "$STAGE/bin" "$STAGE/lib"
for t in "${TARGETS[@]}"; do cp "$BUILD/engine/$t" "$STAGE/bin/"; done
cp "$BUILD/engine/$MODULE" "$STAGE/bin/"
# Shared libraries outside glibc and CUDA (the module's too).
for t in "$STAGE"/bin/*; do
  ldd "$t" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*) ;;
    libcuda.so*|libcublas*|libcudart*) ;;
    *) cp -L "$lib" "$STAGE/lib/" ;;
  esac
done
mkdir -p build-gpu-bundle
tar -C "$STAGE" -cJf build-gpu-bundle/bundle.tar.xz bin lib
rm -rf "$STAGE"
ls -la build-gpu-bundle/bundle.tar.xz
