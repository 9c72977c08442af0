#include "server/admin/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <tuple>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/base/status_macros.h"
#include "nlohmann/json.hpp"

namespace skipserve::server {
namespace {

using Json = nlohmann::json;

constexpr char kFormat[] = "skipserve-registry";
constexpr int kFormatVersion = 1;

absl::Status Bad(const std::string& source, const std::string& where,
                 const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat(source, where.empty() ? "" : ": ", where, ": ", what));
}

// Reads the string field `key` of `object` into `out`; a missing field is
// an error unless `optional` (then `out` stays empty).
absl::Status StringField(const Json& object, const char* key, bool optional,
                         const std::string& source, const std::string& where,
                         std::string* out) {
  if (!object.contains(key)) {
    if (optional) return absl::OkStatus();
    return Bad(source, where, absl::StrCat("missing \"", key, "\""));
  }
  if (!object[key].is_string()) {
    return Bad(source, where, absl::StrCat("\"", key, "\" must be a string"));
  }
  *out = object[key].get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<Experiment> ParseExperiment(const Json& item,
                                           const std::string& source,
                                           const std::string& where) {
  if (!item.is_object()) return Bad(source, where, "must be an object");
  Experiment experiment;
  SKIPSERVE_RETURN_IF_ERROR(
      StringField(item, "name", false, source, where, &experiment.name));
  SKIPSERVE_RETURN_IF_ERROR(StringField(item, "description", true, source,
                                        where, &experiment.description));
  if (!item.contains("arms") || !item["arms"].is_array()) {
    return Bad(source, where, "needs an \"arms\" array");
  }
  int index = 0;
  for (const Json& arm_json : item["arms"]) {
    const std::string arm_where = absl::StrFormat("%s.arms[%d]", where, index);
    ++index;
    if (!arm_json.is_object()) {
      return Bad(source, arm_where, "must be an object");
    }
    ExperimentArm arm;
    SKIPSERVE_RETURN_IF_ERROR(
        StringField(arm_json, "name", false, source, arm_where, &arm.name));
    SKIPSERVE_RETURN_IF_ERROR(
        StringField(arm_json, "policy", false, source, arm_where, &arm.policy));
    if (!arm_json.contains("named") || !arm_json["named"].is_boolean()) {
      return Bad(source, arm_where, "needs a boolean \"named\"");
    }
    arm.named = arm_json["named"].get<bool>();
    if (!arm_json.contains("weight") || !arm_json["weight"].is_number()) {
      return Bad(source, arm_where, "needs a number \"weight\"");
    }
    arm.weight = arm_json["weight"].get<double>();
    experiment.arms.push_back(std::move(arm));
  }
  return experiment;
}

}  // namespace

std::string SerializeState(const StoredState& state) {
  Json policies = Json::array();
  for (const PolicyRecord& p : state.policies) {
    policies.push_back(
        {{"name", p.name}, {"spec", p.spec}, {"description", p.description}});
  }
  Json experiments = Json::array();
  for (const Experiment& e : state.experiments) {
    Json arms = Json::array();
    for (const ExperimentArm& arm : e.arms) {
      arms.push_back({{"name", arm.name},
                      {"policy", arm.policy},
                      {"named", arm.named},
                      {"weight", arm.weight}});
    }
    experiments.push_back(
        {{"name", e.name}, {"description", e.description}, {"arms", arms}});
  }
  Json doc = {{"format", kFormat},
              {"format_version", kFormatVersion},
              {"registry_version", state.version},
              {"policies", policies},
              {"experiments", experiments}};
  return doc.dump(2) + "\n";
}

absl::StatusOr<StoredState> ParseState(const std::string& text,
                                       const std::string& source) {
  const Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Bad(source, "", "not valid JSON");
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != kFormat) {
    return Bad(source, "format",
               absl::StrCat("not a skipserve state file (want \"format\": \"",
                            kFormat, "\")"));
  }
  if (!doc.contains("format_version") ||
      doc["format_version"] != kFormatVersion) {
    return Bad(
        source, "format_version",
        absl::StrCat("unsupported (this server reads ", kFormatVersion, ")"));
  }
  StoredState state;
  if (!doc.contains("registry_version") ||
      !doc["registry_version"].is_number_unsigned()) {
    return Bad(source, "registry_version", "must be a non-negative integer");
  }
  state.version = doc["registry_version"].get<uint64_t>();
  for (const char* key : {"policies", "experiments"}) {
    if (!doc.contains(key) || !doc[key].is_array()) {
      return Bad(source, key, "must be an array");
    }
  }
  int index = 0;
  for (const Json& item : doc["policies"]) {
    const std::string where = absl::StrFormat("policies[%d]", index++);
    if (!item.is_object()) return Bad(source, where, "must be an object");
    PolicyRecord record;
    for (auto [key, optional, out] :
         {std::tuple{"name", false, &record.name},
          std::tuple{"spec", false, &record.spec},
          std::tuple{"description", true, &record.description}}) {
      SKIPSERVE_RETURN_IF_ERROR(
          StringField(item, key, optional, source, where, out));
    }
    state.policies.push_back(std::move(record));
  }
  index = 0;
  for (const Json& item : doc["experiments"]) {
    SKIPSERVE_ASSIGN_OR_RETURN(
        Experiment experiment,
        ParseExperiment(item, source,
                        absl::StrFormat("experiments[%d]", index++)));
    state.experiments.push_back(std::move(experiment));
  }
  return state;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, ": no such file"));
    }
    return absl::UnavailableError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::UnavailableError(absl::StrCat("cannot read ", path));
  }
  return text.str();
}

absl::StatusOr<int> RemoveStaleTemporaries(const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  const std::string prefix = absl::StrCat(
      slash == std::string::npos ? path : path.substr(slash + 1), ".tmp.");
  auto is_temporary = [&prefix](const std::string& name) {
    if (name.size() != prefix.size() + 6 || name.rfind(prefix, 0) != 0) {
      return false;
    }
    for (size_t i = prefix.size(); i < name.size(); ++i) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(name[i]))) {
        return false;
      }
    }
    return true;
  };
  std::error_code error;
  std::filesystem::directory_iterator it(dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot read directory ", dir, ": ", error.message()));
  }
  int removed = 0;
  for (const std::filesystem::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    if (!is_temporary(name) || !entry.is_regular_file(error)) continue;
    if (std::filesystem::remove(entry.path(), error)) ++removed;
  }
  return removed;
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents) {
  auto fail = [&](const std::string& step, int error) {
    return absl::InternalError(absl::StrCat("cannot write ", path, " (", step,
                                            "): ", std::strerror(error)));
  };
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : path.substr(0, slash);
  std::string temp = path + ".tmp.XXXXXX";
  const int fd = mkstemp(temp.data());
  if (fd < 0) return fail("create a temporary file", errno);
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n =
        write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      close(fd);
      unlink(temp.c_str());
      return fail("write", error);
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    const int error = errno;
    close(fd);
    unlink(temp.c_str());
    return fail("fsync", error);
  }
  if (close(fd) != 0) {
    const int error = errno;
    unlink(temp.c_str());
    return fail("close", error);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    unlink(temp.c_str());
    return fail("rename", error);
  }
  // The rename is durable once the directory is.
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace skipserve::server
