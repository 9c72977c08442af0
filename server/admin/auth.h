#ifndef SKIPSERVE_SERVER_ADMIN_AUTH_H_
#define SKIPSERVE_SERVER_ADMIN_AUTH_H_

// Access control of the gRPC port: bearer tokens checked by each handler,
// and the TLS credentials of the listening port (docs/security.md).
//
// A token file holds one token on its first line; one trailing newline
// ("\n" or "\r\n") is trimmed. The token must be 16..4096 printable ASCII
// characters without spaces (what an HTTP/2 header value can carry). Tokens
// are read once at startup: rotating one means restarting the server.
//
// Clients send "authorization: Bearer <token>" metadata (the scheme is
// case-insensitive). Tokens are compared in constant time: the time taken
// does not depend on where a wrong token first differs.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/server_credentials.h"

namespace skipserve::server {

class TokenAuth {
 public:
  enum class Mode {
    kOpen,    // every call is allowed
    kClosed,  // every call is refused (PERMISSION_DENIED)
    kToken,   // calls with the token are allowed
  };

  // Allows every call.
  static TokenAuth Open();
  // Refuses every call; `why` ends the PERMISSION_DENIED message.
  static TokenAuth Closed(std::string why);
  // Requires `token` (INVALID_ARGUMENT unless it is valid, see above).
  static absl::StatusOr<TokenAuth> WithToken(const std::string& token);
  // WithToken with the token read from `path`. Errors name the file.
  static absl::StatusOr<TokenAuth> FromFile(const std::string& path);

  Mode mode() const { return mode_; }

  // OK when a call whose "authorization" metadata values are
  // `authorization` (nullptr when it has none) may proceed;
  // PERMISSION_DENIED when closed; UNAUTHENTICATED when the token is
  // missing, malformed or wrong.
  absl::Status CheckHeader(const absl::string_view* authorization) const;

  // CheckHeader on the call's client metadata. More than one
  // "authorization" entry is UNAUTHENTICATED.
  absl::Status Check(const grpc::CallbackServerContext& context) const;

 private:
  TokenAuth(Mode mode, std::string token_or_reason)
      : mode_(mode), secret_(std::move(token_or_reason)) {}

  Mode mode_;
  std::string secret_;  // the token (kToken) or the reason (kClosed)
};

// Equal sizes and bytes, in time that depends on the sizes only.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// The token in a token file's contents (see above); `path` names the file
// in errors.
absl::StatusOr<std::string> ParseTokenFile(const std::string& contents,
                                           const std::string& path);

// Credentials of the listening port: insecure when `cert_file` and
// `key_file` are both empty; TLS with that PEM certificate chain and key
// otherwise; with `client_ca_file`, mutual TLS that requires a client
// certificate signed by that CA. INVALID_ARGUMENT for one of cert/key
// without the other, or a client CA without them; errors name the file
// that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const std::string& cert_file, const std::string& key_file,
    const std::string& client_ca_file);

// The server's access control, from its flags.
struct AccessControl {
  TokenAuth admin = TokenAuth::Open();
  TokenAuth inference = TokenAuth::Open();
  std::shared_ptr<grpc::ServerCredentials> credentials;
  bool tls = false;
};

// Admin: the token of `admin_token_file`, or closed when it is empty.
// Inference: the token of `inference_token_file`, or open when it is
// empty. Credentials: ServerCredentials(tls_cert, tls_key, tls_client_ca).
absl::StatusOr<AccessControl> LoadAccessControl(
    const std::string& admin_token_file,
    const std::string& inference_token_file, const std::string& tls_cert,
    const std::string& tls_key, const std::string& tls_client_ca);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_AUTH_H_
