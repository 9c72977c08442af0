#!/usr/bin/python3
"""Independent numpy reference of the Llama forward pass (Hugging Face
conventions), and a writer of random Hugging Face Llama checkpoints.

It shares no code with the C++ engine: the safetensors reader and writer, the
bf16 rounding and the forward pass are all written here from the public
format description and the `transformers` LlamaForCausalLM definition.

Subcommands
  make-model --out DIR --hidden H --intermediate I --layers L --heads NH
             --kv-heads NKV --vocab V --max-pos P --dtype f32|f16|bf16
             --shards S --seed N [--tie] [--rope-theta T] [--eps E]
      Writes DIR/config.json and the weights: model.safetensors (S == 1) or
      model-0000i-of-0000S.safetensors plus model.safetensors.index.json.
      Weights come from numpy.random.default_rng(seed) with scales larger
      than HF's initialiser so that every term visibly moves the logits:
      linear weights N(0, 1/in_features), embeddings N(0, 1), norm weights
      1 + N(0, 0.1^2).

  forward --model DIR --tokens 1,5,9 [--plan "1111;1101"]
          [--weights-as f32|f16|bf16] --out FILE
      Runs the causal forward pass over the tokens from position 0 and writes
      the logits of every position as little-endian float32, shape (T, V).
      PLAN is "A;F": A[l] == '1' runs attention at layer l, F[l] likewise the
      FFN; a skipped sublayer is the identity (its residual term is removed):
          h = x + Attn(RMSNorm(x))  if A[l] else x
          y = h + FFN(RMSNorm(h))   if F[l] else h
      Default: everything runs.
      --weights-as rounds every matrix (each 2-D tensor: embeddings,
      projections, lm_head; not the norm weights) from its stored value to
      that dtype, to nearest even, before computing in float64: the values an
      engine holds when it converts the weights at load.

  analyze --model DIR --tokens 1,5,9 [--tokens 1,7 ...] [--plan PLAN]
          --out FILE
      The redundancy measure of arXiv 2404.05741 (skipserve's AnalyzeLayers):
      for each layer l with input x, h = x + Attn(RMSNorm(x)) and
      y = h + FFN(RMSNorm(h)) (a skipped sublayer is the identity), the mean
      over every position of every token list of cos(x, h), cos(h, y) and
      cos(x, y), where cos(a, b) = a.b / (|a| |b|) (1 when both are zero, 0
      when one is). Each --tokens list runs as its own sequence from
      position 0. Writes JSON to FILE ('-' for stdout):
          {"tokens": N, "layers": [{"attention": a, "ffn": f, "layer": c}]}

Precision: stored weights are upcast exactly to float32 (bf16 via
uint16 << 16, f16 via numpy) and then to float64; the whole forward pass,
RoPE angles included, is computed in float64, i.e. more precisely than HF's
fp32 computation. The engine (fp32) is compared against it with a tolerance.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np

# ----------------------------------------------------------------- dtypes --

# safetensors dtype name -> (config.json torch_dtype, bytes per element)
DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2)}
CLI_DTYPE = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def f32_to_bf16_bits(x):
    """float32 array -> uint16 bf16 bits, round to nearest, ties to even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    lsb = (u >> 16) & 1
    rounded = ((u + 0x7FFF + lsb) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def bf16_bits_to_f32(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def encode(x, st_dtype):
    """float32 array -> raw little-endian bytes of the safetensors dtype."""
    if st_dtype == "F32":
        return x.astype("<f4").tobytes()
    if st_dtype == "F16":
        return x.astype("<f2").tobytes()
    return f32_to_bf16_bits(x).astype("<u2").tobytes()


def decode(raw, st_dtype, shape):
    """Raw bytes -> float32 array (exact widening)."""
    if st_dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif st_dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif st_dtype == "BF16":
        a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    else:
        raise ValueError("unsupported dtype " + st_dtype)
    return a.reshape(shape)


# ------------------------------------------------------------ safetensors --

def write_safetensors(path, tensors, st_dtype):
    """tensors: list of (name, float32 array). Header padded to 8 bytes."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors:
        raw = encode(arr, st_dtype)
        header[name] = {"dtype": st_dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    return offset


def read_safetensors(path):
    """-> {name: float32 array}."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = decode(body[begin:end], info["dtype"], info["shape"])
    return out


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(model_dir, "model.safetensors"))
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    weights = {}
    for shard in sorted(set(weight_map.values())):
        for name, arr in read_safetensors(os.path.join(model_dir, shard)).items():
            if weight_map.get(name) == shard:
                weights[name] = arr
    missing = set(weight_map) - set(weights)
    if missing:
        raise ValueError("index names tensors absent from shards: %s" % sorted(missing))
    return weights


# -------------------------------------------------------------- make-model --

def make_model(a):
    assert a.hidden % a.heads == 0 and a.heads % a.kv_heads == 0
    hd = a.hidden // a.heads
    assert hd % 2 == 0
    rng = np.random.default_rng(a.seed)
    H, I, V = a.hidden, a.intermediate, a.vocab

    def linear(out_f, in_f):
        return (rng.standard_normal((out_f, in_f)) / np.sqrt(in_f)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    tensors = [("model.embed_tokens.weight", rng.standard_normal((V, H)).astype(np.float32))]
    for i in range(a.layers):
        p = "model.layers.%d." % i
        tensors += [
            (p + "input_layernorm.weight", norm(H)),
            (p + "self_attn.q_proj.weight", linear(a.heads * hd, H)),
            (p + "self_attn.k_proj.weight", linear(a.kv_heads * hd, H)),
            (p + "self_attn.v_proj.weight", linear(a.kv_heads * hd, H)),
            (p + "self_attn.o_proj.weight", linear(H, a.heads * hd)),
            (p + "post_attention_layernorm.weight", norm(H)),
            (p + "mlp.gate_proj.weight", linear(I, H)),
            (p + "mlp.up_proj.weight", linear(I, H)),
            (p + "mlp.down_proj.weight", linear(H, I)),
        ]
    tensors.append(("model.norm.weight", norm(H)))
    if not a.tie:
        tensors.append(("lm_head.weight", linear(V, H)))

    st_dtype = CLI_DTYPE[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_act": "silu", "hidden_size": H, "intermediate_size": I,
        "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "max_position_embeddings": a.max_pos,
        "rms_norm_eps": a.eps, "rope_theta": a.rope_theta, "vocab_size": V,
        "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": bool(a.tie),
        "torch_dtype": DTYPES[st_dtype][0],
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    if a.shards == 1:
        write_safetensors(os.path.join(a.out, "model.safetensors"), tensors, st_dtype)
        return
    assert 1 <= a.shards <= len(tensors)
    # Contiguous, roughly equal runs of tensors per shard (none empty).
    bounds = [round(k * len(tensors) / a.shards) for k in range(a.shards + 1)]
    weight_map, total = {}, 0
    for k in range(a.shards):
        name = "model-%05d-of-%05d.safetensors" % (k + 1, a.shards)
        part = tensors[bounds[k]:bounds[k + 1]]
        total += write_safetensors(os.path.join(a.out, name), part, st_dtype)
        weight_map.update({t: name for t, _ in part})
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ----------------------------------------------------------------- forward --

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def attention(x, W, p, cfg, cos, sin):
    T = x.shape[0]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg["hidden_size"] // nh
    q = (x @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd).transpose(1, 0, 2)
    k = (x @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
    v = (x @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd).transpose(1, 0, 2)
    q = q * cos + rotate_half(q) * sin          # (heads, T, hd)
    k = k * cos + rotate_half(k) * sin
    group = nh // nkv                           # query head h reads kv head h // group
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    out = (probs @ v).transpose(1, 0, 2).reshape(T, nh * hd)
    return out @ W[p + "self_attn.o_proj.weight"].T


def ffn(x, W, p):
    gate = x @ W[p + "mlp.gate_proj.weight"].T
    up = x @ W[p + "mlp.up_proj.weight"].T
    silu = gate / (1.0 + np.exp(-gate))
    return (silu * up) @ W[p + "mlp.down_proj.weight"].T


def forward(cfg, W, tokens, run_attn, run_ffn, observe=None):
    """float64 logits (T, V) of every position; weights already float64.
    observe(l, x, h, y), when given, sees each layer's residual stream: its
    input x, h after the attention sublayer and y after the FFN, (T, H)."""
    L, eps = cfg["num_hidden_layers"], cfg["rms_norm_eps"]
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    T = len(tokens)
    inv_freq = 1.0 / (float(cfg.get("rope_theta", 10000.0)) ** (np.arange(0, hd, 2) / hd))
    angle = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    angle = np.concatenate([angle, angle], axis=-1)            # (T, hd)
    cos, sin = np.cos(angle), np.sin(angle)

    x = W["model.embed_tokens.weight"][np.asarray(tokens)]
    for l in range(L):
        p = "model.layers.%d." % l
        h = x
        if run_attn[l]:
            h = x + attention(rms_norm(x, W[p + "input_layernorm.weight"], eps), W, p, cfg, cos, sin)
        y = h
        if run_ffn[l]:
            y = h + ffn(rms_norm(h, W[p + "post_attention_layernorm.weight"], eps), W, p)
        if observe is not None:
            observe(l, x, h, y)
        x = y
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


def parse_plan(text, L):
    if not text:
        return [True] * L, [True] * L
    attn, ffn_ = text.split(";")
    if len(attn) != L or len(ffn_) != L or set(attn + ffn_) - {"0", "1"}:
        raise ValueError("plan %r does not fit %d layers" % (text, L))
    return [c == "1" for c in attn], [c == "1" for c in ffn_]


def round_to(x, dtype):
    """float32 array -> the same values rounded to dtype, as float32."""
    if dtype == "f16":
        with np.errstate(over="raise"):
            return x.astype(np.float16).astype(np.float32)
    if dtype == "bf16":
        return bf16_bits_to_f32(f32_to_bf16_bits(x))
    return x


def load_model(model_dir, weights_as=None):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    W = {}
    for k, v in read_weights(model_dir).items():
        if weights_as and v.ndim == 2:
            v = round_to(v.astype(np.float32), weights_as)
        W[k] = v.astype(np.float64)
    return cfg, W


def parse_tokens(text, cfg):
    tokens = [int(t) for t in text.split(",") if t.strip()]
    if not tokens or min(tokens) < 0 or max(tokens) >= cfg["vocab_size"]:
        raise ValueError("token ids must be in [0, vocab_size)")
    if len(tokens) > cfg["max_position_embeddings"]:
        raise ValueError("more tokens than max_position_embeddings")
    return tokens


def run_forward(a):
    cfg, W = load_model(a.model, a.weights_as)
    tokens = parse_tokens(a.tokens, cfg)
    run_attn, run_ffn = parse_plan(a.plan, cfg["num_hidden_layers"])
    logits = forward(cfg, W, tokens, run_attn, run_ffn)
    logits.astype("<f4").tofile(a.out)


def row_cosines(a, b):
    """cos of each row pair of (T, H) arrays; 1 when both rows are zero."""
    dot = np.sum(a * b, axis=-1)
    aa, bb = np.sum(a * a, axis=-1), np.sum(b * b, axis=-1)
    both_zero, one_zero = (aa == 0) & (bb == 0), (aa == 0) ^ (bb == 0)
    safe = np.where((aa == 0) | (bb == 0), 1.0, aa * bb)
    return np.where(both_zero, 1.0, np.where(one_zero, 0.0, dot / np.sqrt(safe)))


def run_analyze(a):
    cfg, W = load_model(a.model)
    L = cfg["num_hidden_layers"]
    run_attn, run_ffn = parse_plan(a.plan, L)
    sums = np.zeros((L, 3))   # attention, ffn, layer
    total = 0

    def observe(l, x, h, y):
        sums[l] += [row_cosines(x, h).sum(), row_cosines(h, y).sum(),
                    row_cosines(x, y).sum()]

    for text in a.tokens:
        tokens = parse_tokens(text, cfg)
        forward(cfg, W, tokens, run_attn, run_ffn, observe)
        total += len(tokens)
    means = sums / total
    result = {"tokens": total,
              "layers": [{"attention": float(m[0]), "ffn": float(m[1]),
                          "layer": float(m[2])} for m in means]}
    text = json.dumps(result, indent=1)
    if a.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--out", required=True)
    for flag in ("hidden", "intermediate", "layers", "heads", "kv-heads", "vocab"):
        m.add_argument("--" + flag, type=int, required=True)
    m.add_argument("--max-pos", type=int, default=2048)
    m.add_argument("--dtype", choices=sorted(CLI_DTYPE), default="f32")
    m.add_argument("--shards", type=int, default=1)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tie", action="store_true")
    m.add_argument("--rope-theta", type=float, default=10000.0)
    m.add_argument("--eps", type=float, default=1e-5)
    fw = sub.add_parser("forward")
    fw.add_argument("--model", required=True)
    fw.add_argument("--tokens", required=True)
    fw.add_argument("--plan", default="")
    fw.add_argument("--weights-as", choices=sorted(CLI_DTYPE))
    fw.add_argument("--out", required=True)
    an = sub.add_parser("analyze")
    an.add_argument("--model", required=True)
    an.add_argument("--tokens", action="append", required=True)
    an.add_argument("--plan", default="")
    an.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    {"make-model": make_model, "forward": run_forward,
     "analyze": run_analyze}[a.cmd](a)


if __name__ == "__main__":
    main(sys.argv[1:])
