#include "tests/integration/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "tests/integration/child_process.h"

namespace skipserve::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(
      base != nullptr && *base != '\0' ? base : "/tmp", "/skipserve-it-XXXXXX");
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) return "";
  return std::string(buffer.data());
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& binary, std::vector<std::string> extra_flags) {
  Options options;
  options.extra_flags = std::move(extra_flags);
  return Start(binary, options);
}

// One function: preparing the arguments, fork() and exec, then waiting for
// the port, is a sequence whose order matters (nothing but async-signal-safe
// calls after fork()) and reads best top to bottom.
absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::string& server_binary, const Options& options) {
  // .ci/sanitizers runs these tests against a sanitizer build's server.
  const char* override_binary = std::getenv("SKIPSERVE_TEST_SERVER_BINARY");
  const std::string binary =
      override_binary != nullptr && *override_binary != '\0'
          ? std::string(override_binary)
          : server_binary;
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("server binary not executable: ", binary));
  }
  std::unique_ptr<ServerProcess> server(new ServerProcess());
  server->dir_ = MakeTempDir();
  if (server->dir_.empty()) {
    return absl::InternalError(
        absl::StrCat("mkdtemp failed: ", std::strerror(errno)));
  }
  const std::string port_file = server->dir_ + "/port";
  server->stderr_path_ = server->dir_ + "/server.log";

  // Everything the child needs is prepared before fork(): after it, only
  // async-signal-safe calls (the test process has gRPC threads).
  std::vector<std::string> args = {
      binary,
      "--host=127.0.0.1",
      "--port=0",
      absl::StrCat("--port_file=", port_file),
      "--metrics_port=-1",
  };
  args.insert(args.end(), options.extra_flags.begin(),
              options.extra_flags.end());
  ChildOptions child;
  child.log_path = server->stderr_path_;
  child.who = "ServerProcess";
  absl::StatusOr<pid_t> pid = SpawnChild(std::move(args), child);
  if (!pid.ok()) return pid.status();
  server->pid_ = *pid;

  const absl::Time give_up = absl::Now() + options.start_timeout;
  while (true) {
    // The server writes the file under a temporary name and renames it, so
    // a file that exists is complete.
    struct stat st;
    if (stat(port_file.c_str(), &st) == 0) {
      std::string text = ReadFile(port_file);
      int port = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) &&
          port > 0 && port < 65536) {
        server->port_ = port;
        server->target_ = absl::StrCat("127.0.0.1:", port);
        return server;
      }
      server->Signal(SIGKILL);
      server->Wait(absl::Seconds(10));
      return absl::InternalError(
          absl::StrFormat("bad port file contents '%s'; server stderr:\n%s",
                          text, server->Stderr()));
    }
    if (server->TryReap()) {
      const int status = server->wait_status_;
      return absl::InternalError(absl::StrFormat(
          "%s ended before serving (%s %d); its stderr:\n%s",
          absl::StrJoin(args, " "), WIFEXITED(status) ? "exit code" : "signal",
          WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status),
          server->Stderr()));
    }
    if (absl::Now() > give_up) {
      server->Signal(SIGKILL);
      server->Wait(absl::Seconds(10));
      return absl::DeadlineExceededError(absl::StrFormat(
          "%s did not write its port file within %s; its stderr:\n%s",
          absl::StrJoin(args, " "), absl::FormatDuration(options.start_timeout),
          server->Stderr()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string ServerProcess::Stderr() const { return ReadFile(stderr_path_); }

bool ServerProcess::TryReap() {
  if (reaped_) return true;
  if (pid_ <= 0) return false;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
    return true;
  }
  return false;
}

bool ServerProcess::Running() { return pid_ > 0 && !TryReap(); }

bool ServerProcess::Signal(int signal) {
  if (pid_ <= 0 || TryReap()) return false;
  return kill(pid_, signal) == 0;
}

ServerExit ServerProcess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return ServerExit();  // never started: nothing to wait for
  const absl::Time give_up = absl::Now() + timeout;
  while (!TryReap()) {
    if (absl::Now() > give_up) {
      timed_out_ = true;
      kill(pid_, SIGKILL);
      int status = 0;
      pid_t r;
      do {
        r = waitpid(pid_, &status, 0);
      } while (r < 0 && errno == EINTR);
      reaped_ = true;
      wait_status_ = status;
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  ServerExit result;
  result.exited = WIFEXITED(wait_status_);
  result.exit_code = result.exited ? WEXITSTATUS(wait_status_) : -1;
  result.term_signal = WIFSIGNALED(wait_status_) ? WTERMSIG(wait_status_) : 0;
  result.timed_out = timed_out_;
  result.stderr_text = Stderr();
  return result;
}

ServerExit ServerProcess::Stop(absl::Duration timeout) {
  Signal(SIGTERM);
  return Wait(timeout);
}

}  // namespace skipserve::testing
