// Fuzzes request validation (server/request_validation.h) as the server
// runs it: the input's first byte picks the message (GenerateRequest,
// ScoreRequest or a PolicySelector), the rest is its wire bytes, parsed by
// the server's own ParseRequest (server/base/raw_message.h; invalid UTF-8 is
// its error, not protobuf's log line) and validated against the embedded
// default model's shape (8 layers, vocabulary 1024, context 1024), a
// tokenizer trained like the embedded model's, and a registry with a
// named policy and an experiment.
//
// Checked beyond "no crash, no sanitizer report": errors are short (they
// quote at most ~100 bytes of any input, docs/security.md), and an
// accepted request becomes engine work the scheduler's contract allows
// (prompt ids inside the vocabulary, at least one token left to generate
// within the context, a plan for 8 layers).
//
// The tokenizer: $SKIPSERVE_FUZZ_TOKENIZER (a tokenizer.model) when set,
// else one trained once per process from engine/tokenizer/corpus.txt (a few
// seconds).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/base/check.h"
#include "engine/model/config.h"
#include "engine/scheduler/sequence.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "server/admin/policy_registry.h"
#include "server/base/raw_message.h"
#include "server/request_validation.h"
#include "skipserve/v1/inference.pb.h"

namespace {

using ::skipserve::ModelConfig;
using ::skipserve::Tokenizer;
using ::skipserve::server::ServingContext;

// The embedded default model's config.json (engine/tools/model_main.cc's
// preset "default").
constexpr char kConfig[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_act": "silu", "hidden_size": 256, "intermediate_size": 704,
  "num_hidden_layers": 8, "num_attention_heads": 8,
  "num_key_value_heads": 2, "vocab_size": 1024,
  "max_position_embeddings": 1024, "rms_norm_eps": 1e-05,
  "bos_token_id": 1, "eos_token_id": 2})";

// Errors quote at most ~100 bytes of each input; the longest fixed texts
// and numbers stay far below this.
constexpr size_t kMaxMessageBytes = 1024;

[[noreturn]] void Fail(const std::string& what, const absl::Status& status) {
  std::fprintf(stderr, "request_validation_fuzzer: %s: %s\n", what.c_str(),
               status.ToString().c_str());
  std::abort();
}

struct Fixture {
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<skipserve::server::PolicyRegistry> registry;
  ServingContext context;
};

std::string TokenizerPath() {
  if (const char* path = std::getenv("SKIPSERVE_FUZZ_TOKENIZER");
      path != nullptr && *path != '\0') {
    return path;
  }
  const char* base = std::getenv("TMPDIR");
  std::string dir =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
      "/skipserve-fuzz-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  const std::string model = dir + "/tokenizer.model";
  const absl::Status trained = skipserve::TrainTokenizer(
      SKIPSERVE_SOURCE_DIR "/engine/tokenizer/corpus.txt", 1024, model);
  if (!trained.ok()) Fail("training the tokenizer", trained);
  return model;
}

Fixture* MakeFixture() {
  auto* f = new Fixture();
  absl::StatusOr<ModelConfig> config = ModelConfig::FromJson(kConfig, "fuzz");
  if (!config.ok()) Fail("config", config.status());
  f->config = *config;
  const std::string tokenizer_path = TokenizerPath();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      Tokenizer::Load(tokenizer_path);
  if (!tokenizer.ok()) Fail("tokenizer", tokenizer.status());
  if (const char* given = std::getenv("SKIPSERVE_FUZZ_TOKENIZER");
      given == nullptr || *given == '\0') {
    // Trained here, into a directory of our own; loaded, it is not needed.
    std::error_code ignored;
    std::filesystem::remove_all(
        std::filesystem::path(tokenizer_path).parent_path(), ignored);
  }
  f->tokenizer = *std::move(tokenizer);
  f->registry =
      std::make_unique<skipserve::server::PolicyRegistry>(f->config.num_layers);
  const absl::Status loaded = f->registry->LoadJson(
      R"({"policies": [{"name": "fast", "spec": "attn:last=33%"},
                       {"name": "ffn-10", "spec": "ffn:last=10%"}]})",
      "fuzz");
  if (!loaded.ok()) Fail("policies", loaded);
  skipserve::server::Experiment experiment;
  experiment.name = "ab";
  experiment.arms = {{"a", "fast", false, 50}, {"b", "layer:6,7", false, 50}};
  absl::StatusOr<skipserve::server::RegistryStatePtr> put =
      f->registry->PutExperiment(experiment, std::nullopt);
  if (!put.ok()) Fail("experiment", put.status());
  f->context.config = &f->config;
  f->context.tokenizer = f->tokenizer.get();
  f->context.policies = f->registry.get();
  return f;
}

const Fixture& GetFixture() {
  static const Fixture* fixture = MakeFixture();
  return *fixture;
}

void CheckError(const absl::Status& status) {
  SKIPSERVE_CHECK(!status.ok());
  SKIPSERVE_CHECK(status.message().size() <= kMaxMessageBytes)
      << status.message().size()
      << " bytes: " << status.message().substr(0, 300);
}

void CheckPlan(const skipserve::server::ResolvedPolicy& policy,
               const Fixture& f) {
  SKIPSERVE_CHECK(policy.plan.num_layers() == f.config.num_layers);
  SKIPSERVE_CHECK(policy.canonical == policy.plan.Canonical())
      << policy.canonical;
}

void CheckPrompt(const std::vector<int32_t>& prompt, const Fixture& f) {
  SKIPSERVE_CHECK(!prompt.empty());
  for (int32_t id : prompt) {
    SKIPSERVE_CHECK(id >= 0 && id < f.config.vocab_size) << id;
  }
}

template <typename Message>
bool Parse(const uint8_t* data, size_t size, Message* message) {
  grpc::Slice slice(data, size);
  grpc::ByteBuffer buffer(&slice, 1);
  const absl::Status parsed = skipserve::server::ParseRequest(buffer, message);
  if (!parsed.ok()) CheckError(parsed);
  return parsed.ok();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  grpc_init();
  skipserve::server::InstallProtobufLogHandler();
  GetFixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Fixture& f = GetFixture();
  const uint8_t kind = data[0] % 3;
  ++data;
  --size;
  if (kind == 0) {
    skipserve::v1::GenerateRequest request;
    if (!Parse(data, size, &request)) return 0;
    absl::StatusOr<skipserve::server::GenerateJob> job =
        skipserve::server::ValidateGenerate(request, f.context);
    if (!job.ok()) {
      CheckError(job.status());
      return 0;
    }
    CheckPrompt(job->spec.prompt, f);
    const int prompt = static_cast<int>(job->spec.prompt.size());
    const int max_new_tokens =
        std::get<skipserve::Generation>(job->spec.kind).max_new_tokens;
    SKIPSERVE_CHECK(max_new_tokens >= 1) << max_new_tokens;
    SKIPSERVE_CHECK(prompt + max_new_tokens <= f.config.max_position_embeddings)
        << prompt << " + " << max_new_tokens;
    CheckPlan(job->policy, f);
  } else if (kind == 1) {
    skipserve::v1::ScoreRequest request;
    if (!Parse(data, size, &request)) return 0;
    absl::StatusOr<skipserve::server::ScoreJob> job =
        skipserve::server::ValidateScore(request, f.context);
    if (!job.ok()) {
      CheckError(job.status());
      return 0;
    }
    SKIPSERVE_CHECK(job->specs.size() ==
                    static_cast<size_t>(request.continuations_size()));
    SKIPSERVE_CHECK(job->num_bytes.size() == job->specs.size());
    for (const skipserve::SequenceSpec& spec : job->specs) {
      CheckPrompt(spec.prompt, f);
      const int prompt = static_cast<int>(spec.prompt.size());
      SKIPSERVE_CHECK(prompt <= f.config.max_position_embeddings) << prompt;
      const int score_from = std::get<skipserve::Scoring>(spec.kind).from;
      SKIPSERVE_CHECK(score_from >= 1 && score_from < prompt)
          << score_from << " of " << prompt;
    }
    CheckPlan(job->policy, f);
  } else {
    skipserve::v1::PolicySelector selector;
    if (!Parse(data, size, &selector)) return 0;
    absl::StatusOr<skipserve::server::ResolvedPolicy> policy =
        skipserve::server::ResolvePolicy(selector, f.context);
    if (!policy.ok()) {
      CheckError(policy.status());
      return 0;
    }
    CheckPlan(*policy, f);
  }
  return 0;
}
