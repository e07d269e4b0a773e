// follow.h - follow a replica: stream a restore, then every new LTX file.
//
// Polling is one ListObjectsV2 of level 0 with start-after = the key of the
// last TXID sent, so an idle poll is one request returning an empty page.
// While polls find nothing the period doubles, from interval_ms up to
// max_interval_ms; a poll that finds a file returns it to interval_ms.
// New level-0 files that continue the chain are streamed in TXID order. A
// gap at level 0 (the follower fell behind compaction or retention) or a
// resumed position (--after) is resolved with one full listing: files of
// levels 0..8 that continue the chain (plan_bridge), else the newest
// snapshot past the position, which restarts the stream (a consumer such as
// ltx-apply --live takes a snapshot as a replacement of its state).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "ltx/io.h"
#include "ltx/replica.h"

namespace ltx {

// The poll interval a follower accepts.
constexpr int64_t kFollowIntervalMinMs = 10, kFollowIntervalMaxMs = 86400000;

struct FollowOptions {
  bool has_after = false;
  uint64_t after = 0;  // continue after this TXID instead of restoring first
  // Sleep up to ms milliseconds; return false to stop (signal, reader gone).
  std::function<bool(int64_t ms)> wait;
  // Checked between files: true stops after the file just sent.
  std::function<bool()> stop;
  int64_t interval_ms = 1000;
  int64_t max_interval_ms = 30000;  // idle backoff bound (<= interval_ms: no backoff)
  std::function<void(const std::string&)> log;  // may be null
};

struct FollowStats {
  uint64_t position = 0;   // MaxTXID of the last file sent
  uint64_t files = 0, bytes = 0;
  uint64_t polls = 0;      // small level-0 LISTs
  uint64_t full_lists = 0; // full listings (start, gaps)
  uint64_t restarts = 0;   // snapshot restarts
};

class Follower {
 public:
  Follower(Replica& r, Writer& out, const FollowOptions& o);
  // Runs until wait() or stop() says so. Throws on errors (Integrity for a
  // gap that neither higher levels nor a newer snapshot bridge).
  void run();
  const FollowStats& stats() const { return st_; }

 private:
  void send(const ReplicaFile& f);
  bool recover();  // full listing; true if anything was sent
  void note(const std::string& m) {
    if (o_.log) o_.log(m);
  }
  Replica& r_;
  Writer& out_;
  FollowOptions o_;
  PlanCheckWriter check_;
  FollowStats st_;
};


}  // namespace ltx
