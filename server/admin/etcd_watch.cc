// EtcdClient::Watch (etcd_client.h): a streaming POST to /v3/watch whose
// answer is one JSON message per line, for as long as the watch lasts.

#include <curl/curl.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "server/admin/etcd_client.h"
#include "server/admin/etcd_http.h"

namespace skipserve::server {
namespace {

using etcd_internal::Configure;
using etcd_internal::ErrorStatus;
using etcd_internal::HeaderRevision;
using etcd_internal::Headers;
using etcd_internal::Int64Field;
using etcd_internal::IsTokenError;
using etcd_internal::Json;
using etcd_internal::kMaxReplyBytes;
using etcd_internal::ParseJson;
using etcd_internal::ParseKv;

// What a watch's curl callbacks share.
struct WatchStream {
  const std::function<void()>* on_created = nullptr;
  const std::function<void(const EtcdWatchMessage&)>* on_message = nullptr;
  const std::atomic<bool>* stop = nullptr;
  std::string pending;  // bytes of a line not yet complete
  absl::Status error;   // an error etcd sent, or an unparsable line
  bool canceled = false;

  // Handles one line of the stream (one JSON message); false to end it.
  bool HandleLine(const std::string& line) {
    absl::StatusOr<Json> message = ParseJson(line, "etcd watch");
    if (!message.ok()) {
      error = message.status();
      return false;
    }
    if (message->contains("error")) {
      error = ErrorStatus((*message)["error"], "etcd watch");
      return false;
    }
    if (!message->contains("result")) return true;
    const Json& result = (*message)["result"];
    if (result.value("created", false)) (*on_created)();
    EtcdWatchMessage out;
    absl::StatusOr<int64_t> revision = HeaderRevision(result);
    absl::StatusOr<int64_t> compacted = Int64Field(result, "compact_revision");
    if (!revision.ok() || !compacted.ok()) {
      error = revision.ok() ? compacted.status() : revision.status();
      return false;
    }
    out.revision = *revision;
    out.compact_revision = *compacted;
    out.canceled = result.value("canceled", false);
    if (result.contains("events") && result["events"].is_array()) {
      for (const Json& event : result["events"]) {
        if (event.value("type", "PUT") == "DELETE") {
          out.deleted = true;
          continue;
        }
        absl::StatusOr<EtcdKeyValue> kv = ParseKv(event.value("kv", Json()));
        if (!kv.ok()) {
          error = kv.status();
          return false;
        }
        out.puts.push_back(*std::move(kv));
      }
    }
    if (out.canceled || out.deleted || !out.puts.empty()) (*on_message)(out);
    canceled = canceled || out.canceled;
    return !out.canceled;
  }
};

size_t WatchWrite(char* data, size_t size, size_t count, void* user) {
  auto* stream = static_cast<WatchStream*>(user);
  const size_t n = size * count;
  stream->pending.append(data, n);
  size_t start = 0;
  for (size_t newline;
       (newline = stream->pending.find('\n', start)) != std::string::npos;
       start = newline + 1) {
    const std::string line = stream->pending.substr(start, newline - start);
    if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
    if (!stream->HandleLine(line)) return 0;  // ends the transfer
  }
  stream->pending.erase(0, start);
  if (stream->pending.size() > kMaxReplyBytes) {
    stream->error = absl::InternalError("etcd watch: a message over 8 MiB");
    return 0;
  }
  return n;
}

// curl calls this about once a second even when no byte arrives.
int WatchProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<WatchStream*>(user)->stop->load() ? 1 : 0;
}

}  // namespace

absl::Status EtcdClient::Watch(
    const std::string& key, int64_t start_revision,
    const std::function<void()>& on_created,
    const std::function<void(const EtcdWatchMessage&)>& on_message,
    const std::atomic<bool>& stop) {
  std::string url;
  {
    absl::MutexLock lock(&mu_);
    if (!options_.user.empty() && CurrentToken().empty()) {
      SKIPSERVE_RETURN_IF_ERROR(Authenticate());
    }
    url = Url(endpoint_, "/v3/watch");
  }
  const Json request = {{"create_request",
                         {{"key", absl::Base64Escape(key)},
                          {"start_revision", absl::StrCat(start_revision)}}}};
  const std::string body = request.dump();
  if (api_ == nullptr) return api_status_;
  Connection connection(*api_);
  CURL* curl = connection.get();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  Headers headers(*api_, CurrentToken());
  Configure(*api_, curl, options_, url, body, headers);
  WatchStream stream;
  stream.on_created = &on_created;
  stream.on_message = &on_message;
  stream.stop = &stop;
  api_->easy_setopt(curl, CURLOPT_WRITEFUNCTION, WatchWrite);
  api_->easy_setopt(curl, CURLOPT_WRITEDATA, &stream);
  api_->easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  api_->easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, WatchProgress);
  api_->easy_setopt(curl, CURLOPT_XFERINFODATA, &stream);
  const CURLcode code = api_->easy_perform(curl);
  if (stop.load() || stream.canceled) return absl::OkStatus();
  if (!stream.error.ok()) {
    if (IsTokenError(stream.error)) {
      absl::MutexLock lock(&token_mu_);
      token_.clear();  // the next watch authenticates again
    }
    return stream.error;
  }
  // The connection failed or the member closed the stream: the next
  // attempt goes to the next endpoint.
  {
    absl::MutexLock lock(&mu_);
    endpoint_ = (endpoint_ + 1) % options_.endpoints.size();
  }
  CurlLong http_status = 0;
  api_->easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http_status);
  return absl::UnavailableError(absl::StrFormat(
      "etcd watch at %s ended: %s (HTTP %d)", url,
      code == CURLE_OK ? "the stream closed" : api_->easy_strerror(code),
      http_status));
}

}  // namespace skipserve::server
