// lease.cpp - one writer per replica (see ltx/lease.h).
//
// Why two writers never fork the chain (stores with conditional writes).
//
// Writers. Each writer W holds the lease at some epoch e (it wrote the
// lease, getting ETag E) and stores data files one at a time: PUT F with
// If-None-Match (it never replaces a file), then reads the lease's ETag
// (check), then acknowledges F. A takeover by T is: LIST1 (L = the highest
// TXID listed), CAS of the lease from the ETag T read to a record of epoch
// e+1 saying "the chain switched at L", LIST2, removal of every file with
// MaxTXID > L, then T continues the chain from TXID L.
//
// Claim: after the takeover, the files of TXIDs <= L are W's chain and
// every file T or a later writer builds on above L is theirs; a file W
// stores above L does not stay beside them (except as in "Residue").
//
// 1. If W's check after PUT F sees E, no CAS happened before the check, so
//    the PUT preceded T's CAS and hence T's LIST2 (S3 is strongly
//    consistent for LIST after PUT; file:// trivially). LIST2 sees F: T
//    keeps it if F.max <= L (T continues after it) or removes it if
//    F.max > L. So T never builds beside an acknowledged file of W.
// 2. If W's check sees another ETag, the first takeover after e recorded
//    L'. W removes F when F.min > L' and does not acknowledge; it stops.
//    A file F with F.min <= L' was listed by LIST1 of that takeover: W is
//    the only writer of epoch e, its files are consecutive, and the listed
//    maximum L' is the end of W's newest listed file, so W's next file
//    starts at L'+1. Hence F.max <= L' and the new writer continues from
//    it (W must not remove it). A file with F.min > L' is either removed by
//    the new writer (LIST2 saw it) or stored after LIST2 and then removed
//    by W here; the new writer never built on it (it continues from L').
// 3. A PUT of F whose key exists is refused by the store (412 / EEXIST):
//    W stores nothing and stops (Lease::fenced), unless the object is
//    byte-for-byte its own (a retried PUT whose first attempt was stored).
// 4. The lease itself only changes by CAS (If-Match of the ETag read), so
//    two takeovers cannot both succeed from one state; the loser re-reads
//    and finds the lease held.
//
// Residue. A writer killed between its PUT and its check leaves its file
// F (F.min > L') until someone removes it: s3-verify names it, s3-rm
// removes it. On a store without conditional writes (--unfenced) the
// check still detects a takeover after the fact, but nothing prevents the
// old writer's PUT from replacing a file of the same key that the new
// writer stored: s3-put(1), FENCING.
#include "ltx/lease.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>
#include <sstream>

#include "ltx/bytes.h"
#include "ltx/encode.h"
#include "ltx/error.h"
#include "ltx/io.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"

namespace ltx {

namespace {

// A small file (ids, caches), at most 4 KiB; "" and *exists=false if missing.
std::string read_small(const std::string& path, bool* exists) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  *exists = fd >= 0;
  if (fd < 0) {
    if (errno == ENOENT) return "";
    fail_errno("open " + path);
  }
  std::string s(4096, '\0');
  size_t n = pread_full(fd, &s[0], s.size(), 0);
  ::close(fd);
  s.resize(n);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

void write_small(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  write_all(f.fd(), text.data(), text.size());
  f.commit();
}

std::string hostname() {
  char b[256] = "";
  if (::gethostname(b, sizeof b - 1) != 0) return "unknown";
  return b;
}

bool token_ok(const std::string& s) {
  return !s.empty() && s.size() <= 256 &&
         std::none_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) <= ' '; });
}

}  // namespace

std::string LeaseRecord::format() const {
  std::ostringstream o;
  o << "walsync-lease 1\nepoch " << epoch << "\nwriter " << writer << "\nhost " << host << "\npid " << pid
    << "\nstart " << format_timestamp(start_ms) << "\n";
  for (auto& t : history)
    o << "takeover " << t.epoch << " " << hex16(t.txid) << " " << format_timestamp(t.at_ms) << " " << t.host << " "
      << t.writer << "\n";
  return o.str();
}

bool LeaseRecord::parse(const std::string& text, LeaseRecord* out) {
  if (text.size() > 64 * 1024) return false;
  std::istringstream in(text);
  std::string line;
  LeaseRecord r;
  int seen = 0;
  bool magic = false;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string k;
    f >> k;
    if (k.empty()) continue;
    try {
      if (k == "walsync-lease") {
        std::string v;
        f >> v;
        if (v != "1") return false;
        magic = true;
      } else if (k == "epoch") {
        std::string v;
        f >> v;
        r.epoch = std::stoull(v);
        seen |= 1;
      } else if (k == "writer") {
        f >> r.writer;
        if (!token_ok(r.writer)) return false;
        seen |= 2;
      } else if (k == "host") {
        f >> r.host;
        if (!token_ok(r.host)) return false;
        seen |= 4;
      } else if (k == "pid") {
        std::string v;
        f >> v;
        r.pid = std::stoll(v);
        seen |= 8;
      } else if (k == "start") {
        std::string v;
        f >> v;
        if (!parse_timestamp(v, &r.start_ms)) return false;
        seen |= 16;
      } else if (k == "takeover") {
        Takeover t;
        std::string e, tx, at;
        f >> e >> tx >> at >> t.host >> t.writer;
        t.epoch = std::stoull(e);
        if (!parse_hex16(tx, &t.txid) || !parse_timestamp(at, &t.at_ms) || !token_ok(t.host) || !token_ok(t.writer))
          return false;
        if (r.history.size() >= 64) return false;
        r.history.push_back(t);
      }  // unknown keys: a later version's
    } catch (const std::exception&) {
      return false;
    }
  }
  if (!magic || seen != 31) return false;
  *out = r;
  return true;
}

std::string LeaseRecord::holder() const {
  return host + " (pid " + std::to_string(pid) + ", since " + format_timestamp(start_ms) + ")";
}

const LeaseRecord::Takeover* LeaseRecord::ended(uint64_t e) const {
  for (auto& t : history)
    if (t.epoch > e) return &t;
  return nullptr;
}

std::string file_identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail_errno("stat " + path);
  char b[64];
  std::snprintf(b, sizeof b, "%llx-%llx", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
  return b;
}

std::string writer_identity(const std::string& id_file, const std::string& extra) {
  bool exists;
  std::string id = read_small(id_file, &exists);
  if (!exists || id.size() != 32 || id.find_first_not_of("0123456789abcdef") != std::string::npos) {
    std::random_device rd;
    char b[40];
    std::snprintf(b, sizeof b, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
    id = b;
    write_small(id_file, id + "\n");
  }
  std::string w = id + "-" + file_identity(id_file);
  if (!extra.empty()) w += "-" + extra;
  return w;
}

Lease::Lease(Store& store, const Location& loc, const LeaseOptions& o) : s_(&store), loc_(loc), o_(o) {
  key_ = join_key(loc.path, "lease");
}

std::string Lease::url() const { return loc_.url; }

// The lease and its ETag, read as one version: HEAD, GET, HEAD until the
// two HEADs agree. False if there is none.
bool Lease::read(LeaseRecord* rec, std::string* etag) {
  for (int i = 0; i < 10; i++) {
    ObjectInfo a, b;
    if (!s_->head(key_, &a)) return false;
    StringWriter w;
    try {
      s_->get(key_, w, 0, 64 * 1024);
    } catch (const Error& e) {
      if (std::string(e.what()).find("NoSuchKey") != std::string::npos) continue;
      throw;
    }
    if (!s_->head(key_, &b)) continue;
    if (a.etag != b.etag || a.etag.empty()) continue;
    if (!LeaseRecord::parse(w.s, rec)) fail_integrity(url() + ": " + key_ + " is not a walsync lease");
    *etag = a.etag;
    return true;
  }
  fail_runtime(url() + ": " + key_ + " keeps changing");
}

// Conditional writes honoured? PUT If-None-Match of a probe object twice:
// the second must be refused (a server that ignores the header stores it).
bool Lease::probe() {
  if (loc_.scheme == Location::Scheme::File) return true;
  std::string cached;
  bool have = false;
  if (!o_.probe_cache.empty()) cached = read_small(o_.probe_cache, &have);
  if (have && cached == url() + " conditional") return true;
  if (have && cached == url() + " unconditional") return false;
  std::string body = "walsync: probe of conditional writes\n";
  PutIf absent;
  absent.absent = true;
  bool ok = false;
  for (int i = 0; i < 2; i++) {
    MemReader r(body.data(), body.size());
    PutResult res = s_->put_if(key_ + "-probe", r, {}, absent);
    if (res == PutResult::Unsupported) break;
    if (res == PutResult::Refused) {
      ok = true;
      break;
    }
  }
  if (!o_.probe_cache.empty()) write_small(o_.probe_cache, url() + (ok ? " conditional\n" : " unconditional\n"));
  return ok;
}

void Lease::unsupported() {
  if (!o_.unfenced)
    fail_permanent(url() + ": the store does not support conditional writes (If-None-Match on PUT), so it "
                   "cannot keep a second writer out; refusing (--unfenced to write anyway)");
  conditional_ = false;
  if (o_.warn)
    o_.warn(url() + ": the store does not support conditional writes: writing unfenced (a takeover is "
            "noticed after each write; a same-key overwrite by another writer is not prevented)");
}

void Lease::acquire() {
  // Told to write unfenced: no probe (a store that has conditional writes
  // is written without them too).
  if (o_.unfenced && loc_.scheme == Location::Scheme::S3) unsupported();
  else if (!o_.writer.empty() && !probe()) unsupported();
  for (int attempt = 0; attempt < 20; attempt++) {
    LeaseRecord cur;
    std::string etag;
    bool exists = read(&cur, &etag);
    if (o_.writer.empty()) {  // anonymous: holds nothing, but keeps off a held replica
      if (exists)
        fail_integrity(url() + ": the replica's lease is held by " + cur.holder() +
                       "; stop that writer, or give --ack and --takeover to take over");
      return;
    }
    LeaseRecord mine;
    mine.writer = o_.writer;
    mine.host = hostname();
    mine.pid = ::getpid();
    mine.start_ms = now_ms();
    PutIf c;
    uint64_t switch_txid = 0;
    bool takeover = false;
    if (!exists) {
      mine.epoch = 1;
      c.absent = true;
    } else if (cur.writer == mine.writer && cur.host == mine.host) {
      mine.epoch = cur.epoch;  // the same writer, restarted
      mine.history = cur.history;
      c.match = etag;
    } else if (!o_.takeover) {
      fail_integrity(url() + ": the replica's lease is held by " + cur.holder() +
                     "; stop that writer, or take over with --takeover");
    } else {
      Replica rep(*s_, loc_);
      for (auto& f : rep.list()) switch_txid = std::max(switch_txid, f.max_txid);
      mine.epoch = cur.epoch + 1;
      mine.history = cur.history;
      mine.history.push_back({mine.epoch, switch_txid, mine.start_ms, mine.host, mine.writer});
      if (mine.history.size() > kLeaseHistory) mine.history.erase(mine.history.begin());
      c.match = etag;
      takeover = true;
    }
    std::string text = mine.format();
    MemReader body(text.data(), text.size());
    PutResult res;
    if (conditional_) {
      res = s_->put_if(key_, body, {}, c);
      if (res == PutResult::Unsupported)
        fail_permanent(url() + ": " + key_ + ": the store refused a conditional write it accepted in the probe");
    } else {  // unfenced: compare, then write (a race stays possible)
      LeaseRecord now;
      std::string e2;
      bool ex2 = read(&now, &e2);
      if (ex2 != exists || (ex2 && e2 != etag)) continue;
      s_->put(key_, body, {});
      res = PutResult::Stored;
    }
    if (res != PutResult::Stored) continue;  // someone else wrote it first: look again
    LeaseRecord back;
    if (!read(&back, &etag_) || back.format() != text) {
      etag_.clear();  // replaced at once by another writer: look again
      continue;
    }
    epoch_ = mine.epoch;
    if (takeover) {
      took_over_ = true;
      takeover_txid_ = switch_txid;
      // Files above the switch point: the old writer's, stored around the
      // takeover; it removes them too when it notices (see the top).
      Replica rep(*s_, loc_);
      std::vector<std::string> gone;
      for (auto& f : rep.list())
        if (f.max_txid > switch_txid) gone.push_back(f.key);
      s_->remove(gone);
    }
    return;
  }
  fail_runtime(url() + ": " + key_ + ": could not take the lease (it kept changing)");
}

void Lease::check(const std::string& key, uint64_t min_txid) {
  if (etag_.empty()) return;
  ObjectInfo info;
  if (s_->head(key_, &info) && info.etag == etag_) return;
  lost(key, min_txid);
}

bool Lease::still_held() {
  ObjectInfo info;
  return etag_.empty() || (s_->head(key_, &info) && info.etag == etag_);
}

void Lease::lost(const std::string& key, uint64_t min_txid) {
  LeaseRecord cur;
  std::string etag;
  std::string obj = key.empty() ? std::string() : ": " + key;
  if (!read(&cur, &etag)) fail_integrity(url() + ": the lease " + key_ + " was removed" + obj + " not acknowledged, stopping");
  const LeaseRecord::Takeover* t = cur.ended(epoch_);
  std::string what = " not acknowledged";
  if (!key.empty() && t && min_txid > t->txid) {
    s_->remove({key});
    what = " removed";
  }
  fail_integrity(url() + ": taken over by " + cur.holder() + (t ? " at TXID " + hex16(t->txid) : std::string()) +
                 (key.empty() ? "" : obj + what) + "; stopping");
}

void Lease::fenced(const std::string& key) {
  LeaseRecord cur;
  std::string etag;
  std::string who = read(&cur, &etag) ? "; the lease is held by " + cur.holder() : "";
  fail_integrity(url() + ": " + key + " exists already: another writer stored it" + who + "; stopping");
}

}  // namespace ltx
