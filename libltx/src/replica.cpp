// replica.cpp - Litestream v0.5 replica layout, restore planning, chain guard.
#include "ltx/replica.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>

#include "ltx/apply.h"
#include "ltx/bytes.h"
#include "ltx/error.h"

namespace ltx {

std::string ReplicaFile::name() const {
  return std::to_string(level) + "/" + format_filename(min_txid, max_txid);
}

bool parse_replica_name(const std::string& s, int* level, uint64_t* min_txid, uint64_t* max_txid) {
  size_t slash = s.find('/');
  if (slash != 1 || s[0] < '0' || s[0] > '9') return false;
  *level = s[0] - '0';
  return parse_filename(s.substr(2), min_txid, max_txid);
}

Replica::Replica(Store& store, const Location& loc) : store_(store), loc_(loc) {}

std::string Replica::level_prefix(int level) const {
  char b[16];
  if (loc_.scheme == Location::Scheme::S3) {
    std::snprintf(b, sizeof b, "%04x", level);
    return join_key(loc_.path, b) + "/";
  }
  return join_key(loc_.path, "ltx/" + std::to_string(level)) + "/";
}

std::string Replica::key(int level, uint64_t min_txid, uint64_t max_txid) const {
  return level_prefix(level) + format_filename(min_txid, max_txid);
}

std::string Replica::base_prefix() const {
  std::string base = loc_.scheme == Location::Scheme::S3 ? join_key(loc_.path, "") : join_key(loc_.path, "ltx");
  return base.empty() ? "" : base + "/";
}

std::vector<ReplicaFile> Replica::list(int level) {
  return scan(level >= 0 ? level_prefix(level) : base_prefix(), "", level);
}

std::vector<ReplicaFile> Replica::list_from(int level) {
  if (level <= 0) return list();
  std::string lower = level_prefix(level);
  lower.pop_back();  // "<base><level>": every key of a lower level sorts before it, of this level after
  return scan(base_prefix(), lower, -1);
}

std::vector<ReplicaFile> Replica::list_after(int level, uint64_t txid) {
  const std::string p = level_prefix(level);
  // "<p><txid+1>" sorts before every key starting at txid+1 and after every earlier one
  auto rest = scan(p, txid == UINT64_MAX ? p + "~" : p + hex16(txid + 1), level);
  if (txid == 0) return rest;  // the snapshots are in it
  std::vector<ReplicaFile> out = scan(p + hex16(1) + "-", "", level);
  for (auto& f : rest)
    if (f.min_txid != 1) out.push_back(f);
  return out;
}

std::vector<ReplicaFile> Replica::scan(const std::string& prefix, const std::string& start_after, int level) {
  std::vector<ReplicaFile> out;
  for (auto& o : store_.list(prefix, start_after)) {
    const size_t strip = level >= 0 ? level_prefix(level).size() : prefix.size();
    if (o.key.size() < strip) continue;
    std::string rest = o.key.substr(strip);  // [<level>/]<name>
    int lv = level;
    std::string name = rest;
    if (level < 0) {
      size_t slash = rest.find('/');
      if (slash == std::string::npos) continue;
      std::string ls = rest.substr(0, slash);
      name = rest.substr(slash + 1);
      bool s3 = loc_.scheme == Location::Scheme::S3;
      bool ok = false;
      for (int v = 0; v <= kMaxLevel && !ok; v++) {
        char b[8];
        std::snprintf(b, sizeof b, s3 ? "%04x" : "%d", v);
        if (ls == b) ok = true, lv = v;
      }
      if (!ok) continue;
    }
    ReplicaFile f;
    if (!parse_filename(name, &f.min_txid, &f.max_txid)) continue;
    f.level = lv;
    f.size = o.size;
    f.mtime_ms = o.mtime_ms;
    f.key = o.key;
    out.push_back(f);
  }
  std::sort(out.begin(), out.end(), [](const ReplicaFile& a, const ReplicaFile& b) {
    return a.level != b.level ? a.level < b.level : a.min_txid < b.min_txid;
  });
  return out;
}

Trailer Replica::trailer(const ReplicaFile& f) {
  auto it = trailers_.find(f.key);
  if (it != trailers_.end()) return it->second;
  std::string t = store_.get_tail(f.key, kTrailerSize);
  auto* p = reinterpret_cast<const uint8_t*>(t.data());
  Trailer tr{get64(p), get64(p + 8)};
  trailers_[f.key] = tr;
  return tr;
}

Header Replica::header(const ReplicaFile& f) {
  auto it = headers_.find(f.key);
  if (it != headers_.end()) return it->second;
  StringWriter w;
  store_.get(f.key, w, 0, kHeaderSize);
  if (w.s.size() != kHeaderSize) fail_integrity(f.key + ": shorter than an LTX header");
  // Read without --age-identity, an encrypted replica's bytes are age's:
  // a configuration error, not damage (and retrying cannot cure it).
  if (!store_.sealed() && w.s.compare(0, 19, "age-encryption.org/") == 0)
    fail_permanent(f.key + ": the replica is age-encrypted: give --age-identity (and --age-recipient to write to it)");
  Header h = with_context(f.key, [&] { return Header::unmarshal(reinterpret_cast<const uint8_t*>(w.s.data())); });
  with_context(f.key, [&] { check_name(f, h); });
  headers_[f.key] = h;
  return h;
}

// ---- restore planning ----

namespace {

std::string hx(uint64_t v) { return hex16(v); }

// Highest max_txid whose file header time <= t, over every level; 0 if none.
uint64_t txid_at_time(Replica& r, const std::vector<ReplicaFile>& files, int64_t t) {
  uint64_t best = 0;
  for (int lv = 0; lv <= kMaxLevel; lv++) {
    std::vector<const ReplicaFile*> fs;
    for (auto& f : files)
      if (f.level == lv) fs.push_back(&f);
    // Times grow with TXID within a level: last index with time <= t.
    size_t lo = 0, hi = fs.size();
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (r.header(*fs[mid]).timestamp <= t) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0) best = std::max(best, fs[lo - 1]->max_txid);
  }
  return best;
}

}  // namespace

// BFS over TXID positions from `from`: via[pos] is the file that first
// reached pos (fewest files; on ties the higher level wins), via[from] null.
static std::map<uint64_t, const ReplicaFile*> reach_from(
    const std::multimap<uint64_t, const ReplicaFile*>& by_min, uint64_t from) {
  std::map<uint64_t, const ReplicaFile*> via;
  std::deque<uint64_t> q{from};
  via[from] = nullptr;
  while (!q.empty()) {
    uint64_t pos = q.front();
    q.pop_front();
    auto range = by_min.equal_range(pos + 1);
    std::vector<const ReplicaFile*> next;
    for (auto it = range.first; it != range.second; ++it) next.push_back(it->second);
    std::sort(next.begin(), next.end(), [](const ReplicaFile* a, const ReplicaFile* b) {
      return a->max_txid != b->max_txid ? a->max_txid > b->max_txid : a->level > b->level;
    });
    for (auto* f : next) {
      if (via.count(f->max_txid)) continue;
      via[f->max_txid] = f;
      q.push_back(f->max_txid);
    }
  }
  return via;
}

RestorePlan plan_restore(Replica& r, const std::vector<ReplicaFile>& files, const RestoreTarget& t) {
  if (files.empty()) fail_integrity("no replica files");
  uint64_t target = 0;
  if (t.has_txid) {
    target = t.txid;
  } else if (t.has_time) {
    target = txid_at_time(r, files, t.time_ms);
    if (target == 0) fail_integrity("no file at or before " + format_timestamp(t.time_ms));
  } else {
    for (auto& f : files) target = std::max(target, f.max_txid);
  }
  // Edges: files (levels 0..8, MinTXID > 1) by MinTXID, higher levels first.
  std::multimap<uint64_t, const ReplicaFile*> by_min;
  std::vector<const ReplicaFile*> snaps;
  for (auto& f : files) {
    if (f.max_txid > target || f.max_txid < f.min_txid) continue;
    if (f.min_txid == 1) snaps.push_back(&f);
    else if (f.level < kSnapshotLevel) by_min.emplace(f.min_txid, &f);
  }
  if (snaps.empty()) fail_integrity("no snapshot at or before TXID " + hx(target));
  std::sort(snaps.begin(), snaps.end(), [](const ReplicaFile* a, const ReplicaFile* b) {
    return a->max_txid != b->max_txid ? a->max_txid > b->max_txid : a->level > b->level;
  });
  uint64_t first_reach = 0;
  for (size_t si = 0; si < snaps.size(); si++) {
    const ReplicaFile* s = snaps[si];
    auto via = reach_from(by_min, s->max_txid);
    uint64_t reach = s->max_txid;
    if (via.count(target)) {
      RestorePlan plan;
      plan.txid = target;
      for (uint64_t pos = target; via[pos]; pos = via[pos]->min_txid - 1) plan.files.push_back(*via[pos]);
      plan.files.push_back(*s);
      std::reverse(plan.files.begin(), plan.files.end());
      return plan;
    }
    for (auto& kv : via) reach = std::max(reach, kv.first);
    if (si == 0) first_reach = reach;
  }
  fail_integrity("gap after TXID " + hx(first_reach) + ": no file starts at TXID " + hx(first_reach + 1) +
                 " (restoring to TXID " + hx(target) + " from snapshot " + snaps[0]->name() + ")");
}

std::vector<ReplicaFile> plan_bridge(const std::vector<ReplicaFile>& files, uint64_t from) {
  std::multimap<uint64_t, const ReplicaFile*> by_min;
  for (auto& f : files)
    if (f.level < kSnapshotLevel && f.min_txid > 1 && f.max_txid >= f.min_txid && f.max_txid > from)
      by_min.emplace(f.min_txid, &f);
  auto via = reach_from(by_min, from);
  std::vector<ReplicaFile> out;
  for (uint64_t pos = via.rbegin()->first; via[pos]; pos = via[pos]->min_txid - 1) out.push_back(*via[pos]);
  std::reverse(out.begin(), out.end());
  return out;
}

// ---- chain guard ----

ChainGuard::ChainGuard(Replica& r, int level) : r_(r), level_(level) {}

void ChainGuard::load() {
  if (loaded_) return;
  files_ = r_.list();
  loaded_ = true;
  assumed_ = false;
}

uint64_t ChainGuard::post_apply_of(const ReplicaFile& f) {
  auto it = local_.find(f.key);
  if (it != local_.end()) return it->second.post_apply;
  return r_.trailer(f).post_apply;
}

void ChainGuard::assume_latest(uint64_t txid, uint64_t post_apply) {
  if (loaded_ || level_ != 0 || txid == 0) return;
  assumed_ = true;
  assumed_txid_ = txid;
  assumed_post_ = post_apply;
}

ChainGuard::Action ChainGuard::check(const Header& h, const Trailer& t) {
  if (!loaded_ && assumed_ && !h.snapshot() && h.min_txid == assumed_txid_ + 1 &&
      (h.no_checksum() || assumed_post_ == 0 || h.pre_apply == assumed_post_))
    return Action::Upload;
  load();
  std::string name = format_filename(h.min_txid, h.max_txid);
  std::string key = r_.key(level_, h.min_txid, h.max_txid);
  auto refuse = [&](const std::string& why) -> Action {
    fail_integrity("refusing " + std::to_string(level_) + "/" + name + ": " + why);
  };
  // A refusal that rests on a remote file's checksums (or its presence)
  // first reads that file's header: garbage from an encrypted replica read
  // without the key, or a wrong key, is named as such, not as another
  // database.
  auto refuse_vs = [&](const ReplicaFile& f, const std::string& why) -> Action {
    r_.header(f);
    return refuse(why);
  };
  for (auto& f : files_) {
    if (f.key != key) continue;
    auto it = local_.find(key);
    Trailer rt = it != local_.end() ? it->second : r_.trailer(f);
    if (rt.post_apply == t.post_apply && rt.file_checksum == t.file_checksum) return Action::Skip;
    return refuse_vs(f, "the remote already holds a different file with this name (another database writes this prefix?)");
  }
  auto sums_differ = [&](uint64_t remote_post) {
    return !h.no_checksum() && remote_post != 0 && h.pre_apply != remote_post;
  };
  // Latest file (highest MaxTXID) among `pool`.
  auto latest = [&](bool this_level_only) -> const ReplicaFile* {
    const ReplicaFile* best = nullptr;
    for (auto& f : files_) {
      if (this_level_only ? f.level != level_ : f.level == kSnapshotLevel && level_ != 0) continue;
      if (!best || f.max_txid > best->max_txid || (f.max_txid == best->max_txid && f.level < best->level)) best = &f;
    }
    return best;
  };
  auto ending_at = [&](uint64_t txid) -> const ReplicaFile* {
    for (auto& f : files_)
      if (f.max_txid == txid) return &f;
    return nullptr;
  };

  if (level_ == kSnapshotLevel) {
    if (!h.snapshot()) return refuse("level 9 holds snapshots only (MinTXID 1)");
    const ReplicaFile* e = ending_at(h.max_txid);
    if (e && !h.no_checksum()) {
      uint64_t p = post_apply_of(*e);
      if (p != 0 && t.post_apply != 0 && p != t.post_apply)
        return refuse_vs(*e, "post-apply checksum " + hx(t.post_apply) + " differs from " + e->name() + "'s " + hx(p) +
                      " (a different database?)");
    }
    return Action::Upload;
  }
  const ReplicaFile* last = latest(level_ != 0);
  if (!last) {
    if (level_ == 0 && !h.snapshot())
      return refuse("the replica is empty and the stream does not start with a snapshot (MinTXID 1)");
    if (level_ == 0 || h.snapshot()) return Action::Upload;
    const ReplicaFile* e = ending_at(h.min_txid - 1);
    if (!e) return refuse("no remote file ends at TXID " + hx(h.min_txid - 1));
    uint64_t p = post_apply_of(*e);
    if (sums_differ(p))
      return refuse_vs(*e, "pre-apply checksum " + hx(h.pre_apply) + " does not match " + e->name() + "'s post-apply " + hx(p));
    return Action::Upload;
  }
  if (h.min_txid == last->max_txid + 1) {
    uint64_t p = post_apply_of(*last);
    if (sums_differ(p))
      return refuse_vs(*last, "pre-apply checksum " + hx(h.pre_apply) + " does not match the remote latest " + last->name() +
                    " post-apply " + hx(p) + " (another database writes this prefix?)");
    return Action::Upload;
  }
  if (level_ == 0 && h.snapshot() && h.max_txid > last->max_txid) {
    r_.header(*last);  // a snapshot over a replica these keys read (no plain file in an encrypted one)
    return Action::Upload;
  }
  if (h.max_txid <= last->max_txid)
    return refuse_vs(*last, "the remote is already at TXID " + hx(last->max_txid) + " (" + last->name() +
                  "); another database writes this prefix, or restore first and continue its TXIDs");
  return refuse("gap: the remote latest is TXID " + hx(last->max_txid) + " (" + last->name() +
                "), the stream starts at TXID " + hx(h.min_txid));
}

void ChainGuard::uploaded(const Header& h, const Trailer& t, uint64_t size) {
  if (!loaded_ && assumed_) {  // still continuing the assumed latest
    assumed_txid_ = h.max_txid;
    assumed_post_ = t.post_apply;
    local_[r_.key(level_, h.min_txid, h.max_txid)] = t;
    return;
  }
  load();
  ReplicaFile f;
  f.level = level_;
  f.min_txid = h.min_txid;
  f.max_txid = h.max_txid;
  f.size = size;
  f.mtime_ms = h.timestamp;
  f.key = r_.key(level_, h.min_txid, h.max_txid);
  local_[f.key] = t;
  for (auto& g : files_)
    if (g.key == f.key) return;
  files_.push_back(f);
}

// ---- plan check ----

void check_name(const ReplicaFile& f, const Header& h) {
  if (h.min_txid != f.min_txid || h.max_txid != f.max_txid)
    fail_integrity("header TXIDs " + hex16(h.min_txid) + "-" + hex16(h.max_txid) + " do not match the name");
}

void PlanCheckWriter::begin(const ReplicaFile& f) {
  cur_ = f;
  head_.clear();
  seen_ = 0;
}

void PlanCheckWriter::write(const void* p, size_t n) {
  auto* b = static_cast<const uint8_t*>(p);
  size_t off = 0;
  if (head_.size() < kHeaderSize) {
    size_t k = std::min(n, size_t(kHeaderSize) - head_.size());
    head_.append(reinterpret_cast<const char*>(b), k);
    off = k;
    if (head_.size() < kHeaderSize) {
      seen_ += n;
      return;
    }
    Header h = with_context(cur_.key, [&] { return Header::unmarshal(reinterpret_cast<const uint8_t*>(head_.data())); });
    with_context(cur_.key, [&] { check_name(cur_, h); });
    if (have_prev_ && !h.snapshot()) {
      if (h.min_txid != prev_max_ + 1)
        fail_integrity(cur_.key + ": TXID gap after " + hex16(prev_max_));
      if (!h.no_checksum() && prev_post_ != 0 && h.pre_apply != prev_post_)
        fail_integrity(cur_.key + ": pre-apply checksum " + hex16(h.pre_apply) +
                       " does not match the previous file's post-apply " + hex16(prev_post_));
    }
    out_.write(head_.data(), head_.size());
  }
  if (n > off) out_.write(b + off, n - off);
  // keep the last 16 bytes
  for (size_t i = (n > 16 ? n - 16 : 0); i < n; i++) {
    std::memmove(tail_, tail_ + 1, 15);
    tail_[15] = b[i];
  }
  seen_ += n;
}

void PlanCheckWriter::end() {
  if (seen_ < kHeaderSize + kTrailerSize) fail_integrity(cur_.key + ": truncated object");
  prev_post_ = get64(tail_);
  prev_max_ = cur_.max_txid;
  have_prev_ = true;
}

// ---- spool ----

Spool::Spool(size_t mem_limit, const std::string& tmpdir) : limit_(mem_limit), tmpdir_(tmpdir) {
  if (tmpdir_.empty()) tmpdir_ = "/tmp";
}

Spool::~Spool() {
  if (fd_ >= 0) ::close(fd_);
}

void Spool::clear() {
  mem_.clear();
  size_ = 0;
  if (fd_ >= 0 && ::ftruncate(fd_, 0) != 0) fail_errno("spool: truncate");
}

void Spool::write(const void* p, size_t n) {
  if (fd_ < 0 && mem_.size() + n <= limit_) {
    mem_.append(static_cast<const char*>(p), n);
    size_ += n;
    return;
  }
  if (fd_ < 0) {
    fd_ = ::open(tmpdir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      std::string tmpl = tmpdir_ + "/s3-put-spool-XXXXXX";
      fd_ = ::mkstemp(&tmpl[0]);
      if (fd_ < 0) fail_errno("spool: create temp file in " + tmpdir_);
      ::unlink(tmpl.c_str());
    }
  }
  if (!mem_.empty() && size_ == mem_.size()) {
    pwrite_all(fd_, mem_.data(), mem_.size(), 0);
    mem_.clear();
    mem_.shrink_to_fit();
  }
  pwrite_all(fd_, p, n, size_);
  size_ += n;
}


std::unique_ptr<Reader> Spool::reader() { return reader(0, size_); }

std::unique_ptr<Reader> Spool::reader(uint64_t off, uint64_t len) {
  if (off > size_ || len > size_ - off) fail_runtime("spool: range past the end");
  if (fd_ < 0) return std::make_unique<MemReader>(mem_.data() + off, len);
  return std::make_unique<RegionReader>(fd_, off, off + len);
}

}  // namespace ltx

// ---- verify ----

#include <thread>
#include <exception>
#include <set>

namespace ltx {

namespace {
// Runs fn on a Reader of the object as it arrives: a thread feeds a pipe,
// so memory stays at a few buffers for any size.
void with_object(Store& s, const std::string& key, const std::function<void(Reader&)>& fn) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail_errno("pipe");
  std::exception_ptr err;
  std::thread feeder([&] {
    try {
      FdWriter w(fds[1]);
      s.get(key, w);
      w.flush();
    } catch (...) {
      err = std::current_exception();
    }
    ::close(fds[1]);
  });
  std::exception_ptr derr;
  try {
    FdReader fr(fds[0]);
    BufReader br(fr);
    fn(br);
  } catch (...) {
    derr = std::current_exception();
  }
  ::close(fds[0]);  // a feeder still writing gets EPIPE and stops
  feeder.join();
  if (err) {
    try {
      std::rethrow_exception(err);
    } catch (const Error& e) {
      if (!derr || e.kind() != Kind::Runtime || std::string(e.what()).find("write") == std::string::npos) throw;
    }
  }
  if (derr) std::rethrow_exception(derr);
}
}  // namespace

Trailer verify_object(Store& s, const std::string& key, Header* h) {
  Trailer t;
  with_object(s, key, [&](Reader& br) {
    t = verify_stream(br, h);
    char c;
    if (br.read(&c, 1) != 0) fail_integrity("trailing bytes after the trailer");
  });
  return t;
}

namespace {
struct Info {
  const ReplicaFile* f;
  Header h;
  Trailer t;
};

// Replays the chain in a temporary database (Applier: every pre- and
// post-apply checksum is checked against the pages actually applied) and
// returns the TXIDs proven restorable. From each snapshot not yet walked,
// the walk applies at each TXID T the finest file starting at T+1 and
// keeps it; every other file starting there is applied on trial and rolled
// back. A file that fails joins `broken` with a defect line.
std::set<uint64_t> replay_chain(Replica& r, const std::vector<Info>& good, std::set<const ReplicaFile*>& broken,
                                const VerifyOptions& o, std::vector<std::string>& defects) {
  std::set<uint64_t> reach, visited;
  std::multimap<uint64_t, const Info*> by_min;
  std::vector<const Info*> snaps;
  for (auto& i : good) {
    if (broken.count(i.f)) continue;
    if (i.h.snapshot()) snaps.push_back(&i);
    else by_min.emplace(i.f->min_txid, &i);
  }
  if (snaps.empty()) return reach;
  std::sort(snaps.begin(), snaps.end(), [](const Info* a, const Info* b) {
    return a->f->max_txid != b->f->max_txid ? a->f->max_txid < b->f->max_txid : a->f->level > b->f->level;
  });
  const std::string tmpdir = o.tmpdir.empty() ? "/tmp" : o.tmpdir;
  Applier a(tmpdir + "/s3-verify-replay-" + std::to_string(::getpid()) + ".db");
  std::set<const Info*> tried;
  auto apply = [&](const Info& i) {
    if (o.on_replay) o.on_replay(*i.f);
    tried.insert(&i);
    try {
      with_object(r.store(), i.f->key, [&](Reader& in) { a.apply_file(in); });
      return true;
    } catch (const Error& e) {
      if (e.kind() != Kind::Integrity) throw;
      defects.push_back("replay: " + i.f->name() + ": " + e.what());
      broken.insert(i.f);
      return false;
    }
  };
  for (const Info* s : snaps) {
    uint64_t t = s->f->max_txid;
    if (visited.count(t) || !apply(*s)) continue;
    reach.insert(t);
    while (visited.insert(t).second) {
      std::vector<const Info*> c;
      auto range = by_min.equal_range(t + 1);
      for (auto it = range.first; it != range.second; ++it)
        if (!tried.count(it->second)) c.push_back(it->second);
      if (c.empty()) break;
      std::sort(c.begin(), c.end(), [](const Info* x, const Info* y) {
        return x->f->max_txid != y->f->max_txid ? x->f->max_txid < y->f->max_txid : x->f->level < y->f->level;
      });
      const Info* next = nullptr;
      const Info* fallback = nullptr;  // the finest of the others that applied
      for (size_t k = c.size(); k-- > 1;) {
        a.begin_trial(tmpdir);
        bool ok = apply(*c[k]);
        a.rollback();
        if (ok) reach.insert(c[k]->f->max_txid), fallback = c[k];
      }
      a.begin_trial(tmpdir);
      if (apply(*c[0])) {
        a.end_trial();
        next = c[0];
      } else {
        a.rollback();
        if (fallback) {
          a.begin_trial(tmpdir);
          if (apply(*fallback)) a.end_trial(), next = fallback;
          else a.rollback();
        }
      }
      if (!next) break;
      t = next->f->max_txid;
      reach.insert(t);
    }
  }
  // A file that starts where only a trial reached: never applied, so not
  // proven (the walk holds one database at a time).
  for (auto& kv : by_min) {
    const Info* i = kv.second;
    if (tried.count(i) || broken.count(i->f) || !reach.count(i->f->min_txid - 1) || visited.count(i->f->min_txid - 1))
      continue;
    defects.push_back("unproven: " + i->f->name() + ": the replay did not hold the database at TXID " +
                      hex16(i->f->min_txid - 1) + ", so it was not applied");
    broken.insert(i->f);
  }
  return reach;
}
}  // namespace

ReplicaReport verify_replica(Replica& r, const std::function<void(const ReplicaFile&)>& on_file,
                             const VerifyOptions& opt) {
  ReplicaReport rep;
  auto files = r.list();
  std::vector<Info> good;
  for (auto& f : files) {
    rep.files++;
    rep.bytes += f.size;
    rep.per_level[f.level]++;
    rep.latest = std::max(rep.latest, f.max_txid);
    if (on_file) on_file(f);
    Info in{&f, {}, {}};
    try {
      in.t = verify_object(r.store(), f.key, &in.h);
      check_name(f, in.h);
      if (f.level == kSnapshotLevel && !in.h.snapshot()) fail_integrity("level 9 holds snapshots only, MinTXID is not 1");
    } catch (const Error& e) {
      if (e.kind() != Kind::Integrity) throw;  // network etc.: not a verdict on the replica
      rep.defects.push_back("corrupt: " + f.name() + ": " + e.what());
      rep.bad_files++;
      continue;
    }
    good.push_back(in);
  }
  auto has_sum = [](const Info& i) { return !i.h.no_checksum() && i.t.post_apply != 0; };
  // post-apply agreement per TXID; the first checksummed file ending there is the reference
  std::map<uint64_t, const Info*> ends;
  for (auto& i : good) {
    if (!has_sum(i)) continue;
    auto it = ends.find(i.f->max_txid);
    if (it == ends.end()) {
      ends[i.f->max_txid] = &i;
    } else if (it->second->t.post_apply != i.t.post_apply) {
      rep.defects.push_back("checksum: " + i.f->name() + ": post-apply checksum " + hex16(i.t.post_apply) +
                            " differs from " + it->second->f->name() + "'s " + hex16(it->second->t.post_apply) +
                            " at TXID " + hex16(i.f->max_txid));
    }
  }
  std::set<const ReplicaFile*> broken;  // pre-apply mismatch: no restore may use it
  for (auto& i : good) {
    if (i.h.snapshot() || i.h.no_checksum() || i.h.pre_apply == 0) continue;
    auto it = ends.find(i.f->min_txid - 1);
    if (it != ends.end() && it->second->t.post_apply != i.h.pre_apply) {
      rep.defects.push_back("checksum: " + i.f->name() + ": pre-apply checksum " + hex16(i.h.pre_apply) +
                            " does not match the post-apply " + hex16(it->second->t.post_apply) + " of " +
                            it->second->f->name() + " (TXID " + hex16(i.f->min_txid - 1) + ")");
      broken.insert(i.f);
    }
  }
  // gaps: TXIDs in 1..latest that no good file covers
  std::vector<std::pair<uint64_t, uint64_t>> cov;
  for (auto& i : good) cov.emplace_back(i.f->min_txid, i.f->max_txid);
  std::sort(cov.begin(), cov.end());
  uint64_t covered = 0, first_gap = 0;
  auto gap = [&](uint64_t a, uint64_t b) {
    rep.gaps++;
    if (!first_gap) first_gap = a;
    rep.defects.push_back("gap: TXIDs " + hex16(a) + "-" + hex16(b) + ": no file holds them (restores cannot pass TXID " +
                          hex16(a - 1) + ")");
  };
  for (auto& c : cov) {
    if (c.first > covered + 1) gap(covered + 1, c.first - 1);
    covered = std::max(covered, c.second);
  }
  if (covered < rep.latest) gap(covered + 1, rep.latest);
  // reachability from every snapshot: proven by replaying, or by the
  // checksums in the files' headers and trailers only
  std::multimap<uint64_t, const Info*> by_min;
  std::set<uint64_t> reach;
  std::deque<uint64_t> q;
  if (opt.replay) reach = replay_chain(r, good, broken, opt, rep.defects);
  rep.replayed = opt.replay;
  for (auto& i : good) {
    if (broken.count(i.f)) continue;
    if (i.h.snapshot()) {
      if (!opt.replay && reach.insert(i.f->max_txid).second) q.push_back(i.f->max_txid);
    } else {
      by_min.emplace(i.f->min_txid, &i);
    }
  }
  while (!q.empty()) {
    uint64_t p = q.front();
    q.pop_front();
    auto range = by_min.equal_range(p + 1);
    for (auto it = range.first; it != range.second; ++it)
      if (reach.insert(it->second->f->max_txid).second) q.push_back(it->second->f->max_txid);
  }
  size_t beyond = 0;
  for (auto& i : good) {
    if (i.h.snapshot() || broken.count(i.f) || reach.count(i.f->min_txid - 1)) continue;
    if (first_gap && i.f->min_txid > first_gap) {
      beyond++;
      continue;
    }
    rep.orphans++;
    rep.defects.push_back("orphan: " + i.f->name() + ": no restore reaches TXID " + hex16(i.f->min_txid - 1) +
                          ", so nothing can use it");
  }
  if (beyond)
    rep.defects.push_back("unreachable: " + std::to_string(beyond) + " files after the gap at TXID " + hex16(first_gap));
  if (!reach.empty()) {
    rep.restore_min = *reach.begin();
    rep.restore_max = *reach.rbegin();
    rep.restore_points = reach.size();
    if (rep.restore_max < rep.latest && !rep.gaps)
      rep.defects.push_back("gap: restores reach TXID " + hex16(rep.restore_max) + ", not the latest " + hex16(rep.latest));
  } else if (rep.files) {
    rep.defects.push_back("no snapshot: nothing is restorable");
  }
  if (!rep.files) rep.defects.push_back("no replica files");
  return rep;
}

}  // namespace ltx
