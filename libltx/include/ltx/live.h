// live.h - apply LTX files to a replica that other processes read meanwhile.
//
// Each LTX file becomes one atomic step for every reader that uses the sqlite3
// library: the file is decoded and verified into a spool first; then, under
// SQLite's own EXCLUSIVE lock on a rollback-journal database (taken as its
// writers take it: SHARED, RESERVED, PENDING, EXCLUSIVE), the original content
// of every page about to change is written to
// a hot rollback journal DB-journal in SQLite's format and synced, the new
// pages are written and the file truncated through SQLite's own file handle
// (SQLITE_FCNTL_FILE_POINTER, so no second descriptor can drop the process's
// POSIX locks), the database is synced, and deleting the journal commits.
// A crash before the delete leaves a hot journal that the next opener (any
// reader, or this class) rolls back.
//
// Page 1 is patched on the replica: file format bytes 18/19 = 1 (rollback
// journal; the primary's page 1 says WAL), the file change counter (24) and
// version-valid-for (92) advance on every applied file, and the in-header size
// (28) is the page count. The logical (unpatched) page 1 and the position are
// kept in the sidecar directory DB-ltx/:
//   state   u64 magic "WSLIVE01", u64 txid, u64 checksum (0: unknown),
//           u32 page size, u32 commit, u32 change counter, u32 0,
//           page size bytes of logical page 1, u64 CRC-64 of all before
//   next    the same, for a file whose journal is not yet deleted
//   spool.* unlinked spool files (never visible for long)
// The change counter decides, after a crash, whether `next` was committed
// (the replica's counter equals it) or rolled back (it does not).
#pragma once
#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ltx/io.h"
#include "ltx/ltx.h"

namespace ltx {

struct LivePosition {
  uint64_t txid = 0;      // MaxTXID of the last applied file (0: none recorded)
  uint64_t checksum = 0;  // logical database checksum after it (0: not known)
  uint32_t page_size = 0;
  uint32_t commit = 0;
  uint32_t counter = 0;   // file change counter written to the replica's page 1
};

struct LiveEvent {
  Header header;
  bool applied = false;  // false: skipped (at or below the recorded TXID)
  double lock_ms = 0;    // time the EXCLUSIVE lock was held
};

class LiveReplica {
 public:
  // Opens (creating if needed) the replica and its sidecar, rolls back a hot
  // journal and settles a pending position. busy_ms: how long to wait for
  // readers before giving up on the lock.
  LiveReplica(const std::string& db_path, int busy_ms);
  ~LiveReplica();
  LiveReplica(const LiveReplica&) = delete;
  LiveReplica& operator=(const LiveReplica&) = delete;

  const LivePosition& position() const { return pos_; }
  // Applies every LTX file of r until a clean end of stream, each as one
  // atomic step. Files at or below the recorded TXID are verified and
  // skipped. Throws with "<name>: <file>: ..." context; files applied before
  // the failure stay applied and recorded.
  int apply_stream(Reader& r, const std::string& name,
                   const std::function<void(const LiveEvent&)>& on_file = {});
  // As Applier::set_max_size: a file whose Commit makes the replica larger
  // is refused (Integrity), and so (Runtime) is growth its file system has
  // no room for, before the replica is touched.
  void set_max_size(uint64_t bytes) { max_size_ = bytes; }

 private:
  void recover();
  void apply_one(Decoder& d, const std::function<void(const LiveEvent&)>& on_file);
  void exec(const char* sql);
  void lock();
  void unlock();
  void read_page(uint32_t pgno, uint8_t* buf);
  uint64_t file_size();
  uint64_t full_checksum(uint64_t npages);
  std::string path_, dir_, journal_;
  sqlite3* db_ = nullptr;
  sqlite3_file* file_ = nullptr;
  LivePosition pos_;
  std::vector<uint8_t> page1_;  // logical page 1 (empty: none)
  bool have_state_ = false;
  int busy_ms_ = 0;
  uint64_t max_size_ = 0;
};

// Reads the recorded position without opening the database (a pending
// `next` is not considered: the position returned is at or before the real
// one, which is safe for resuming). False if there is none.
bool read_live_position(const std::string& db_path, LivePosition* p);

}  // namespace ltx
