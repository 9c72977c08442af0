#ifndef SKIPSERVE_ENGINE_BACKEND_BATCH_H_
#define SKIPSERVE_ENGINE_BACKEND_BATCH_H_

// One forward step's input: several sequences, each contributing a run of
// consecutive tokens (a prefill chunk, or one decode token), each with its
// own layer plan. Rows are the tokens, in sequence order.
//
// Contract for each BatchSequence:
//   - tokens [token_offset, token_offset + num_tokens) of Batch::tokens sit
//     at positions [start_pos, start_pos + num_tokens);
//   - the KV of positions [0, start_pos) was written by earlier steps under
//     the same plan, and kv has capacity for start_pos + num_tokens tokens;
//   - Forward writes the KV of the new positions, then attends causally.
// Logit rows come out in sequence order: every token's when all_logits is
// set (scoring), otherwise only the last token's.

#include <cstdint>
#include <vector>

#include "engine/kv/kv_cache.h"
#include "engine/policy/skip_policy.h"

namespace skipserve {

struct BatchSequence {
  const LayerPlan* plan = nullptr;  // not owned
  const SequenceKv* kv = nullptr;   // not owned
  int start_pos = 0;
  int token_offset = 0;
  int num_tokens = 0;
  bool all_logits = false;

  int NumLogitRows() const { return all_logits ? num_tokens : 1; }
};

struct Batch {
  std::vector<int32_t> tokens;
  std::vector<BatchSequence> sequences;

  int NumRows() const { return static_cast<int>(tokens.size()); }
  int NumLogitRows() const {
    int n = 0;
    for (const BatchSequence& s : sequences) n += s.NumLogitRows();
    return n;
  }
  // Appends a sequence's tokens; returns its index.
  int Add(const LayerPlan* plan, const SequenceKv* kv, int start_pos,
          const std::vector<int32_t>& new_tokens, bool all_logits = false) {
    BatchSequence s;
    s.plan = plan;
    s.kv = kv;
    s.start_pos = start_pos;
    s.token_offset = NumRows();
    s.num_tokens = static_cast<int>(new_tokens.size());
    s.all_logits = all_logits;
    tokens.insert(tokens.end(), new_tokens.begin(), new_tokens.end());
    sequences.push_back(s);
    return static_cast<int>(sequences.size()) - 1;
  }
};

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_BACKEND_BATCH_H_
