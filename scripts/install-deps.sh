#!/usr/bin/env bash
# Installs the Debian packages skipserve builds, runs and tests with.
# Idempotent: installs only what is missing; uses sudo when not root.
# Nothing is downloaded except through apt from Debian's archive.
#
#   bash scripts/install-deps.sh            # the default group: dev
#   bash scripts/install-deps.sh image      # only the container tools
#   bash scripts/install-deps.sh dev image  # both
#   bash scripts/install-deps.sh check      # the fuzzing toolchain
#
# Groups:
#   dev    compilers, libraries and test tools (what `make run` and
#          `make test` need); the default when no group is named
#   image  opt-in: the container tools scripts/build-image.sh uses to build
#          the images without a Docker engine or an image registry
#          (mmdebstrap for a Debian base image, buildah, podman; uidmap for
#          rootless use)
#   check  clang 14 and its runtimes (libFuzzer, clang's ASan), for
#          .ci/fuzz; the sanitizer builds (.ci/sanitizers) use GCC's
#          runtimes, which build-essential brings
set -euo pipefail

DEV_PACKAGES=(
  build-essential cmake ninja-build pkg-config make
  # engine
  libabsl-dev nlohmann-json3-dev libopenblas-dev
  libsentencepiece-dev sentencepiece
  # serving
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  prometheus-cpp-dev
  # the registry's etcd store (its HTTP client) and the etcd its tests run
  libcurl4-openssl-dev etcd-server etcd-client
  # tests
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-numpy python3-grpcio python3-grpc-tools python3-yaml python3-sentencepiece
  prometheus
)

IMAGE_PACKAGES=(
  mmdebstrap buildah podman uidmap
)

CHECK_PACKAGES=(
  clang-14 libclang-rt-14-dev
)

groups=("$@")
if [ ${#groups[@]} -eq 0 ]; then groups=(dev); fi

PACKAGES=()
for g in "${groups[@]}"; do
  case "$g" in
    dev) PACKAGES+=("${DEV_PACKAGES[@]}") ;;
    image) PACKAGES+=("${IMAGE_PACKAGES[@]}") ;;
    check) PACKAGES+=("${CHECK_PACKAGES[@]}") ;;
    *)
      echo "install-deps: unknown group '$g' (groups: dev, image, check)" >&2
      exit 2
      ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present (${groups[*]})"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
