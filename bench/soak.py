"""The soak benchmark's driver (bench/run_soak.sh runs it): a long closed loop
against one skipserve-server, with cancels, deadlines, mixed policies and
admin changes, and the server's memory and KV cache watched from start to
end.

    /usr/bin/python3 bench/soak.py --server BIN --out PREFIX [--minutes 30]
        [--concurrency 64] [--cancel 0.05] [--deadline 0.05]

Writes PREFIX.json and PREFIX.md. Exits 1 when the server crashed, did not
drain on SIGTERM, or the run saw a status outside what the soak expects
(OK everywhere; CANCELLED for cancels; DEADLINE_EXCEEDED for deadlines;
RESOURCE_EXHAUSTED is reported but tolerated, the queue is bounded).

Each of `concurrency` workers sends one request at a time (Generate or
GenerateStream, half each), 8-64 new tokens, prompts of 4-64 words, greedy
or sampled. Of the requests, `cancel` are cancelled by the client after
0-300 ms (a stream after 0-8 chunks) and `deadline` carry a deadline of
20-400 ms (most expire while queued or decoding). Policies: none (the
server's default), a spec, two named policies (one of them rewritten by the
admin thread every few seconds), an A/B experiment with routing keys (its
weights changed by the admin thread), inline index lists and random ad-hoc
specs (more than the label budget of 32). The admin thread also puts and
deletes a temporary policy and lists the registry.

Needs Debian's python3-grpcio, protobuf-compiler and protobuf-compiler-grpc.
"""
import argparse
import collections
import datetime
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc

import serving_summary  # bench/, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the quick brown fox jumps over a lazy dog while seven bright "
         "stars watch from far above quiet hills and rivers that run to the "
         "sea once upon a time there was a small village").split()
LIVE_SPECS = ["attn:last=25%", "ffn:last=25%", "layer:6-7", "none",
              "attn:4-7;ffn:7"]


def generate_stubs(out_dir):
    """Python stubs from the protos, with Debian's protoc and gRPC plugin
    (grpc_tools' bundled protoc 3.5 predates proto3 `optional`)."""
    proto_root = os.path.join(ROOT, "proto")
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(
        ["protoc", "-I" + proto_root,
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
         "--python_out=" + out_dir, "--grpc_python_out=" + out_dir] +
        [os.path.join(proto_root, "skipserve", "v1", name)
         for name in ("inference.proto", "policies.proto")], check=True)
    sys.path.insert(0, out_dir)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine():
    """serving_summary's description of the machine, plus the OS and
    python3-grpcio's version."""
    info = serving_summary.machine()
    info["python_grpc"] = grpc.__version__
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return info


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def scrape(metrics_port):
    """The server's /metrics as {name{labels}: value}."""
    url = "http://127.0.0.1:%d/metrics" % metrics_port
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


def gauge(metrics, name):
    return sum(v for k, v in metrics.items()
               if k == name or k.startswith(name + "{"))


def requests_by_code(metrics):
    """skipserve_requests_total summed by rpc and code."""
    out = collections.Counter()
    for key, value in metrics.items():
        if not key.startswith("skipserve_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', key))
        out["%s %s" % (labels.get("rpc"), labels.get("code"))] += int(value)
    return dict(sorted(out.items()))


class Soak:

    def __init__(self, args, pb, pb_grpc, admin_pb, admin_grpc, channel,
                 token):
        self.args = args
        self.pb, self.pb_grpc = pb, pb_grpc
        self.admin_pb, self.admin_grpc = admin_pb, admin_grpc
        self.stub = pb_grpc.InferenceStub(channel)
        self.admin = admin_grpc.PoliciesStub(channel)
        self.auth = (("authorization", "Bearer " + token),)
        self.lock = threading.Lock()
        # (kind, code) -> count; kind: normal, cancel, deadline.
        self.results = collections.Counter()
        self.by_policy = collections.Counter()
        self.admin_results = collections.Counter()
        self.unexpected = []  # a few examples of unexpected statuses
        self.tokens = 0
        self.stop = threading.Event()

    def count(self, kind, code, policy_kind=None, tokens=0, detail=""):
        with self.lock:
            self.results[(kind, code)] += 1
            if policy_kind:
                self.by_policy[policy_kind] += 1
            self.tokens += tokens
            expected = {"normal": ("OK", "RESOURCE_EXHAUSTED"),
                        "cancel": ("OK", "CANCELLED", "RESOURCE_EXHAUSTED"),
                        "deadline": ("OK", "DEADLINE_EXCEEDED",
                                     "RESOURCE_EXHAUSTED")}[kind]
            if code not in expected and len(self.unexpected) < 20:
                self.unexpected.append("%s %s %s: %s" % (
                    kind, policy_kind, code, detail[:200]))

    def request(self, rng):
        pb = self.pb
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 64))]
        req = pb.GenerateRequest(prompt=" ".join(words))
        req.sampling.max_tokens = rng.randint(8, 64)
        if rng.random() < 0.5:
            req.sampling.temperature = 0.8
            req.sampling.top_p = 0.95
            req.sampling.seed = rng.getrandbits(32)
        r = rng.random()
        if r < 0.20:
            kind = "default"
        elif r < 0.35:
            kind = "spec"
            req.policy.spec = "attn:last=33%"
        elif r < 0.50:
            kind = "named"
            req.policy.name = "paper-attn-33"
        elif r < 0.65:
            kind = "named-live"
            req.policy.name = "soak-live"
        elif r < 0.85:
            kind = "experiment"
            req.policy.experiment = "soak-ab"
            req.policy.routing_key = "user-%d" % rng.randint(0, 999)
        elif r < 0.95:
            kind = "inline"
            layers = sorted(rng.sample(range(8), rng.randint(1, 3)))
            req.policy.inline.attention_layers.extend(layers)
        else:
            kind = "ad-hoc"
            first = rng.randint(0, 7)
            req.policy.spec = "ffn:%d-%d" % (first, rng.randint(first, 7))
        return req, kind

    def worker(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            req, policy_kind = self.request(rng)
            r = rng.random()
            stream = rng.random() < 0.5
            if r < self.args.cancel:
                self.cancelled(req, policy_kind, stream, rng)
            elif r < self.args.cancel + self.args.deadline:
                self.with_deadline(req, policy_kind, stream, rng)
            else:
                self.normal(req, policy_kind, stream)

    def normal(self, req, policy_kind, stream):
        try:
            if stream:
                n = sum(len(c.tokens)
                        for c in self.stub.GenerateStream(req, timeout=300))
            else:
                n = len(self.stub.Generate(req, timeout=300).tokens)
            self.count("normal", "OK", policy_kind, n)
        except grpc.RpcError as e:
            self.count("normal", e.code().name, policy_kind,
                       detail=e.details() or "")

    def cancelled(self, req, policy_kind, stream, rng):
        try:
            if stream:
                call = self.stub.GenerateStream(req, timeout=300)
                chunks = rng.randint(0, 8)
                n = 0
                for i, chunk in enumerate(call):
                    n += len(chunk.tokens)
                    if i + 1 >= chunks:
                        break
                call.cancel()
                # Drain what the cancel leaves (raises CANCELLED).
                for chunk in call:
                    n += len(chunk.tokens)
                self.count("cancel", "OK", policy_kind, n)
            else:
                future = self.stub.Generate.future(req, timeout=300)
                time.sleep(rng.uniform(0, 0.3))
                future.cancel()
                n = len(future.result().tokens)
                self.count("cancel", "OK", policy_kind, n)
        except grpc.FutureCancelledError:
            self.count("cancel", "CANCELLED", policy_kind)
        except grpc.RpcError as e:
            self.count("cancel", e.code().name, policy_kind,
                       detail=e.details() or "")

    def with_deadline(self, req, policy_kind, stream, rng):
        timeout = rng.uniform(0.02, 0.4)
        try:
            if stream:
                n = sum(len(c.tokens)
                        for c in self.stub.GenerateStream(req, timeout=timeout))
            else:
                n = len(self.stub.Generate(req, timeout=timeout).tokens)
            self.count("deadline", "OK", policy_kind, n)
        except grpc.RpcError as e:
            self.count("deadline", e.code().name, policy_kind,
                       detail=e.details() or "")

    def admin_call(self, what, fn, req):
        try:
            fn(req, metadata=self.auth, timeout=60)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
            if len(self.unexpected) < 20:
                self.unexpected.append("admin %s %s: %s" % (
                    what, code, (e.details() or "")[:200]))
        with self.lock:
            self.admin_results[(what, code)] += 1

    def put_policy(self, name, spec):
        a = self.admin_pb
        self.admin_call("PutPolicy", self.admin.PutPolicy, a.PutPolicyRequest(
            policy=a.StoredPolicy(name=name, spec=spec,
                                  description="soak")))

    def put_experiment(self, weights):
        a = self.admin_pb
        arms = [a.ExperimentArm(name="control", policy="none",
                                weight=weights[0]),
                a.ExperimentArm(name="paper", policy="paper-attn-33",
                                weight=weights[1]),
                a.ExperimentArm(name="live", policy="soak-live",
                                weight=weights[2])]
        self.admin_call("PutExperiment", self.admin.PutExperiment,
                        a.PutExperimentRequest(experiment=a.Experiment(
                            name="soak-ab", arms=arms, description="soak")))

    def setup_registry(self):
        self.put_policy("soak-live", LIVE_SPECS[0])
        self.put_experiment([50, 50, 0])

    def admin_loop(self):
        a = self.admin_pb
        rng = random.Random(7)
        i = 0
        while not self.stop.wait(self.args.admin_interval):
            i += 1
            self.put_policy("soak-live", LIVE_SPECS[i % len(LIVE_SPECS)])
            self.put_experiment([rng.randint(0, 100), rng.randint(1, 100),
                                 rng.randint(0, 100)])
            if i % 6 == 0:
                name = "soak-temp-%d" % i
                self.put_policy(name, "attn:last=%d%%" % rng.randint(1, 99))
                self.admin_call("DeletePolicy", self.admin.DeletePolicy,
                                a.DeletePolicyRequest(name=name))
                self.admin_call("ListPolicies", self.admin.ListPolicies,
                                a.ListPoliciesRequest())
                self.admin_call("ListExperiments", self.admin.ListExperiments,
                                a.ListExperimentsRequest())


def snapshot(pid, metrics_port, t0):
    m = scrape(metrics_port)
    return {
        "t_s": round(time.monotonic() - t0, 1),
        "rss_kib": rss_kib(pid),
        "kv_blocks_used": gauge(m, "skipserve_kv_cache_blocks_used"),
        "kv_blocks_capacity": gauge(m, "skipserve_kv_cache_blocks_capacity"),
        "running": gauge(m, "skipserve_running_sequences"),
        "waiting": gauge(m, "skipserve_waiting_sequences"),
        "loadavg": loadavg(),
    }


def wait_idle(pid, metrics_port, t0, seconds=60):
    """The server's state once nothing runs or waits (or after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        s = snapshot(pid, metrics_port, t0)
        if (s["running"] == 0 and s["waiting"] == 0) or \
                time.monotonic() > deadline:
            return s
        time.sleep(0.5)


def markdown(result):
    m = result["machine"]
    s, e = result["start"], result["end"]
    warm = result["after_warmup"]
    lines = [
        "# Soak", "",
        "`bench/run_soak.sh`: %g min closed loop at concurrency %d against "
        "`skipserve-server` (%s) on loopback; %.0f%% of requests cancelled "
        "by the client, %.0f%% with a short deadline; policies mixed; admin "
        "changes every %g s." % (
            result["minutes"], result["concurrency"], result["model"],
            100 * result["cancel"], 100 * result["deadline"],
            result["admin_interval_s"]),
        "",
        "Machine: %s, %d logical cores, %s, %s, kernel %s. Load average "
        "(1/5/15 min) %s at the start, %s at the end; the load during the "
        "run, sampled every %d s: min %.1f, median %.1f, max %.1f (1-min)." % (
            m.get("cpu", "?"), m["logical_cores"], m["memory"],
            m.get("os", "?"), m["kernel"],
            " / ".join("%.2f" % x for x in s["loadavg"]),
            " / ".join("%.2f" % x for x in e["loadavg"]),
            result["sample_interval_s"], result["load_1min"]["min"],
            result["load_1min"]["median"], result["load_1min"]["max"]),
        "",
    ]
    if result.get("note"):
        lines += [result["note"], ""]
    lines += [
        "## Outcome", "",
        "- %s" % ("**passed**: no crash, only expected statuses, SIGTERM "
                  "drained and the server exited 0" if result["passed"]
                  else "**FAILED**: " + "; ".join(result["failures"])),
        "- requests: %d (%.1f/s), tokens generated: %d (%.0f/s)" % (
            result["requests"], result["requests"] / result["seconds"],
            result["tokens"], result["tokens"] / result["seconds"]),
        "- server exit code after SIGTERM: %s" % result["exit_code"],
        "",
        "## Requests by kind and status (client side)", "",
        "| kind | status | requests |", "|---|---|---|",
    ]
    for key, n in sorted(result["client_results"].items()):
        kind, code = key.split(" ")
        lines.append("| %s | %s | %d |" % (kind, code, n))
    lines += ["", "By policy selector: " + ", ".join(
        "%s %d" % kv for kv in sorted(result["by_policy"].items())), "",
        "## Server's `skipserve_requests_total` by rpc and code", "",
        "| rpc | code | requests |", "|---|---|---|"]
    for key, n in result["server_requests_by_code"].items():
        rpc, code = key.split(" ")
        lines.append("| %s | %s | %d |" % (rpc, code, n))
    lines += ["", "## Admin calls", "", "| call | status | count |",
              "|---|---|---|"]
    for key, n in sorted(result["admin_results"].items()):
        what, code = key.split(" ")
        lines.append("| %s | %s | %d |" % (what, code, n))
    lines += [
        "", "## Memory and KV cache", "",
        "| when | RSS MiB | KV blocks used / capacity | running | waiting |",
        "|---|---|---|---|---|"]
    for label, x in (("start (idle, before load)", s),
                     ("after 1 min of load", warm),
                     ("end of load", result["end_of_load"]),
                     ("end (idle, load stopped)", e)):
        lines.append("| %s | %.1f | %d / %d | %d | %d |" % (
            label, x["rss_kib"] / 1024, x["kv_blocks_used"],
            x["kv_blocks_capacity"], x["running"], x["waiting"]))
    lines += [
        "",
        "RSS over the run (MiB, every %d s): min %.1f, max %.1f; growth "
        "from 1 min to the end of load: %+.1f MiB." % (
            result["sample_interval_s"], result["rss_mib"]["min"],
            result["rss_mib"]["max"],
            (result["end_of_load"]["rss_kib"] - warm["rss_kib"]) / 1024),
    ]
    if result["unexpected"]:
        lines += ["", "## Unexpected statuses (first %d)" %
                  len(result["unexpected"]), ""]
        lines += ["- " + u for u in result["unexpected"]]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", required=True)
    p.add_argument("--out", required=True, help="path prefix of .json/.md")
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--cancel", type=float, default=0.05)
    p.add_argument("--deadline", type=float, default=0.05)
    p.add_argument("--admin_interval", type=float, default=5)
    p.add_argument("--sample_interval", type=int, default=30)
    p.add_argument("--note", default="",
                   help="a sentence for the report (e.g. the machine's load)")
    p.add_argument("server_args", nargs="*",
                   help="more flags for the server (after --)")
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="skipserve-soak-")
    server = None
    try:
        generate_stubs(os.path.join(tmp, "stubs"))
        from skipserve.v1 import inference_pb2, inference_pb2_grpc
        from skipserve.v1 import policies_pb2, policies_pb2_grpc
        token = secrets.token_hex(32)
        token_file = os.path.join(tmp, "admin.token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600),
                  "w") as f:
            f.write(token + "\n")
        port_file = os.path.join(tmp, "port")
        metrics_port = free_port()
        log = open(os.path.join(tmp, "server.log"), "w+b")
        cmd = [args.server, "--host=127.0.0.1", "--port=0",
               "--port_file=" + port_file,
               "--metrics_port=%d" % metrics_port,
               "--admin_token_file=" + token_file,
               "--state_file=" + os.path.join(tmp, "state.json"),
               "--policies_file=" + os.path.join(ROOT, "deploy",
                                                 "policies.json"),
               ] + args.server_args
        server = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=log)
        deadline = time.monotonic() + 120
        while not os.path.exists(port_file) or \
                not open(port_file).read().strip():
            if server.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError("server did not start:\n" +
                                   log.read().decode(errors="replace"))
            time.sleep(0.1)
        port = int(open(port_file).read().strip())
        channel = grpc.insecure_channel(
            "127.0.0.1:%d" % port,
            options=[("grpc.max_receive_message_length", 16 << 20)])
        grpc.channel_ready_future(channel).result(timeout=60)
        info = inference_pb2_grpc.InferenceStub(channel).GetModelInfo(
            inference_pb2.GetModelInfoRequest(), timeout=60)

        soak = Soak(args, inference_pb2, inference_pb2_grpc, policies_pb2,
                    policies_pb2_grpc, channel, token)
        soak.setup_registry()
        t0 = time.monotonic()
        start = snapshot(server.pid, metrics_port, t0)
        threads = [threading.Thread(target=soak.worker, args=(i,),
                                    daemon=True)
                   for i in range(args.concurrency)]
        threads.append(threading.Thread(target=soak.admin_loop, daemon=True))
        for t in threads:
            t.start()
        samples = [start]
        end_at = t0 + 60 * args.minutes
        after_warmup = None
        crashed = False
        while time.monotonic() < end_at:
            time.sleep(min(args.sample_interval,
                           max(0.0, end_at - time.monotonic())))
            if server.poll() is not None:
                crashed = True
                break
            samples.append(snapshot(server.pid, metrics_port, t0))
            if after_warmup is None and samples[-1]["t_s"] >= 60:
                after_warmup = samples[-1]
            print("soak: %5.0f s  requests %d  rss %.1f MiB  kv %d  "
                  "load %.2f" % (samples[-1]["t_s"],
                                 sum(soak.results.values()),
                                 samples[-1]["rss_kib"] / 1024,
                                 samples[-1]["kv_blocks_used"],
                                 samples[-1]["loadavg"][0]), flush=True)
        seconds = time.monotonic() - t0
        end_of_load = samples[-1]
        soak.stop.set()
        for t in threads:
            t.join(timeout=330)
        failures = []
        if crashed:
            failures.append("the server exited with %s during the run" %
                            server.returncode)
            end = end_of_load
            by_code = {}
        else:
            end = wait_idle(server.pid, metrics_port, t0)
            by_code = requests_by_code(scrape(metrics_port))
        after_warmup = after_warmup or end_of_load
        exit_code = server.returncode
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                exit_code = server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                exit_code = server.wait()
                failures.append("the server ignored SIGTERM for 120 s")
        if exit_code != 0:
            failures.append("the server exited with %s" % exit_code)
        if end["kv_blocks_used"] != 0:
            failures.append("%d KV blocks still used once idle" %
                            end["kv_blocks_used"])
        if soak.unexpected:
            failures.append("%d unexpected statuses (listed below)" %
                            len(soak.unexpected))
        log.seek(0)
        log_tail = log.read().decode(errors="replace").splitlines()[-40:]

        rss = [x["rss_kib"] / 1024 for x in samples]
        load1 = sorted(x["loadavg"][0] for x in samples)
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "model": info.model or "embedded default model",
            "model_layers": info.num_layers,
            "minutes": args.minutes, "seconds": round(seconds, 1),
            "concurrency": args.concurrency, "cancel": args.cancel,
            "deadline": args.deadline,
            "admin_interval_s": args.admin_interval,
            "sample_interval_s": args.sample_interval,
            "server_command": [os.path.basename(cmd[0])] + cmd[1:],
            "note": args.note,
            "passed": not failures, "failures": failures,
            "exit_code": exit_code,
            "requests": sum(soak.results.values()), "tokens": soak.tokens,
            "client_results": {"%s %s" % k: v
                               for k, v in sorted(soak.results.items())},
            "by_policy": dict(soak.by_policy),
            "admin_results": {"%s %s" % k: v
                              for k, v in sorted(soak.admin_results.items())},
            "server_requests_by_code": by_code,
            "unexpected": soak.unexpected,
            "start": start, "after_warmup": after_warmup,
            "end_of_load": end_of_load, "end": end,
            "rss_mib": {"min": min(rss), "max": max(rss)},
            "load_1min": {"min": load1[0], "max": load1[-1],
                          "median": load1[len(load1) // 2]},
            "samples": samples,
            "server_log_tail": log_tail,
        }
        # The temporary directory's name is no part of the result.
        result["server_command"] = [a.replace(tmp, "$TMP")
                                    for a in result["server_command"]]
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        with open(args.out + ".md", "w") as f:
            f.write(markdown(result))
        print(markdown(result))
        return 0 if result["passed"] else 1
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
