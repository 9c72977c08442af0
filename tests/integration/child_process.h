#ifndef SKIPSERVE_TESTS_INTEGRATION_CHILD_PROCESS_H_
#define SKIPSERVE_TESTS_INTEGRATION_CHILD_PROCESS_H_

// Starts a test's child process (the server, an etcd member, etcdctl):
// fork + execv of args[0] with stdin from /dev/null (or stdin_path), stdout
// and stderr to `log_path` (stderr to stderr_path when set),
// PR_SET_PDEATHSIG=SIGKILL (it dies with the thread that forked it: call
// from a thread that outlives the child) and a clean signal state (default
// handlers, nothing blocked). Everything the child needs is prepared
// before fork(); after it only async-signal-safe calls run (test processes
// have gRPC threads).

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace skipserve::testing {

struct ChildOptions {
  std::string log_path;
  std::string stderr_path;  // empty: log_path
  std::string stdin_path = "/dev/null";
  // The environment ("NAME=value"); nullopt: the test's own.
  std::optional<std::vector<std::string>> env;
  bool append_log = false;  // else the log is truncated
  std::string log_header;   // written to the log first (may be empty)
  // In the child's message when execv fails: "<who>: execv failed".
  std::string who = "child";
};

// The child's pid; INTERNAL naming what failed (the log, fork).
absl::StatusOr<pid_t> SpawnChild(std::vector<std::string> args,
                                 const ChildOptions& options);

}  // namespace skipserve::testing

#endif  // SKIPSERVE_TESTS_INTEGRATION_CHILD_PROCESS_H_
