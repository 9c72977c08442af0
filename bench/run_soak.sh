#!/usr/bin/env bash
# The soak benchmark (issue 11): a benchmark, not a test. One
# skipserve-server on loopback, 30 minutes of closed-loop load at
# concurrency 64 (Generate and GenerateStream, 5% cancelled by the client,
# 5% with a deadline that mostly expires, policies mixed: default, spec,
# named, an A/B experiment, inline, ad-hoc), admin changes every 5 s (a
# named policy rewritten, the experiment's weights changed, a policy put and
# deleted). Reports requests, statuses by code (client side and the server's
# skipserve_requests_total), admin calls, RSS and KV blocks at the start and
# the end, and the machine with its load, into
# bench/results/<date>-soak.{json,md} (bench/soak.py does the work).
#
#   bash bench/run_soak.sh [BUILD_DIR] [MINUTES] [-- SERVER_FLAGS...]
#   SOAK_NOTE="..." bash bench/run_soak.sh ...   # a sentence for the report
#
# Needs a built server (make build, or cmake --build BUILD_DIR --target
# skipserve-server) and Debian's python3-grpcio, protoc and grpc_python_plugin (make deps).
# Exits 1 when the server crashed, did not drain, kept KV blocks once idle
# or answered a status the soak does not expect.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
minutes=${2:-30}
shift $(( $# > 2 ? 2 : $# ))
if [ "${1:-}" = "--" ]; then shift; fi
server="$build/server/skipserve-server"
if [ ! -x "$server" ]; then
  echo "run_soak: $server is not built (cmake --build $build --target skipserve-server)" >&2
  exit 1
fi
out=bench/results/$(date +%Y-%m-%d)-soak
exec /usr/bin/python3 bench/soak.py --server="$server" --out="$out" \
    --minutes="$minutes" --concurrency=64 --cancel=0.05 --deadline=0.05 \
    --note="${SOAK_NOTE:-}" -- "$@"
