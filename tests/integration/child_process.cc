#include "tests/integration/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace skipserve::testing {

absl::StatusOr<pid_t> SpawnChild(std::vector<std::string> args,
                                 const ChildOptions& options) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings =
      options.env.value_or(std::vector<std::string>());
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string exec_failed = options.who + ": execv failed\n";

  const int log_fd = open(options.log_path.c_str(),
                          O_WRONLY | O_CREAT | O_CLOEXEC |
                              (options.append_log ? O_APPEND : O_TRUNC),
                          0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", options.log_path,
                                            ": ", std::strerror(errno)));
  }
  if (!options.log_header.empty()) {
    (void)!write(log_fd, options.log_header.data(), options.log_header.size());
  }
  const int err_fd = options.stderr_path.empty()
                         ? -1
                         : open(options.stderr_path.c_str(),
                                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int in_fd = open(options.stdin_path.c_str(), O_RDONLY | O_CLOEXEC);
  auto close_all = [&] {
    for (int fd : {log_fd, err_fd, in_fd}) {
      if (fd >= 0) close(fd);
    }
  };
  if (in_fd < 0 || (err_fd < 0 && !options.stderr_path.empty())) {
    close_all();
    return absl::InternalError(absl::StrCat("cannot open ", options.stdin_path,
                                            " or ", options.stderr_path));
  }
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close_all();
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(error)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the parent already died
    dup2(in_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(err_fd >= 0 ? err_fd : log_fd, STDERR_FILENO);
    // A clean signal state: ignored signals stay ignored across exec, and
    // the mask is inherited.
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGTERM, SIGINT, SIGPIPE, SIGHUP, SIGCHLD}) {
      sigaction(sig, &dfl, nullptr);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (options.env.has_value()) {
      execve(argv[0], argv.data(), envp.data());
    } else {
      execv(argv[0], argv.data());
    }
    (void)!write(STDERR_FILENO, exec_failed.data(), exec_failed.size());
    _exit(127);
  }
  close_all();
  return pid;
}

}  // namespace skipserve::testing
