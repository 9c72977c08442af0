#ifndef SKIPSERVE_ENGINE_TOKENIZER_SENTENCEPIECE_MODULE_H_
#define SKIPSERVE_ENGINE_TOKENIZER_SENTENCEPIECE_MODULE_H_

// The boundary between the tokenizer and SentencePiece.
//
// Debian's libsentencepiece bundles its own protobuf-lite (3.14) and exports
// its symbols, which clash with the libprotobuf (3.21) that gRPC needs: a
// process linking both crashes at startup. So nothing of ours links
// SentencePiece; it lives in a small shared module, libskipserve_sentencepiece
// (sentencepiece_module.cc), that the tokenizer loads with
// dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its protobuf symbols stay out of the
// global scope and it resolves its own references internally.
//
// Only standard-library types and absl::Status cross this boundary (both sides
// share the process's libstdc++ and Abseil); never SentencePiece or protobuf
// types. The module exports nothing but the extern "C" factories below.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace skipserve {

// A loaded SentencePiece model: the parts of sentencepiece::
// SentencePieceProcessor the tokenizer uses. Immutable; the const methods are
// safe to call concurrently. Ids passed in must lie in [0, GetPieceSize()).
class SentencePieceModel {
 public:
  virtual ~SentencePieceModel() = default;

  // Piece ids of `text` (no BOS/EOS). Errors carry SentencePiece's status
  // code (which mirrors absl::StatusCode) and message.
  virtual absl::Status Encode(std::string_view text,
                              std::vector<int>* ids) const = 0;
  // SentencePiece's decoding of `ids`.
  virtual std::string DecodeIds(const std::vector<int>& ids) const = 0;

  virtual int GetPieceSize() const = 0;
  // The id of `piece`, or unk_id() when the vocabulary lacks it.
  virtual int PieceToId(std::string_view piece) const = 0;
  // Valid as long as this model lives.
  virtual const std::string& IdToPiece(int id) const = 0;
  virtual bool IsControl(int id) const = 0;
  virtual bool IsUnknown(int id) const = 0;
  virtual bool IsByte(int id) const = 0;
  virtual bool IsUnused(int id) const = 0;

  // -1 when the model defines no such token.
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int unk_id() const = 0;
};

// --- The module's exported factories ---------------------------------------
//
// Bumped whenever the interface above or these signatures change; the loader
// refuses a module built with another version.
inline constexpr int kSentencePieceModuleAbiVersion = 1;

inline constexpr char kSentencePieceModuleFileName[] =
    "libskipserve_sentencepiece.so";

extern "C" {
// Returns kSentencePieceModuleAbiVersion as the module was built.
using SkipserveSpmAbiVersionFn = int();
// Loads the model file at `path`. On success returns a new model (the caller
// owns it) and leaves `*status` OK; on failure returns nullptr and sets
// `*status` to SentencePiece's error (its code mirrors absl::StatusCode:
// NOT_FOUND for a missing file, others for a file that is no model).
using SkipserveSpmLoadFn = SentencePieceModel*(const char* path,
                                               absl::Status* status);
// Trains a BPE model with byte fallback and Llama 2's conventions (see
// TrainTokenizer in tokenizer.h) on the text file `corpus_path`, one sentence
// per line, and stores the serialized model in `*model`. Sets `*status`.
using SkipserveSpmTrainFn = void(const char* corpus_path, int vocab_size,
                                 std::string* model, absl::Status* status);
}

inline constexpr char kSkipserveSpmAbiVersionSymbol[] =
    "skipserve_spm_abi_version";
inline constexpr char kSkipserveSpmLoadSymbol[] = "skipserve_spm_load";
inline constexpr char kSkipserveSpmTrainSymbol[] = "skipserve_spm_train";

// --- The host side (module_loader.cc, part of skipserve_tokenizer) ---------
//
// The module is looked for, in order:
//   1. $SKIPSERVE_SENTENCEPIECE_MODULE, if set and non-empty (then only it);
//   2. the build tree's copy (a path compiled in by CMake);
//   3. next to the running executable;
//   4. ../lib/skipserve/ relative to the running executable (installs).
// It is loaded once per process; failing to find or load it is
// FAILED_PRECONDITION naming every path tried and why each failed.

// OK once the module is loaded (loading it if need be), else the
// FAILED_PRECONDITION described above.
absl::Status SentencePieceModuleStatus();

// Loads a SentencePiece model file through the module; errors as
// SkipserveSpmLoadFn's, or the module's FAILED_PRECONDITION.
absl::StatusOr<std::unique_ptr<SentencePieceModel>> LoadSentencePieceModel(
    const std::string& path);

// Trains through the module; errors as SkipserveSpmTrainFn's, or the
// module's FAILED_PRECONDITION.
absl::Status TrainSentencePieceModel(const std::string& corpus_path,
                                     int vocab_size, std::string* model);

}  // namespace skipserve

#endif  // SKIPSERVE_ENGINE_TOKENIZER_SENTENCEPIECE_MODULE_H_
