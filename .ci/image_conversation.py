#!/usr/bin/python3
"""Runs a built skipserve image the way a container runtime would, without
one, and talks to it: the image check's second half (.ci/image-check).

    /usr/bin/python3 .ci/image_conversation.py IMAGE

`podman run` fails on this project's machine (crun: setrlimit RLIMIT_NOFILE:
Operation not permitted, on a cgroup v1 hybrid hierarchy), so everything
runs through `buildah run --isolation=chroot` in one working container of
IMAGE: no cgroups, no network namespace (the server listens on the host's
loopback, on ports it picks), no PID namespace (its process is visible
here). From the image, as the user the image declares:

  1. the image's configuration: a non-root USER, ENTRYPOINT + CMD that start
     skipserve-server on the embedded model, a HEALTHCHECK;
  2. the runtime stage is lean: no compiler, no -dev package, no CMake;
  3. the server: ENTRYPOINT + CMD exactly as declared, plus
     --host=127.0.0.1 --port=0 --metrics_port=0 (the host's network is
     shared; never the fixed ports another server here may hold) and a port
     file; it must run as the declared uid;
  4. grpc.health.v1.Health/Check answers SERVING (from here, with Debian's
     python3-grpcio);
  5. the image's own HEALTHCHECK command (`skipserve info`, pointed at the
     chosen port) exits 0;
  6. `skipserve generate` from the image with a skip policy
     (attn:last=33%: the plan attn:5-7 on the 8-layer model) and with a
     named policy from the image's policies file;
  7. /metrics (scraped from here) counts each of the two requests under its
     policy label;
  8. SIGTERM to the server while a streamed generation is in flight: the
     stream finishes, the server drains and exits 0, and `buildah run`
     returns that 0.

Prints one line per check and `N passed, M failed`; exits 1 on any failure.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

# The embedded default model has 8 layers: attn:last=33% skips attention in
# round(0.33 * 8) = 3 layers, 5..7.
POLICY = "attn:last=33%"
PLAN = "attn:5-7"
# deploy/policies.json, copied to /etc/skipserve/policies.json in the image.
NAMED_POLICY = "paper-attn-33"
START_TIMEOUT_S = 180
CALL_TIMEOUT_S = 120
DRAIN_TIMEOUT_S = 20
EXIT_TIMEOUT_S = DRAIN_TIMEOUT_S + 60
LEAN_FORBIDDEN = re.compile(
    r"^(gcc(-\d+)?|g\+\+(-\d+)?|cpp(-\d+)?|clang.*|cmake|ninja-build|make|"
    r"build-essential|binutils.*|pkg-config|pkgconf|protobuf-compiler.*|"
    r".*-dev)$")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS  {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""),
                  flush=True)
        return bool(ok)


def run(args, timeout=CALL_TIMEOUT_S, check=False):
    try:
        p = subprocess.run(args, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(args, 124, e.stdout or "",
                                           f"timed out after {timeout} s")
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {p.returncode}: "
                           f"{p.stderr.strip()}")
    return p


def image_config(image):
    out = run(["buildah", "inspect", "--type", "image", image], check=True)
    data = json.loads(out.stdout)
    docker = (data.get("Docker") or {}).get("config") or {}
    oci = (data.get("OCIv1") or {}).get("config") or {}
    return {
        "User": docker.get("User") or oci.get("User") or "",
        "Entrypoint": docker.get("Entrypoint") or oci.get("Entrypoint") or [],
        "Cmd": docker.get("Cmd") or oci.get("Cmd") or [],
        "Healthcheck": docker.get("Healthcheck") or {},
        "ExposedPorts": docker.get("ExposedPorts") or
        oci.get("ExposedPorts") or {},
        "StopSignal": docker.get("StopSignal") or oci.get("StopSignal") or "",
    }


def children(pid):
    """Every descendant of pid (from /proc, so only in our PID namespace)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in parents.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def proc_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def health_status(port):
    """grpc.health.v1.Health/Check for the whole server: the serialized
    HealthCheckRequest{service: ""} is empty; the response's field 1 is the
    status (1 = SERVING, 2 = NOT_SERVING)."""
    import grpc  # Debian's python3-grpcio
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=None,
                                    response_deserializer=None)
        reply = check(b"", timeout=30)
    if len(reply) >= 2 and reply[0] == 0x08:
        return {1: "SERVING", 2: "NOT_SERVING"}.get(reply[1], str(reply[1]))
    return "UNKNOWN" if reply == b"" else repr(reply)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                timeout=30) as r:
        return r.status, r.read().decode("utf-8", "replace")


def metric_sum(text, name, **labels):
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        body = line[len(name):]
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', body))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(body.rsplit(" ", 1)[1])
            found = True
    return total if found else None


def parse_json(completed):
    if completed.returncode != 0:
        return {}
    try:
        value = json.loads(completed.stdout)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    image = argv[1]
    c = Checks()

    # 1. The image's configuration.
    cfg = image_config(image)
    user = cfg["User"]
    uid_text = user.split(":")[0]
    c.check(f"image declares a numeric non-root USER ({user or 'none'})",
            uid_text.isdigit() and int(uid_text) != 0)
    declared_uid = int(uid_text) if uid_text.isdigit() else 0
    entry, cmd = cfg["Entrypoint"], cfg["Cmd"]
    c.check(f"ENTRYPOINT {entry} starts skipserve-server",
            bool(entry) and entry[0].endswith("/skipserve-server"))
    c.check(f"CMD {cmd} serves the embedded model",
            "--model=/opt/skipserve/models/default" in cmd)
    health_test = cfg["Healthcheck"].get("Test") or []
    c.check(f"HEALTHCHECK {health_test}",
            len(health_test) > 1 and health_test[0] == "CMD")
    c.check("EXPOSE 50051 and 9090",
            {"50051/tcp", "9090/tcp"} <= set(cfg["ExposedPorts"]),
            f"{sorted(cfg['ExposedPorts'])}")
    if c.failed:
        print(f"{c.passed} passed, {c.failed} failed")
        return 1

    work = tempfile.mkdtemp(prefix="skipserve-image-check.")
    os.chmod(work, 0o1777)  # the server, as the image's uid, writes here
    name = f"skipserve-image-check-{os.getpid()}"
    container = run(["buildah", "from", "--pull=never", "--name", name,
                     image], check=True).stdout.strip().splitlines()[-1]
    server = None
    stream = None
    try:
        def in_image(*args, user=None):
            """A command from the image: no --user means the image's USER."""
            cmd = ["buildah", "run", "--isolation=chroot"]
            if user is not None:
                cmd += ["--user", user]
            return cmd + ["-v", f"{work}:/check", container, "--", *args]

        # Does `buildah run` apply the image's USER on its own?
        who = run(in_image("id", "-u"))
        c.check(f"`buildah run` runs as the image's USER (id -u: "
                f"{who.stdout.strip()})", who.returncode == 0 and
                who.stdout.strip() == str(declared_uid), who.stderr.strip())

        # 2. Lean runtime stage.
        pkgs = run(in_image("dpkg-query", "-W", "-f", "${Package}\\n"))
        installed = pkgs.stdout.split()
        heavy = [p for p in installed if LEAN_FORBIDDEN.match(p.split(":")[0])]
        c.check(f"runtime stage is lean: {len(installed)} packages, no "
                "compiler, -dev package or build tool",
                pkgs.returncode == 0 and installed and not heavy,
                f"{heavy or pkgs.stderr.strip()}")

        # 3. The server, as the image declares it.
        argv_server = entry + cmd + [
            "--host=127.0.0.1", "--port=0", "--metrics_port=0",
            "--port_file=/check/port", f"--drain_timeout={DRAIN_TIMEOUT_S}s"]
        log_path = os.path.join(work, "server.log")
        log = open(log_path, "w")
        print(f"      server: buildah run {container} -- "
              f"{' '.join(argv_server)}", flush=True)
        server = subprocess.Popen(in_image(*argv_server), stdout=log,
                                  stderr=subprocess.STDOUT,
                                  start_new_session=True)
        port_file = os.path.join(work, "port")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not os.path.exists(port_file) and server.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        log_text = open(log_path).read()
        if not c.check("the server serves (port file written)",
                       os.path.exists(port_file),
                       f"exit {server.poll()}; log:\n{log_text}"):
            return 1
        port = int(open(port_file).read().strip())
        m = re.search(r"metrics on port (\d+)", log_text)
        c.check("the server reports its metrics port", m is not None,
                log_text)
        metrics_port = int(m.group(1)) if m else 0
        print(f"      gRPC on 127.0.0.1:{port}, metrics on {metrics_port}",
              flush=True)
        servers = [p for p in children(server.pid)
                   if exe_name(p) == "skipserve-server"]
        c.check("the skipserve-server process is visible here",
                len(servers) == 1, f"{servers}")
        server_pid = servers[0] if servers else None
        if server_pid:
            uid = proc_uid(server_pid)
            c.check(f"the server runs as uid {uid}, the image's USER",
                    uid == declared_uid)
        c.check("its port file belongs to the image's uid",
                os.stat(port_file).st_uid == declared_uid,
                f"owner {os.stat(port_file).st_uid}")

        # 4. gRPC health.
        try:
            status = health_status(port)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            status = f"error: {e}"
        c.check(f"grpc.health.v1 Check: {status}", status == "SERVING")

        # 5. The image's HEALTHCHECK command, at the chosen port.
        hc = [re.sub(r"127\.0\.0\.1:50051", f"127.0.0.1:{port}", a)
              for a in health_test[1:]]
        info = run(in_image(*hc))
        c.check(f"HEALTHCHECK command exits 0 ({' '.join(hc)})",
                info.returncode == 0, info.stderr.strip())
        print("      " + info.stdout.strip().replace("\n", "\n      ")[:1500],
              flush=True)

        # 6. Generate with a skip policy, then with a named policy.
        target = f"--target=127.0.0.1:{port}"
        gen = run(in_image("skipserve", "generate", "Once upon a time",
                           "--max_tokens=8", f"--policy={POLICY}", "--json",
                           target))
        reply = parse_json(gen)
        c.check(f"skipserve generate --policy={POLICY}: plan "
                f"{reply.get('policy')}, {reply.get('finish_reason')}, "
                f"{reply.get('usage', {}).get('completion_tokens')} tokens",
                gen.returncode == 0 and reply.get("policy") == PLAN and
                reply.get("usage", {}).get("completion_tokens") == 8,
                f"exit {gen.returncode}: {gen.stderr.strip()} "
                f"{gen.stdout[:500]}")
        named = run(in_image("skipserve", "generate", "Once upon a time",
                             "--max_tokens=4", f"--policy_name={NAMED_POLICY}",
                             "--json", target))
        reply = parse_json(named)
        c.check(f"skipserve generate --policy_name={NAMED_POLICY} (the "
                f"image's policies file): plan {reply.get('policy')}",
                named.returncode == 0 and reply.get("policy") == PLAN and
                reply.get("policy_name") == NAMED_POLICY,
                f"exit {named.returncode}: {named.stderr.strip()} "
                f"{named.stdout[:500]}")

        # 7. /metrics.
        try:
            code, text = scrape(metrics_port)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            code, text = f"error: {e}", ""
        c.check(f"/metrics answers 200 ({len(text)} bytes)", code == 200)
        for policy in (PLAN, NAMED_POLICY):
            served = metric_sum(text, "skipserve_requests_total",
                                policy=policy, rpc="Generate", code="OK")
            c.check(f"skipserve_requests_total{{policy=\"{policy}\","
                    f"rpc=\"Generate\",code=\"OK\"}} = {served}",
                    served == 1,
                    "\n".join(l for l in text.splitlines()
                              if "skipserve_requests_total" in l)[:2000])

        # 8. Drain: SIGTERM while a stream is in flight.
        stream_out = os.path.join(work, "stream.out")
        with open(stream_out, "w") as out:
            stream = subprocess.Popen(
                in_image("skipserve", "generate", "Once upon a time",
                         "--max_tokens=512", f"--policy={POLICY}",
                         "--stream", target),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while os.path.getsize(stream_out) == 0 and stream.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        in_flight = stream.poll() is None
        signal_target = server_pid or server.pid
        os.kill(signal_target, signal.SIGTERM)
        print(f"      SIGTERM to {signal_target} "
              f"({'a stream in flight' if in_flight else 'the stream had already finished'})",
              flush=True)
        try:
            stream_rc = stream.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stream_rc = None
        streamed = open(stream_out, errors="replace").read()
        c.check("the streamed generation in flight at SIGTERM runs to its "
                "end (exit 0, finish=length, 512 tokens)",
                stream_rc == 0 and "finish=length" in streamed and
                re.search(r"tokens=\d+\+512\b", streamed) is not None,
                f"exit {stream_rc}: {streamed[-1000:]}")
        stream = None
        try:
            rc = server.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = None
        log_text = open(log_path).read()
        c.check(f"the server drains on SIGTERM and exits 0 (buildah run "
                f"exit {rc})", rc == 0 and "drained; exiting" in log_text,
                log_text[-3000:])
        server = None
        print("      server log:\n      " +
              log_text.strip().replace("\n", "\n      ")[-2500:], flush=True)
    finally:
        for p in (stream, server):
            if p is not None and p.poll() is None:
                for pid in children(p.pid) + [p.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait()
        run(["buildah", "rm", container])
        subprocess.run(["rm", "-rf", work])
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
