#ifndef SKIPSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
#define SKIPSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_

// Runs the real skipserve-server binary as a child process for integration
// tests.
//
//   absl::StatusOr<std::unique_ptr<ServerProcess>> server =
//       ServerProcess::Start(SKIPSERVE_SERVER_BINARY, {"--max_running=1"});
//   ... connect to (*server)->target() ...
//   ServerExit exit = (*server)->Stop();   // SIGTERM, then wait
//   EXPECT_TRUE(exit.exited && exit.exit_code == 0) << exit.stderr_text;
//
// The server listens on 127.0.0.1 with --port=0 and writes its port to a
// file in a private temporary directory (--port_file); Start() waits for that
// file. No fixed ports are used. The server's stdout and stderr go to a file
// in the same directory (no pipe that could fill up), readable at any time
// with Stderr(). The destructor SIGKILLs a server still running and removes
// the directory.
//
// The child is started with PR_SET_PDEATHSIG=SIGKILL so that it dies with the
// test if the test crashes; Linux delivers that signal when the *thread*
// that forked exits, so call Start() from a thread that outlives the server
// (the test's main thread, as SetUpTestSuite and TEST bodies are).

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace skipserve::testing {

struct ServerExit {
  bool exited = false;     // ended by exit() (exit_code is valid)
  int exit_code = -1;      // when exited
  int term_signal = 0;     // the signal that killed it, when not exited
  bool timed_out = false;  // it did not end in time and was SIGKILLed
  std::string stderr_text;
};

class ServerProcess {
 public:
  struct Options {
    // Flags added after the standard ones (--host, --port, --port_file,
    // --metrics_port=-1); a later flag overrides an earlier one.
    std::vector<std::string> extra_flags;
    // How long Start() waits for the port file.
    absl::Duration start_timeout = absl::Seconds(60);
  };

  // Starts `binary` and waits until it serves. On failure (exec error,
  // early exit, timeout) the child is killed and the status's message holds
  // its captured stderr. $SKIPSERVE_TEST_SERVER_BINARY, when set, is started
  // instead of `binary` (.ci/sanitizers: the same tests against a sanitizer
  // build of the server).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& binary, const Options& options);
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::string& binary, std::vector<std::string> extra_flags = {});

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess();

  // "127.0.0.1:<port>".
  const std::string& target() const { return target_; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // A private directory that lives as long as this object (for files the
  // test hands to the server).
  const std::string& dir() const { return dir_; }

  // What the server has written to stderr (and stdout) so far.
  std::string Stderr() const;

  // Sends `signal` to the server (no-op once it has been reaped). Returns
  // false when kill() failed.
  bool Signal(int signal);

  // Whether the process is still running (reaps it if it has ended).
  bool Running();

  // Waits for the server to end, up to `timeout`; past it, SIGKILLs it and
  // reports timed_out. Once reaped, later calls return the same result.
  ServerExit Wait(absl::Duration timeout = absl::Seconds(60));

  // Signal(SIGTERM) then Wait(timeout).
  ServerExit Stop(absl::Duration timeout = absl::Seconds(60));

 private:
  ServerProcess() = default;
  // Non-blocking reap; true when the child has ended (status recorded).
  bool TryReap();

  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
  bool timed_out_ = false;
  int port_ = 0;
  std::string target_;
  std::string dir_;
  std::string stderr_path_;
};

}  // namespace skipserve::testing

#endif  // SKIPSERVE_TESTS_INTEGRATION_SERVER_PROCESS_H_
