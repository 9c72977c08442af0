#ifndef SKIPSERVE_ENGINE_GENERATION_STOP_CRITERIA_H_
#define SKIPSERVE_ENGINE_GENERATION_STOP_CRITERIA_H_

// Every rule that ends a generating sequence, in one place (the scheduler
// and the tools share it). After each sampled token, in this order:
//   kStop    the token is one of `stop_ids` (it is kept in the output), or
//            the caller asked to stop (e.g. a stop string matched);
//   kLength  `max_new_tokens` tokens have been generated;
//   kContext the sequence (prompt + generated) holds more tokens than the
//            model has positions, so the last one cannot be fed back.
// Errors, cancellation and deadlines are not finish rules: they end a
// sequence with a non-OK status (scheduler.h).

#include <cstdint>
#include <optional>
#include <span>

namespace skipserve {

enum class FinishReason { kStop, kLength, kContext };
const char* FinishReasonName(FinishReason reason);

struct StopCriteria {
  int max_new_tokens = 16;            // >= 1
  std::span<const int32_t> stop_ids;  // e.g. EOS; not owned
  int max_context = 0;                // the model's max_position_embeddings
};

// Why the sequence finishes after sampling `token`, or nullopt to go on.
// `generated` counts the tokens generated so far, `token` included;
// `total_tokens` the prompt's and the generated ones.
std::optional<FinishReason> CheckStop(const StopCriteria& criteria,
                                      int32_t token, int generated,
                                      int total_tokens,
                                      bool caller_stops = false);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_GENERATION_STOP_CRITERIA_H_
