#ifndef SKIPSERVE_ENGINE_TOOLS_BENCH_PARITY_H_
#define SKIPSERVE_ENGINE_TOOLS_BENCH_PARITY_H_

// skipserve-bench --parity_spec=FILE: every position's logits of several
// sequences that share batches, for parity checks against other
// implementations (bench/gpu/hf_parity.py).
//
// FILE is JSON:
//   {"model": DIR or "synthetic:...", "device": "cuda" | "cpu" | "auto",
//    "sequences": [{"tokens": [ids], "policy": "attn:2,3",
//                   "chunks": [512, 512, 1, 1, ...], "start_step": 0}, ...],
//    "logits_out": PATH, "info_out": PATH}
// Step k runs, for every sequence, its chunk number k - start_step (if it
// has one): so prefill chunks of some sequences share steps with decode
// tokens of others, and each sequence keeps its own policy. The chunks of a
// sequence add up to its token count. Writes to logits_out every sequence's
// (tokens, vocab) float32 logits, little-endian, sequences in order; and to
// info_out JSON: the device, each sequence's compiled plan ("A;F" strings of
// 0/1 per layer, as tests/reference/llama_ref.py takes them) and each step's
// rows and sequences.

#include <string>

#include "absl/status/status.h"

namespace skipserve::bench {

absl::Status RunParity(const std::string& spec_path);

}  // namespace skipserve::bench

#endif  // SKIPSERVE_ENGINE_TOOLS_BENCH_PARITY_H_
