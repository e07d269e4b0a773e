// cli.h - the policy every tool shares: messages, exit statuses, CLI11 glue.
//
// Exit statuses (every man page's EXIT STATUS says the same):
//   0 success, 1 runtime failure, 2 usage, 3 data integrity.
#pragma once
#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "ltx/error.h"

#ifndef WALSYNC_VERSION
#define WALSYNC_VERSION "0.1.0"
#endif

namespace cli {

enum Exit { kOk = 0, kRuntime = 1, kUsage = 2, kIntegrity = 3 };

inline const char*& tool_name() {
  static const char* name = "walsync";
  return name;
}

// "8M", "5MiB", "2G", "1048576" -> bytes; 0 on bad syntax or overflow.
inline uint64_t parse_size(const std::string& s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return 0;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno == ERANGE) return 0;
  std::string u = end;
  int shift = -1;
  if (u.empty() || u == "B") shift = 0;
  if (u == "K" || u == "KiB" || u == "k") shift = 10;
  if (u == "M" || u == "MiB") shift = 20;
  if (u == "G" || u == "GiB") shift = 30;
  if (u == "T" || u == "TiB") shift = 40;
  if (shift < 0 || v > (UINT64_MAX >> shift)) return 0;
  return uint64_t(v) << shift;
}

// "tool: message" on stderr, one line: control characters (a server's text,
// a key) are printed escaped (ltx::printable).
inline void error(const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n", tool_name(), ltx::printable(msg).c_str());
}

// Parse argv with CLI11 and run body(); map every failure to the house status.
// --help/--version print to stdout and exit 0; usage errors exit 2.
inline int run(CLI::App& app, int argc, char** argv, const std::function<int()>& body) {
  tool_name() = app.get_name().c_str();
  app.set_version_flag("--version", std::string(app.get_name()) + " " + WALSYNC_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return kOk;
  } catch (const CLI::CallForVersion&) {
    std::printf("%s %s\n", app.get_name().c_str(), WALSYNC_VERSION);
    return kOk;
  } catch (const CLI::ParseError& e) {
    std::string m = e.what();
    error(m + " (see --help)");
    return kUsage;
  }
  try {
    return body();
  } catch (const ltx::Error& e) {
    error(e.what());
    return int(e.kind());
  } catch (const std::bad_alloc&) {
    error("out of memory");
    return kRuntime;
  } catch (const std::exception& e) {
    error(e.what());
    return kRuntime;
  }
}

}  // namespace cli
