// skipserve-bench: the paper's grid on the CPU or the CUDA engine.
//
// For policy none and attention / FFN / whole-layer skips of the last
// 10%, 25% and 33% of layers it measures, side by side in one run
// (interleaved rounds, medians):
//   (a) time to first token: prefill a prompt of N tokens and sample one
//       token (the paper's "time to predict one token");
//   (b) batch-1 decode tokens/s at a given context.
// It also measures the machine's memory bandwidth (STREAM-like copy and a
// read-only sweep) and reports each decode figure against the bytes-moved
// roofline, and each skip speedup against what the skipped bytes (decode)
// and FLOPs (prefill) predict. With --device=cuda the bandwidth is the
// device's measured copy bandwidth and bytes are counted in bf16. Decode is
// timed for each --decode_batches size (that many sequences, one token each
// per step); --mixed times a 50/50 batch of two policies against each
// policy's single-policy batch of the same size.

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/cuda/cuda_module.h"
#include "engine/model/synthetic.h"
#include "engine/runtime/cost_model.h"
#include "engine/runtime/create_backend.h"
#include "engine/tools/bench_machine.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "synthetic:llama2-110m",
          "Model directory or synthetic:<preset>.");
ABSL_FLAG(std::string, prompt_lens, "128,512",
          "Prompt lengths for the time-to-first-token measurement.");
ABSL_FLAG(int, decode_context, 128, "Context before decode is timed.");
ABSL_FLAG(int, decode_tokens, 32, "Decode steps timed per measurement.");
ABSL_FLAG(int, rounds, 3, "Interleaved rounds; medians are reported.");
ABSL_FLAG(int, threads, 0, "Threads; 0 = all cores.");
ABSL_FLAG(std::string, policies,
          "none,attn:last=10%,attn:last=25%,attn:last=33%,ffn:last=10%,"
          "ffn:last=25%,ffn:last=33%,layer:last=10%,layer:last=25%,"
          "layer:last=33%",
          "Comma-separated policies (use ';' inside a policy).");
ABSL_FLAG(std::string, out, "", "Write the results as JSON here.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or auto.");
ABSL_FLAG(std::string, decode_batches, "1",
          "Comma-separated decode batch sizes (sequences per step).");
ABSL_FLAG(std::string, mixed, "",
          "Two policies A|B: time a 50/50 batch of both against single-policy "
          "batches of the same size (the largest --decode_batches).");

namespace skipserve {
namespace {

using Clock = std::chrono::steady_clock;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct PolicyRun {
  std::string policy;
  LayerPlan plan;
  std::vector<std::vector<double>> ttft;        // (prompt_lens, rounds) seconds
  std::vector<std::vector<double>> decode_tps;  // (decode_batches, rounds)
};

class Bench {
 public:
  Bench(Backend* backend, KvBlockManager* kv) : backend_(backend), kv_(kv) {}

  // Prefill `n` tokens and pick the next one; seconds.
  absl::StatusOr<double> TimeToFirstToken(const LayerPlan& plan, int n) {
    SequenceKv seq(plan);
    const auto start = Clock::now();
    absl::Status s = Prefill(plan, seq, n);
    volatile int next = 0;
    if (s.ok()) {
      next = static_cast<int>(std::max_element(logits_.begin(), logits_.end()) -
                              logits_.begin());
    }
    const double seconds =
        std::chrono::duration<double>(Clock::now() - start).count();
    (void)next;
    kv_->Release(seq);
    if (!s.ok()) return s;
    return seconds;
  }

  // Decode `steps` tokens for each of plans.size() sequences, one batch per
  // step, after a context of `context`; tokens/s over all sequences.
  absl::StatusOr<double> DecodeRate(const std::vector<const LayerPlan*>& plans,
                                    int context, int steps) {
    std::vector<std::unique_ptr<SequenceKv>> seqs;
    absl::Status s;
    for (const LayerPlan* plan : plans) {
      seqs.push_back(std::make_unique<SequenceKv>(*plan));
      if (s.ok()) s = Prefill(*plan, *seqs.back(), context);
    }
    double seconds = 0;
    if (s.ok()) {
      const auto start = Clock::now();
      for (int i = 0; i < steps && s.ok(); ++i) {
        Batch batch;
        for (size_t j = 0; j < seqs.size() && s.ok(); ++j) {
          s = kv_->Reserve(*seqs[j], context + i + 1);
          batch.Add(plans[j], seqs[j].get(), context + i, {Token(context + i)});
        }
        if (s.ok()) s = Forward(batch);
      }
      seconds = std::chrono::duration<double>(Clock::now() - start).count();
    }
    for (auto& seq : seqs) kv_->Release(*seq);
    if (!s.ok()) return s;
    return static_cast<double>(steps) * plans.size() / seconds;
  }

 private:
  int32_t Token(int i) const {
    return static_cast<int32_t>((i * 7919 + 13) %
                                backend_->config().vocab_size);
  }
  absl::Status Prefill(const LayerPlan& plan, SequenceKv& seq, int n) {
    std::vector<int32_t> tokens(n);
    for (int i = 0; i < n; ++i) tokens[i] = Token(i);
    return Step(plan, seq, 0, tokens);
  }
  absl::Status Step(const LayerPlan& plan, SequenceKv& seq, int pos,
                    const std::vector<int32_t>& tokens) {
    if (absl::Status s =
            kv_->Reserve(seq, pos + static_cast<int>(tokens.size()));
        !s.ok()) {
      return s;
    }
    Batch batch;
    batch.Add(&plan, &seq, pos, tokens);
    return Forward(batch);
  }
  absl::Status Forward(const Batch& batch) {
    logits_.resize(static_cast<size_t>(batch.NumLogitRows()) *
                   backend_->config().vocab_size);
    return backend_->Forward(batch, logits_);
  }

  Backend* backend_;
  KvBlockManager* kv_;
  std::vector<float> logits_;
};

absl::Status Run() {
  std::vector<int> prompt_lens;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_prompt_lens),
                                            ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(p, &n) || n < 1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--prompt_lens: '%s' is not a positive integer", p));
    }
    prompt_lens.push_back(n);
  }
  if (prompt_lens.empty()) {
    return absl::InvalidArgumentError("--prompt_lens is empty");
  }
  const int decode_context = absl::GetFlag(FLAGS_decode_context);
  const int decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : omp_get_max_threads();

  std::vector<int> batches;
  for (absl::string_view p : absl::StrSplit(absl::GetFlag(FLAGS_decode_batches),
                                            ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(p, &n) || n < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--decode_batches: '%s' is not a positive integer", p));
    }
    batches.push_back(n);
  }
  if (batches.empty()) batches.push_back(1);
  const int max_batch = *std::max_element(batches.begin(), batches.end());

  std::fprintf(stderr, "loading %s...\n", absl::GetFlag(FLAGS_model).c_str());
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint =
      OpenModel(absl::GetFlag(FLAGS_model));
  if (!checkpoint.ok()) return checkpoint.status();
  const ModelConfig config = (*checkpoint)->config();
  const int max_context =
      std::max(*std::max_element(prompt_lens.begin(), prompt_lens.end()),
               decode_context + decode_tokens);
  BackendOptions options;
  options.num_threads = threads;
  // Room for the largest decode batch at its full context (and the longest
  // prompt, which runs alone).
  const int blocks_per_seq = (max_context + options.kv_block_size - 1) /
                             options.kv_block_size * config.num_layers;
  options.num_kv_blocks = blocks_per_seq * max_batch;
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend(absl::GetFlag(FLAGS_device), **checkpoint, options);
  if (!backend.ok()) return backend.status();
  checkpoint->reset();
  const std::string device_name((*backend)->device_name());
  const bool on_gpu = device_name != "cpu";
  const int bytes_per_element = on_gpu ? 2 : 4;  // bf16 on the device
  std::fprintf(stderr, "measuring memory bandwidth...\n");
  MemoryBandwidth bandwidth;
  nlohmann::json device_json = {{"name", device_name}};
  if (on_gpu) {
    // The backend came from the CUDA module, so it is loaded.
    absl::StatusOr<CudaDeviceInfo> info = MeasureCudaDeviceFromModule();
    if (!info.ok()) return info.status();
    // A device-to-device copy: the read and the write rates are not
    // separated, so both take the copy figure.
    bandwidth.copy_gb_s = bandwidth.read_gb_s = info->copy_gb_s;
    device_json["gpu"] = info->name;
    device_json["multiprocessors"] = info->multiprocessors;
    device_json["memory_bytes"] = info->memory_bytes;
  } else {
    bandwidth = MeasureMemoryBandwidth(threads);
  }
  KvBlockManager kv(options.num_kv_blocks, options.kv_block_size);
  Bench bench(backend->get(), &kv);

  std::vector<PolicyRun> runs;
  for (absl::string_view text :
       absl::StrSplit(absl::GetFlag(FLAGS_policies), ',', absl::SkipEmpty())) {
    absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(std::string(text));
    if (!policy.ok()) return policy.status();
    absl::StatusOr<LayerPlan> plan = policy->Compile(config.num_layers);
    if (!plan.ok()) return plan.status();
    runs.push_back({policy->ToString(), *plan,
                    std::vector<std::vector<double>>(prompt_lens.size()),
                    std::vector<std::vector<double>>(batches.size())});
  }

  // Warm-up (page in weights, size scratch buffers), then interleaved rounds
  // so every policy sees the same machine conditions.
  (void)bench.DecodeRate({&runs[0].plan}, decode_context, 4);
  for (int round = 0; round < rounds; ++round) {
    std::fprintf(stderr, "round %d/%d\n", round + 1, rounds);
    for (PolicyRun& run : runs) {
      for (size_t i = 0; i < prompt_lens.size(); ++i) {
        absl::StatusOr<double> t =
            bench.TimeToFirstToken(run.plan, prompt_lens[i]);
        if (!t.ok()) return t.status();
        run.ttft[i].push_back(*t);
      }
      for (size_t b = 0; b < batches.size(); ++b) {
        absl::StatusOr<double> rate = bench.DecodeRate(
            std::vector<const LayerPlan*>(batches[b], &run.plan),
            decode_context, decode_tokens);
        if (!rate.ok()) return rate.status();
        run.decode_tps[b].push_back(*rate);
      }
    }
  }

  // 50/50 mixed-policy batch against single-policy batches of the same size.
  nlohmann::json mixed_json;
  if (!absl::GetFlag(FLAGS_mixed).empty()) {
    std::vector<LayerPlan> pair;
    for (absl::string_view text :
         absl::StrSplit(absl::GetFlag(FLAGS_mixed), '|', absl::SkipEmpty())) {
      absl::StatusOr<SkipPolicy> policy = SkipPolicy::Parse(std::string(text));
      if (!policy.ok()) return policy.status();
      absl::StatusOr<LayerPlan> plan = policy->Compile(config.num_layers);
      if (!plan.ok()) return plan.status();
      pair.push_back(*plan);
    }
    if (pair.size() != 2) {
      return absl::InvalidArgumentError("--mixed wants two policies: A|B");
    }
    std::vector<const LayerPlan*> mixed(max_batch);
    for (int i = 0; i < max_batch; ++i) mixed[i] = &pair[i % 2];
    std::vector<double> a_rates, b_rates, mixed_rates;
    for (int round = 0; round < rounds; ++round) {
      for (auto [plans, rates] :
           {std::pair{std::vector<const LayerPlan*>(max_batch, &pair[0]),
                      &a_rates},
            std::pair{std::vector<const LayerPlan*>(max_batch, &pair[1]),
                      &b_rates},
            std::pair{mixed, &mixed_rates}}) {
        absl::StatusOr<double> rate =
            bench.DecodeRate(plans, decode_context, decode_tokens);
        if (!rate.ok()) return rate.status();
        rates->push_back(*rate);
      }
    }
    mixed_json = {{"policies", absl::GetFlag(FLAGS_mixed)},
                  {"batch", max_batch},
                  {"tokens_per_s_a_only", Median(a_rates)},
                  {"tokens_per_s_b_only", Median(b_rates)},
                  {"tokens_per_s_mixed", Median(mixed_rates)}};
    std::printf(
        "mixed %s batch %d: A only %.1f, B only %.1f, 50/50 %.1f "
        "tokens/s\n",
        absl::GetFlag(FLAGS_mixed).c_str(), max_batch, Median(a_rates),
        Median(b_rates), Median(mixed_rates));
  }

  nlohmann::json out;
  out["machine"] = DescribeMachine();
  out["machine"]["threads_used"] = threads;
  out["device"] = device_json;
  if (!mixed_json.is_null()) out["mixed"] = mixed_json;
  out["memory_bandwidth_gb_s"] = {{"copy", bandwidth.copy_gb_s},
                                  {"read", bandwidth.read_gb_s}};
  out["model"] = {{"spec", absl::GetFlag(FLAGS_model)},
                  {"layers", config.num_layers},
                  {"hidden", config.hidden_size},
                  {"parameters", config.NumParameters()},
                  {"dtype_in_engine", on_gpu ? "bf16" : "f32"}};
  out["settings"] = {{"prompt_lens", prompt_lens},
                     {"decode_context", decode_context},
                     {"decode_tokens", decode_tokens},
                     {"decode_batches", batches},
                     {"rounds", rounds}};
  const PolicyRun& base = runs[0];
  // Bytes one decode step of `batch` sequences moves: the weights once,
  // the K/V of every sequence.
  auto step_bytes = [&](const LayerPlan& plan, int batch) {
    const double weights = DecodeBytes(config, plan, 0, bytes_per_element);
    return weights + batch * (DecodeBytes(config, plan, decode_context,
                                          bytes_per_element) -
                              weights);
  };

  std::printf("memory bandwidth: copy %.1f GB/s, read %.1f GB/s (%d threads)\n",
              bandwidth.copy_gb_s, bandwidth.read_gb_s, threads);
  std::printf("%-16s", "policy");
  for (int n : prompt_lens) std::printf(" ttft@%-4d speedup(pred)", n);
  for (int b : batches) {
    std::printf("  decode@b%-3d tok/s speedup(pred) roofline%%", b);
  }
  std::printf("\n");
  for (const PolicyRun& run : runs) {
    nlohmann::json row;
    row["policy"] = run.policy;
    row["plan"] = run.plan.Canonical();
    std::printf("%-16s", run.policy.c_str());
    for (size_t i = 0; i < prompt_lens.size(); ++i) {
      const double t = Median(run.ttft[i]);
      const double speedup = Median(base.ttft[i]) / t;
      const double predicted = PrefillFlops(config, base.plan, prompt_lens[i]) /
                               PrefillFlops(config, run.plan, prompt_lens[i]);
      std::printf(" %7.1fms %5.3f(%5.3f)", t * 1e3, speedup, predicted);
      row["ttft"].push_back({{"prompt_len", prompt_lens[i]},
                             {"seconds", t},
                             {"all_rounds", run.ttft[i]},
                             {"speedup", speedup},
                             {"predicted_speedup_flops", predicted}});
    }
    for (size_t b = 0; b < batches.size(); ++b) {
      const double tps = Median(run.decode_tps[b]);
      const double bytes = step_bytes(run.plan, batches[b]);
      // The roofline: the step's bytes moved at the STREAM-like copy rate
      // (read + write bytes per second); the read-only rate is reported too.
      const double roofline_tps =
          batches[b] * bandwidth.copy_gb_s * 1e9 / bytes;
      const double read_roofline_tps =
          batches[b] * bandwidth.read_gb_s * 1e9 / bytes;
      const double speedup = tps / Median(base.decode_tps[b]);
      const double predicted = step_bytes(base.plan, batches[b]) / bytes;
      std::printf("  %16.1f %5.3f(%5.3f) %8.1f", tps, speedup, predicted,
                  100.0 * tps / roofline_tps);
      nlohmann::json decode = {
          {"batch", batches[b]},
          {"tokens_per_s", tps},
          {"all_rounds", run.decode_tps[b]},
          {"bytes_per_step", bytes},
          {"roofline_tokens_per_s_copy_bw", roofline_tps},
          {"roofline_share", tps / roofline_tps},
          {"roofline_tokens_per_s_read_bw", read_roofline_tps},
          {"roofline_share_read_bw", tps / read_roofline_tps},
          {"speedup", speedup},
          {"predicted_speedup_bytes", predicted}};
      // Batch 1 keeps the key the CPU reports already use.
      if (batches[b] == 1) row["decode"] = decode;
      row["decode_batches"].push_back(decode);
    }
    std::printf("\n");
    out["policies"].push_back(row);
  }
  if (!absl::GetFlag(FLAGS_out).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
    std::fprintf(stderr, "wrote %s\n", absl::GetFlag(FLAGS_out).c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace skipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Benchmarks the engine (CPU or CUDA) over the paper's skip-policy "
      "grid.");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = skipserve::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "skipserve-bench: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
