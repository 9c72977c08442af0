#ifndef SKIPSERVE_ENGINE_BASE_STATUS_MACROS_H_
#define SKIPSERVE_ENGINE_BASE_STATUS_MACROS_H_

// Status propagation (Debian 12's Abseil has no public status macros):
//
//   SKIPSERVE_RETURN_IF_ERROR(file.Validate());
//     returns the absl::Status of `file.Validate()` from the enclosing
//     function when it is not OK;
//   SKIPSERVE_ASSIGN_OR_RETURN(Checkpoint checkpoint, Checkpoint::Open(dir));
//     evaluates an absl::StatusOr<T>, returns its status when it is not OK,
//     else declares (or assigns) the left-hand side with the moved value.
//
// The enclosing function returns absl::Status or any absl::StatusOr<U>
// (both convert from a non-OK absl::Status). Each expression is evaluated
// exactly once.

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SKIPSERVE_RETURN_IF_ERROR(expr)                                    \
  do {                                                                     \
    ::absl::Status skipserve_status_internal = (expr);                     \
    if (!skipserve_status_internal.ok()) return skipserve_status_internal; \
  } while (false)

#define SKIPSERVE_STATUS_CONCAT_INNER_(a, b) a##b
#define SKIPSERVE_STATUS_CONCAT_(a, b) SKIPSERVE_STATUS_CONCAT_INNER_(a, b)

#define SKIPSERVE_ASSIGN_OR_RETURN(lhs, expr) \
  SKIPSERVE_ASSIGN_OR_RETURN_IMPL_(           \
      SKIPSERVE_STATUS_CONCAT_(skipserve_statusor_, __LINE__), lhs, expr)

// `lhs` may be a declaration (`Type name`), which parentheses would break.
// NOLINTBEGIN(bugprone-macro-parentheses)
#define SKIPSERVE_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                     \
  if (!statusor.ok()) return std::move(statusor).status();    \
  lhs = std::move(statusor).value()
// NOLINTEND(bugprone-macro-parentheses)

#endif  // SKIPSERVE_ENGINE_BASE_STATUS_MACROS_H_
