#!/usr/bin/env bash
# Builds skipserve's container images without a Docker engine and, by
# default, without an image registry: buildah builds docker/Dockerfile.cpu on
# a Debian base image made here from Debian's own packages (mmdebstrap, then
# `podman import`). Everything comes from Debian's archive through apt.
#
#   scripts/build-image.sh                    # localhost/skipserve:cpu
#   scripts/build-image.sh --install-deps     # first install mmdebstrap,
#                                             # buildah, podman (install-deps.sh image)
#   scripts/build-image.sh --base=registry    # FROM debian:bookworm(-slim), pulled
#   scripts/build-image.sh --check-cuda       # docker/Dockerfile.cuda up to its
#                                             # first FROM (see docker/README.md)
#
# Options:
#   --tag=NAME          image name (default localhost/skipserve:cpu)
#   --install-deps      install the container tools first (scripts/install-deps.sh
#                       image); without it, missing tools are an error that says so
#   --base=local        (default) the base is localhost/skipserve-debian:bookworm-slim,
#                       made here by mmdebstrap once and then reused: it is remade
#                       only when missing, made by a different recipe (this
#                       script's), older than SKIPSERVE_BASE_MAX_AGE_DAYS (30),
#                       or with --refresh-base
#   --base=registry     the Dockerfile's own defaults (debian:bookworm for the
#                       build stage, debian:bookworm-slim for the runtime stage)
#   --refresh-base      remake the local base image
#   --context=head      (default) the build context is `git archive HEAD` in a
#                       temporary directory: committed files only, never build
#                       trees or uncommitted work
#   --context=worktree  the working tree itself, filtered by .dockerignore
#                       (which keeps build*/, .git and shared/ out)
#   --no-cache          build every step again (by default buildah --layers
#                       caches each step's result and reuses it)
#   --no-layers         keep no intermediate images: nothing of the build stays
#                       in the container storage but the tagged image (CI)
#   --summary=FILE      write key=value results (image, id, size, seconds) there
#   --check-cuda        instead of building the CPU image: run buildah on
#                       docker/Dockerfile.cuda with --pull=never. NVIDIA's
#                       registry is out of reach here, so it must stop at the
#                       first FROM with "image not known" for the expected
#                       nvidia/cuda reference, which shows that buildah parsed
#                       the whole file and expanded the FROM arguments; any
#                       other outcome fails.
#
# Root uses the system's container storage (/var/lib/containers); other users
# need user namespaces and a /etc/subuid range (buildah and mmdebstrap run
# rootless then; only root has been tried). `podman run` is not used: crun
# fails on the project's machine (cgroup v1, hybrid), so scripts run things
# from the image with `buildah run --isolation=chroot` (.ci/image-check).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

TAG=localhost/skipserve:cpu
BASE_MODE=local
CONTEXT_MODE=head
INSTALL_DEPS=0
REFRESH_BASE=0
CACHE_MODE=layers
SUMMARY=""
MODE=build

BASE_IMAGE=localhost/skipserve-debian:bookworm-slim
BASE_MAX_AGE_DAYS=${SKIPSERVE_BASE_MAX_AGE_DAYS:-30}
DEBIAN_MIRROR=${SKIPSERVE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${SKIPSERVE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
CUDA_EXPECTED_FROM=nvidia/cuda:12.6.3-devel-ubuntu24.04

die() {
  echo "build-image: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

for arg in "$@"; do
  case "$arg" in
    --tag=*) TAG=${arg#--tag=} ;;
    --install-deps) INSTALL_DEPS=1 ;;
    --base=local | --base=registry) BASE_MODE=${arg#--base=} ;;
    --refresh-base) REFRESH_BASE=1 ;;
    --context=head | --context=worktree) CONTEXT_MODE=${arg#--context=} ;;
    --no-cache) CACHE_MODE=no-cache ;;
    --no-layers) CACHE_MODE=no-layers ;;
    --summary=*) SUMMARY=${arg#--summary=} ;;
    --check-cuda) MODE=check-cuda ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-image: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

# --------------------------------------------------------------------------
# Tools and privileges

if [ "$INSTALL_DEPS" = 1 ]; then
  bash scripts/install-deps.sh image
fi

need_tools=(buildah)
if [ "$MODE" = build ]; then need_tools+=(podman); fi
if [ "$MODE" = build ] && [ "$BASE_MODE" = local ]; then need_tools+=(mmdebstrap); fi
missing=()
for t in "${need_tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  cat >&2 <<EOF
build-image: not installed: ${missing[*]}.
  Install the container tools from Debian with
      scripts/build-image.sh --install-deps   (make image IMAGE_ARGS=--install-deps)
  or  bash scripts/install-deps.sh image
  which install mmdebstrap, buildah, podman and uidmap through apt.
EOF
  exit 3
fi

if [ "$(id -u)" -ne 0 ]; then
  why=""
  if ! unshare --user --map-root-user true 2>/dev/null; then
    why="this kernel or sandbox does not let an unprivileged user create a user namespace"
  elif ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null; then
    why="/etc/subuid has no range for $(id -un) (usermod --add-subuids 100000-165535 $(id -un))"
  elif ! command -v newuidmap >/dev/null 2>&1; then
    why="newuidmap is missing (Debian package uidmap)"
  fi
  if [ -n "$why" ]; then
    cat >&2 <<EOF
build-image: cannot build images as $(id -un) here: $why.
  Rootless buildah and mmdebstrap need user namespaces with a subordinate uid
  range; or run this script as root.
EOF
    exit 3
  fi
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/skipserve-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --------------------------------------------------------------------------
# The CUDA Dockerfile, as far as it goes without NVIDIA's registry

if [ "$MODE" = check-cuda ]; then
  ctx="$WORK/cuda-context"
  mkdir "$ctx"
  # The context is irrelevant: the build must stop before any COPY.
  cp docker/Dockerfile.cuda "$ctx/Containerfile"
  set +e
  out=$(timeout 300 buildah bud --isolation=chroot --pull=never --format=docker \
          -f "$ctx/Containerfile" -t localhost/skipserve:cuda-check "$ctx" 2>&1)
  rc=$?
  set -e
  printf '%s\n' "$out" | sed 's/^/  buildah: /'
  if [ "$rc" -eq 0 ]; then
    die "Dockerfile.cuda built with --pull=never: a local $CUDA_EXPECTED_FROM exists? This check expects it to stop at its first FROM."
  fi
  if printf '%s\n' "$out" | grep -q "$CUDA_EXPECTED_FROM" &&
     printf '%s\n' "$out" | grep -qiE "image not known|not found|no such image"; then
    echo "build-image: Dockerfile.cuda: parsed by buildah; its first FROM resolves to" \
         "$CUDA_EXPECTED_FROM, which is not here (no registry): stopped there, as expected"
    exit 0
  fi
  die "Dockerfile.cuda: buildah failed before reaching its first FROM (exit $rc; output above)"
fi

# --------------------------------------------------------------------------
# The local base image

# Everything that shapes the base image; its hash is the image's label, so a
# changed recipe makes a new base.
#   - minbase, with merged /usr set up the way debootstrap does it (the
#     hook), so that usrmerge and perl are not installed;
#   - bookworm, bookworm-updates and bookworm-security, as in debian:bookworm;
#   - slim: dpkg leaves out documentation, manual pages and translations, as
#     in debian:bookworm-slim. dpkg keeps these options in the image
#     (/etc/dpkg/dpkg.cfg.d/99mmdebstrap), so the packages the Dockerfile
#     installs later are slimmed too;
#   - apt configured as in Debian's official images (docker/base/): it
#     deletes downloaded packages after installing them and fetches no
#     translations, so no layer keeps a package cache;
#   - apt retries, kept in the image, help the build's own apt-get.
MMDEBSTRAP_ARGS=(
  --variant=minbase
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --aptopt='Acquire::Retries "5"'
  --customize-hook='copy-in docker/base/docker-clean docker/base/docker-no-languages /etc/apt/apt.conf.d'
  # mmdebstrap's own cleanup misses apt's binary caches once docker-clean
  # tells apt to keep none (71 MB).
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/groff/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  --dpkgopt='path-exclude=/usr/share/linda/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  bookworm
)
MMDEBSTRAP_SOURCES=(
  "deb $DEBIAN_MIRROR bookworm main"
  "deb $DEBIAN_MIRROR bookworm-updates main"
  "deb $DEBIAN_SECURITY bookworm-security main"
)
RECIPE=$( (printf '%s\n' "${MMDEBSTRAP_ARGS[@]}" "${MMDEBSTRAP_SOURCES[@]}"
           cat docker/base/docker-clean docker/base/docker-no-languages) | sha256sum | cut -c1-16)

image_label() {  # image label
  buildah inspect --type image --format "{{index .ImageAnnotations \"$2\"}}{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null
}

base_is_current() {
  buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 || { echo "missing"; return 1; }
  local recipe created now
  recipe=$(image_label "$BASE_IMAGE" org.skipserve.base-recipe)
  [ "$recipe" = "$RECIPE" ] || { echo "made by another recipe ($recipe, now $RECIPE)"; return 1; }
  created=$(image_label "$BASE_IMAGE" org.skipserve.base-created)
  now=$(date +%s)
  if [ -z "$created" ] || [ $((now - created)) -gt $((BASE_MAX_AGE_DAYS * 86400)) ]; then
    echo "older than $BASE_MAX_AGE_DAYS days"
    return 1
  fi
  return 0
}

make_base() {
  local tar="$WORK/base.tar" log="$WORK/mmdebstrap.log"
  echo "build-image: making $BASE_IMAGE with mmdebstrap from $DEBIAN_MIRROR (recipe $RECIPE)"
  local t0=$SECONDS old
  old=$(buildah inspect --type image --format '{{.FromImageID}}' "$BASE_IMAGE" 2>/dev/null || true)
  if ! timeout 1200 mmdebstrap "${MMDEBSTRAP_ARGS[@]}" "$tar" "${MMDEBSTRAP_SOURCES[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "mmdebstrap failed (is $DEBIAN_MIRROR reachable?)"
  fi
  podman import --quiet \
    --change 'CMD ["bash"]' \
    --change "LABEL org.skipserve.base-recipe=$RECIPE" \
    --change "LABEL org.skipserve.base-created=$(date +%s)" \
    --message "mmdebstrap ${MMDEBSTRAP_ARGS[*]}" \
    "$tar" "$BASE_IMAGE" >/dev/null
  rm -f "$tar"
  # The base it replaces, unless an image or a container still uses it.
  if [ -n "$old" ]; then buildah rmi "$old" >/dev/null 2>&1 || true; fi
  echo "build-image: $BASE_IMAGE made in $((SECONDS - t0)) s"
}

if [ "$BASE_MODE" = local ]; then
  lockdir=${XDG_RUNTIME_DIR:-/tmp}
  exec 9>"$lockdir/skipserve-base-image.lock"
  # Two builds at once make the base once.
  flock -w 1500 9 || die "timed out waiting for another build to make $BASE_IMAGE"
  if [ "$REFRESH_BASE" = 1 ]; then
    make_base
  elif why=$(base_is_current); then
    echo "build-image: reusing $BASE_IMAGE (recipe $RECIPE)"
  else
    echo "build-image: $BASE_IMAGE is $why"
    make_base
  fi
  flock -u 9
  BUILD_ARGS=(--pull=never
              --build-arg "DEBIAN_IMAGE=$BASE_IMAGE"
              --build-arg "RUNTIME_IMAGE=$BASE_IMAGE")
else
  BUILD_ARGS=(--pull=missing)
fi

# --------------------------------------------------------------------------
# The build context

revision=""
if [ "$CONTEXT_MODE" = head ]; then
  git rev-parse --verify -q HEAD >/dev/null 2>&1 ||
    die "--context=head needs a git checkout with a commit; use --context=worktree"
  revision=$(git rev-parse HEAD)
  CONTEXT="$WORK/context"
  mkdir "$CONTEXT"
  git archive --format=tar HEAD | tar -x -C "$CONTEXT"
  dirty=$(git status --porcelain --untracked-files=no | wc -l)
  echo "build-image: context: git archive HEAD ($revision)" \
       "$( [ "$dirty" -gt 0 ] && echo "- $dirty uncommitted change(s) are NOT in the image (--context=worktree takes them)")"
else
  CONTEXT=$ROOT
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  [ -f .dockerignore ] || die "--context=worktree needs .dockerignore (it keeps build trees out)"
  echo "build-image: context: the working tree, filtered by .dockerignore"
fi

# --------------------------------------------------------------------------
# The build

case "$CACHE_MODE" in
  layers) CACHE_ARGS=(--layers) ;;
  no-cache) CACHE_ARGS=(--layers --no-cache) ;;
  no-layers) CACHE_ARGS=(--layers=false) ;;
esac

echo "build-image: building $TAG from docker/Dockerfile.cpu ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
load_before=$(cut -d' ' -f1 /proc/loadavg)
t0=$(date +%s)
# --format=docker keeps HEALTHCHECK and STOPSIGNAL (the OCI format has no
# place for HEALTHCHECK). chroot isolation: no runtime, no cgroups.
# --force-rm: a failed build leaves no working containers behind.
buildah bud --isolation=chroot --format=docker --force-rm "${CACHE_ARGS[@]}" \
  "${BUILD_ARGS[@]}" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.source=skipserve" \
  -f "$CONTEXT/docker/Dockerfile.cpu" -t "$TAG" "$CONTEXT"
t1=$(date +%s)
load_after=$(cut -d' ' -f1 /proc/loadavg)

id=$(buildah inspect --type image --format '{{.FromImageID}}' "$TAG")
size=$(podman image inspect --format '{{.Size}}' "$TAG" 2>/dev/null || echo 0)
seconds=$((t1 - t0))
printf 'build-image: %s (%s): %s MB uncompressed, built in %d s (load average %s before, %s after)\n' \
  "$TAG" "${id:0:12}" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')" \
  "$seconds" "$load_before" "$load_after"

if [ -n "$SUMMARY" ]; then
  {
    echo "image=$TAG"
    echo "image_id=$id"
    echo "revision=$revision"
    echo "size_bytes=$size"
    echo "build_seconds=$seconds"
    echo "cores=$(nproc)"
    echo "load_before=$load_before"
    echo "load_after=$load_after"
  } >"$SUMMARY"
fi
