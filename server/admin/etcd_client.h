#ifndef SKIPSERVE_SERVER_ADMIN_ETCD_CLIENT_H_
#define SKIPSERVE_SERVER_ADMIN_ETCD_CLIENT_H_

// A small client of etcd's v3 API (etcd 3.4 and later), enough for the
// registry's etcd store: read one key, compare-and-set it in a transaction,
// watch it.
//
// Transport: etcd's JSON gateway (HTTP/1.1 POST of the v3 API's messages in
// proto3 JSON form at /v3/kv/range, /v3/kv/txn, /v3/watch,
// /v3/auth/authenticate), through libcurl, loaded at run time
// (curl_library.h says why). Why not etcd's gRPC service,
// which would suit a gRPC server better: Debian ships etcd's .proto files
// only inside golang-etcd-server-dev (about 150 Go source packages, a
// systemd upgrade among them), and they import gogoproto and
// google/api/annotations.proto, which no Debian package installs where
// protoc can use them. The gateway is part of every etcd server, speaks the
// same v3 API (same revisions, transactions and watches), and needs only
// libcurl.
//
// Endpoints: requests go to one endpoint at a time; when it cannot be
// reached (refused, reset, timed out) the next one is tried, and the one
// that answered is used from then on.
//
// Auth: with a user, the client authenticates (/v3/auth/authenticate) on
// its first request and again when etcd says the token is invalid or
// expired; the token goes in the Authorization header. TLS (https) when
// ca_file is set; cert_file/key_file add a client certificate.
//
// Errors: UNAVAILABLE when no endpoint could be reached (naming the last
// endpoint and curl's reason), or the request timed out; the etcd error's
// gRPC code and message otherwise (PERMISSION_DENIED, UNAUTHENTICATED,
// INVALID_ARGUMENT ...); INTERNAL for an answer that is not the JSON
// expected; FAILED_PRECONDITION for every request when libcurl could not be
// loaded. Messages quote at most ~100 bytes of what etcd sent.
//
// Thread safety: Get and PutIfModRevision may be called from any thread
// (they share one connection, one request at a time); each Watch call uses
// its own connection.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/admin/curl_library.h"

namespace skipserve::server {

struct EtcdOptions {
  std::vector<std::string> endpoints;  // "host:port", at least one
  std::string ca_file;                 // PEM; https when set
  std::string cert_file;               // PEM client certificate (with key_file)
  std::string key_file;
  std::string user;  // etcd auth; empty: none
  std::string password;
  // Bounds of one request (a watch has no overall bound).
  absl::Duration connect_timeout = absl::Milliseconds(500);
  absl::Duration request_timeout = absl::Seconds(3);
};

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
};

struct EtcdRead {
  std::optional<EtcdKeyValue> kv;  // nullopt: the key does not exist
  int64_t revision = 0;            // the store's revision at the read
};

struct EtcdTxnResult {
  bool succeeded = false;
  int64_t revision = 0;  // of the put when succeeded
  // When not succeeded: the key as it is (nullopt: absent).
  std::optional<EtcdKeyValue> current;
};

// One message of a watch stream.
struct EtcdWatchMessage {
  std::vector<EtcdKeyValue> puts;  // in revision order
  bool deleted = false;            // the key was deleted
  int64_t revision = 0;            // the store's revision (header)
  // The watch was cancelled because its start revision was compacted away
  // (compact_revision > 0): read the key again and watch from there.
  bool canceled = false;
  int64_t compact_revision = 0;
};

class EtcdClient {
 public:
  explicit EtcdClient(EtcdOptions options);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // "http://127.0.0.1:2379,http://127.0.0.1:22379".
  std::string Describe() const;

  absl::StatusOr<EtcdRead> Get(const std::string& key);

  // One transaction: if `key`'s mod_revision is `expected_mod_revision`
  // (0: if the key does not exist), put `value`; otherwise read the key.
  absl::StatusOr<EtcdTxnResult> PutIfModRevision(const std::string& key,
                                                 const std::string& value,
                                                 int64_t expected_mod_revision);

  // Watches `key` from `start_revision` (inclusive), calling `on_message`
  // with each message after the watch is created, until `stop` becomes
  // true (checked at least every 250 ms) or the stream ends or fails.
  // Returns OK when stopped or cancelled by etcd (a compaction: see
  // EtcdWatchMessage), UNAVAILABLE when the connection failed or closed.
  // `on_created` runs once etcd has accepted the watch.
  absl::Status Watch(
      const std::string& key, int64_t start_revision,
      const std::function<void()>& on_created,
      const std::function<void(const EtcdWatchMessage&)>& on_message,
      const std::atomic<bool>& stop);

 private:
  struct Reply {
    CurlLong http_status = 0;
    std::string body;
  };
  class Connection;

  // POSTs `body` to `path` on the endpoints in turn (see above), with the
  // auth token; re-authenticates once when etcd rejects the token. The
  // answer as JSON text, or the error it carries as a status.
  absl::StatusOr<std::string> Call(const std::string& path,
                                   const std::string& body)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One POST on `connection_` to the current endpoint.
  absl::StatusOr<Reply> Post(const std::string& url, const std::string& body,
                             const std::string& token)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Authenticate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string Url(size_t endpoint, const std::string& path) const;
  std::string CurrentToken() const;

  const EtcdOptions options_;
  // libcurl (curl_library.h); null when it could not be loaded, and every
  // request then answers api_status_.
  const CurlApi* api_ = nullptr;
  absl::Status api_status_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Connection> connection_ ABSL_GUARDED_BY(mu_);
  size_t endpoint_ ABSL_GUARDED_BY(mu_) = 0;  // the one that last answered
  mutable absl::Mutex token_mu_;
  std::string token_ ABSL_GUARDED_BY(token_mu_);
};

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_ETCD_CLIENT_H_
