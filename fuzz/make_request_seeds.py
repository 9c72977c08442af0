"""Writes the seed corpus of request_validation_fuzzer:
corpus/request_validation_fuzzer/<name>, each one byte choosing the message
(0 GenerateRequest, 1 ScoreRequest, 2 PolicySelector) and its wire bytes.

    /usr/bin/python3 fuzz/make_request_seeds.py

Needs protoc and Debian's python3-protobuf. The seeds are committed; run
this again only to change them.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    out = os.path.join(HERE, "corpus", "request_validation_fuzzer")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["protoc", "-I" + os.path.join(ROOT, "proto"),
                        "--python_out=" + tmp,
                        os.path.join(ROOT, "proto", "skipserve", "v1",
                                     "inference.proto")], check=True)
        sys.path.insert(0, tmp)
        from skipserve.v1 import inference_pb2 as pb

        def write(name, kind, message):
            with open(os.path.join(out, name), "wb") as f:
                f.write(bytes([kind]) + message.SerializeToString())

        g = pb.GenerateRequest(prompt="Once upon a time",
                               sampling=pb.SamplingParams(max_tokens=16))
        write("generate_prompt", 0, g)
        g = pb.GenerateRequest(prompt_token_ids=[1, 5, 9, 1023],
                               sampling=pb.SamplingParams(
                                   max_tokens=8, temperature=0.8, top_p=0.9,
                                   top_k=40, seed=7, stop=["\n", "."]),
                               logprobs=True, request_id="r-1")
        g.policy.spec = "attn:last=33%"
        write("generate_ids_spec", 0, g)
        g = pb.GenerateRequest(prompt="The sky is")
        g.policy.name = "fast"
        write("generate_named", 0, g)
        g = pb.GenerateRequest(prompt="Hello world")
        g.policy.experiment = "ab"
        g.policy.routing_key = "user-42"
        write("generate_experiment", 0, g)
        g = pb.GenerateRequest(prompt="Inline")
        g.policy.inline.attention_layers.extend([5, 6, 7])
        g.policy.inline.ffn_layers.append(7)
        g.policy.inline.rules.add(kind=pb.SkipRule.LAYER, last_fraction=0.25)
        write("generate_inline", 0, g)
        s = pb.ScoreRequest(context="The sky is",
                            continuations=[" blue", " green"],
                            request_id="s-1", isolated=True)
        s.policy.spec = "ffn:last=10%"
        write("score", 1, s)
        sel = pb.PolicySelector(spec="attn:20-31;ffn:30,31")
        write("selector_spec", 2, sel)
        sel = pb.PolicySelector(experiment="ab")
        write("selector_experiment", 2, sel)
        sel = pb.PolicySelector()
        sel.inline.layers.extend([0, 7])
        write("selector_inline", 2, sel)


if __name__ == "__main__":
    main()
