#!/usr/bin/python3
"""Static checks of the observability deliverables (no server needed).

    /usr/bin/python3 tests/observability/check_configs.py \
        --source-dir SRC --promtool /usr/bin/promtool

Checks:
  * promtool check config deploy/prometheus/prometheus.yml
  * promtool check rules on every rule file
  * promtool test rules deploy/prometheus/tests/alerts_test.yml
  * every .yml/.yaml/.json under deploy/ and docker/ parses
  * prometheus.yml: job "skipserve", both rule files loaded
  * rules: every alert has a severity label, summary and description
    annotations, and a firing case in the unit tests; every skipserve_*
    metric they use is documented in docs/metrics.md; every recorded
    series they use is defined
  * the dashboard: no __inputs, the variables (datasource, model, policy,
    policy_a, policy_b), every panel and target on ${datasource}, unique
    panel ids, sane gridPos, only documented metrics and defined recorded
    series, only known template variables
  * Grafana provisioning: the data source points at http://prometheus:9090,
    the dashboard provider loads /var/lib/grafana/dashboards

Prints one line per check and `N passed, M failed`; exits 1 on any failure,
77 (ctest: skipped) when promtool is missing.
"""

import argparse
import glob
import json
import os
import subprocess
import sys

import yaml

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import obslib  # noqa: E402

GRAFANA_VARS = {"datasource", "model", "policy", "policy_a", "policy_b",
                "__rate_interval", "__interval", "__range"}


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}" + (f": {detail}" if detail else ""))
        return ok


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    return p.returncode, p.stdout


def parse_all(c, src):
    files = []
    for top in ("deploy", "docker"):
        root = os.path.join(src, top)
        if not os.path.isdir(root):
            continue
        for dirpath, _, names in os.walk(root):
            for name in sorted(names):
                if name.endswith((".yml", ".yaml", ".json")):
                    files.append(os.path.join(dirpath, name))
    # docker-compose files may sit at the top level too.
    files += sorted(glob.glob(os.path.join(src, "docker-compose*.y*ml")))
    files += sorted(glob.glob(os.path.join(src, "compose*.y*ml")))
    c.check(len(files) > 0, "found YAML/JSON files under deploy/ and docker/")
    for path in files:
        rel = os.path.relpath(path, src)
        try:
            with open(path) as f:
                if path.endswith(".json"):
                    json.load(f)
                else:
                    list(yaml.safe_load_all(f))
            c.check(True, f"parses: {rel}")
        except Exception as e:  # noqa: BLE001 - report any parse error
            c.check(False, f"parses: {rel}", str(e))


def check_promtool(c, src, promtool):
    prom_yml = obslib.source_path(src, obslib.PROMETHEUS_YML_REL)
    rc, out = run([promtool, "check", "config", prom_yml])
    c.check(rc == 0, "promtool check config prometheus.yml", out)
    rule_files = [obslib.source_path(src, r) for r in obslib.RULE_FILES_REL]
    rc, out = run([promtool, "check", "rules"] + rule_files)
    c.check(rc == 0, "promtool check rules", out)
    rc, out = run([promtool, "test", "rules",
                   obslib.source_path(src, obslib.ALERT_TESTS_REL)])
    c.check(rc == 0, "promtool test rules alerts_test.yml", out)


def check_prometheus_yml(c, src):
    with open(obslib.source_path(src, obslib.PROMETHEUS_YML_REL)) as f:
        cfg = yaml.safe_load(f)
    jobs = {j["job_name"]: j for j in cfg.get("scrape_configs", [])}
    c.check("skipserve" in jobs, 'prometheus.yml has job "skipserve"')
    loaded = set(cfg.get("rule_files", []))
    for rel in obslib.RULE_FILES_REL:
        name = os.path.relpath(rel, "deploy/prometheus")
        c.check(name in loaded, f"prometheus.yml loads {name}", str(loaded))


def check_rules(c, src, documented):
    rule_paths = [obslib.source_path(src, r) for r in obslib.RULE_FILES_REL]
    exprs = obslib.rule_exprs(rule_paths)
    records = {e.name for e in exprs if e.kind == "record"}
    for e in exprs:
        undocumented = sorted(
            n for n in obslib.raw_metric_names(e.expr)
            if obslib.base_metric(n, documented) not in documented)
        c.check(not undocumented, f"{e.key}: uses documented metrics only",
                str(undocumented))
        undefined = sorted(obslib.recorded_names(e.expr) - records)
        c.check(not undefined, f"{e.key}: uses defined recorded series only",
                str(undefined))

    # Alerts: labels, annotations, and a firing unit test each.
    with open(obslib.source_path(src, obslib.ALERT_TESTS_REL)) as f:
        tests = yaml.safe_load(f)
    fired = set()
    for test in tests.get("tests", []):
        for t in test.get("alert_rule_test", []):
            if t.get("exp_alerts"):
                fired.add(t["alertname"])
    for path in rule_paths:
        for group in obslib.load_rule_groups(path):
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                c.check(rule.get("labels", {}).get("severity") in
                        ("critical", "warning", "info"),
                        f"alert {name}: severity label")
                ann = rule.get("annotations", {})
                c.check(bool(ann.get("summary")) and
                        bool(ann.get("description")),
                        f"alert {name}: summary and description")
                c.check(name in fired,
                        f"alert {name}: a unit test where it fires")


def check_dashboard(c, src, documented, records):
    path = obslib.source_path(src, obslib.DASHBOARD_REL)
    d = obslib.load_dashboard(path)
    c.check("__inputs" not in d, "dashboard has no __inputs")
    c.check(bool(d.get("uid")) and bool(d.get("title")),
            "dashboard has a uid and a title")
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    c.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
            "variable datasource: a prometheus data source variable")
    for name in ("model", "policy"):
        v = variables.get(name, {})
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        c.check(v.get("type") == "query" and v.get("multi") is True and
                v.get("includeAll") is True and
                str(q).startswith("label_values("),
                f"variable {name}: label_values query, multi, All")
    for name in ("policy_a", "policy_b"):
        v = variables.get(name, {})
        c.check(v.get("type") == "query" and not v.get("multi") and
                not v.get("includeAll"),
                f"variable {name}: single-select query")
    for name, v in variables.items():
        if v.get("type") == "query":
            c.check(v.get("datasource", {}).get("uid") == "${datasource}",
                    f"variable {name}: queries ${{datasource}}")

    ids = []
    titles = set()
    for panel in obslib.iter_panels(d.get("panels", [])):
        ids.append(panel.get("id"))
        title = panel.get("title")
        titles.add(title)
        g = panel.get("gridPos", {})
        c.check(all(k in g for k in "hwxy") and g["x"] + g["w"] <= 24,
                f"panel {title!r}: gridPos inside 24 columns", str(g))
        if panel.get("type") == "row":
            continue
        c.check(panel.get("datasource", {}).get("uid") == "${datasource}",
                f"panel {title!r}: on ${{datasource}}")
        targets = panel.get("targets", [])
        c.check(len(targets) > 0 and all(t.get("expr") for t in targets),
                f"panel {title!r}: has PromQL targets")
        refs = [t.get("refId") for t in targets]
        c.check(len(set(refs)) == len(refs), f"panel {title!r}: unique refIds")
        for t in targets:
            expr = t.get("expr", "")
            where = f"panel {title!r} [{t.get('refId')}]"
            c.check(t.get("datasource", {}).get("uid") == "${datasource}",
                    f"{where}: target on ${{datasource}}")
            _, unknown = obslib.substitute(
                expr, {k: "x" for k in GRAFANA_VARS})
            c.check(not unknown, f"{where}: known variables only",
                    str(unknown))
            undocumented = sorted(
                n for n in obslib.raw_metric_names(expr)
                if obslib.base_metric(n, documented) not in documented)
            c.check(not undocumented, f"{where}: documented metrics only",
                    str(undocumented))
            undefined = sorted(obslib.recorded_names(expr) - records)
            c.check(not undefined, f"{where}: defined recorded series only",
                    str(undefined))
    c.check(len(ids) == len(set(ids)) and None not in ids,
            "dashboard: unique panel ids", str(ids))
    row_titles = [p.get("title", "") for p in d.get("panels", [])
                  if p.get("type") == "row"]
    c.check(any("A/B" in t for t in row_titles), "dashboard: an A/B row",
            str(row_titles))

    # Every documented per-request and engine metric appears somewhere.
    used = set()
    for e in obslib.dashboard_exprs(d):
        used |= {obslib.base_metric(n, documented)
                 for n in obslib.raw_metric_names(e.expr)}
    info_only = {"skipserve_build_info", "skipserve_model_info"}
    missing = sorted(set(documented) - used - info_only)
    c.check(not missing, "dashboard: charts every documented metric",
            str(missing))


def check_provisioning(c, src):
    base = os.path.join(src, "deploy/grafana/provisioning")
    with open(os.path.join(base, "datasources/prometheus.yml")) as f:
        ds = yaml.safe_load(f)
    proms = [d for d in ds.get("datasources", [])
             if d.get("type") == "prometheus"]
    c.check(len(proms) == 1 and proms[0].get("url") == "http://prometheus:9090",
            "provisioning: prometheus data source at http://prometheus:9090")
    with open(os.path.join(base, "dashboards/skipserve.yml")) as f:
        prov = yaml.safe_load(f)
    paths = [p.get("options", {}).get("path")
             for p in prov.get("providers", [])]
    c.check(paths == ["/var/lib/grafana/dashboards"],
            "provisioning: dashboards from /var/lib/grafana/dashboards",
            str(paths))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--promtool", default="")
    args = ap.parse_args()
    src = os.path.abspath(args.source_dir)
    promtool = args.promtool
    if not promtool or not os.access(promtool, os.X_OK):
        print(f"SKIP: promtool not found ({promtool!r})")
        return 77

    c = Checks()
    documented = obslib.documented_metrics(
        obslib.source_path(src, obslib.METRICS_DOC_REL))
    c.check(len(documented) >= 20, "docs/metrics.md lists the metrics",
            str(len(documented)))
    parse_all(c, src)
    check_promtool(c, src, promtool)
    check_prometheus_yml(c, src)
    check_rules(c, src, documented)
    records = {e.name for e in obslib.rule_exprs(
        [obslib.source_path(src, r) for r in obslib.RULE_FILES_REL])
        if e.kind == "record"}
    check_dashboard(c, src, documented, records)
    check_provisioning(c, src)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
