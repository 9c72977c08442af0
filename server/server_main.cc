// skipserve-server: serves a Llama model over gRPC with per-request skip
// policies.
//
//   skipserve-server                         # the embedded default model
//   skipserve-server --model=/models/Llama-2-7b-hf --port=50051
//
// Startup: load the model, build the backend and scheduler, then listen;
// the health service reports SERVING from then on. SIGTERM or SIGINT drains:
// health turns NOT_SERVING, new calls get UNAVAILABLE, calls in flight
// finish (up to --drain_timeout), then the process exits 0.

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "engine/base/status_macros.h"
#include "engine/create_backend.h"
#include "engine/engine.h"
#include "engine/model/synthetic.h"
#include "engine/scheduler/scheduler.h"
#include "engine/tokenizer/tokenizer.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/admin/auth.h"
#include "server/admin/policies_service.h"
#include "server/admin/policy_registry.h"
#include "server/admin/registry_store.h"
#include "server/admin/state_file.h"
#include "server/base/raw_message.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/registry_health.h"
#include "server/work_pool.h"

ABSL_FLAG(std::string, model, SKIPSERVE_DEFAULT_MODEL_DIR,
          "Hugging Face model directory (config.json, safetensors, "
          "tokenizer.model). Default: the embedded default model.");
ABSL_FLAG(std::string, model_name, "",
          "Name in metrics and GetModelInfo (default: the --model directory's "
          "base name, or the synthetic:<preset> spec).");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer.model to use (default: the one in --model; required for "
          "synthetic:<preset> models).");
ABSL_FLAG(std::string, device, "auto", "cpu, cuda or auto.");
ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on.");
ABSL_FLAG(int, port, 50051, "gRPC port; 0 picks a free one.");
ABSL_FLAG(std::string, port_file, "",
          "Write the bound gRPC port here once serving (for tests/tools).");
ABSL_FLAG(int, metrics_port, 9090,
          "Prometheus /metrics port; 0 picks a free one, -1 disables.");
ABSL_FLAG(std::string, policies_file, "",
          "JSON file of named policies (docs: server/admin/policy_registry.h); "
          "seeds the registry when --state_file does not exist yet.");
ABSL_FLAG(std::string, state_file, "",
          "Where policy and experiment changes made through the admin API "
          "are kept; restored at startup (it then wins over "
          "--policies_file).");
ABSL_FLAG(std::string, registry, "",
          "Where the policy registry is kept: empty (the default) or "
          "file:PATH for a state file of this process (see --state_file); "
          "etcd://HOST:PORT[,HOST:PORT...]/PREFIX to share one registry with "
          "every replica pointed at the same etcd and prefix "
          "(docs/ab-testing.md).");
ABSL_FLAG(std::string, etcd_ca, "",
          "PEM CA bundle: talk to etcd over TLS (https) and check its "
          "certificate against this.");
ABSL_FLAG(std::string, etcd_cert, "",
          "PEM client certificate for etcd (with --etcd_key).");
ABSL_FLAG(std::string, etcd_key, "", "PEM private key of --etcd_cert.");
ABSL_FLAG(std::string, etcd_user, "", "etcd user (etcd auth); optional.");
ABSL_FLAG(std::string, etcd_password_file, "",
          "File whose first line is --etcd_user's password.");
ABSL_FLAG(absl::Duration, registry_startup_timeout, absl::Seconds(30),
          "How long a starting server retries an unreachable registry store "
          "before it exits (it never serves before it has the registry).");
ABSL_FLAG(std::string, admin_token_file, "",
          "Bearer token of the Policies admin API (one line); without it the "
          "admin API refuses every call (docs/security.md).");
ABSL_FLAG(std::string, inference_token_file, "",
          "Bearer token required by the Inference API (one line); without "
          "it inference is open. Health stays open.");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain: serve gRPC over TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert.");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA: require client certificates signed by it (mutual TLS).");
ABSL_FLAG(std::string, default_policy, "none",
          "Policy for requests that select none.");
ABSL_FLAG(int, default_max_tokens, 128,
          "max_tokens for requests that leave it 0.");
ABSL_FLAG(int, max_batch_tokens, 512, "Tokens per engine step.");
ABSL_FLAG(int, max_running, 64, "Sequences decoding at once.");
ABSL_FLAG(int, max_waiting, 256,
          "Queued requests beyond which RESOURCE_EXHAUSTED is returned.");
ABSL_FLAG(int, kv_cache_blocks, 0,
          "KV cache blocks (each 16 tokens of one layer); 0 = from "
          "--kv_cache_mb.");
ABSL_FLAG(int, kv_cache_mb, 256,
          "KV cache size in MiB when --kv_cache_blocks=0 (the backend sizes "
          "blocks at its own element size: fp32 on the CPU, bf16 on CUDA).");
ABSL_FLAG(std::string, batching, "mixed",
          "mixed: sequences with different policies share a step; grouped: "
          "one policy per step.");
ABSL_FLAG(int, threads, 0, "CPU threads for the CPU backend; 0 = all.");
ABSL_FLAG(std::string, cpu_weights, "stored",
          "How the CPU backend keeps weight matrices: stored (the checkpoint's "
          "dtype), f32, f16 or bf16 (converted at load). Ignored on CUDA.");
ABSL_FLAG(int, max_inline_policy_labels, 32,
          "Distinct inline policies labelled in metrics before 'other'.");
ABSL_FLAG(int, max_request_bytes, 4 << 20,
          "Largest request message accepted, in bytes (larger ones get "
          "RESOURCE_EXHAUSTED from gRPC).");
ABSL_FLAG(int, max_tokenize_bytes, 256 << 10,
          "Largest text Tokenize accepts, in bytes.");
ABSL_FLAG(int, tokenize_threads, 0,
          "Threads that tokenize large inputs off gRPC's threads; 0 = half "
          "the cores (at least 1).");
ABSL_FLAG(int, max_tokenize_queue, 64,
          "Large requests that may wait for a tokenize thread; beyond that "
          "RESOURCE_EXHAUSTED.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(30),
          "How long SIGTERM waits for calls in flight.");

namespace skipserve::server {
namespace {

constexpr int kKvBlockSize = 16;

absl::StatusOr<BatchingMode> ParseBatching(const std::string& text) {
  if (text == "mixed") return BatchingMode::kMixed;
  if (text == "grouped") return BatchingMode::kGrouped;
  return absl::InvalidArgumentError(
      absl::StrFormat("--batching must be mixed or grouped, got '%s'", text));
}

std::string ModelName(const std::string& spec) {
  if (!absl::GetFlag(FLAGS_model_name).empty()) {
    return absl::GetFlag(FLAGS_model_name);
  }
  if (spec.rfind("synthetic:", 0) == 0) return spec;
  std::string path = spec;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Blocks SIGTERM and SIGINT, which WaitAndDrain takes by sigwait; called
// before any thread starts, so that every thread inherits the mask.
sigset_t BlockTerminationSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

// What the flags say, checked as far as they can be without the model.
struct ServeOptions {
  std::string device;  // cpu, cuda or auto
  AccessControl access;
  SkipPolicy default_policy;  // parsed; compiled once the model is known
  // All but sampled_vocab_size, which the tokenizer decides.
  SchedulerOptions scheduler;
  int tokenize_threads = 1;
};

// INVALID_ARGUMENT (FAILED_PRECONDITION for --device=cuda in a build
// without CUDA; LoadAccessControl's errors for the token and TLS files)
// naming the flag, for flags no model is needed to check.
absl::StatusOr<ServeOptions> ValidateFlags() {
  ServeOptions options;
  options.device = absl::GetFlag(FLAGS_device);
  if (options.device != "cpu" && options.device != "cuda" &&
      options.device != "auto") {
    return absl::InvalidArgumentError(
        absl::StrFormat("--device=%s: use cpu, cuda or auto", options.device));
  }
  if (options.device == "cuda" && !CudaBackendBuilt() &&
      std::getenv("SKIPSERVE_CUDA_MODULE") == nullptr) {
    return absl::FailedPreconditionError(
        "--device=cuda: this build has no CUDA backend; use --device=cpu");
  }
  SKIPSERVE_ASSIGN_OR_RETURN(options.scheduler.batching,
                             ParseBatching(absl::GetFlag(FLAGS_batching)));
  SKIPSERVE_ASSIGN_OR_RETURN(
      options.access,
      LoadAccessControl(absl::GetFlag(FLAGS_admin_token_file),
                        absl::GetFlag(FLAGS_inference_token_file),
                        absl::GetFlag(FLAGS_tls_cert),
                        absl::GetFlag(FLAGS_tls_key),
                        absl::GetFlag(FLAGS_tls_client_ca)));
  absl::StatusOr<SkipPolicy> default_policy =
      SkipPolicy::Parse(absl::GetFlag(FLAGS_default_policy));
  if (!default_policy.ok()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--default_policy: %s", default_policy.status().message()));
  }
  options.default_policy = *std::move(default_policy);

  options.scheduler.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.scheduler.max_running = absl::GetFlag(FLAGS_max_running);
  options.scheduler.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  if (options.scheduler.max_batch_tokens < 1 ||
      options.scheduler.max_running < 1 || options.scheduler.max_waiting < 0) {
    return absl::InvalidArgumentError(
        "--max_batch_tokens and --max_running must be >= 1, --max_waiting "
        ">= 0");
  }
  options.tokenize_threads = absl::GetFlag(FLAGS_tokenize_threads);
  if (options.tokenize_threads == 0) {
    options.tokenize_threads =
        std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / 2);
  }
  if (options.tokenize_threads < 1 ||
      absl::GetFlag(FLAGS_max_tokenize_queue) < 1 ||
      absl::GetFlag(FLAGS_max_tokenize_bytes) < 1 ||
      absl::GetFlag(FLAGS_max_request_bytes) < 1024 ||
      absl::GetFlag(FLAGS_max_inline_policy_labels) < 0) {
    return absl::InvalidArgumentError(
        "--tokenize_threads must be >= 0, --max_tokenize_queue and "
        "--max_tokenize_bytes >= 1, --max_request_bytes >= 1024, "
        "--max_inline_policy_labels >= 0");
  }
  return options;
}

// The registry store --registry names, with --etcd_*'s TLS and auth.
absl::StatusOr<std::unique_ptr<RegistryStore>> OpenStore() {
  SKIPSERVE_ASSIGN_OR_RETURN(
      const RegistryStoreOptions options,
      RegistryStoreOptionsFromFlags(RegistryStoreFlags{
          .registry = absl::GetFlag(FLAGS_registry),
          .state_file = absl::GetFlag(FLAGS_state_file),
          .etcd_ca = absl::GetFlag(FLAGS_etcd_ca),
          .etcd_cert = absl::GetFlag(FLAGS_etcd_cert),
          .etcd_key = absl::GetFlag(FLAGS_etcd_key),
          .etcd_user = absl::GetFlag(FLAGS_etcd_user),
          .etcd_password_file = absl::GetFlag(FLAGS_etcd_password_file)}));
  return OpenRegistryStore(options);
}

// Waits until `store` answers (a Load that is not UNAVAILABLE), up to
// --registry_startup_timeout; UNAVAILABLE naming the store after it.
absl::Status WaitForStore(RegistryStore& store) {
  const absl::Time deadline =
      absl::Now() + absl::GetFlag(FLAGS_registry_startup_timeout);
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    absl::StatusOr<std::optional<StoredState>> loaded = store.Load();
    if (loaded.ok() ||
        loaded.status().code() != absl::StatusCode::kUnavailable) {
      return absl::OkStatus();  // Restore reports any other error
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::UnavailableError(absl::StrFormat(
          "registry: %s (gave up after --registry_startup_timeout=%s)",
          loaded.status().message(),
          absl::FormatDuration(absl::GetFlag(FLAGS_registry_startup_timeout))));
    }
    std::fprintf(stderr, "registry: waiting for %s: %s\n",
                 store.Describe().c_str(),
                 std::string(loaded.status().message()).c_str());
    absl::SleepFor(std::min(backoff, left));  // the last try at the deadline
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

// The registry of named policies and experiments (--registry,
// --policies_file, --state_file) for a model of `num_layers`, after
// checking that --default_policy compiles for it.
absl::StatusOr<std::unique_ptr<PolicyRegistry>> RestorePolicies(
    int num_layers, const SkipPolicy& default_policy) {
  auto policies = std::make_unique<PolicyRegistry>(num_layers);
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<RegistryStore> store, OpenStore());
  SKIPSERVE_RETURN_IF_ERROR(WaitForStore(*store));
  SKIPSERVE_RETURN_IF_ERROR(
      policies->Restore(absl::GetFlag(FLAGS_policies_file), std::move(store)));
  if (absl::Status s = default_policy.Compile(num_layers).status(); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--default_policy: %s", s.message()));
  }
  return policies;
}

// The model being served: its tokenizer and the Engine that runs it.
struct ServingModel {
  ModelConfig config;
  std::string dtype;  // the checkpoint's
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<Engine> engine;  // opened; Start()ed by Serve
};

// Opens the checkpoint `model_spec` (and its tokenizer, or --tokenizer),
// runs `check_config` on its config before any weight is loaded (so that a
// bad flag fails fast) and opens the Engine on options.device. The
// checkpoint is closed once the backend holds the weights. Errors: the
// checkpoint's, the tokenizer's (INVALID_ARGUMENT when it has more pieces
// than the model's vocabulary), check_config's, the backend's (naming
// --kv_cache_mb when the cache it sizes does not fit).
absl::StatusOr<ServingModel> OpenModelOnEngine(
    const std::string& model_spec, const ServeOptions& options,
    const std::function<absl::Status(const ModelConfig&)>& check_config) {
  ServingModel model;
  // Flags first: a typo must not wait for a model to load.
  SKIPSERVE_ASSIGN_OR_RETURN(const CpuWeights cpu_weights,
                             ParseCpuWeights(absl::GetFlag(FLAGS_cpu_weights)));
  std::fprintf(stderr, "loading %s\n", model_spec.c_str());
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint,
                             OpenModel(model_spec));
  model.config = checkpoint->config();
  model.dtype = std::string(DTypeName(model.config.torch_dtype));

  std::string tokenizer_path = absl::GetFlag(FLAGS_tokenizer);
  if (tokenizer_path.empty()) tokenizer_path = model_spec + "/tokenizer.model";
  SKIPSERVE_ASSIGN_OR_RETURN(model.tokenizer, Tokenizer::Load(tokenizer_path));
  if (model.tokenizer->vocab_size() > model.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s has %d pieces but the model's vocabulary is %d", tokenizer_path,
        model.tokenizer->vocab_size(), model.config.vocab_size));
  }
  SKIPSERVE_RETURN_IF_ERROR(check_config(model.config));

  EngineOptions engine_options;
  engine_options.device = options.device;
  // The backend sizes the cache from --kv_cache_mb at its own bytes per
  // block (fp32 on the CPU, bf16 on the GPU).
  engine_options.backend.num_kv_blocks =
      std::max(0, absl::GetFlag(FLAGS_kv_cache_blocks));
  engine_options.backend.kv_cache_bytes =
      int64_t{absl::GetFlag(FLAGS_kv_cache_mb)} << 20;
  engine_options.backend.kv_block_size = kKvBlockSize;
  engine_options.backend.num_threads = absl::GetFlag(FLAGS_threads);
  engine_options.backend.cpu_weights = cpu_weights;
  int64_t last_percent = -1;
  engine_options.progress = [&](int64_t done, int64_t total) {
    const int64_t percent = total > 0 ? done * 100 / total : 100;
    if (percent / 10 != last_percent / 10) {
      std::fprintf(stderr, "loading weights: %lld%%\n",
                   static_cast<long long>(percent));
      last_percent = percent;
    }
  };
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Open(*checkpoint, engine_options);
  if (!engine.ok()) {
    if (engine.status().code() == absl::StatusCode::kInvalidArgument &&
        engine_options.backend.num_kv_blocks == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--kv_cache_mb=%d: %s", absl::GetFlag(FLAGS_kv_cache_mb),
          engine.status().message()));
    }
    return engine.status();
  }
  model.engine = *std::move(engine);
  return model;
}

// The Prometheus endpoint (--metrics_port; -1 serves none) and the
// server's info metric.
absl::StatusOr<std::unique_ptr<Metrics>> CreateMetrics(
    const std::string& model_spec, const ServingModel& model) {
  ServerInfo server_info;
  server_info.version = SKIPSERVE_VERSION;
  server_info.model = ModelName(model_spec);
  const Backend& backend = model.engine->backend();
  server_info.device = std::string(backend.device_name());
  server_info.dtype = model.dtype;
  server_info.batching = absl::GetFlag(FLAGS_batching);
  server_info.num_layers = model.config.num_layers;
  server_info.kv_block_bytes = backend.kv_block_bytes();
  const int metrics_port = absl::GetFlag(FLAGS_metrics_port);
  return Metrics::Create(
      metrics_port < 0
          ? ""
          : absl::StrFormat("%s:%d", absl::GetFlag(FLAGS_host), metrics_port),
      server_info, absl::GetFlag(FLAGS_max_inline_policy_labels));
}

// Builds and starts the gRPC server with `services` (health and reflection
// too) on --host:--port; sets *port to the bound one. UNAVAILABLE when it
// cannot listen.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    const AccessControl& access, std::initializer_list<grpc::Service*> services,
    int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  InstallProtobufLogHandler();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_request_bytes));
  *port = 0;
  builder.AddListeningPort(absl::StrFormat("%s:%d", absl::GetFlag(FLAGS_host),
                                           absl::GetFlag(FLAGS_port)),
                           access.credentials, port);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || *port == 0) {
    return absl::UnavailableError(absl::StrFormat("cannot listen on %s:%d",
                                                  absl::GetFlag(FLAGS_host),
                                                  absl::GetFlag(FLAGS_port)));
  }
  return server;
}

// Writes the bound port to --port_file (atomically: a temporary renamed),
// when set.
void WritePortFile(int port) {
  const std::string path = absl::GetFlag(FLAGS_port_file);
  if (path.empty()) return;
  std::ofstream(path + ".tmp") << port << "\n";
  std::rename((path + ".tmp").c_str(), path.c_str());
}

// The startup lines on stderr: what is served where, the registry and the
// access control (with a warning for tokens sent without TLS).
void PrintBanner(const std::string& model_spec, const ServingModel& model,
                 int port, const Metrics& metrics,
                 const PolicyRegistry& policies, const AccessControl& access) {
  std::fprintf(stderr,
               "serving %s (%d layers, %s) on %s:%d, metrics on port %d, "
               "%d KV blocks, batching %s\n",
               model_spec.c_str(), model.config.num_layers,
               std::string(model.engine->backend().device_name()).c_str(),
               absl::GetFlag(FLAGS_host).c_str(), port, metrics.port(),
               model.engine->backend().num_kv_blocks(),
               absl::GetFlag(FLAGS_batching).c_str());
  const RegistryStatePtr state = policies.Snapshot();
  std::fprintf(
      stderr,
      "registry version %llu: %zu policies, %zu experiments in %s; admin "
      "API %s; inference %s; %s\n",
      static_cast<unsigned long long>(state->version), state->policies.size(),
      state->experiments.size(), policies.StoreDescription().c_str(),
      access.admin.mode() == TokenAuth::Mode::kToken ? "needs a token"
                                                     : "disabled",
      access.inference.mode() == TokenAuth::Mode::kToken ? "needs a token"
                                                         : "open",
      access.tls
          ? (absl::GetFlag(FLAGS_tls_client_ca).empty() ? "TLS" : "mutual TLS")
          : "plaintext (no TLS)");
  if (!access.tls && (access.admin.mode() == TokenAuth::Mode::kToken ||
                      access.inference.mode() == TokenAuth::Mode::kToken)) {
    std::fprintf(stderr,
                 "warning: tokens travel in clear text without --tls_cert; "
                 "use TLS beyond loopback (docs/security.md)\n");
  }
}

// Waits for SIGTERM or SIGINT, then drains: health turns NOT_SERVING, new
// calls get UNAVAILABLE, calls in flight get up to --drain_timeout, then
// the scheduler finishes what is left (UNAVAILABLE), the server stops and
// the tokenize pool runs what it still holds (refused by the scheduler).
void WaitAndDrain(const sigset_t& signals, grpc::Server& server,
                  InferenceService& service, Scheduler& scheduler,
                  WorkPool& tokenize_pool,
                  RegistryHealthReporter& registry_health) {
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  std::fprintf(stderr, "signal %d: draining\n", signal_number);
  registry_health.Stop();
  server.GetHealthCheckService()->SetServingStatus(false);
  service.StartDraining();
  if (!scheduler.WaitIdleFor(absl::GetFlag(FLAGS_drain_timeout))) {
    std::fprintf(stderr, "drain timeout: cancelling what is left\n");
  }
  scheduler.Shutdown();  // finishes anything left with UNAVAILABLE
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  tokenize_pool.Shutdown();  // runs what is queued (refused by the scheduler)
  std::fprintf(stderr, "drained; exiting\n");
}

absl::Status Serve() {
  const sigset_t signals = BlockTerminationSignals();
  SKIPSERVE_ASSIGN_OR_RETURN(ServeOptions options, ValidateFlags());

  const std::string model_spec = absl::GetFlag(FLAGS_model);
  std::unique_ptr<PolicyRegistry> policies;
  SKIPSERVE_ASSIGN_OR_RETURN(
      ServingModel model,
      OpenModelOnEngine(
          model_spec, options, [&](const ModelConfig& config) -> absl::Status {
            SKIPSERVE_ASSIGN_OR_RETURN(
                policies,
                RestorePolicies(config.num_layers, options.default_policy));
            return absl::OkStatus();
          }));
  SKIPSERVE_ASSIGN_OR_RETURN(std::unique_ptr<Metrics> metrics,
                             CreateMetrics(model_spec, model));
  SchedulerOptions scheduler_options = options.scheduler;
  // A vocabulary padded beyond the tokenizer's pieces: padding ids have no
  // text and are never sampled.
  scheduler_options.sampled_vocab_size = model.tokenizer->vocab_size();
  SKIPSERVE_RETURN_IF_ERROR(model.engine->Start(
      scheduler_options, [m = metrics.get()](const StepReport& report) {
        m->RecordStep(report);
      }));
  Scheduler& scheduler = model.engine->scheduler();
  metrics->SetEngineStats([&scheduler] { return scheduler.Stats(); });
  metrics->SetRegistryStats([registry = policies.get()] {
    const RegistryStoreStatus store = registry->StoreStatus();
    return RegistryStats{registry->version(), store.kind,
                         store.health.reachable,
                         absl::ToDoubleSeconds(store.health.staleness)};
  });
  WorkPool tokenize_pool(options.tokenize_threads,
                         absl::GetFlag(FLAGS_max_tokenize_queue));

  ServingContext context;
  context.config = &model.config;
  context.tokenizer = model.tokenizer.get();
  context.policies = policies.get();
  context.limits.default_max_tokens = absl::GetFlag(FLAGS_default_max_tokens);
  context.limits.default_policy = options.default_policy;
  context.limits.max_tokenize_bytes = absl::GetFlag(FLAGS_max_tokenize_bytes);
  ServiceInfo info{ModelName(model_spec), model.dtype,
                   std::string(model.engine->backend().device_name()),
                   absl::GetFlag(FLAGS_batching), kKvBlockSize};
  InferenceService service(&scheduler, context, info, metrics.get(),
                           &tokenize_pool, &options.access.inference);
  PoliciesService policies_service(policies.get(), &options.access.admin);

  int port = 0;
  SKIPSERVE_ASSIGN_OR_RETURN(
      std::unique_ptr<grpc::Server> server,
      StartServer(options.access, {&service, &policies_service}, &port));
  server->GetHealthCheckService()->SetServingStatus(true);
  RegistryHealthReporter registry_health(server->GetHealthCheckService(),
                                         policies.get());
  WritePortFile(port);
  PrintBanner(model_spec, model, port, *metrics, *policies, options.access);
  WaitAndDrain(signals, *server, service, scheduler, tokenize_pool,
               registry_health);
  return absl::OkStatus();
}

}  // namespace
}  // namespace skipserve::server

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves a Llama model over gRPC with per-request skip policies.\n"
      "  skipserve-server [--model=DIR] [--port=50051] [--metrics_port=9090]");
  absl::ParseCommandLine(argc, argv);
  absl::Status status = skipserve::server::Serve();
  if (!status.ok()) {
    std::fprintf(stderr, "skipserve-server: %s\n",
                 std::string(status.message()).c_str());
    return 1;
  }
  return 0;
}
