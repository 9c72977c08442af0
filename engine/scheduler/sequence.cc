#include "engine/scheduler/sequence.h"

namespace skipserve {

int ScoreFrom(const SequenceKind& kind) {
  if (const auto* scoring = std::get_if<Scoring>(&kind)) return scoring->from;
  if (const auto* analysis = std::get_if<Analysis>(&kind)) {
    return analysis->score_from;
  }
  return 0;
}

bool IsExclusive(const SequenceKind& kind) {
  if (const auto* scoring = std::get_if<Scoring>(&kind)) {
    return scoring->exclusive;
  }
  return std::holds_alternative<Analysis>(kind);
}

}  // namespace skipserve
