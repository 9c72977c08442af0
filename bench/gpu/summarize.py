#!/usr/bin/env python3
"""Merges what bench/gpu/run.sh wrote into one JSON file and a short report.

  summarize.py report --out_dir OUT --name NAME [--title T] DIR...
      Reads, from each DIR (later ones win for the same file), whatever
      exists of: steps.jsonl (run.sh's step records), tests.xml (the gtest
      results), hf_parity.json, bench_quick.jsonl and bench_full.jsonl
      (skipserve-bench --results) and hf_bench.jsonl; writes OUT/NAME.json
      (everything) and OUT/NAME.md (the tables). Measurements cut short keep
      their completed rounds; one with no figure line is rebuilt from its
      sample lines and marked partial.
  summarize.py merge-xml OUT_FILE XML...
      One gtest XML file (<testsuites>) holding the test suites of all the
      given files.

Standard library only (it runs under any python3).
"""
import argparse
import json
import math
import os
import sys
import xml.etree.ElementTree as ET


def read_jsonl(path):
    lines = []
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for raw in f:
            raw = raw.strip()
            if not raw:
                continue
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                # A line cut off by a kill: keep the rest.
                lines.append({"type": "corrupt", "text": raw[:200]})
    return lines


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def find(dirs, name):
    """The last of dirs holding `name`."""
    found = None
    for d in dirs:
        if os.path.exists(os.path.join(d, name)):
            found = os.path.join(d, name)
    return found


def tests_summary(path):
    if path is None:
        return None
    root = ET.parse(path).getroot()
    out = {}
    for suite in root.iter("testsuite"):
        binary = suite.get("binary") or "tests"
        entry = out.setdefault(binary, {"tests": 0, "failures": 0,
                                        "skipped": 0, "failed": []})
        for case in suite.iter("testcase"):
            entry["tests"] += 1
            name = f"{suite.get('name')}.{case.get('name')}"
            if case.find("failure") is not None:
                entry["failures"] += 1
                entry["failed"].append(name)
            elif case.find("skipped") is not None or \
                    case.get("result") == "skipped":
                entry["skipped"] += 1
    return out


def bench_summary(lines):
    """Figures by measurement; measurements without figures rebuilt from
    their samples."""
    if lines is None:
        return None
    out = {"meta": None, "figures": [], "errors": [], "skipped": [],
           "prefill": [], "fatal": [], "end": None}
    samples = {}
    figured = set()
    for line in lines:
        t = line.get("type")
        if t == "meta":
            out["meta"] = line
        elif t == "figure":
            out["figures"].append(line)
            figured.add(line["measurement"])
        elif t == "error":
            out["errors"].append(line)
        elif t in ("skipped", "corrupt"):
            out["skipped"].append(line)
        elif t == "prefill":
            out["prefill"].append(line)
        elif t == "fatal":
            out["fatal"].append(line)
        elif t == "end":
            out["end"] = line
        elif t == "sample":
            key = (line["measurement"], line["kind"], line.get("policy"),
                   line.get("policies"), line.get("variant"),
                   line.get("prompt_len"), line.get("batch"),
                   line.get("context"))
            samples.setdefault(key, []).append(line)
    for key, group in samples.items():
        measurement, kind, policy, policies, variant, n, batch, ctx = key
        if measurement in figured:
            continue
        value = "seconds" if kind == "ttft" else "tokens_per_s"
        values = sorted(s[value] for s in group)
        fig = {"type": "figure", "measurement": measurement, "kind": kind,
               "partial": True, "from_samples": True,
               "rounds_done": len(values), "all_rounds": values}
        if kind == "ttft":
            fig.update(policy=policy, prompt_len=n,
                       seconds=values[len(values) // 2])
        elif kind == "decode":
            fig.update(policy=policy, batch=batch, context=ctx,
                       tokens_per_s=values[len(values) // 2])
        else:  # one figure for the three variants of a mixed measurement
            prior = next((f for f in out["figures"] if f.get("from_samples")
                          and f["measurement"] == measurement), None)
            if prior is not None:
                prior["tokens_per_s_" + variant] = values[len(values) // 2]
                prior["all_rounds_" + variant] = values
                continue
            fig.update(policies=policies, batch=batch, context=ctx)
            fig["tokens_per_s_" + variant] = values[len(values) // 2]
            fig["all_rounds_" + variant] = values
            del fig["all_rounds"]
        out["figures"].append(fig)
    return out


def fmt(x, spec=".1f", default="-"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return default if x is None else str(x)
    return format(x, spec)


def report_md(title, data):
    L = [f"# {title}", ""]
    env = data.get("env") or {}
    if env:
        L += ["## Machine", ""]
        for k, v in env.items():
            L.append(f"- {k}: {v}")
        L.append("")
    steps = data.get("steps") or []
    if steps:
        L += ["## Steps", "", "| phase | step | status | seconds | note |",
              "|---|---|---|---|---|"]
        for s in steps:
            if s.get("type") != "step":
                continue
            note = str(s.get("message", "")).replace("|", "/")[:160]
            L.append(f"| {s.get('phase')} | {s.get('step')} | "
                     f"{s.get('status')} | {fmt(s.get('seconds'), '.0f')} | "
                     f"{note} |")
        L.append("")
    tests = data.get("tests")
    if tests:
        L += ["## Tests", "", "| binary | tests | failures | skipped |",
              "|---|---|---|---|"]
        for b, e in tests.items():
            L.append(f"| {b} | {e['tests']} | {e['failures']} | "
                     f"{e['skipped']} |")
            for name in e["failed"][:20]:
                L.append(f"|  | FAILED {name} | | |")
        L.append("")
    hp = data.get("hf_parity")
    if hp:
        L += [f"## Parity (reference: {hp.get('reference')}; worst row "
              "relative L2 error over every position of every sequence)", "",
              "| model | run | device | worst | threshold | steps | "
              "split-key steps (132 SMs) | result |",
              "|---|---|---|---|---|---|---|---|"]
        for name, v in hp.get("variants", {}).items():
            for tag, r in v.get("runs", {}).items():
                L.append(
                    f"| {name} | {tag} | {r.get('device', '-')} | "
                    f"{fmt(r.get('worst'), '.2e')} | "
                    f"{fmt(hp['thresholds'].get(tag), '.0e')} | "
                    f"{r.get('steps', '-')} | "
                    f"{r.get('split_key_steps_on_132_sms', '-')} | "
                    f"{'PASS' if r.get('passed') else 'FAIL ' + str(r.get('error', ''))[:80]} |")
            if "hf_bf16_yardstick" in v:
                L.append(f"| {name} | HF bf16 (yardstick) | | "
                         f"{fmt(v['hf_bf16_yardstick'], '.2e')} | | | | |")
        L += ["", f"Parity: {'PASS' if hp.get('passed') else 'FAIL'}", ""]
        for note in hp.get("notes", []):
            L.append(f"- note: {note}")
        for failure in hp.get("failures", [])[:20]:
            L.append(f"- FAILED: {str(failure)[:300]}")
        L.append("")
    hfb = data.get("hf_bench") or []
    hf_ttft = {r["prompt_len"]: r["seconds"] for r in hfb
               if r.get("type") == "ttft"}
    hf_dec = {(r["context"], r["batch"]): r["tokens_per_s"] for r in hfb
              if r.get("type") == "decode"}
    for phase in ("bench_quick", "bench_full"):
        b = data.get(phase)
        if not b:
            continue
        meta = b.get("meta") or {}
        L += [f"## {phase}", ""]
        if meta:
            m = meta.get("model", {})
            L.append(f"Model {m.get('spec')} ({fmt(m.get('parameters', 0) / 1e9, '.2f')}"
                     f"B parameters), built in {fmt(m.get('build_seconds'))} s; "
                     f"backend {meta.get('device', {}).get('name')} "
                     f"({meta.get('device', {}).get('gpu', '')}) ready in "
                     f"{fmt(m.get('backend_seconds'))} s; copy bandwidth "
                     f"{fmt(meta.get('memory_bandwidth_gb_s', {}).get('copy'))} GB/s; "
                     f"KV pool {fmt(meta.get('kv', {}).get('pool_bytes', 0) / 1e9)} GB.")
            L.append("")
        for f in b["fatal"]:
            L.append(f"FATAL at {f.get('stage')}: {f.get('message')}")
        figs = b["figures"]
        ttft = [f for f in figs if f["kind"] == "ttft"]
        if ttft:
            lens = sorted({f["prompt_len"] for f in ttft})
            L += ["Time to first token, ms (speedup vs the measurement's "
                  "first policy; FLOPs-predicted in brackets):", "",
                  "| measurement | policy | " +
                  " | ".join(f"ttft@{n}" for n in lens) + " |",
                  "|---|---|" + "---|" * len(lens)]
            keys = []
            for f in ttft:
                if (f["measurement"], f["policy"]) not in keys:
                    keys.append((f["measurement"], f["policy"]))
            for meas, pol in keys:
                cells = []
                for n in lens:
                    f = next((x for x in ttft if x["measurement"] == meas and
                              x["policy"] == pol and x["prompt_len"] == n), None)
                    cells.append("-" if f is None else
                                 f"{f['seconds'] * 1e3:.2f} "
                                 f"({fmt(f.get('speedup'), '.3f')}/"
                                 f"{fmt(f.get('predicted_speedup_flops'), '.3f')})"
                                 + (" partial" if f.get("partial") else ""))
                L.append(f"| {meas} | {pol} | " + " | ".join(cells) + " |")
            if hf_ttft:
                L.append("| HF eager | none | " + " | ".join(
                    f"{hf_ttft[n] * 1e3:.2f}" if n in hf_ttft else "-"
                    for n in lens) + " |")
            L.append("")
        dec = [f for f in figs if f["kind"] == "decode"]
        if dec:
            L += ["Decode tokens/s (speedup vs the measurement's first "
                  "policy, bytes-predicted in brackets; share of the "
                  "copy-bandwidth roofline):", "",
                  "| measurement | policy | context | batch | tokens/s | "
                  "speedup (pred) | roofline | HF eager |",
                  "|---|---|---|---|---|---|---|---|"]
            for f in dec:
                hf = hf_dec.get((f.get("context"), f.get("batch")))
                L.append(
                    f"| {f['measurement']} | {f['policy']} | {f.get('context')} | "
                    f"{f.get('batch')} | {fmt(f.get('tokens_per_s'))}"
                    f"{' partial' if f.get('partial') else ''} | "
                    f"{fmt(f.get('speedup'), '.3f')} "
                    f"({fmt(f.get('predicted_speedup_bytes'), '.3f')}) | "
                    f"{fmt(100 * f['roofline_share'] if 'roofline_share' in f else None)}% | "
                    f"{fmt(hf) if f.get('policy') == 'none' else '-'} |")
            L.append("")
        for f in (x for x in figs if x["kind"] == "mixed"):
            L += [f"Mixed batch {f.get('policies')} at batch {f.get('batch')}, "
                  f"context {f.get('context')}: A only "
                  f"{fmt(f.get('tokens_per_s_a_only'))}, B only "
                  f"{fmt(f.get('tokens_per_s_b_only'))}, 50/50 "
                  f"{fmt(f.get('tokens_per_s_mixed'))} tokens/s"
                  + (" (partial)" if f.get("partial") else ""), ""]
        if b["prefill"]:
            total = sum(p["tokens"] for p in b["prefill"])
            secs = sum(p["seconds"] for p in b["prefill"])
            L += [f"Context prefills: {total} tokens in "
                  f"{sum(p['steps'] for p in b['prefill'])} batched steps, "
                  f"{secs:.1f} s ({total / secs if secs else 0:.0f} tokens/s).",
                  ""]
        for e in b["errors"]:
            L.append(f"- ERROR {e.get('measurement')} {json.dumps(e.get('config'))}: "
                     f"{e.get('message')}")
        for s in b["skipped"]:
            L.append(f"- skipped {s.get('measurement', '')} "
                     f"({s.get('reason', s.get('type'))}, {s.get('where', '')})")
        L.append("")
    hf_other = [r for r in hfb if r.get("type") in ("skipped", "error")]
    if hf_other:
        L += ["## HF baseline notes", ""]
        for r in hf_other:
            L.append(f"- {r.get('type')}: {json.dumps(r)}")
        L.append("")
    return "\n".join(L) + "\n"


def cmd_report(args):
    dirs = args.dirs
    data = {"name": args.name, "steps": [], "env": {}}
    seen = set()
    for d in dirs:  # every phase's steps, in order, each once
        for line in read_jsonl(os.path.join(d, "steps.jsonl")) or []:
            key = json.dumps(line, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            if line.get("type") == "env":
                data["env"].update({k: v for k, v in line.items()
                                    if k != "type"})
            else:
                data["steps"].append(line)
    data["tests"] = tests_summary(find(dirs, "tests.xml")) or {}
    data["tests"].update(tests_summary(find(dirs, "host_tests.xml")) or {})
    p = find(dirs, "hf_parity.json")
    data["hf_parity"] = read_json(p) if p else None
    for phase in ("bench_quick", "bench_full"):
        p = find(dirs, phase + ".jsonl")
        data[phase] = bench_summary(read_jsonl(p)) if p else None
    p = find(dirs, "hf_bench.jsonl")
    data["hf_bench"] = read_jsonl(p) if p else None
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, args.name + ".json"), "w") as f:
        json.dump(data, f, indent=1, default=str)
    md = report_md(args.title or args.name, data)
    with open(os.path.join(args.out_dir, args.name + ".md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def cmd_merge_xml(args):
    merged = ET.Element("testsuites")
    for path in args.xml:
        binary = os.path.splitext(os.path.basename(path))[0]
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            suite = ET.SubElement(merged, "testsuite", name=binary,
                                  binary=binary, tests="1", failures="1")
            case = ET.SubElement(suite, "testcase", name="xml")
            ET.SubElement(case, "failure", message=f"unreadable XML: {e}")
            continue
        suites = [root] if root.tag == "testsuite" else list(root)
        for s in suites:
            s.set("binary", binary)
            merged.append(s)
    ET.ElementTree(merged).write(args.out_file, encoding="unicode",
                                 xml_declaration=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    r.add_argument("--out_dir", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--title", default="")
    r.add_argument("dirs", nargs="+")
    m = sub.add_parser("merge-xml")
    m.add_argument("out_file")
    m.add_argument("xml", nargs="*")
    args = parser.parse_args()
    return cmd_report(args) if args.cmd == "report" else cmd_merge_xml(args)


if __name__ == "__main__":
    sys.exit(main())
