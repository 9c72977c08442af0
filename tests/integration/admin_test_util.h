#ifndef SKIPSERVE_TESTS_INTEGRATION_ADMIN_TEST_UTIL_H_
#define SKIPSERVE_TESTS_INTEGRATION_ADMIN_TEST_UTIL_H_

// Helpers of the admin API's integration tests (policies_auth_test.cc,
// experiments_test.cc): temporary directories and files, tokens, clients,
// certificates made with the openssl command line.

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/lib/admin_client.h"
#include "client/lib/client.h"

namespace skipserve::testing {

namespace v1 = ::skipserve::v1;

inline constexpr char kAdminToken[] = "admin-token-0123456789abcdef";
inline constexpr char kInferenceToken[] = "inference-token-fedcba9876543210";

// A directory removed with this object.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr ? base : "/tmp", "/skipserve-ab-XXXXXX");
    if (mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // Writes `contents` to `name` in the directory; returns its path.
  std::string Write(const std::string& name,
                    const std::string& contents) const {
    const std::string file = absl::StrCat(path_, "/", name);
    std::ofstream(file, std::ios::binary) << contents;
    return file;
  }

 private:
  std::string path_;
};

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

inline client::ClientOptions Options(const std::string& token) {
  client::ClientOptions options;
  options.bearer_token = token;
  options.deadline = absl::Seconds(60);
  options.connect_timeout = absl::Seconds(20);
  return options;
}

inline std::unique_ptr<client::PoliciesClient> Admin(
    const std::string& target, const std::string& token = kAdminToken) {
  absl::StatusOr<std::unique_ptr<client::PoliciesClient>> admin =
      client::PoliciesClient::Connect(target, Options(token));
  return admin.ok() ? *std::move(admin) : nullptr;
}

inline std::unique_ptr<client::SkipserveClient> Inference(
    const std::string& target, const std::string& token = "") {
  absl::StatusOr<std::unique_ptr<client::SkipserveClient>> inference =
      client::SkipserveClient::Connect(target, Options(token));
  return inference.ok() ? *std::move(inference) : nullptr;
}

struct ArmSpec {
  std::string name;
  std::string policy;
  double weight;
};

inline v1::Experiment MakeExperiment(const std::string& name,
                                     const std::vector<ArmSpec>& arms) {
  v1::Experiment experiment;
  experiment.set_name(name);
  for (const ArmSpec& arm : arms) {
    v1::ExperimentArm* a = experiment.add_arms();
    a->set_name(arm.name);
    a->set_policy(arm.policy);
    a->set_weight(arm.weight);
  }
  return experiment;
}

inline v1::StoredPolicy MakePolicy(const std::string& name,
                                   const std::string& spec) {
  v1::StoredPolicy policy;
  policy.set_name(name);
  policy.set_spec(spec);
  return policy;
}

// Makes, in `dir`, with the openssl command line: a CA (ca.pem, ca.key), a
// server certificate for localhost and 127.0.0.1 (server.pem, server.key),
// a client certificate (client.pem, client.key), and a client certificate
// from another CA (rogue.pem, rogue.key). EC P-256 keys, valid two days.
inline absl::Status MakeCertificates(const std::string& dir) {
  const std::string key =
      "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script = absl::StrCat(
      "set -e; cd '", dir, "'\n", "openssl req -x509 ", key,
      " -keyout ca.key -out ca.pem -days 2 -subj /CN=skipserve-test-ca\n",
      "openssl req -x509 ", key,
      " -keyout rogue-ca.key -out rogue-ca.pem -days 2 -subj /CN=rogue-ca\n",
      "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n"
      "basicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' "
      "> server.ext\n",
      "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' "
      "> client.ext\n",
      "openssl req ", key,
      " -keyout server.key -out server.csr -subj /CN=localhost\n",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out server.pem -days 2 -extfile server.ext\n",
      "openssl req ", key,
      " -keyout client.key -out client.csr -subj /CN=skipserve-client\n",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out client.pem -days 2 -extfile client.ext\n",
      "openssl req ", key,
      " -keyout rogue.key -out rogue.csr -subj /CN=rogue\n",
      "openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key "
      "-CAcreateserial -out rogue.pem -days 2 -extfile client.ext\n");
  const std::string script_path = absl::StrCat(dir, "/make-certs.sh");
  std::ofstream(script_path) << script;
  const std::string command =
      absl::StrCat("bash '", script_path, "' > '", dir, "/openssl.log' 2>&1");
  if (std::system(command.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("openssl failed:\n", ReadBytes(dir + "/openssl.log")));
  }
  return absl::OkStatus();
}

}  // namespace skipserve::testing

#endif  // SKIPSERVE_TESTS_INTEGRATION_ADMIN_TEST_UTIL_H_
