#!/usr/bin/python3
"""End-to-end test of the observability deliverables against real processes.

    /usr/bin/python3 tests/observability/e2e_test.py --source-dir SRC \
        --server build/server/skipserve-server --client build/client/skipserve \
        --prometheus /usr/bin/prometheus --promtool /usr/bin/promtool

1. Starts skipserve-server on 127.0.0.1 (--port=0, --metrics_port=0,
   --policies_file deploy/policies.json, --model_name) and checks its
   /metrics with `promtool check metrics`.
2. Starts the real `prometheus` on a free loopback port with a temporary
   TSDB and a config derived from deploy/prometheus/prometheus.yml: the
   shipped job "skipserve" pointed at the server, scrape and evaluation
   every 1s, the shipped recording and alert rules.
3. Runs `skipserve loadgen` with a two-policy mix (none, attn:last=33% ->
   "attn:5-7") for LOAD_SECONDS, plus a few requests naming an unknown
   policy (NOT_FOUND), so error series exist. Checks the server's metrics
   against the load generator's report (requests per policy, token counts,
   sublayers skipped, ITL observations) and `promtool check metrics` again.
4. Waits until Prometheus has scraped the final counters and evaluated the
   rules after that, then evaluates through /api/v1/query every PromQL
   expression of the dashboard (template variables substituted), of the
   recording rules and of the alert rules. An expression fails when the
   query errors, when it returns no series (unless listed in MAY_BE_EMPTY
   with the reason), when its result has a `policy` label but misses a
   policy that had traffic, or when a value is NaN/Inf. Alert expressions
   are also evaluated with their comparisons turned into `bool`
   comparisons: the same inputs and vector matching, but every series
   kept, so they must return series (per policy where they are per-policy).
   Also: every rule's health is "ok", the target is up, and the
   dashboard's query variables (label_values + regex, as Grafana runs them)
   offer the model and exactly the policies that had traffic.

Cleans up its processes (SIGTERM, then SIGKILL) and its temporary directory
in all cases. Prints `N passed, M failed`; exits 1 on failure, 77 (ctest:
skipped) when prometheus or promtool is missing.
"""

import argparse
import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402

MODEL_NAME = "obs-e2e"
MIX = "none=50,attn:last=33%=50"
LOAD_SECONDS = 25
CONCURRENCY = 4
MAX_TOKENS = 16
BAD_POLICY_NAME = "nope"
BAD_REQUESTS = 3
RATE_INTERVAL = "1m"  # for $__rate_interval / $__interval / $__range

# Expressions that may legitimately return no series after a short, healthy
# run. Keyed by Expr.key. Each alert expression here is also evaluated with
# bool comparisons, which must return series (see main()).
MAY_BE_EMPTY = {
    "alert:SkipserveTargetDown": "up == 0: the target is up",
    "alert:SkipserveHighErrorRate":
        "no server-side errors (the only errors are NOT_FOUND, a client code)",
    "alert:SkipservePolicyHighErrorRate":
        "no server-side errors for any policy",
    "alert:SkipserveHighFailedRequestRate":
        f"{BAD_REQUESTS} NOT_FOUND among hundreds of requests is far below 25%",
    "alert:SkipserveTTFTObjectiveBreached":
        "p99 TTFT stays under the 2s objective on an idle-ish machine",
    "alert:SkipserveKVCacheNearlyFull": "the KV cache is nearly empty",
    "alert:SkipserveQueueGrowing": "nothing waits for long at concurrency 4",
    "alert:SkipserveQueueBacklog": "nothing waits for long at concurrency 4",
    "dashboard:Experiment assignments per arm [A]":
        "this run creates no experiment (tests/integration/experiments_test.cc "
        "checks the counter)",
}

START_TIMEOUT_S = 90
SYNC_TIMEOUT_S = 60


def _set_pdeathsig():
    """Children die with this process, even if ctest SIGKILLs it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {detail}" if detail else ""),
                  flush=True)
        return ok


class Fatal(Exception):
    pass


TMP_PREFIX = "skipserve-obs-e2e-"


def remove_stale_tmpdirs():
    """Removes the temporary directories of earlier runs that were killed
    (SIGKILL leaves no chance to clean up): TMP_PREFIX<pid>-* of a pid that
    no longer runs."""
    root = tempfile.gettempdir()
    for name in os.listdir(root):
        m = re.fullmatch(re.escape(TMP_PREFIX) + r"(\d+)-\w+", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Processes:
    def __init__(self):
        self.procs = []  # (name, Popen, log path)

    def start(self, name, cmd, log_path):
        log = open(log_path, "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL,
                             preexec_fn=_set_pdeathsig)
        log.close()
        self.procs.append((name, p, log_path))
        return p

    def stop_all(self):
        for name, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 20
        for name, p, _ in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                print(f"{name} ignored SIGTERM; killing", flush=True)
                p.kill()
                p.wait()

    def tails(self, lines=30):
        for name, _, path in self.procs:
            text = read(path).splitlines()
            print(f"--- last {lines} lines of {name} ({path}) ---")
            print("\n".join(text[-lines:]))


def wait_for(what, fn, timeout, interval=0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - keep polling, report last
            last = e
        time.sleep(interval)
    raise Fatal(f"timed out after {timeout}s waiting for {what}"
                + (f" (last error: {last})" if last else ""))


class Prom:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr):
        """Returns (ok, data_or_error)."""
        url = (self.base + "/api/v1/query?" +
               urllib.parse.urlencode({"query": expr}))
        try:
            body = http_get(url)
        except urllib.error.HTTPError as e:
            body = e.read().decode()
        except Exception as e:  # noqa: BLE001
            return False, str(e)
        doc = json.loads(body)
        if doc.get("status") != "success":
            return False, f"{doc.get('errorType')}: {doc.get('error')}"
        return True, doc["data"]

    def vector(self, expr):
        ok, data = self.query(expr)
        if not ok:
            raise Fatal(f"query {expr!r} failed: {data}")
        return data["result"]


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} of a text exposition."""
    out = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            continue
        labels = frozenset(label_re.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric_sum(samples, name, **match):
    total = 0.0
    for (n, labels), value in samples.items():
        if n != name:
            continue
        d = dict(labels)
        if all(d.get(k) == v for k, v in match.items()):
            total += value
    return total


def promtool_check_metrics(c, promtool, text, when):
    p = subprocess.run([promtool, "check", "metrics"], input=text,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    c.check(p.returncode == 0, f"promtool check metrics ({when})", p.stdout)


def check_server_metrics(c, samples, documented, report, traffic):
    """The server's /metrics against the docs and the load generator."""
    names = {n for n, _ in samples}
    # Series that exist only once an operator has created an experiment,
    # which this run does not (experiments_test.cc covers them).
    needs_experiment = {"skipserve_experiment_assignments_total"}
    for name, kind in sorted(documented.items()):
        if name in needs_experiment:
            continue
        present = (name in names if kind != "histogram"
                   else f"{name}_bucket" in names)
        c.check(present, f"/metrics exposes {name}")
    models = {dict(l).get("model") for n, l in samples
              if n.startswith("skipserve_") and "model" in dict(l)}
    c.check(models == {MODEL_NAME}, "model label is --model_name",
            str(models))
    policies = {dict(l).get("policy") for n, l in samples
                if n == "skipserve_requests_total"}
    c.check(policies == set(traffic) | {"unresolved"},
            "policy labels: the traffic policies and 'unresolved'",
            str(policies))
    bad = metric_sum(samples, "skipserve_requests_total",
                     policy="unresolved", code="NOT_FOUND")
    c.check(bad == BAD_REQUESTS,
            f"{BAD_REQUESTS} NOT_FOUND requests counted under 'unresolved'",
            str(bad))
    for entry in report["policies"]:
        label = entry["served"][0]
        ok = metric_sum(samples, "skipserve_requests_total", policy=label,
                        code="OK")
        c.check(ok == entry["ok"],
                f"{label}: OK requests match the load generator",
                f"server {ok}, loadgen {entry['ok']}")
        gen = metric_sum(samples, "skipserve_generated_tokens_total",
                         policy=label)
        c.check(gen == entry["output_tokens"],
                f"{label}: generated tokens match the load generator",
                f"server {gen}, loadgen {entry['output_tokens']}")
        prompt = metric_sum(samples, "skipserve_prompt_tokens_total",
                            policy=label)
        c.check(prompt == entry["prompt_tokens"],
                f"{label}: prompt tokens match the load generator",
                f"server {prompt}, loadgen {entry['prompt_tokens']}")
        ttft = metric_sum(samples, "skipserve_time_to_first_token_seconds_count",
                          policy=label)
        c.check(ttft == entry["ok"], f"{label}: one TTFT per request",
                f"{ttft} vs {entry['ok']}")
        itl = metric_sum(samples, "skipserve_inter_token_latency_seconds_count",
                         policy=label)
        c.check(itl == gen - entry["ok"],
                f"{label}: one inter-token gap per token after the first",
                f"{itl} vs {gen - entry['ok']}")
        # On the 8-layer model attn:5-7 skips 3 attention sublayers.
        expect_attn = 3 if label == "attn:5-7" else 0
        attn = metric_sum(samples, "skipserve_sublayers_skipped_total",
                          policy=label, kind="attention")
        ffn = metric_sum(samples, "skipserve_sublayers_skipped_total",
                         policy=label, kind="ffn")
        c.check(attn == expect_attn * (gen + prompt) and ffn == 0,
                f"{label}: sublayers skipped = tokens x skipped sublayers",
                f"attention {attn}, ffn {ffn}, tokens {gen + prompt}")


def evaluate(c, prom, e, expr, traffic, may_be_empty, label=None):
    label = label or e.key
    ok, data = prom.query(expr)
    if not c.check(ok, f"{label}: evaluates", f"{data}\n    expr: {expr}"):
        return
    result = data["result"]
    if data["resultType"] != "vector":
        c.check(False, f"{label}: returns an instant vector",
                data["resultType"])
        return
    if not result:
        if may_be_empty:
            print(f"ok   {label}: empty, allowed ({may_be_empty})")
            return
        c.check(False, f"{label}: returns series", f"expr: {expr}")
        return
    c.check(True, f"{label}: returns {len(result)} series")
    with_policy = [r for r in result if "policy" in r["metric"]]
    if with_policy:
        seen = {r["metric"]["policy"] for r in with_policy}
        missing = sorted(set(traffic) - seen)
        c.check(not missing, f"{label}: a series per traffic policy",
                f"missing {missing}, got {sorted(seen)}")
    bad = [(r["metric"], r["value"][1]) for r in result
           if not math.isfinite(float(r["value"][1]))]
    c.check(not bad, f"{label}: finite values", str(bad))


def dashboard_vars(src):
    d = obslib.load_dashboard(obslib.source_path(src, obslib.DASHBOARD_REL))
    return [v for v in d["templating"]["list"] if v.get("type") == "query"]


def check_variables(c, prom, variables, traffic):
    """label_values(selector, label) -> /api/v1/label/<label>/values with
    match[]=selector, then the variable's regex, as Grafana does."""
    expect = {"model": [MODEL_NAME], "policy": traffic, "policy_a": traffic,
              "policy_b": traffic}
    for v in variables:
        query = v["query"]["query"] if isinstance(v["query"], dict) \
            else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        if not c.check(m is not None, f"variable {v['name']}: label_values",
                       query):
            continue
        selector, _ = obslib.substitute(m.group(1), {"model": MODEL_NAME})
        url = (f"{prom.base}/api/v1/label/{m.group(2)}/values?" +
               urllib.parse.urlencode({"match[]": selector}))
        values = json.loads(http_get(url))["data"]
        regex = v.get("regex") or ""
        if regex:
            rm = re.fullmatch(r"/(.*)/", regex)
            values = [x for x in values if re.search(rm.group(1), x)]
        c.check(sorted(values) == sorted(expect.get(v["name"], values)),
                f"variable {v['name']}: offers {sorted(values)}",
                f"expected {sorted(expect.get(v['name'], []))}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--prometheus", default="")
    ap.add_argument("--promtool", default="")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (debugging)")
    args = ap.parse_args()
    for tool in (args.prometheus, args.promtool):
        if not tool or not os.access(tool, os.X_OK):
            print(f"SKIP: prometheus/promtool not found ({tool!r})")
            return 77
    src = os.path.abspath(args.source_dir)

    # ctest's timeout and Ctrl-C end us through the finally below.
    def on_signal(signum, _frame):
        raise Fatal(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    c = Checks()
    procs = Processes()
    remove_stale_tmpdirs()
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-")
    started = time.time()
    try:
        run_test(c, procs, tmp, src, args)
    except Fatal as e:
        c.check(False, "test ran to the end", str(e))
    finally:
        procs.stop_all()
        if c.failed:
            procs.tails()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{c.passed} passed, {c.failed} failed "
          f"({time.time() - started:.0f}s)")
    return 1 if c.failed else 0


def run_test(c, procs, tmp, src, args):
    documented = obslib.documented_metrics(
        obslib.source_path(src, obslib.METRICS_DOC_REL))

    # 1. The server.
    port_file = os.path.join(tmp, "port")
    server_log = os.path.join(tmp, "server.log")
    server = procs.start("skipserve-server", [
        args.server, "--host=127.0.0.1", "--port=0",
        f"--port_file={port_file}", "--metrics_port=0",
        f"--model_name={MODEL_NAME}",
        "--policies_file=" + os.path.join(src, "deploy/policies.json"),
    ], server_log)

    def serving():
        if server.poll() is not None:
            raise Fatal(f"skipserve-server exited with {server.returncode}")
        m = re.search(r"metrics on port (\d+)", read(server_log))
        return m and os.path.exists(port_file) and int(m.group(1))
    metrics_port = wait_for("the server to serve", serving, START_TIMEOUT_S)
    grpc_port = int(read(port_file).strip())
    target = f"127.0.0.1:{grpc_port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    print(f"server: gRPC {target}, metrics {metrics_url}", flush=True)
    promtool_check_metrics(c, args.promtool, http_get(metrics_url),
                           "idle server")

    # 2. Prometheus, with the shipped job and rules.
    with open(obslib.source_path(src, obslib.PROMETHEUS_YML_REL)) as f:
        shipped = yaml.safe_load(f)
    job = next(j for j in shipped["scrape_configs"]
               if j["job_name"] == "skipserve")
    job = dict(job, scrape_interval="1s", scrape_timeout="1s",
               static_configs=[{"targets": [f"127.0.0.1:{metrics_port}"]}])
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [obslib.source_path(src, r)
                       for r in obslib.RULE_FILES_REL],
        "scrape_configs": [job],
    }
    config_path = os.path.join(tmp, "prometheus.yml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    prom_port = free_port()
    prometheus = procs.start("prometheus", [
        args.prometheus, f"--config.file={config_path}",
        f"--storage.tsdb.path={os.path.join(tmp, 'tsdb')}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        "--storage.tsdb.retention.time=1h", "--log.level=warn",
    ], os.path.join(tmp, "prometheus.log"))
    prom = Prom(prom_port)

    def ready():
        if prometheus.poll() is not None:
            raise Fatal(f"prometheus exited with {prometheus.returncode}")
        return "Ready" in http_get(prom.base + "/-/ready", timeout=2)
    wait_for("prometheus to be ready", ready, START_TIMEOUT_S)
    wait_for("the first scrape",
             lambda: prom.vector('up{job="skipserve"} == 1'), 30)
    print(f"prometheus on 127.0.0.1:{prom_port}", flush=True)

    # 3. Load: two policies, plus requests naming an unknown policy.
    report_path = os.path.join(tmp, "loadgen.json")
    load_started = time.time()
    loadgen_log = os.path.join(tmp, "loadgen.log")
    loadgen = procs.start("loadgen", [
        args.client, "loadgen", f"--target={target}",
        f"--concurrency={CONCURRENCY}", f"--duration={LOAD_SECONDS}s",
        f"--max_tokens={MAX_TOKENS}", f"--mix={MIX}", "--seed=1",
        f"--out={report_path}",
    ], loadgen_log)
    # During the load, a few seconds apart: a counter's first sample shows
    # no increase to rate(), so the error series must see several scrapes.
    for i in range(BAD_REQUESTS):
        time.sleep(LOAD_SECONDS / (BAD_REQUESTS + 1))
        bad = subprocess.run([
            args.client, "generate", "hello", f"--target={target}",
            f"--policy-name={BAD_POLICY_NAME}", "--max_tokens=2",
        ], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=60, preexec_fn=_set_pdeathsig)
        c.check(bad.returncode != 0 and "no policy named" in bad.stdout,
                f"request {i + 1} naming an unknown policy fails", bad.stdout)
    try:
        loadgen.wait(timeout=LOAD_SECONDS + 60)
    except subprocess.TimeoutExpired:
        raise Fatal("loadgen did not finish")
    print(read(loadgen_log)[-1200:], flush=True)
    if not c.check(loadgen.returncode == 0, "loadgen ran",
                   f"exit {loadgen.returncode}"):
        raise Fatal("no load")
    print(f"load took {time.time() - load_started:.1f}s", flush=True)

    with open(report_path) as f:
        report = json.load(f)
    traffic = sorted({p["served"][0] for p in report["policies"]})
    c.check(len(traffic) == 2 and all(p["ok"] > 0
                                      for p in report["policies"]),
            "both policies had traffic", str(traffic))
    c.check(all(re.fullmatch(r"[\w:.-]+", t) and "." not in t
                for t in traffic),
            "policy labels need no regex escaping", str(traffic))

    text = http_get(metrics_url)
    promtool_check_metrics(c, args.promtool, text, "after load")
    samples = parse_metrics(text)
    check_server_metrics(c, samples, documented, report, traffic)

    # 4. Prometheus has the final counters and has evaluated the rules since.
    final = metric_sum(samples, "skipserve_requests_total")

    def scraped():
        v = prom.vector(f'sum(skipserve_requests_total{{model="{MODEL_NAME}"}})')
        return v and float(v[0]["value"][1]) == final
    wait_for(f"prometheus to scrape all {final:.0f} requests", scraped,
             SYNC_TIMEOUT_S)
    synced = time.time()

    def evaluated():
        # One rule from the first and one from the last group.
        v = prom.vector(
            'min(timestamp({__name__=~"policy_le:skipserve_request_duration_'
            'seconds_bucket:rate5m|skipserve:time_to_first_token_seconds:'
            'p99_objective"}))')
        return v and float(v[0]["value"][1]) > synced + 1
    wait_for("the rules to be evaluated after the last scrape", evaluated,
             SYNC_TIMEOUT_S)

    ok, data = prom.query('up{job="skipserve"}')
    c.check(ok and [r["value"][1] for r in data["result"]] == ["1"],
            "target up", str(data))
    rules = json.loads(http_get(prom.base + "/api/v1/rules"))["data"]
    loaded = [r for g in rules["groups"] for r in g["rules"]]
    shipped_exprs = obslib.rule_exprs(
        [obslib.source_path(src, r) for r in obslib.RULE_FILES_REL])
    c.check(len(loaded) == len(shipped_exprs),
            "prometheus loaded every rule",
            f"{len(loaded)} of {len(shipped_exprs)}")
    for r in loaded:
        c.check(r.get("health") == "ok" and not r.get("lastError"),
                f"rule {r['name']}: health ok",
                f"{r.get('health')}: {r.get('lastError')}")

    # The dashboard's query variables, as Grafana runs label_values().
    check_variables(c, prom, dashboard_vars(src), traffic)

    # Every expression of the deliverables.
    values = {
        "datasource": "", "model": MODEL_NAME,
        "policy": "(" + "|".join(traffic) + ")",
        "policy_a": traffic[0], "policy_b": traffic[1],
        "__rate_interval": RATE_INTERVAL, "__interval": RATE_INTERVAL,
        "__range": RATE_INTERVAL,
    }
    dashboard = obslib.load_dashboard(
        obslib.source_path(src, obslib.DASHBOARD_REL))
    exprs = obslib.dashboard_exprs(dashboard) + shipped_exprs
    keys = {e.key for e in exprs}
    stale = sorted(set(MAY_BE_EMPTY) - keys)
    c.check(not stale, "MAY_BE_EMPTY names existing expressions", str(stale))
    print(f"evaluating {len(exprs)} expressions "
          f"({len(obslib.dashboard_exprs(dashboard))} from the dashboard)",
          flush=True)
    for e in exprs:
        expr, unknown = obslib.substitute(e.expr, values)
        if not c.check(not unknown, f"{e.key}: known template variables",
                       str(unknown)):
            continue
        evaluate(c, prom, e, expr, traffic, MAY_BE_EMPTY.get(e.key))
        if e.kind == "alert":
            evaluate(c, prom, e, obslib.with_bool_comparisons(expr), traffic,
                     None, label=f"{e.key} (bool comparisons)")
    firing = prom.vector('ALERTS{alertstate="firing"}')
    print("firing alerts: " +
          (", ".join(a["metric"]["alertname"] for a in firing) or "none"))


if __name__ == "__main__":
    sys.exit(main())
