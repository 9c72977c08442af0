#include "engine/tools/bench_parity.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "engine/create_backend.h"
#include "engine/model/synthetic.h"
#include "nlohmann/json.hpp"

namespace skipserve::bench {
namespace {

using Json = nlohmann::json;

struct Sequence {
  std::vector<int32_t> tokens;
  std::string policy;
  LayerPlan plan;
  std::vector<int> chunks;
  int start_step = 0;
  std::unique_ptr<SequenceKv> kv;
  int pos = 0;
  size_t row_offset = 0;  // into the output, in rows
};

std::string PlanBits(const LayerPlan& plan) {
  std::string a, f;
  for (int l = 0; l < plan.num_layers(); ++l) {
    a += plan.run_attn[l] ? '1' : '0';
    f += plan.run_ffn[l] ? '1' : '0';
  }
  return a + ";" + f;
}

// Reads the spec and checks its top-level fields.
absl::StatusOr<Json> ReadSpec(const std::string& spec_path) {
  std::ifstream in(spec_path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", spec_path));
  Json spec = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded() || !spec.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec_path, ": not a JSON object"));
  }
  for (const char* key : {"model", "device", "logits_out", "info_out"}) {
    if (!spec.contains(key) || !spec[key].is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec_path, ": needs the string \"", key, "\""));
    }
  }
  if (!spec.contains("sequences") || !spec["sequences"].is_array() ||
      spec["sequences"].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(spec_path, ": needs a non-empty list \"sequences\""));
  }
  return spec;
}

// One entry of "sequences", its policy compiled for `num_layers`; `where`
// names it in errors.
absl::StatusOr<Sequence> ParseSequence(const Json& j, const std::string& where,
                                       int num_layers) {
  Sequence s;
  try {
    s.tokens = j.at("tokens").get<std::vector<int32_t>>();
    s.policy = j.value("policy", "none");
    s.chunks = j.at("chunks").get<std::vector<int>>();
    s.start_step = j.value("start_step", 0);
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", e.what()));
  }
  int64_t total = 0;
  for (int c : s.chunks) {
    if (c < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": chunks must be positive"));
    }
    total += c;
  }
  if (s.tokens.empty() || total != static_cast<int64_t>(s.tokens.size()) ||
      s.start_step < 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %d tokens but chunks adding up to %d (or start_step < 0)", where,
        s.tokens.size(), total));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(const SkipPolicy policy,
                             SkipPolicy::Parse(s.policy));
  SKIPSERVE_ASSIGN_OR_RETURN(s.plan, policy.Compile(num_layers));
  return s;
}

// Runs the sequences' chunks step by step: at step t, sequence s feeds its
// chunk t - s.start_step. Copies each row's logits into `out` (rows of
// `vocab`) and appends one entry per step to `steps`. Releases the KV blocks
// whatever the outcome.
absl::Status RunSteps(Backend* backend, KvBlockManager* kv, size_t vocab,
                      std::vector<Sequence>* seqs, std::vector<float>* out,
                      Json* steps) {
  for (Sequence& s : *seqs) s.kv = std::make_unique<SequenceKv>(s.plan);
  std::vector<float> logits;
  absl::Status status;
  for (int step = 0; status.ok(); ++step) {
    Batch batch;
    std::vector<std::pair<Sequence*, int>> members;  // (sequence, tokens)
    bool remaining = false;
    for (Sequence& s : *seqs) {
      const int k = step - s.start_step;
      if (k >= static_cast<int>(s.chunks.size())) continue;
      remaining = true;
      if (k < 0) continue;
      const int n = s.chunks[k];
      status = kv->Reserve(*s.kv, s.pos + n);
      if (!status.ok()) break;
      batch.Add(&s.plan, s.kv.get(), s.pos,
                std::vector<int32_t>(s.tokens.begin() + s.pos,
                                     s.tokens.begin() + s.pos + n),
                /*all_logits=*/true);
      members.emplace_back(&s, n);
    }
    if (!status.ok() || !remaining) break;
    if (members.empty()) continue;
    logits.assign(static_cast<size_t>(batch.NumLogitRows()) * vocab, NAN);
    status = backend->Forward(batch, logits);
    if (!status.ok()) break;
    size_t row = 0;
    Json step_json = {{"rows", batch.NumRows()}, {"sequences", Json::array()}};
    for (auto& [s, n] : members) {
      std::copy(logits.begin() + row * vocab,
                logits.begin() + (row + n) * vocab,
                out->begin() + (s->row_offset + s->pos) * vocab);
      step_json["sequences"].push_back(
          {{"index", s - seqs->data()}, {"start", s->pos}, {"tokens", n}});
      s->pos += n;
      row += n;
    }
    steps->push_back(step_json);
  }
  for (Sequence& s : *seqs) kv->Release(*s.kv);
  return status;
}

// Writes the logits to spec's "logits_out" and the description of the run
// to its "info_out".
absl::Status WriteOutputs(const Json& spec, const std::string& device,
                          size_t vocab, const std::vector<Sequence>& seqs,
                          const std::vector<float>& out, const Json& steps) {
  std::ofstream logits_out(spec["logits_out"].get<std::string>(),
                           std::ios::binary);
  logits_out.write(reinterpret_cast<const char*>(out.data()),
                   static_cast<std::streamsize>(out.size() * sizeof(float)));
  if (!logits_out) {
    return absl::InternalError("cannot write " +
                               spec["logits_out"].get<std::string>());
  }
  Json info = {{"device", device},
               {"vocab", vocab},
               {"steps", steps},
               {"sequences", Json::array()}};
  for (const Sequence& s : seqs) {
    info["sequences"].push_back({{"policy", s.policy},
                                 {"canonical_plan", s.plan.Canonical()},
                                 {"plan", PlanBits(s.plan)},
                                 {"tokens", s.tokens.size()}});
  }
  std::ofstream info_out(spec["info_out"].get<std::string>());
  info_out << info.dump(1) << "\n";
  if (!info_out) {
    return absl::InternalError("cannot write " +
                               spec["info_out"].get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunParity(const std::string& spec_path) {
  SKIPSERVE_ASSIGN_OR_RETURN(const Json spec, ReadSpec(spec_path));
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                             OpenModel(spec["model"].get<std::string>()));
  const ModelConfig config = checkpoint->config();

  std::vector<Sequence> seqs;
  BackendOptions options;
  int64_t blocks = 0;
  size_t rows = 0;
  for (size_t i = 0; i < spec["sequences"].size(); ++i) {
    SKIPSERVE_ASSIGN_OR_RETURN(
        Sequence s, ParseSequence(spec["sequences"][i],
                                  absl::StrCat(spec_path, ": sequence ", i),
                                  config.num_layers));
    s.row_offset = rows;
    rows += s.tokens.size();
    blocks +=
        static_cast<int64_t>((s.tokens.size() + options.kv_block_size - 1) /
                             options.kv_block_size) *
        config.num_layers;
    seqs.push_back(std::move(s));
  }
  options.num_kv_blocks = static_cast<int>(blocks);
  SKIPSERVE_ASSIGN_OR_RETURN(
      const std::unique_ptr<Backend> backend,
      CreateBackend(spec["device"].get<std::string>(), *checkpoint, options));
  checkpoint.reset();
  const std::string device(backend->device_name());
  std::fprintf(stderr, "parity: device %s, %zu sequences, %zu rows\n",
               device.c_str(), seqs.size(), rows);

  KvBlockManager kv(options.num_kv_blocks, options.kv_block_size);
  const size_t vocab = config.vocab_size;
  // Rows no step writes stay NaN, which the checker rejects.
  std::vector<float> out(rows * vocab, NAN);
  Json steps = Json::array();
  SKIPSERVE_RETURN_IF_ERROR(
      RunSteps(backend.get(), &kv, vocab, &seqs, &out, &steps));
  SKIPSERVE_RETURN_IF_ERROR(
      WriteOutputs(spec, device, vocab, seqs, out, steps));
  std::fprintf(stderr, "parity: %zu steps written\n", steps.size());
  return absl::OkStatus();
}

}  // namespace skipserve::bench
