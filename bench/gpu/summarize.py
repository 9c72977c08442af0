#!/usr/bin/env python3
"""Merges run.sh's JSON outputs into <date>-h200.json and a short .md table.

Usage: summarize.py OUT_DIR DATE. Reads whatever of parity.json,
hf_parity.json, bench_grid.json, bench_batch512.json, bench_batch2048.json,
bench_mixed.json and hf_bench.json exist in OUT_DIR (a step that failed or
timed out leaves its file out, and the summary says so).
"""
import json
import os
import sys


def load(out_dir, name):
    path = os.path.join(out_dir, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main():
    out_dir, date = sys.argv[1], sys.argv[2]
    parts = {n[:-5]: load(out_dir, n) for n in (
        "hf_parity.json", "bench_grid.json", "bench_batch512.json",
        "bench_batch2048.json", "bench_mixed.json", "hf_bench.json")}
    merged = {"date": date, "machine": "nvidia-h200", **parts}
    with open(os.path.join(out_dir, f"{date}-h200.json"), "w") as f:
        json.dump(merged, f, indent=2)

    lines = [f"# skipserve CUDA on H200, {date}", ""]
    missing = [k for k, v in parts.items() if v is None]
    if missing:
        lines += [f"Missing (step failed or timed out): {', '.join(missing)}", ""]
    hp = parts["hf_parity"]
    if hp:
        lines += ["## Parity with transformers (worst row rel. L2 vs fp32)", "",
                  "| model | cuda | cuda decode | cpu | hf bf16 |",
                  "|---|---|---|---|---|"]
        for name in ("gqa", "mha"):
            e = hp.get(name, {})
            lines.append(f"| {name} | {e.get('cuda', float('nan')):.2e} | "
                         f"{e.get('cuda_decode', float('nan')):.2e} | "
                         f"{e.get('cpu', float('nan')):.2e} | "
                         f"{e.get('hf_bf16', float('nan')):.2e} |")
        lines.append("")
    hf = parts["hf_bench"] or {}
    hf_ttft = {t["prompt_len"]: t["seconds"] for t in hf.get("ttft", [])}
    grid = parts["bench_grid"]
    if grid:
        lens = grid["settings"]["prompt_lens"]
        lines += ["## Llama 2 7B shapes, bf16: time to first token (ms)", "",
                  "| policy | " + " | ".join(f"ttft@{n}" for n in lens) + " |",
                  "|---|" + "---|" * len(lens)]
        for p in grid["policies"]:
            lines.append(f"| {p['policy']} | " + " | ".join(
                f"{t['seconds'] * 1e3:.1f}" for t in p["ttft"]) + " |")
        lines.append("| HF eager (none) | " + " | ".join(
            f"{hf_ttft[n] * 1e3:.1f}" if n in hf_ttft else "-" for n in lens)
            + " |")
        lines.append("")
    hf_dec = {(d["context"], d["batch"]): d["tokens_per_s"]
              for d in hf.get("decode", [])}
    rows = []
    for key in ("bench_batch512", "bench_batch2048"):
        b = parts[key]
        if not b:
            continue
        ctx = b["settings"]["decode_context"]
        bw = b["memory_bandwidth_gb_s"]["copy"]
        for d in b["policies"][0]["decode_batches"]:
            rows.append(f"| {ctx} | {d['batch']} | {d['tokens_per_s']:.1f} | "
                        f"{100 * d['roofline_share']:.1f}% of {bw:.0f} GB/s | "
                        + (f"{hf_dec[(ctx, d['batch'])]:.1f}"
                           if (ctx, d["batch"]) in hf_dec else "-") + " |")
    if rows:
        lines += ["## Decode tokens/s, policy none", "",
                  "| context | batch | skipserve | roofline share | HF eager |",
                  "|---|---|---|---|---|"] + rows + [""]
    mixed = parts["bench_mixed"]
    if mixed and "mixed" in mixed:
        m = mixed["mixed"]
        lines += ["## Mixed-policy batch", "",
                  f"{m['policies']} at batch {m['batch']}: A only "
                  f"{m['tokens_per_s_a_only']:.1f}, B only "
                  f"{m['tokens_per_s_b_only']:.1f}, 50/50 "
                  f"{m['tokens_per_s_mixed']:.1f} tokens/s", ""]
    with open(os.path.join(out_dir, f"{date}-h200.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
