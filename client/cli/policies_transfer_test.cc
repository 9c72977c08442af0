// `skipserve policies export|import` (client/cli/policies_transfer.h) with
// the file store and a fake store; against a real etcd in
// tests/integration/policies_transfer_etcd_test.cc.

#include "client/cli/policies_transfer.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cli/admin_commands.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/admin/state_file.h"

namespace skipserve::client {
namespace {

using server::ParseState;
using server::ReadWholeFile;
using server::SerializeState;
using server::StoredState;
using ::testing::HasSubstr;
using ::testing::Not;

StoredState Sample(uint64_t version) {
  StoredState state;
  state.version = version;
  state.policies.push_back({"fast", "attn:last=33%", "the paper's"});
  state.policies.push_back({"deep", "layer:28-31", ""});
  server::Experiment experiment;
  experiment.name = "ab1";
  experiment.description = "fast or not";
  experiment.arms.push_back({"a", "fast", true, 50});
  experiment.arms.push_back({"b", "none", false, 50});
  state.experiments.push_back(experiment);
  return state;
}

// Captures what a FILE* receives.
class Capture {
 public:
  Capture() : file_(open_memstream(&data_, &size_)) {}
  ~Capture() {
    std::fclose(file_);
    std::free(data_);
  }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    return std::string(data_, size_);
  }

 private:
  char* data_ = nullptr;
  size_t size_ = 0;
  std::FILE* file_;
};

class PoliciesTransferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string name = ::testing::TempDir() + "/policies_transfer.XXXXXX";
    ASSERT_NE(mkdtemp(name.data()), nullptr);
    dir_ = name;
  }
  void TearDown() override {
    std::string command = absl::StrCat("rm -rf '", dir_, "'");
    ASSERT_EQ(std::system(command.c_str()), 0);
  }

  std::string Path(const std::string& name) const {
    return absl::StrCat(dir_, "/", name);
  }
  void Write(const std::string& name, const StoredState& state) {
    ASSERT_TRUE(
        server::WriteFileAtomically(Path(name), SerializeState(state)).ok());
  }
  std::optional<StoredState> Read(const std::string& name) {
    absl::StatusOr<std::string> text = ReadWholeFile(Path(name));
    if (!text.ok()) return std::nullopt;
    absl::StatusOr<StoredState> state = ParseState(*text, name);
    EXPECT_TRUE(state.ok()) << state.status();
    if (!state.ok()) return std::nullopt;
    return *state;
  }

  absl::Status Run(const std::string& action, const std::string& registry,
                   const std::string& path) {
    TransferRequest request;
    request.action = action;
    request.path = path;
    request.store.registry = registry;
    return RunPoliciesTransfer(request, out_.file(), err_.file());
  }

  std::string dir_;
  Capture out_;
  Capture err_;
};

TEST_F(PoliciesTransferTest, ExportFileToFileRoundTrip) {
  Write("a.json", Sample(7));
  ASSERT_TRUE(Run("export", "file:" + Path("a.json"), Path("b.json")).ok());
  std::optional<StoredState> b = Read("b.json");
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(SerializeState(*b), SerializeState(Sample(7)));
  EXPECT_EQ(*ReadWholeFile(Path("b.json")), *ReadWholeFile(Path("a.json")));
  EXPECT_THAT(out_.text(),
              HasSubstr(absl::StrCat("exported 2 policies, 1 experiments "
                                     "(version 7) from state file ",
                                     Path("a.json"), " to ", Path("b.json"))));
}

TEST_F(PoliciesTransferTest, ExportToStdoutKeepsTheSummaryOnStderr) {
  Write("a.json", Sample(3));
  ASSERT_TRUE(Run("export", "file:" + Path("a.json"), "-").ok());
  EXPECT_EQ(out_.text(), SerializeState(Sample(3)));
  EXPECT_THAT(err_.text(), HasSubstr("exported 2 policies"));
}

TEST_F(PoliciesTransferTest, ExportOfAnEmptyStoreIsNotFound) {
  const absl::Status s =
      Run("export", "file:" + Path("none.json"), Path("b.json"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("state file " + Path("none.json")));
  EXPECT_FALSE(Read("b.json").has_value());
}

TEST_F(PoliciesTransferTest, ExportToAnUnwritablePathNamesOut) {
  Write("a.json", Sample(3));
  const absl::Status s =
      Run("export", "file:" + Path("a.json"), Path("no/such/dir/b.json"));
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("--out: cannot write '"));
}

TEST_F(PoliciesTransferTest, ImportIntoAnEmptyStoreKeepsTheVersion) {
  Write("in.json", Sample(7));
  ASSERT_TRUE(
      Run("import", "file:" + Path("store.json"), Path("in.json")).ok());
  std::optional<StoredState> store = Read("store.json");
  ASSERT_TRUE(store.has_value());
  EXPECT_EQ(SerializeState(*store), SerializeState(Sample(7)));
  EXPECT_EQ(out_.text(),
            absl::StrCat("imported 2 policies, 1 experiments into state file ",
                         Path("store.json"), " as version 7\n"));
}

TEST_F(PoliciesTransferTest, ImportOntoAStoreBumpsTheVersion) {
  Write("in.json", Sample(7));
  // The store is behind the file: the file's version is kept.
  StoredState old = Sample(3);
  old.policies.pop_back();
  Write("store.json", old);
  ASSERT_TRUE(
      Run("import", "file:" + Path("store.json"), Path("in.json")).ok());
  ASSERT_TRUE(Read("store.json").has_value());
  EXPECT_EQ(Read("store.json")->version, 7u);
  EXPECT_EQ(Read("store.json")->policies.size(), 2u);
  // The store is ahead (or level): V + 1.
  Write("store.json", Sample(20));
  ASSERT_TRUE(
      Run("import", "file:" + Path("store.json"), Path("in.json")).ok());
  EXPECT_EQ(Read("store.json")->version, 21u);
  Write("store.json", Sample(7));
  ASSERT_TRUE(
      Run("import", "file:" + Path("store.json"), Path("in.json")).ok());
  EXPECT_EQ(Read("store.json")->version, 8u);
  EXPECT_THAT(out_.text(), HasSubstr("as version 21\n"));
  EXPECT_THAT(out_.text(), HasSubstr("as version 8\n"));
}

TEST_F(PoliciesTransferTest, BadInputFileIsInvalidArgumentNamingIt) {
  ASSERT_TRUE(server::WriteFileAtomically(Path("bad.json"), "{\"x\": 1}").ok());
  Write("store.json", Sample(4));
  absl::Status s =
      Run("import", "file:" + Path("store.json"), Path("bad.json"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("--in '", Path("bad.json"), "'")));
  EXPECT_EQ(Read("store.json")->version, 4u);  // untouched

  s = Run("import", "file:" + Path("store.json"), Path("missing.json"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr(absl::StrCat("--in: '", Path("missing.json"),
                                     "': no such file")));

  // A long path is quoted, not echoed whole.
  const std::string long_path = Path(std::string(300, 'x'));
  s = Run("import", "file:" + Path("store.json"), long_path);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr(long_path)));
  EXPECT_LT(s.message().size(), 250u) << s;
}

TEST_F(PoliciesTransferTest, BadRegistryNamesTheFlag) {
  Write("in.json", Sample(1));
  const absl::Status s = Run("import", "ftp://x", Path("in.json"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("--registry='ftp://x'"));
}

// A store whose CompareAndSwap reports a concurrent change `conflicts`
// times (each time someone else bumps its version).
class RacingStore : public server::RegistryStore {
 public:
  explicit RacingStore(int conflicts) : conflicts_(conflicts) {
    state_ = Sample(10);
  }
  std::string Describe() const override { return "racing store"; }
  std::string Kind() const override { return "fake"; }
  absl::StatusOr<std::optional<StoredState>> Load() override {
    ++loads;
    return state_;
  }
  absl::Status CompareAndSwap(std::optional<uint64_t> base_version,
                              const StoredState& next,
                              std::optional<StoredState>*) override {
    bases.push_back(base_version);
    if (conflicts_ > 0) {
      --conflicts_;
      state_.version += 5;
      return absl::AbortedError("someone else wrote");
    }
    if (base_version != state_.version) return absl::AbortedError("stale");
    state_ = next;
    return absl::OkStatus();
  }
  void Watch(std::function<void(const StoredState&)>) override {}
  server::StoreHealth Health() const override { return {}; }

  int loads = 0;
  std::vector<std::optional<uint64_t>> bases;
  StoredState state_;

 private:
  int conflicts_;
};

TEST_F(PoliciesTransferTest, ImportRetriesOnceAfterAConcurrentChange) {
  Write("in.json", Sample(2));
  RacingStore store(1);
  absl::StatusOr<ImportResult> result = ImportRegistry(store, Path("in.json"));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(store.loads, 2);
  EXPECT_EQ(store.bases, (std::vector<std::optional<uint64_t>>{10u, 15u}));
  EXPECT_EQ(result->version, 16u);
  EXPECT_EQ(store.state_.version, 16u);
  EXPECT_EQ(result->policies, 2u);
  EXPECT_EQ(result->experiments, 1u);
}

TEST_F(PoliciesTransferTest, ImportFailsAbortedAfterTwoConcurrentChanges) {
  Write("in.json", Sample(2));
  RacingStore store(2);
  absl::StatusOr<ImportResult> result = ImportRegistry(store, Path("in.json"));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted)
      << result.status();
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("racing store changed twice"));
  EXPECT_EQ(store.bases.size(), 2u);
  EXPECT_EQ(store.state_.version, 20u);  // the other writers' only
}

absl::StatusOr<ParsedArgs> Parse(std::vector<std::string> words) {
  words.insert(words.begin(), "skipserve");
  std::vector<char*> argv;
  for (std::string& word : words) argv.push_back(word.data());
  std::vector<std::string> known = TransferFlagNames();
  known.push_back("name");  // a flag of the other policies actions
  return ParseArgs(static_cast<int>(argv.size()), argv.data(), known);
}

std::string UsageError(std::vector<std::string> words) {
  absl::StatusOr<ParsedArgs> args = Parse(std::move(words));
  EXPECT_TRUE(args.ok()) << args.status();
  if (!args.ok()) return "";
  absl::StatusOr<TransferRequest> request = TransferRequestFromArgs(*args);
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(request.status().message());
}

TEST(TransferRequestFromArgsTest, ReadsTheFlags) {
  absl::StatusOr<ParsedArgs> args =
      Parse({"policies", "export", "--registry=etcd://127.0.0.1:2379/p",
             "--out", "-", "--etcd-user=u", "--etcd_password_file=/pw"});
  ASSERT_TRUE(args.ok()) << args.status();
  absl::StatusOr<TransferRequest> request = TransferRequestFromArgs(*args);
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->action, "export");
  EXPECT_EQ(request->path, "-");
  EXPECT_EQ(request->store.registry, "etcd://127.0.0.1:2379/p");
  EXPECT_EQ(request->store.etcd_user, "u");
  EXPECT_EQ(request->store.etcd_password_file, "/pw");
}

TEST(TransferRequestFromArgsTest, MissingFlagsAreNamed) {
  EXPECT_THAT(UsageError({"policies", "export", "--registry=file:a"}),
              HasSubstr("needs --out"));
  EXPECT_THAT(UsageError({"policies", "import", "--registry=file:a"}),
              HasSubstr("needs --in"));
  EXPECT_THAT(UsageError({"policies", "import", "--in=a"}),
              HasSubstr("needs --registry"));
  EXPECT_THAT(UsageError({"policies", "import", "--in=", "--registry=x"}),
              HasSubstr("needs --in"));
}

TEST(TransferRequestFromArgsTest, OtherFlagsDoNotApply) {
  EXPECT_THAT(UsageError({"policies", "export", "--registry=file:a", "--in=b",
                          "--out=c"}),
              HasSubstr("--in does not apply to 'policies export'"));
  EXPECT_THAT(UsageError({"policies", "import", "--registry=file:a", "--in=b",
                          "--out=c"}),
              HasSubstr("--out does not apply to 'policies import'"));
  EXPECT_THAT(UsageError({"policies", "import", "--registry=file:a", "--in=b",
                          "--name=fast"}),
              HasSubstr("not through a server"));
  EXPECT_THAT(UsageError({"policies", "import", "fast", "--in=b"}),
              HasSubstr("take no NAME"));
}

TEST(TransferRequestFromArgsTest, TheOtherActionsRefuseTransferFlags) {
  absl::StatusOr<ParsedArgs> args =
      Parse({"policies", "list", "--registry=file:a"});
  ASSERT_TRUE(args.ok()) << args.status();
  absl::StatusOr<AdminRequest> request =
      AdminRequestFromArgs(*args, /*experiments=*/false, /*json=*/false);
  EXPECT_THAT(std::string(request.status().message()),
              HasSubstr("--registry does not apply to 'policies list'"));
}

TEST_F(PoliciesTransferTest, EtcdFlagsGoTogether) {
  TransferRequest request;
  request.action = "export";
  request.path = "-";
  request.store.registry = "etcd://127.0.0.1:1/p";
  request.store.etcd_cert = "c.pem";
  absl::Status s = RunPoliciesTransfer(request, out_.file(), err_.file());
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("--etcd_cert and --etcd_key"));
  request.store.etcd_cert.clear();
  request.store.etcd_user = "u";
  s = RunPoliciesTransfer(request, out_.file(), err_.file());
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("--etcd_user and --etcd_password_file"));
  request.store.etcd_password_file = Path("missing");
  s = RunPoliciesTransfer(request, out_.file(), err_.file());
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("--etcd_password_file: "));
}

TEST(RegistryStoreOptionsFromFlagsTest, ReadsThePasswordsFirstLine) {
  const std::string path = ::testing::TempDir() + "/transfer_password";
  ASSERT_TRUE(server::WriteFileAtomically(path, "s3cret\nrest\n").ok());
  absl::StatusOr<server::RegistryStoreOptions> options =
      server::RegistryStoreOptionsFromFlags(
          {.registry = "etcd://127.0.0.1:2379/p",
           .state_file = "",
           .etcd_ca = "ca.pem",
           .etcd_cert = "c.pem",
           .etcd_key = "k.pem",
           .etcd_user = "root",
           .etcd_password_file = path});
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->url, "etcd://127.0.0.1:2379/p");
  EXPECT_EQ(options->etcd.ca_file, "ca.pem");
  EXPECT_EQ(options->etcd.cert_file, "c.pem");
  EXPECT_EQ(options->etcd.key_file, "k.pem");
  EXPECT_EQ(options->etcd.user, "root");
  EXPECT_EQ(options->etcd.password, "s3cret");
}

}  // namespace
}  // namespace skipserve::client
