#include "server/admin/etcd_client.h"

#include <curl/curl.h>

#include <mutex>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/base/quote.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace skipserve::server {
namespace {

using Json = nlohmann::json;

// An answer larger than this is refused: the registry's document is at
// most a few hundred KiB, and etcd refuses requests above 1.5 MiB.
constexpr size_t kMaxReplyBytes = 8 << 20;

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// curl's write callback: appends to the std::string `user`, refusing more
// than kMaxReplyBytes (curl then fails with CURLE_WRITE_ERROR).
size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  const size_t n = size * count;
  if (body->size() + n > kMaxReplyBytes) return 0;
  body->append(data, n);
  return n;
}

// A header list freed with its owner.
class Headers {
 public:
  explicit Headers(const std::string& token) {
    list_ = curl_slist_append(list_, "Content-Type: application/json");
    if (!token.empty()) {
      list_ = curl_slist_append(list_,
                                absl::StrCat("Authorization: ", token).c_str());
    }
  }
  ~Headers() { curl_slist_free_all(list_); }
  Headers(const Headers&) = delete;
  Headers& operator=(const Headers&) = delete;
  curl_slist* get() const { return list_; }

 private:
  curl_slist* list_ = nullptr;
};

// The options every request sets: the URL, a POST of `body`, TLS, timeouts.
void Configure(CURL* curl, const EtcdOptions& options, const std::string& url,
               const std::string& body, const Headers& headers) {
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_POST, 1L);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(
      curl, CURLOPT_CONNECTTIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(options.connect_timeout)));
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPIDLE, 2L);
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPINTVL, 1L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  if (!options.ca_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_CAINFO, options.ca_file.c_str());
  }
  if (!options.cert_file.empty()) {
    curl_easy_setopt(curl, CURLOPT_SSLCERT, options.cert_file.c_str());
    curl_easy_setopt(curl, CURLOPT_SSLKEY, options.key_file.c_str());
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
  if (error.contains("code") && error["code"].is_number_integer()) {
    code = error["code"].get<int>();
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

}  // namespace

class EtcdClient::Connection {
 public:
  Connection() : curl_(curl_easy_init()) {}
  ~Connection() {
    if (curl_ != nullptr) curl_easy_cleanup(curl_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  CURL* get() const { return curl_; }

 private:
  CURL* curl_;
};

EtcdClient::EtcdClient(EtcdOptions options) : options_(std::move(options)) {
  InitCurlOnce();
  absl::MutexLock lock(&mu_);
  connection_ = std::make_unique<Connection>();
}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::Url(size_t endpoint, const std::string& path) const {
  return absl::StrCat(options_.ca_file.empty() ? "http://" : "https://",
                      options_.endpoints[endpoint], path);
}

std::string EtcdClient::Describe() const {
  std::vector<std::string> urls;
  for (size_t i = 0; i < options_.endpoints.size(); ++i) {
    urls.push_back(Url(i, ""));
  }
  return absl::StrJoin(urls, ",");
}

std::string EtcdClient::CurrentToken() const {
  absl::MutexLock lock(&token_mu_);
  return token_;
}

absl::StatusOr<EtcdClient::Reply> EtcdClient::Post(const std::string& url,
                                                   const std::string& body,
                                                   const std::string& token) {
  CURL* curl = connection_->get();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_easy_reset(curl);
  Headers headers(token);
  Configure(curl, options_, url, body, headers);
  Reply reply;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(
      curl, CURLOPT_TIMEOUT_MS,
      static_cast<long>(absl::ToInt64Milliseconds(options_.request_timeout)));
  const CURLcode code = curl_easy_perform(curl);
  if (code != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrFormat("%s: %s", url, curl_easy_strerror(code)));
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.http_status);
  return reply;
}

absl::Status EtcdClient::Authenticate() {
  Json request = {{"name", options_.user}, {"password", options_.password}};
  {
    absl::MutexLock lock(&token_mu_);
    token_.clear();
  }
  const std::string path = "/v3/auth/authenticate";
  absl::Status last;
  for (size_t tried = 0; tried < options_.endpoints.size(); ++tried) {
    const std::string url = Url(endpoint_, path);
    absl::StatusOr<Reply> reply = Post(url, request.dump(), "");
    if (!reply.ok()) {
      last = reply.status();
      endpoint_ = (endpoint_ + 1) % options_.endpoints.size();
      continue;
    }
    SKIPSERVE_ASSIGN_OR_RETURN(Json answer, ParseJson(reply->body, url));
    if (reply->http_status != 200) {
      return ErrorStatus(answer, absl::StrCat("etcd user ", options_.user));
    }
    if (!answer.contains("token") || !answer["token"].is_string()) {
      return absl::InternalError(absl::StrCat(url, ": no token in the answer"));
    }
    absl::MutexLock lock(&token_mu_);
    token_ = answer["token"].get<std::string>();
    return absl::OkStatus();
  }
  return last;
}

absl::StatusOr<std::string> EtcdClient::Call(const std::string& path,
                                             const std::string& body) {
  bool authenticated_now = false;
  if (!options_.user.empty() && CurrentToken().empty()) {
    SKIPSERVE_RETURN_IF_ERROR(Authenticate());
    authenticated_now = true;
  }
  absl::Status last;
  for (size_t tried = 0; tried < options_.endpoints.size(); ++tried) {
    const std::string url = Url(endpoint_, path);
    absl::StatusOr<Reply> reply = Post(url, body, CurrentToken());
    if (!reply.ok()) {
      // This endpoint is down or slow: the next one (a write that timed
      // out may have been made; the caller's comparison tells).
      last = reply.status();
      endpoint_ = (endpoint_ + 1) % options_.endpoints.size();
      continue;
    }
    if (reply->http_status == 200) return std::move(reply->body);
    SKIPSERVE_ASSIGN_OR_RETURN(Json error, ParseJson(reply->body, url));
    absl::Status status = ErrorStatus(error, url);
    if (!options_.user.empty() && !authenticated_now && IsTokenError(status)) {
      SKIPSERVE_RETURN_IF_ERROR(Authenticate());
      authenticated_now = true;
      --tried;  // the same endpoint again, with the new token
      continue;
    }
    return status;
  }
  return absl::UnavailableError(
      absl::StrCat("no etcd endpoint answered; last: ", last.message()));
}

absl::StatusOr<EtcdRead> EtcdClient::Get(const std::string& key) {
  const Json request = {{"key", absl::Base64Escape(key)}};
  absl::MutexLock lock(&mu_);
  SKIPSERVE_ASSIGN_OR_RETURN(const std::string text,
                             Call("/v3/kv/range", request.dump()));
  SKIPSERVE_ASSIGN_OR_RETURN(const Json answer, ParseJson(text, "etcd range"));
  EtcdRead read;
  SKIPSERVE_ASSIGN_OR_RETURN(read.revision, HeaderRevision(answer));
  SKIPSERVE_ASSIGN_OR_RETURN(read.kv, FirstKv(answer));
  return read;
}

absl::StatusOr<EtcdTxnResult> EtcdClient::PutIfModRevision(
    const std::string& key, const std::string& value,
    int64_t expected_mod_revision) {
  const std::string key64 = absl::Base64Escape(key);
  // mod_revision 0 never matches an existing key; a missing key is
  // create_revision 0.
  Json compare = {{"key", key64}, {"result", "EQUAL"}};
  if (expected_mod_revision == 0) {
    compare["target"] = "CREATE";
    compare["create_revision"] = "0";
  } else {
    compare["target"] = "MOD";
    compare["mod_revision"] = absl::StrCat(expected_mod_revision);
  }
  const Json request = {
      {"compare", Json::array({compare})},
      {"success", Json::array({{{"request_put",
                                 {{"key", key64},
                                  {"value", absl::Base64Escape(value)}}}}})},
      {"failure", Json::array({{{"request_range", {{"key", key64}}}}})}};
  absl::MutexLock lock(&mu_);
  SKIPSERVE_ASSIGN_OR_RETURN(const std::string text,
                             Call("/v3/kv/txn", request.dump()));
  SKIPSERVE_ASSIGN_OR_RETURN(const Json answer, ParseJson(text, "etcd txn"));
  EtcdTxnResult result;
  result.succeeded = answer.contains("succeeded") &&
                     answer["succeeded"].is_boolean() &&
                     answer["succeeded"].get<bool>();
  SKIPSERVE_ASSIGN_OR_RETURN(result.revision, HeaderRevision(answer));
  if (!result.succeeded && answer.contains("responses") &&
      answer["responses"].is_array() && !answer["responses"].empty()) {
    const Json& first = answer["responses"][0];
    if (first.contains("response_range")) {
      SKIPSERVE_ASSIGN_OR_RETURN(result.current,
                                 FirstKv(first["response_range"]));
    }
  }
  return result;
}

namespace {

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
  Connection connection;
  CURL* curl = connection.get();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  Headers headers(CurrentToken());
  Configure(curl, options_, url, body, headers);
  WatchStream stream;
  stream.on_created = &on_created;
  stream.on_message = &on_message;
  stream.stop = &stop;
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WatchWrite);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &stream);
  curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, WatchProgress);
  curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &stream);
  const CURLcode code = curl_easy_perform(curl);
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
  long http_status = 0;  // NOLINT(runtime/int): curl's type
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &http_status);
  return absl::UnavailableError(absl::StrFormat(
      "etcd watch at %s ended: %s (HTTP %d)", url,
      code == CURLE_OK ? "the stream closed" : curl_easy_strerror(code),
      http_status));
}

}  // namespace skipserve::server
