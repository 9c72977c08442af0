// What the metrics count (issue 11, items 5 and 6), read from a real
// server's /metrics: every rejected, expired and analysis request is
// counted with its own code, and the label budget for ad-hoc policies cannot
// take the `policy` label away from named policies, experiment arms or the
// default policy.

#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "client/lib/admin_client.h"
#include "client/lib/client.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "skipserve/v1/inference.pb.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/hardening_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif

namespace skipserve::testing {
namespace {

using ::testing::Contains;
using ::testing::Not;

// Starts a server serving /metrics on a free port; skips the test where
// the machine cannot serve it.
absl::StatusOr<std::unique_ptr<ServerProcess>> StartWithMetrics(
    std::vector<std::string> flags) {
  flags.push_back("--metrics_port=0");
  return ServerProcess::Start(SKIPSERVE_SERVER_BINARY, flags);
}

v1::GenerateRequest Request(const std::string& prompt, int max_tokens) {
  v1::GenerateRequest request;
  request.set_prompt(prompt);
  request.mutable_sampling()->set_max_tokens(max_tokens);
  return request;
}

// Scrapes until `name` with `labels` sums to `want` (the last calls'
// records land just after their responses) or a few seconds pass.
double WaitForMetric(int port, const std::string& name,
                     const std::map<std::string, std::string>& labels,
                     double want) {
  double value = 0;
  for (int i = 0; i < 100; ++i) {
    value = MetricSum(ScrapeMetrics(port), name, labels);
    if (value == want) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return value;
}

// ---------------------------------------------- item 6: what is counted --

TEST(AccountingTest, QueueFullRejectionsAreCounted) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      StartWithMetrics({"--max_running=1", "--max_waiting=1"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPort(**server);
  ASSERT_GT(port, 0);
  std::unique_ptr<client::SkipserveClient> client =
      Inference((*server)->target());
  ASSERT_NE(client, nullptr);
  constexpr int kCalls = 8;
  std::vector<absl::Status> results(kCalls);
  std::latch start(kCalls);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCalls; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      v1::GenerateRequest request = Request(absl::StrCat("Request ", i), 300);
      results[i] = i % 2 == 0 ? client->Generate(request).status()
                              : client->GenerateStream(request, {}).status();
    });
  }
  for (std::thread& t : threads) t.join();
  int rejected = 0;
  for (const absl::Status& status : results) {
    if (status.code() == absl::StatusCode::kResourceExhausted) ++rejected;
  }
  ASSERT_GE(rejected, 1);
  EXPECT_EQ(WaitForMetric(port, "skipserve_requests_total",
                          {{"code", "RESOURCE_EXHAUSTED"}}, rejected),
            rejected);
  EXPECT_EQ(WaitForMetric(port, "skipserve_requests_total", {}, kCalls),
            kCalls);
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
}

TEST(AccountingTest, ExpiredDeadlinesAreCountedAsDeadlineExceeded) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartWithMetrics({});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPort(**server);
  ASSERT_GT(port, 0);
  client::ClientOptions options = Options("");
  options.deadline = absl::Milliseconds(300);
  absl::StatusOr<std::unique_ptr<client::SkipserveClient>> client =
      client::SkipserveClient::Connect((*server)->target(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  // Hundreds of tokens take longer than the deadline.
  absl::Status unary = (*client)->Generate(Request("Long one", 1000)).status();
  EXPECT_EQ(unary.code(), absl::StatusCode::kDeadlineExceeded) << unary;
  absl::Status stream =
      (*client)->GenerateStream(Request("Long two", 1000), {}).status();
  EXPECT_EQ(stream.code(), absl::StatusCode::kDeadlineExceeded) << stream;
  EXPECT_EQ(WaitForMetric(port, "skipserve_requests_total",
                          {{"code", "DEADLINE_EXCEEDED"}}, 2),
            2);
  const std::string scrape = ScrapeMetrics(port);
  EXPECT_EQ(
      MetricSum(scrape, "skipserve_requests_total", {{"code", "CANCELLED"}}), 0)
      << scrape;
  EXPECT_EQ(
      MetricSum(scrape, "skipserve_requests_total",
                {{"rpc", "GenerateStream"}, {"code", "DEADLINE_EXCEEDED"}}),
      1);
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
}

TEST(AccountingTest, AnalyzeLayersIsCountedWhenItSucceeds) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartWithMetrics({});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPort(**server);
  ASSERT_GT(port, 0);
  std::unique_ptr<client::SkipserveClient> client =
      Inference((*server)->target());
  ASSERT_NE(client, nullptr);
  v1::AnalyzeLayersRequest request;
  request.add_prompts("The quick brown fox jumps over the lazy dog.");
  request.add_prompts("A second prompt.");
  absl::StatusOr<v1::AnalyzeLayersResponse> ok = client->AnalyzeLayers(request);
  ASSERT_TRUE(ok.ok()) << ok.status();
  request.clear_prompts();
  EXPECT_EQ(client->AnalyzeLayers(request).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WaitForMetric(port, "skipserve_requests_total",
                          {{"rpc", "AnalyzeLayers"}, {"code", "OK"}}, 1),
            1);
  const std::string scrape = ScrapeMetrics(port);
  EXPECT_EQ(MetricSum(scrape, "skipserve_requests_total",
                      {{"rpc", "AnalyzeLayers"}, {"code", "INVALID_ARGUMENT"}}),
            1)
      << scrape;
  EXPECT_EQ(MetricSum(scrape, "skipserve_requests_total",
                      {{"rpc", "AnalyzeLayers"}, {"policy", "none"}}),
            1)
      << scrape;
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
}

// Starts a Generate call on `channel` with the generic API and ends it
// without sending a request message: cancelled after the server saw its
// headers (`cancel`), or by closing the client's side. Returns its status.
grpc::Status CallWithoutAMessage(const std::shared_ptr<grpc::Channel>& channel,
                                 bool cancel) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, "/skipserve.v1.Inference/Generate", &cq);
  void* tag = nullptr;
  bool ok = false;
  auto wait = [&](intptr_t want) {
    return cq.Next(&tag, &ok) && reinterpret_cast<intptr_t>(tag) == want;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  EXPECT_TRUE(wait(1));
  absl::SleepFor(absl::Milliseconds(300));  // the server sees the headers
  if (cancel) {
    context.TryCancel();
  } else {
    call->WritesDone(reinterpret_cast<void*>(2));
    EXPECT_TRUE(wait(2));
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(3));
  EXPECT_TRUE(wait(3));
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// gRPC runs a raw unary handler also when the request never arrived, and
// may run it before it has noticed that the client cancelled. A client
// that cancels first is counted as CANCELLED, not as an undecodable request
// (INVALID_ARGUMENT, logged); one that closes its side without a message is
// told so. (The soak counted a cancelled Generate as INVALID_ARGUMENT; a
// first fix that asked the context in the handler still did, under load.)
TEST(AccountingTest, CallsEndedBeforeTheirRequestArrivedAreCountedAsSuch) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartWithMetrics({});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPort(**server);
  ASSERT_GT(port, 0);
  std::shared_ptr<grpc::Channel> channel = InsecureChannel((*server)->target());
  const grpc::Status cancelled = CallWithoutAMessage(channel, /*cancel=*/true);
  EXPECT_EQ(cancelled.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(WaitForMetric(port, "skipserve_requests_total",
                          {{"rpc", "Generate"}, {"code", "CANCELLED"}}, 1),
            1);
  const grpc::Status closed = CallWithoutAMessage(channel, /*cancel=*/false);
  EXPECT_EQ(closed.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(
      closed.error_message(),
      ::testing::HasSubstr("the client sent no skipserve.v1.GenerateRequest"));
  EXPECT_EQ(
      WaitForMetric(port, "skipserve_requests_total",
                    {{"rpc", "Generate"}, {"code", "INVALID_ARGUMENT"}}, 1),
      1);
  const std::string scrape = ScrapeMetrics(port);
  EXPECT_EQ(MetricSum(scrape, "skipserve_requests_total", {}), 2) << scrape;
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
  // A request that never arrived is not an undecodable one: no log line.
  EXPECT_FALSE(absl::StrContains(exit.stderr_text, "the client sent no"))
      << exit.stderr_text;
}

// ------------------------------------------ item 5: the label budget --

TEST(AccountingTest, AdHocSpecsCannotTakeTheLabelsOfOperatorPolicies) {
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = StartWithMetrics(
      {absl::StrCat("--admin_token_file=", token),
       "--max_inline_policy_labels=2", "--default_policy=ffn:7"});
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = MetricsPort(**server);
  ASSERT_GT(port, 0);
  std::unique_ptr<client::SkipserveClient> inference =
      Inference((*server)->target());
  std::unique_ptr<client::PoliciesClient> admin = Admin((*server)->target());
  ASSERT_TRUE(inference != nullptr && admin != nullptr);

  // A client spends the whole budget (and more) on ad-hoc specs first.
  for (int layer = 0; layer < 6; ++layer) {
    v1::GenerateRequest request = Request("Ad hoc", 1);
    request.mutable_policy()->set_spec(absl::StrCat("attn:", layer));
    ASSERT_TRUE(inference->Generate(request).ok());
  }
  // Then the operator's policies arrive.
  ASSERT_TRUE(admin->PutPolicy(MakePolicy("fast", "attn:last=25%")).ok());
  ASSERT_TRUE(admin
                  ->PutExperiment(MakeExperiment(
                      "ab", {{"a", "fast", 1}, {"b", "layer:6", 1}}))
                  .ok());
  ASSERT_TRUE(inference->Generate(Request("Default", 1)).ok());
  v1::GenerateRequest named = Request("Named", 1);
  named.mutable_policy()->set_name("fast");
  ASSERT_TRUE(inference->Generate(named).ok());
  std::set<std::string> arms;
  for (int i = 0; i < 16; ++i) {
    v1::GenerateRequest request = Request("Experiment", 1);
    request.mutable_policy()->set_experiment("ab");
    request.mutable_policy()->set_routing_key(absl::StrCat("user-", i));
    absl::StatusOr<v1::GenerateResponse> response =
        inference->Generate(request);
    ASSERT_TRUE(response.ok()) << response.status();
    arms.insert(response->arm());
  }
  ASSERT_EQ(arms.size(), 2u);

  absl::SleepFor(absl::Milliseconds(200));
  const std::string scrape = ScrapeMetrics(port);
  const std::vector<std::string> labels =
      LabelValues(scrape, "skipserve_requests_total", "policy");
  EXPECT_THAT(labels, Contains("other")) << "the budget was not spent";
  EXPECT_THAT(labels, Contains("ffn:7")) << absl::StrJoin(labels, ", ");
  EXPECT_THAT(labels, Contains("fast")) << absl::StrJoin(labels, ", ");
  EXPECT_THAT(labels, Contains("layer:6")) << absl::StrJoin(labels, ", ");
  EXPECT_EQ(
      MetricSum(scrape, "skipserve_requests_total", {{"policy", "other"}}), 4);
  const std::vector<std::string> arm_policies =
      LabelValues(scrape, "skipserve_experiment_assignments_total", "policy");
  EXPECT_THAT(arm_policies, Not(Contains("other")))
      << absl::StrJoin(arm_policies, ", ");
  EXPECT_THAT(arm_policies, Contains("layer:6"))
      << absl::StrJoin(arm_policies, ", ");
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
}

}  // namespace
}  // namespace skipserve::testing
