// libskipserve_sentencepiece: SentencePiece behind the SentencePieceModel
// interface, built as a shared module that the tokenizer dlopen()s with
// RTLD_LOCAL | RTLD_DEEPBIND (see sentencepiece_module.h for why). Compiled
// with hidden visibility: only the extern "C" factories are exported.

#include "engine/tokenizer/sentencepiece_module.h"

// SentencePiece's headers declare `namespace absl { using std::string_view; }`,
// which collides with Debian's Abseil (built with its own absl::string_view
// class). Renaming the namespace for these two headers keeps their
// declarations, and the library's symbols, on std::string_view.
#define absl skipserve_sentencepiece_absl
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#undef absl

#include <dlfcn.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <istream>
#include <memory>
#include <new>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#define SKIPSERVE_SPM_EXPORT __attribute__((visibility("default")))

namespace skipserve {
namespace {

// sentencepiece::util::StatusCode mirrors absl::StatusCode value for value.
absl::Status FromSentencePiece(const sentencepiece::util::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.code()),
                      status.message());
}

class SentencePieceModelImpl final : public SentencePieceModel {
 public:
  absl::Status Load(const std::string& path) {
    return FromSentencePiece(sp_.Load(path));
  }

  absl::Status Encode(std::string_view text,
                      std::vector<int>* ids) const override {
    return FromSentencePiece(sp_.Encode(text, ids));
  }
  std::string DecodeIds(const std::vector<int>& ids) const override {
    return sp_.DecodeIds(ids);
  }
  int GetPieceSize() const override { return sp_.GetPieceSize(); }
  int PieceToId(std::string_view piece) const override {
    return sp_.PieceToId(piece);
  }
  const std::string& IdToPiece(int id) const override {
    return sp_.IdToPiece(id);
  }
  bool IsControl(int id) const override { return sp_.IsControl(id); }
  bool IsUnknown(int id) const override { return sp_.IsUnknown(id); }
  bool IsByte(int id) const override { return sp_.IsByte(id); }
  bool IsUnused(int id) const override { return sp_.IsUnused(id); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  int unk_id() const override { return sp_.unk_id(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

// Feeds the corpus to the trainer line by line.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(std::ifstream* in) : in_(in) { Next(); }

  bool done() const override { return done_; }
  void Next() override { done_ = !std::getline(*in_, line_); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (in_->bad()) {
      return sentencepiece::util::Status(
          sentencepiece::util::StatusCode::kDataLoss, "read error");
    }
    return sentencepiece::util::Status();
  }

 private:
  std::ifstream* in_;  // not owned
  std::string line_;
  bool done_ = false;
};

absl::Status Train(const char* corpus_path, int vocab_size,
                   std::string* model) {
  std::ifstream corpus(corpus_path, std::ios::binary);
  if (!corpus.is_open()) {
    return absl::ErrnoToStatus(errno, "cannot open the corpus");
  }
  // Llama 2's settings, made deterministic: one thread, every sentence in file
  // order (no sampling or shuffling). Sentences come through an iterator and
  // the model back as bytes, so the model records neither the corpus path nor
  // the output path and depends only on the corpus and these options.
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", "bpe"},
      {"vocab_size", absl::StrCat(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"add_dummy_prefix", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"minloglevel", "1"},
  };
  LineIterator lines(&corpus);
  return FromSentencePiece(
      sentencepiece::SentencePieceTrainer::Train(options, &lines, model));
}

// RTLD_DEEPBIND has one trap. An executable that uses std::cout, std::cerr
// or std::cin (and most do) gets its own copy of the stream object through a
// copy relocation; libstdc++ itself binds to, and constructs, that copy. This
// module and SentencePiece (which logs to std::cerr), loaded with
// RTLD_DEEPBIND, bind to libstdc++'s original definitions instead: storage
// that nobody constructed, so the first log line would crash. When that is
// the case, construct each such stream in place over the executable's stream
// buffer, as libstdc++'s ios_base::Init does, so that both share one buffer.
template <typename Stream>
Stream* ExecutableStream(const char* symbol) {
  // The main program's own lookup scope (the executable first): unlike
  // RTLD_DEFAULT from here, it is not affected by RTLD_DEEPBIND.
  static void* const main_program = dlopen(nullptr, RTLD_NOW | RTLD_NOLOAD);
  return main_program == nullptr
             ? nullptr
             : static_cast<Stream*>(dlsym(main_program, symbol));
}

template <typename Stream>
bool NeedsConstructing(Stream& ours, const Stream* executables) {
  if (executables == nullptr || executables == &ours) {
    return false;
  }
  // Never constructed: still all zeros, its vtable pointer included.
  void* vptr;
  std::memcpy(&vptr, static_cast<const void*>(&ours), sizeof(vptr));
  return vptr == nullptr;
}

void RepairStandardStreams() {
  std::ostream* const cout = ExecutableStream<std::ostream>("_ZSt4cout");
  std::ostream* const cerr = ExecutableStream<std::ostream>("_ZSt4cerr");
  std::ostream* const clog = ExecutableStream<std::ostream>("_ZSt4clog");
  std::istream* const cin = ExecutableStream<std::istream>("_ZSt3cin");
  std::ostream* const tie = cout != nullptr ? cout : &std::cout;
  if (NeedsConstructing(std::cout, cout)) {
    new (&std::cout) std::ostream(cout->rdbuf());
    std::cout.flags(cout->flags());
  }
  if (NeedsConstructing(std::cerr, cerr)) {
    new (&std::cerr) std::ostream(cerr->rdbuf());
    std::cerr.flags(cerr->flags());  // unitbuf
    std::cerr.tie(tie);
  }
  if (NeedsConstructing(std::clog, clog)) {
    new (&std::clog) std::ostream(clog->rdbuf());
    std::clog.tie(tie);
  }
  if (NeedsConstructing(std::cin, cin)) {
    new (&std::cin) std::istream(cin->rdbuf());
    std::cin.tie(tie);
  }
}

// Runs when the module is loaded, before any factory is called.
[[maybe_unused]] const bool streams_repaired = (RepairStandardStreams(), true);

absl::Status FromException(const char* what) {
  return absl::InternalError(
      absl::StrCat("SentencePiece threw an exception: ", what));
}

}  // namespace
}  // namespace skipserve

extern "C" {

SKIPSERVE_SPM_EXPORT int skipserve_spm_abi_version() {
  return skipserve::kSentencePieceModuleAbiVersion;
}

SKIPSERVE_SPM_EXPORT skipserve::SentencePieceModel* skipserve_spm_load(
    const char* path, absl::Status* status) {
  try {
    auto model = std::make_unique<skipserve::SentencePieceModelImpl>();
    *status = model->Load(path);
    return status->ok() ? model.release() : nullptr;
  } catch (const std::exception& e) {
    *status = skipserve::FromException(e.what());
  } catch (...) {
    *status = skipserve::FromException("unknown");
  }
  return nullptr;
}

SKIPSERVE_SPM_EXPORT void skipserve_spm_train(const char* corpus_path,
                                              int vocab_size,
                                              std::string* model,
                                              absl::Status* status) {
  try {
    *status = skipserve::Train(corpus_path, vocab_size, model);
  } catch (const std::exception& e) {
    *status = skipserve::FromException(e.what());
  } catch (...) {
    *status = skipserve::FromException("unknown");
  }
}

}  // extern "C"

// The factories must match the signatures the loader expects.
static_assert(std::is_same_v<decltype(skipserve_spm_abi_version),
                             skipserve::SkipserveSpmAbiVersionFn>);
static_assert(std::is_same_v<decltype(skipserve_spm_load),
                             skipserve::SkipserveSpmLoadFn>);
static_assert(std::is_same_v<decltype(skipserve_spm_train),
                             skipserve::SkipserveSpmTrainFn>);
