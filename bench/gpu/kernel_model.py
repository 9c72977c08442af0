#!/usr/bin/python3
"""A per-kernel byte/FLOP MODEL of one CUDA forward step (not a measurement).

    kernel_model.py [--preset llama2-7b | --model synthetic:NAME[:...] |
                     --config config.json] [--policy POLICY]
                    [--phase decode|prefill] [--batch B] [--context C]
                    [--prompt_len N] [--scenario SPEC]...
                    [--suite suites.json --suite_name NAME]
                    [--bandwidth_gbs 4800] [--tflops 989] [--fp32_tflops 67]
                    [--host_link_gbs 64] [--launch_us 2] [--num_sms 132]
                    [--from_bench FILE.jsonl]... [--json] [--json_out FILE]

For a model shape, a skip policy and one or more scenarios (a decode step of
B sequences at context C, or the prefill of B prompts of N tokens after C
cached ones), it walks the launch structure of engine/cuda/cuda_sublayers.cc
(EnqueueStep and Forward) and prints, per kernel: launches per step, bytes
read + written in device memory (weights, activations, KV cache, logits),
FLOPs, the time each would take at the given bandwidth and FLOP rate, the
bound (memory or compute), totals and the predicted tokens/s. Then the
skip-policy predictions the GPU check's grid needs: the byte (decode) and
FLOP (prefill) ratios of attn/ffn/layer skips of the last 10/25/33% of the
layers against none, and the logits bytes copied to the host per step
(logit rows x vocab x 4).

The step as the backend runs it (one policy for every sequence, so every
running sublayer runs on all rows, dense):
  H2D index upload (LaunchPlan::ints: the ranges that changed since the
    last step, cuda/ints_upload.h; all of it at prefill)
  EmbeddingGather
  per layer whose attention runs (rows m):
    RmsNorm (only when not fused into the previous residual add)
    QKV: gemv.cu for m <= 16 rows with RoPE and the K/V cache write fused
      into its epilogue; above, a cuBLAS GEMM (engine/cuda/gemm.cc) and
      RopeKvWrite
    PagedAttention, one launch per run of one-token sequences, + its
      CombineSplits launch when AttentionSplits (launch_plan.cc) gives > 1
    PrefillAttention, one launch for all tiles of <= 32 rows of the
      multi-token sequences
    Wo and the residual add, with the next running sublayer's norm when it
      runs on the same rows: for m <= 16 rows one gemv.cu launch with the
      add and the norm in its epilogue (gemv.h kAddResidualRmsNorm); above,
      a cuBLAS GEMM and AddResidualRmsNorm
  per layer whose FFN runs: [RmsNorm], gate|up GEMV with the SiLU-mul
    epilogue (m <= 16) or cuBLAS GEMM + SiluMul, down and the residual add
    (as Wo's)
  final RmsNorm (unless fused) and the LM head GEMM over the logit rows
  D2H logits copy (logit rows x vocab x 4 bytes, over the host link); with
    --logits greedy (Backend::ForwardSample, all-greedy steps) instead the
    GreedyTokens kernel (engine/cuda/sampling.h: argmax and log-prob on
    the device) and a D2H copy of 8 bytes per logit row
Decode-only steps replay this as a CUDA graph (step_graphs.h): the same
kernels, so the same bytes; only their launch cost differs (see below).

Each kernel's time is max(bytes / bandwidth, FLOPs / rate) + launches x
--launch_us. cuBLAS GEMMs run at the bf16 tensor-core rate (--tflops);
gemv.cu, the attention kernels and the elementwise kernels use fp32 FMAs on
the CUDA cores (--fp32_tflops). The two copies run at --host_link_gbs.
Kernels on the one stream do not overlap; the step's time is their sum.
Defaults are the H200 SXM's nominal figures (HBM3e 4800 GB/s, 989 dense
bf16 TFLOP/s, 67 fp32 TFLOP/s, PCIe 5.0 x16 64 GB/s per direction, 132
SMs), labelled nominal; --from_bench takes the copy bandwidth (and the SM
count) skipserve-bench measured and wrote into its results' meta line.

What the model counts: every byte a kernel must move at least once
(weights read once per step, activations and indices read and written once,
K/V read once per KV head, once per row for decode and once per tile of
rows for prefill; the GEMV's x and a GQA group's repeated K/V reads are
assumed to hit in cache), and 2 FLOPs per multiply-add (plus a few per
element for norms, RoPE and SiLU; softmax exponentials are not counted).

What it omits: caches and L2 reuse beyond the above (a weight matrix never
fits in the 50 MB L2 across steps; the GEMV re-reads x per warp from L1/L2;
cuBLAS re-reads tiles of x and w), cuBLAS's choice of kernel, split-K
reductions and tile quantisation at odd shapes, partial waves and tail
effects (a launch of few blocks cannot reach full bandwidth: attention at
batch 1 is 32-64 blocks on 132 SMs), the bf16 unpacking integer
instructions of gemv.cu, launch and graph overheads other than the one
per-launch constant (default 2 us, an assumption), the host's work (the
launch plan, the pinned-buffer copies, sampling) and its synchronisation,
mixed batches of several policies, and prefill chunking by the scheduler (a
prefill scenario is one step). Use it for ratios and for "how far from the
roofline", not as a prediction of absolute speed.

Standard library only (runs under /usr/bin/python3).
"""
import argparse
import json
import math
import sys

# --- Model shapes ------------------------------------------------------------

# engine/model/synthetic.cc's presets: hidden, intermediate, layers, heads,
# kv heads, vocab, tied embeddings.
PRESETS = {
    "tiny": (64, 176, 4, 4, 2, 512, False),
    "llama2-110m": (768, 2048, 12, 12, 12, 32000, True),
    "llama2-7b": (4096, 11008, 32, 32, 32, 32000, False),
    "llama2-13b": (5120, 13824, 40, 40, 40, 32000, False),
    "llama2-70b": (8192, 28672, 80, 64, 8, 32000, False),
}

WEIGHT_BYTES = 2  # bf16 projections and embeddings (cuda_weights.h)
NORM_BYTES = 4    # norm weights stay fp32 on the device (cuda_weights.h)
KV_BYTES = 2      # bf16 KV cache
X_BYTES = 4       # fp32 residual stream (kernels.h)
ACT_BYTES = 2     # bf16 GEMM inputs: normed rows, attention output, SwiGLU
OUT_BYTES = 4     # fp32 GEMM outputs
INT_BYTES = 4     # int32 indices

MAX_GEMV_ROWS = 16      # gemv.h kMaxGemvRows
PREFILL_TILE_ROWS = 32  # launch_plan.h kPrefillTileRows
INTS_UPLOAD_MAX_COPIES = 32  # ints_diff.h IntsDiffOptions::max_copies
DEFAULT_KV_BLOCK = 16   # BackendOptions::kv_block_size

NOMINAL = {
    "bandwidth_gbs": 4800.0,  # H200 SXM HBM3e, nominal
    "tflops": 989.0,          # H200 SXM dense bf16 tensor, nominal
    "fp32_tflops": 67.0,      # H200 SXM fp32 CUDA cores, nominal
    "host_link_gbs": 64.0,    # PCIe 5.0 x16, one direction, nominal
    "num_sms": 132,
}
DEFAULT_LAUNCH_US = 2.0  # assumed per-launch cost (a graph node's is ~1-2 us)

SKIP_GRID = [f"{k}:last={p}%" for k in ("attn", "ffn", "layer")
             for p in (10, 25, 33)]


class Shape:
    def __init__(self, hidden, inter, layers, heads, kv_heads, vocab, tied,
                 name):
        if hidden % heads or heads % kv_heads:
            raise ValueError(f"{name}: hidden {hidden}, heads {heads}, kv "
                             f"heads {kv_heads} do not divide")
        self.hidden, self.inter, self.layers = hidden, inter, layers
        self.heads, self.kv_heads, self.vocab = heads, kv_heads, vocab
        self.tied, self.name = tied, name
        self.head_dim = hidden // heads
        self.q_dim = heads * self.head_dim
        self.kv_dim = kv_heads * self.head_dim

    def to_json(self):
        return {"name": self.name, "hidden": self.hidden,
                "intermediate": self.inter, "layers": self.layers,
                "heads": self.heads, "kv_heads": self.kv_heads,
                "head_dim": self.head_dim, "vocab": self.vocab,
                "tied_embeddings": self.tied, "weights": "bf16 (norms fp32)",
                "kv_cache": "bf16"}


def preset_shape(name):
    # "synthetic:llama2-7b:bf16:fast" (run.sh's model spec) names a preset.
    if name.startswith("synthetic:"):
        name = name.split(":")[1]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: "
                         f"{', '.join(PRESETS)}")
    return Shape(*PRESETS[name], name=name)


def config_shape(path):
    """A Hugging Face config.json (the fields ModelConfig::FromJson reads)."""
    with open(path) as f:
        c = json.load(f)
    heads = c["num_attention_heads"]
    shape = Shape(c["hidden_size"], c["intermediate_size"],
                  c["num_hidden_layers"], heads,
                  c.get("num_key_value_heads") or heads, c["vocab_size"],
                  bool(c.get("tie_word_embeddings", False)), name=path)
    if c.get("head_dim") not in (None, shape.head_dim):
        raise ValueError(f"{path}: head_dim {c['head_dim']} != hidden_size / "
                         "num_attention_heads (the engine rejects it)")
    return shape


# --- Skip policies (engine/policy/skip_policy.cc) ----------------------------

def parse_policy(text, layers):
    """(run_attn, run_ffn) lists for `text`: "none" or clauses
    kind:last=P% / kind:last=F joined by ';' (kind attn, ffn or layer).
    Rounds as SkipPolicy::Compile: the fraction kept to a millionth, then
    k = floor(f * L + 0.5 + 1e-9) last layers (half rounds up)."""
    run_attn = [True] * layers
    run_ffn = [True] * layers
    text = text.strip()
    if text == "none":
        return run_attn, run_ffn
    seen = set()
    for clause in text.split(";"):
        kind, sep, target = clause.strip().partition(":")
        kind, target = kind.strip(), target.strip()
        if not sep or kind not in ("attn", "ffn", "layer") or kind in seen \
                or not target.startswith("last="):
            raise ValueError(f"policy clause {clause!r}: expected "
                             "attn|ffn|layer:last=P% (each kind once)")
        seen.add(kind)
        value = target[len("last="):].strip()
        if value.endswith("%"):
            fraction = float(value[:-1]) / 100
        else:
            fraction = float(value)
        if not 0 <= fraction <= 1:
            raise ValueError(f"policy clause {clause!r}: outside [0, 100%]")
        fraction = round(fraction * 1e6) / 1e6
        k = min(max(int(math.floor(fraction * layers + 0.5 + 1e-9)), 0),
                layers)
        for layer in range(layers - k, layers):
            if kind != "ffn":
                run_attn[layer] = False
            if kind != "attn":
                run_ffn[layer] = False
    return run_attn, run_ffn


# --- The cost model's figures (engine/analysis/cost_model.cc), mirrored ------

def cost_model_decode_bytes(s, run_attn, run_ffn, context, batch=1):
    """DecodeBytes at bf16 weights and KV, scaled to a batch as
    bench_figures.cc StepBytes does: what skipserve-bench's
    predicted_speedup_bytes and roofline use. Mirrors cost_model.cc."""
    h = s.hidden
    attn_w = h * s.q_dim + 2 * h * s.kv_dim + s.q_dim * h + h
    ffn_w = 3 * h * s.inter + h

    def one(ctx):
        weights = h + h + h * s.vocab
        kv = 0
        for layer in range(s.layers):
            if run_attn[layer]:
                weights += attn_w
                kv += 2 * (ctx + 1) * s.kv_dim
            if run_ffn[layer]:
                weights += ffn_w
        return weights * WEIGHT_BYTES + kv * KV_BYTES

    w = one(0)
    return w + batch * (one(context) - w)


def cost_model_prefill_flops(s, run_attn, run_ffn, n):
    """PrefillFlops (cost_model.cc), mirrored: skipserve-bench's
    predicted_speedup_flops."""
    h = s.hidden
    attn_w = h * s.q_dim + 2 * h * s.kv_dim + s.q_dim * h + h
    ffn_w = 3 * h * s.inter + h
    pairs = n * (n + 1) / 2
    core = 4.0 * pairs * s.heads * s.head_dim
    flops = 2.0 * h * s.vocab
    for layer in range(s.layers):
        if run_attn[layer]:
            flops += 2.0 * n * attn_w + core
        if run_ffn[layer]:
            flops += 2.0 * n * ffn_w
    return flops


# --- The launch structure ----------------------------------------------------

def attention_splits(rows, heads, max_keys, num_sms, min_keys=256,
                     max_splits=32):
    """launch_plan.cc AttentionSplits."""
    blocks = rows * heads
    target = 4 * num_sms
    if blocks >= target or max_keys < 2 * min_keys:
        return 1
    by_occupancy = -(-target // blocks)
    by_keys = max_keys // min_keys
    return max(1, min(by_occupancy, by_keys, max_splits))


class Scenario:
    def __init__(self, phase, batch, context, prompt_len=1):
        if phase not in ("decode", "prefill"):
            raise ValueError(f"phase {phase!r}: decode or prefill")
        if batch < 1 or context < 0 or prompt_len < 1:
            raise ValueError("batch >= 1, context >= 0, prompt_len >= 1")
        self.phase, self.batch, self.context = phase, batch, context
        # Tokens each sequence runs this step.
        self.tokens = 1 if phase == "decode" else prompt_len
        self.prompt_len = None if phase == "decode" else prompt_len

    def label(self):
        if self.phase == "decode":
            return f"decode batch {self.batch} context {self.context}"
        return (f"prefill batch {self.batch} prompt {self.tokens}"
                + (f" after context {self.context}" if self.context else ""))

    def key(self):
        return (self.phase, self.batch, self.context, self.tokens)

    def to_json(self):
        j = {"phase": self.phase, "batch": self.batch,
             "context": self.context}
        if self.phase == "prefill":
            j["prompt_len"] = self.tokens
        return j


def parse_scenario(spec):
    """decode:batch=B:context=C or prefill:batch=B:prompt=N[:context=C]."""
    phase, *fields = spec.split(":")
    values = {"batch": 1, "context": 512 if phase == "decode" else 0,
              "prompt": 1}
    for f in fields:
        k, sep, v = f.partition("=")
        if not sep or k not in values:
            raise ValueError(f"scenario {spec!r}: field {f!r} (batch=, "
                             "context=, prompt=)")
        values[k] = int(v)
    if phase == "prefill" and "prompt" not in {f.partition("=")[0]
                                               for f in fields}:
        raise ValueError(f"scenario {spec!r}: prefill needs prompt=N")
    return Scenario(phase, values["batch"], values["context"],
                    values["prompt"])


class Kernel:
    """One row of the table: a kernel (or copy), summed over its launches."""

    def __init__(self, name, unit):
        self.name = name
        self.unit = unit  # "tensor", "fp32" or "host link"
        self.launches = 0
        self.bytes = {"weights": 0, "activations": 0, "kv": 0, "logits": 0}
        self.flops = 0.0

    def add(self, launches=1, flops=0.0, **nbytes):
        self.launches += launches
        self.flops += flops
        for k, v in nbytes.items():
            self.bytes[k] += v

    def total_bytes(self):
        return sum(self.bytes.values())


class Machine:
    def __init__(self, bandwidth_gbs, tflops, fp32_tflops, host_link_gbs,
                 launch_us, num_sms, bandwidth_source):
        self.bandwidth_gbs, self.tflops = bandwidth_gbs, tflops
        self.fp32_tflops, self.host_link_gbs = fp32_tflops, host_link_gbs
        self.launch_us, self.num_sms = launch_us, num_sms
        self.bandwidth_source = bandwidth_source

    def to_json(self):
        return {"bandwidth_gbs": self.bandwidth_gbs,
                "bandwidth_source": self.bandwidth_source,
                "bf16_tensor_tflops": self.tflops,
                "bf16_tensor_tflops_source": "nominal (H200 SXM dense)",
                "fp32_tflops": self.fp32_tflops,
                "fp32_tflops_source": "nominal (H200 SXM)",
                "host_link_gbs": self.host_link_gbs,
                "host_link_source": "nominal (PCIe 5.0 x16, one direction)",
                "launch_us": self.launch_us,
                "launch_us_source": "assumed constant per launch",
                "num_sms": self.num_sms}


def step_kernels(s, run_attn, run_ffn, sc, num_sms,
                 kv_block=DEFAULT_KV_BLOCK, logits="host"):
    """The kernels of one step, in launch order of first appearance."""
    ks = {}

    def k(name, unit="fp32"):
        if name not in ks:
            ks[name] = Kernel(name, unit)
        return ks[name]

    h, q, kv, inter, d = s.hidden, s.q_dim, s.kv_dim, s.inter, s.head_dim
    b, t, ctx = sc.batch, sc.tokens, sc.context
    n = b * t                                   # rows of the step
    logit_rows = b                              # each sequence's last row
    keys_last = ctx + t                         # keys of a sequence's last row
    blocks_per_seq = -(-keys_last // kv_block)  # its block table

    # Sublayer s < 2L: layer s // 2's attention (even) or FFN (odd); 2L: the
    # final norm. Rows: every row, or none; the final norm's: the logit rows.
    runs = []
    for layer in range(s.layers):
        runs += [run_attn[layer], run_ffn[layer]]
    runs.append(True)

    def rows_of(sub):
        if sub == 2 * s.layers:
            return logit_rows, logit_rows == n  # (rows, dense)
        return (n, True) if runs[sub] else (0, False)

    def same_rows(a, c):
        # Dense sets of all rows match; the gathered logit rows match only
        # themselves (LaunchPlan::SameRows).
        return rows_of(a) == rows_of(c) and rows_of(a)[0] > 0

    # H2D upload of LaunchPlan::ints: tokens; per running attention layer
    # positions, slots, table starts (m each), decode runs / tiles (pairs);
    # gathered logit rows; then each sequence's block tables of every
    # running layer, each padded to a power of two (launch_plan.h). The
    # backend copies only the ints that changed (ints_upload.h): in a decode
    # step of the same batch as the last (the steady state modelled here)
    # one span over everything before the tables (tokens, positions and
    # slots change; the starts and runs between them are copied along), and
    # for each of the b / kv_block sequences that gain a block per step on
    # average, one span from its first layer's new entry to its last
    # layer's. More than ints_upload's 32 copies, or a prefill step (a new
    # shape): all of it, one copy.
    tiles_per_seq = 0 if t == 1 else -(-t // PREFILL_TILE_ROWS)
    head = n
    attn_layers = 0
    for layer in range(s.layers):
        if run_attn[layer]:
            attn_layers += 1
            head += 3 * n
            head += 2 if t == 1 else 2 * b * tiles_per_seq
    if logit_rows != n:
        head += logit_rows
    capacity = 1 << max(0, (blocks_per_seq - 1).bit_length())
    ints = head + b * attn_layers * capacity
    copies = 1
    appends = b / kv_block
    if t == 1 and 1 + appends <= INTS_UPLOAD_MAX_COPIES:
        copies = 1 + appends
        ints = head + appends * ((attn_layers - 1) * capacity + 1)
    k("H2D index upload", "host link").add(launches=max(1, round(copies)),
                                           activations=ints * INT_BYTES)

    k("EmbeddingGather").add(weights=n * h * WEIGHT_BYTES,
                             activations=n * INT_BYTES + n * h * X_BYTES)

    def rms_norm(m, idx):
        k("RmsNorm").add(
            flops=4.0 * m * h, weights=h * NORM_BYTES,
            activations=m * h * X_BYTES + m * h * ACT_BYTES
            + (0 if idx else m * INT_BYTES))

    def gemm(name, m, kdim, ndim, w_elems=None):
        # y (m, n) fp32 = x (m, k) bf16 @ w (n, k)^T bf16 (gemm.cc).
        w_elems = kdim * ndim if w_elems is None else w_elems
        gemv = m <= MAX_GEMV_ROWS
        k(f"{name} ({'gemv.cu' if gemv else 'cuBLAS'})",
          "fp32" if gemv else "tensor").add(
            flops=2.0 * m * kdim * ndim, weights=w_elems * WEIGHT_BYTES,
            activations=m * kdim * ACT_BYTES + m * ndim * OUT_BYTES)

    normed_for = -1

    def norm_input(sub):
        nonlocal normed_for
        if normed_for != sub:
            m, dense = rows_of(sub)
            rms_norm(m, dense)
            normed_for = sub

    def project_add_residual(name, sub, kdim):
        # The Wo or down projection and the residual add (cuda_sublayers.cc
        # AddResidual), with the next running sublayer's norm when it runs
        # on the same rows: for m <= 16 rows in the GEMV's epilogue (gemv.h
        # kAddResidualRmsNorm: no launch of its own, and x read and written
        # instead of the fp32 product); above, the cuBLAS GEMM into delta
        # and AddResidualRmsNorm.
        nonlocal normed_for
        m, _ = rows_of(sub)
        nxt = sub + 1
        while nxt < 2 * s.layers and not runs[nxt]:
            nxt += 1
        fuse = same_rows(sub, nxt)
        gemm(name, m, kdim, h)
        norm = dict(flops=m * h + (4.0 * m * h if fuse else 0),
                    weights=h * NORM_BYTES if fuse else 0)
        normed = m * h * ACT_BYTES if fuse else 0
        if m <= MAX_GEMV_ROWS:
            k(f"{name} (gemv.cu)", "fp32").add(
                launches=0, **norm,
                activations=2 * m * h * X_BYTES - m * h * OUT_BYTES + normed)
        else:
            k("AddResidualRmsNorm").add(
                **norm, activations=3 * m * h * X_BYTES + normed)
        normed_for = nxt if fuse else -1

    for layer in range(s.layers):
        if run_attn[layer]:
            sub = 2 * layer
            m = n
            norm_input(sub)
            gemm("QKV GEMM", m, h, q + 2 * kv)
            rope_flops = 3.0 * m * (s.heads + s.kv_heads) * d
            if m <= MAX_GEMV_ROWS:
                # RoPE and the K/V write fused into the GEMV's epilogue
                # (gemv.h kRopeKv): no launch of its own, and K/V go to the
                # cache in bf16 instead of through qkv in fp32.
                k("QKV GEMM (gemv.cu)", "fp32").add(
                    launches=0, flops=rope_flops,
                    activations=m * 2 * INT_BYTES + 2 * m * (d // 2) * 4
                    - m * 2 * kv * OUT_BYTES,
                    kv=m * 2 * kv * KV_BYTES)
            else:
                # RoPE of q (in place) and k; k, v to the cache in bf16.
                k("RopeKvWrite").add(
                    flops=rope_flops,
                    activations=m * (q + 2 * kv) * OUT_BYTES
                    + m * q * OUT_BYTES + m * 2 * INT_BYTES
                    + 2 * m * (d // 2) * 4,
                    kv=m * 2 * kv * KV_BYTES)
            if t == 1:
                # One run of b one-token rows; each row attends to ctx + 1
                # keys. K/V read once per row and KV head.
                keys = ctx + 1
                splits = attention_splits(m, s.heads, keys, num_sms)
                ws = splits * m * s.heads * (d + 2) * 4 if splits > 1 else 0
                k("PagedAttention").add(
                    flops=4.0 * m * s.heads * keys * d,
                    kv=m * keys * 2 * kv * KV_BYTES,
                    activations=m * q * OUT_BYTES + m * INT_BYTES * 2
                    + m * blocks_per_seq * INT_BYTES
                    + (ws if splits > 1 else m * q * ACT_BYTES))
                if splits > 1:
                    k(f"CombineSplits ({splits} splits)").add(
                        flops=3.0 * splits * m * q,
                        activations=ws + m * q * ACT_BYTES)
            else:
                # Tiles of <= 32 consecutive rows, sizes within one; a tile
                # reads keys [0, its last position] once per KV head.
                kv_read = 0
                for tile in range(tiles_per_seq):
                    rows_before = sum(t // tiles_per_seq
                                      + (i < t % tiles_per_seq)
                                      for i in range(tile + 1))
                    kv_read += (ctx + rows_before) * 2 * kv * KV_BYTES
                pairs = t * ctx + t * (t + 1) // 2  # (row, key) per sequence
                k("PrefillAttention").add(
                    flops=4.0 * b * pairs * s.heads * d,
                    kv=b * kv_read,
                    activations=m * q * OUT_BYTES + m * q * ACT_BYTES
                    + m * INT_BYTES * 2 + b * blocks_per_seq * INT_BYTES)
            project_add_residual("Wo GEMM", sub, q)
        if run_ffn[layer]:
            sub = 2 * layer + 1
            m = n
            norm_input(sub)
            if m <= MAX_GEMV_ROWS:
                k("gate|up GEMV + SiLU (gemv.cu)", "fp32").add(
                    flops=2.0 * m * h * 2 * inter + 4.0 * m * inter,
                    weights=2 * inter * h * WEIGHT_BYTES,
                    activations=m * h * ACT_BYTES + m * inter * ACT_BYTES)
            else:
                gemm("gate|up GEMM", m, h, 2 * inter)
                k("SiluMul").add(flops=4.0 * m * inter,
                                 activations=m * 2 * inter * OUT_BYTES
                                 + m * inter * ACT_BYTES)
            project_add_residual("down GEMM", sub, inter)

    norm_input(2 * s.layers)
    gemm("LM head GEMM", logit_rows, h, s.vocab)
    # The LM head's output is the logits: move its write to that column.
    head = next(v for name, v in ks.items() if name.startswith("LM head"))
    head.bytes["activations"] -= logit_rows * s.vocab * OUT_BYTES
    head.bytes["logits"] += logit_rows * s.vocab * OUT_BYTES
    if logits == "greedy":
        # One block per row: max, then sum of exponentials (read once here;
        # a second pass would hit L2 for one row of 128 KB).
        k("GreedyTokens (sampling.cu)").add(
            flops=3.0 * logit_rows * s.vocab,
            logits=logit_rows * s.vocab * 4 + logit_rows * 8)
        k("D2H greedy tokens copy", "host link").add(logits=logit_rows * 8)
    else:
        k("D2H logits copy", "host link").add(
            logits=logit_rows * s.vocab * 4)
    return list(ks.values())


def evaluate(s, policy, sc, machine, logits="host"):
    run_attn, run_ffn = parse_policy(policy, s.layers)
    kernels = step_kernels(s, run_attn, run_ffn, sc, machine.num_sms,
                           logits=logits)
    rows = []
    tot = {"launches": 0, "weights": 0, "activations": 0, "kv": 0,
           "logits": 0, "bytes": 0, "flops": 0.0, "time_s": 0.0,
           "memory_s": 0.0, "compute_s": 0.0, "launch_s": 0.0}
    for kern in kernels:
        nbytes = kern.total_bytes()
        if kern.unit == "host link":
            mem = nbytes / (machine.host_link_gbs * 1e9)
            comp = 0.0
            launch = 0.0  # a copy, not a kernel
        else:
            mem = nbytes / (machine.bandwidth_gbs * 1e9)
            rate = machine.tflops if kern.unit == "tensor" else \
                machine.fp32_tflops
            comp = kern.flops / (rate * 1e12)
            launch = kern.launches * machine.launch_us * 1e-6
        time = max(mem, comp) + launch
        bound = ("host link" if kern.unit == "host link"
                 else "memory" if mem >= comp else "compute")
        rows.append({"kernel": kern.name, "flop_unit": kern.unit,
                     "launches": kern.launches, "bytes": dict(kern.bytes),
                     "bytes_total": nbytes, "flops": kern.flops,
                     "memory_s": mem, "compute_s": comp, "launch_s": launch,
                     "time_s": time, "bound": bound})
        tot["launches"] += kern.launches if kern.unit != "host link" else 0
        for c in ("weights", "activations", "kv", "logits"):
            tot[c] += kern.bytes[c]
        tot["bytes"] += nbytes
        tot["flops"] += kern.flops
        tot["time_s"] += time
        tot["memory_s"] += mem
        tot["compute_s"] += comp
        tot["launch_s"] += launch
    tokens = sc.batch * sc.tokens
    result = {
        "scenario": sc.to_json(), "label": sc.label(), "policy": policy,
        "layers_attention_run": sum(run_attn),
        "layers_ffn_run": sum(run_ffn),
        "kernels": rows, "totals": tot,
        "kernel_launches_per_step": tot["launches"],
        "cuda_graph": sc.phase == "decode",
        "step_time_s": tot["time_s"],
        "tokens_per_s": tokens / tot["time_s"],
        "logits": logits,
        # The figure: what Forward copies to the host per step.
        "logits_bytes_copied": sc.batch * s.vocab * 4,
        "host_copy_bytes": sum(k["bytes_total"] for k in rows
                               if k["kernel"].startswith("D2H")),
        "cost_model_decode_bytes": cost_model_decode_bytes(
            s, run_attn, run_ffn, sc.context, sc.batch)
        if sc.phase == "decode" else None,
        "cost_model_prefill_flops": cost_model_prefill_flops(
            s, run_attn, run_ffn, sc.tokens)
        if sc.phase == "prefill" and sc.context == 0 else None,
    }
    if sc.phase == "prefill":
        result["ttft_s"] = tot["time_s"]
    return result


def skip_predictions(s, sc, machine, policies, logits="host"):
    base = evaluate(s, "none", sc, machine, logits)
    out = []
    for policy in policies:
        r = evaluate(s, policy, sc, machine, logits)
        skipped_attn = s.layers - r["layers_attention_run"]
        skipped_ffn = s.layers - r["layers_ffn_run"]
        entry = {
            "policy": policy, "scenario": sc.to_json(),
            "attention_layers_skipped": skipped_attn,
            "ffn_layers_skipped": skipped_ffn,
            "bytes_ratio": r["totals"]["bytes"] / base["totals"]["bytes"],
            "device_bytes_ratio": (
                (r["totals"]["bytes"] - r["totals"]["logits"])
                / (base["totals"]["bytes"] - base["totals"]["logits"])),
            "flops_ratio": r["totals"]["flops"] / base["totals"]["flops"],
            "time_ratio": r["step_time_s"] / base["step_time_s"],
            "predicted_speedup": base["step_time_s"] / r["step_time_s"],
        }
        if r["cost_model_decode_bytes"] is not None:
            entry["cost_model_bytes_ratio"] = (
                r["cost_model_decode_bytes"] / base["cost_model_decode_bytes"])
        if r["cost_model_prefill_flops"] is not None:
            entry["cost_model_flops_ratio"] = (
                r["cost_model_prefill_flops"]
                / base["cost_model_prefill_flops"])
        out.append(entry)
    return out


# --- Output ------------------------------------------------------------------

def fmt_bytes(x):
    return f"{x / 1e6:,.2f}" if x else "-"


def text_report(doc):
    L = []
    m = doc["machine"]
    c = doc["config"]
    L.append("Per-kernel byte/FLOP MODEL of the CUDA backend's forward step "
             "(a model, not a measurement; see bench/gpu/kernel_model.py)")
    L.append(f"model {c['name']}: hidden {c['hidden']}, {c['layers']} layers, "
             f"{c['heads']} heads / {c['kv_heads']} kv heads of "
             f"{c['head_dim']}, intermediate {c['intermediate']}, vocab "
             f"{c['vocab']}; bf16 weights (fp32 norms) and KV")
    L.append(f"machine: {m['bandwidth_gbs']:.0f} GB/s ({m['bandwidth_source']}"
             f"), {m['bf16_tensor_tflops']:.0f} bf16 tensor TFLOP/s (nominal), "
             f"{m['fp32_tflops']:.0f} fp32 TFLOP/s (nominal), host link "
             f"{m['host_link_gbs']:.0f} GB/s (nominal), {m['launch_us']:g} us "
             f"per launch (assumed), {m['num_sms']} SMs")
    L.append(f"policy: {doc['policy']}")
    for r in doc["scenarios"]:
        L.append("")
        graph = " (replayed as a CUDA graph)" if r["cuda_graph"] else ""
        L.append(f"== {r['label']}, policy {r['policy']}: "
                 f"{r['kernel_launches_per_step']} kernel launches per "
                 f"step{graph}")
        L.append(f"{'kernel':<34} {'launch':>6} {'weights MB':>11} "
                 f"{'act MB':>9} {'KV MB':>9} {'logits MB':>9} "
                 f"{'GFLOP':>9} {'unit':>6} {'time us':>9} {'bound':>9} "
                 f"{'share':>6}")
        for k in r["kernels"]:
            b = k["bytes"]
            L.append(
                f"{k['kernel']:<34} {k['launches']:>6} "
                f"{fmt_bytes(b['weights']):>11} "
                f"{fmt_bytes(b['activations']):>9} {fmt_bytes(b['kv']):>9} "
                f"{fmt_bytes(b['logits']):>9} "
                f"{(k['flops'] / 1e9 if k['flops'] else 0):>9.2f} "
                f"{'link' if k['flop_unit'] == 'host link' else k['flop_unit']:>6} "
                f"{k['time_s'] * 1e6:>9.1f} {k['bound']:>9} "
                f"{100 * k['time_s'] / r['step_time_s']:>5.1f}%")
        t = r["totals"]
        L.append(
            f"{'total':<34} {t['launches']:>6} {fmt_bytes(t['weights']):>11} "
            f"{fmt_bytes(t['activations']):>9} {fmt_bytes(t['kv']):>9} "
            f"{fmt_bytes(t['logits']):>9} {t['flops'] / 1e9:>9.2f} "
            f"{'':>6} {t['time_s'] * 1e6:>9.1f}")
        L.append(f"   bytes {t['bytes'] / 1e9:.3f} GB, {t['flops'] / 1e9:.2f} "
                 f"GFLOP; time: memory {t['memory_s'] * 1e6:.1f} us, compute "
                 f"{t['compute_s'] * 1e6:.1f} us, launches "
                 f"{t['launch_s'] * 1e6:.1f} us (each kernel counts the "
                 "larger of its memory and compute time)")
        what = "tokens/s" if r["scenario"]["phase"] == "decode" else \
            "prompt tokens/s"
        pred = (f"predicted {r['tokens_per_s']:,.1f} {what} "
                f"(step {r['step_time_s'] * 1e3:.3f} ms")
        if "ttft_s" in r:
            pred += f", time to first token {r['ttft_s'] * 1e3:.3f} ms"
        L.append("   " + pred + f"); logits copied to the host per step: "
                 f"{r['logits_bytes_copied']:,} bytes "
                 f"({r['scenario']['batch']} x {c['vocab']} x 4)"
                 + ("" if r["logits"] == "host" else
                    f"; greedy on the device copies "
                    f"{r['host_copy_bytes']:,} bytes instead"))
        if r["cost_model_decode_bytes"]:
            L.append(f"   engine/analysis/cost_model (what skipserve-bench's "
                     f"roofline uses): {r['cost_model_decode_bytes'] / 1e9:.3f}"
                     " GB per step")
    if doc["skip_predictions"]:
        L.append("")
        L.append("== skip-policy predictions (modelled ratios vs none; "
                 "decode: bytes, prefill: FLOPs; speedup = modelled time "
                 "ratio, launches included)")
        L.append(f"{'scenario':<34} {'policy':<16} {'skip a/f':>8} "
                 f"{'bytes':>7} {'FLOPs':>7} {'time':>7} {'speedup':>8} "
                 f"{'cost_model':>10}")
        for e in doc["skip_predictions"]:
            sc = e["scenario"]
            label = (f"decode b{sc['batch']} ctx {sc['context']}"
                     if sc["phase"] == "decode" else
                     f"prefill b{sc['batch']} prompt {sc['prompt_len']}")
            cm = e.get("cost_model_bytes_ratio",
                       e.get("cost_model_flops_ratio"))
            L.append(
                f"{label:<34} {e['policy']:<16} "
                f"{e['attention_layers_skipped']:>3}/{e['ffn_layers_skipped']:<4} "
                f"{e['bytes_ratio']:>7.4f} {e['flops_ratio']:>7.4f} "
                f"{e['time_ratio']:>7.4f} {e['predicted_speedup']:>8.3f} "
                f"{'-' if cm is None else format(cm, '.4f'):>10}")
        L.append("   (cost_model: engine/analysis/cost_model's ratio, bytes "
                 "for decode and FLOPs for prefill: what skipserve-bench "
                 "prints as the predicted speedup's inverse)")
    L.append("")
    L.append("Omitted: caches and L2 reuse beyond reading each byte once, "
             "cuBLAS kernel choice and split-K, partial waves, launch cost "
             "other than the constant above, host-side work. A model: use "
             "its ratios, not its absolute times.")
    return "\n".join(L) + "\n"


# --- Inputs from a run -------------------------------------------------------

def bench_meta(paths):
    """The copy bandwidth and SM count from the first skipserve-bench results
    file (--results) among `paths` whose meta line has them."""
    for path in paths:
        try:
            with open(path) as f:
                for raw in f:
                    try:
                        line = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    if line.get("type") != "meta":
                        continue
                    bw = (line.get("memory_bandwidth_gb_s") or {}).get("copy")
                    if bw:
                        dev = line.get("device") or {}
                        return {"copy_gb_s": float(bw), "path": path,
                                "device": dev.get("gpu") or dev.get("name"),
                                "num_sms": dev.get("multiprocessors")}
        except OSError:
            continue
    return None


def suite_scenarios(path, name):
    """Scenarios and skip policies of a skipserve-bench suite (suites.json):
    each decode (and mixed) measurement's batches at its context, each ttft
    measurement's prompt lengths at batch 1."""
    with open(path) as f:
        suite = json.load(f)["suites"][name]
    scenarios, policies = [], []
    for meas in suite:
        kind = meas["kind"]
        for p in meas.get("policies", []):
            if p != "none" and p not in policies:
                policies.append(p)
        if kind in ("decode", "mixed"):
            for b in meas["batches"]:
                scenarios.append(Scenario("decode", b, meas["context"]))
        elif kind == "ttft":
            for n in meas["prompt_lens"]:
                scenarios.append(Scenario("prefill", 1, 0, n))
    return scenarios, policies


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Per-kernel byte/FLOP model of the CUDA backend's step "
                    "(a model, not a measurement).")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--preset", help=f"one of {', '.join(PRESETS)} "
                       "(default llama2-7b)")
    shape.add_argument("--model", help="a skipserve model spec naming a "
                       "preset, e.g. synthetic:llama2-7b:bf16:fast")
    shape.add_argument("--config", help="a Hugging Face config.json")
    p.add_argument("--policy", default="none",
                   help="none | attn|ffn|layer:last=P%% (';'-joined)")
    p.add_argument("--phase", choices=("decode", "prefill"), default="decode")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--context", type=int, default=None,
                   help="tokens already cached (default 512 for decode, 0 "
                        "for prefill)")
    p.add_argument("--prompt_len", type=int, default=512)
    p.add_argument("--scenario", action="append", default=[],
                   help="decode:batch=B:context=C or prefill:batch=B:"
                        "prompt=N[:context=C]; repeatable; replaces "
                        "--phase/--batch/--context/--prompt_len")
    p.add_argument("--suite", help="suites.json: take the scenarios and "
                   "policies of --suite_name from it")
    p.add_argument("--suite_name")
    p.add_argument("--skip_policies", default=",".join(SKIP_GRID),
                   help="comma-separated policies for the skip predictions "
                        "(default the 10/25/33%% attn/ffn/layer grid); "
                        "'' for none")
    p.add_argument("--bandwidth_gbs", type=float, default=None,
                   help="device memory bandwidth (default 4800, the H200's "
                        "nominal)")
    p.add_argument("--tflops", type=float, default=NOMINAL["tflops"],
                   help="bf16 tensor-core TFLOP/s (default 989 dense, "
                        "nominal)")
    p.add_argument("--fp32_tflops", type=float,
                   default=NOMINAL["fp32_tflops"])
    p.add_argument("--host_link_gbs", type=float,
                   default=NOMINAL["host_link_gbs"])
    p.add_argument("--launch_us", type=float, default=DEFAULT_LAUNCH_US)
    p.add_argument("--num_sms", type=int, default=None)
    p.add_argument("--from_bench", action="append", default=[],
                   help="skipserve-bench --results file; its meta line's "
                        "measured copy bandwidth (and SM count) replace the "
                        "nominal ones unless given explicitly; repeatable, "
                        "first found wins")
    p.add_argument("--logits", choices=("host", "greedy"), default="host",
                   help="host: Forward copies the logits to the host (the "
                        "default); greedy: ForwardSample's argmax on the "
                        "device, 8 bytes per row copied")
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of the text report")
    p.add_argument("--json_out", help="also write the JSON here")
    a = p.parse_args(argv)

    try:
        if a.config:
            s = config_shape(a.config)
        else:
            s = preset_shape(a.model or a.preset or "llama2-7b")
        parse_policy(a.policy, s.layers)
        if a.suite:
            if not a.suite_name:
                p.error("--suite needs --suite_name")
            scenarios, suite_policies = suite_scenarios(a.suite,
                                                        a.suite_name)
        else:
            suite_policies = []
            if a.scenario:
                scenarios = [parse_scenario(x) for x in a.scenario]
            else:
                ctx = a.context if a.context is not None else (
                    512 if a.phase == "decode" else 0)
                scenarios = [Scenario(a.phase, a.batch, ctx, a.prompt_len)]
        policies = [x.strip() for x in a.skip_policies.split(",")
                    if x.strip()]
        for x in suite_policies:
            if x not in policies:
                policies.append(x)
        for x in policies:
            parse_policy(x, s.layers)
    except (ValueError, KeyError, OSError) as e:
        print(f"kernel_model.py: {e}", file=sys.stderr)
        return 2

    source = "nominal (H200 SXM HBM3e)"
    bandwidth = NOMINAL["bandwidth_gbs"]
    num_sms = NOMINAL["num_sms"]
    meta = bench_meta(a.from_bench) if a.from_bench else None
    if meta:
        bandwidth = meta["copy_gb_s"]
        source = (f"measured device copy bandwidth, {meta['path']}"
                  + (f" ({meta['device']})" if meta["device"] else ""))
        if meta["num_sms"]:
            num_sms = int(meta["num_sms"])
    elif a.from_bench:
        source += "; no measured bandwidth in " + ", ".join(a.from_bench)
    if a.bandwidth_gbs is not None:
        bandwidth = a.bandwidth_gbs
        source = "given (--bandwidth_gbs)"
    if a.num_sms is not None:
        num_sms = a.num_sms
    machine = Machine(bandwidth, a.tflops, a.fp32_tflops, a.host_link_gbs,
                      a.launch_us, num_sms, source)

    seen, unique = set(), []
    for sc in scenarios:
        if sc.key() not in seen:
            seen.add(sc.key())
            unique.append(sc)
    doc = {
        "what": "per-kernel byte/FLOP model of the CUDA backend's forward "
                "step: a model, not a measurement "
                "(bench/gpu/kernel_model.py)",
        "config": s.to_json(), "machine": machine.to_json(),
        "policy": a.policy, "logits": a.logits,
        "scenarios": [evaluate(s, a.policy, sc, machine, a.logits)
                      for sc in unique],
        "skip_predictions": [e for sc in unique
                             if sc.batch == 1 or sc.phase == "decode"
                             for e in skip_predictions(s, sc, machine,
                                                       policies, a.logits)],
    }
    text = json.dumps(doc, indent=1)
    if a.json_out:
        with open(a.json_out, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n" if a.json else text_report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
