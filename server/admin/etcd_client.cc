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
#include "server/admin/etcd_http.h"

namespace skipserve::server {
namespace {

using Json = nlohmann::json;
using etcd_internal::Configure;
using etcd_internal::ErrorStatus;
using etcd_internal::FirstKv;
using etcd_internal::HeaderRevision;
using etcd_internal::Headers;
using etcd_internal::IsTokenError;
using etcd_internal::ParseJson;

// curl's write callback: appends to the std::string `user`, refusing more
// than kMaxReplyBytes (curl then fails with CURLE_WRITE_ERROR).
size_t AppendBody(char* data, size_t size, size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  const size_t n = size * count;
  if (body->size() + n > etcd_internal::kMaxReplyBytes) return 0;
  body->append(data, n);
  return n;
}

}  // namespace

EtcdClient::EtcdClient(EtcdOptions options) : options_(std::move(options)) {
  absl::StatusOr<const CurlApi*> api = LoadCurl();
  if (api.ok()) {
    api_ = *api;
  } else {
    api_status_ = api.status();
  }
  absl::MutexLock lock(&mu_);
  if (api_ != nullptr) connection_ = std::make_unique<Connection>(*api_);
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
  if (api_ == nullptr) return api_status_;
  CURL* curl = connection_->get();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  api_->easy_reset(curl);
  Headers headers(*api_, token);
  Configure(*api_, curl, options_, url, body, headers);
  Reply reply;
  api_->easy_setopt(curl, CURLOPT_WRITEFUNCTION, AppendBody);
  api_->easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
  api_->easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                    static_cast<CurlLong>(
                        absl::ToInt64Milliseconds(options_.request_timeout)));
  const CURLcode code = api_->easy_perform(curl);
  if (code != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrFormat("%s: %s", url, api_->easy_strerror(code)));
  }
  api_->easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.http_status);
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

}  // namespace skipserve::server
