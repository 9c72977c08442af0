"""Collects the loadgen JSON files of bench/run_serving.sh into one JSON file
and a Markdown table: throughput and latency percentiles per run, and the
A/B ratios (mixed and grouped 50/50 against the single-policy runs)."""
import json
import os
import platform
import sys


def machine():
    info = {"logical_cores": os.cpu_count(), "kernel": platform.release()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        info["memory"] = f.readline().split(":", 1)[1].strip()
    return info


def main(work, out, seconds):
    runs = {}
    for name in sorted(os.listdir(work)):
        if name.endswith(".json"):
            with open(os.path.join(work, name)) as f:
                runs[name[:-5]] = json.load(f)
    result = {"machine": machine(), "seconds_per_run": float(seconds),
              "runs": runs, "ab": {}}
    lines = ["# Serving benchmark", "",
             f"Machine: {result['machine'].get('cpu', '?')}, "
             f"{result['machine']['logical_cores']} logical cores, "
             f"{result['machine']['memory']}. {seconds} s per run, "
             "closed loop, streaming, prompts of 16-64 words.", "",
             "| run | policy | requests | errors | TTFT p50/p99 ms | ITL p50/p99 ms | E2E p50/p99 ms | tokens/s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, report in runs.items():
        for row in report["policies"]:
            def ms(key, q):
                return 1e3 * row[key][q] if row[key]["count"] else float("nan")
            lines.append(
                f"| {name} | {row['policy']} | {row['requests']} | "
                f"{sum(row['errors'].values())} | "
                f"{ms('ttft_seconds', 'p50'):.1f} / {ms('ttft_seconds', 'p99'):.1f} | "
                f"{ms('itl_seconds', 'p50'):.2f} / {ms('itl_seconds', 'p99'):.2f} | "
                f"{ms('e2e_seconds', 'p50'):.0f} / {ms('e2e_seconds', 'p99'):.0f} | "
                f"{row['output_tokens_per_second']:.0f} |")
    lines += ["", "## A/B: 50/50 none vs attn:last=33% at concurrency 32", "",
              "Throughput of the 50/50 mix against the mean of the two "
              "single-policy runs (target: >= 0.9).", "",
              "| model | batching | 50/50 tokens/s | single-policy mean tokens/s | ratio |",
              "|---|---|---|---|---|"]
    for model in ("default", "llama2-110m"):
        for batching in ("mixed", "grouped"):
            key = f"{model}-{batching}"
            if f"{key}-ab" not in runs:
                continue
            tput = lambda r: sum(p["output_tokens_per_second"] for p in r["policies"])
            ab = tput(runs[f"{key}-ab"])
            single = (tput(runs[f"{key}-none"]) + tput(runs[f"{key}-attn33"])) / 2
            result["ab"][key] = {"ab_tokens_per_s": ab,
                                 "single_mean_tokens_per_s": single,
                                 "ratio": ab / single}
            lines.append(f"| {model} | {batching} | {ab:.0f} | {single:.0f} | "
                         f"{ab / single:.3f} |")
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}.json and {out}.md")


if __name__ == "__main__":
    main(*sys.argv[1:4])
