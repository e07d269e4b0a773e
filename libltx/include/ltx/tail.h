// tail.h - follow a live WAL-mode SQLite database and write its WAL stream.
//
// Mechanism behind wal-tail(1); the protocol is described in man/wal-tail.1
// (CHECKPOINT SAFETY). In short: a read transaction is held at every
// instant, on one of two connections that leapfrog each other, so SQLite can
// neither restart nor truncate the WAL past a frame that has not been
// written out; committed frames (up to the wal-index mxFrame) are copied from
// the -wal file, verified and emitted; wal-tail checkpoints PASSIVE itself
// when caught up. When continuity is lost (startup without a usable resume
// position), a resync is emitted: every page of one consistent snapshot.
#pragma once
#include <csignal>
#include <cstdint>
#include <functional>
#include <string>

#include "ltx/io.h"
#include "ltx/wal.h"

namespace ltx::tail {

struct Options {
  std::string db;
  bool snapshot = false;            // one resync of the live database, then return
  bool have_from = false;           // resume position given
  uint32_t from_salt1 = 0, from_salt2 = 0;
  uint64_t from_offset = 0;         // WAL byte offset just after the last frame kept
  uint32_t checkpoint_pages = 1000; // own PASSIVE checkpoint at this many unbackfilled frames; 0: never
  int idle_ms = 1000;               // quiet time before an idle checkpoint
  int refresh_ms = 10;              // re-pin period while frames are not backfilled
  int poll_ms = 0;                  // > 0: poll at this period instead of inotify
  int busy_timeout_ms = 5000;
  int coalesce_us = 1000;           // at most one copy per this many microseconds under load
  // Acknowledgement file (ltx::format_position, written by s3-put --ack):
  // frames past it are not yet safe downstream, so wal-tail keeps a read
  // transaction off slot 0 and the WAL cannot restart over them, up to
  // ack_max_frames unacknowledged frames (then a crash costs a resync).
  std::string ack_path;
  uint32_t ack_max_frames = 20000;
  volatile std::sig_atomic_t* stop = nullptr;  // set by a signal handler: return cleanly
  std::function<void(const std::string&)> log;  // progress messages (-v); may be empty
};

// "SALT1:SALT2:OFFSET": salts as 8 hex digits, offset decimal. False on bad syntax.
bool parse_position(const std::string& s, uint32_t* salt1, uint32_t* salt2, uint64_t* offset);
std::string format_position(uint32_t salt1, uint32_t salt2, uint64_t offset);

// True when the WAL of `db` can hold no committed frame after the position
// (salt1, salt2, offset): its header carries these salts and no frame of that
// generation starts at offset (frames of a generation are contiguous from
// the first, so none can follow). Two reads of the -wal file, no lock, no
// SQLite connection: a cheap first check for a database that may not have
// changed. Any doubt (no WAL, another generation, a bad header, an offset
// that is not a frame boundary, salts 0:0) is false.
bool nothing_after(const std::string& db, uint32_t salt1, uint32_t salt2, uint64_t offset);

// Refusals throw ltx::Error: Integrity for a non-SQLite file or a page size
// change, Runtime for a non-WAL database, exclusive locking mode, or a
// replaced database file. Returns normally at *stop or after --snapshot.
void run(const Options& o, Writer& out);

}  // namespace ltx::tail
