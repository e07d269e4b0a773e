// compact.cpp - compaction, snapshots and retention on a replica (compact.h).
#include "ltx/compact.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <set>

#include "ltx/bytes.h"
#include "ltx/error.h"
#include "ltx/merge.h"

namespace ltx {

size_t ObjectReader::read(void* buf, size_t n) {
  if (pos_ == buf_.size()) {
    if (!sized_) size_ = s_.payload_size(key_, size_), sized_ = true;
    if (off_ >= size_) return 0;
    uint64_t len = std::min<uint64_t>(chunk_, size_ - off_);
    StringWriter w;
    w.s.reserve(size_t(len));
    s_.get(key_, w, off_, int64_t(len));
    if (w.s.size() != len)
      fail_integrity(key_ + ": got " + std::to_string(off_ + w.s.size()) + " bytes, listed " + std::to_string(size_));
    buf_.swap(w.s);
    off_ += len;
    pos_ = 0;
  }
  size_t k = std::min(n, buf_.size() - pos_);
  std::memcpy(buf, buf_.data() + pos_, k);
  pos_ += k;
  return k;
}

int64_t default_interval_ms(int level) {
  switch (level) {
    case 1: return 30 * 1000;
    case 2: return 5 * 60 * 1000;
    case 3: return 60 * 60 * 1000;
    case kSnapshotLevel: return 24 * 60 * 60 * 1000;
    default: return 0;
  }
}

namespace {

void note(const CompactOptions& o, const std::string& m) {
  if (o.log) o.log(m);
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Merges `in` (contiguous, oldest first) and stores the result at `level`.
void merge_and_store(Replica& r, const std::vector<ReplicaFile>& in, int level, const CompactOptions& o,
                     CompactResult* res) {
  const ReplicaFile& first = in.front();
  const ReplicaFile& last = in.back();
  std::string key = r.key(level, first.min_txid, last.max_txid);
  std::string name = std::to_string(level) + "/" + format_filename(first.min_txid, last.max_txid);
  std::vector<std::unique_ptr<ObjectReader>> readers;
  std::vector<MergeInput> inputs;
  uint64_t in_bytes = 0;
  const size_t chunk = std::min<size_t>(8u << 20, std::max<size_t>(64u << 10, o.read_budget / in.size()));
  for (auto& f : in) {
    in_bytes += f.size;
    readers.push_back(std::make_unique<ObjectReader>(r.store(), f.key, f.size, chunk));
    inputs.push_back({readers.back().get(), f.key});
    res->bytes_in += f.size;
  }
  Spool out(4u << 20, o.spool_dir);
  MergeOptions mo;
  mo.spool_dir = o.spool_dir;
  // The merged file is spooled there: its zero pages are bounded by its room.
  struct Dir {
    int fd;
    ~Dir() { if (fd >= 0) ::close(fd); }
  } spool_dir{::open(o.spool_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
  mo.room_fd = spool_dir.fd;
  MergeResult m = with_context("merge into " + name, [&] { return merge(inputs, out, mo); });
  auto body = out.reader();
  r.store().put(key, *body, {{"litestream-timestamp", format_timestamp(m.header.timestamp)}});
  res->uploaded++;
  res->inputs += int(in.size());
  res->bytes_out += out.size();
  note(o, name + ": merged " + std::to_string(in.size()) + " files (" + std::to_string(in_bytes) + " bytes) into " +
              std::to_string(out.size()) + " bytes, " + std::to_string(m.pages) + " pages, time " +
              format_timestamp(m.header.timestamp));
}

// The chain of level-`src` files after TXID `covered`, in TXID order; a
// true in `restart` marks a file that does not continue its predecessor
// (a snapshot, or the first file after a gap): windows never span it.
void walk_chain(const std::vector<ReplicaFile>& files, int src, uint64_t covered, std::vector<ReplicaFile>* chain,
                std::vector<bool>* restart) {
  std::vector<const ReplicaFile*> fs;
  for (auto& f : files)
    if (f.level == src && f.max_txid > covered && f.max_txid >= f.min_txid) fs.push_back(&f);
  uint64_t p = covered;
  bool first = true;
  for (;;) {
    const ReplicaFile* next = nullptr;
    bool cont = false;
    for (auto* f : fs)  // continues p: the longest such file
      if (f->min_txid == p + 1 && (!next || f->max_txid > next->max_txid)) next = f, cont = true;
    if (!next)  // restart: the nearest snapshot or file after a gap
      for (auto* f : fs)
        if (f->max_txid > p && (f->min_txid == 1 || f->min_txid > p + 1) && (!next || f->max_txid < next->max_txid))
          next = f;
    if (!next) break;
    chain->push_back(*next);
    restart->push_back(first || !cont);
    first = false;
    p = next->max_txid;
  }
}

CompactResult compact_level(Replica& r, const std::vector<ReplicaFile>& files, const CompactOptions& o) {
  CompactResult res;
  const int L = o.level;
  uint64_t covered = 0;
  std::set<std::string> have;
  for (auto& f : files) {
    if (f.level >= L && f.level < kSnapshotLevel) covered = std::max(covered, f.max_txid);
    if (f.level == L) have.insert(f.key);
  }
  std::vector<ReplicaFile> chain;
  std::vector<bool> restart;
  walk_chain(files, L - 1, covered, &chain, &restart);
  if (chain.empty()) {
    note(o, "level " + std::to_string(L) + ": nothing after TXID " + hex16(covered));
    return res;
  }
  // Windows end by `boundary`; chain times grow with TXIDs, so a binary
  // search finds the first file stamped at or after it.
  const int64_t iv = o.interval_ms;
  const int64_t boundary = floor_div(o.now_ms, iv) * iv;
  size_t lo = 0, hi = chain.size();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (r.header(chain[mid]).timestamp < boundary) lo = mid + 1;
    else hi = mid;
  }
  std::vector<std::vector<ReplicaFile>> groups;
  int64_t cur = 0;
  for (size_t i = 0; i < lo; i++) {
    int64_t ts = r.header(chain[i]).timestamp;
    if (ts >= boundary) break;  // out of order: wait for its window
    int64_t w = floor_div(ts, iv);
    if (groups.empty() || restart[i] || w != cur) groups.emplace_back();
    groups.back().push_back(chain[i]);
    cur = w;
  }
  for (auto& g : groups) {
    ReplicaFile out;
    out.level = L;
    out.min_txid = g.front().min_txid;
    out.max_txid = g.back().max_txid;
    out.key = r.key(L, out.min_txid, out.max_txid);
    res.windows++;
    res.outputs.push_back(out);
    if (have.count(out.key)) {
      res.present++;
      note(o, out.name() + ": already stored");
      continue;
    }
    merge_and_store(r, g, L, o, &res);
  }
  if (lo < chain.size())
    note(o, "level " + std::to_string(L) + ": " + std::to_string(chain.size() - lo) + " files wait for their window to end");
  return res;
}

CompactResult snapshot(Replica& r, const std::vector<ReplicaFile>& files, const CompactOptions& o) {
  CompactResult res;
  uint64_t latest = 0, snap = 0;
  for (auto& f : files) {
    latest = std::max(latest, f.max_txid);
    if (f.level == kSnapshotLevel && f.min_txid == 1) snap = std::max(snap, f.max_txid);
  }
  if (latest == 0 || snap >= latest) {
    note(o, "level 9: the newest snapshot is at the latest TXID " + hex16(latest));
    return res;
  }
  RestoreTarget t;
  if (o.interval_ms > 0) {
    t.has_time = true;
    t.time_ms = floor_div(o.now_ms, o.interval_ms) * o.interval_ms - 1;
  } else {
    t.has_txid = true;
    t.txid = latest;
  }
  RestorePlan plan;
  try {
    plan = plan_restore(r, files, t);
  } catch (const Error& e) {
    if (t.has_time && std::string(e.what()).find("no file at or before") != std::string::npos) {
      note(o, "level 9: no file before " + format_timestamp(t.time_ms + 1));
      return res;
    }
    throw;
  }
  if (plan.txid <= snap) {
    note(o, "level 9: nothing newer than the snapshot at TXID " + hex16(snap) + " before " +
                format_timestamp(t.time_ms + 1));
    return res;
  }
  ReplicaFile out;
  out.level = kSnapshotLevel;
  out.min_txid = 1;
  out.max_txid = plan.txid;
  out.key = r.key(kSnapshotLevel, 1, plan.txid);
  res.windows = 1;
  res.outputs.push_back(out);
  for (auto& f : files)
    if (f.key == out.key) {
      res.present = 1;
      note(o, out.name() + ": already stored");
      return res;
    }
  merge_and_store(r, plan.files, kSnapshotLevel, o, &res);
  return res;
}

}  // namespace

CompactResult compact(Replica& r, const CompactOptions& o) {
  if (o.level < 1 || o.level > kSnapshotLevel) fail(Kind::Usage, "compact: level " + std::to_string(o.level) + ": want 1-9");
  if (o.interval_ms < 0 || (o.interval_ms == 0 && o.level != kSnapshotLevel))
    fail(Kind::Usage, "compact: level " + std::to_string(o.level) + " needs an interval");
  if (o.level == kSnapshotLevel) return snapshot(r, r.list(), o);
  // Compacting into L reads levels L and up (what is covered, what is
  // stored) and of level L-1 only what walk_chain can take after the
  // covered TXID: snapshots and files starting after it (a file starting
  // at or before it, not at 1, is never taken). A replica keeps its level-0
  // files for the whole retention, so this bounds a run's LISTs by the new
  // files rather than by the replica (630 LISTs a run at a week of one file
  // a second; 3 here).
  auto files = r.list_from(o.level);
  uint64_t covered = 0;
  for (auto& f : files)
    if (f.level < kSnapshotLevel) covered = std::max(covered, f.max_txid);
  for (auto& f : r.list_after(o.level - 1, covered)) files.push_back(f);
  return compact_level(r, files, o);
}

// ---- retention ----

namespace {

// TXIDs some restore can reach: ends of chains from any snapshot.
std::set<uint64_t> reachable(const std::vector<const ReplicaFile*>& files) {
  std::multimap<uint64_t, const ReplicaFile*> by_min;
  std::deque<uint64_t> q;
  std::set<uint64_t> seen;
  for (auto* f : files) {
    if (f->max_txid < f->min_txid) continue;
    if (f->min_txid == 1) {
      if (seen.insert(f->max_txid).second) q.push_back(f->max_txid);
    } else if (f->level < kSnapshotLevel) {
      by_min.emplace(f->min_txid, f);
    }
  }
  while (!q.empty()) {
    uint64_t p = q.front();
    q.pop_front();
    auto range = by_min.equal_range(p + 1);
    for (auto it = range.first; it != range.second; ++it)
      if (seen.insert(it->second->max_txid).second) q.push_back(it->second->max_txid);
  }
  return seen;
}

int64_t month_of(int64_t ms) {
  time_t s = time_t(floor_div(ms, 1000));
  struct tm tm;
  gmtime_r(&s, &tm);
  return int64_t(tm.tm_year) * 12 + tm.tm_mon;
}

}  // namespace

RetainPlan plan_retention(Replica& r, const std::vector<ReplicaFile>& files, const RetainOptions& o) {
  RetainPlan plan;
  // Every snapshot (MinTXID 1, any level) is a restore base; newest last.
  std::vector<const ReplicaFile*> snaps;
  bool any9 = false;
  for (auto& f : files)
    if (f.min_txid == 1 && f.max_txid >= 1) {
      snaps.push_back(&f);
      any9 |= f.level == kSnapshotLevel;
    }
  if (!any9) return plan;
  std::sort(snaps.begin(), snaps.end(), [](const ReplicaFile* a, const ReplicaFile* b) {
    return a->max_txid != b->max_txid ? a->max_txid < b->max_txid : a->level < b->level;
  });
  std::map<std::string, int64_t> ts;
  for (auto* s : snaps) ts[s->key] = r.header(*s).timestamp;

  std::set<std::string> keep;
  const ReplicaFile* base = snaps.back();
  keep.insert(base->key);
  if (o.retention_ms >= 0) {
    const int64_t cutoff = o.now_ms - o.retention_ms;
    const ReplicaFile* older = nullptr;
    for (auto* s : snaps) {
      if (ts[s->key] >= cutoff) keep.insert(s->key);
      else older = s;
    }
    if (older) keep.insert(older->key);
    base = older;
    if (!base)
      for (auto* s : snaps)
        if (!base || s->max_txid < base->max_txid) base = s;
  }
  // GFS over level-9 snapshots, newest first: the newest of each bucket.
  struct Rule {
    int n;
    int64_t (*bucket)(int64_t);
  } rules[] = {
      {o.hourly, [](int64_t t) { return floor_div(t, 3600000); }},
      {o.daily, [](int64_t t) { return floor_div(t, 86400000); }},
      {o.weekly, [](int64_t t) { return floor_div(floor_div(t, 86400000) + 3, 7); }},  // 1970-01-01 was a Thursday
      {o.monthly, month_of},
  };
  for (auto& rule : rules) {
    int left = rule.n;
    bool have_last = false;
    int64_t last = 0;
    for (auto it = snaps.rbegin(); it != snaps.rend() && left > 0; ++it) {
      if ((*it)->level != kSnapshotLevel) continue;
      int64_t b = rule.bucket(ts[(*it)->key]);
      if (have_last && b == last) continue;
      keep.insert((*it)->key);
      have_last = true;
      last = b;
      left--;
    }
  }
  plan.base = *base;
  plan.have_base = true;

  // Old: what lies entirely at or before the base, but kept snapshots.
  std::set<std::string> gone;
  std::vector<ReplicaFile> old, fine;
  for (auto& f : files) {
    if (keep.count(f.key)) {
      if (f.level == kSnapshotLevel) plan.snapshots.push_back(f);
      continue;
    }
    if (f.level == kSnapshotLevel || f.max_txid <= base->max_txid) old.push_back(f);
  }
  // Fine: lower-level files inside an old covering compaction.
  if (o.compacted_retention_ms >= 0) {
    const int64_t cutoff = o.now_ms - o.compacted_retention_ms;
    std::vector<const ReplicaFile*> covers;
    for (auto& g : files)
      if (g.level >= 1 && g.level < kSnapshotLevel && g.max_txid > base->max_txid) covers.push_back(&g);
    for (auto& f : files) {
      if (f.level >= kSnapshotLevel - 1 || f.min_txid == 1 || f.max_txid <= base->max_txid || keep.count(f.key)) continue;
      for (auto* g : covers) {
        if (g->level <= f.level || g->min_txid > f.min_txid || g->max_txid < f.max_txid) continue;
        if (r.header(*g).timestamp >= cutoff) continue;
        fine.push_back(f);
        break;
      }
    }
    // Newest first: an interrupted run leaves a prefix of each covered run,
    // which still continues the chain.
    std::sort(fine.begin(), fine.end(), [](const ReplicaFile& a, const ReplicaFile& b) {
      return a.max_txid != b.max_txid ? a.max_txid > b.max_txid : a.level < b.level;
    });
  }
  for (auto& f : old) gone.insert(f.key);
  for (auto& f : fine) gone.insert(f.key);

  // Every TXID a kept restore point reaches must keep a plan.
  std::vector<const ReplicaFile*> all, left;
  for (auto& f : files) {
    all.push_back(&f);
    if (!gone.count(f.key)) left.push_back(&f);
  }
  std::set<uint64_t> before = reachable(all), after = reachable(left);
  for (auto* f : left) {
    if (f->max_txid < base->max_txid) continue;
    if (before.count(f->max_txid) && !after.count(f->max_txid))
      fail_integrity("retention would leave no restore plan for TXID " + hex16(f->max_txid) + " (" + f->name() +
                     "); nothing removed");
  }
  plan.remove = std::move(fine);
  plan.remove.insert(plan.remove.end(), old.begin(), old.end());
  return plan;
}

}  // namespace ltx
