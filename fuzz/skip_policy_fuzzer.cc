// Fuzzes the skip-policy text parser (engine/policy/skip_policy.h) with
// arbitrary bytes. Beyond "no crash, no sanitizer report", it checks what
// the header promises for every text Parse accepts: the canonical form
// parses back to an equal policy, and for layer counts 1..kMaxLayers a
// compiled plan's canonical text compiles back to the same plan.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/base/check.h"
#include "engine/policy/skip_policy.h"

namespace {

using ::skipserve::LayerPlan;
using ::skipserve::SkipPolicy;

// Layer counts the compiled plans are checked at: small ones (most ranges
// out of bounds) and Llama sizes.
constexpr int kLayerCounts[] = {1, 2, 3, 8, 32, 80};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(text);
  if (!policy.ok()) {
    // Errors quote at most ~100 bytes of the text (engine/base/quote.h).
    SKIPSERVE_CHECK(policy.status().message().size() < 1024)
        << policy.status().message().size() << " bytes of message";
    return 0;
  }
  SKIPSERVE_CHECK(text.size() <= SkipPolicy::kMaxTextBytes) << text.size();

  const std::string canonical = policy->ToString();
  absl::StatusOr<SkipPolicy> again = SkipPolicy::Parse(canonical);
  SKIPSERVE_CHECK(again.ok()) << canonical << ": " << again.status();
  SKIPSERVE_CHECK(*again == *policy) << canonical;
  SKIPSERVE_CHECK(again->ToString() == canonical) << canonical;

  for (int layers : kLayerCounts) {
    absl::StatusOr<LayerPlan> plan = policy->Compile(layers);
    if (!plan.ok()) continue;
    SKIPSERVE_CHECK(plan->num_layers() == layers);
    const std::string plan_text = plan->Canonical();
    absl::StatusOr<SkipPolicy> reparsed = SkipPolicy::Parse(plan_text);
    SKIPSERVE_CHECK(reparsed.ok()) << plan_text << ": " << reparsed.status();
    absl::StatusOr<LayerPlan> recompiled = reparsed->Compile(layers);
    SKIPSERVE_CHECK(recompiled.ok())
        << plan_text << ": " << recompiled.status();
    SKIPSERVE_CHECK(*recompiled == *plan) << plan_text;
  }
  return 0;
}
