#!/usr/bin/env python3
"""skipserve's logits against a reference on small random Llama models.

For each model variant (GQA with head_dim 128, MHA with head_dim 64) a random
model is written in bf16 and skipserve loads it (skipserve-bench
--parity_spec). Several sequences, each under its own skip policy, share
batches: prefill chunks of some with decode tokens of others, a sequence
that skips every attention sublayer (no KV at all), and at the end one
sequence decoding alone past 1024 tokens of context (few rows, long keys:
the split-keys attention path). Every position's logits are compared with
the reference's, row by row. Metric: the worst row's ||a - ref|| / ||ref||.
Thresholds: CUDA 3e-2 (bf16 activations and K/V), CPU 1e-3 (f32
throughout). Any non-finite logit, reference value or error fails.

References:
  transformers  LlamaForCausalLM in float32 from the same bf16 weights, with
                skipped sublayers' outputs replaced by zeros (forward hooks:
                h = x + 0), the model saved with save_pretrained;
  numpy         tests/reference/llama_ref.py: an independent float64
                implementation of the same equations (no torch needed).
--reference=auto takes transformers when it imports (and CUDA works), else
numpy; with transformers, numpy is checked too when numpy's reference script
is found. HF's own bf16 forward is reported as a yardstick.

--size=small (the emulated CI run, which checks the plumbing) shrinks the
models and sequences, keeping head_dim 128 and every skip kind but not the
long context (the emulated backend tests cover split keys).
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA_REF = os.path.join(HERE, "..", "..", "tests", "reference", "llama_ref.py")

THRESHOLDS = {"cuda": 3e-2, "cuda_prefill": 3e-2, "cpu": 1e-3}

VARIANTS = {
    "full": {
        "gqa_hd128": dict(hidden_size=512, intermediate_size=1376,
                          num_hidden_layers=4, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=1000),
        "mha_hd64": dict(hidden_size=256, intermediate_size=688,
                         num_hidden_layers=4, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=1000),
    },
    "small": {
        "gqa_hd128": dict(hidden_size=256, intermediate_size=512,
                          num_hidden_layers=4, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=256),
        "mha_hd64": dict(hidden_size=128, intermediate_size=256,
                         num_hidden_layers=4, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=256),
    },
}
MAX_POSITIONS = 2048


def sequences(size):
    """(policy, skipped {kind: layers}, length, chunks, start_step) for the
    4-layer models. Policies name layers explicitly, so the plan each one
    compiles to is known here without skipserve's parser."""
    # (length, chunks, start_step): prefill chunks of some sequences land in
    # steps where the others decode; the long one decodes last, alone.
    if size == "full":
        s0 = (1100, [512, 512] + [1] * 76, 30)
        s1 = (300, [200] + [1] * 100, 2)
        s2 = (260, [60, 100] + [1] * 50 + [50], 0)
        s3 = (40, [1] * 40, 3)
    else:
        # Short: the emulator runs attention as fibers on the CPU, and this
        # size only checks the plumbing (no split keys at 120 tokens).
        s0 = (120, [56, 56] + [1] * 8, 12)
        s1 = (60, [40] + [1] * 20, 2)
        s2 = (70, [30, 20] + [1] * 10 + [10], 0)
        s3 = (12, [1] * 12, 2)
    return [
        ("none", {}, *s0),
        ("attn:1,3", {"attn": [1, 3]}, *s1),
        ("ffn:0;layer:2", {"ffn": [0], "layer": [2]}, *s2),
        # Every attention sublayer skipped: the sequence stores no K/V.
        ("attn:0-3;ffn:3", {"attn": [0, 1, 2, 3], "ffn": [3]}, *s3),
    ]


def plan_bits(skipped, layers):
    attn = [True] * layers
    ffn = [True] * layers
    for l in skipped.get("attn", []) + skipped.get("layer", []):
        attn[l] = False
    for l in skipped.get("ffn", []) + skipped.get("layer", []):
        ffn[l] = False
    return attn, ffn


def bits_text(attn, ffn):
    return "".join("1" if a else "0" for a in attn) + ";" + \
        "".join("1" if f else "0" for f in ffn)


def load_llama_ref():
    if not os.path.exists(LLAMA_REF):
        return None
    spec = importlib.util.spec_from_file_location("llama_ref", LLAMA_REF)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(got, ref):
    """Worst row's relative L2 error; inf (a failure) when anything is not
    finite. numpy's max propagates NaN, unlike Python's max()."""
    out = {}
    bad_got = ~np.isfinite(got)
    bad_ref = ~np.isfinite(ref)
    if bad_got.any():
        rows = np.where(bad_got.any(axis=1))[0]
        out.update(error=math.inf, nonfinite_values=int(bad_got.sum()),
                   nonfinite_rows=int(rows.size), first_nonfinite_row=int(rows[0]))
        return out
    if bad_ref.any():
        out.update(error=math.inf, reference_nonfinite_values=int(bad_ref.sum()))
        return out
    num = np.linalg.norm(got.astype(np.float64) - ref, axis=1)
    den = np.linalg.norm(ref, axis=1)
    rel = num / np.maximum(den, 1e-30)
    worst = np.max(rel)
    out.update(error=float(worst), worst_row=int(np.argmax(rel)))
    return out


def passes(error, threshold):
    # A NaN compares false with everything: test for finiteness explicitly.
    return error is not None and math.isfinite(error) and error < threshold


# ------------------------------------------------------------ references --

class TransformersReference:
    name = "transformers"

    def __init__(self):
        import torch
        import transformers
        if not hasattr(transformers, "LlamaForCausalLM"):
            raise ImportError("transformers has no LlamaForCausalLM")
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        self.torch = torch

    def make_model(self, shape, path, seed):
        torch = self.torch
        from transformers import LlamaConfig, LlamaForCausalLM
        torch.manual_seed(seed)
        config = LlamaConfig(max_position_embeddings=MAX_POSITIONS,
                             rms_norm_eps=1e-5, rope_theta=10000.0,
                             tie_word_embeddings=False, hidden_act="silu",
                             **shape)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(1 + 0.05 * torch.randn_like(p))
        model.save_pretrained(path, safe_serialization=True)
        # Keep config.json in the plain form skipserve reads (newer
        # transformers write RoPE settings as rope_parameters).
        cfg_path = os.path.join(path, "config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        for key in ("rope_parameters", "rope_scaling"):
            value = cfg.pop(key, None)
            if value not in (None, {}) and \
                    value.get("rope_type", "default") != "default":
                raise RuntimeError(f"unexpected {key}: {value}")
        cfg["rope_theta"] = 10000.0
        cfg["torch_dtype"] = "bfloat16"
        cfg.pop("dtype", None)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.model = model

    def logits(self, tokens, attn, ffn, dtype=None):
        torch = self.torch
        m = self.model.to(dtype or torch.float32).cuda().eval()
        handles = []

        def zero_attention(module, args, output):
            if isinstance(output, tuple):
                return (torch.zeros_like(output[0]),) + tuple(output[1:])
            return torch.zeros_like(output)

        def zero_ffn(module, args, output):
            return torch.zeros_like(output)

        for l, layer in enumerate(m.model.layers):
            if not attn[l]:
                handles.append(layer.self_attn.register_forward_hook(
                    zero_attention))
            if not ffn[l]:
                handles.append(layer.mlp.register_forward_hook(zero_ffn))
        try:
            with torch.no_grad():
                ids = torch.tensor([tokens], device="cuda")
                out = m(ids, use_cache=False).logits[0]
                return out.double().cpu().numpy()
        finally:
            for h in handles:
                h.remove()


class NumpyReference:
    name = "numpy"

    def __init__(self, llama_ref):
        if llama_ref is None:
            raise RuntimeError(f"{LLAMA_REF} not found")
        self.ref = llama_ref

    def make_model(self, shape, path, seed):
        from types import SimpleNamespace
        self.ref.make_model(SimpleNamespace(
            out=path, hidden=shape["hidden_size"],
            intermediate=shape["intermediate_size"],
            layers=shape["num_hidden_layers"],
            heads=shape["num_attention_heads"],
            kv_heads=shape["num_key_value_heads"],
            vocab=shape["vocab_size"], max_pos=MAX_POSITIONS, dtype="bf16",
            shards=1, seed=seed, tie=False, rope_theta=10000.0, eps=1e-5))
        self.load(path)

    def load(self, path):
        self.cfg, self.W = self.ref.load_model(path)

    def logits(self, tokens, attn, ffn):
        return self.ref.forward(self.cfg, self.W, tokens, attn, ffn)


# ------------------------------------------------------------- skipserve --

def skipserve_logits(tool, model_dir, device, seqs, one_step, workdir, tag):
    spec = {
        "model": model_dir, "device": device,
        "logits_out": os.path.join(workdir, f"{tag}.f32"),
        "info_out": os.path.join(workdir, f"{tag}.json"),
        "sequences": [
            {"tokens": s["tokens"], "policy": s["policy"],
             "chunks": [len(s["tokens"])] if one_step else s["chunks"],
             "start_step": 0 if one_step else s["start_step"]}
            for s in seqs],
    }
    spec_path = os.path.join(workdir, f"{tag}-spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    start = time.time()
    run = subprocess.run([tool, f"--parity_spec={spec_path}"],
                         capture_output=True, text=True)
    seconds = time.time() - start
    if run.returncode != 0:
        raise RuntimeError(f"skipserve-bench --parity_spec ({device}) exited "
                           f"{run.returncode}: {run.stderr.strip()[-2000:]}")
    with open(spec["info_out"]) as f:
        info = json.load(f)
    flat = np.fromfile(spec["logits_out"], dtype=np.float32)
    vocab = info["vocab"]
    out, row = [], 0
    for s in seqs:
        n = len(s["tokens"])
        out.append(flat[row * vocab:(row + n) * vocab].reshape(n, vocab))
        row += n
    if row * vocab != flat.size:
        raise RuntimeError(f"{tag}: {flat.size} logits, expected {row * vocab}")
    return out, info, seconds


def step_summary(info, seqs, heads, num_sms=132):
    """What the steps exercised: mixed prefill/decode steps, and steps a
    device of num_sms multiprocessors would run with split keys
    (engine/cuda/launch_plan.h: rows * heads < 2 * SMs, >= 512 keys)."""
    mixed = split = 0
    for step in info["steps"]:
        kinds = {"decode" if s["tokens"] == 1 else "prefill"
                 for s in step["sequences"]}
        mixed += len(kinds) == 2
        keys = max(s["start"] + s["tokens"] for s in step["sequences"])
        split += step["rows"] * heads < 2 * num_sms and keys >= 512
    return {"steps": len(info["steps"]),
            "max_rows": max(s["rows"] for s in info["steps"]),
            "mixed_prefill_decode_steps": mixed,
            "split_key_steps_on_132_sms": split}


class ReferenceFailed(Exception):
    """The reference implementation (not skipserve) raised."""


def run_variant(args, name, shape, vi, rng, primary, secondary, runs, result):
    """One model: the references' logits, then every skipserve run compared
    with them. Returns (variant record, passed)."""
    variant = {"shape": shape, "reference": primary.name, "runs": {}}
    layers = shape["num_hidden_layers"]
    ok = True
    with tempfile.TemporaryDirectory() as path:
        model_dir = os.path.join(path, "model")
        os.makedirs(model_dir)
        seqs = []
        for policy, skipped, n, chunks, start in sequences(args.size):
            attn, ffn = plan_bits(skipped, layers)
            tokens = [int(t) for t in
                      rng.integers(3, shape["vocab_size"], size=n)]
            assert sum(chunks) == n
            seqs.append({"policy": policy, "tokens": tokens,
                         "chunks": chunks, "start_step": start,
                         "attn": attn, "ffn": ffn})
        try:
            primary.make_model(shape, model_dir, seed=vi + 1)
            refs = {primary.name: [primary.logits(s["tokens"], s["attn"],
                                                  s["ffn"]) for s in seqs]}
            if primary.name == "transformers":
                s0 = seqs[0]
                bf16 = primary.logits(s0["tokens"], s0["attn"], s0["ffn"],
                                      dtype=primary.torch.bfloat16)
                variant["hf_bf16_yardstick"] = compare(
                    bf16, refs["transformers"][0])["error"]
        except Exception as e:
            raise ReferenceFailed() from e
        if secondary:
            secondary.load(model_dir)
            refs["numpy"] = [secondary.logits(s["tokens"], s["attn"],
                                              s["ffn"]) for s in seqs]
            # np.max, not max(): NaN must not be dropped.
            variant["numpy_vs_transformers"] = float(np.max([
                compare(refs["numpy"][i], refs["transformers"][i])["error"]
                for i in range(len(seqs))]))
        for tag, device, one_step in runs:
            run_result = {"sequences": []}
            variant["runs"][tag] = run_result
            try:
                got, info, seconds = skipserve_logits(
                    args.bench_tool, model_dir, device, seqs, one_step, path,
                    tag)
            except Exception as e:  # noqa: BLE001
                run_result["error"] = str(e)
                result["failures"].append(f"{name} {tag}: {e}")
                print(f"{name} {tag}: FAIL: {e}")
                ok = False
                continue
            run_result["device"] = info["device"]
            run_result["seconds"] = seconds
            run_result.update(step_summary(info, seqs,
                                           shape["num_attention_heads"]))
            worst = 0.0
            for i, s in enumerate(seqs):
                expected = bits_text(s["attn"], s["ffn"])
                entry = {"policy": s["policy"], "tokens": len(s["tokens"]),
                         "plan": info["sequences"][i]["plan"]}
                seq_ok = True
                if entry["plan"] != expected:
                    seq_ok = False
                    entry["plan_error"] = f"expected {expected}"
                for ref_name, ref in refs.items():
                    c = compare(got[i], ref[i])
                    entry[ref_name] = c
                    seq_ok = seq_ok and passes(c["error"], THRESHOLDS[tag])
                    err = c["error"]
                    worst = max(worst, err) if math.isfinite(err) \
                        else math.inf
                entry["passed"] = seq_ok
                run_result["sequences"].append(entry)
                if not seq_ok:
                    ok = False
                    result["failures"].append(
                        f"{name} {tag} seq {i} ({s['policy']}): "
                        + json.dumps(entry))
            run_result["worst"] = worst
            run_result["passed"] = all(
                e["passed"] for e in run_result["sequences"])
            print(f"{name} {tag} [{info['device']}]: worst row rel L2 "
                  f"{worst:.2e} (threshold {THRESHOLDS[tag]:.0e}) over "
                  f"{len(seqs)} sequences, {run_result['steps']} steps "
                  f"(max {run_result['max_rows']} rows; "
                  f"{run_result['mixed_prefill_decode_steps']} mixed "
                  f"prefill/decode; "
                  f"{run_result['split_key_steps_on_132_sms']} split-key"
                  f" on 132 SMs), {seconds:.1f} s: "
                  f"{'PASS' if run_result['passed'] else 'FAIL'}")
        if "hf_bf16_yardstick" in variant:
            print(f"{name} hf_bf16 (yardstick): "
                  f"{variant['hf_bf16_yardstick']:.2e}")
        if "numpy_vs_transformers" in variant:
            print(f"{name} numpy vs transformers fp32: "
                  f"{variant['numpy_vs_transformers']:.2e}")
    return variant, ok


# ------------------------------------------------------------------ main --

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench_tool", required=True,
                        help="skipserve-bench (takes --parity_spec)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--reference", choices=("auto", "transformers", "numpy"),
                        default="auto")
    parser.add_argument("--devices", default="cuda,cpu")
    parser.add_argument("--size", choices=("full", "small"), default="full")
    args = parser.parse_args()

    llama_ref = load_llama_ref()
    primary, notes = None, []
    if args.reference in ("auto", "transformers"):
        try:
            primary = TransformersReference()
        except Exception as e:  # ImportError, no CUDA, ...
            if args.reference == "transformers":
                raise
            notes.append(f"transformers not used: {type(e).__name__}: {e}")
            print(notes[-1])
    if primary is None:
        primary = NumpyReference(llama_ref)
    secondary = None
    if primary.name == "transformers" and llama_ref is not None:
        secondary = NumpyReference(llama_ref)
    print(f"reference: {primary.name}"
          + (" (+ numpy)" if secondary else ""))
    if os.environ.get("STEP_NOTE"):  # run.sh's step note
        with open(os.environ["STEP_NOTE"], "a") as f:
            f.write(f"reference {primary.name}"
                    + (" + numpy" if secondary else "")
                    + "".join(f"; {n}" for n in notes) + "\n")

    devices = [d for d in args.devices.split(",") if d]
    runs = []
    for d in devices:
        runs.append((d, d, False))
        if d == "cuda":
            runs.append(("cuda_prefill", d, True))
    result = {"reference": primary.name, "size": args.size,
              "thresholds": THRESHOLDS, "notes": notes, "variants": {},
              "failures": []}
    ok = True
    for vi, (name, shape) in enumerate(VARIANTS[args.size].items()):
        # The same tokens whichever reference ends up used.
        rng = np.random.default_rng(vi)
        try:
            variant, variant_ok = run_variant(args, name, shape, vi, rng,
                                              primary, secondary, runs, result)
        except ReferenceFailed as e:
            if args.reference != "auto" or primary.name != "transformers":
                raise
            # A broken transformers harness (this script's problem, not the
            # engine's) must not hide the engine's parity: say so loudly and
            # compare against the numpy reference alone.
            note = (f"{name}: the transformers reference failed "
                    f"({e.__cause__!r}); compared with numpy alone")
            print(note)
            traceback.print_exception(e.__cause__)
            result["notes"].append(note)
            result["transformers_failed"] = True
            if os.environ.get("STEP_NOTE"):
                with open(os.environ["STEP_NOTE"], "a") as f:
                    f.write(note + "\n")
            rng = np.random.default_rng(vi)
            try:
                variant, variant_ok = run_variant(
                    args, name, shape, vi, rng, NumpyReference(llama_ref),
                    None, runs, result)
            except Exception as e2:  # noqa: BLE001
                variant, variant_ok = {"error": traceback.format_exc()}, False
                result["failures"].append(f"{name}: {type(e2).__name__}: {e2}")
        except Exception as e:  # noqa: BLE001
            variant, variant_ok = {"error": traceback.format_exc()}, False
            result["failures"].append(f"{name}: {type(e).__name__}: {e}")
            print(f"{name}: FAIL: {type(e).__name__}: {e}")
            traceback.print_exc()
        result["variants"][name] = variant
        ok = ok and variant_ok
    result["passed"] = ok
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print("hf_parity:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
