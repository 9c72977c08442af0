// skipserve-model: makes and inspects Hugging Face-format Llama models.
//
//   skipserve-model create --preset=default --corpus=corpus.txt --out=DIR
//   skipserve-model create --hidden=128 --intermediate=344 --layers=4 \
//       --heads=4 --kv_heads=2 --vocab=512 --dtype=bf16 --shards=3 --out=DIR
//   skipserve-model info --model=DIR
//
// `create` writes config.json, safetensors (one file or shards) with seeded
// random weights, and, given --corpus, a SentencePiece tokenizer.model
// trained on that text with the model's vocabulary size.

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/status_macros.h"
#include "engine/model/checkpoint.h"
#include "engine/model/model_writer.h"
#include "engine/model/synthetic.h"
#include "engine/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, out, "", "create: output directory.");
ABSL_FLAG(std::string, model, "", "info: model directory.");
ABSL_FLAG(std::string, preset, "",
          "create: start from a preset shape (default, tiny, llama2-110m, "
          "llama2-7b, ...); the shape flags below override it.");
ABSL_FLAG(int, hidden, 0, "hidden_size");
ABSL_FLAG(int, intermediate, 0, "intermediate_size");
ABSL_FLAG(int, layers, 0, "num_hidden_layers");
ABSL_FLAG(int, heads, 0, "num_attention_heads");
ABSL_FLAG(int, kv_heads, 0, "num_key_value_heads (GQA when < heads)");
ABSL_FLAG(int, vocab, 0, "vocab_size");
ABSL_FLAG(int, max_positions, 0, "max_position_embeddings");
ABSL_FLAG(bool, tie_embeddings, false, "tie_word_embeddings");
ABSL_FLAG(std::string, dtype, "f32", "Stored dtype: f32, f16 or bf16.");
ABSL_FLAG(int, shards, 1, "Number of safetensors shards (1 = single file).");
ABSL_FLAG(uint64_t, seed, 0, "Seed of the random weights.");
ABSL_FLAG(std::string, corpus, "",
          "create: train tokenizer.model on this text file (vocab_size "
          "pieces).");

namespace skipserve {
namespace {

absl::StatusOr<ModelConfig> ShapeFromFlags() {
  ModelConfig config;
  if (!absl::GetFlag(FLAGS_preset).empty()) {
    SKIPSERVE_ASSIGN_OR_RETURN(config,
                               SyntheticPreset(absl::GetFlag(FLAGS_preset)));
  } else {
    config = *SyntheticPreset("tiny");
  }
  auto override_int = [](int flag_value, int* field) {
    if (flag_value > 0) *field = flag_value;
  };
  override_int(absl::GetFlag(FLAGS_hidden), &config.hidden_size);
  override_int(absl::GetFlag(FLAGS_intermediate), &config.intermediate_size);
  override_int(absl::GetFlag(FLAGS_layers), &config.num_layers);
  override_int(absl::GetFlag(FLAGS_heads), &config.num_heads);
  override_int(absl::GetFlag(FLAGS_kv_heads), &config.num_kv_heads);
  override_int(absl::GetFlag(FLAGS_vocab), &config.vocab_size);
  override_int(absl::GetFlag(FLAGS_max_positions),
               &config.max_position_embeddings);
  if (absl::GetFlag(FLAGS_tie_embeddings)) config.tie_word_embeddings = true;
  if (config.num_kv_heads > config.num_heads) {
    config.num_kv_heads = config.num_heads;
  }
  SKIPSERVE_RETURN_IF_ERROR(config.Validate());
  return config;
}

absl::Status Create() {
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty()) return absl::InvalidArgumentError("--out is required");
  SKIPSERVE_ASSIGN_OR_RETURN(const ModelConfig config, ShapeFromFlags());
  std::optional<DType> dtype = ParseDType(absl::GetFlag(FLAGS_dtype));
  if (!dtype.has_value()) {
    const std::string d = absl::GetFlag(FLAGS_dtype);
    if (d == "f32") dtype = DType::kF32;
    if (d == "f16") dtype = DType::kF16;
    if (d == "bf16") dtype = DType::kBF16;
  }
  if (!dtype.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--dtype must be f32, f16 or bf16, got '%s'",
                        absl::GetFlag(FLAGS_dtype)));
  }
  const int shards = absl::GetFlag(FLAGS_shards);
  if (shards < 1) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--shards must be >= 1, got %d", shards));
  }

  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrFormat("cannot create %s: %s", out, ec.message()));
  }
  if (!absl::GetFlag(FLAGS_corpus).empty()) {
    std::fprintf(stderr, "training a %d-piece tokenizer on %s\n",
                 config.vocab_size, absl::GetFlag(FLAGS_corpus).c_str());
    SKIPSERVE_RETURN_IF_ERROR(TrainTokenizer(absl::GetFlag(FLAGS_corpus),
                                             config.vocab_size,
                                             out + "/tokenizer.model"));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(
      const std::unique_ptr<Checkpoint> checkpoint,
      MakeSyntheticCheckpoint(config, *dtype, absl::GetFlag(FLAGS_seed)));
  ModelWriteOptions options;
  options.dtype = *dtype;
  options.num_shards = shards;
  SKIPSERVE_RETURN_IF_ERROR(WriteHfModel(*checkpoint, options, out));
  std::cerr << absl::StrFormat("wrote %s: %d parameters, %s, %d shard(s)\n",
                               out, config.NumParameters(),
                               std::string(DTypeName(*dtype)), shards);
  return absl::OkStatus();
}

absl::Status Info() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  SKIPSERVE_ASSIGN_OR_RETURN(const std::unique_ptr<Checkpoint> checkpoint,
                             Checkpoint::Open(dir));
  const ModelConfig& c = checkpoint->config();
  std::cout << absl::StrFormat(
      "%s\n  layers %d, hidden %d, intermediate %d, heads %d, kv_heads %d, "
      "head_dim %d\n  vocab %d, context %d, rope_theta %g, rms_norm_eps %g, "
      "tied %s\n  %d parameters, %d bytes of weights\n",
      dir, c.num_layers, c.hidden_size, c.intermediate_size, c.num_heads,
      c.num_kv_heads, c.head_dim(), c.vocab_size, c.max_position_embeddings,
      c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings ? "yes" : "no",
      c.NumParameters(), checkpoint->TotalBytes());
  return absl::OkStatus();
}

}  // namespace
}  // namespace skipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Makes and inspects Hugging Face-format Llama models.\n"
      "  skipserve-model create --out=DIR [--preset=NAME] [shape flags] "
      "[--dtype=f32|f16|bf16] [--shards=N] [--corpus=FILE]\n"
      "  skipserve-model info --model=DIR");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string command = args.size() > 1 ? args[1] : "";
  absl::Status status;
  if (command == "create") {
    status = skipserve::Create();
  } else if (command == "info") {
    status = skipserve::Info();
  } else {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "skipserve-model: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
