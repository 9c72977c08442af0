#include "server/admin/registry_store.h"

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/base/quote.h"
#include "server/admin/curl_library.h"
#include "server/admin/etcd_registry_store.h"
#include "server/admin/file_registry_store.h"

namespace skipserve::server {
namespace {

absl::Status BadUrl(const std::string& url, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrFormat(
      "--registry=%s: %s (forms: empty or file:PATH for the state file, "
      "etcd://HOST:PORT[,HOST:PORT...]/PREFIX)",
      QuoteInput(url), what));
}

bool IsPrefixChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' ||
         c == '.' || c == '-' || c == '/';
}

// "HOST:PORT" with a port in 1..65535 (an IPv6 host in brackets).
bool IsHostPort(absl::string_view endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  int port = 0;
  if (!absl::SimpleAtoi(endpoint.substr(colon + 1), &port) || port < 1 ||
      port > 65535) {
    return false;
  }
  for (char c : endpoint.substr(0, colon)) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '-' && c != '[' && c != ']' && c != ':') {
      return false;
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<RegistryStoreOptions> RegistryStoreOptionsFromFlags(
    const RegistryStoreFlags& flags) {
  RegistryStoreOptions options;
  options.url = flags.registry;
  options.state_file = flags.state_file;
  options.etcd.ca_file = flags.etcd_ca;
  options.etcd.cert_file = flags.etcd_cert;
  options.etcd.key_file = flags.etcd_key;
  options.etcd.user = flags.etcd_user;
  if (options.etcd.cert_file.empty() != options.etcd.key_file.empty()) {
    return absl::InvalidArgumentError("--etcd_cert and --etcd_key go together");
  }
  if (options.etcd.user.empty() != flags.etcd_password_file.empty()) {
    return absl::InvalidArgumentError(
        "--etcd_user and --etcd_password_file go together");
  }
  if (!flags.etcd_password_file.empty()) {
    absl::StatusOr<std::string> text = ReadWholeFile(flags.etcd_password_file);
    if (!text.ok()) {
      return absl::Status(
          text.status().code(),
          absl::StrCat("--etcd_password_file: ", text.status().message()));
    }
    options.etcd.password = text->substr(0, text->find_first_of("\r\n"));
  }
  return options;
}

absl::StatusOr<std::unique_ptr<RegistryStore>> OpenRegistryStore(
    const RegistryStoreOptions& options) {
  const std::string& url = options.url;
  if (url.empty()) {
    return std::make_unique<FileRegistryStore>(options.state_file);
  }
  if (absl::StartsWith(url, "file:")) {
    const std::string path = url.substr(5);
    if (path.empty()) return BadUrl(url, "the file store needs a path");
    if (!options.state_file.empty() && options.state_file != path) {
      return BadUrl(url, "--state_file names another file");
    }
    return std::make_unique<FileRegistryStore>(path);
  }
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "etcd://")) {
    return BadUrl(url, "unknown scheme");
  }
  if (!options.state_file.empty()) {
    return absl::InvalidArgumentError(
        "--state_file cannot be used with an etcd --registry: the replicas "
        "share their registry through etcd (move a state file's content "
        "there with `skipserve policies import`)");
  }
  const size_t slash = rest.find('/');
  const absl::string_view hosts = rest.substr(0, slash);
  absl::string_view prefix =
      slash == absl::string_view::npos ? "" : rest.substr(slash + 1);
  EtcdOptions etcd = options.etcd;
  etcd.endpoints.clear();
  for (absl::string_view endpoint : absl::StrSplit(hosts, ',')) {
    if (!IsHostPort(endpoint)) {
      return BadUrl(url,
                    absl::StrCat("endpoint ", QuoteInput(std::string(endpoint)),
                                 " is not HOST:PORT"));
    }
    etcd.endpoints.emplace_back(endpoint);
  }
  for (char c : prefix) {
    if (!IsPrefixChar(c)) {
      return BadUrl(url, "the prefix may hold only [A-Za-z0-9_.-/]");
    }
  }
  absl::ConsumeSuffix(&prefix, "/");
  if (prefix.empty()) prefix = "skipserve";
  if (prefix.size() > 200) return BadUrl(url, "the prefix is over 200 bytes");
  if (absl::StatusOr<const CurlApi*> curl = LoadCurl(); !curl.ok()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "--registry=%s: %s", QuoteInput(url), curl.status().message()));
  }
  return std::make_unique<EtcdRegistryStore>(
      std::move(etcd), absl::StrCat("/", prefix, "/"), options.poll_interval);
}

}  // namespace skipserve::server
