#ifndef SKIPSERVE_SERVER_ADMIN_ETCD_HTTP_H_
#define SKIPSERVE_SERVER_ADMIN_ETCD_HTTP_H_

// Internal to etcd_client.cc and etcd_watch.cc: the HTTP (libcurl) and JSON
// pieces of talking to etcd's JSON gateway. Not a public interface.

#include <curl/curl.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/admin/curl_library.h"
#include "server/admin/etcd_client.h"

namespace skipserve::server::etcd_internal {

using Json = nlohmann::json;

// An answer larger than this is refused: the registry's document is at
// most a few hundred KiB, and etcd refuses requests above 1.5 MiB.
inline constexpr size_t kMaxReplyBytes = 8 << 20;

// A header list freed with its owner.
class Headers {
 public:
  Headers(const CurlApi& api, const std::string& token) : api_(api) {
    list_ = api_.slist_append(list_, "Content-Type: application/json");
    if (!token.empty()) {
      list_ = api_.slist_append(list_,
                                absl::StrCat("Authorization: ", token).c_str());
    }
  }
  ~Headers() { api_.slist_free_all(list_); }
  Headers(const Headers&) = delete;
  Headers& operator=(const Headers&) = delete;
  curl_slist* get() const { return list_; }

 private:
  const CurlApi& api_;
  curl_slist* list_ = nullptr;
};

// The options every request sets: the URL, a POST of `body`, TLS, timeouts.
void Configure(const CurlApi& api, CURL* curl, const EtcdOptions& options,
               const std::string& url, const std::string& body,
               const Headers& headers);

// proto3 JSON's int64 (a string, or a number); a missing field is 0.
absl::StatusOr<int64_t> Int64Field(const Json& object, const char* key);
// A kv of a range or watch answer (key and value base64-decoded).
absl::StatusOr<EtcdKeyValue> ParseKv(const Json& kv);
// message.header.revision.
absl::StatusOr<int64_t> HeaderRevision(const Json& message);
// The first kv of a range response, if any.
absl::StatusOr<std::optional<EtcdKeyValue>> FirstKv(const Json& range);
// The status an error object of the gateway ({"error", "code", "message"})
// stands for; its code is a gRPC code. `where` prefixes the message.
absl::Status ErrorStatus(const Json& error, const std::string& where);
// `text` as a JSON object; INTERNAL quoting it otherwise.
absl::StatusOr<Json> ParseJson(const std::string& text,
                               const std::string& where);
// Whether etcd refused a request for its auth token (expired, or the
// member restarted and forgot it).
bool IsTokenError(const absl::Status& status);

}  // namespace skipserve::server::etcd_internal

namespace skipserve::server {

// A curl easy handle (one connection, kept alive between requests).
class EtcdClient::Connection {
 public:
  explicit Connection(const CurlApi& api) : api_(api), curl_(api.easy_init()) {}
  ~Connection() {
    if (curl_ != nullptr) api_.easy_cleanup(curl_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  CURL* get() const { return curl_; }

 private:
  const CurlApi& api_;
  CURL* curl_;
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_ETCD_HTTP_H_
