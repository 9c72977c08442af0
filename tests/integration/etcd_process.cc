#include "tests/integration/etcd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tests/integration/child_process.h"

#ifndef SKIPSERVE_ETCD_BINARY
#define SKIPSERVE_ETCD_BINARY "/usr/bin/etcd"
#endif
#ifndef SKIPSERVE_ETCDCTL_BINARY
#define SKIPSERVE_ETCDCTL_BINARY "/usr/bin/etcdctl"
#endif

extern char** environ;

namespace skipserve::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string Tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp",
                   "/skipserve-etcd-XXXXXX");
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) return "";
  return std::string(buffer.data());
}

std::string Binary(const std::string& given, const char* env,
                   const char* fallback) {
  if (!given.empty()) return given;
  const char* value = std::getenv(env);
  if (value != nullptr && *value != '\0') return value;
  return fallback;
}

// A port on 127.0.0.1 that was free a moment ago (bind to 0, read, close).
// 0 on failure.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    socklen_t length = sizeof(address);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      port = ntohs(address.sin_port);
    }
  }
  close(fd);
  return port;
}

// Reaps `pid` without blocking; true when it has ended.
bool Reaped(pid_t pid) {
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  return r == pid || (r < 0 && errno == ECHILD);
}

void KillAndReap(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// GET `path` from 127.0.0.1:`port` with a short timeout; "" on failure.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval timeout{};
  timeout.tv_sec = 2;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
      0) {
    const std::string request = absl::StrCat(
        "GET ", path,
        " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) out.append(buffer, n);
    }
  }
  close(fd);
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(int members) {
  Options options;
  options.members = members;
  return Start(options);
}

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(
    const Options& given) {
  Options options = given;
  options.etcd_binary = Binary(options.etcd_binary, "SKIPSERVE_ETCD_BINARY",
                               SKIPSERVE_ETCD_BINARY);
  options.etcdctl_binary =
      Binary(options.etcdctl_binary, "SKIPSERVE_ETCDCTL_BINARY",
             SKIPSERVE_ETCDCTL_BINARY);
  for (const std::string& binary :
       {options.etcd_binary, options.etcdctl_binary}) {
    if (access(binary.c_str(), X_OK) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          binary, " is not executable (", std::strerror(errno),
          "): these tests need a real etcd (Debian packages etcd-server and "
          "etcd-client; scripts/install-deps.sh installs them)"));
    }
  }
  if (options.members < 1) {
    return absl::InvalidArgumentError("an etcd cluster needs a member");
  }

  constexpr int kAttempts = 5;
  absl::Status last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::unique_ptr<EtcdCluster> cluster(new EtcdCluster(options));
    cluster->dir_ = MakeTempDir();
    if (cluster->dir_.empty()) {
      return absl::InternalError(
          absl::StrCat("mkdtemp failed: ", std::strerror(errno)));
    }
    // 2 ports per member, all distinct (the kernel may hand out a port
    // again once it has been closed).
    std::set<int> ports;
    while (static_cast<int>(ports.size()) < 2 * options.members) {
      const int port = FreePort();
      if (port == 0) {
        return absl::InternalError(
            absl::StrCat("cannot bind a port: ", std::strerror(errno)));
      }
      ports.insert(port);
    }
    auto next = ports.begin();
    for (int i = 0; i < options.members; ++i) {
      Member member;
      member.name = absl::StrCat("m", i);
      member.client_port = *next++;
      member.peer_port = *next++;
      member.data_dir = absl::StrCat(cluster->dir_, "/", member.name, ".etcd");
      member.log_path = absl::StrCat(cluster->dir_, "/", member.name, ".log");
      cluster->members_.push_back(member);
    }
    cluster->cluster_token_ = absl::StrCat("skipserve-test-", getpid(), "-",
                                           cluster->members_[0].peer_port);
    std::vector<int> all;
    absl::Status spawned = absl::OkStatus();
    for (int i = 0; i < options.members && spawned.ok(); ++i) {
      spawned = cluster->Spawn(i);
      all.push_back(i);
    }
    if (!spawned.ok()) return spawned;
    bool port_in_use = false;
    last = cluster->WaitHealthy(all, options.start_timeout, &port_in_use);
    if (last.ok()) return cluster;
    if (!port_in_use) return last;
    // A port was taken between choosing it and etcd binding it: choose
    // again (the destructor kills the members and removes the directory).
  }
  return last;
}

EtcdCluster::~EtcdCluster() {
  Stop();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string EtcdCluster::ClientUrls() const {
  std::vector<std::string> urls;
  for (int i = 0; i < size(); ++i) urls.push_back(ClientUrl(i));
  return absl::StrJoin(urls, ",");
}

std::string EtcdCluster::ClientUrl(int i) const {
  return absl::StrCat("127.0.0.1:", members_.at(i).client_port);
}

int EtcdCluster::ClientPort(int i) const { return members_.at(i).client_port; }

pid_t EtcdCluster::pid(int i) const { return members_.at(i).pid; }

bool EtcdCluster::Running(int i) {
  Member& member = members_.at(i);
  if (member.pid <= 0) return false;
  if (Reaped(member.pid)) {
    member.pid = -1;
    return false;
  }
  return true;
}

void EtcdCluster::Kill(int i) {
  Member& member = members_.at(i);
  if (member.pid <= 0) return;
  KillAndReap(member.pid);
  member.pid = -1;
}

void EtcdCluster::Stop() {
  for (int i = 0; i < size(); ++i) Kill(i);
}

absl::Status EtcdCluster::Restart(int i) {
  if (Running(i)) {
    return absl::FailedPreconditionError(
        absl::StrCat("etcd member ", i, " is still running"));
  }
  if (absl::Status spawned = Spawn(i); !spawned.ok()) return spawned;
  bool port_in_use = false;
  absl::Status healthy = WaitHealthy({i}, options_.start_timeout, &port_in_use);
  if (healthy.ok()) healthy = WaitForLeader(options_.start_timeout);
  if (!healthy.ok()) Kill(i);
  return healthy;
}

bool EtcdCluster::Healthy(int i) const {
  const std::string reply = HttpGet(members_.at(i).client_port, "/health");
  return absl::StrContains(reply, "\"health\":\"true\"");
}

absl::Status EtcdCluster::Spawn(int i) {
  Member& member = members_.at(i);
  std::vector<std::string> peers;
  for (const Member& m : members_) {
    peers.push_back(absl::StrCat(m.name, "=http://127.0.0.1:", m.peer_port));
  }
  const std::string client_url =
      absl::StrCat("http://127.0.0.1:", member.client_port);
  const std::string peer_url =
      absl::StrCat("http://127.0.0.1:", member.peer_port);
  std::vector<std::string> args = {
      options_.etcd_binary,
      absl::StrCat("--name=", member.name),
      absl::StrCat("--data-dir=", member.data_dir),
      absl::StrCat("--listen-client-urls=", client_url),
      absl::StrCat("--advertise-client-urls=", client_url),
      absl::StrCat("--listen-peer-urls=", peer_url),
      absl::StrCat("--initial-advertise-peer-urls=", peer_url),
      absl::StrCat("--initial-cluster=", absl::StrJoin(peers, ",")),
      absl::StrCat("--initial-cluster-token=", cluster_token_),
      "--initial-cluster-state=new",
      "--heartbeat-interval=50",
      "--election-timeout=500",
      "--logger=zap",
      "--log-outputs=stderr",
  };
  // Appended to: a restarted member's log follows its first life's.
  ChildOptions child;
  child.log_path = member.log_path;
  child.append_log = true;
  child.log_header =
      absl::StrCat("=== EtcdCluster: ", absl::StrJoin(args, " "), "\n");
  child.who = "EtcdCluster";
  absl::StatusOr<pid_t> pid = SpawnChild(std::move(args), child);
  if (!pid.ok()) return pid.status();
  member.pid = *pid;
  return absl::OkStatus();
}

absl::Status EtcdCluster::WaitHealthy(const std::vector<int>& which,
                                      absl::Duration timeout,
                                      bool* port_in_use) {
  *port_in_use = false;
  const absl::Time give_up = absl::Now() + timeout;
  std::set<int> waiting(which.begin(), which.end());
  while (!waiting.empty()) {
    for (auto it = waiting.begin(); it != waiting.end();) {
      const int i = *it;
      if (!Running(i)) {
        const std::string log = Log(i);
        *port_in_use = absl::StrContains(log, "address already in use");
        return absl::InternalError(absl::StrFormat(
            "etcd member %d ended before it was healthy; its log:\n%s", i,
            Tail(log, 6000)));
      }
      it = Healthy(i) ? waiting.erase(it) : std::next(it);
    }
    if (waiting.empty()) break;
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(
          absl::StrFormat("etcd member(s) %s not healthy within %s; logs:\n%s",
                          absl::StrJoin(waiting, ","),
                          absl::FormatDuration(timeout), LogTails()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> EtcdCluster::Etcdctl(
    const std::vector<std::string>& extra, const std::string& stdin_text) {
  // While the cluster elects a new leader (a member was just killed),
  // requests fail with these; they are retried for a while. An unreachable
  // cluster ("connection refused", a dial timeout) is not retried.
  const absl::Time give_up = absl::Now() + absl::Seconds(15);
  while (true) {
    absl::StatusOr<std::string> out = EtcdctlOnce(extra, stdin_text);
    if (out.ok() || absl::Now() > give_up) return out;
    const absl::string_view message = out.status().message();
    const bool leaderless =
        absl::StrContains(message, "Error: etcdserver: request timed out") ||
        absl::StrContains(message, "Error: etcdserver: leader changed") ||
        absl::StrContains(message, "Error: etcdserver: no leader") ||
        absl::StrContains(message, "Error: etcdserver: too many requests");
    if (!leaderless) return out;
    absl::SleepFor(absl::Milliseconds(100));
  }
}

absl::StatusOr<std::string> EtcdCluster::EtcdctlOnce(
    const std::vector<std::string>& extra, const std::string& stdin_text) {
  std::vector<std::string> endpoints;
  for (int i = 0; i < size(); ++i) {
    if (Running(i)) endpoints.push_back(ClientUrl(i));
  }
  if (endpoints.empty()) {
    return absl::UnavailableError("no etcd member is running");
  }
  const int run = etcdctl_runs_++;
  const std::string in_path = absl::StrCat(dir_, "/etcdctl-", run, ".in");
  const std::string out_path = absl::StrCat(dir_, "/etcdctl-", run, ".out");
  const std::string err_path = absl::StrCat(dir_, "/etcdctl-", run, ".err");
  std::ofstream(in_path, std::ios::binary) << stdin_text;
  std::vector<std::string> args = {
      options_.etcdctl_binary,
      absl::StrCat("--endpoints=", absl::StrJoin(endpoints, ",")),
      "--dial-timeout=3s", "--command-timeout=15s"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, "ETCDCTL_")) env_strings.push_back(*e);
  }
  env_strings.push_back("ETCDCTL_API=3");
  ChildOptions child;
  child.log_path = out_path;
  child.stderr_path = err_path;
  child.stdin_path = in_path;
  child.env = std::move(env_strings);
  child.who = "etcdctl";
  SKIPSERVE_ASSIGN_OR_RETURN(const pid_t pid,
                             SpawnChild(std::vector<std::string>(args), child));
  const absl::Time give_up = absl::Now() + absl::Seconds(40);
  int status = 0;
  bool timed_out = false;
  while (true) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) break;
    if (absl::Now() > give_up) {
      timed_out = true;
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
  std::string out = ReadFile(out_path);
  const std::string err = ReadFile(err_path);
  std::error_code ignored;
  for (const std::string& path : {in_path, out_path, err_path}) {
    std::filesystem::remove(path, ignored);
  }
  if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string what = absl::StrFormat(
        "%s failed (%s): %s%s", absl::StrJoin(args, " "),
        timed_out ? "timed out" : absl::StrCat("status ", status),
        Tail(err, 3000), Tail(out, 1000));
    if (absl::StrContains(err, "has been compacted")) {
      return absl::OutOfRangeError(what);
    }
    return absl::UnavailableError(what);
  }
  return out;
}

absl::StatusOr<int64_t> EtcdCluster::Revision() {
  absl::StatusOr<std::string> out =
      Etcdctl({"get", "skipserve-etcd-cluster-revision-probe", "-w", "json"});
  if (!out.ok()) return out.status();
  nlohmann::json reply = nlohmann::json::parse(*out, nullptr, false);
  if (reply.is_discarded() || !reply.contains("header") ||
      !reply["header"].contains("revision")) {
    return absl::InternalError(
        absl::StrCat("etcdctl get: unexpected output: ", *out));
  }
  return reply["header"]["revision"].get<int64_t>();
}

absl::Status EtcdCluster::WaitForLeader(absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  std::string last;
  while (true) {
    // Every running member's own id and the leader it follows.
    absl::StatusOr<std::string> out =
        EtcdctlOnce({"endpoint", "status", "-w", "json"}, "");
    if (out.ok()) {
      nlohmann::json reply = nlohmann::json::parse(*out, nullptr, false);
      // Ids are compared as their JSON text: they are 64-bit unsigned and
      // need not fit a double or int64.
      std::set<std::string> ids;
      std::set<std::string> leaders;
      int answered = 0;
      if (reply.is_array()) {
        for (const nlohmann::json& endpoint : reply) {
          if (!endpoint.contains("Status")) continue;
          const nlohmann::json& status = endpoint["Status"];
          if (!status.contains("leader") || !status.contains("header") ||
              !status["header"].contains("member_id")) {
            continue;
          }
          ids.insert(status["header"]["member_id"].dump());
          leaders.insert(status["leader"].dump());
          ++answered;
        }
      }
      int running = 0;
      for (int i = 0; i < size(); ++i) running += Running(i) ? 1 : 0;
      if (answered == running && leaders.size() == 1 &&
          ids.count(*leaders.begin()) == 1) {
        return absl::OkStatus();
      }
      last = *out;
    } else {
      last = std::string(out.status().message());
    }
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "the running etcd members agree on no running leader within %s; "
          "last endpoint status: %s\n%s",
          absl::FormatDuration(timeout), last, LogTails()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::Status EtcdCluster::Compact() {
  absl::StatusOr<int64_t> revision = Revision();
  if (!revision.ok()) return revision.status();
  absl::StatusOr<std::string> out =
      Etcdctl({"compact", absl::StrCat(*revision), "--physical"});
  if (!out.ok() && out.status().code() == absl::StatusCode::kOutOfRange) {
    return absl::OkStatus();  // compacted there already
  }
  return out.status();
}

absl::StatusOr<std::string> EtcdCluster::Get(const std::string& key) {
  absl::StatusOr<std::string> out = Etcdctl({"get", key, "-w", "json"});
  if (!out.ok()) return out.status();
  nlohmann::json reply = nlohmann::json::parse(*out, nullptr, false);
  if (reply.is_discarded() || !reply.is_object()) {
    return absl::InternalError(
        absl::StrCat("etcdctl get: unexpected output: ", *out));
  }
  if (!reply.contains("kvs") || reply["kvs"].empty()) {
    return absl::NotFoundError(absl::StrCat("etcd has no key ", key));
  }
  std::string value;
  const nlohmann::json& kv = reply["kvs"][0];
  if (kv.contains("value") &&
      !absl::Base64Unescape(kv["value"].get<std::string>(), &value)) {
    return absl::InternalError("etcdctl get: bad base64 value");
  }
  return value;
}

absl::StatusOr<std::vector<std::string>> EtcdCluster::Keys(
    const std::string& prefix) {
  absl::StatusOr<std::string> out =
      Etcdctl({"get", prefix, "--prefix", "--keys-only", "-w", "json"});
  if (!out.ok()) return out.status();
  nlohmann::json reply = nlohmann::json::parse(*out, nullptr, false);
  if (reply.is_discarded() || !reply.is_object()) {
    return absl::InternalError(
        absl::StrCat("etcdctl get: unexpected output: ", *out));
  }
  std::vector<std::string> keys;
  if (reply.contains("kvs")) {
    for (const nlohmann::json& kv : reply["kvs"]) {
      std::string key;
      if (!absl::Base64Unescape(kv["key"].get<std::string>(), &key)) {
        return absl::InternalError("etcdctl get: bad base64 key");
      }
      keys.push_back(key);
    }
  }
  return keys;
}

absl::Status EtcdCluster::Put(const std::string& key,
                              const std::string& value) {
  // The value goes through stdin: no quoting, and a value starting with
  // '-' is not taken for a flag.
  return Etcdctl({"put", key}, value).status();
}

absl::Status EtcdCluster::Delete(const std::string& key) {
  return Etcdctl({"del", key}).status();
}

std::string EtcdCluster::Log(int i) const {
  return ReadFile(members_.at(i).log_path);
}

std::string EtcdCluster::LogTails(size_t bytes) const {
  std::string out;
  for (int i = 0; i < size(); ++i) {
    absl::StrAppend(&out, "--- etcd member ", i, " (", ClientUrl(i), ") ---\n",
                    Tail(Log(i), bytes), "\n");
  }
  return out;
}

}  // namespace skipserve::testing
