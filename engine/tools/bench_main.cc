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
//
// Modes:
//   (flags)            the grid above, as a table and --out JSON;
//   --suite=F --suite_name=N
//                      every measurement of suite N in file F (see
//                      bench_suite.h; bench/gpu/suites.json), one process,
//                      the model built once; --results=FILE.jsonl gets a
//                      line per measurement as it is made;
//   --dry_run          checks the suite (or the flags' grid) against the
//                      model's shape and prints the KV pool it would take,
//                      without building the model;
//   --parity_spec=F    logits of several sequences sharing batches, for
//                      parity checks (bench_parity.h).
// Either of the first two exits 1 when any configuration failed (each is an
// "error" line in --results; the others are still measured).

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "engine/base/status_macros.h"
#include "engine/create_backend.h"
#include "engine/cuda/cuda_module.h"
#include "engine/model/synthetic.h"
#include "engine/tools/bench_machine.h"
#include "engine/tools/bench_parity.h"
#include "engine/tools/bench_runner.h"
#include "engine/tools/bench_suite.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, model, "synthetic:llama2-110m",
          "Model directory or synthetic:<preset>[:dtype][:fast].");
ABSL_FLAG(std::string, prompt_lens, "128,512",
          "Prompt lengths for the time-to-first-token measurement.");
ABSL_FLAG(int, decode_context, 128, "Context before decode is timed.");
ABSL_FLAG(int, decode_tokens, 32, "Decode steps timed per measurement.");
ABSL_FLAG(int, rounds, 3, "Interleaved rounds; medians are reported.");
ABSL_FLAG(int, threads, 0, "Threads; 0 = all cores.");
ABSL_FLAG(std::string, cpu_weights, "stored",
          "How the CPU backend keeps weight matrices: stored (the checkpoint's "
          "dtype), f32, f16 or bf16 (converted at load). Ignored on CUDA.");
ABSL_FLAG(std::string, policies,
          "none,attn:last=10%,attn:last=25%,attn:last=33%,ffn:last=10%,"
          "ffn:last=25%,ffn:last=33%,layer:last=10%,layer:last=25%,"
          "layer:last=33%",
          "Comma-separated policies (use ';' inside a policy).");
ABSL_FLAG(std::string, out, "", "Write the grid's results as JSON here.");
ABSL_FLAG(std::string, device, "cpu", "cpu, cuda or auto.");
ABSL_FLAG(std::string, decode_batches, "1",
          "Comma-separated decode batch sizes (sequences per step).");
ABSL_FLAG(std::string, mixed, "",
          "Two policies A|B: time a 50/50 batch of both against single-policy "
          "batches of the same size (the largest --decode_batches).");
ABSL_FLAG(std::string, suite, "",
          "Suite file (bench/gpu/suites.json): run the suite --suite_name "
          "instead of the grid the other flags describe.");
ABSL_FLAG(std::string, suite_name, "", "Which suite of --suite to run.");
ABSL_FLAG(std::string, results, "",
          "Append one JSON line per measurement, error and figure here, "
          "flushed as they are made (bench_suite.h).");
ABSL_FLAG(bool, dry_run, false,
          "Check the suite against the model's shape and print the KV pool "
          "it would take; builds no model, touches no device.");
ABSL_FLAG(int, prefill_tokens, 8192,
          "Tokens per Forward when prefilling decode contexts.");
ABSL_FLAG(double, deadline_s, 0,
          "Start no new round or configuration after this many seconds from "
          "the start (0: no deadline); what was measured is kept.");
ABSL_FLAG(double, kv_cap_gb, 0,
          "Largest KV pool (GB) taken so that a measurement's configurations "
          "run side by side; 0: 96 on a GPU, 8 on the CPU.");
ABSL_FLAG(int, bandwidth_mb, 1024,
          "MiB copied to measure a GPU's memory bandwidth.");
ABSL_FLAG(std::string, parity_spec, "",
          "Parity mode: write the logits of the sequences this JSON file "
          "describes (engine/tools/bench_parity.h) and exit.");

namespace skipserve {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

absl::StatusOr<std::vector<int>> ParseInts(const std::string& flag,
                                           const std::string& text) {
  std::vector<int> out;
  for (absl::string_view p : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(p, &n) || n < 1) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--%s: '%s' is not a positive integer", flag, std::string(p)));
    }
    out.push_back(n);
  }
  return out;
}

// The grid the flags describe, as a suite.
absl::StatusOr<std::vector<bench::Measurement>> SuiteFromFlags() {
  SKIPSERVE_ASSIGN_OR_RETURN(
      const std::vector<int> lens,
      ParseInts("prompt_lens", absl::GetFlag(FLAGS_prompt_lens)));
  if (lens.empty()) {
    return absl::InvalidArgumentError("--prompt_lens is empty");
  }
  SKIPSERVE_ASSIGN_OR_RETURN(
      std::vector<int> batches,
      ParseInts("decode_batches", absl::GetFlag(FLAGS_decode_batches)));
  if (batches.empty()) batches.push_back(1);
  std::vector<std::string> policies;
  for (absl::string_view p :
       absl::StrSplit(absl::GetFlag(FLAGS_policies), ',', absl::SkipEmpty())) {
    policies.emplace_back(p);
  }
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int context = absl::GetFlag(FLAGS_decode_context);
  const int tokens = absl::GetFlag(FLAGS_decode_tokens);
  if (policies.empty() || rounds < 1 || context < 1 || tokens < 1) {
    return absl::InvalidArgumentError(
        "--policies, --rounds, --decode_context and --decode_tokens must be "
        "non-empty / positive");
  }
  Json suite = Json::array();
  suite.push_back({{"name", "ttft"},
                   {"kind", "ttft"},
                   {"policies", policies},
                   {"prompt_lens", lens},
                   {"rounds", rounds}});
  suite.push_back({{"name", "decode"},
                   {"kind", "decode"},
                   {"policies", policies},
                   {"context", context},
                   {"batches", batches},
                   {"decode_tokens", tokens},
                   {"rounds", rounds}});
  if (!absl::GetFlag(FLAGS_mixed).empty()) {
    std::vector<std::string> pair =
        absl::StrSplit(absl::GetFlag(FLAGS_mixed), '|', absl::SkipEmpty());
    const int max_batch = *std::max_element(batches.begin(), batches.end());
    if (pair.size() != 2 || max_batch % 2 != 0) {
      return absl::InvalidArgumentError(
          "--mixed wants two policies A|B and an even largest "
          "--decode_batches");
    }
    suite.push_back({{"name", "mixed"},
                     {"kind", "mixed"},
                     {"policies", pair},
                     {"context", context},
                     {"batches", {max_batch}},
                     {"decode_tokens", tokens},
                     {"rounds", rounds}});
  }
  return bench::ParseSuite(suite);
}

// The model's shape without building it (synthetic presets) or reading its
// weights (directories are memory-mapped).
absl::StatusOr<ModelConfig> ModelShape(const std::string& spec) {
  constexpr absl::string_view kPrefix = "synthetic:";
  if (absl::StartsWith(spec, kPrefix)) {
    std::vector<std::string> parts =
        absl::StrSplit(spec.substr(kPrefix.size()), ':');
    return SyntheticPreset(parts[0]);
  }
  SKIPSERVE_ASSIGN_OR_RETURN(const std::unique_ptr<Checkpoint> c,
                             Checkpoint::Open(spec));
  return c->config();
}

// The grid's figures, one row per policy.
struct GridRows {
  std::map<std::string, Json> rows;  // by policy
  std::vector<std::string> order;    // policies, in the order first seen
  Json mixed;                        // the mixed figure; null without one
};

// Gathers the "figure" lines into rows: per policy its ttft entries and its
// decode entries per batch, without the fields the row already names.
GridRows CollectGridRows(const std::vector<Json>& lines) {
  GridRows grid;
  for (const Json& line : lines) {
    if (line.value("type", "") != "figure") continue;
    const std::string kind = line.value("kind", "");
    if (kind == "mixed") {
      grid.mixed = {
          {"policies", absl::GetFlag(FLAGS_mixed)},
          {"batch", line["batch"]},
          {"tokens_per_s_a_only", line.value("tokens_per_s_a_only", 0.0)},
          {"tokens_per_s_b_only", line.value("tokens_per_s_b_only", 0.0)},
          {"tokens_per_s_mixed", line.value("tokens_per_s_mixed", 0.0)}};
      continue;
    }
    const std::string policy = line["policy"];
    if (!grid.rows.contains(policy)) {
      grid.order.push_back(policy);
      grid.rows[policy] = {{"policy", policy}, {"plan", line["plan"]}};
    }
    Json& row = grid.rows[policy];
    Json entry = line;
    for (const char* key :
         {"type", "measurement", "kind", "policy", "plan", "rounds_done",
          "partial", "baseline", "context", "decode_tokens"}) {
      entry.erase(key);
    }
    if (kind == "ttft") {
      row["ttft"].push_back(entry);
    } else {
      if (line["batch"] == 1) row["decode"] = entry;
      row["decode_batches"].push_back(entry);
    }
  }
  return grid;
}

// Prints the table's line for one policy's row.
void PrintGridRow(const std::string& policy, const Json& row,
                  const bench::Measurement& ttft,
                  const bench::Measurement& decode) {
  std::printf("%-16s", policy.c_str());
  for (int n : ttft.prompt_lens) {
    bool found = false;
    for (const Json& t : row.value("ttft", Json::array())) {
      if (t["prompt_len"] != n) continue;
      found = true;
      std::printf(" %7.1fms %5.3f(%5.3f)", t["seconds"].get<double>() * 1e3,
                  t.value("speedup", 0.0),
                  t.value("predicted_speedup_flops", 0.0));
    }
    if (!found) std::printf(" %7s   %5s %5s ", "-", "-", "");
  }
  for (int b : decode.batches) {
    bool found = false;
    for (const Json& d : row.value("decode_batches", Json::array())) {
      if (d["batch"] != b) continue;
      found = true;
      std::printf(
          "  %16.1f %5.3f(%5.3f) %8.1f %7.1f %6.1f",
          d["tokens_per_s"].get<double>(), d.value("speedup", 0.0),
          d.value("predicted_speedup_bytes", 0.0),
          100.0 * d.value("roofline_share", 0.0),
          100.0 * d.value("roofline_share_read_bw", 0.0),
          d.value("bytes_per_step", 0.0) / d["batch"].get<double>() / 1e6);
    }
    if (!found) {
      std::printf("  %16s %5s %5s  %8s %7s %6s", "-", "-", "", "-", "-", "-");
    }
  }
  std::printf("\n");
}

// The table and JSON the grid mode has always written, from the figures.
void WriteGrid(const std::vector<Json>& lines, const Json& meta,
               const std::vector<bench::Measurement>& suite) {
  GridRows grid = CollectGridRows(lines);
  const bench::Measurement& ttft = suite[0];
  const bench::Measurement& decode = suite[1];
  std::printf("memory bandwidth: copy %.1f GB/s, read %.1f GB/s (%d threads)\n",
              meta["memory_bandwidth_gb_s"]["copy"].get<double>(),
              meta["memory_bandwidth_gb_s"]["read"].get<double>(),
              meta["machine"]["threads_used"].get<int>());
  std::printf(
      "weights in the engine: %s (%d bytes/element), KV cache %d "
      "bytes/element\n",
      meta["model"]["dtype_in_engine"].get<std::string>().c_str(),
      meta["model"]["weight_bytes_per_element"].get<int>(),
      meta["model"]["kv_bytes_per_element"].get<int>());
  std::printf("%-16s", "policy");
  for (int n : ttft.prompt_lens) std::printf(" ttft@%-4d speedup(pred)", n);
  for (int b : decode.batches) {
    std::printf("  decode@b%-3d tok/s speedup(pred) roofline%% read%% MB/tok",
                b);
  }
  std::printf("\n");
  Json out = meta;
  out.erase("type");
  out["settings"] = {{"prompt_lens", ttft.prompt_lens},
                     {"decode_context", decode.context},
                     {"decode_tokens", decode.decode_tokens},
                     {"decode_batches", decode.batches},
                     {"rounds", decode.rounds}};
  if (!grid.mixed.is_null()) {
    const Json& mixed = grid.mixed;
    out["mixed"] = mixed;
    std::printf(
        "mixed %s batch %d: A only %.1f, B only %.1f, 50/50 %.1f tokens/s\n",
        absl::GetFlag(FLAGS_mixed).c_str(), mixed["batch"].get<int>(),
        mixed["tokens_per_s_a_only"].get<double>(),
        mixed["tokens_per_s_b_only"].get<double>(),
        mixed["tokens_per_s_mixed"].get<double>());
  }
  for (const std::string& policy : grid.order) {
    const Json& row = grid.rows[policy];
    PrintGridRow(policy, row, ttft, decode);
    out["policies"].push_back(row);
  }
  if (!absl::GetFlag(FLAGS_out).empty()) {
    std::ofstream(absl::GetFlag(FLAGS_out)) << out.dump(2) << "\n";
    std::fprintf(stderr, "wrote %s\n", absl::GetFlag(FLAGS_out).c_str());
  }
}

// Run's `fatal`: writes a "fatal" line naming the failed stage to the
// results and returns the status.
using FatalFn =
    std::function<absl::Status(const absl::Status& s, const char* stage)>;

// The suite to run: --suite's named suite, else the grid the flags describe.
absl::StatusOr<std::vector<bench::Measurement>> SelectSuite(bool suite_mode) {
  if (suite_mode && absl::GetFlag(FLAGS_suite_name).empty()) {
    return absl::InvalidArgumentError("--suite needs --suite_name");
  }
  return suite_mode ? bench::LoadSuite(absl::GetFlag(FLAGS_suite),
                                       absl::GetFlag(FLAGS_suite_name))
                    : SuiteFromFlags();
}

// The KV pool for `suite`, capped by --kv_cap_gb (by default 8 GB on the CPU,
// 96 GB on a GPU).
absl::StatusOr<bench::SuitePlan> PlanKvPool(
    const std::vector<bench::Measurement>& suite, const ModelConfig& shape,
    const std::string& device, int kv_block_size, int64_t block_bytes) {
  double cap_gb = absl::GetFlag(FLAGS_kv_cap_gb);
  if (cap_gb <= 0) cap_gb = device == "cpu" ? 8 : 96;
  return bench::PlanSuite(suite, shape, kv_block_size,
                          static_cast<int64_t>(cap_gb * 1e9 / block_bytes));
}

// The model's backend and how long building each took.
struct LoadedBackend {
  std::unique_ptr<Backend> backend;
  ModelConfig config;
  double build_s = 0;
  double backend_s = 0;
};

// Builds the model, then the backend with the plan's KV pool (set in
// `options`); progress goes to stderr, a failure through `fatal`.
absl::StatusOr<LoadedBackend> LoadBackend(const std::string& spec,
                                          const std::string& device,
                                          const bench::SuitePlan& plan,
                                          int64_t block_bytes,
                                          const FatalFn& fatal,
                                          BackendOptions* options) {
  LoadedBackend loaded;
  std::fprintf(stderr, "building %s...\n", spec.c_str());
  auto t0 = Clock::now();
  absl::StatusOr<std::unique_ptr<Checkpoint>> checkpoint = OpenModel(spec);
  if (!checkpoint.ok()) return fatal(checkpoint.status(), "model");
  loaded.build_s = std::chrono::duration<double>(Clock::now() - t0).count();
  loaded.config = (*checkpoint)->config();
  options->num_kv_blocks = static_cast<int>(plan.pool_blocks);
  std::fprintf(stderr,
               "model built in %.1f s; creating the %s backend with %d KV "
               "blocks (%.2f GB)...\n",
               loaded.build_s, device.c_str(), options->num_kv_blocks,
               plan.pool_blocks * static_cast<double>(block_bytes) / 1e9);
  t0 = Clock::now();
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      CreateBackend(device, **checkpoint, *options);
  if (!backend.ok()) return fatal(backend.status(), "backend");
  loaded.backend_s = std::chrono::duration<double>(Clock::now() - t0).count();
  loaded.backend = *std::move(backend);
  return loaded;
}

// The memory bandwidth of the backend's device: a device-to-device copy on a
// GPU (whose name, multiprocessors and memory go into `device_json`), else
// the host's with `threads` threads.
absl::StatusOr<MemoryBandwidth> MeasureBandwidth(bool on_gpu, int threads,
                                                 const FatalFn& fatal,
                                                 Json* device_json) {
  MemoryBandwidth bandwidth;
  if (on_gpu) {
    // The backend came from the CUDA module, so it is loaded.
    absl::StatusOr<CudaDeviceInfo> info = MeasureCudaDeviceFromModule(
        int64_t{absl::GetFlag(FLAGS_bandwidth_mb)} << 20);
    if (!info.ok()) return fatal(info.status(), "bandwidth");
    // A device-to-device copy: the read and the write rates are not
    // separated, so both take the copy figure.
    bandwidth.copy_gb_s = bandwidth.read_gb_s = info->copy_gb_s;
    (*device_json)["gpu"] = info->name;
    (*device_json)["multiprocessors"] = info->multiprocessors;
    (*device_json)["memory_bytes"] = info->memory_bytes;
  } else {
    bandwidth = MeasureMemoryBandwidth(threads);
  }
  return bandwidth;
}

// Bytes per KV element as `backend` stores its cache.
int KvElementBytes(const Backend& backend) {
  return static_cast<int>(
      backend.kv_block_bytes() /
      (int64_t{2} * backend.kv_block_size() * backend.config().kv_dim()));
}

// The weights' dtype in the engine: bf16 on a GPU; on the CPU the stored
// dtype or the one --cpu_weights converted them to.
std::string WeightsInEngine(const ModelConfig& config, bool on_gpu,
                            CpuWeights cpu_weights) {
  if (on_gpu) return "bf16";
  if (cpu_weights != CpuWeights::kStored) {
    return std::string(CpuWeightsName(cpu_weights));
  }
  return absl::AsciiStrToLower(std::string(DTypeName(config.torch_dtype)));
}

// The results' "meta" line: machine, device, bandwidth, model and KV pool.
Json MetaLine(const std::string& spec, const LoadedBackend& loaded, bool on_gpu,
              CpuWeights cpu_weights, const Json& device_json,
              const MemoryBandwidth& bandwidth, const bench::SuitePlan& plan,
              bool suite_mode, int threads) {
  const ModelConfig& config = loaded.config;
  Json meta = {
      {"type", "meta"},
      {"machine", DescribeMachine()},
      {"device", device_json},
      {"memory_bandwidth_gb_s",
       {{"copy", bandwidth.copy_gb_s}, {"read", bandwidth.read_gb_s}}},
      {"model",
       {{"spec", spec},
        {"layers", config.num_layers},
        {"hidden", config.hidden_size},
        {"parameters", config.NumParameters()},
        {"dtype_in_engine", WeightsInEngine(config, on_gpu, cpu_weights)},
        {"weight_bytes_per_element", loaded.backend->weight_element_bytes()},
        {"kv_bytes_per_element", KvElementBytes(*loaded.backend)},
        {"build_seconds", loaded.build_s},
        {"backend_seconds", loaded.backend_s}}},
      {"suite", suite_mode ? absl::GetFlag(FLAGS_suite_name) : "flags"},
      {"kv", plan.ToJson(loaded.backend->kv_block_bytes())},
      {"prefill_tokens", absl::GetFlag(FLAGS_prefill_tokens)}};
  meta["machine"]["threads_used"] = threads;
  return meta;
}

// The runner's settings; `elapsed_s` is the time already spent, taken from
// --deadline_s.
bench::RunnerOptions RunnerOptionsFromFlags(const Backend& backend,
                                            bool suite_mode,
                                            const MemoryBandwidth& bandwidth,
                                            double elapsed_s) {
  bench::RunnerOptions runner_options;
  runner_options.prefill_tokens = absl::GetFlag(FLAGS_prefill_tokens);
  if (absl::GetFlag(FLAGS_deadline_s) > 0) {
    runner_options.deadline_s =
        std::max(1e-3, absl::GetFlag(FLAGS_deadline_s) - elapsed_s);
  }
  runner_options.weight_bytes_per_element = backend.weight_element_bytes();
  runner_options.kv_bytes_per_element = KvElementBytes(backend);
  runner_options.copy_gb_s = bandwidth.copy_gb_s;
  runner_options.read_gb_s = bandwidth.read_gb_s;
  runner_options.print_figures = suite_mode;
  return runner_options;
}

// Runs every measurement of `suite` with a fresh KV pool and returns the
// number of "error" lines in the results.
int RunSuite(const std::vector<bench::Measurement>& suite,
             const bench::RunnerOptions& runner_options,
             const BackendOptions& options, Backend* backend,
             bench::JsonlSink* sink) {
  {
    KvBlockManager kv(options.num_kv_blocks, options.kv_block_size);
    bench::Runner runner(backend, &kv, runner_options, sink);
    for (const bench::Measurement& m : suite) runner.Run(m);
  }
  int errors = 0;
  for (const Json& line : sink->lines()) {
    errors += line.value("type", "") == "error";
  }
  return errors;
}

absl::Status Run() {
  const auto process_start = Clock::now();
  auto since_start = [&] {
    return std::chrono::duration<double>(Clock::now() - process_start).count();
  };
  if (!absl::GetFlag(FLAGS_parity_spec).empty()) {
    return bench::RunParity(absl::GetFlag(FLAGS_parity_spec));
  }
  const bool suite_mode = !absl::GetFlag(FLAGS_suite).empty();
  SKIPSERVE_ASSIGN_OR_RETURN(const std::vector<bench::Measurement> suite,
                             SelectSuite(suite_mode));
  const std::string spec = absl::GetFlag(FLAGS_model);
  const std::string device = absl::GetFlag(FLAGS_device);
  const int threads = absl::GetFlag(FLAGS_threads) > 0
                          ? absl::GetFlag(FLAGS_threads)
                          : omp_get_max_threads();
  BackendOptions options;
  options.num_threads = threads;
  SKIPSERVE_ASSIGN_OR_RETURN(options.cpu_weights,
                             ParseCpuWeights(absl::GetFlag(FLAGS_cpu_weights)));

  SKIPSERVE_ASSIGN_OR_RETURN(const ModelConfig shape, ModelShape(spec));
  // bf16 KV on a GPU, f32 on the CPU.
  const int kv_element_bytes = device == "cpu" ? 4 : 2;
  const int64_t block_bytes =
      KvBlockBytes(shape, options.kv_block_size, kv_element_bytes);
  SKIPSERVE_ASSIGN_OR_RETURN(
      const bench::SuitePlan plan,
      PlanKvPool(suite, shape, device, options.kv_block_size, block_bytes));
  if (absl::GetFlag(FLAGS_dry_run)) {
    Json report = {{"model", spec},
                   {"device", device},
                   {"layers", shape.num_layers},
                   {"parameters", shape.NumParameters()},
                   {"measurements", suite.size()},
                   {"kv_block_bytes", block_bytes},
                   {"kv", plan.ToJson(block_bytes)}};
    std::printf("%s\n", report.dump(1).c_str());
    return absl::OkStatus();
  }

  SKIPSERVE_ASSIGN_OR_RETURN(
      const std::unique_ptr<bench::JsonlSink> sink,
      bench::JsonlSink::Open(absl::GetFlag(FLAGS_results)));
  const FatalFn fatal = [&](const absl::Status& s, const char* stage) {
    sink->Write({{"type", "fatal"},
                 {"stage", stage},
                 {"message", s.ToString()},
                 {"t", since_start()}});
    return s;
  };

  SKIPSERVE_ASSIGN_OR_RETURN(
      const LoadedBackend loaded,
      LoadBackend(spec, device, plan, block_bytes, fatal, &options));
  const std::string device_name(loaded.backend->device_name());
  const bool on_gpu = device_name != "cpu";
  std::fprintf(stderr, "backend %s ready in %.1f s; measuring bandwidth...\n",
               device_name.c_str(), loaded.backend_s);
  Json device_json = {{"name", device_name}};
  SKIPSERVE_ASSIGN_OR_RETURN(
      const MemoryBandwidth bandwidth,
      MeasureBandwidth(on_gpu, threads, fatal, &device_json));
  const Json meta = MetaLine(spec, loaded, on_gpu, options.cpu_weights,
                             device_json, bandwidth, plan, suite_mode, threads);
  sink->Write(meta);

  const int errors =
      RunSuite(suite,
               RunnerOptionsFromFlags(*loaded.backend, suite_mode, bandwidth,
                                      since_start()),
               options, loaded.backend.get(), sink.get());
  sink->Write({{"type", "end"}, {"errors", errors}, {"t", since_start()}});
  if (!suite_mode) WriteGrid(sink->lines(), meta, suite);
  if (errors > 0) {
    return absl::InternalError(absl::StrFormat(
        "%d configuration(s) failed (see the error lines above%s)", errors,
        absl::GetFlag(FLAGS_results).empty()
            ? ""
            : " and in " + absl::GetFlag(FLAGS_results)));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace skipserve

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Benchmarks the engine (CPU or CUDA) over the paper's skip-policy "
      "grid, or runs a suite of measurements in one process.");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = skipserve::Run();
  if (!status.ok()) {
    std::fprintf(stderr, "skipserve-bench: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
