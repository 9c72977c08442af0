#!/usr/bin/env python3
"""skipserve against Hugging Face transformers on random Llama models.

For a GQA and an MHA model: a random LlamaForCausalLM (norm weights
perturbed so they matter) is saved in bf16 with save_pretrained; skipserve
loads that directory (skipserve-logits, CUDA and CPU, the CUDA run both in one
prefill step and one token per step) and its logits are compared with the
model's own logits computed in float32 from the same bf16 weights. Metric:
the worst row's ||a - ref|| / ||ref||. Thresholds: CUDA 3e-2 (bf16
activations and K/V), CPU 1e-3 (f32 throughout). The same metric for HF's
own bf16 forward is reported as a yardstick.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

VARIANTS = {
    "gqa": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=2),
    "mha": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=4),
}
THRESHOLDS = {"cuda": 3e-2, "cuda_decode": 3e-2, "cpu": 1e-3}


def make_model(shape, path, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=1000, max_position_embeddings=512,
                         rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, hidden_act="silu", **shape)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.05 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    # Keep config.json in the plain form skipserve reads (newer transformers
    # write RoPE settings as rope_parameters).
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    for key in ("rope_parameters", "rope_scaling"):
        value = cfg.pop(key, None)
        if value not in (None, {}) and value.get("rope_type", "default") != "default":
            sys.exit(f"unexpected {key}: {value}")
    cfg["rope_theta"] = 10000.0
    cfg["torch_dtype"] = "bfloat16"
    cfg.pop("dtype", None)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
    return model


def reference_logits(model, tokens, dtype):
    m = model.to(dtype).cuda().eval()
    with torch.no_grad():
        ids = torch.tensor([tokens], device="cuda")
        return m(ids).logits[0].float().cpu().numpy()


def worst_rel(a, ref):
    return float(max(np.linalg.norm(a[i] - ref[i]) / np.linalg.norm(ref[i])
                     for i in range(ref.shape[0])))


def skipserve_logits(tool, path, tokens, device, chunk, vocab):
    with tempfile.NamedTemporaryFile(suffix=".f32") as out:
        subprocess.run([tool, f"--model={path}", f"--device={device}",
                        "--tokens=" + ",".join(map(str, tokens)),
                        f"--chunk={chunk}", f"--out={out.name}"], check=True)
        return np.fromfile(out.name, dtype=np.float32).reshape(-1, vocab)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logits_tool", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results, ok = {}, True
    rng = np.random.default_rng(0)
    for name, shape in VARIANTS.items():
        with tempfile.TemporaryDirectory() as path:
            model = make_model(shape, path, seed=len(results) + 1)
            tokens = [int(t) for t in rng.integers(3, 1000, size=96)]
            ref = reference_logits(model, tokens, torch.float32)
            hf_bf16 = reference_logits(model, tokens, torch.bfloat16)
            errors = {"hf_bf16": worst_rel(hf_bf16, ref)}
            for key, device, chunk in (("cuda", "cuda", 0),
                                       ("cuda_decode", "cuda", 1),
                                       ("cpu", "cpu", 0)):
                got = skipserve_logits(args.logits_tool, path, tokens, device,
                                       chunk, 1000)
                errors[key] = worst_rel(got, ref)
                passed = errors[key] < THRESHOLDS[key]
                ok = ok and passed
                print(f"{name} {key}: worst row rel L2 {errors[key]:.2e} "
                      f"(threshold {THRESHOLDS[key]:.0e}) "
                      f"{'PASS' if passed else 'FAIL'}")
            print(f"{name} hf_bf16 (yardstick): {errors['hf_bf16']:.2e}")
            results[name] = errors
    results["thresholds"] = THRESHOLDS
    results["passed"] = ok
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
