#include "server/admin/etcd_http.h"

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"

namespace skipserve::server::etcd_internal {
namespace {

absl::StatusOr<std::string> Base64Field(const Json& object, const char* key) {
  if (!object.contains(key)) return std::string();
  std::string out;
  if (!object[key].is_string() ||
      !absl::Base64Unescape(object[key].get<std::string>(), &out)) {
    return absl::InternalError(
        absl::StrFormat("etcd answered a \"%s\" that is not base64", key));
  }
  return out;
}

}  // namespace

// The options every request sets: the URL, a POST of `body`, TLS, timeouts.
void Configure(const CurlApi& api, CURL* curl, const EtcdOptions& options,
               const std::string& url, const std::string& body,
               const Headers& headers) {
  api.easy_setopt(curl, CURLOPT_URL, url.c_str());
  api.easy_setopt(curl, CURLOPT_POST, 1L);
  api.easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  api.easy_setopt(curl, CURLOPT_POSTFIELDSIZE,
                  static_cast<CurlLong>(body.size()));
  api.easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  api.easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  api.easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                  static_cast<CurlLong>(
                      absl::ToInt64Milliseconds(options.connect_timeout)));
  api.easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  api.easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 2L);
  api.easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 1L);
  api.easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!options.ca_file.empty()) {
    api.easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
  }
  if (!options.cert_file.empty()) {
    api.easy_setopt(curl, CURLOPT_SSLCERT, options.cert_file.c_str());
    api.easy_setopt(curl, CURLOPT_SSLKEY, options.key_file.c_str());
  }
}

absl::StatusOr<int64_t> Int64Field(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key)) return 0;  // proto3: 0
  const Json& v = object[key];
  if (v.is_number_integer()) return v.get<int64_t>();
  int64_t out = 0;
  if (v.is_string() && absl::SimpleAtoi(v.get<std::string>(), &out)) {
    return out;
  }
  return absl::InternalError(
      absl::StrFormat("etcd answered a non-integer \"%s\"", key));
}

absl::StatusOr<EtcdKeyValue> ParseKv(const Json& kv) {
  EtcdKeyValue out;
  SKIPSERVE_ASSIGN_OR_RETURN(out.key, Base64Field(kv, "key"));
  SKIPSERVE_ASSIGN_OR_RETURN(out.value, Base64Field(kv, "value"));
  SKIPSERVE_ASSIGN_OR_RETURN(out.create_revision,
                             Int64Field(kv, "create_revision"));
  SKIPSERVE_ASSIGN_OR_RETURN(out.mod_revision, Int64Field(kv, "mod_revision"));
  return out;
}

absl::StatusOr<int64_t> HeaderRevision(const Json& message) {
  if (!message.contains("header")) return 0;
  return Int64Field(message["header"], "revision");
}

// The first kv of a range response, if any.
absl::StatusOr<std::optional<EtcdKeyValue>> FirstKv(const Json& range) {
  if (!range.contains("kvs") || !range["kvs"].is_array() ||
      range["kvs"].empty()) {
    return std::nullopt;
  }
  SKIPSERVE_ASSIGN_OR_RETURN(EtcdKeyValue kv, ParseKv(range["kvs"][0]));
  return kv;
}

// The status an error object of the gateway ({"error", "code", "message"})
// stands for; its code is a gRPC code.
absl::Status ErrorStatus(const Json& error, const std::string& where) {
  int code = static_cast<int>(absl::StatusCode::kUnknown);
  // Unary answers carry "code"; errors inside a watch stream "grpc_code".
  for (const char* key : {"code", "grpc_code"}) {
    if (error.contains(key) && error[key].is_number_integer()) {
      code = error[key].get<int>();
      break;
    }
  }
  std::string message = "(no message)";
  if (error.contains("message") && error["message"].is_string()) {
    message = error["message"].get<std::string>();
  }
  if (code <= 0 || code > 16)
    code = static_cast<int>(absl::StatusCode::kUnknown);
  return absl::Status(static_cast<absl::StatusCode>(code),
                      absl::StrCat(where, ": ", QuoteInput(message)));
}

absl::StatusOr<Json> ParseJson(const std::string& text,
                               const std::string& where) {
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InternalError(absl::StrCat(
        where, ": the answer is not a JSON object: ", QuoteInput(text)));
  }
  return json;
}

// Whether etcd refused the request for its auth token (expired, or the
// member restarted and forgot it).
bool IsTokenError(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnauthenticated ||
         absl::StrContains(status.message(), "invalid auth token");
}

}  // namespace skipserve::server::etcd_internal
