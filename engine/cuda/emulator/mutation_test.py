#!/usr/bin/env python3
"""Shows that the emulated CUDA suite catches the bugs it exists for.

For each mutation below, a copy of one CUDA backend source is changed, that
file alone is recompiled with the emulated build's own command (from
compile_commands.json), swapped into a copy of libskipserve_cuda_emu.a, and
cuda_emu_test is relinked against it (ninja's own link command) and run, in
the forward fiber order and then the reverse one. A mutation passes when a
run fails; the script fails when any mutation survives both orders, no
longer applies (its text must occur exactly once), or does not compile.
The sources themselves are never touched.

Usage: mutation_test.py BUILD_DIR TEST_BINARY LIBRARY [NAME...]
  (default: every mutation; CMake passes the two paths from the targets, so
  the script follows wherever the build puts them)
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
# Paths relative to the build directory, as ninja names them; set by main().
TEST = None
LIBRARY = None
# Everything but the two slowest cases (about 17 s of the 30).
FILTER = "*-*LongContext*:*MoreRowsThanAGridDimensionHolds*:*ConvertsCheckpoint*"

# (name, file under engine/cuda/, text, replacement)
MUTATIONS = [
    ("attention writes NaN", "attention.cu",
     "    if (p.splits == 1) {\n"
     "      p.out[task * p.head_dim + d] = __float2bfloat16_rn(value / sum);",
     "    if (p.splits == 1) {\n"
     "      p.out[task * p.head_dim + d] = __float2bfloat16_rn(\n"
     "          head == p.num_heads - 1 && d == 0 ? NAN : value / sum);"),
    ("wrong GQA head mapping", "attention.cu",
     "const int kv_head = head / (p.num_heads / p.num_kv_heads);",
     "const int kv_head = head % p.num_kv_heads;"),
    ("wrong block-table index", "attention.cu",
     "const int64_t block = stage[local / p.block_size];",
     "const int64_t block = stage[(local + 1) / p.block_size];"),
    ("block-table stage refilled from the range's first entry",
     "attention.cu",
     "      stage[i] = table[chunk + i];",
     "      stage[i] = table[first_block + i];"),
    ("key-group reduction summing across groups", "attention.cu",
     "for (int o = S::kLanes / 2; o > 0; o /= 2) {",
     "for (int o = 16; o > 0; o /= 2) {"),
    ("RoPE rotates queries the wrong way", "kernels.cu",
     "      h[j] = x0 * c[j] - x1 * s[j];\n"
     "      h[j + half] = x1 * c[j] + x0 * s[j];",
     "      h[j] = x0 * c[j] + x1 * s[j];\n"
     "      h[j + half] = x1 * c[j] - x0 * s[j];"),
    ("no __syncthreads before attention merges its warps", "attention.cu",
     "  }\n  __syncthreads();\n  float max = -INFINITY;",
     "  }\n  float max = -INFINITY;"),
    ("no __syncthreads in the block sum", "kernels.cu",
     "  if (threadIdx.x % 32 == 0) partial[warp] = v;\n  __syncthreads();",
     "  if (threadIdx.x % 32 == 0) partial[warp] = v;"),
    ("split merge ignores the splits' maxima", "attention.cu",
     "      const float factor = exp2f(split_max - max);",
     "      const float factor = 1.0f;"),
    ("K written at the value's slot", "kernels.cu",
     "      p.kv_cache + ((block * 2) * p.block_size + offset) * int64_t{kv_dim};",
     "      p.kv_cache + ((block * 2 + 1) * p.block_size + offset) * "
     "int64_t{kv_dim};"),
    ("GEMM without the transpose", "gemm.cc",
     "cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N",
     "cublasGemmEx(handle_, CUBLAS_OP_N, CUBLAS_OP_N"),
    ("GEMV tail pass skips every other chunk", "gemv.cu",
     "  for (; c < chunks; c += 32) {",
     "  for (; c < chunks; c += 64) {"),
    ("GEMV butterfly misses the top half of the warp", "gemv.cu",
     "    for (int offset = 16; offset > 0; offset /= 2) {\n"
     "      acc_a[r]",
     "    for (int offset = 8; offset > 0; offset /= 2) {\n"
     "      acc_a[r]"),
    ("SwiGLU epilogue multiplies by the gate", "gemv.cu",
     "__float2bfloat16_rn(a / (1.0f + __expf(-a)) * b)",
     "__float2bfloat16_rn(a / (1.0f + __expf(-a)) * a)"),
    ("fused RoPE rotates keys and queries the wrong way", "gemv.cu",
     "    lo = a * c - b * s;\n    hi = b * c + a * s;",
     "    lo = a * c + b * s;\n    hi = b * c - a * s;"),
    ("fused QKV writes the value into the key half of the cache", "gemv.cu",
     "((block * 2 + (is_key ? 0 : 1)) * q.block_size",
     "((block * 2) * q.block_size"),
    ("GEMV residual: a block before the last norms the rows", "gemv.cu",
     "    is_last = ticket == gridDim.x - 1;\n",
     "    is_last = ticket == gridDim.x - 2;\n"),
    ("GEMV residual: the counter is not reset", "gemv.cu",
     "      atomicExch(p.res.counter, 0u);  // every block has drawn its ticket\n",
     ""),
    ("GEMV residual: the norm's sum misses the last column", "gemv.cu",
     "    for (int j = lane; j < p.n; j += 32) {\n      const float v = x[j];",
     "    for (int j = lane; j < p.n - 1; j += 32) {\n      const float v = x[j];"),
    ("GEMV residual adds into rows 0..m-1 when gathered", "gemv.cu",
     "const int64_t row = p.res.rows != nullptr ? p.res.rows[r] : r;",
     "const int64_t row = r;"),
    ("fused Wo/down residual add leaves out the next norm",
     "cuda_sublayers.cc",
     "    p.res.norm_weight = next_weight;\n",
     "    p.res.norm_weight = nullptr;\n"),
    ("step graphs kept after the scratch moves", "cuda_backend.cc",
     "  if (device_pointers() != before) graphs_.Clear();\n", ""),
    ("greedy ties go to the higher id", "sampling.cu",
     "return a.id < b.id ? a : b;", "return a.id > b.id ? a : b;"),
    ("greedy log-prob sums past sampled_vocab", "sampling.cu",
     "    for (int j = threadIdx.x; j < sampled_vocab; j += kThreads) {\n"
     "      sum +=",
     "    for (int j = threadIdx.x; j < vocab; j += kThreads) {\n"
     "      sum +="),
    ("sampling: top-k boundary ties go to the higher ids",
     "sampling_filtered.cu",
     "  int rank = BlockExclusiveSum(mine);\n"
     "  for (int i = begin; i < end; ++i) {\n"
     "    const uint32_t key = row.Key(i);\n"
     "    bool in = key > t;\n"
     "    if (key == t) in = rank++ < ties;",
     "  int rank = BlockReduce(mine, Sum()) - BlockExclusiveSum(mine) - mine;\n"
     "  for (int i = begin; i < end; ++i) {\n"
     "    const uint32_t key = row.Key(i);\n"
     "    bool in = key > t;\n"
     "    if (key == t) in = rank + --mine < ties;"),
    ("sampling: the nucleus's ties compared by > instead of >=",
     "sampling_filtered.cu",
     "if (above + mid * w >= threshold) {",
     "if (above + mid * w > threshold) {"),
    ("sampling: the sorted top-k draw walks id order",
     "sampling_filtered.cu",
     "sorted[slot] = (static_cast<uint64_t>(OrderKey(row.logits[i])) << 32) |",
     "sorted[slot] = (static_cast<uint64_t>(0) << 32) |"),
    ("sampling: top_k = 1024 drawn in id order", "sampling_filtered.cu",
     "if (top_k <= kMaxSortedTopK) {", "if (top_k < kMaxSortedTopK) {"),
    ("sampling: chunk sums add the tail after the lanes",
     "sampling_filtered.cu",
     "      for (int i = whole; i < len; ++i) sum += value(begin + i);\n"
     "      for (int j = 0; j < kLanes; ++j) sum += lanes[j];",
     "      for (int j = 0; j < kLanes; ++j) sum += lanes[j];\n"
     "      for (int i = whole; i < len; ++i) sum += value(begin + i);"),
    ("RoPE tables copied on the legacy stream", "cuda_backend.cc",
     "CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rope_cos_.get(), cos.data(),\n"
     "                                       rope_cos_.bytes(),\n"
     "                                       cudaMemcpyHostToDevice, stream_));",
     "CUDA_RETURN_IF_ERROR(cudaMemcpy(rope_cos_.get(), cos.data(),\n"
     "                                  rope_cos_.bytes(), "
     "cudaMemcpyHostToDevice));"),
    ("KV cache filled on the legacy stream", "cuda_backend.cc",
     "cudaMemsetAsync(kv_.get(), 0xff, kv_elements * sizeof(bf16), stream_)",
     "cudaMemset(kv_.get(), 0xff, kv_elements * sizeof(bf16))"),
    ("prefill causal mask admits the next key", "prefill_attention.cu",
     "const int row_keys = min(keys, row_pos + 1 - key_begin);",
     "const int row_keys = min(keys, row_pos + 2 - key_begin);"),
    ("no __syncthreads before a prefill K/V tile is overwritten",
     "prefill_attention.cu",
     "    // on the first pass, the queries are written).\n"
     "    __syncthreads();\n",
     "    // on the first pass, the queries are written).\n"),
    ("ints upload's shadow kept when its device buffer is reallocated",
     "cuda_backend.cc",
     "  if (scratch_.ints.size() != ints_held) scratch_.upload.Invalidate();\n",
     ""),
    ("ints upload's shadow kept after a failed step", "cuda_backend.cc",
     "    scratch_.upload.Invalidate();\n"
     "    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));",
     "    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));"),
    ("ints upload misses each copied range's last int", "ints_upload.cc",
     "static_cast<size_t>(r.size) * sizeof(int32_t);",
     "static_cast<size_t>(r.size - 1) * sizeof(int32_t);"),
]


def compile_command(build, source):
    """The emulated build's compile command for `source`, as an argv."""
    with open(os.path.join(build, "compile_commands.json")) as f:
        for entry in json.load(f):
            argv = shlex.split(entry["command"])
            out = argv[argv.index("-o") + 1]
            if (entry["file"] == source and
                    "/skipserve_cuda_emu.dir/" in out):
                return entry["directory"], argv
    raise SystemExit(f"no emulated compile command for {source} in "
                     f"{build}/compile_commands.json")


def link_command(build):
    out = subprocess.run(["ninja", "-C", build, "-t", "commands", "-s", TEST],
                         check=True, capture_output=True, text=True).stdout
    line = out.strip().splitlines()[-1]
    return line


def run_mutation(build, work, name, filename, text, replacement):
    source = os.path.join(SOURCE_DIR, "engine", "cuda", filename)
    with open(source) as f:
        original = f.read()
    count = original.count(text)
    if count != 1:
        return f"ERROR: its text occurs {count} times in {filename}"
    mutated = os.path.join(work, filename)
    with open(mutated, "w") as f:
        f.write(original.replace(text, replacement))

    directory, argv = compile_command(build, source)
    out_index = argv.index("-o") + 1
    obj = os.path.join(work, os.path.basename(argv[out_index]))
    argv[out_index] = obj
    argv = [mutated if a == source else a for a in argv]
    compiled = subprocess.run(argv, cwd=directory, capture_output=True,
                              text=True)
    if compiled.returncode != 0:
        return "ERROR: does not compile:\n" + compiled.stderr[-2000:]

    library = os.path.join(work, "lib.a")
    shutil.copy(os.path.join(build, LIBRARY), library)
    subprocess.run(["ar", "r", library, obj], check=True, capture_output=True)
    binary = os.path.join(work, "cuda_emu_test")
    link = link_command(build).replace(LIBRARY, library).replace(
        f"-o {TEST} ", f"-o {binary} ")
    linked = subprocess.run(link, shell=True, cwd=build, capture_output=True,
                            text=True)
    if linked.returncode != 0:
        return "ERROR: does not link:\n" + linked.stderr[-2000:]

    for order in ("forward", "reverse"):
        env = dict(os.environ, SKIPSERVE_EMU_ORDER=order)
        try:
            # The first failing test is enough (and keeps the ~25 mutations
            # within ctest's timeout on two loaded cores).
            run = subprocess.run([binary, f"--gtest_filter={FILTER}",
                                  "--gtest_fail_fast"],
                                 cwd=build, env=env, capture_output=True,
                                 text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return f"caught ({order} order): the suite timed out"
        if run.returncode != 0:
            failed = sorted({l.split("]", 1)[1].split("(")[0].strip()
                             for l in run.stdout.splitlines()
                             if l.startswith("[  FAILED  ]") and "(" in l})
            crash = "" if failed else f" (exit {run.returncode})"
            return f"caught ({order} order){crash}: " + ", ".join(failed)
    return "SURVIVED: no test failed in either order"


def main():
    global TEST, LIBRARY
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    build = os.path.abspath(sys.argv[1])
    TEST = os.path.relpath(os.path.abspath(sys.argv[2]), build)
    LIBRARY = os.path.relpath(os.path.abspath(sys.argv[3]), build)
    wanted = sys.argv[4:]
    for path in (TEST, LIBRARY):
        if not os.path.exists(os.path.join(build, path)):
            raise SystemExit(f"{build}/{path} is not built")
    failures = 0
    for name, filename, text, replacement in MUTATIONS:
        if wanted and name not in wanted:
            continue
        start = time.time()
        with tempfile.TemporaryDirectory() as work:
            verdict = run_mutation(build, work, name, filename, text,
                                   replacement)
        print(f"{name}: {verdict} [{time.time() - start:.0f} s]", flush=True)
        failures += not verdict.startswith("caught")
    if failures:
        print(f"{failures} mutation(s) not caught or not applied")
        return 1
    print("every mutation was caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
