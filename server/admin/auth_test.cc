// Bearer-token checks and TLS flag handling (server/admin/auth.h). The same
// checks run end to end in tests/integration/policies_test.cc.

#include "server/admin/auth.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace skipserve::server {
namespace {

using ::testing::HasSubstr;

constexpr char kToken[] = "s3cret-token-0123456789";

// A file in the test's temporary directory holding `contents`.
std::string TempFile(const std::string& name, const std::string& contents) {
  const char* dir = std::getenv("TEST_TMPDIR");
  std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/" +
                     std::to_string(getpid()) + "-" + name;
  std::ofstream(path) << contents;
  return path;
}

TEST(ConstantTimeEquals, ComparesSizesAndBytes) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abcd", "abc"));
  EXPECT_FALSE(ConstantTimeEquals(absl::string_view("a\0c", 3), "abc"));
}

TEST(TokenFile, OneLineWithItsTrailingNewlineTrimmed) {
  EXPECT_EQ(*ParseTokenFile(std::string(kToken) + "\n", "t"), kToken);
  EXPECT_EQ(*ParseTokenFile(std::string(kToken) + "\r\n", "t"), kToken);
  EXPECT_EQ(*ParseTokenFile(kToken, "t"), kToken);
  auto error = [](const std::string& text) {
    return std::string(ParseTokenFile(text, "/etc/t").status().message());
  };
  EXPECT_THAT(error(""), HasSubstr("token file /etc/t: the token is 0 bytes"));
  EXPECT_THAT(error("short\n"), HasSubstr("want 16..4096"));
  EXPECT_THAT(error(std::string(kToken) + "\n\n"), HasSubstr("printable"));
  EXPECT_THAT(error("has a space in the token"), HasSubstr("printable"));
}

TEST(TokenAuth, ChecksTheBearerHeader) {
  absl::StatusOr<TokenAuth> auth = TokenAuth::WithToken(kToken);
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto check = [&](const char* header) {
    if (header == nullptr) return auth->CheckHeader(nullptr).code();
    const absl::string_view value(header);
    return auth->CheckHeader(&value).code();
  };
  const std::string good = std::string("Bearer ") + kToken;
  EXPECT_EQ(check(good.c_str()), absl::StatusCode::kOk);
  const std::string lower = std::string("bearer ") + kToken;
  EXPECT_EQ(check(lower.c_str()), absl::StatusCode::kOk);
  EXPECT_EQ(check(nullptr), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check(kToken), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check("Bearer "), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check("Bearer s3cret-token-012345678"),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check("Bearer s3cret-token-01234567890"),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(check("Basic czNjcmV0"), absl::StatusCode::kUnauthenticated);
}

TEST(TokenAuth, OpenAndClosedModes) {
  const absl::string_view anything("Bearer whatever");
  EXPECT_TRUE(TokenAuth::Open().CheckHeader(nullptr).ok());
  EXPECT_TRUE(TokenAuth::Open().CheckHeader(&anything).ok());
  const TokenAuth closed = TokenAuth::Closed("admin disabled");
  EXPECT_EQ(closed.CheckHeader(&anything).code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(closed.CheckHeader(nullptr).message()),
              HasSubstr("admin disabled"));
}

TEST(TokenAuth, FromFileNamesTheFile) {
  const std::string good = TempFile("good-token", std::string(kToken) + "\n");
  absl::StatusOr<TokenAuth> auth = TokenAuth::FromFile(good);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ(auth->mode(), TokenAuth::Mode::kToken);
  absl::StatusOr<TokenAuth> missing = TokenAuth::FromFile("/nonexistent/tok");
  EXPECT_THAT(std::string(missing.status().message()),
              HasSubstr("/nonexistent/tok"));
  std::remove(good.c_str());
}

TEST(AccessControl, AdminIsClosedAndInferenceOpenByDefault) {
  absl::StatusOr<AccessControl> access = LoadAccessControl("", "", "", "", "");
  ASSERT_TRUE(access.ok()) << access.status();
  EXPECT_EQ(access->admin.mode(), TokenAuth::Mode::kClosed);
  EXPECT_EQ(access->inference.mode(), TokenAuth::Mode::kOpen);
  EXPECT_FALSE(access->tls);
  EXPECT_NE(access->credentials, nullptr);
}

TEST(AccessControl, FlagErrorsNameTheFlagAndFile) {
  auto error = [](const std::string& admin, const std::string& cert,
                  const std::string& key, const std::string& ca) {
    return std::string(
        LoadAccessControl(admin, "", cert, key, ca).status().message());
  };
  EXPECT_THAT(error("/no/admin", "", "", ""),
              HasSubstr("--admin_token_file: token file /no/admin"));
  EXPECT_THAT(error("", "/c.pem", "", ""), HasSubstr("go together"));
  EXPECT_THAT(error("", "", "", "/ca.pem"), HasSubstr("--tls_client_ca needs"));
  EXPECT_THAT(error("", "/no/c.pem", "/no/k.pem", ""),
              HasSubstr("--tls_cert: /no/c.pem"));
  const std::string not_pem = TempFile("not-pem", "hello\n");
  EXPECT_THAT(error("", not_pem, not_pem, ""), HasSubstr("not a PEM file"));
  std::remove(not_pem.c_str());
}

}  // namespace
}  // namespace skipserve::server
