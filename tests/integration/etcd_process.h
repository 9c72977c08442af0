#ifndef SKIPSERVE_TESTS_INTEGRATION_ETCD_PROCESS_H_
#define SKIPSERVE_TESTS_INTEGRATION_ETCD_PROCESS_H_

// Runs a real etcd cluster (the Debian etcd-server package's /usr/bin/etcd,
// 3.4) of 1 or 3 members as child processes, for the fleet tests (the
// policy registry kept in etcd, issue 13).
//
//   absl::StatusOr<std::unique_ptr<EtcdCluster>> etcd = EtcdCluster::Start(3);
//   ASSERT_TRUE(etcd.ok()) << etcd.status();
//   ... "--registry=etcd://" + (*etcd)->ClientUrls() + "/skipserve/" ...
//   (*etcd)->Kill(0);                  // SIGKILL member 0
//   ASSERT_TRUE((*etcd)->Restart(0).ok());  // same ports, same data
//
// Every member listens on 127.0.0.1 only, on ports chosen free by the
// kernel (bind to port 0, read it, close); no fixed ports. If a member
// cannot start because one of its ports was taken in between, Start() picks
// new ports and tries again (a few times). Each member has its own data
// directory and log file (stdout and stderr, zap JSON lines) in a private
// temporary directory, removed by the destructor, which also SIGKILLs every
// member still running. Elections are fast (heartbeat 50 ms, election
// timeout 500 ms) so that a killed member's loss costs well under a second.
//
// Start() and Restart() return once the member(s) answer GET /health with
// {"health":"true"} (the member has a leader and serves reads) or fail
// with the status's message holding the member logs' tails.
//
// Members are started with PR_SET_PDEATHSIG=SIGKILL (as ServerProcess
// does): call Start() and Restart() from a thread that outlives the cluster
// (a TEST body, SetUpTestSuite).
//
// etcd's absence is a failure, not a skip: Start() returns
// FAILED_PRECONDITION naming the missing binary (scripts/install-deps.sh
// installs etcd-server and etcd-client). $SKIPSERVE_ETCD_BINARY and
// $SKIPSERVE_ETCDCTL_BINARY override the binaries.
//
// Put/Get/Compact use etcdctl (ETCDCTL_API=3) against the running members;
// they are for tests to poke at and inspect the store. They retry, for up
// to 15 s, the errors etcd answers while it elects a leader (a member was
// just killed), not an unreachable cluster's. Not thread-safe: one
// thread drives an EtcdCluster.

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace skipserve::testing {

class EtcdCluster {
 public:
  struct Options {
    int members = 1;  // 1 or 3 (any positive number works)
    // How long Start() waits for the whole cluster to be healthy, and
    // Restart() for the restarted member.
    absl::Duration start_timeout = absl::Seconds(30);
    std::string etcd_binary;     // empty: $SKIPSERVE_ETCD_BINARY or default
    std::string etcdctl_binary;  // empty: $SKIPSERVE_ETCDCTL_BINARY or default
  };

  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start(int members);
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start(
      const Options& options);

  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;
  ~EtcdCluster();

  int size() const { return static_cast<int>(members_.size()); }

  // "127.0.0.1:P0,127.0.0.1:P1,...": every member's client address (no
  // scheme), running or not, in member order; for --registry=etcd://...
  std::string ClientUrls() const;
  // "127.0.0.1:Pi".
  std::string ClientUrl(int i) const;
  int ClientPort(int i) const;

  // Whether member i runs (reaps it if it has ended).
  bool Running(int i);
  pid_t pid(int i) const;

  // SIGKILLs member i and reaps it (no-op when it does not run).
  void Kill(int i);
  // Starts member i again with the same ports, name and data directory and
  // waits until it is healthy (with 3 members: once it has rejoined).
  absl::Status Restart(int i);
  // SIGKILLs every member.
  void Stop();

  // Whether member i answers GET /health with "health":"true" now.
  bool Healthy(int i) const;
  // Waits until every running member answers and all follow one leader
  // that runs (after a Kill, the survivors have elected a new one; a
  // member's /health may still say true for an election timeout after its
  // leader died). Restart() ends with it.
  absl::Status WaitForLeader(absl::Duration timeout = absl::Seconds(15));

  // Compacts the store's history up to its current revision (physically:
  // returns once compaction is done). Compacting at a revision compacted
  // already is not an error.
  absl::Status Compact();
  // The store's current revision.
  absl::StatusOr<int64_t> Revision();
  // The value of `key`; NOT_FOUND when absent.
  absl::StatusOr<std::string> Get(const std::string& key);
  // Every key under `prefix` (sorted).
  absl::StatusOr<std::vector<std::string>> Keys(const std::string& prefix);
  absl::Status Put(const std::string& key, const std::string& value);
  absl::Status Delete(const std::string& key);

  // Member i's log (everything it has written), for failure messages.
  std::string Log(int i) const;
  // The last `bytes` bytes of every member's log, labelled.
  std::string LogTails(size_t bytes = 4000) const;

  // The private directory holding the members' data and logs.
  const std::string& dir() const { return dir_; }

 private:
  struct Member {
    std::string name;
    int client_port = 0;
    int peer_port = 0;
    std::string data_dir;
    std::string log_path;
    pid_t pid = -1;
  };

  explicit EtcdCluster(const Options& options) : options_(options) {}
  // Forks and execs member i (with --initial-cluster-state=new; a member
  // with data ignores it).
  absl::Status Spawn(int i);
  // Waits until every member in `which` is healthy, up to `timeout`.
  // FAILED_PRECONDITION-like errors name a member that ended, with
  // port_in_use set when its log says its address was taken.
  absl::Status WaitHealthy(const std::vector<int>& which,
                           absl::Duration timeout, bool* port_in_use);
  // Runs etcdctl against the running members; `stdin_text` is its input.
  // Retries (up to 15 s) while the cluster has no leader.
  absl::StatusOr<std::string> Etcdctl(const std::vector<std::string>& args,
                                      const std::string& stdin_text = "");
  absl::StatusOr<std::string> EtcdctlOnce(const std::vector<std::string>& args,
                                          const std::string& stdin_text);

  Options options_;
  std::string dir_;
  std::string cluster_token_;
  std::vector<Member> members_;
  int etcdctl_runs_ = 0;
};

}  // namespace skipserve::testing

#endif  // SKIPSERVE_TESTS_INTEGRATION_ETCD_PROCESS_H_
