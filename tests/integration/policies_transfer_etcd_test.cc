// `skipserve policies export|import` (client/cli/policies_transfer.h)
// against a real etcd (etcd_process.h): a state file imported into etcd,
// exported back to a file, and imported onto a registry etcd already holds
// (the version bumped past it). The file-store cases are in
// client/cli/policies_transfer_test.cc.

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli/policies_transfer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/admin/state_file.h"
#include "tests/integration/etcd_process.h"

namespace skipserve::client {
namespace {

using ::skipserve::server::ParseState;
using ::skipserve::server::ReadWholeFile;
using ::skipserve::server::SerializeState;
using ::skipserve::server::StoredState;
using ::skipserve::testing::EtcdCluster;
using ::testing::HasSubstr;

constexpr char kKey[] = "/transfer/registry";  // etcd_registry_store.h

StoredState Sample(uint64_t version) {
  StoredState state;
  state.version = version;
  state.policies.push_back({"fast", "attn:last=33%", "the paper's"});
  state.policies.push_back({"deep", "layer:28-31", ""});
  server::Experiment experiment;
  experiment.name = "ab1";
  experiment.arms.push_back({"a", "fast", true, 50});
  experiment.arms.push_back({"b", "none", false, 50});
  state.experiments.push_back(experiment);
  return state;
}

class PoliciesTransferEtcdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<EtcdCluster>> etcd = EtcdCluster::Start(1);
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
    std::string name = ::testing::TempDir() + "/transfer_etcd.XXXXXX";
    ASSERT_NE(mkdtemp(name.data()), nullptr);
    dir_ = name;
    out_ = std::tmpfile();
    err_ = std::tmpfile();
    ASSERT_NE(out_, nullptr);
    ASSERT_NE(err_, nullptr);
  }
  void TearDown() override {
    if (out_ != nullptr) std::fclose(out_);
    if (err_ != nullptr) std::fclose(err_);
    std::system(absl::StrCat("rm -rf '", dir_, "'").c_str());
  }

  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  std::string Registry() const {
    return absl::StrCat("etcd://", etcd_->ClientUrls(), "/transfer");
  }
  absl::Status Run(const std::string& action, const std::string& path) {
    TransferRequest request;
    request.action = action;
    request.path = path;
    request.store.registry = Registry();
    return RunPoliciesTransfer(request, out_, err_);
  }
  // What the command printed to `out_` so far.
  std::string Printed() {
    std::fflush(out_);
    std::rewind(out_);
    std::string text;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, out_)) > 0;) {
      text.append(buffer, n);
    }
    return text;
  }
  // The registry etcd holds (nullopt: none).
  std::optional<StoredState> InEtcd() {
    absl::StatusOr<std::string> value = etcd_->Get(kKey);
    if (!value.ok()) {
      EXPECT_EQ(value.status().code(), absl::StatusCode::kNotFound)
          << value.status();
      return std::nullopt;
    }
    absl::StatusOr<StoredState> state = ParseState(*value, kKey);
    EXPECT_TRUE(state.ok()) << state.status();
    if (!state.ok()) return std::nullopt;
    return *state;
  }

  std::unique_ptr<EtcdCluster> etcd_;
  std::string dir_;
  std::FILE* out_ = nullptr;
  std::FILE* err_ = nullptr;
};

TEST_F(PoliciesTransferEtcdTest, FileToEtcdAndBack) {
  // Nothing there yet: export says so, naming the store.
  absl::Status s = Run("export", Path("empty.json"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(kKey));

  ASSERT_TRUE(
      server::WriteFileAtomically(Path("in.json"), SerializeState(Sample(7)))
          .ok());
  s = Run("import", Path("in.json"));
  ASSERT_TRUE(s.ok()) << s << "\n" << etcd_->LogTails();
  std::optional<StoredState> stored = InEtcd();
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(SerializeState(*stored), SerializeState(Sample(7)));
  EXPECT_THAT(Printed(), HasSubstr("imported 2 policies, 1 experiments into "
                                   "etcd "));
  EXPECT_THAT(Printed(), HasSubstr(absl::StrCat(kKey, " as version 7\n")));

  s = Run("export", Path("out.json"));
  ASSERT_TRUE(s.ok()) << s;
  absl::StatusOr<std::string> exported = ReadWholeFile(Path("out.json"));
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(*exported, SerializeState(Sample(7)));
  EXPECT_THAT(Printed(), HasSubstr("exported 2 policies, 1 experiments "
                                   "(version 7) from etcd "));
}

TEST_F(PoliciesTransferEtcdTest, ImportOntoARegistryBumpsTheVersion) {
  ASSERT_TRUE(
      server::WriteFileAtomically(Path("in.json"), SerializeState(Sample(7)))
          .ok());
  ASSERT_TRUE(Run("import", Path("in.json")).ok());
  // Again: etcd holds 7, the file says 7: 8.
  absl::Status s = Run("import", Path("in.json"));
  ASSERT_TRUE(s.ok()) << s;
  ASSERT_TRUE(InEtcd().has_value());
  EXPECT_EQ(InEtcd()->version, 8u);
  // Someone (a server) moved etcd far ahead: V + 1.
  StoredState ahead = Sample(30);
  ahead.policies.pop_back();
  ASSERT_TRUE(etcd_->Put(kKey, SerializeState(ahead)).ok());
  s = Run("import", Path("in.json"));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(InEtcd()->version, 31u);
  EXPECT_EQ(InEtcd()->policies.size(), 2u);
  // A file ahead of etcd keeps its own version.
  ASSERT_TRUE(server::WriteFileAtomically(Path("later.json"),
                                          SerializeState(Sample(100)))
                  .ok());
  s = Run("import", Path("later.json"));
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(InEtcd()->version, 100u);
  EXPECT_THAT(Printed(), HasSubstr("as version 8\n"));
  EXPECT_THAT(Printed(), HasSubstr("as version 31\n"));
  EXPECT_THAT(Printed(), HasSubstr("as version 100\n"));
  // And export hands back what etcd holds.
  ASSERT_TRUE(Run("export", Path("out.json")).ok());
  EXPECT_EQ(*ReadWholeFile(Path("out.json")), SerializeState(Sample(100)));
}

TEST_F(PoliciesTransferEtcdTest, AnUnreachableEtcdIsUnavailable) {
  ASSERT_TRUE(
      server::WriteFileAtomically(Path("in.json"), SerializeState(Sample(7)))
          .ok());
  etcd_->Stop();
  const absl::Status s = Run("import", Path("in.json"));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

}  // namespace
}  // namespace skipserve::client
