// End-to-end tests of the policy-selection tools against the real server on
// the embedded model (8 layers, random weights): AnalyzeLayers and
// `skipserve analyze`, the eval runner and `skipserve eval`.
//
// Expectations come from outside the server: the independent numpy
// reference (tests/reference/llama_ref.py, float64) on the token ids that
// the Tokenize RPC returns, and repeated runs (determinism, also while
// other requests share the engine).
//
// Tolerances: similarities are means of cosines of float32 residual
// streams, compared to float64 at 1e-4 absolute; log-likelihoods are sums
// of float32 log-softmaxes over a few tokens, compared at 1e-3 absolute.

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/eval/eval_data.h"
#include "client/eval/eval_report.h"
#include "client/eval/eval_run.h"
#include "client/lib/client.h"
#include "engine/testing/test_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/server_process.h"

namespace skipserve {
namespace {

namespace v1 = ::skipserve::v1;
using client::SkipserveClient;
using testing::ServerProcess;

constexpr int kNumLayers = 8;
constexpr double kSimilarityTol = 1e-4;
constexpr double kLogprobTol = 1e-3;

const std::vector<std::string> kPrompts = {
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time there was a small model that skipped its layers",
    "Question: Which part of a plant takes in water?\nAnswer: the roots",
};

std::string Quote(const std::string& s) { return "'" + s + "'"; }

class AnalysisTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(SKIPSERVE_SERVER_BINARY,
                             {"--max_batch_tokens=64"});
    if (!server.ok()) {
      start_error_ = server.status().ToString();
      return;
    }
    server_ = server->release();
    client::ClientOptions options;
    options.connect_timeout = absl::Seconds(20);
    absl::StatusOr<std::unique_ptr<SkipserveClient>> c =
        SkipserveClient::Connect(server_->target(), options);
    if (!c.ok()) {
      start_error_ = c.status().ToString();
      return;
    }
    client_ = c->release();
  }
  static void TearDownTestSuite() {
    delete client_;
    if (server_ != nullptr) server_->Stop();
    delete server_;
  }
  void SetUp() override { ASSERT_NE(client_, nullptr) << start_error_; }

  // Token ids of `text` with BOS, as the server tokenizes prompts.
  static std::vector<uint32_t> Tokens(const std::string& text) {
    v1::TokenizeRequest request;
    request.set_text(text);
    request.set_add_bos(true);
    absl::StatusOr<v1::TokenizeResponse> r = client_->Tokenize(request);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    return {r->token_ids().begin(), r->token_ids().end()};
  }

  static std::string Reference() {
    return absl::StrCat(
        testing::Python3(), " ",
        Quote(testing::SourcePath("tests/reference/llama_ref.py")), " ");
  }

  // The reference's per-layer similarities for `prompts` under `plan`
  // ("A;F" strings, empty for the full plan).
  static nlohmann::json ReferenceAnalysis(
      const std::vector<std::string>& prompts, const std::string& plan) {
    testing::ScratchDir dir;
    std::string cmd = absl::StrCat(Reference(), "analyze --model ",
                                   Quote(SKIPSERVE_DEFAULT_MODEL_DIR));
    for (const std::string& p : prompts) {
      absl::StrAppend(&cmd, " --tokens ", absl::StrJoin(Tokens(p), ","));
    }
    absl::StrAppend(&cmd, " --plan ", Quote(plan), " --out ",
                    dir.File("a.json"));
    std::string output;
    EXPECT_EQ(testing::RunCommand(cmd, &output), 0) << cmd << "\n" << output;
    return nlohmann::json::parse(testing::ReadFile(dir.File("a.json")), nullptr,
                                 false);
  }

  // Reference logits (T, V) of `ids` under `plan`.
  static std::vector<float> ReferenceLogits(const std::vector<uint32_t>& ids,
                                            const std::string& plan) {
    testing::ScratchDir dir;
    const std::string cmd = absl::StrCat(
        Reference(), "forward --model ", Quote(SKIPSERVE_DEFAULT_MODEL_DIR),
        " --tokens ", absl::StrJoin(ids, ","), " --plan ", Quote(plan),
        " --out ", dir.File("l.bin"));
    std::string output;
    EXPECT_EQ(testing::RunCommand(cmd, &output), 0) << cmd << "\n" << output;
    return testing::ReadFloats(dir.File("l.bin"));
  }

  static ServerProcess* server_;
  static SkipserveClient* client_;
  static std::string start_error_;
};
ServerProcess* AnalysisTest::server_ = nullptr;
SkipserveClient* AnalysisTest::client_ = nullptr;
std::string AnalysisTest::start_error_;

v1::AnalyzeLayersRequest AnalyzeRequest(double rate, const std::string& spec) {
  v1::AnalyzeLayersRequest request;
  for (const std::string& p : kPrompts) request.add_prompts(p);
  request.set_target_skip_rate(rate);
  if (!spec.empty()) request.mutable_policy()->set_spec(spec);
  return request;
}

void ExpectMatchesReference(const v1::AnalyzeLayersResponse& got,
                            const nlohmann::json& ref) {
  ASSERT_TRUE(ref.is_object()) << "the reference wrote no JSON";
  EXPECT_EQ(got.tokens(), ref["tokens"].get<uint64_t>());
  ASSERT_EQ(got.layers_size(), kNumLayers);
  for (int l = 0; l < kNumLayers; ++l) {
    SCOPED_TRACE(absl::StrCat("layer ", l));
    const v1::LayerSimilarity& layer = got.layers(l);
    EXPECT_NEAR(layer.attention_similarity(),
                ref["layers"][l]["attention"].get<double>(), kSimilarityTol);
    EXPECT_NEAR(layer.ffn_similarity(), ref["layers"][l]["ffn"].get<double>(),
                kSimilarityTol);
    EXPECT_NEAR(layer.layer_similarity(),
                ref["layers"][l]["layer"].get<double>(), kSimilarityTol);
  }
}

// The k most similar layers (ties to the later one), ascending, written as
// the canonical index list for k <= 2 (no ranges below 3 indices).
std::string ExpectedSuggestion(const char* kind, std::vector<double> sims,
                               int k) {
  std::vector<int> order(sims.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    return sims[a] != sims[b] ? sims[a] > sims[b] : a > b;
  });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return absl::StrCat(kind, ":", absl::StrJoin(order, ","));
}

TEST_F(AnalysisTest, AnalyzeLayersMatchesTheReferenceAndIsDeterministic) {
  absl::StatusOr<v1::AnalyzeLayersResponse> first =
      client_->AnalyzeLayers(AnalyzeRequest(0.25, ""));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->policy(), "none");
  ASSERT_EQ(first->prompt_tokens_size(), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(first->prompt_tokens(i), Tokens(kPrompts[i]).size());
  }
  ExpectMatchesReference(*first, ReferenceAnalysis(kPrompts, ""));

  // Again, while generations share the engine: identical to the bit.
  std::vector<std::thread> load;
  for (int i = 0; i < 4; ++i) {
    load.emplace_back([i] {
      v1::GenerateRequest g;
      g.set_prompt(absl::StrCat("Background request ", i, " about layers"));
      g.mutable_sampling()->set_max_tokens(40);
      g.mutable_policy()->set_spec(i % 2 ? "attn:last=50%" : "none");
      EXPECT_TRUE(client_->Generate(g).ok());
    });
  }
  absl::StatusOr<v1::AnalyzeLayersResponse> second =
      client_->AnalyzeLayers(AnalyzeRequest(0.25, ""));
  for (std::thread& t : load) t.join();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE(first->request_id(), second->request_id());
  second->set_request_id(first->request_id());
  EXPECT_TRUE(
      google::protobuf::util::MessageDifferencer::Equals(*first, *second))
      << first->ShortDebugString() << "\n vs \n"
      << second->ShortDebugString();

  // round(0.25 * 8) = 2 sublayers of each kind, the most similar ones.
  ASSERT_EQ(first->suggestions_size(), 3);
  std::vector<double> attn, ffn, layer;
  for (const v1::LayerSimilarity& l : first->layers()) {
    attn.push_back(l.attention_similarity());
    ffn.push_back(l.ffn_similarity());
    layer.push_back(l.layer_similarity());
  }
  EXPECT_EQ(first->suggestions(0).policy(),
            ExpectedSuggestion("attn", attn, 2));
  EXPECT_EQ(first->suggestions(1).policy(), ExpectedSuggestion("ffn", ffn, 2));
  EXPECT_EQ(first->suggestions(2).policy(),
            ExpectedSuggestion("layer", layer, 2));
  EXPECT_EQ(first->suggestions(0).layers_size(), 2);
}

TEST_F(AnalysisTest, SkippedSublayersAreTheIdentityAsInTheReference) {
  absl::StatusOr<v1::AnalyzeLayersResponse> got =
      client_->AnalyzeLayers(AnalyzeRequest(0.5, "attn:6,7;ffn:0;layer:3"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->policy(), "attn:6,7;ffn:0;layer:3");
  ExpectMatchesReference(*got,
                         ReferenceAnalysis(kPrompts, "11101100;01101111"));
  for (int l : {3, 6, 7}) {
    EXPECT_TRUE(got->layers(l).attention_skipped()) << l;
    EXPECT_EQ(got->layers(l).attention_similarity(), 1.0) << l;
  }
  EXPECT_TRUE(got->layers(0).ffn_skipped());
  EXPECT_EQ(got->layers(3).layer_similarity(), 1.0);
  EXPECT_FALSE(got->layers(1).attention_skipped());
}

TEST_F(AnalysisTest, BadAnalyzeRequestsNameTheField) {
  v1::AnalyzeLayersRequest request = AnalyzeRequest(1.5, "");
  absl::StatusOr<v1::AnalyzeLayersResponse> r = client_->AnalyzeLayers(request);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("target_skip_rate"), std::string::npos);
  request.clear_prompts();
  request.set_target_skip_rate(0.3);
  r = client_->AnalyzeLayers(request);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("prompts must hold 1..64"),
            std::string::npos);
}

std::vector<client::EvalItem> SampleItems() {
  std::vector<client::EvalItem> items;
  for (const char* file : {"arc_sample.jsonl", "hellaswag_sample.jsonl",
                           "truthfulqa_mc1_sample.jsonl"}) {
    absl::StatusOr<std::vector<client::EvalItem>> loaded = client::LoadEvalFile(
        testing::SourcePath(absl::StrCat("tests/data/eval/", file)),
        client::EvalFormat::kAuto, 4);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    if (loaded.ok()) items.insert(items.end(), loaded->begin(), loaded->end());
  }
  return items;
}

TEST_F(AnalysisTest, EvalIsDeterministicAndMatchesTheReference) {
  const std::vector<client::EvalItem> items = SampleItems();
  ASSERT_EQ(items.size(), 12u);
  absl::StatusOr<std::vector<client::EvalPolicy>> policies =
      client::ParseEvalPolicies("none,attn:last=25%");
  ASSERT_TRUE(policies.ok());
  client::EvalOptions options;
  options.concurrency = 4;
  auto first = client::RunEvaluation(*client_, items, *policies, options);
  options.concurrency = 3;
  auto second = client::RunEvaluation(*client_, items, *policies, options);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(first->size(), 2u);
  EXPECT_EQ((*first)[1].served, "attn:6,7");
  for (size_t p = 0; p < 2; ++p) {
    for (size_t i = 0; i < items.size(); ++i) {
      const client::ItemResult& a = (*first)[p].items[i];
      const client::ItemResult& b = (*second)[p].items[i];
      ASSERT_TRUE(a.status.ok()) << a.status;
      ASSERT_EQ(a.choices.size(), items[i].continuations.size());
      ASSERT_EQ(a.choices.size(), b.choices.size());
      for (size_t c = 0; c < a.choices.size(); ++c) {
        EXPECT_EQ(a.choices[c].logprob, b.choices[c].logprob)
            << items[i].source << " choice " << c;
      }
    }
  }
  const auto rows = client::SummarizeEval(items, *first, kNumLayers);
  const auto rows2 = client::SummarizeEval(items, *second, kNumLayers);
  ASSERT_EQ(rows.size(), 6u);  // 2 policies x 3 benchmarks
  for (size_t r = 0; r < rows.size(); ++r) {
    EXPECT_EQ(rows[r].accuracy.successes, rows2[r].accuracy.successes);
    EXPECT_EQ(rows[r].acc_norm.successes, rows2[r].acc_norm.successes);
    EXPECT_EQ(rows[r].accuracy.n, 4);
  }

  // Two items (ARC and TruthfulQA), every choice, both plans: the sum of the
  // reference's log-softmax at the continuation's tokens.
  const std::string plans[] = {"", "11111100;11111111"};
  for (size_t item_index : {size_t{0}, size_t{8}}) {
    const client::EvalItem& item = items[item_index];
    const std::vector<uint32_t> context = Tokens(item.context);
    for (size_t c = 0; c < item.continuations.size(); ++c) {
      const std::vector<uint32_t> whole =
          Tokens(item.context + item.continuations[c]);
      size_t common = 0;
      while (common < context.size() && common < whole.size() &&
             context[common] == whole[common]) {
        ++common;
      }
      ASSERT_LT(common, whole.size());
      for (size_t p = 0; p < 2; ++p) {
        const std::vector<float> logits = ReferenceLogits(whole, plans[p]);
        const size_t vocab = logits.size() / whole.size();
        ASSERT_EQ(vocab * whole.size(), logits.size());
        double expected = 0;
        for (size_t pos = common; pos < whole.size(); ++pos) {
          const float* row = logits.data() + (pos - 1) * vocab;
          const double max = *std::max_element(row, row + vocab);
          double sum = 0;
          for (size_t v = 0; v < vocab; ++v) sum += std::exp(row[v] - max);
          expected += row[whole[pos]] - max - std::log(sum);
        }
        EXPECT_NEAR((*first)[p].items[item_index].choices[c].logprob, expected,
                    kLogprobTol)
            << item.source << " choice " << c << " plan '" << plans[p] << "'";
      }
    }
  }
}

TEST_F(AnalysisTest, CliAnalyzeAndEvalWriteReportsAndCharts) {
  testing::ScratchDir dir;
  const std::string cli =
      absl::StrCat(SKIPSERVE_CLI_BINARY, " --target=", server_->target(), " ");
  std::string output;
  const std::string analyze = absl::StrCat(
      "(", cli, "analyze --prompt 'Hello there' --prompt 'A second prompt' ",
      "--rate 0.25 --svg ", dir.File("layers.svg"), " > ",
      dir.File("analyze.txt"), ")");
  ASSERT_EQ(testing::RunCommand(analyze, &output), 0) << output;
  const std::string table = testing::ReadFile(dir.File("analyze.txt"));
  EXPECT_NE(table.find("attn cos"), std::string::npos) << table;
  EXPECT_NE(table.find("suggested policies for skip rate 0.25"),
            std::string::npos)
      << table;
  EXPECT_NE(testing::ReadFile(dir.File("layers.svg")).find("</svg>"),
            std::string::npos);

  const std::string eval = absl::StrCat(
      "(", cli, "eval ",
      testing::SourcePath("tests/data/eval/truthfulqa_mc1_sample.jsonl"), " ",
      testing::SourcePath("tests/data/eval/arc_sample.jsonl"),
      " --limit 3 --policies none,attn:last=25% --concurrency 2 --json --svg ",
      dir.File("eval.svg"), " > ", dir.File("eval.json"), ")");
  output.clear();
  ASSERT_EQ(testing::RunCommand(eval, &output), 0) << output;
  EXPECT_NE(output.find("[2/2] attn:last=25%: 6/6 items"), std::string::npos)
      << output;
  const nlohmann::json json = nlohmann::json::parse(
      testing::ReadFile(dir.File("eval.json")), nullptr, false);
  ASSERT_TRUE(json.is_object()) << testing::ReadFile(dir.File("eval.json"));
  ASSERT_EQ(json["rows"].size(), 4u);
  EXPECT_EQ(json["rows"][0]["benchmark"], "truthfulqa_mc1");
  EXPECT_EQ(json["rows"][0]["n"], 3);
  EXPECT_EQ(json["items"].size(), 6u);
  EXPECT_NE(testing::ReadFile(dir.File("eval.svg"))
                .find("truthfulqa_mc1: accuracy against skip rate"),
            std::string::npos);
}

}  // namespace
}  // namespace skipserve
