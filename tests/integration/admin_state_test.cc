// The admin state file under crashes and hostile contents (issue 11,
// item 9): temporary files a SIGKILL leaves behind are cleaned up, and a
// registry version at the top of its range makes changes fail with a clear
// error instead of wrapping to 0.

#include <signal.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/lib/admin_client.h"
#include "gtest/gtest.h"
#include "tests/integration/admin_test_util.h"
#include "tests/integration/server_process.h"

#ifndef SKIPSERVE_SERVER_BINARY
#error "SKIPSERVE_SERVER_BINARY must name the skipserve-server binary"
#endif

namespace skipserve::testing {
namespace {

std::vector<std::string> FilesIn(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string StateJson(const std::string& version) {
  return absl::StrCat(
      "{\"format\": \"skipserve-registry\", \"format_version\": 1, "
      "\"registry_version\": ",
      version,
      ", \"policies\": [{\"name\": \"fast\", \"spec\": \"attn:last=25%\", "
      "\"description\": \"\"}], \"experiments\": []}\n");
}

TEST(AdminStateTest, TemporaryFilesLeftByAKilledWriterAreRemoved) {
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  const std::string state = dir.Write("state.json", StateJson("5"));
  // What a SIGKILL between creating and renaming the temporary file leaves
  // (WriteFileAtomically's mkstemp names), and files that only look alike.
  dir.Write("state.json.tmp.a1B2c3", "{\"half\": ");
  dir.Write("state.json.tmp.Zz9Yy8", "");
  dir.Write("state.json.tmp.keep", "not one of ours: not 6 characters");
  dir.Write("other.json.tmp.a1B2c3", "another file's");
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY, {absl::StrCat("--admin_token_file=", token),
                                absl::StrCat("--state_file=", state)});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::PoliciesClient> admin = Admin((*server)->target());
  ASSERT_NE(admin, nullptr);
  absl::StatusOr<v1::PolicyResponse> put =
      admin->PutPolicy(MakePolicy("slow", "layer:7"));
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->version(), 6u);
  EXPECT_EQ(FilesIn(dir.path()),
            (std::vector<std::string>{"admin.token", "other.json.tmp.a1B2c3",
                                      "state.json", "state.json.tmp.keep"}));

  // A real kill in the middle of changes leaves nothing that the next
  // server does not clean up.
  for (int i = 0; i < 20; ++i) {
    (void)admin->PutPolicy(MakePolicy(absl::StrCat("p", i), "ffn:7"));
  }
  (*server)->Signal(SIGKILL);
  (*server)->Wait();
  server = ServerProcess::Start(SKIPSERVE_SERVER_BINARY,
                                {absl::StrCat("--admin_token_file=", token),
                                 absl::StrCat("--state_file=", state)});
  ASSERT_TRUE(server.ok()) << server.status();
  admin = Admin((*server)->target());
  ASSERT_NE(admin, nullptr);
  ASSERT_TRUE(admin->PutPolicy(MakePolicy("after", "none")).ok());
  EXPECT_EQ(FilesIn(dir.path()),
            (std::vector<std::string>{"admin.token", "other.json.tmp.a1B2c3",
                                      "state.json", "state.json.tmp.keep"}));
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
}

TEST(AdminStateTest, VersionAtTheTopOfItsRangeRefusesChangesClearly) {
  TempDir dir;
  const std::string token = dir.Write("admin.token", kAdminToken);
  const std::string max = absl::StrCat(UINT64_MAX);
  const std::string state = dir.Write("state.json", StateJson(max));
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      SKIPSERVE_SERVER_BINARY, {absl::StrCat("--admin_token_file=", token),
                                absl::StrCat("--state_file=", state)});
  ASSERT_TRUE(server.ok()) << server.status();
  std::unique_ptr<client::PoliciesClient> admin = Admin((*server)->target());
  ASSERT_NE(admin, nullptr);
  absl::StatusOr<v1::ListPoliciesResponse> list = admin->ListPolicies();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->version(), UINT64_MAX);
  const std::string before = ReadBytes(state);

  absl::StatusOr<v1::PolicyResponse> put =
      admin->PutPolicy(MakePolicy("slow", "layer:7"));
  ASSERT_FALSE(put.ok()) << "version " << (put.ok() ? put->version() : 0);
  EXPECT_EQ(put.status().code(), absl::StatusCode::kFailedPrecondition)
      << put.status();
  EXPECT_TRUE(absl::StrContains(put.status().message(), max)) << put.status();
  EXPECT_FALSE(
      admin->DeletePolicy("fast").ok());  // no change of any kind wraps
  list = admin->ListPolicies();
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_EQ(list->version(), UINT64_MAX);
  EXPECT_EQ(list->policies_size(), 1);
  EXPECT_EQ(ReadBytes(state), before);
  ServerExit exit = (*server)->Stop();
  EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
}

}  // namespace
}  // namespace skipserve::testing
