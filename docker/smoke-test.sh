#!/bin/sh
# Starts skipserve-server from an installed tree, asks it for its model info
# with the client CLI, then stops it with SIGTERM and expects exit status 0
# (the drain path). The image builds run it against the runtime stage, so a
# missing library, a misplaced SentencePiece module or a broken default model
# fails the build instead of the first container.
#
#   docker/smoke-test.sh /opt/skipserve [extra server flags...]
set -eu

prefix=${1:?usage: $0 PREFIX [server flags...]}
shift
server="$prefix/bin/skipserve-server"
client="$prefix/bin/skipserve"

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The etcd registry store dlopen()s libcurl: with nothing listening on the
# given port, the server must get as far as trying etcd (and give up at
# once), not stop for a missing libcurl.
if "$server" --registry=etcd://127.0.0.1:9/smoke \
    --registry_startup_timeout=0s "$@" >"$work/etcd-log" 2>&1; then
  echo "smoke-test: the server started without its etcd registry" >&2
  exit 1
fi
if ! grep -q "gave up after --registry_startup_timeout" "$work/etcd-log"; then
  echo "smoke-test: the etcd registry store cannot be used:" >&2
  cat "$work/etcd-log" >&2
  exit 1
fi

"$server" --host=127.0.0.1 --port=0 --metrics_port=0 \
    --port_file="$work/port" --drain_timeout=5s "$@" >"$work/log" 2>&1 &
pid=$!

i=0
while [ ! -s "$work/port" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "smoke-test: the server exited before serving:" >&2
    cat "$work/log" >&2
    exit 1
  fi
  i=$((i + 1))
  if [ "$i" -gt 600 ]; then
    echo "smoke-test: the server did not serve within 60 s:" >&2
    cat "$work/log" >&2
    exit 1
  fi
  sleep 0.1
done
port=$(cat "$work/port")

if ! "$client" info --target="127.0.0.1:$port" --connect_timeout=5s --deadline=10s; then
  echo "smoke-test: 'skipserve info' failed; server log:" >&2
  cat "$work/log" >&2
  exit 1
fi

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
if [ "$status" -ne 0 ]; then
  echo "smoke-test: the server exited $status after SIGTERM; log:" >&2
  cat "$work/log" >&2
  exit 1
fi
echo "smoke-test: ok (served on port $port, drained on SIGTERM)"
