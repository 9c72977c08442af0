#include "client/cli/cli_flags.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace skipserve::client {
namespace {

// The registered name for what the user typed ('-' -> '_').
std::string Canonical(absl::string_view typed) {
  return absl::StrReplaceAll(typed, {{"-", "_"}});
}

bool IsKnown(const std::vector<std::string>& known, const std::string& name) {
  return std::find(known.begin(), known.end(), name) != known.end();
}

}  // namespace

std::string ParsedArgs::Last(const std::string& name,
                             const std::string& default_value) const {
  auto it = values.find(name);
  return it == values.end() ? default_value : it->second.back();
}

std::vector<std::string> ParsedArgs::All(const std::string& name,
                                         bool split_commas) const {
  std::vector<std::string> out;
  auto it = values.find(name);
  if (it == values.end()) return out;
  for (const std::string& value : it->second) {
    if (!split_commas) {
      out.push_back(value);
      continue;
    }
    for (absl::string_view piece :
         absl::StrSplit(value, ',', absl::SkipEmpty())) {
      out.emplace_back(piece);
    }
  }
  return out;
}

absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv,
                                     const std::vector<std::string>& known) {
  ParsedArgs args;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (flags_done || arg.size() < 2 || arg[0] != '-') {
      args.positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      flags_done = true;
      continue;
    }
    absl::string_view body = arg;
    if (!absl::ConsumePrefix(&body, "--")) absl::ConsumePrefix(&body, "-");
    absl::string_view typed_name = body;
    absl::string_view value;
    bool has_value = false;
    if (const size_t eq = body.find('='); eq != absl::string_view::npos) {
      typed_name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    std::string name = Canonical(typed_name);
    if (name == "help" || name == "h") {
      args.help = true;
      continue;
    }
    absl::CommandLineFlag* flag =
        IsKnown(known, name) ? absl::FindCommandLineFlag(name) : nullptr;
    std::string bool_value;
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no") &&
        IsKnown(known, name.substr(2))) {
      // --noname for a bool flag.
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        bool_value = "false";
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", typed_name));
    }
    std::string text;
    if (has_value) {
      text = std::string(value);
    } else if (!bool_value.empty()) {
      text = bool_value;
    } else if (flag->IsOfType<bool>()) {
      text = "true";
    } else if (i + 1 < argc) {
      text = argv[++i];
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", typed_name, " needs a value"));
    }
    std::string error;
    if (!flag->ParseFrom(text, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", typed_name, "=", text, ": ", error));
    }
    args.values[name].push_back(flag->CurrentValue());
    if (!flag->IsOfType<bool>()) args.values[name].back() = text;
  }
  return args;
}

absl::Status CheckAllowed(const ParsedArgs& args,
                          const std::vector<std::string>& allowed,
                          const std::string& command) {
  for (const auto& [name, values] : args.values) {
    if (!IsKnown(allowed, name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " does not apply to '", command, "'"));
    }
  }
  return absl::OkStatus();
}

std::string WrapText(absl::string_view text, size_t indent, size_t width) {
  std::string out;
  std::string line;
  for (absl::string_view word :
       absl::StrSplit(text, ' ', absl::SkipWhitespace())) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty())
    absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
  return out;
}

std::string DescribeFlags(const std::vector<std::string>& names) {
  std::string out;
  for (const std::string& name : names) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    const std::string default_value = flag->DefaultValue();
    absl::StrAppend(&out, "  --", name,
                    default_value.empty()
                        ? std::string()
                        : absl::StrCat(" (default: ", default_value, ")"),
                    "\n", WrapText(flag->Help(), 6));
  }
  return out;
}

}  // namespace skipserve::client
