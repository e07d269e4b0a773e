// state.h - the encoder's page state: position plus one checksum per page.
//
// A state directory holds
//   journal.0  redo records of the last eight commits, in a ring (commit k
//   ..         in journal.(k % 8)): sequence, position (txid, checksum,
//   journal.7  page size, commit, WAL cursor of the last LTX file emitted)
//              and the page checksums it changed, with an xxh64. On open the
//              valid records with consecutive sequences up to the highest
//              are replayed in order; the highest is the state. A slot is
//              overwritten only once the pages of its record are synced, so
//              a commit costs one sync (its record) and, every eighth
//              commit, a second (the pages written since the last one).
//   pages      8 bytes a page (u64be page checksum, 0 = absent), read and
//              written with pread/pwrite, so memory stays flat for any size
//   position   a copy of the position as text, for people and scripts;
//              rewritten in place without syncing (the journals are the
//              authority)
//   undo       (only with an acknowledgement file) one record per TXID not
//              yet acknowledged downstream: the previous position and the
//              old checksum of every page the TXID changed, so the state can
//              roll back to the acknowledged position after a crash
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ltx {

struct Position {
  uint64_t txid = 0;        // last TXID emitted (0: none yet)
  uint64_t checksum = 0;    // database checksum after it
  uint32_t page_size = 0;
  uint32_t commit = 0;      // database size in pages after it
  uint32_t wal_salt1 = 0, wal_salt2 = 0;
  uint64_t wal_offset = 0;  // WAL offset just past the last frame emitted
};

// The page checksum changes of one commit, in the order added: in memory up
// to 4096 entries, then in an unlinked file in dir, so a commit of any size
// (a 1 GB resync changes 262,144 pages) costs flat memory.
class Changes {
 public:
  explicit Changes(const std::string& dir) : dir_(dir) {}
  ~Changes();
  Changes(const Changes&) = delete;
  Changes& operator=(const Changes&) = delete;
  void add(uint32_t pgno, uint64_t ck);
  uint64_t size() const { return spilled_ + mem_.size(); }
  bool empty() const { return size() == 0; }
  // fn(pgno, ck) for every entry, in the order added.
  void for_each(const std::function<void(uint32_t, uint64_t)>& fn) const;

 private:
  static constexpr size_t kChunk = 4096;
  std::string dir_;
  std::vector<std::pair<uint32_t, uint64_t>> mem_;
  int fd_ = -1;
  uint64_t spilled_ = 0;
};

class PageState {
 public:
  // Opens (creating if needed) the state directory; replays a journal.
  explicit PageState(const std::string& dir);
  ~PageState();
  PageState(const PageState&) = delete;
  PageState& operator=(const PageState&) = delete;

  bool initialized() const { return pos_.txid != 0; }
  const Position& position() const { return pos_; }
  // Checksum of the page as last emitted; 0 if absent. A page within the
  // position's Commit has one (every page checksum has bit 63 set): a zero
  // or missing entry there is damage (the file was truncated or zeroed
  // under us) and throws Integrity "state DIR: damaged: ...".
  uint64_t get(uint32_t pgno) const;
  // Checks the state against itself: the pages file holds an entry for
  // every page within Commit and their fold is the position's checksum
  // (the post-apply checksum of the last file emitted). Reads 8 bytes a
  // page (2 MB for a 1 GB database of 4 KiB pages). Returns "" when it
  // checks out, else what is wrong.
  std::string check() const;
  // Forgets everything (pages, journals, undo records): a fresh state.
  void reset();
  // Durably records a new position with its page checksum changes
  // (checksum 0 removes a page).
  void commit(const Position& p, const Changes& changes);
  void commit(const Position& p, const std::vector<std::pair<uint32_t, uint64_t>>& changes);
  const std::string& dir() const { return dir_; }

  // Keep undo records from now on (an acknowledgement file is in use).
  void enable_undo();
  // Roll the state back to `txid` (must be covered by undo records).
  void rollback_to(uint64_t txid);
  // Drop undo records at or below `txid` (acknowledged downstream).
  void trim_undo(uint64_t txid);
  uint64_t undo_bytes() const;

 private:
  void replay_journal();   // the older layout: one journal and a position file
  bool replay_journals();
  void append_undo(uint64_t txid, const Changes& changes);
  void write_pages(const std::vector<std::pair<uint32_t, uint64_t>>& changes);
  std::string dir_;
  int pages_fd_ = -1;
  int undo_fd_ = -1;
  int pos_fd_ = -1;         // the position copy, opened at the first commit
  size_t pos_len_ = SIZE_MAX;
  static constexpr int kSlots = 8;
  int jfd_[kSlots] = {-1, -1, -1, -1, -1, -1, -1, -1};
  uint64_t slot_seq_[kSlots] = {};  // sequence of the valid record in each slot (0: none)
  uint64_t seq_ = 0;                // sequence of the newest journal record
  uint64_t synced_seq_ = 0;         // pages of records up to this one are durable
  Position pos_;
};

// One process per state: an exclusive flock(2) on `path` (created if
// needed; it holds the holder's pid, for the message), released when the
// object goes or the process dies. Throws Runtime "<path>: in use by pid N
// (<who>)" when another process holds it. A state directory's lock is
// DIR/lock (ltx-encode --state, walsync watch); an acknowledgement file's is
// ACK.lock (wal-tail --ack, walsync watch).
class StateLock {
 public:
  explicit StateLock(const std::string& path);
  ~StateLock();
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;
  // Takes the lock again if `path` was removed or replaced since (someone
  // deleted the state directory under a running process).
  void renew();

 private:
  void take();
  std::string path_;
  int fd_ = -1;
};

// Creates the state directory if needed and locks DIR/lock.
std::unique_ptr<StateLock> lock_state_dir(const std::string& dir);

std::string format_position(const Position& p);
bool parse_position(const std::string& text, Position* p);
// Reads a position file (an acknowledgement or a state's position): false
// if it does not exist; throws if it exists but cannot be parsed.
bool read_position_file(const std::string& path, Position* p);
// Writes a position file atomically (temp, fsync, rename, fsync directory).
void write_position_file(const std::string& path, const Position& p);

// Keeps undo records in `st` from now on and, if `ack` exists, rolls the
// state back to it and drops the undo records it covers. Throws Integrity
// when the acknowledgement is ahead of the state or their checksums differ
// (the state belongs to another replica). Returns true if `ack` existed.
// With `adopt`, a fresh state facing an acknowledgement (replication
// restarted on a restored database) is not an error: *adopt receives the
// acknowledged position, for EncodeOptions::adopt.
bool resume_from_ack(PageState& st, const std::string& ack, Position* adopt = nullptr);


}  // namespace ltx
