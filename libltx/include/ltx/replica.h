// replica.h - a Litestream v0.5 replica on a Store: layout, listing,
// restore planning and the chain check that keeps two writers apart.
//
// Layout (identical to Litestream v0.5):
//   S3:   <prefix>/<level %04x>/<min %016x>-<max %016x>.ltx   (snapshots in 0009/)
//   file: <dir>/ltx/<level decimal>/<min>-<max>.ltx
// Levels: 0 raw files, 1..8 compactions, 9 snapshots (MinTXID 1).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "ltx/ltx.h"
#include "ltx/store.h"

namespace ltx {

constexpr int kSnapshotLevel = 9;
constexpr int kMaxLevel = 9;

struct ReplicaFile {
  int level = 0;
  uint64_t min_txid = 0, max_txid = 0;
  uint64_t size = 0;
  int64_t mtime_ms = 0;  // S3 LastModified / file mtime (= LTX timestamp on file://)
  std::string key;
  // "L/MIN-MAX.ltx", e.g. "9/0000000000000001-0000000000000064.ltx".
  std::string name() const;
};
// Parses name() back; false if it is not one.
bool parse_replica_name(const std::string& s, int* level, uint64_t* min_txid, uint64_t* max_txid);

class Replica {
 public:
  Replica(Store& store, const Location& loc);
  Store& store() { return store_; }
  std::string key(int level, uint64_t min_txid, uint64_t max_txid) const;
  std::string level_prefix(int level) const;  // ends with '/'
  // Replica files at every level (level < 0) or one level, sorted by
  // (level, min_txid). Keys that do not follow the layout are ignored.
  std::vector<ReplicaFile> list(int level = -1);
  // Levels `level` and up (one listing, starting after the lower levels).
  std::vector<ReplicaFile> list_from(int level);
  // Of one level, what a chain walk after TXID `txid` can take: its
  // snapshots (MinTXID 1) and the files starting after `txid`; two
  // listings, the second starting at that key, so the cost follows the new
  // files, not the level's size.
  std::vector<ReplicaFile> list_after(int level, uint64_t txid);
  Trailer trailer(const ReplicaFile& f);  // ranged GET of the last 16 bytes (cached)
  Header header(const ReplicaFile& f);    // ranged GET of the first 100 bytes (cached)

 private:
  // Replica files under `prefix` (a level's or the base's) after key
  // `start_after`; `level` < 0: the prefix holds the level folders.
  std::vector<ReplicaFile> scan(const std::string& prefix, const std::string& start_after, int level);
  std::string base_prefix() const;  // holds the level folders; ends with '/' unless empty

  Store& store_;
  Location loc_;
  std::map<std::string, Trailer> trailers_;
  std::map<std::string, Header> headers_;
};

struct RestoreTarget {
  bool has_txid = false, has_time = false;
  uint64_t txid = 0;
  int64_t time_ms = 0;
};

struct RestorePlan {
  std::vector<ReplicaFile> files;  // snapshot first, then contiguous deltas
  uint64_t txid = 0;               // the TXID the restore reaches
};

// Newest snapshot (MinTXID 1, any level, level 9 preferred) at or before the
// target, then the fewest files that extend the TXID range to the target,
// preferring higher levels. A timestamp target becomes the highest TXID
// whose file's LTX header timestamp is at or before it (binary search per
// level; a few ranged GETs). Throws Integrity naming the gap.
RestorePlan plan_restore(Replica& r, const std::vector<ReplicaFile>& files, const RestoreTarget& t);

// The fewest files (levels 0..8, higher levels preferred on ties) that
// continue a chain at TXID `from` (the first starts at from+1) as far as
// the replica reaches. Empty if no file starts at from+1. A follower that
// fell behind a compaction or retention window bridges with it.
std::vector<ReplicaFile> plan_bridge(const std::vector<ReplicaFile>& files, uint64_t from);

// Downloads one object through the LTX decoder as it arrives (a thread
// feeds a pipe; memory stays at a few buffers for any size) and verifies
// it completely: header, every page, index, file checksum, a snapshot's
// post-apply fold, no trailing bytes. The caller must ignore SIGPIPE.
Trailer verify_object(Store& s, const std::string& key, Header* h);

// verify_replica's findings. Defects are one line each.
struct ReplicaReport {
  std::vector<std::string> defects;
  size_t files = 0, bad_files = 0, orphans = 0, gaps = 0;
  uint64_t bytes = 0;
  size_t per_level[kMaxLevel + 1] = {};
  uint64_t latest = 0;                 // highest MaxTXID of any file
  uint64_t restore_min = 0, restore_max = 0;  // restorable TXIDs (0: none)
  uint64_t restore_points = 0;         // TXIDs a restore can target
  bool replayed = false;               // the range was proven by replaying it
};

struct VerifyOptions {
  // Prove the restorable range: rebuild the chain in a temporary database
  // in tmpdir and check every pre- and post-apply checksum against the pages
  // actually applied. Without it, the range follows from the checksums the
  // files claim, which a damaged encoder state can get wrong.
  bool replay = true;
  std::string tmpdir;  // default /tmp
  std::function<void(const ReplicaFile&)> on_replay;  // before each replayed file (progress)
};

// Walks a replica: verifies every file (verify_object), then the chain
// across files and levels: headers match names; files ending at the same
// TXID agree on the post-apply checksum; each file's pre-apply checksum
// equals the post-apply of the files ending just before it; TXIDs no file
// covers (gaps); files no restore can reach (orphans); the restorable
// range, replayed (VerifyOptions::replay: each file that a restore can use
// is downloaded a second time and applied, at most once) or claimed.
// on_file(f) is called before each download (progress), may be null.
ReplicaReport verify_replica(Replica& r, const std::function<void(const ReplicaFile&)>& on_file,
                             const VerifyOptions& opt = VerifyOptions());

// s3-put's guard: decides for each verified LTX file whether it continues
// the remote chain (Upload), is already there byte-identical (Skip, so a
// restarted pipeline converges), or would break the chain (throws
// Integrity, nothing uploaded). Rules by level:
//   0     MinTXID = remote latest TXID + 1 and pre-apply = its post-apply;
//         or a snapshot (MinTXID 1) reaching past the remote latest TXID.
//   1..8  continues the level's latest file; or starts a level with a
//         snapshot or right after a file (any level) whose post-apply matches.
//   9     a snapshot; its post-apply equals that of any file ending at its TXID.
// Checksums are compared only when both sides carry one (NoChecksum files
// and Litestream's zero checksums are checked by TXID only).
class ChainGuard {
 public:
  ChainGuard(Replica& r, int level);
  enum class Action { Upload, Skip };
  Action check(const Header& h, const Trailer& t);
  // Record a file as uploaded (the in-memory model of the remote).
  void uploaded(const Header& h, const Trailer& t, uint64_t size);
  // Level 0: the remote's latest file is known to end at TXID txid with
  // this post-apply checksum (the acknowledgement of a pipeline that this
  // process ran and drained, the replica having no other writer). A file
  // that continues it (MinTXID txid+1, matching pre-apply) is judged, and
  // its upload recorded, without a request; any other file lists the
  // replica and is judged by the rules above.
  void assume_latest(uint64_t txid, uint64_t post_apply);

 private:
  void load();
  bool assumed_ = false;  // assume_latest() and not loaded yet
  uint64_t assumed_txid_ = 0, assumed_post_ = 0;
  uint64_t post_apply_of(const ReplicaFile& f);
  Replica& r_;
  int level_;
  bool loaded_ = false;
  std::vector<ReplicaFile> files_;
  std::map<std::string, Trailer> local_;  // uploaded by us: key -> trailer
};

// Integrity error unless h's TXID range is the one f's name gives
// ("header TXIDs MIN-MAX do not match the name").
void check_name(const ReplicaFile& f, const Header& h);

// A Writer that checks a concatenated LTX stream as it passes to out: each
// header parses, matches the planned file's TXID range, and its pre-apply
// checksum equals the previous file's post-apply (trailer) checksum.
class PlanCheckWriter : public Writer {
 public:
  PlanCheckWriter(Writer& out) : out_(out) {}
  void begin(const ReplicaFile& f);  // before each file's bytes
  void end();                        // after each file's bytes
  void write(const void* p, size_t n) override;
  void flush() override { out_.flush(); }
  // Post-apply checksum and MaxTXID of the last file end()ed (0: none).
  uint64_t last_post_apply() const { return have_prev_ ? prev_post_ : 0; }
  uint64_t last_txid() const { return have_prev_ ? prev_max_ : 0; }

 private:
  Writer& out_;
  ReplicaFile cur_;
  std::string head_;       // first 100 bytes of the current file
  uint8_t tail_[16] = {};  // last 16 bytes seen
  uint64_t seen_ = 0;
  bool have_prev_ = false;
  uint64_t prev_post_ = 0, prev_max_ = 0;
};

// Bytes written here are kept in memory up to mem_limit, then in an
// unlinked temp file under tmpdir (default /tmp); reader() replays them.
class Spool : public Writer {
 public:
  explicit Spool(size_t mem_limit = 4u << 20, const std::string& tmpdir = "");
  ~Spool() override;
  void write(const void* p, size_t n) override;
  uint64_t size() const { return size_; }
  // The file holding everything written, or -1 while it is all in memory.
  int fd() const { return fd_; }
  void clear();
  // A fresh reader over everything written so far, or over bytes
  // [off, off+len) of it.
  std::unique_ptr<Reader> reader();
  std::unique_ptr<Reader> reader(uint64_t off, uint64_t len);

 private:
  size_t limit_;
  std::string tmpdir_;
  std::string mem_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// Passes reads through and copies every byte into a Writer.
class TeeReader : public Reader {
 public:
  TeeReader(Reader& in, Writer& copy) : in_(in), copy_(copy) {}
  size_t read(void* buf, size_t n) override {
    size_t k = in_.read(buf, n);
    if (k) copy_.write(buf, k);
    return k;
  }

 private:
  Reader& in_;
  Writer& copy_;
};

}  // namespace ltx
