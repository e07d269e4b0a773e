// walsync-config.h - walsync's configuration file (man/walsync.1, CONFIGURATION),
// durations and database names: policy shared by the walsync subcommands.
//
//   # comment
//   url = s3://bucket/prefix          global keys first
//   [/srv/app.db]                     a database (or a glob of databases)
//   name = app                        per-database overrides
#pragma once
#include <glob.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "ltx/error.h"
#include "ltx/ltx.h"

namespace wscfg {

// Bounds of the numeric settings, for the flags (CLI::Range) and the file alike.
constexpr long kMaxActive = 1000;                // max-active: 1 to this
constexpr long kMaxMetricsDatabases = 100000;    // metrics-databases: 0 to this
constexpr long kMaxCheckpointPages = UINT32_MAX;  // checkpoint-pages: 0 to this

struct DbEntry {
  std::string path, name, url, state_dir, sync_interval;  // empty: the global value
  long checkpoint_pages = -1;  // -1: the global value
};

struct Config {
  std::string url, state_dir, metrics_file, metrics_addr, endpoint, region;
  std::string age_recipients_file, age_identity;  // walsync-age(7)
  std::string metrics_interval, drain_timeout, backoff_max, sync_interval, park_after;
  std::string dir, pattern;  // discovery (walsync watch --dir, --pattern)
  long checkpoint_pages = -1, max_active = -1, metrics_databases = -1;
  std::vector<std::string> exec;  // walsync watch -- CMD [ARGS]
  std::vector<DbEntry> dbs;
};

inline std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// A database's replica name: its file name without a .db/.sqlite/.sqlite3 suffix.
inline std::string name_of(const std::string& path) {
  std::string b = path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
  for (const char* ext : {".db", ".sqlite3", ".sqlite"}) {
    std::string e = ext;
    if (b.size() > e.size() && b.compare(b.size() - e.size(), e.size(), e) == 0) return b.substr(0, b.size() - e.size());
  }
  return b;
}

// The replica name of a database found under a --dir: its path relative to
// the directory, the file name's suffix dropped as name_of drops it
// ("t1/app.db" -> "t1/app").
inline std::string name_under(const std::string& rel) {
  size_t s = rel.rfind('/');
  return s == std::string::npos ? name_of(rel) : rel.substr(0, s + 1) + name_of(rel);
}

// Regular files matching a path or glob, sorted; a plain path is kept even
// if missing (its pipeline reports the error).
inline std::vector<std::string> expand(const std::string& pattern) {
  if (pattern.find_first_of("*?[") == std::string::npos) return {pattern};
  std::vector<std::string> out;
  glob_t g{};
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; i++) {
      struct stat st {};
      std::string p = g.gl_pathv[i];
      if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) out.push_back(p);
    }
  }
  globfree(&g);
  return out;
}

// Words as a shell splits them, without expansions: blanks separate,
// '...' keeps everything, "..." and a backslash keep the next character
// (in "...", only \\ and \" escape). Empty: unbalanced quotes.
inline std::vector<std::string> split_words(const std::string& s, bool* ok) {
  std::vector<std::string> out;
  std::string w;
  bool in_word = false;
  *ok = true;
  for (size_t i = 0; i < s.size(); i++) {
    char c = s[i];
    if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(w), w.clear(), in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\' && i + 1 < s.size()) {
      w += s[++i];
    } else if (c == '\'') {
      size_t e = s.find('\'', i + 1);
      if (e == std::string::npos) return *ok = false, std::vector<std::string>{};
      w += s.substr(i + 1, e - i - 1);
      i = e;
    } else if (c == '"') {
      for (i++; i < s.size() && s[i] != '"'; i++) {
        if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '"' || s[i + 1] == '\\')) i++;
        w += s[i];
      }
      if (i >= s.size()) return *ok = false, std::vector<std::string>{};
    } else {
      w += c;
    }
  }
  if (in_word) out.push_back(w);
  return out;
}

inline Config parse_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) ltx::fail_errno(path);
  Config c;
  std::string line;
  int n = 0;
  DbEntry* cur = nullptr;
  auto bad = [&](const std::string& m) { ltx::fail(ltx::Kind::Usage, path + ":" + std::to_string(n) + ": " + m); };
  auto number = [&](const std::string& v, long lo, long hi) {
    char* e = nullptr;
    errno = 0;
    long x = std::strtol(v.c_str(), &e, 10);
    if (v.empty() || *e || errno || x < lo || x > hi)
      bad("not a number from " + std::to_string(lo) + " to " + std::to_string(hi) + ": " + v);
    return x;
  };
  auto words = [&](const std::string& v) {
    bool ok = false;
    auto w = split_words(v, &ok);
    if (!ok) bad("unbalanced quotes: " + v);
    return w;
  };
  auto duration = [&](const std::string& v) {
    if (ltx::parse_duration_ms(v) < 0) bad("not a duration (500ms, 30s, 5m, 1h30m, 7d): " + v);
    return v;
  };
  while (std::getline(in, line)) {
    n++;
    size_t hash = line.find('#');
    if (hash != std::string::npos) line = line.substr(0, hash);
    line = trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']' || trim(line.substr(1, line.size() - 2)).empty()) bad("expected [DATABASE-PATH-OR-GLOB]");
      c.dbs.push_back(DbEntry{});
      cur = &c.dbs.back();
      cur->path = trim(line.substr(1, line.size() - 2));
      continue;
    }
    size_t eq = line.find('=');
    if (eq == std::string::npos) bad("expected KEY = VALUE");
    std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
    if (v.empty()) bad("no value for " + k);
    if (cur) {
      if (k == "name") cur->name = v;
      else if (k == "url") cur->url = v;
      else if (k == "state-dir") cur->state_dir = v;
      else if (k == "checkpoint-pages") cur->checkpoint_pages = number(v, 0, kMaxCheckpointPages);
      else if (k == "sync-interval") cur->sync_interval = duration(v);
      else bad("unknown key '" + k + "' in a database section (name, url, state-dir, checkpoint-pages, sync-interval)");
    } else {
      if (k == "url") c.url = v;
      else if (k == "state-dir") c.state_dir = v;
      else if (k == "metrics-file") c.metrics_file = v;
      else if (k == "metrics-addr") c.metrics_addr = v;
      else if (k == "metrics-interval") c.metrics_interval = duration(v);
      else if (k == "drain-timeout") c.drain_timeout = duration(v);
      else if (k == "backoff-max") c.backoff_max = duration(v);
      else if (k == "sync-interval") c.sync_interval = duration(v);
      else if (k == "checkpoint-pages") c.checkpoint_pages = number(v, 0, kMaxCheckpointPages);
      else if (k == "park-after") c.park_after = duration(v);
      else if (k == "max-active") c.max_active = number(v, 1, kMaxActive);
      else if (k == "metrics-databases") c.metrics_databases = number(v, 0, kMaxMetricsDatabases);
      else if (k == "dir") c.dir = v;
      else if (k == "pattern") c.pattern = v;
      else if (k == "endpoint") c.endpoint = v;
      else if (k == "region") c.region = v;
      else if (k == "age-recipients-file") c.age_recipients_file = v;
      else if (k == "age-identity") c.age_identity = v;
      else if (k == "exec") c.exec = words(v);
      else bad("unknown key '" + k + "'");
    }
  }
  if (in.bad()) ltx::fail_errno(path);
  return c;
}

}  // namespace wscfg
