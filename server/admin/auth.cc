#include "server/admin/auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "server/admin/state_file.h"

namespace skipserve::server {
namespace {

constexpr size_t kMinTokenBytes = 16;
constexpr size_t kMaxTokenBytes = 4096;

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* flag) {
  absl::StatusOr<std::string> text = ReadWholeFile(path);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", text.status().message()));
  }
  if (!absl::StrContains(*text, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", path, " is not a PEM file"));
  }
  return text;
}

}  // namespace

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  // Every byte of `b` is visited whatever `a` holds; `a`'s bytes beyond
  // b's size are never read.
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < b.size(); ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ static_cast<unsigned char>(b[i]));
  }
  return diff == 0;
}

absl::StatusOr<std::string> ParseTokenFile(const std::string& contents,
                                           const std::string& path) {
  std::string token = contents;
  if (absl::EndsWith(token, "\n")) token.pop_back();
  if (absl::EndsWith(token, "\r")) token.pop_back();
  if (token.size() < kMinTokenBytes || token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "token file %s: the token is %d bytes; want %d..%d (e.g. "
        "openssl rand -hex 32)",
        path, token.size(), kMinTokenBytes, kMaxTokenBytes));
  }
  for (char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrFormat(
          "token file %s: the token must be one line of printable ASCII "
          "without spaces (found byte 0x%02x)",
          path, static_cast<unsigned char>(c)));
    }
  }
  return token;
}

TokenAuth TokenAuth::Open() { return TokenAuth(Mode::kOpen, ""); }

TokenAuth TokenAuth::Closed(std::string why) {
  return TokenAuth(Mode::kClosed, std::move(why));
}

absl::StatusOr<TokenAuth> TokenAuth::WithToken(const std::string& token) {
  SKIPSERVE_ASSIGN_OR_RETURN(std::string checked,
                             ParseTokenFile(token, "(inline)"));
  return TokenAuth(Mode::kToken, std::move(checked));
}

absl::StatusOr<TokenAuth> TokenAuth::FromFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadWholeFile(path);
  if (!contents.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", contents.status().message()));
  }
  SKIPSERVE_ASSIGN_OR_RETURN(std::string token,
                             ParseTokenFile(*contents, path));
  return TokenAuth(Mode::kToken, std::move(token));
}

absl::Status TokenAuth::CheckHeader(
    const absl::string_view* authorization) const {
  switch (mode_) {
    case Mode::kOpen:
      return absl::OkStatus();
    case Mode::kClosed:
      return absl::PermissionDeniedError(secret_);
    case Mode::kToken:
      break;
  }
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "missing \"authorization: Bearer <token>\" metadata");
  }
  absl::string_view value = absl::StripAsciiWhitespace(*authorization);
  constexpr absl::string_view kScheme = "bearer ";
  if (value.size() < kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        "the authorization metadata must be \"Bearer <token>\"");
  }
  value = absl::StripLeadingAsciiWhitespace(value.substr(kScheme.size()));
  if (!ConstantTimeEquals(value, secret_)) {
    return absl::UnauthenticatedError("wrong token");
  }
  return absl::OkStatus();
}

absl::Status TokenAuth::Check(
    const grpc::CallbackServerContext& context) const {
  if (mode_ != Mode::kToken) return CheckHeader(nullptr);
  const auto& metadata = context.client_metadata();
  auto [first, last] = metadata.equal_range("authorization");
  if (first == last) return CheckHeader(nullptr);
  if (std::next(first) != last) {
    return absl::UnauthenticatedError(
        "more than one authorization metadata entry");
  }
  const absl::string_view value(first->second.data(), first->second.size());
  return CheckHeader(&value);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const std::string& cert_file, const std::string& key_file,
    const std::string& client_ca_file) {
  if (cert_file.empty() && key_file.empty()) {
    if (!client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (cert_file.empty() || key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together (give both or neither)");
  }
  grpc::SslServerCredentialsOptions options;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  SKIPSERVE_ASSIGN_OR_RETURN(pair.cert_chain, ReadPem(cert_file, "--tls_cert"));
  SKIPSERVE_ASSIGN_OR_RETURN(pair.private_key, ReadPem(key_file, "--tls_key"));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!client_ca_file.empty()) {
    SKIPSERVE_ASSIGN_OR_RETURN(options.pem_root_certs,
                               ReadPem(client_ca_file, "--tls_client_ca"));
    options.client_certificate_request =
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::SslServerCredentials(options);
  if (credentials == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot make TLS credentials from ", cert_file, " and ", key_file));
  }
  return credentials;
}

absl::StatusOr<AccessControl> LoadAccessControl(
    const std::string& admin_token_file,
    const std::string& inference_token_file, const std::string& tls_cert,
    const std::string& tls_key, const std::string& tls_client_ca) {
  AccessControl access;
  if (admin_token_file.empty()) {
    access.admin = TokenAuth::Closed(
        "the admin API is disabled: the server runs without "
        "--admin_token_file (docs/security.md)");
  } else {
    absl::StatusOr<TokenAuth> admin = TokenAuth::FromFile(admin_token_file);
    if (!admin.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--admin_token_file: ", admin.status().message()));
    }
    access.admin = *std::move(admin);
  }
  if (!inference_token_file.empty()) {
    absl::StatusOr<TokenAuth> inference =
        TokenAuth::FromFile(inference_token_file);
    if (!inference.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--inference_token_file: ", inference.status().message()));
    }
    access.inference = *std::move(inference);
  }
  SKIPSERVE_ASSIGN_OR_RETURN(
      access.credentials, ServerCredentials(tls_cert, tls_key, tls_client_ca));
  access.tls = !tls_cert.empty();
  return access;
}

}  // namespace skipserve::server
