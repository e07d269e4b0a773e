// cli.h - the policy every tool shares: messages, exit statuses, CLI11 glue.
//
// Exit statuses (every man page's EXIT STATUS says the same):
//   0 success, 1 runtime failure, 2 usage, 3 data integrity.
#pragma once
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include "ltx/error.h"
#include "ltx/ltx.h"

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

// The directory for temporary files: the --tmpdir flag's value when given,
// else $TMPDIR when set and not empty, else /tmp.
inline std::string tmpdir(const std::string& flag = "") {
  if (!flag.empty()) return flag;
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

// "tool: message" on stderr, one line: control characters (a server's text,
// a key) are printed escaped (ltx::printable).
inline void error(const std::string& msg) {
  std::fprintf(stderr, "%s: %s\n", tool_name(), ltx::printable(msg).c_str());
}

// s as a JSON string, quoted.
inline std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += char(c);
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      o += b;
    } else o += char(c);
  }
  return o + "\"";
}

// True when standard output is a pipe whose reader has gone.
inline bool stdout_reader_gone() {
  struct pollfd p = {1, 0, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & POLLERR);
}

// A failure while the reader of standard output has gone ends the tool the
// way it ends cat or seq: quietly, killed by SIGPIPE (status 141 in a shell),
// so `tool | head` prints nothing more and a pipeline knows the stage only
// lost its reader. (Tools holding sockets ignore SIGPIPE; it is restored.)
inline int failed(int status) {
  if (!stdout_reader_gone()) return status;
  std::fflush(stderr);
  ::signal(SIGPIPE, SIG_DFL);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  ::sigprocmask(SIG_UNBLOCK, &s, nullptr);
  ::raise(SIGPIPE);
  ::_exit(128 + SIGPIPE);
}

// A duration flag (ltx::parse_duration_ms, the one grammar) in [min_ms, max_ms],
// else a usage error naming the flag, the value and the range.
inline int64_t duration_ms(const std::string& flag, const std::string& v, int64_t min_ms, int64_t max_ms) {
  int64_t ms = ltx::parse_duration_ms(v);
  if (ms < min_ms || ms > max_ms) {
    auto text = [](int64_t x) {
      for (auto u : {std::pair<int64_t, const char*>{604800000, "w"}, {86400000, "d"}, {3600000, "h"},
                     {60000, "m"}, {1000, "s"}})
        if (x && x % u.first == 0) return std::to_string(x / u.first) + u.second;
      return x ? std::to_string(x) + "ms" : std::string("0");
    };
    ltx::fail(ltx::Kind::Usage, flag + " " + v + ": want a duration from " + text(min_ms) +
                                    (max_ms < INT64_MAX ? " to " + text(max_ms) : std::string(" up")) +
                                    " (500ms, 30s, 5m, 1h30m, 7d, ...)");
  }
  return ms;
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
    int st = failed(int(e.kind()));
    error(e.what());
    return st;
  } catch (const std::bad_alloc&) {
    int st = failed(kRuntime);
    error("out of memory");
    return st;
  } catch (const std::exception& e) {
    int st = failed(kRuntime);
    error(e.what());
    return st;
  }
}

}  // namespace cli
