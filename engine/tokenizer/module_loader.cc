// Finds and loads libskipserve_sentencepiece (see sentencepiece_module.h).

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/base/module_search.h"
#include "engine/base/status_macros.h"
#include "engine/tokenizer/sentencepiece_module.h"

namespace skipserve {
namespace {

struct Module {
  SkipserveSpmLoadFn* load = nullptr;
  SkipserveSpmTrainFn* train = nullptr;
};

absl::StatusOr<Module> OpenModule() {
  ModuleSpec spec;
  spec.kind = "SentencePiece";
  spec.file_name = kSentencePieceModuleFileName;
  spec.env_var = "SKIPSERVE_SENTENCEPIECE_MODULE";
#ifdef SKIPSERVE_SENTENCEPIECE_MODULE_PATH
  spec.build_path = SKIPSERVE_SENTENCEPIECE_MODULE_PATH;
#endif
  spec.needed_by = "the tokenizer";
  // RTLD_DEEPBIND: the module and SentencePiece resolve their own references
  // (the protobuf 3.14 it bundles) before the process's libprotobuf.
  spec.deep_bind = true;
  spec.abi_version_symbol = kSkipserveSpmAbiVersionSymbol;
  spec.abi_version = kSentencePieceModuleAbiVersion;
  spec.symbols = {kSkipserveSpmLoadSymbol, kSkipserveSpmTrainSymbol};
  SKIPSERVE_ASSIGN_OR_RETURN(std::vector<void*> symbols, LoadModule(spec));
  return Module{reinterpret_cast<SkipserveSpmLoadFn*>(symbols[0]),
                reinterpret_cast<SkipserveSpmTrainFn*>(symbols[1])};
}

// The module, loaded on first use (thread-safe) and never unloaded; a failure
// is remembered too.
const absl::StatusOr<Module>& GetModule() {
  static const absl::StatusOr<Module>* const module =
      new absl::StatusOr<Module>(OpenModule());
  return *module;
}

}  // namespace

absl::Status SentencePieceModuleStatus() { return GetModule().status(); }

absl::StatusOr<std::unique_ptr<SentencePieceModel>> LoadSentencePieceModel(
    const std::string& path) {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) {
    return module.status();
  }
  absl::Status status;
  std::unique_ptr<SentencePieceModel> model(
      module->load(path.c_str(), &status));
  if (!status.ok()) {
    return status;
  }
  if (model == nullptr) {
    return absl::InternalError(
        absl::StrCat("the SentencePiece module returned no model for ", path));
  }
  return model;
}

absl::Status TrainSentencePieceModel(const std::string& corpus_path,
                                     int vocab_size, std::string* model) {
  const absl::StatusOr<Module>& module = GetModule();
  if (!module.ok()) {
    return module.status();
  }
  absl::Status status;
  module->train(corpus_path.c_str(), vocab_size, model, &status);
  return status;
}

}  // namespace skipserve
