// discover.h - finding the databases under a directory for walsync watch
// --dir (walsync(1), Discovery): a glob of '/'-separated components
// matched against paths relative to the directory, each component with
// fnmatch(3) (a '*' never crosses a '/'), so the walk descends at most as
// many levels as the pattern has components, and only into directories
// that match the component of their level.
//
// Never followed or taken: symbolic links (SQLite resolves them, so a
// linked database's -wal is beside its target, not where we watch), the
// side files of SQLite (-wal, -shm, -journal) and walsync's own state
// directories (NAME-walsync).
#pragma once
#include <functional>
#include <string>

namespace ltx::discover {

constexpr int kMaxDepth = 8;  // components of a pattern

// "" if pattern is usable, else why not (empty, absolute, a '..' or empty
// component, more than kMaxDepth components).
std::string check_pattern(const std::string& pattern);
// Its number of components.
int depth_of(const std::string& pattern);

// What a file matching the pattern is.
enum class Kind {
  Wal,         // a SQLite database in WAL mode: watch it
  NotYet,      // empty or shorter than a header: being created, look again later
  NotWal,      // a SQLite database with a rollback journal
  NotSqlite,   // some other file
  Unreadable,  // cannot be opened or read (why says so)
  Skipped,     // a symbolic link, not a regular file, or a name never taken
};
Kind classify(const std::string& path, std::string* why);

// Walks root/rel (rel "" for root itself; rel at the level its number of
// components gives): on_dir(rel) for it and every directory below it that
// can hold a match, on_file(rel) for every entry name that matches
// (classify them). A directory that cannot be read is skipped (on_error).
void walk(const std::string& root, const std::string& rel, const std::string& pattern,
          const std::function<void(const std::string& rel)>& on_dir,
          const std::function<void(const std::string& rel)>& on_file,
          const std::function<void(const std::string& rel, int err)>& on_error);

}  // namespace ltx::discover
