"""Helpers shared by the observability tests (check_configs.py, e2e_test.py).

Reads the shipped deliverables: the Grafana dashboard's PromQL targets, the
Prometheus rule files, and the metric names documented in docs/metrics.md.
Standard library plus python3-yaml (Debian's /usr/bin/python3).
"""

import json
import os
import re

import yaml

DASHBOARD_REL = "deploy/grafana/dashboards/skipserve.json"
PROMETHEUS_YML_REL = "deploy/prometheus/prometheus.yml"
RULE_FILES_REL = [
    "deploy/prometheus/rules/skipserve-recording.yml",
    "deploy/prometheus/rules/skipserve-alerts.yml",
]
ALERT_TESTS_REL = "deploy/prometheus/tests/alerts_test.yml"
METRICS_DOC_REL = "docs/metrics.md"


class Expr:
    """One PromQL expression of a deliverable, with where it comes from."""

    def __init__(self, source, name, expr, kind):
        self.source = source  # "dashboard", "recording", "alert"
        self.name = name      # panel title + refId, record name, alert name
        self.expr = expr
        self.kind = kind      # "target", "record", "alert"

    @property
    def key(self):
        return f"{self.source}:{self.name}"

    def __repr__(self):
        return f"Expr({self.key!r})"


def iter_panels(panels):
    """Every panel, including those nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def load_dashboard(path):
    with open(path) as f:
        return json.load(f)


def dashboard_exprs(dashboard):
    out = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append(Expr("dashboard",
                                f"{panel.get('title')} [{target.get('refId')}]",
                                target["expr"], "target"))
    return out


def load_rule_groups(path):
    with open(path) as f:
        return yaml.safe_load(f)["groups"]


def rule_exprs(paths):
    out = []
    for path in paths:
        for group in load_rule_groups(path):
            for rule in group["rules"]:
                if "record" in rule:
                    out.append(Expr("recording", rule["record"], rule["expr"],
                                    "record"))
                else:
                    out.append(Expr("alert", rule["alert"], rule["expr"],
                                    "alert"))
    return out


_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def substitute(expr, values):
    """Replaces Grafana template variables ($x, ${x}, ${x:fmt}, [[x]]).

    Returns (text, unknown): the names not in `values` are left in place and
    listed in `unknown`.
    """
    unknown = []

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in values:
            return values[name]
        unknown.append(name)
        return m.group(0)

    return _VAR.sub(repl, expr), unknown


_COMPARISON = re.compile(r"==|!=|>=|<=|>|<")


def with_bool_comparisons(expr):
    """Turns every filtering comparison outside selectors into `op bool`.

    `x > 0.05 and on (m) y > 0.1` becomes `x > bool 0.05 and on (m) y > bool
    0.1`: the same inputs, the same vector matching, but every series is kept
    (with 0 or 1). Label matchers ({...}), ranges ([...]) and strings are left
    alone.
    """
    out = []
    i = 0
    depth_brace = 0
    depth_bracket = 0
    quote = None
    n = len(expr)
    while i < n:
        c = expr[i]
        if quote:
            out.append(c)
            if c == "\\" and quote != "`" and i + 1 < n:
                out.append(expr[i + 1])
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c == "{":
            depth_brace += 1
        elif c == "}":
            depth_brace -= 1
        elif c == "[":
            depth_bracket += 1
        elif c == "]":
            depth_bracket -= 1
        elif depth_brace == 0 and depth_bracket == 0:
            m = _COMPARISON.match(expr, i)
            if m:
                op = m.group(0)
                out.append(op)
                i += len(op)
                if not re.match(r"\s*bool\b", expr[i:]):
                    out.append(" bool")
                continue
        out.append(c)
        i += 1
    return "".join(out)


def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""',
                  expr)


_RAW_METRIC = re.compile(r"(?<![\w:])(skipserve_[a-z0-9_]+|up|ALERTS)\b")
_RECORDED = re.compile(r"(?<![\w:])([a-z_]+:[a-zA-Z0-9_:]*[a-zA-Z0-9_])")


def raw_metric_names(expr):
    """skipserve_* series named by an expression (strings removed)."""
    names = set(m.group(1) for m in _RAW_METRIC.finditer(strip_strings(expr))
                if m.group(1).startswith("skipserve_"))
    return names


def recorded_names(expr):
    """level:metric:ops names used by an expression."""
    text = strip_strings(expr)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges like [5m]
    return set(m.group(1) for m in _RECORDED.finditer(text))


def documented_metrics(doc_path):
    """{name: type} from the tables of docs/metrics.md."""
    out = {}
    row = re.compile(r"^\|\s*`(skipserve_[a-z0-9_]+)`\s*\|\s*([a-z]+)")
    with open(doc_path) as f:
        for line in f:
            m = row.match(line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def base_metric(name, documented):
    """skipserve_x_bucket -> skipserve_x when skipserve_x is a histogram."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if documented.get(base) == "histogram":
                return base
    return name


def source_path(source_dir, rel):
    return os.path.join(source_dir, rel)
