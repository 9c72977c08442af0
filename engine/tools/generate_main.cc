// skipserve-generate: the engine alone, prompt in, text out, under a skip
// policy. Useful to try a model or a policy without the server.
//
//   skipserve-generate --prompt "Once upon a time" --policy attn:last=33%
//   skipserve-generate --model /models/Llama-2-7b-hf --max_tokens 64 ...

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "engine/engine.h"
#include "engine/model/synthetic.h"
#include "engine/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, SKIPSERVE_DEFAULT_MODEL_DIR,
          "A Hugging Face model directory, or synthetic:<preset> "
          "(no tokenizer; use --tokens).");
ABSL_FLAG(std::string, prompt, "Once upon a time", "Prompt text.");
ABSL_FLAG(std::string, tokens, "",
          "Comma-separated prompt token ids (instead of --prompt).");
ABSL_FLAG(std::string, policy, "none",
          "Skip policy, e.g. none, attn:last=33%, layer:28-31.");
ABSL_FLAG(int, max_tokens, 32, "Tokens to generate, >= 1.");
ABSL_FLAG(float, temperature, 0.0f, "0 = greedy; (0, 100].");
ABSL_FLAG(float, top_p, 1.0f, "Nucleus sampling mass, (0, 1].");
ABSL_FLAG(int, top_k, 0, "Keep the k most likely tokens; 0 = off.");
ABSL_FLAG(uint64_t, seed, 0, "Sampling seed: same seed, same tokens.");
ABSL_FLAG(bool, logprobs, false, "Print each token with its log-probability.");
ABSL_FLAG(int, threads, 0, "CPU threads; 0 = all cores.");
ABSL_FLAG(std::string, cpu_weights, "stored",
          "How the CPU backend keeps weight matrices: stored (the checkpoint's "
          "dtype), f32, f16 or bf16 (converted at load). Ignored on CUDA.");
ABSL_FLAG(std::string, device, "auto", "cpu, cuda or auto.");

namespace skipserve {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int32_t id;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--tokens: '%s' is not a token id", part));
    }
    ids.push_back(id);
  }
  return ids;
}

// The tokenizer next to a model directory; none for a synthetic model.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(
    const std::string& model_spec) {
  if (model_spec.rfind("synthetic:", 0) == 0) {
    return std::unique_ptr<Tokenizer>();
  }
  return Tokenizer::Load(model_spec + "/tokenizer.model");
}

// The prompt's token ids: --tokens, else --prompt through `tokenizer`.
absl::StatusOr<std::vector<int32_t>> PromptTokens(const Tokenizer* tokenizer) {
  if (!absl::GetFlag(FLAGS_tokens).empty()) {
    return ParseTokenIds(absl::GetFlag(FLAGS_tokens));
  }
  if (tokenizer == nullptr) {
    return absl::InvalidArgumentError(
        "a synthetic model has no tokenizer: pass --tokens");
  }
  SKIPSERVE_ASSIGN_OR_RETURN(const std::vector<int> ids,
                             tokenizer->Encode(absl::GetFlag(FLAGS_prompt)));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

// Opens the engine on `checkpoint` with room for `context` tokens.
absl::StatusOr<std::unique_ptr<Engine>> OpenEngine(const Checkpoint& checkpoint,
                                                   int context) {
  BackendOptions options;
  options.num_threads = absl::GetFlag(FLAGS_threads);
  SKIPSERVE_ASSIGN_OR_RETURN(options.cpu_weights,
                             ParseCpuWeights(absl::GetFlag(FLAGS_cpu_weights)));
  options.num_kv_blocks = (context + options.kv_block_size - 1) /
                          options.kv_block_size *
                          checkpoint.config().num_layers;
  EngineOptions engine_options;
  engine_options.device = absl::GetFlag(FLAGS_device);
  engine_options.backend = options;
  return Engine::Open(checkpoint, engine_options);
}

// The request the sampling flags describe.
GenerationRequest RequestFromFlags(std::vector<int32_t> prompt,
                                   const LayerPlan& plan, int eos_token_id) {
  GenerationRequest request;
  request.prompt = std::move(prompt);
  request.plan = plan;
  request.max_new_tokens = absl::GetFlag(FLAGS_max_tokens);
  request.sampling.temperature = absl::GetFlag(FLAGS_temperature);
  request.sampling.top_p = absl::GetFlag(FLAGS_top_p);
  request.sampling.top_k = absl::GetFlag(FLAGS_top_k);
  request.sampling.seed = absl::GetFlag(FLAGS_seed);
  request.stop_ids = {eos_token_id};
  return request;
}

// Generates `request` on `engine`: the prompt and the text on stdout (or,
// with --logprobs or without a tokenizer, one "id logprob piece" line per
// token), then the counts and timings on stderr.
absl::Status GenerateAndReport(Engine* engine, const GenerationRequest& request,
                               const Tokenizer* tokenizer) {
  std::unique_ptr<Detokenizer> detokenizer;
  if (tokenizer != nullptr && !absl::GetFlag(FLAGS_logprobs)) {
    std::cout << absl::GetFlag(FLAGS_prompt) << std::flush;
    detokenizer = std::make_unique<Detokenizer>(tokenizer,
                                                /*at_start_of_text=*/false);
  }
  SKIPSERVE_ASSIGN_OR_RETURN(
      const GenerationResult result,
      engine->Generate(request, [&](const SampledToken& token) {
        if (detokenizer != nullptr) {
          std::cout << detokenizer->Add(token.id) << std::flush;
        } else {
          std::cout << absl::StrFormat(
              "%d\t%.4f\t%s\n", token.id, token.logprob,
              tokenizer ? std::string(tokenizer->IdToPiece(token.id)) : "");
        }
      }));
  if (detokenizer != nullptr) std::cout << detokenizer->Flush() << "\n";
  const double decode_rate =
      result.tokens.size() > 1
          ? (result.tokens.size() - 1) / result.decode_seconds
          : 0.0;
  std::fprintf(stderr,
               "%zu prompt tokens, %zu generated (%s); first token %.1f ms, "
               "decode %.1f tokens/s\n",
               request.prompt.size(), result.tokens.size(),
               FinishReasonName(result.finish_reason),
               result.prefill_seconds * 1e3, decode_rate);
  return absl::OkStatus();
}

absl::Status Run() {
  const std::string model_spec = absl::GetFlag(FLAGS_model);
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                             OpenModel(model_spec));
  // A copy: the checkpoint is closed once the engine holds the weights.
  const ModelConfig config = checkpoint->config();
  SKIPSERVE_ASSIGN_OR_RETURN(const std::unique_ptr<Tokenizer> tokenizer,
                             LoadTokenizer(model_spec));
  SKIPSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                             PromptTokens(tokenizer.get()));
  SKIPSERVE_ASSIGN_OR_RETURN(const SkipPolicy policy,
                             SkipPolicy::Parse(absl::GetFlag(FLAGS_policy)));
  SKIPSERVE_ASSIGN_OR_RETURN(const LayerPlan plan,
                             policy.Compile(config.num_layers));

  const int context =
      static_cast<int>(prompt.size()) + absl::GetFlag(FLAGS_max_tokens);
  SKIPSERVE_ASSIGN_OR_RETURN(const std::unique_ptr<Engine> engine,
                             OpenEngine(*checkpoint, context));
  checkpoint.reset();  // the backend holds its own copy of the weights
  SchedulerOptions scheduler_options;
  // A vocabulary padded beyond the tokenizer's pieces: never sample padding.
  if (tokenizer != nullptr) {
    scheduler_options.sampled_vocab_size =
        std::min(tokenizer->vocab_size(), config.vocab_size);
  }
  SKIPSERVE_RETURN_IF_ERROR(engine->Start(scheduler_options));

  const GenerationRequest request =
      RequestFromFlags(std::move(prompt), plan, config.eos_token_id);
  std::fprintf(stderr, "policy %s -> plan %s\n", policy.ToString().c_str(),
               plan.Canonical().c_str());
  return GenerateAndReport(engine.get(), request, tokenizer.get());
}

}  // namespace
}  // namespace skipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Generates text with the skipserve engine (CPU or CUDA).\n"
      "  skipserve-generate --prompt TEXT [--policy SPEC] [--max_tokens N]");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = skipserve::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "skipserve-generate: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
