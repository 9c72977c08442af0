#ifndef SKIPSERVE_SERVER_ADMIN_STATE_FILE_H_
#define SKIPSERVE_SERVER_ADMIN_STATE_FILE_H_

// The registry's state file (--state_file): what the Policies admin service
// changed, so that a restart restores it.
//
// Format (JSON, written by the server; not meant to be edited by hand):
//   {
//     "format": "skipserve-registry",
//     "format_version": 1,
//     "registry_version": 12,
//     "policies": [
//       {"name": "fast", "spec": "attn:last=33%", "description": "..."}
//     ],
//     "experiments": [
//       {"name": "ab1", "description": "...",
//        "arms": [{"name": "a", "policy": "fast", "named": true,
//                  "weight": 50},
//                 {"name": "b", "policy": "none", "named": false,
//                  "weight": 50}]}
//     ]
//   }
// ParseState checks the document's structure and types only; the registry
// checks names, specs and references. Errors are INVALID_ARGUMENT
// "state file <path>: <where>: <what>".
//
// Writes are atomic: the new contents go to a temporary file in the same
// directory ("<name>.tmp.XXXXXX", mkstemp's six characters), which is
// fsync'ed and renamed over the old one, and the directory is fsync'ed; a
// crash leaves either the old file or the new one, and possibly the
// temporary file, which RemoveStaleTemporaries (run at startup) removes.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/admin/experiment.h"

namespace skipserve::server {

struct PolicyRecord {
  std::string name;
  std::string spec;
  std::string description;
};

struct StoredState {
  uint64_t version = 0;
  std::vector<PolicyRecord> policies;
  std::vector<Experiment> experiments;
};

// The document above, indented, ending with a newline.
std::string SerializeState(const StoredState& state);

// Reads a document written by SerializeState. `source` names it in errors.
absl::StatusOr<StoredState> ParseState(const std::string& text,
                                       const std::string& source);

// The whole file. NOT_FOUND when it does not exist, UNAVAILABLE when it
// cannot be read; both name the path.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Replaces `path` with `contents` atomically (see above). INTERNAL naming
// the path and the failing step; the old file is then left as it was.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents);

// Removes the temporary files WriteFileAtomically(path, ...) left behind
// when its process died between creating and renaming one: the files of
// path's directory named "<name>.tmp." followed by six letters or digits.
// Nothing else is touched. Returns how many it removed; a directory that
// cannot be read is UNAVAILABLE naming it. Only one process may write
// `path` (a second one's write in progress would lose its temporary).
absl::StatusOr<int> RemoveStaleTemporaries(const std::string& path);

}  // namespace skipserve::server

#endif  // SKIPSERVE_SERVER_ADMIN_STATE_FILE_H_
