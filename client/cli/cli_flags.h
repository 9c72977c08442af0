#ifndef SKIPSERVE_CLIENT_CLI_CLI_FLAGS_H_
#define SKIPSERVE_CLIENT_CLI_CLI_FLAGS_H_

// Command-line parsing for the skipserve CLI on top of Abseil's flag
// registry (flags are defined with ABSL_FLAG and read with absl::GetFlag).
// It does what absl::ParseCommandLine does not: repeatable flags keep every
// value, '-' and '_' are the same in flag names (--policy-name ==
// --policy_name), only the flags a command knows are accepted, and parse
// errors are returned (the CLI exits 2 on them) instead of exiting.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace skipserve::client {

struct ParsedArgs {
  // Arguments that are not flags, in order, without argv[0].
  std::vector<std::string> positional;
  // Every value given for each flag, in order, by the flag's registered name
  // (bools as "true"/"false").
  std::map<std::string, std::vector<std::string>> values;
  // -h, --help or -help was given.
  bool help = false;

  bool Given(const std::string& name) const { return values.contains(name); }
  // The last value given for `name`, or `default_value` if it was not given.
  std::string Last(const std::string& name,
                   const std::string& default_value = "") const;
  // All values of a repeatable flag, each also split at ',' when
  // `split_commas` (empty pieces dropped).
  std::vector<std::string> All(const std::string& name,
                               bool split_commas) const;
};

// Parses argv[1..argc) against the flags named in `known` (registered
// names, e.g. "max_tokens"; each must be defined with ABSL_FLAG). Forms:
//   --name=value  -name=value  --name value  (non-bool flags)
//   --name  --noname  --name=true|false|1|0  (bool flags)
//   --  (everything after it is positional)
// Each value is parsed by the flag's own parser and the flag is set (the last
// occurrence wins for absl::GetFlag). Errors (INVALID_ARGUMENT): a flag not
// in `known`, a missing value, a value the flag rejects.
absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv,
                                     const std::vector<std::string>& known);

// INVALID_ARGUMENT naming the first flag given in `args` that is not in
// `allowed` ("--stream does not apply to 'info'").
absl::Status CheckAllowed(const ParsedArgs& args,
                          const std::vector<std::string>& allowed,
                          const std::string& command);

// `text` wrapped at spaces into lines of at most `width` characters (a word
// longer than that gets a line of its own), each line indented by `indent`
// spaces and ended by '\n'.
std::string WrapText(absl::string_view text, size_t indent, size_t width = 79);

// Help lines for `names`: "  --name (default: X)\n" then the help text,
// wrapped and indented by 6.
std::string DescribeFlags(const std::vector<std::string>& names);

}  // namespace skipserve::client

#endif  // SKIPSERVE_CLIENT_CLI_CLI_FLAGS_H_
