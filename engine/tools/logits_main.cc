// skipserve-logits: token ids in, every position's logits out, for parity
// checks against other implementations (bench/gpu/hf_parity.py).
//
//   skipserve-logits --model DIR --device cuda --tokens 1,5,9 --out x.f32
//
// Writes (num_tokens, vocab) little-endian float32 values, row-major. The
// tokens are fed in chunks of --chunk tokens (0: all at once; 1: one per
// step, exercising decode), so the same logits come through the prefill
// and the decode paths.

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "engine/create_backend.h"
#include "engine/model/synthetic.h"

ABSL_FLAG(std::string, model, "", "Model directory or synthetic:<preset>.");
ABSL_FLAG(std::string, device, "auto", "cpu, cuda or auto.");
ABSL_FLAG(std::string, tokens, "", "Comma-separated token ids.");
ABSL_FLAG(std::string, policy, "none", "Skip policy.");
ABSL_FLAG(int, chunk, 0, "Tokens per step; 0 = all in one step.");
ABSL_FLAG(std::string, out, "", "Output file (float32, (tokens, vocab)).");

namespace skipserve {
namespace {

absl::Status Run() {
  std::vector<int32_t> tokens;
  for (absl::string_view part :
       absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--tokens: '%s' is not a token id", part));
    }
    tokens.push_back(id);
  }
  if (tokens.empty() || absl::GetFlag(FLAGS_out).empty()) {
    return absl::InvalidArgumentError("--tokens and --out are required");
  }
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                             OpenModel(absl::GetFlag(FLAGS_model)));
  const ModelConfig config = checkpoint->config();
  SKIPSERVE_ASSIGN_OR_RETURN(const SkipPolicy policy,
                             SkipPolicy::Parse(absl::GetFlag(FLAGS_policy)));
  SKIPSERVE_ASSIGN_OR_RETURN(const LayerPlan plan,
                             policy.Compile(config.num_layers));

  const int n = static_cast<int>(tokens.size());
  BackendOptions options;
  options.num_kv_blocks = (n + options.kv_block_size - 1) /
                          options.kv_block_size * config.num_layers;
  SKIPSERVE_ASSIGN_OR_RETURN(
      const std::unique_ptr<Backend> backend,
      CreateBackend(absl::GetFlag(FLAGS_device), *checkpoint, options));
  checkpoint.reset();
  std::fprintf(stderr, "device %s\n",
               std::string(backend->device_name()).c_str());

  KvBlockManager blocks(options.num_kv_blocks, options.kv_block_size);
  SequenceKv seq(plan);
  const int chunk =
      absl::GetFlag(FLAGS_chunk) > 0 ? absl::GetFlag(FLAGS_chunk) : n;
  std::vector<float> logits(static_cast<size_t>(n) * config.vocab_size);
  absl::Status status;
  for (int pos = 0; pos < n && status.ok(); pos += chunk) {
    const int count = std::min(chunk, n - pos);
    status = blocks.Reserve(seq, pos + count);
    if (!status.ok()) break;
    Batch batch;
    batch.Add(&plan, &seq, pos,
              std::vector<int32_t>(tokens.begin() + pos,
                                   tokens.begin() + pos + count),
              /*all_logits=*/true);
    status = backend->Forward(
        batch, std::span<float>(
                   logits.data() + static_cast<size_t>(pos) * config.vocab_size,
                   static_cast<size_t>(count) * config.vocab_size));
  }
  blocks.Release(seq);
  if (!status.ok()) return status;
  std::ofstream out(absl::GetFlag(FLAGS_out), std::ios::binary);
  out.write(reinterpret_cast<const char*>(logits.data()),
            static_cast<std::streamsize>(logits.size() * sizeof(float)));
  if (!out) {
    return absl::InternalError("cannot write " + absl::GetFlag(FLAGS_out));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace skipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes every position's logits for a token sequence.\n"
      "  skipserve-logits --model DIR --tokens 1,2,3 --out logits.f32");
  absl::ParseCommandLine(argc, argv);
  const absl::Status status = skipserve::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "skipserve-logits: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
