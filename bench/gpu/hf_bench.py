#!/usr/bin/env python3
"""Hugging Face transformers eager baseline on Llama 2 7B shapes (bf16).

Random weights (shapes are what matter for speed), built once, on the
device. Measures, with device synchronisation around each timing, medians
over --rounds:
  - time to first token: prefill of N tokens and the argmax of the last row;
  - decode tokens/s at batch B after a context of C tokens (DynamicCache):
    the B contexts are prefilled once, in one forward, and every round
    decodes from the same context again (the cache is cropped back to C
    tokens between rounds).
Each result is appended to --out (JSON lines) as soon as it is measured;
shapes whose memory does not fit are recorded as skipped, a failing shape
as an error, and the rest go on. --deadline_s stops starting new work.
Exit 75 (run.sh's "skipped") when torch, transformers or CUDA is missing.
"""
import argparse
import json
import os
import statistics
import sys
import time
import traceback

START = time.time()


def note(text):
    """run.sh's step note (bench/gpu/run.sh): why a step was skipped."""
    path = os.environ.get("STEP_NOTE")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


def emit(out, record):
    record["t"] = round(time.time() - START, 3)
    out.write(json.dumps(record) + "\n")
    out.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt_lens", default="128,512")
    parser.add_argument("--decode", default="512:1,8,64,256;2048:1,8,64")
    parser.add_argument("--decode_tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--deadline_s", type=float, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    out = open(args.out, "a")
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
        import transformers
    except Exception as e:  # noqa: BLE001
        reason = f"torch/transformers not importable: {type(e).__name__}: {e}"
        emit(out, {"type": "skipped", "reason": reason})
        print(f"hf_bench skipped: {reason}")
        note(reason)
        return 75
    if not torch.cuda.is_available():
        emit(out, {"type": "skipped", "reason": "torch sees no CUDA device"})
        print("hf_bench skipped: torch sees no CUDA device")
        note("torch sees no CUDA device")
        return 75

    def past_deadline():
        return args.deadline_s > 0 and time.time() - START > args.deadline_s

    def timed(fn):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    torch.set_default_dtype(torch.bfloat16)
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008,
                         num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32000,
                         max_position_embeddings=4096, rms_norm_eps=1e-5)
    config._attn_implementation = "eager"
    t0 = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    torch.cuda.synchronize()
    emit(out, {"type": "meta", "implementation": "transformers eager, bf16",
               "torch": torch.__version__,
               "transformers": transformers.__version__,
               "gpu": torch.cuda.get_device_name(0),
               "build_seconds": time.time() - t0,
               "rounds": args.rounds, "decode_tokens": args.decode_tokens})
    gen = torch.Generator(device="cuda").manual_seed(0)
    errors = 0

    with torch.no_grad():
        for n in [int(x) for x in args.prompt_lens.split(",") if x]:
            if past_deadline():
                emit(out, {"type": "skipped", "what": f"ttft@{n}",
                           "reason": "deadline"})
                continue
            try:
                ids = torch.randint(3, 32000, (1, n), device="cuda",
                                    generator=gen)
                run = lambda: model(ids, use_cache=True).logits[:, -1].argmax(-1)  # noqa: E731
                run()
                times = [timed(run) for _ in range(args.rounds)]
                emit(out, {"type": "ttft", "prompt_len": n,
                           "seconds": statistics.median(times),
                           "all_rounds": times})
                print(f"hf ttft@{n}: {statistics.median(times) * 1e3:.1f} ms")
            except Exception as e:  # noqa: BLE001
                errors += 1
                emit(out, {"type": "error", "what": f"ttft@{n}",
                           "message": f"{type(e).__name__}: {e}"})
                traceback.print_exc()
            torch.cuda.empty_cache()
        for group in args.decode.split(";"):
            context, batches = group.split(":")
            context = int(context)
            for b in [int(x) for x in batches.split(",") if x]:
                what = {"context": context, "batch": b}
                if past_deadline():
                    emit(out, {"type": "skipped", **what, "reason": "deadline"})
                    continue
                cache = out_prefill = None
                try:
                    ids = torch.randint(3, 32000, (b, context), device="cuda",
                                        generator=gen)
                    prefill_s = time.perf_counter()
                    out_prefill = model(ids, use_cache=True)
                    torch.cuda.synchronize()
                    prefill_s = time.perf_counter() - prefill_s
                    cache = out_prefill.past_key_values
                    first = out_prefill.logits[:, -1:].argmax(-1)
                    del out_prefill
                    rates = []
                    for r in range(args.rounds + 1):  # round 0 warms up
                        if r > 0 and past_deadline():
                            break
                        if r > 0 and hasattr(cache, "crop"):
                            cache.crop(context)
                        elif r > 0:  # no crop(): prefill again (untimed)
                            cache = None
                            cache = model(ids, use_cache=True).past_key_values
                        nxt = first

                        def steps():
                            nonlocal nxt
                            for _ in range(args.decode_tokens):
                                o = model(nxt, past_key_values=cache,
                                          use_cache=True)
                                nxt = o.logits[:, -1:].argmax(-1)
                        seconds = timed(steps)
                        if r > 0:
                            rates.append(b * args.decode_tokens / seconds)
                    if rates:
                        emit(out, {"type": "decode", **what,
                                   "tokens_per_s": statistics.median(rates),
                                   "all_rounds": rates,
                                   "prefill_seconds": prefill_s,
                                   "partial": len(rates) < args.rounds})
                        print(f"hf decode ctx {context} batch {b}: "
                              f"{statistics.median(rates):.1f} tokens/s")
                    else:
                        emit(out, {"type": "skipped", **what,
                                   "reason": "deadline"})
                except torch.OutOfMemoryError:
                    emit(out, {"type": "skipped", **what,
                               "reason": "out of memory"})
                    print(f"hf decode ctx {context} batch {b}: out of memory")
                except Exception as e:  # noqa: BLE001
                    errors += 1
                    emit(out, {"type": "error", **what,
                               "message": f"{type(e).__name__}: {e}"})
                    traceback.print_exc()
                cache = None
                torch.cuda.empty_cache()
    emit(out, {"type": "end", "errors": errors})
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
