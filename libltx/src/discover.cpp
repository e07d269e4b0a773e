// discover.cpp - databases under a directory (see ltx/discover.h).
#include "ltx/discover.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace ltx::discover {
namespace {

std::vector<std::string> components(const std::string& p) {
  std::vector<std::string> out;
  size_t b = 0;
  for (;;) {
    size_t e = p.find('/', b);
    out.push_back(p.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) return out;
    b = e + 1;
  }
}

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Names never taken: SQLite's side files, walsync's state directories.
bool never(const std::string& name) {
  return ends_with(name, "-wal") || ends_with(name, "-shm") || ends_with(name, "-journal") ||
         ends_with(name, "-walsync") || name == "." || name == "..";
}

}  // namespace

std::string check_pattern(const std::string& pattern) {
  if (pattern.empty()) return "empty";
  if (pattern[0] == '/') return "must be relative to the directory";
  auto cs = components(pattern);
  if (int(cs.size()) > kMaxDepth) return "more than " + std::to_string(kMaxDepth) + " levels";
  for (const auto& c : cs) {
    if (c.empty()) return "an empty component";
    if (c == "." || c == "..") return "a '" + c + "' component";
  }
  return "";
}

int depth_of(const std::string& pattern) { return int(components(pattern).size()); }

Kind classify(const std::string& path, std::string* why) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    *why = std::strerror(errno);
    return errno == ENOENT ? Kind::Skipped : Kind::Unreadable;
  }
  if (S_ISLNK(st.st_mode)) {
    *why = "a symbolic link (not followed: watch its target's directory)";
    return Kind::Skipped;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
    return Kind::Skipped;
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    *why = std::strerror(errno);
    return Kind::Unreadable;
  }
  unsigned char h[100];
  ssize_t n = ::pread(fd, h, sizeof h, 0);
  int err = errno;
  ::close(fd);
  if (n < 0) {
    *why = std::strerror(err);
    return Kind::Unreadable;
  }
  if (n < ssize_t(sizeof h)) {
    if (std::memcmp(h, "SQLite format 3", size_t(n) < 15 ? size_t(n) : 15) != 0) {
      *why = "not a SQLite database";
      return Kind::NotSqlite;
    }
    return Kind::NotYet;
  }
  if (std::memcmp(h, "SQLite format 3\0", 16) != 0) {
    *why = "not a SQLite database";
    return Kind::NotSqlite;
  }
  if (h[18] != 2 || h[19] != 2) {  // file format read/write versions: 2 is WAL
    *why = "not in WAL mode (PRAGMA journal_mode=WAL)";
    return Kind::NotWal;
  }
  return Kind::Wal;
}

void walk(const std::string& root, const std::string& rel, const std::string& pattern,
          const std::function<void(const std::string&)>& on_dir,
          const std::function<void(const std::string&)>& on_file,
          const std::function<void(const std::string&, int)>& on_error) {
  const auto pat = components(pattern);
  const int level = rel.empty() ? 0 : int(components(rel).size());
  if (level >= int(pat.size())) return;
  const std::string dir = rel.empty() ? root : root + "/" + rel;
  DIR* d = ::opendir(dir.c_str());
  if (!d) {
    on_error(rel, errno);
    return;
  }
  on_dir(rel);
  std::vector<std::pair<std::string, unsigned char>> entries;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (never(name) || ::fnmatch(pat[size_t(level)].c_str(), name.c_str(), FNM_PATHNAME) != 0) continue;
    entries.push_back({name, e->d_type});
  }
  ::closedir(d);
  const bool last = level + 1 == int(pat.size());
  for (const auto& [name, type] : entries) {
    std::string r = rel.empty() ? name : rel + "/" + name;
    if (last) {
      on_file(r);
      continue;
    }
    bool isdir = type == DT_DIR;
    if (type == DT_UNKNOWN) {  // some file systems do not say
      struct stat st {};
      isdir = ::lstat((root + "/" + r).c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (isdir) walk(root, r, pattern, on_dir, on_file, on_error);  // never a symbolic link (DT_LNK)
  }
}

}  // namespace ltx::discover
