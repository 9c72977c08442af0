#include "engine/generation/stop_criteria.h"

#include <algorithm>

namespace skipserve {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kContext:
      return "context";
  }
  return "unknown";
}

std::optional<FinishReason> CheckStop(const StopCriteria& criteria,
                                      int32_t token, int generated,
                                      int total_tokens, bool caller_stops) {
  if (caller_stops ||
      std::find(criteria.stop_ids.begin(), criteria.stop_ids.end(), token) !=
          criteria.stop_ids.end()) {
    return FinishReason::kStop;
  }
  if (generated >= criteria.max_new_tokens) return FinishReason::kLength;
  if (total_tokens > criteria.max_context) return FinishReason::kContext;
  return std::nullopt;
}

}  // namespace skipserve
