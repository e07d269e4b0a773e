// follow.cpp - stream a replica's restore plan, then its new files.
#include "ltx/follow.h"

#include <cmath>
#include <algorithm>
#include <cstdlib>

#include "ltx/bytes.h"
#include "ltx/error.h"

namespace ltx {

Follower::Follower(Replica& r, Writer& out, const FollowOptions& o) : r_(r), out_(out), o_(o), check_(out) {}

void Follower::send(const ReplicaFile& f) {
  if (!f.min_txid || (f.min_txid != 1 && f.min_txid != st_.position + 1))
    fail_integrity(f.key + ": does not continue TXID " + hex16(st_.position));
  check_.begin(f);
  uint64_t n = r_.store().get(f.key, check_);
  if (!r_.store().sealed() && n != f.size) fail_integrity(f.key + ": got " + std::to_string(n) + " bytes, listed " + std::to_string(f.size));
  check_.end();
  check_.flush();
  st_.position = f.max_txid;
  st_.files++;
  st_.bytes += n;
  note(f.key + ": sent " + std::to_string(n) + " bytes, position " + hex16(st_.position));
}

bool Follower::recover() {
  st_.full_lists++;
  auto files = r_.list();
  uint64_t latest = 0;
  for (auto& f : files) latest = std::max(latest, f.max_txid);
  if (latest < st_.position)
    fail_integrity("the replica's latest TXID " + hex16(latest) + " is behind position " + hex16(st_.position) +
                   " (a different or reset replica?)");
  if (latest == st_.position) return false;
  auto bridge = plan_bridge(files, st_.position);
  if (!bridge.empty()) {
    note("continuing from TXID " + hex16(st_.position) + " with " + std::to_string(bridge.size()) + " files");
    for (auto& f : bridge) send(f);
    return true;
  }
  RestorePlan plan = plan_restore(r_, files, RestoreTarget{});
  if (plan.files.front().max_txid <= st_.position)
    fail_integrity("gap after TXID " + hex16(st_.position) + ": no file starts at TXID " +
                   hex16(st_.position + 1) + " and no newer snapshot (the latest TXID is " + hex16(latest) + ")");
  note("no file continues TXID " + hex16(st_.position) + ": restarting from snapshot " + plan.files.front().name());
  st_.restarts++;
  for (auto& f : plan.files) send(f);
  return true;
}

void Follower::run() {
  bool full = true;
  if (o_.has_after) {
    st_.position = o_.after;
  } else {
    st_.full_lists++;
    auto files = r_.list();
    if (files.empty()) fail_integrity("no replica files");
    RestorePlan plan = plan_restore(r_, files, RestoreTarget{});
    for (auto& f : plan.files) {
      send(f);
      if (o_.stop && o_.stop()) return;
    }
    full = false;
  }
  const std::string prefix = r_.level_prefix(0);
  int64_t period = o_.interval_ms;
  int64_t said = o_.interval_ms;  // the period last logged
  auto idle = [&] {  // nothing new: wait, then wait longer next time
    if (period != said) note("polling every " + std::to_string(said = period) + " ms");
    int64_t ms = period;
    period = std::max(o_.interval_ms, std::min(period * 2, o_.max_interval_ms));
    return o_.wait(ms);
  };
  for (;;) {
    if (o_.stop && o_.stop()) return;
    if (full) {
      full = false;
      if (recover()) {
        period = o_.interval_ms;
        continue;
      }
      if (!idle()) return;
      continue;
    }
    st_.polls++;
    auto objs = r_.store().list(prefix, r_.key(0, st_.position, st_.position));
    int sent = 0;
    bool gap = false;
    for (auto& o : objs) {
      ReplicaFile f;
      if (!parse_filename(o.key.substr(prefix.size()), &f.min_txid, &f.max_txid)) continue;
      if (f.min_txid <= st_.position || f.max_txid < f.min_txid) continue;
      if (f.min_txid != st_.position + 1) {
        gap = true;
        break;
      }
      f.level = 0;
      f.size = o.size;
      f.mtime_ms = o.mtime_ms;
      f.key = o.key;
      send(f);
      sent++;
      if (o_.stop && o_.stop()) return;
    }
    if (gap) {
      note("level 0 does not continue TXID " + hex16(st_.position) + ": listing every level");
      full = true;
      continue;
    }
    if (sent) {
      period = o_.interval_ms;
      continue;  // more may have arrived meanwhile
    }
    if (!idle()) return;
  }
}

}  // namespace ltx
