#!/usr/bin/python3
"""Tests of bench/gpu/kernel_model.py (the per-kernel byte/FLOP model of the
CUDA backend's step) against figures computed here by hand, independently
of the script's own bookkeeping.

    /usr/bin/python3 tests/python/kernel_model_test.py

Standard library only; no build tree needed.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "bench", "gpu", "kernel_model.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import kernel_model as km  # noqa: E402

# Llama 2 7B.
H, I, L, V, D, HEADS = 4096, 11008, 32, 32000, 128, 32
# Bytes of one layer's device weights: q|k|v and o projections, gate|up and
# down in bf16, the two RMSNorm weights in fp32 (cuda_weights.h).
ATTN_W = (3 * H * H + H * H) * 2 + H * 4
FFN_W = (2 * I * H + I * H) * 2 + H * 4
LAYER_W = ATTN_W + FFN_W
# One decode row: its embedding row, the final norm, the LM head.
OUTSIDE_W = H * 2 + H * 4 + V * H * 2


def run(policy="none", **scenario):
    s = km.preset_shape("llama2-7b")
    phase = scenario.pop("phase", "decode")
    sc = km.Scenario(phase, scenario.get("batch", 1),
                     scenario.get("context", 512 if phase == "decode" else 0),
                     scenario.get("prompt_len", 1))
    machine = km.Machine(4800, 989, 67, 64, 2.0, 132, "test")
    return km.evaluate(s, policy, sc, machine)


def kernel(result, prefix):
    return next(k for k in result["kernels"] if k["kernel"].startswith(prefix))


class DecodeBytes(unittest.TestCase):
    def test_weight_bytes_7b_batch1(self):
        r = run()
        want = L * LAYER_W + OUTSIDE_W
        self.assertEqual(want, 13_215_227_904)  # the hand sum, once
        self.assertEqual(r["totals"]["weights"], want)

    def test_kv_bytes_7b_batch1_context512(self):
        r = run(context=512)
        # Each layer reads 513 keys' K and V (the new token's included) and
        # writes the new token's, bf16, 32 heads of 128.
        read = L * 513 * 2 * H * 2
        write = L * 2 * H * 2
        self.assertEqual(r["totals"]["kv"], read + write)
        self.assertEqual(kernel(r, "PagedAttention")["bytes"]["kv"], read)

    def test_batch1_is_memory_bound_and_graph_sized(self):
        r = run()
        # 1 embedding + 1 norm + 32 x (qkv with RoPE/KV fused, attention,
        # combine, wo with add+norm fused, gate|up, down with add+norm
        # fused) + LM head.
        self.assertEqual(r["kernel_launches_per_step"], 2 + 32 * 6 + 1)
        self.assertNotIn("RopeKvWrite", [k["kernel"] for k in r["kernels"]])
        self.assertIn("RopeKvWrite",
                      [k["kernel"] for k in run(batch=17)["kernels"]])
        for k in r["kernels"]:
            if "GEMV" in k["kernel"] or "gemv" in k["kernel"]:
                self.assertEqual(k["bound"], "memory", k["kernel"])
        # The step is at least the weights at the bandwidth.
        self.assertGreater(r["step_time_s"], (L * LAYER_W + OUTSIDE_W) / 4.8e12)

    def test_attention_splits_match_attention_cu(self):
        # attention.cu's byte model: batch 1 on 132 SMs, 2 splits at context
        # 512, 16 at 4096; none at batch 256 (8192 blocks).
        self.assertEqual(km.attention_splits(1, 32, 513, 132), 2)
        self.assertEqual(km.attention_splits(1, 32, 4097, 132), 16)
        self.assertEqual(km.attention_splits(256, 32, 513, 132), 1)
        self.assertTrue(any(k["kernel"].startswith("CombineSplits (2")
                            for k in run()["kernels"]))

    def test_batch256_takes_cublas_and_logits(self):
        r = run(batch=256)
        self.assertTrue(any(k["kernel"] == "QKV GEMM (cuBLAS)"
                            for k in r["kernels"]))
        self.assertTrue(any(k["kernel"] == "SiluMul" for k in r["kernels"]))
        self.assertEqual(r["logits_bytes_copied"], 256 * V * 4)
        self.assertEqual(kernel(r, "D2H logits")["bytes"]["logits"],
                         256 * V * 4)
        # Weights: the same matrices, 256 embedding rows.
        self.assertEqual(r["totals"]["weights"],
                         L * LAYER_W + OUTSIDE_W + 255 * H * 2)
        self.assertEqual(r["totals"]["kv"],
                         256 * (L * 513 * 2 * H * 2 + L * 2 * H * 2))

    def test_greedy_on_device_copies_8_bytes_a_row(self):
        s = km.preset_shape("llama2-7b")
        machine = km.Machine(4800, 989, 67, 64, 2.0, 132, "test")
        r = km.evaluate(s, "none", km.Scenario("decode", 256, 512), machine,
                        logits="greedy")
        self.assertEqual(r["host_copy_bytes"], 256 * 8)
        self.assertEqual(r["logits_bytes_copied"], 256 * V * 4)
        self.assertEqual(kernel(r, "GreedyTokens")["bytes"]["logits"],
                         256 * V * 4 + 256 * 8)
        self.assertEqual(run(batch=256)["host_copy_bytes"], 256 * V * 4)

    def test_residual_add_fuses_into_the_gemv_up_to_16_rows(self):
        m = 16
        r = run(batch=m)
        self.assertNotIn("AddResidualRmsNorm",
                         [k["kernel"] for k in r["kernels"]])
        # Wo: its weights, the attention output in, x read and written; the
        # next norm's weights and the normed rows out (every layer's FFN
        # runs on the same rows).
        self.assertEqual(kernel(r, "Wo GEMM (gemv.cu)")["bytes"]["activations"],
                         L * (m * H * 2 + 2 * m * H * 4 + m * H * 2))
        self.assertEqual(kernel(r, "Wo GEMM (gemv.cu)")["bytes"]["weights"],
                         L * (H * H * 2 + H * 4))
        self.assertEqual(kernel(r, "Wo GEMM (gemv.cu)")["launches"], L)
        r17 = run(batch=17)
        self.assertEqual(kernel(r17, "AddResidualRmsNorm")["launches"], 2 * L)
        self.assertEqual(kernel(r17, "Wo GEMM (cuBLAS)")["bytes"]["activations"],
                         L * (17 * H * 2 + 17 * H * 4))

    def test_gemv_cublas_boundary(self):
        self.assertIn("QKV GEMM (gemv.cu)",
                      [k["kernel"] for k in run(batch=16)["kernels"]])
        self.assertIn("QKV GEMM (cuBLAS)",
                      [k["kernel"] for k in run(batch=17)["kernels"]])


class SkipPolicies(unittest.TestCase):
    def test_rounding_as_engine_policy(self):
        def skipped(policy, layers=32):
            a, f = km.parse_policy(policy, layers)
            return layers - sum(a), layers - sum(f)
        self.assertEqual(skipped("attn:last=10%"), (3, 0))   # 3.2
        self.assertEqual(skipped("ffn:last=25%"), (0, 8))
        self.assertEqual(skipped("layer:last=33%"), (11, 11))  # 10.56
        self.assertEqual(skipped("layer:last=0.33"), (11, 11))
        self.assertEqual(skipped("attn:last=12.5%", 12), (2, 0))  # 1.5 up
        self.assertEqual(skipped("attn:last=10%;ffn:last=25%"), (3, 8))
        self.assertEqual(skipped("none"), (0, 0))
        for bad in ("attn:last=110%", "foo:last=1%", "attn:3",
                    "attn:last=1%;attn:last=2%"):
            with self.assertRaises(ValueError, msg=bad):
                km.parse_policy(bad, 32)

    def test_layer_skip_removes_exactly_8_layers_of_weights(self):
        full = run()["totals"]["weights"]
        skip = run("layer:last=25%")["totals"]["weights"]
        self.assertEqual(full - skip, 8 * LAYER_W)
        attn = run("attn:last=25%")["totals"]["weights"]
        self.assertEqual(full - attn, 8 * ATTN_W)
        ffn = run("ffn:last=25%")["totals"]["weights"]
        self.assertEqual(full - ffn, 8 * FFN_W)

    def test_attention_skip_removes_its_kv(self):
        full = run()["totals"]["kv"]
        attn = run("attn:last=25%")["totals"]["kv"]
        self.assertEqual(full - attn, 8 * (513 + 1) * 2 * H * 2)
        self.assertEqual(run("ffn:last=33%")["totals"]["kv"], full)

    def test_decode_ratio_near_cost_model(self):
        # The cost model (engine/analysis/cost_model.cc) counts the same
        # weights and K/V, norms in bf16; the ratios agree closely.
        s = km.preset_shape("llama2-7b")
        speedup = {}
        for e in km.skip_predictions(
                s, km.Scenario("decode", 1, 512),
                km.Machine(4800, 989, 67, 64, 2.0, 132, "test"),
                km.SKIP_GRID):
            self.assertAlmostEqual(e["bytes_ratio"],
                                   e["cost_model_bytes_ratio"], delta=2e-3)
            speedup[e["policy"]] = e["predicted_speedup"]
        for kind in ("attn", "ffn", "layer"):
            self.assertLess(1.0, speedup[f"{kind}:last=10%"])
            self.assertLess(speedup[f"{kind}:last=10%"],
                            speedup[f"{kind}:last=25%"])
            self.assertLess(speedup[f"{kind}:last=25%"],
                            speedup[f"{kind}:last=33%"])


class Prefill(unittest.TestCase):
    def test_flops_scale_with_prompt_length(self):
        gemms = ("QKV GEMM", "Wo GEMM", "gate|up GEMM", "down GEMM")
        per_token = 2 * (3 * H * H + H * H + 3 * I * H) * L
        results = {n: run(phase="prefill", prompt_len=n)
                   for n in (128, 256, 512)}
        for n, r in results.items():
            proj = sum(k["flops"] for k in r["kernels"]
                       if k["kernel"].startswith(gemms))
            self.assertEqual(proj, n * per_token)
            # Causal attention: 4 * head_dim FLOPs per (row, key) pair per
            # head, n (n + 1) / 2 pairs.
            self.assertEqual(kernel(r, "PrefillAttention")["flops"],
                             4 * D * HEADS * L * n * (n + 1) // 2)
            # The LM head runs on the last row only.
            self.assertEqual(kernel(r, "LM head")["flops"], 2 * H * V)
        total = {n: r["totals"]["flops"] for n, r in results.items()}
        self.assertGreater(total[512] / total[256], 2.0)
        self.assertLess(total[512] / total[256], 2.1)
        self.assertGreater(total[256] / total[128], 1.9)

    def test_prefill_tiles_read_kv_once_per_tile(self):
        # 512 rows: 16 tiles of 32; tile i reads keys [0, 32 i).
        r = run(phase="prefill", prompt_len=512)
        keys = sum(32 * i for i in range(1, 17))
        self.assertEqual(kernel(r, "PrefillAttention")["bytes"]["kv"],
                         L * keys * 2 * H * 2)
        # The final norm runs alone (the logit row is gathered).
        self.assertEqual(kernel(r, "RmsNorm")["launches"], 2)

    def test_prefill_flops_ratio_matches_cost_model(self):
        s = km.preset_shape("llama2-7b")
        for e in km.skip_predictions(
                s, km.Scenario("prefill", 1, 0, 512),
                km.Machine(4800, 989, 67, 64, 2.0, 132, "test"),
                km.SKIP_GRID):
            self.assertAlmostEqual(e["flops_ratio"],
                                   e["cost_model_flops_ratio"], delta=2e-3)


class CommandLine(unittest.TestCase):
    def run_script(self, *args):
        out = subprocess.run([sys.executable, SCRIPT, *args], check=True,
                             capture_output=True, text=True)
        return out.stdout

    def test_json_parses(self):
        doc = json.loads(self.run_script(
            "--json", "--scenario", "decode:batch=1:context=512",
            "--scenario", "prefill:batch=1:prompt=128"))
        self.assertIn("a model, not a measurement", doc["what"])
        self.assertEqual(len(doc["scenarios"]), 2)
        self.assertEqual(doc["machine"]["bandwidth_gbs"], 4800)
        self.assertIn("nominal", doc["machine"]["bandwidth_source"])
        self.assertEqual(len(doc["skip_predictions"]), 2 * 9)
        self.assertEqual(doc["scenarios"][0]["totals"]["weights"],
                         L * LAYER_W + OUTSIDE_W)

    def test_text_labels_model_and_nominal(self):
        text = self.run_script("--batch", "256")
        self.assertIn("MODEL", text)
        self.assertIn("nominal", text)
        self.assertIn("8,192,000", self.run_script("--batch", "64"))

    def test_measured_bandwidth_and_config(self):
        with tempfile.TemporaryDirectory() as d:
            bench = os.path.join(d, "bench_full.jsonl")
            with open(bench, "w") as f:
                f.write('{"type":"meta","memory_bandwidth_gb_s":{"copy":'
                        '3900.5,"read":3900.5},"device":{"gpu":"NVIDIA H200",'
                        '"multiprocessors":132}}\n{"type":"figure"}\n')
            cfg = os.path.join(d, "config.json")
            with open(cfg, "w") as f:
                json.dump({"hidden_size": 8192, "intermediate_size": 28672,
                           "num_hidden_layers": 80, "num_attention_heads": 64,
                           "num_key_value_heads": 8, "vocab_size": 32000},
                          f)
            out_json = os.path.join(d, "model.json")
            self.run_script("--config", cfg, "--from_bench",
                            os.path.join(d, "missing.jsonl"), "--from_bench",
                            bench, "--json_out", out_json)
            with open(out_json) as f:
                doc = json.load(f)
        self.assertEqual(doc["machine"]["bandwidth_gbs"], 3900.5)
        self.assertIn("measured", doc["machine"]["bandwidth_source"])
        r = doc["scenarios"][0]
        # GQA: 8 KV heads of 128 per layer, 513 keys, 80 layers.
        self.assertEqual(kernel(r, "PagedAttention")["bytes"]["kv"],
                         80 * 513 * 2 * 1024 * 2)

    def test_suite_scenarios(self):
        doc = json.loads(self.run_script(
            "--json", "--suite", os.path.join(ROOT, "bench/gpu/suites.json"),
            "--suite_name", "full", "--skip_policies", ""))
        labels = [r["label"] for r in doc["scenarios"]]
        self.assertIn("decode batch 256 context 512", labels)
        self.assertIn("prefill batch 1 prompt 128", labels)
        self.assertEqual(len(labels), len(set(labels)))

    def test_bad_policy_is_an_error(self):
        out = subprocess.run([sys.executable, SCRIPT, "--policy",
                              "attn:last=150%"], capture_output=True,
                             text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("outside", out.stderr)


if __name__ == "__main__":
    unittest.main()
