// compact.h - compaction, snapshots and retention on a replica, without the
// live database: every new object is an ltx::merge of objects already there.
//
// Compaction (levels 1..8): the files of level L-1 not yet covered by level
// L or above are grouped by time window (floor(timestamp / interval)); each
// window that has ended (window end <= now) becomes one file at level L,
// named <min>-<max>.ltx and stamped with its last input's time, exactly as
// Litestream v0.5 names compactions. Windows are a pure function of the
// inputs' LTX timestamps, so a rerun computes the same objects, finds them
// listed and uploads nothing; an interrupted run leaves whole objects only
// (S3 PUT, or temp + rename) and the next run picks up where it stopped.
//
// Snapshots (level 9): the restore plan (plan_restore: the newest snapshot,
// then the fewest files up to the target) of the last TXID stamped before
// the end of the last completed window (interval 0: the latest TXID) is
// merged into one snapshot 1-<TXID>.
//
// Requests: one LIST of the replica (all levels, 1000 keys a page) per run.
// An idle replica - nothing newer than level L (or the newest snapshot) -
// costs nothing more. Otherwise a 100-byte header GET per input in a
// completed window plus about log2(n) to find where completed windows end,
// the inputs' bytes (ranged GETs, see read_budget) and one PUT per output.
//
// Retention: see plan_retention().
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ltx/replica.h"
#include "ltx/store.h"

namespace ltx {

// A Reader over one stored object, fetched in ranged GETs of `chunk` bytes
// (one GET for objects up to chunk): memory is one chunk, not the object.
class ObjectReader : public Reader {
 public:
  ObjectReader(Store& s, const std::string& key, uint64_t size, size_t chunk = 1u << 20)
      : s_(s), key_(key), size_(size), chunk_(chunk) {}
  size_t read(void* buf, size_t n) override;

 private:
  Store& s_;
  std::string key_;
  uint64_t size_, off_ = 0;  // size_: as listed, then the payload's
  bool sized_ = false;
  size_t chunk_, pos_ = 0;
  std::string buf_;
};

// Litestream's default compaction intervals: 1: 30 s, 2: 5 min, 3: 1 h;
// 9 (snapshots): 24 h. 0 for levels without a default.
int64_t default_interval_ms(int level);


struct CompactOptions {
  int level = 1;             // 1..9
  int64_t interval_ms = 0;   // window length; level 9 may use 0 (= latest)
  int64_t now_ms = 0;        // the clock (injected in tests)
  std::string spool_dir = "/tmp";
  // Inputs are read in ranged GETs of read_budget / inputs bytes each,
  // between 64 KiB and 8 MiB: read memory stays near the budget.
  size_t read_budget = 16u << 20;
  std::function<void(const std::string&)> log;  // one line an event; may be null
};

struct CompactResult {
  int windows = 0;        // outputs planned
  int uploaded = 0;       // outputs stored by this run
  int present = 0;        // outputs already stored (skipped)
  int inputs = 0;         // input files merged
  uint64_t bytes_in = 0, bytes_out = 0;
  std::vector<ReplicaFile> outputs;  // every planned output (uploaded or present)
};

// One compaction (level 1..8) or snapshot (level 9) run; see above.
// Throws Usage on bad options, Integrity for defective inputs (nothing is
// stored for a window whose merge fails), Runtime for store errors.
CompactResult compact(Replica& r, const CompactOptions& o);

// ---- retention ----

struct RetainOptions {
  int64_t now_ms = 0;
  // Point-in-time window: keep the snapshots stamped within it, plus the
  // newest older one (the window's base), and every file after that base.
  // < 0: no window; the base is the newest snapshot.
  int64_t retention_ms = -1;
  // GFS: also keep the newest snapshot of each of the last N hours, days
  // (UTC), weeks (from Monday) and months that have one (restic's rule).
  // These are restore points of their own: the files between them go.
  int hourly = 0, daily = 0, weekly = 0, monthly = 0;
  // Files of levels 0..7 that a higher compaction level covers and whose
  // covering file is older than this go too: restores before that point land
  // on the covering level's window boundaries. < 0: keep every file in the
  // window (exact point-in-time restore across all of it).
  int64_t compacted_retention_ms = -1;
};

struct RetainPlan {
  std::vector<ReplicaFile> remove;     // in deletion order
  std::vector<ReplicaFile> snapshots;  // level-9 snapshots kept, oldest first
  ReplicaFile base;                    // the window's base snapshot (level 0 if none)
  bool have_base = false;
};

// Decides what goes (no deletion). Reads the header of every level-9
// snapshot (their times), and with compacted_retention_ms of every file of
// levels 1..8 that covers another. Never removes the newest snapshot or a
// file after the base, except lower-level files inside an old covering file;
// checks before returning that every TXID a retained restore point can reach
// still has a plan (throws Integrity otherwise: nothing will be removed).
// No level-9 snapshot: nothing goes.
RetainPlan plan_retention(Replica& r, const std::vector<ReplicaFile>& files, const RetainOptions& o);

}  // namespace ltx
