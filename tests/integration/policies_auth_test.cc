// Access control of the real skipserve-server (docs/security.md): the admin
// API's token matrix, the admin API disabled without a token, inference
// behind --inference_token_file, and TLS / mutual TLS with certificates made
// at test time by the openssl command line.

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/lib/admin_client.h"
#include "client/lib/client.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "skipserve/v1/policies.grpc.pb.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif

namespace skipserve::testing {
namespace {

using Stub = v1::Policies::Stub;

// One admin RPC, called on a stub with a prepared context.
struct AdminRpc {
  std::string name;
  std::function<grpc::Status(Stub&, grpc::ClientContext*)> call;
  grpc::StatusCode with_right_token;  // the RPC's own answer
};

std::vector<AdminRpc> AdminRpcs() {
  using Code = grpc::StatusCode;
  std::vector<AdminRpc> rpcs;
  rpcs.push_back({"ListPolicies",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::ListPoliciesResponse r;
                    return s.ListPolicies(c, {}, &r);
                  },
                  Code::OK});
  rpcs.push_back({"GetPolicy",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::GetPolicyRequest q;
                    q.set_name("fast");
                    v1::PolicyResponse r;
                    return s.GetPolicy(c, q, &r);
                  },
                  Code::OK});
  rpcs.push_back({"PutPolicy",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::PutPolicyRequest q;
                    *q.mutable_policy() = MakePolicy("slow", "layer:7");
                    v1::PolicyResponse r;
                    return s.PutPolicy(c, q, &r);
                  },
                  Code::OK});
  rpcs.push_back({"DeletePolicy",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::DeletePolicyRequest q;
                    q.set_name("missing");
                    v1::DeletePolicyResponse r;
                    return s.DeletePolicy(c, q, &r);
                  },
                  Code::NOT_FOUND});
  rpcs.push_back({"ListExperiments",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::ListExperimentsResponse r;
                    return s.ListExperiments(c, {}, &r);
                  },
                  Code::OK});
  rpcs.push_back({"GetExperiment",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::GetExperimentRequest q;
                    q.set_name("missing");
                    v1::ExperimentResponse r;
                    return s.GetExperiment(c, q, &r);
                  },
                  Code::NOT_FOUND});
  rpcs.push_back({"PutExperiment",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::PutExperimentRequest q;
                    *q.mutable_experiment() = MakeExperiment(
                        "ab1", {{"a", "fast", 1}, {"b", "none", 1}});
                    v1::ExperimentResponse r;
                    return s.PutExperiment(c, q, &r);
                  },
                  Code::OK});
  rpcs.push_back({"DeleteExperiment",
                  [](Stub& s, grpc::ClientContext* c) {
                    v1::DeleteExperimentRequest q;
                    q.set_name("missing");
                    v1::DeleteExperimentResponse r;
                    return s.DeleteExperiment(c, q, &r);
                  },
                  Code::NOT_FOUND});
  return rpcs;
}

// The code of `rpc` with "authorization: <header>" (none when empty).
grpc::StatusCode CallWith(const std::string& target, const AdminRpc& rpc,
                          const std::string& header) {
  auto stub = v1::Policies::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(30));
  if (!header.empty()) context.AddMetadata("authorization", header);
  return rpc.call(*stub, &context).error_code();
}

std::unique_ptr<ServerProcess> StartOrFail(std::vector<std::string> flags) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(SKIPSERVE_SERVER_BINARY, std::move(flags));
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(PolicyAuthTest, EveryAdminRpcNeedsTheAdminToken) {
  TempDir dir;
  const std::string token =
      dir.Write("admin.token", absl::StrCat(kAdminToken, "\n"));
  const std::string policies = dir.Write(
      "policies.json", R"({"policies": [{"name": "fast", "spec": "attn:7"}]})");
  std::unique_ptr<ServerProcess> server =
      StartOrFail({absl::StrCat("--admin_token_file=", token),
                   absl::StrCat("--policies_file=", policies)});
  ASSERT_NE(server, nullptr);
  const std::string right = absl::StrCat("Bearer ", kAdminToken);
  for (const AdminRpc& rpc : AdminRpcs()) {
    SCOPED_TRACE(rpc.name);
    EXPECT_EQ(CallWith(server->target(), rpc, ""),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(CallWith(server->target(), rpc, "Bearer wrong-token-123456789"),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(CallWith(server->target(), rpc, absl::StrCat(right, "x")),
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(CallWith(server->target(), rpc, kAdminToken),  // no scheme
              grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(CallWith(server->target(), rpc, right), rpc.with_right_token);
  }
  // The admin token is not needed for inference (no --inference_token_file).
  std::unique_ptr<client::SkipserveClient> inference =
      Inference(server->target());
  ASSERT_NE(inference, nullptr);
  EXPECT_TRUE(inference->GetModelInfo().ok());
}

TEST(PolicyAuthTest, WithoutAnAdminTokenTheAdminApiIsClosed) {
  std::unique_ptr<ServerProcess> server = StartOrFail({});
  ASSERT_NE(server, nullptr);
  for (const AdminRpc& rpc : AdminRpcs()) {
    SCOPED_TRACE(rpc.name);
    EXPECT_EQ(CallWith(server->target(), rpc, ""),
              grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(
        CallWith(server->target(), rpc, absl::StrCat("Bearer ", kAdminToken)),
        grpc::StatusCode::PERMISSION_DENIED);
  }
  std::unique_ptr<client::PoliciesClient> admin = Admin(server->target());
  ASSERT_NE(admin, nullptr);
  absl::Status status = admin->ListPolicies().status();
  EXPECT_THAT(std::string(status.message()),
              ::testing::HasSubstr("--admin_token_file"));
}

TEST(PolicyAuthTest, InferenceTokenGuardsInferenceButNotHealth) {
  TempDir dir;
  const std::string token =
      dir.Write("inference.token", absl::StrCat(kInferenceToken, "\r\n"));
  std::unique_ptr<ServerProcess> server =
      StartOrFail({absl::StrCat("--inference_token_file=", token)});
  ASSERT_NE(server, nullptr);
  for (const std::string& bearer :
       {std::string(), std::string("wrong-token-0123456789"),
        std::string(kAdminToken)}) {
    SCOPED_TRACE(bearer);
    std::unique_ptr<client::SkipserveClient> c =
        Inference(server->target(), bearer);
    ASSERT_NE(c, nullptr);
    v1::GenerateRequest generate;
    generate.set_prompt("Hello");
    generate.mutable_sampling()->set_max_tokens(2);
    EXPECT_EQ(c->Generate(generate).status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(c->GenerateStream(generate, nullptr).status().code(),
              absl::StatusCode::kUnauthenticated);
    v1::ScoreRequest score;
    score.set_context("The sky is");
    score.add_continuations(" blue");
    EXPECT_EQ(c->Score(score).status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(c->Tokenize(v1::TokenizeRequest()).status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(c->GetModelInfo().status().code(),
              absl::StatusCode::kUnauthenticated);
  }
  std::unique_ptr<client::SkipserveClient> c =
      Inference(server->target(), kInferenceToken);
  ASSERT_NE(c, nullptr);
  v1::GenerateRequest generate;
  generate.set_prompt("Hello");
  generate.mutable_sampling()->set_max_tokens(2);
  EXPECT_TRUE(c->Generate(generate).ok());
  EXPECT_TRUE(c->GenerateStream(generate, nullptr).ok());
  EXPECT_TRUE(c->GetModelInfo().ok());

  // Health stays open (grpc.health.v1.Health/Check with an empty request).
  grpc::GenericStub health(grpc::CreateChannel(
      server->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(20));
  grpc::Slice empty(std::string{});
  grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer reply;
  std::promise<grpc::Status> done;
  health.UnaryCall(&context, "/grpc.health.v1.Health/Check",
                   grpc::StubOptions(), &request, &reply,
                   [&done](grpc::Status s) { done.set_value(s); });
  EXPECT_TRUE(done.get_future().get().ok());
}

TEST(PolicyAuthTest, BadTokenFilesStopTheServerNamingTheFile) {
  TempDir dir;
  const std::string short_token = dir.Write("short.token", "abc\n");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(SKIPSERVE_SERVER_BINARY,
                           {absl::StrCat("--admin_token_file=", short_token)});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              ::testing::HasSubstr(short_token));
  server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY,
      {absl::StrCat("--inference_token_file=", dir.path(), "/missing")});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              ::testing::HasSubstr("--inference_token_file"));
}

// ------------------------------------------------------------------ TLS --

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(MakeCertificates(dir_.path()).ok()); }
  std::string File(const std::string& name) const {
    return absl::StrCat(dir_.path(), "/", name);
  }
  // A client's GetModelInfo status over `options`' transport, connecting
  // lazily so that a failed handshake is the call's error.
  absl::Status InfoOver(const std::string& target,
                        client::ClientOptions options) const {
    options.connect_timeout = absl::ZeroDuration();
    options.deadline = absl::Seconds(20);
    absl::StatusOr<std::unique_ptr<client::SkipserveClient>> c =
        client::SkipserveClient::Connect(target, options);
    if (!c.ok()) return c.status();
    return (*c)->GetModelInfo().status();
  }
  TempDir dir_;
};

TEST_F(TlsTest, TlsServerServesTlsClientsOnly) {
  const std::string token = dir_.Write("admin.token", kAdminToken);
  std::unique_ptr<ServerProcess> server =
      StartOrFail({absl::StrCat("--tls_cert=", File("server.pem")),
                   absl::StrCat("--tls_key=", File("server.key")),
                   absl::StrCat("--admin_token_file=", token)});
  ASSERT_NE(server, nullptr);
  client::ClientOptions tls;
  tls.tls_ca_file = File("ca.pem");
  EXPECT_TRUE(InfoOver(server->target(), tls).ok());
  const std::string localhost = absl::StrCat("localhost:", server->port());
  EXPECT_TRUE(InfoOver(localhost, tls).ok());
  EXPECT_FALSE(InfoOver(server->target(), client::ClientOptions()).ok());
  client::ClientOptions wrong_ca;
  wrong_ca.tls_ca_file = File("rogue-ca.pem");
  EXPECT_FALSE(InfoOver(server->target(), wrong_ca).ok());

  // The admin API over TLS, with its token.
  client::ClientOptions admin_options = Options(kAdminToken);
  admin_options.tls_ca_file = File("ca.pem");
  absl::StatusOr<std::unique_ptr<client::PoliciesClient>> admin =
      client::PoliciesClient::Connect(server->target(), admin_options);
  ASSERT_TRUE(admin.ok()) << admin.status();
  EXPECT_TRUE((*admin)->PutPolicy(MakePolicy("fast", "attn:7")).ok());
}

TEST_F(TlsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  std::unique_ptr<ServerProcess> server =
      StartOrFail({absl::StrCat("--tls_cert=", File("server.pem")),
                   absl::StrCat("--tls_key=", File("server.key")),
                   absl::StrCat("--tls_client_ca=", File("ca.pem"))});
  ASSERT_NE(server, nullptr);
  client::ClientOptions options;
  options.tls_ca_file = File("ca.pem");
  EXPECT_FALSE(InfoOver(server->target(), options).ok());  // no certificate
  options.tls_cert_file = File("rogue.pem");
  options.tls_key_file = File("rogue.key");
  EXPECT_FALSE(InfoOver(server->target(), options).ok());  // another CA's
  options.tls_cert_file = File("client.pem");
  options.tls_key_file = File("client.key");
  EXPECT_TRUE(InfoOver(server->target(), options).ok());
  EXPECT_FALSE(InfoOver(server->target(), client::ClientOptions()).ok());
}

TEST_F(TlsTest, BadTlsFlagsStopTheServer) {
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(SKIPSERVE_SERVER_BINARY,
                           {absl::StrCat("--tls_cert=", File("server.pem"))});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              ::testing::HasSubstr("--tls_key"));
  server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY, {absl::StrCat("--tls_cert=", File("server.pem")),
                                absl::StrCat("--tls_key=", File("nope.key"))});
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()),
              ::testing::HasSubstr(File("nope.key")));
}

}  // namespace
}  // namespace skipserve::testing
