#!/usr/bin/env python3
"""Hugging Face transformers eager baseline on Llama 2 7B shapes (bf16).

Random weights (shapes are what matter for speed). Measures, with CUDA
events after warm-up, medians over --rounds:
  - time to first token: prefill of N tokens and the argmax of the last row;
  - decode tokens/s at batch B after a context of C tokens (DynamicCache).
Writes JSON. Combinations whose KV cache cannot fit are skipped and listed.
"""
import argparse
import json
import statistics
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def llama2_7b():
    return LlamaConfig(hidden_size=4096, intermediate_size=11008,
                       num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, rms_norm_eps=1e-5)


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt_lens", default="128,512")
    parser.add_argument("--decode", default="512:1,8,64,256;2048:1,8,64")
    parser.add_argument("--decode_tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.set_default_dtype(torch.bfloat16)
    config = llama2_7b()
    config._attn_implementation = "eager"
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).eval()
    gen = torch.Generator(device="cuda").manual_seed(0)
    result = {"implementation": "transformers eager, bf16", "ttft": [],
              "decode": [], "skipped": []}

    with torch.no_grad():
        for n in [int(x) for x in args.prompt_lens.split(",")]:
            ids = torch.randint(3, 32000, (1, n), device="cuda", generator=gen)
            run = lambda: model(ids, use_cache=True).logits[:, -1].argmax(-1)
            run()
            times = [timed(run) for _ in range(args.rounds)]
            result["ttft"].append({"prompt_len": n,
                                   "seconds": statistics.median(times),
                                   "all_rounds": times})
            print(f"hf ttft@{n}: {statistics.median(times) * 1e3:.1f} ms")
        for group in args.decode.split(";"):
            context, batches = group.split(":")
            context = int(context)
            for b in [int(x) for x in batches.split(",")]:
                try:
                    ids = torch.randint(3, 32000, (b, context), device="cuda",
                                        generator=gen)
                    rates = []
                    for _ in range(args.rounds):
                        out = model(ids, use_cache=True)
                        cache = out.past_key_values
                        nxt = out.logits[:, -1:].argmax(-1)

                        def steps():
                            nonlocal cache, nxt
                            for _ in range(args.decode_tokens):
                                o = model(nxt, past_key_values=cache,
                                          use_cache=True)
                                cache = o.past_key_values
                                nxt = o.logits[:, -1:].argmax(-1)
                        rates.append(b * args.decode_tokens / timed(steps))
                        del out, cache
                    result["decode"].append({
                        "context": context, "batch": b,
                        "tokens_per_s": statistics.median(rates),
                        "all_rounds": rates})
                    print(f"hf decode ctx {context} batch {b}: "
                          f"{statistics.median(rates):.1f} tokens/s")
                except torch.OutOfMemoryError:
                    result["skipped"].append({"context": context, "batch": b,
                                              "reason": "out of memory"})
                    print(f"hf decode ctx {context} batch {b}: out of memory")
                torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
