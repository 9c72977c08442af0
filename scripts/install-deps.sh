#!/usr/bin/env bash
# Installs the Debian packages skipserve builds, runs and tests with.
# Idempotent: installs only what is missing; uses sudo when not root.
# Nothing is downloaded except through apt from Debian's archive.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config make
  # engine
  libabsl-dev nlohmann-json3-dev libopenblas-dev
  libsentencepiece-dev sentencepiece
  # serving
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev
  # tests
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy python3-grpcio python3-grpc-tools python3-yaml python3-sentencepiece
  prometheus
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
