// Fuzzes config.json parsing (engine/model/config.h) with arbitrary bytes.
// For every text FromJson accepts: Validate() agrees, the derived sizes are
// computed without overflow (UndefinedBehaviorSanitizer would report it),
// and ToJson() reads back to an equal config.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "engine/base/check.h"
#include "engine/model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<skipserve::ModelConfig> config =
      skipserve::ModelConfig::FromJson(text, "fuzz/config.json");
  if (!config.ok()) return 0;
  SKIPSERVE_CHECK(config->Validate().ok()) << config->Validate();
  SKIPSERVE_CHECK(config->head_dim() > 0 && config->kv_dim() > 0);
  SKIPSERVE_CHECK(config->NumParameters() > 0) << config->NumParameters();

  const std::string json = config->ToJson();
  absl::StatusOr<skipserve::ModelConfig> back =
      skipserve::ModelConfig::FromJson(json, "fuzz/config.json");
  SKIPSERVE_CHECK(back.ok()) << json << ": " << back.status();
  SKIPSERVE_CHECK(*back == *config) << json;
  return 0;
}
