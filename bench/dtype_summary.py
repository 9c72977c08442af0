#!/usr/bin/python3
"""Summarises bench/run_cpu.sh's weight-dtype runs (its step 2).

Usage: dtype_summary.py WORK_DIR OUT_PREFIX

WORK_DIR holds <weights>-<round>.json (skipserve-bench --out, policy none)
for weights f32, bf16 and f16 and rounds 1..R. Writes OUT_PREFIX.json and
OUT_PREFIX.md.

Every ratio is taken within one round (f32, bf16 and f16 run back to back)
and the median over rounds is reported, so a change in the machine's
bandwidth between rounds cancels out of the ratios.
"""

import glob
import json
import os
import statistics
import sys

DTYPES = ("f32", "bf16", "f16")


def load_rounds(work):
    rounds = {}
    for path in glob.glob(os.path.join(work, "*-*.json")):
        name = os.path.basename(path)[:-5]
        weights, _, index = name.partition("-")
        if weights not in DTYPES:
            continue
        with open(path) as f:
            result = json.load(f)
        rounds.setdefault(int(index), {})[weights] = result
    return [rounds[i] for i in sorted(rounds) if len(rounds[i]) == len(DTYPES)]


def figures(result):
    row = result["policies"][0]
    decode = row["decode"]
    ttft = {t["prompt_len"]: t["seconds"] for t in row["ttft"]}
    return {
        "decode_tokens_per_s": decode["tokens_per_s"],
        "bytes_per_token": decode["bytes_per_step"],
        "read_roofline_share": decode["roofline_share_read_bw"],
        "read_gb_s": result["memory_bandwidth_gb_s"]["read"],
        "ttft_128_s": ttft.get(128),
        "ttft_512_s": ttft.get(512),
        "weight_bytes_per_element": result["model"]["weight_bytes_per_element"],
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv):
    work, prefix = argv[1], argv[2]
    rounds = [{d: figures(r[d]) for d in DTYPES} for r in load_rounds(work)]
    if not rounds:
        raise SystemExit("no complete round of f32, bf16 and f16 in " + work)
    summary = {}
    for d in DTYPES:
        keys = rounds[0][d].keys()
        s = {k: median([r[d][k] for r in rounds]) for k in keys}
        s["decode_speedup_vs_f32"] = median(
            [r[d]["decode_tokens_per_s"] / r["f32"]["decode_tokens_per_s"]
             for r in rounds])
        for n in (128, 512):
            key = "ttft_%d_s" % n
            s["ttft_%d_speedup_vs_f32" % n] = median(
                [r["f32"][key] / r[d][key] for r in rounds
                 if r[d][key] and r["f32"][key]])
        summary[d] = s
    meta = json.load(open(glob.glob(os.path.join(work, "f32-1.json"))[0]))
    out = {"machine": meta["machine"], "rounds": len(rounds),
           "per_round": rounds, "summary": summary}
    with open(prefix + ".json", "w") as f:
        json.dump(out, f, indent=1)

    lines = [
        "# CPU engine: weight dtypes side by side",
        "",
        "`bench/run_cpu.sh`, step 2. Model: `synthetic:llama2-110m:bf16`"
        " kept as f32, bf16 or f16 (`--cpu_weights`); activations, "
        "accumulation and the KV cache in f32; %d threads; %d rounds, each "
        "running the three back to back; medians over rounds, ratios taken "
        "within a round." % (meta["machine"]["threads_used"], len(rounds)),
        "",
        "Machine: %s, %s logical cores, %s." % (
            meta["machine"].get("cpu"), meta["machine"].get("logical_cores"),
            meta["machine"].get("memory")),
        "",
        "| weights | decode b1 tok/s | vs f32 | MB/token | read GB/s | "
        "share of read roofline | TTFT@128 | vs f32 | TTFT@512 | vs f32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in DTYPES:
        s = summary[d]
        lines.append(
            "| %s | %.1f | %.2fx | %.1f | %.1f | %.0f%% | %.1f ms | %.2fx | "
            "%.1f ms | %.2fx |" % (
                d, s["decode_tokens_per_s"], s["decode_speedup_vs_f32"],
                s["bytes_per_token"] / 1e6, s["read_gb_s"],
                100 * s["read_roofline_share"], 1e3 * s["ttft_128_s"],
                s["ttft_128_speedup_vs_f32"], 1e3 * s["ttft_512_s"],
                s["ttft_512_speedup_vs_f32"]))
    lines += [
        "",
        "MB/token: weights at the engine's bytes per element plus the f32 KV "
        "read at context 128 (`engine/analysis/cost_model.h`). The read "
        "roofline is MB/token at the read bandwidth measured at the start of "
        "the same skipserve-bench run.",
        "",
        "The decode GEMV alone, per instruction set: `<date>-cpu-kernels.txt`"
        " (`skipserve-kernel-bench`, step 3).",
    ]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv)
