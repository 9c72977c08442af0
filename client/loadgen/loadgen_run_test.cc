// Tests of the load generator's runner (loadgen.h) and report (report.h)
// against a fake target: no server needed.

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/loadgen/loadgen.h"
#include "client/loadgen/report.h"
#include "client/loadgen/workload.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace skipserve::client {
namespace {

// Streams `tokens` one-token chunks `chunk_delay` apart, then a final
// message; every `fail_every`-th call (1-based) fails RESOURCE_EXHAUSTED.
class FakeServer {
 public:
  FakeServer(int tokens, std::chrono::milliseconds chunk_delay, int fail_every)
      : tokens_(tokens), chunk_delay_(chunk_delay), fail_every_(fail_every) {}

  GenerateTarget Target() {
    GenerateTarget target;
    target.generate = [this](const v1::GenerateRequest& request) {
      return Serve(request, nullptr);
    };
    target.generate_stream =
        [this](const v1::GenerateRequest& request,
               const SkipserveClient::ChunkCallback& on_chunk) {
          return Serve(request, &on_chunk);
        };
    return target;
  }

  int calls() const { return calls_.load(); }

 private:
  absl::StatusOr<v1::GenerateResponse> Serve(
      const v1::GenerateRequest& request,
      const SkipserveClient::ChunkCallback* on_chunk) {
    const int call = calls_.fetch_add(1) + 1;
    if (fail_every_ > 0 && call % fail_every_ == 0) {
      return absl::ResourceExhaustedError("queue full");
    }
    v1::GenerateResponse whole;
    for (int i = 0; i < tokens_; ++i) {
      std::this_thread::sleep_for(chunk_delay_);
      v1::GenerateResponse chunk;
      chunk.set_text("x");
      chunk.add_tokens()->set_id(7);
      if (on_chunk != nullptr) (*on_chunk)(chunk);
      whole.mutable_text()->append("x");
    }
    whole.set_finish_reason(v1::FINISH_REASON_LENGTH);
    whole.mutable_usage()->set_prompt_tokens(5);
    whole.mutable_usage()->set_completion_tokens(tokens_);
    whole.set_policy("plan(" + request.policy().spec() + ")");
    if (on_chunk != nullptr) (*on_chunk)(whole);
    return whole;
  }

  const int tokens_;
  const std::chrono::milliseconds chunk_delay_;
  const int fail_every_;
  std::atomic<int> calls_{0};
};

RequestPlanner Planner() {
  WorkloadOptions options;
  options.mix = *ParseMix("none=1,attn:last=50%=1");
  options.prompt_len = {2, 4};
  options.seed = 1;
  return RequestPlanner(options);
}

TEST(RunLoadTest, ClosedLoopCountsEveryRequestAndError) {
  FakeServer server(/*tokens=*/4, std::chrono::milliseconds(1),
                    /*fail_every=*/10);
  LoadgenOptions options;
  options.concurrency = 4;
  options.max_requests = 50;
  absl::StatusOr<LoadReport> report =
      RunLoad(Planner(), server.Target(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(server.calls(), 50);
  const PolicyResult total = report->Total();
  EXPECT_EQ(total.requests, 50u);
  EXPECT_EQ(total.ok, 45u);
  EXPECT_EQ(total.errors.at("RESOURCE_EXHAUSTED"), 5u);
  EXPECT_EQ(total.first_error, "RESOURCE_EXHAUSTED: queue full");
  EXPECT_EQ(total.ttft.size(), 45u);
  EXPECT_EQ(total.itl.size(), 45u * 3);  // gaps after the first token
  EXPECT_EQ(total.e2e.size(), 45u);
  EXPECT_EQ(total.completion_tokens, 45u * 4);
  EXPECT_EQ(total.prompt_tokens, 45u * 5);
  for (double itl : total.itl) EXPECT_GT(itl, 0.0005);
  for (const PolicyResult& p : report->policies()) {
    EXPECT_GT(p.requests, 0u);
    ASSERT_EQ(p.served.size(), 1u);
    EXPECT_EQ(*p.served.begin(), "plan(" + p.label + ")");
  }
  EXPECT_FALSE(report->summary().open_loop);
  EXPECT_EQ(report->summary().concurrency, 4);
  EXPECT_GT(report->summary().wall_seconds, 0);
}

TEST(RunLoadTest, UnaryMeasuresNoTtftOrItl) {
  FakeServer server(3, std::chrono::milliseconds(0), 0);
  LoadgenOptions options;
  options.concurrency = 2;
  options.max_requests = 10;
  options.stream = false;
  absl::StatusOr<LoadReport> report =
      RunLoad(Planner(), server.Target(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  const PolicyResult total = report->Total();
  EXPECT_EQ(total.ok, 10u);
  EXPECT_TRUE(total.ttft.empty());
  EXPECT_TRUE(total.itl.empty());
  EXPECT_EQ(total.e2e.size(), 10u);
}

TEST(RunLoadTest, DurationBoundsAClosedLoop) {
  FakeServer server(1, std::chrono::milliseconds(10), 0);
  LoadgenOptions options;
  options.concurrency = 2;
  options.duration = absl::Milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<LoadReport> report =
      RunLoad(Planner(), server.Target(), options);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(report->Total().requests, 2u);
  EXPECT_LT(elapsed, 2.0);
}

TEST(RunLoadTest, OpenLoopSendsLateArrivalsInsteadOfDroppingThem) {
  // 40 arrivals at 400/s (~0.1 s) on 2 workers, each request 40 ms: the
  // workers fall behind, so most requests start late, yet all are sent.
  FakeServer server(1, std::chrono::milliseconds(40), 0);
  LoadgenOptions options;
  options.rate = 400;
  options.max_requests = 40;
  options.max_workers = 2;
  options.seed = 3;
  absl::StatusOr<LoadReport> report =
      RunLoad(Planner(), server.Target(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(server.calls(), 40);
  EXPECT_EQ(report->Total().requests, 40u);
  EXPECT_TRUE(report->summary().open_loop);
  EXPECT_GT(report->summary().late_starts, 20u);
  EXPECT_GT(report->summary().max_start_lag_seconds, 0.2);
  // Latency counts from the scheduled arrival, so it includes the wait.
  EXPECT_GT(Summarize(report->Total().e2e).max, 0.2);
}

TEST(RunLoadTest, OpenLoopGrowsItsPool) {
  FakeServer server(1, std::chrono::milliseconds(30), 0);
  LoadgenOptions options;
  options.rate = 200;
  options.max_requests = 30;
  absl::StatusOr<LoadReport> report =
      RunLoad(Planner(), server.Target(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->Total().requests, 30u);
  // With a worker per waiting arrival nothing waits for long.
  EXPECT_LT(report->summary().max_start_lag_seconds, 0.1);
}

TEST(RunLoadTest, StopFlagEndsTheRun) {
  FakeServer server(1, std::chrono::milliseconds(1), 0);
  std::atomic<bool> stop{true};
  LoadgenOptions options;
  options.concurrency = 2;
  options.duration = absl::Seconds(30);
  options.stop = &stop;
  absl::StatusOr<LoadReport> report =
      RunLoad(Planner(), server.Target(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->Total().requests, 0u);
  EXPECT_TRUE(report->summary().interrupted);
}

TEST(RunLoadTest, BadOptions) {
  FakeServer server(1, std::chrono::milliseconds(0), 0);
  LoadgenOptions both;
  both.concurrency = 1;
  both.rate = 1;
  both.max_requests = 1;
  EXPECT_FALSE(RunLoad(Planner(), server.Target(), both).ok());
  LoadgenOptions unbounded;
  unbounded.concurrency = 1;
  EXPECT_FALSE(RunLoad(Planner(), server.Target(), unbounded).ok());
  LoadgenOptions too_many;
  too_many.concurrency = 100000;
  too_many.max_requests = 1;
  EXPECT_FALSE(RunLoad(Planner(), server.Target(), too_many).ok());
  EXPECT_EQ(server.calls(), 0);
}

TEST(LoadReportTest, TableAndJson) {
  LoadReport report({"none", "attn:last=33%"});
  RequestRecord ok;
  ok.mix_index = 1;
  ok.e2e_seconds = 0.5;
  ok.ttft_seconds = 0.1;
  ok.itl_seconds = {0.01, 0.02};
  ok.completion_tokens = 3;
  ok.served_policy = "attn:21-31";
  report.Add(ok);
  RequestRecord failed;
  failed.mix_index = 0;
  failed.code = absl::StatusCode::kDeadlineExceeded;
  report.Add(failed);
  report.summary().concurrency = 2;
  report.summary().wall_seconds = 2;

  const std::string table = report.FormatTable();
  EXPECT_NE(table.find("attn:last=33%"), std::string::npos) << table;
  EXPECT_NE(table.find("total"), std::string::npos) << table;
  EXPECT_NE(table.find("DEADLINE_EXCEEDED 1"), std::string::npos) << table;
  EXPECT_NE(table.find("attn:last=33% -> attn:21-31"), std::string::npos)
      << table;

  const nlohmann::json json = nlohmann::json::parse(report.ToJson());
  EXPECT_EQ(json["run"]["mode"], "closed");
  ASSERT_EQ(json["policies"].size(), 2u);
  EXPECT_EQ(json["policies"][0]["errors"]["DEADLINE_EXCEEDED"], 1);
  EXPECT_EQ(json["policies"][1]["ttft_seconds"]["p50"], 0.1);
  EXPECT_EQ(json["policies"][1]["itl_seconds"]["count"], 2);
  EXPECT_DOUBLE_EQ(json["policies"][1]["output_tokens_per_second"], 1.5);
  EXPECT_EQ(json["total"]["requests"], 2);
}

}  // namespace
}  // namespace skipserve::client
