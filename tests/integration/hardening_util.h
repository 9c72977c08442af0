#ifndef SKIPSERVE_TESTS_INTEGRATION_HARDENING_UTIL_H_
#define SKIPSERVE_TESTS_INTEGRATION_HARDENING_UTIL_H_

// Helpers of the hardening tests (hostile input, heavy requests, metric
// accounting, admin state): raw calls by method name, health checks,
// /metrics scrapes and the value of one series.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/byte_buffer.h"
#include "tests/integration/server_process.h"

namespace skipserve::testing {

inline std::shared_ptr<grpc::Channel> InsecureChannel(
    const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

// A unary call by method name ("/pkg.Service/Method") with raw request
// bytes on `channel`; the response's bytes go to `response` when OK.
inline grpc::Status RawUnaryCall(const std::shared_ptr<grpc::Channel>& channel,
                                 const std::string& method,
                                 const std::string& request,
                                 std::string* response = nullptr,
                                 absl::Duration deadline = absl::Seconds(60),
                                 const std::string& bearer_token = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       absl::ToChronoSeconds(deadline));
  if (!bearer_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + bearer_token);
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, method, grpc::StubOptions(), &request_buffer,
                 &response_buffer,
                 [&done](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  if (status.ok() && response != nullptr) {
    std::vector<grpc::Slice> slices;
    response->clear();
    if (response_buffer.Dump(&slices).ok()) {
      for (const grpc::Slice& s : slices) {
        response->append(reinterpret_cast<const char*>(s.begin()), s.size());
      }
    }
  }
  return status;
}

// grpc.health.v1.Health/Check for the whole server; OK with reply SERVING
// ("\x08\x01") when healthy.
inline grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                std::string* reply,
                                absl::Duration deadline = absl::Seconds(30)) {
  return RawUnaryCall(channel, "/grpc.health.v1.Health/Check", "", reply,
                      deadline);
}

// GET /metrics from 127.0.0.1:`port` (plain HTTP/1.0).
inline std::string ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
      0) {
    const std::string request = "GET /metrics HTTP/1.0\r\n\r\n";
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    }
  }
  close(fd);
  return out;
}

// The metrics port from the server's startup line ("metrics on port N").
inline int MetricsPort(const ServerProcess& server) {
  const std::string log = server.Stderr();
  const size_t at = log.find("metrics on port ");
  return at == std::string::npos ? 0 : std::atoi(log.c_str() + at + 16);
}

// The sum of the values of every series of `name` whose labels include all
// of `labels` (0 when none matches).
inline double MetricSum(const std::string& scrape, const std::string& name,
                        const std::map<std::string, std::string>& labels) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (!absl::StartsWith(line, name)) continue;
    absl::string_view rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' ')) continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      match = match &&
              absl::StrContains(rest, absl::StrCat(key, "=\"", value, "\""));
    }
    if (!match) continue;
    const size_t space = rest.rfind(' ');
    double value = 0;
    if (space != absl::string_view::npos &&
        absl::SimpleAtod(rest.substr(space + 1), &value)) {
      sum += value;
    }
  }
  return sum;
}

// The distinct values of label `key` among the series of `name`.
inline std::vector<std::string> LabelValues(const std::string& scrape,
                                            const std::string& name,
                                            const std::string& key) {
  std::vector<std::string> values;
  const std::string needle = absl::StrCat(key, "=\"");
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (!absl::StartsWith(line, absl::StrCat(name, "{"))) continue;
    const size_t at = line.find(needle);
    if (at == absl::string_view::npos) continue;
    const size_t start = at + needle.size();
    const size_t end = line.find('"', start);
    if (end == absl::string_view::npos) continue;
    std::string value(line.substr(start, end - start));
    bool seen = false;
    for (const std::string& v : values) seen = seen || v == value;
    if (!seen) values.push_back(value);
  }
  return values;
}

}  // namespace skipserve::testing

#endif  // SKIPSERVE_TESTS_INTEGRATION_HARDENING_UTIL_H_
