#include "ltx/state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <sstream>

#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/error.h"
#include "ltx/io.h"

namespace ltx {

namespace {

std::string read_file(const std::string& path, bool* exists) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *exists = false;
      return "";
    }
    fail_errno("open " + path);
  }
  *exists = true;
  std::string s;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      errno = e;
      fail_errno("read " + path);
    }
    if (n == 0) break;
    s.append(buf, size_t(n));
    if (s.size() > (64u << 20)) break;
  }
  ::close(fd);
  return s;
}

void write_atomic(const std::string& path, const std::string& data) {
  AtomicFile f(path, 0644);
  write_all(f.fd(), data.data(), data.size());
  f.commit();
}

}  // namespace

StateLock::StateLock(const std::string& path) : path_(path) { take(); }

StateLock::~StateLock() {
  if (fd_ >= 0) ::close(fd_);
}

void StateLock::take() {
  int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("open " + path_);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    char b[32] = {};
    ssize_t n = ::pread(fd, b, sizeof b - 1, 0);
    ::close(fd);
    if (e != EWOULDBLOCK) {
      errno = e;
      fail_errno("lock " + path_);
    }
    std::string pid(b, n > 0 ? size_t(n) : 0);
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) pid = "unknown";
    fail_runtime(path_ + ": in use by pid " + pid +
                 " (one walsync watch, wal-tail --ack or ltx-encode --state at a time)");
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0) {
    ::close(fd);
    fail_errno("truncate " + path_);
  }
  pwrite_all(fd, me.data(), me.size(), 0);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

void StateLock::renew() {
  struct stat a {}, b {};
  if (fd_ >= 0 && ::fstat(fd_, &a) == 0 && ::stat(path_.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
      a.st_ino == b.st_ino)
    return;
  take();
}

std::unique_ptr<StateLock> lock_state_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("create state directory " + dir);
  return std::make_unique<StateLock>(dir + "/lock");
}

std::string format_position(const Position& p) {
  std::ostringstream o;
  o << "txid " << hex16(p.txid) << "\nchecksum " << hex16(p.checksum) << "\npage_size "
    << p.page_size << "\ncommit " << p.commit << "\nwal_salt1 " << hex08(p.wal_salt1)
    << "\nwal_salt2 " << hex08(p.wal_salt2) << "\nwal_offset " << p.wal_offset << "\n";
  return o.str();
}

bool parse_position(const std::string& text, Position* out) {
  std::istringstream in(text);
  std::string key, val;
  Position p;
  int seen = 0;
  while (in >> key >> val) {
    try {
      if (key == "txid") { if (!parse_hex16(val, &p.txid)) return false; }
      else if (key == "checksum") { if (!parse_hex16(val, &p.checksum)) return false; }
      else if (key == "page_size") p.page_size = uint32_t(std::stoul(val));
      else if (key == "commit") p.commit = uint32_t(std::stoul(val));
      else if (key == "wal_salt1") p.wal_salt1 = uint32_t(std::stoul(val, nullptr, 16));
      else if (key == "wal_salt2") p.wal_salt2 = uint32_t(std::stoul(val, nullptr, 16));
      else if (key == "wal_offset") p.wal_offset = std::stoull(val);
      else return false;
    } catch (const std::exception&) {
      return false;
    }
    seen++;
  }
  if (seen != 7) return false;
  *out = p;
  return true;
}

bool read_position_file(const std::string& path, Position* p) {
  bool exists;
  std::string text = read_file(path, &exists);
  if (!exists) return false;
  if (!parse_position(text, p)) fail_integrity(path + ": not a position file");
  return true;
}

void write_position_file(const std::string& path, const Position& p) {
  write_atomic(path, format_position(p));
}

PageState::PageState(const std::string& dir) : dir_(dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("create state directory " + dir);
  std::string pages = dir + "/pages";
  pages_fd_ = ::open(pages.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (pages_fd_ < 0) fail_errno("open " + pages);
  for (int i = 0; i < kSlots; i++) {
    std::string j = dir + "/journal." + std::to_string(i);
    jfd_[i] = ::open(j.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (jfd_[i] < 0) fail_errno("open " + j);
  }
  if (!replay_journals()) {
    // A state written before the two journals: a redo journal and a
    // position file, both replaced atomically.
    replay_journal();
    bool exists;
    std::string text = read_file(dir + "/position", &exists);
    if (exists && !parse_position(text, &pos_))
      fail_integrity("state " + dir + "/position: unreadable");
  }
}

PageState::~PageState() {
  if (pages_fd_ >= 0) ::close(pages_fd_);
  if (undo_fd_ >= 0) ::close(undo_fd_);
  if (pos_fd_ >= 0) ::close(pos_fd_);
  for (int fd : jfd_)
    if (fd >= 0) ::close(fd);
}

// journal.N record: "LTXJ" | seq u64 | position text length u32 | text |
// n u64 | n * (pgno u32, ck u64) | xxh64 of everything before u64.
// Commit k goes to journal.(k % kSlots). A record is overwritten only after
// the pages file was synced past it, so every record whose pages may not be
// durable is intact, and so is every later one (a sync covers all pages
// written before it): replaying the run of consecutive sequences that ends
// at the highest, oldest first, redoes all that may be missing. An older
// record outside that run is durable and must not be replayed (a newer
// durable one it would undo may be gone).
namespace {
bool parse_journal(const std::string& j, uint64_t* seq, Position* p,
                   std::vector<std::pair<uint32_t, uint64_t>>* ch) {
  auto* d = reinterpret_cast<const uint8_t*>(j.data());
  if (j.size() < 4 + 8 + 4 || std::memcmp(d, "LTXJ", 4) != 0) return false;
  uint32_t tl = get32(d + 12);
  if (16 + uint64_t(tl) + 8 > j.size()) return false;
  uint64_t n = get64(d + 16 + tl);
  if (n > (j.size() / 12)) return false;
  uint64_t len = 16 + uint64_t(tl) + 8 + n * 12;
  if (len + 8 > j.size() || XXH64(d, len, 0) != get64(d + len)) return false;
  if (!parse_position(j.substr(16, tl), p)) return false;
  *seq = get64(d + 4);
  ch->clear();
  const uint8_t* q = d + 16 + tl + 8;
  for (uint64_t i = 0; i < n; i++, q += 12) ch->emplace_back(get32(q), get64(q + 4));
  return true;
}

std::string read_fd(int fd) {
  std::string s;
  char buf[1 << 16];
  for (uint64_t off = 0;;) {
    size_t n = pread_full(fd, buf, sizeof buf, off);
    s.append(buf, n);
    off += n;
    if (n < sizeof buf) break;
  }
  return s;
}
}  // namespace

bool PageState::replay_journals() {
  // Validate every slot first (one record in memory at a time), then redo
  // the run ending at the highest sequence in order.
  uint64_t seq;
  Position p;
  std::vector<std::pair<uint32_t, uint64_t>> ch;
  for (int i = 0; i < kSlots; i++)
    slot_seq_[i] = parse_journal(read_fd(jfd_[i]), &seq, &p, &ch) ? seq : 0;
  uint64_t best = 0;
  for (uint64_t s : slot_seq_) best = std::max(best, s);
  if (best == 0) return false;
  auto slot_of = [&](uint64_t want) {
    for (int i = 0; i < kSlots; i++)
      if (slot_seq_[i] == want) return i;
    return -1;
  };
  uint64_t first = best;
  while (first > 1 && slot_of(first - 1) >= 0) first--;
  for (uint64_t s = first; s <= best; s++) {
    if (!parse_journal(read_fd(jfd_[slot_of(s)]), &seq, &p, &ch) || seq != s)
      fail_integrity("state " + dir_ + ": journal changed while it was read");
    write_pages(ch);
    pos_ = p;
  }
  if (::fdatasync(pages_fd_) != 0) fail_errno("fsync " + dir_ + "/pages");
  seq_ = synced_seq_ = best;
  return true;
}

uint64_t PageState::get(uint32_t pgno) const {
  uint8_t b[8];
  uint64_t v = pread_full(pages_fd_, b, 8, uint64_t(pgno - 1) * 8) == 8 ? get64(b) : 0;
  if (!(v & kChecksumFlag) && pgno <= pos_.commit && pgno != lock_pgno(pos_.page_size) && pgno != 0)
    fail_integrity("state " + dir_ + ": damaged: page " + std::to_string(pgno) + " of " + std::to_string(pos_.commit) +
                   " has no checksum in " + dir_ + "/pages");
  return v;
}

std::string PageState::check() const {
  if (!initialized()) return "";
  const uint32_t n = pos_.commit;
  const uint32_t lock = pos_.page_size ? lock_pgno(pos_.page_size) : 0;
  uint64_t ck = kChecksumFlag;
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t first = 1; first <= n;) {
    const size_t k = size_t(std::min<uint64_t>(buf.size() / 8, n - first + 1));
    const size_t got = pread_full(pages_fd_, buf.data(), k * 8, (first - 1) * 8);
    for (size_t i = 0; i < k; i++) {
      const uint32_t pgno = uint32_t(first + i);
      if (pgno == lock) continue;
      const uint64_t v = (i + 1) * 8 <= got ? get64(buf.data() + i * 8) : 0;
      if (!(v & kChecksumFlag))
        return "page " + std::to_string(pgno) + " of " + std::to_string(n) + " has no checksum in " + dir_ + "/pages";
      ck = fold(ck, v);
    }
    first += k;
  }
  if (ck != pos_.checksum)
    return "the page checksums of " + dir_ + "/pages fold to " + hex16(ck) + ", not to the checksum " +
           hex16(pos_.checksum) + " of TXID " + hex16(pos_.txid);
  return "";
}

void PageState::reset() {
  auto trunc = [&](int fd, const std::string& name) {
    if (fd >= 0 && (::ftruncate(fd, 0) != 0 || ::fdatasync(fd) != 0)) fail_errno("truncate " + dir_ + "/" + name);
  };
  // Journals first: a crash half-way leaves no record to replay over pages
  // that are gone (and check() would catch it if it did).
  for (int i = 0; i < kSlots; i++) trunc(jfd_[i], "journal." + std::to_string(i));
  trunc(undo_fd_, "undo");
  trunc(pages_fd_, "pages");
  if (pos_fd_ >= 0) {
    ::close(pos_fd_);
    pos_fd_ = -1;
  }
  ::unlink((dir_ + "/position").c_str());
  pos_len_ = SIZE_MAX;
  for (auto& s : slot_seq_) s = 0;
  seq_ = synced_seq_ = 0;
  pos_ = Position{};
}

void PageState::write_pages(const std::vector<std::pair<uint32_t, uint64_t>>& changes) {
  uint8_t b[8];
  for (const auto& c : changes) {
    put64(b, c.second);
    pwrite_all(pages_fd_, b, 8, uint64_t(c.first - 1) * 8);
  }
}

namespace {
// Writes head | text length u32 | text | n u64 | n * (pgno u32, value u64) |
// xxh64 of all that, at offset `at` of fd, in 64 KiB pieces with a running
// hash: a 1 GB resync changes 262,144 pages, and the record need not be in
// memory. value(pgno, ck) gives each entry's second field.
void write_record(int fd, uint64_t at, const std::string& head, const std::string& text, const Changes& changes,
                  const std::function<uint64_t(uint32_t, uint64_t)>& value) {
  std::unique_ptr<XXH64_state_t, XXH_errorcode (*)(XXH64_state_t*)> h(XXH64_createState(), XXH64_freeState);
  if (!h || XXH64_reset(h.get(), 0) != XXH_OK) fail_runtime("xxh64: out of memory");
  std::string r;
  auto flush = [&](bool last) {
    if (r.size() < (64u << 10) && !last) return;
    XXH64_update(h.get(), r.data(), r.size());
    if (last) {
      uint8_t d[8];
      put64(d, XXH64_digest(h.get()));
      r.append(reinterpret_cast<char*>(d), 8);
    }
    pwrite_all(fd, r.data(), r.size(), at);
    at += r.size();
    r.clear();
  };
  uint8_t b[12];
  r = head;
  put32(b, uint32_t(text.size()));
  r.append(reinterpret_cast<char*>(b), 4);
  r += text;
  put64(b, changes.size());
  r.append(reinterpret_cast<char*>(b), 8);
  changes.for_each([&](uint32_t pgno, uint64_t ck) {
    put32(b, pgno);
    put64(b + 4, value(pgno, ck));
    r.append(reinterpret_cast<char*>(b), 12);
    flush(false);
  });
  flush(true);
}
}  // namespace

Changes::~Changes() {
  if (fd_ >= 0) ::close(fd_);
}

void Changes::add(uint32_t pgno, uint64_t ck) {
  mem_.emplace_back(pgno, ck);
  if (mem_.size() < kChunk) return;
  if (fd_ < 0) {
    fd_ = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) fail_errno("create temp file in " + dir_);
  }
  std::string b(mem_.size() * 12, '\0');
  auto* q = reinterpret_cast<uint8_t*>(&b[0]);
  for (const auto& c : mem_) {
    put32(q, c.first);
    put64(q + 4, c.second);
    q += 12;
  }
  pwrite_all(fd_, b.data(), b.size(), spilled_ * 12);
  spilled_ += mem_.size();
  mem_.clear();
}

void Changes::for_each(const std::function<void(uint32_t, uint64_t)>& fn) const {
  std::string b(kChunk * 12, '\0');
  for (uint64_t at = 0; at < spilled_;) {
    size_t k = size_t(std::min<uint64_t>(kChunk, spilled_ - at));
    if (pread_full(fd_, &b[0], k * 12, at * 12) != k * 12) fail_runtime("changes spool: short read");
    auto* q = reinterpret_cast<const uint8_t*>(b.data());
    for (size_t i = 0; i < k; i++, q += 12) fn(get32(q), get64(q + 4));
    at += k;
  }
  for (const auto& c : mem_) fn(c.first, c.second);
}

void PageState::commit(const Position& p, const std::vector<std::pair<uint32_t, uint64_t>>& changes) {
  Changes c(dir_);
  for (const auto& e : changes) c.add(e.first, e.second);
  commit(p, c);
}

void PageState::commit(const Position& p, const Changes& changes) {
  if (undo_fd_ >= 0) append_undo(p.txid, changes);
  const uint64_t seq = seq_ + 1;
  const int slot = int(seq % kSlots);
  // The record about to be overwritten must have its pages on disk.
  if (slot_seq_[slot] > synced_seq_) {
    if (::fdatasync(pages_fd_) != 0) fail_errno("fsync " + dir_ + "/pages");
    synced_seq_ = seq_;
  }
  const int fd = jfd_[slot];
  const std::string text = format_position(p);
  uint8_t b[12];
  std::memcpy(b, "LTXJ", 4);
  put64(b + 4, seq);
  slot_seq_[slot] = 0;  // torn until synced
  write_record(fd, 0, std::string(reinterpret_cast<char*>(b), 12), text, changes,
               [](uint32_t, uint64_t ck) { return ck; });
  if (::fdatasync(fd) != 0) fail_errno("fsync " + dir_ + "/journal." + std::to_string(slot));
  slot_seq_[slot] = seq;
  changes.for_each([&](uint32_t pgno, uint64_t ck) {
    put64(b, ck);
    pwrite_all(pages_fd_, b, 8, uint64_t(pgno - 1) * 8);
  });
  seq_ = seq;
  pos_ = p;
  // For people and scripts: the journals are the state, this is a copy,
  // rewritten in place without syncing (no file created per commit).
  if (pos_fd_ < 0) {
    pos_fd_ = ::open((dir_ + "/position").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (pos_fd_ < 0) fail_errno("open " + dir_ + "/position");
  }
  pwrite_all(pos_fd_, text.data(), text.size(), 0);
  if (text.size() != pos_len_ && ::ftruncate(pos_fd_, off_t(text.size())) != 0)
    fail_errno("truncate " + dir_ + "/position");
  pos_len_ = text.size();
}

// ---- undo records ----
// record: len u32 | txid u64 | position text len u32 | text | n u64 |
//         n * (pgno u32, old ck u64) | xxh64(everything before) u64
namespace {
struct UndoRecord {
  uint64_t txid = 0;
  Position prev;
  std::vector<std::pair<uint32_t, uint64_t>> old;
};

std::vector<UndoRecord> read_undo(int fd) {
  std::vector<UndoRecord> out;
  uint64_t off = 0;
  for (;;) {
    uint8_t lb[4];
    if (pread_full(fd, lb, 4, off) != 4) break;
    uint32_t len = get32(lb);
    if (len < 8 + 4 + 8 + 8 || len > (256u << 20)) break;
    std::string r(len, '\0');
    if (pread_full(fd, &r[0], len, off + 4) != len) break;  // torn tail
    auto* d = reinterpret_cast<const uint8_t*>(r.data());
    if (XXH64(d, len - 8, 0) != get64(d + len - 8)) break;
    UndoRecord u;
    u.txid = get64(d);
    uint32_t tl = get32(d + 8);
    if (12 + uint64_t(tl) + 8 + 8 > len || !parse_position(r.substr(12, tl), &u.prev)) break;
    uint64_t n = get64(d + 12 + tl);
    if (12 + tl + 8 + n * 12 + 8 != len) break;
    const uint8_t* q = d + 12 + tl + 8;
    for (uint64_t i = 0; i < n; i++, q += 12) u.old.emplace_back(get32(q), get64(q + 4));
    out.push_back(std::move(u));
    off += 4 + len;
  }
  return out;
}

std::string encode_undo(const UndoRecord& u) {
  std::string text = format_position(u.prev);
  std::string r;
  uint8_t b[12];
  put64(b, u.txid);
  r.append(reinterpret_cast<char*>(b), 8);
  put32(b, uint32_t(text.size()));
  r.append(reinterpret_cast<char*>(b), 4);
  r += text;
  put64(b, u.old.size());
  r.append(reinterpret_cast<char*>(b), 8);
  for (const auto& c : u.old) {
    put32(b, c.first);
    put64(b + 4, c.second);
    r.append(reinterpret_cast<char*>(b), 12);
  }
  put64(b, XXH64(r.data(), r.size(), 0));
  r.append(reinterpret_cast<char*>(b), 8);
  put32(b, uint32_t(r.size()));
  return std::string(reinterpret_cast<char*>(b), 4) + r;
}
}  // namespace

void PageState::enable_undo() {
  if (undo_fd_ >= 0) return;
  std::string path = dir_ + "/undo";
  undo_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (undo_fd_ < 0) fail_errno("open " + path);
  // Records above the position were written just before a crash that kept
  // their commit from happening: they undo nothing.
  trim_undo(0);
}

uint64_t PageState::undo_bytes() const {
  struct stat st {};
  return undo_fd_ >= 0 && ::fstat(undo_fd_, &st) == 0 ? uint64_t(st.st_size) : 0;
}

// The record of encode_undo, streamed: the old checksum of every changed
// page is read from the pages file as it goes.
void PageState::append_undo(uint64_t txid, const Changes& changes) {
  std::string text = format_position(pos_);
  const uint64_t len = 8 + 4 + text.size() + 8 + changes.size() * 12 + 8;
  if (len > (256u << 20)) fail_runtime("undo record of " + std::to_string(changes.size()) + " pages is too large");
  struct stat st {};
  if (::fstat(undo_fd_, &st) != 0) fail_errno("stat undo");
  uint8_t b[8];
  put32(b, uint32_t(len));  // the length prefix is not hashed
  pwrite_all(undo_fd_, b, 4, uint64_t(st.st_size));
  put64(b, txid);
  write_record(undo_fd_, uint64_t(st.st_size) + 4, std::string(reinterpret_cast<char*>(b), 8), text, changes,
               [this](uint32_t pgno, uint64_t) { return get(pgno); });
  if (::fdatasync(undo_fd_) != 0) fail_errno("fsync undo");
}

// Keeps records with low < txid <= position: rewrites the file atomically.
void PageState::trim_undo(uint64_t low) {
  auto recs = read_undo(undo_fd_);
  std::string keep;
  for (const auto& u : recs)
    if (u.txid > low && u.txid <= pos_.txid) keep += encode_undo(u);
  if (keep.size() == undo_bytes()) return;
  write_atomic(dir_ + "/undo", keep);
  ::close(undo_fd_);
  undo_fd_ = ::open((dir_ + "/undo").c_str(), O_RDWR | O_CLOEXEC);
  if (undo_fd_ < 0) fail_errno("open " + dir_ + "/undo");
}

void PageState::rollback_to(uint64_t txid) {
  if (txid >= pos_.txid) return;
  auto recs = read_undo(undo_fd_);
  // Walk back from the newest record; the oldest old value of a page wins.
  std::vector<std::pair<uint32_t, uint64_t>> changes;
  Position target;
  uint64_t want = pos_.txid;
  for (auto it = recs.rbegin(); it != recs.rend() && want > txid; ++it) {
    if (it->txid > want) continue;
    if (it->txid != want) break;
    changes.insert(changes.end(), it->old.begin(), it->old.end());
    target = it->prev;
    want = it->prev.txid;
  }
  if (want != txid)
    fail_integrity("state " + dir_ + ": cannot roll back from TXID " + hex16(pos_.txid) + " to " +
                   hex16(txid) + ": no undo record for TXID " + hex16(want));
  // Entries of older records come later, so written in order the value a
  // page had at `txid` is the one that stays.
  int fd = undo_fd_;
  undo_fd_ = -1;  // no undo record for the rollback itself
  commit(target, changes);
  undo_fd_ = fd;
  trim_undo(0);
}

void PageState::replay_journal() {
  bool exists;
  std::string j = read_file(dir_ + "/journal", &exists);
  if (!exists) return;
  auto* d = reinterpret_cast<const uint8_t*>(j.data());
  bool ok = j.size() >= 20 && XXH64(d, j.size() - 8, 0) == get64(d + j.size() - 8);
  if (ok) {
    uint32_t tl = get32(d);
    ok = 4 + uint64_t(tl) + 8 + 8 <= j.size();
    if (ok) {
      std::string text = j.substr(4, tl);
      uint64_t n = get64(d + 4 + tl);
      ok = 4 + tl + 8 + n * 12 + 8 == j.size();
      if (ok) {
        std::vector<std::pair<uint32_t, uint64_t>> ch;
        const uint8_t* q = d + 4 + tl + 8;
        for (uint64_t i = 0; i < n; i++, q += 12) ch.emplace_back(get32(q), get64(q + 4));
        write_pages(ch);
        if (::fdatasync(pages_fd_) != 0) fail_errno("fsync " + dir_ + "/pages");
        write_atomic(dir_ + "/position", text);
      }
    }
  }
  // A torn journal was never followed by page writes: dropping it is safe.
  if (::unlink((dir_ + "/journal").c_str()) != 0) fail_errno("remove journal");
  // Only the journal ring from here on.
}

bool resume_from_ack(PageState& st, const std::string& ack, Position* adopt) {
  st.enable_undo();
  Position acked;
  if (!read_position_file(ack, &acked)) {
    // Nothing acknowledged yet (the first upload never completed): every
    // file the state recorded was lost downstream, so start afresh.
    if (st.initialized() && st.undo_bytes() > 0) st.rollback_to(0);
    return false;
  }
  if (adopt && !st.initialized() && acked.txid != 0) {
    *adopt = acked;  // the encoder checks the first resync against it
    return true;
  }
  if (acked.txid > st.position().txid)
    fail_integrity(ack + ": acknowledged TXID " + hex16(acked.txid) + " is ahead of the state (" +
                   hex16(st.position().txid) + "): the state belongs to another replica");
  st.rollback_to(acked.txid);
  if (st.position().checksum != acked.checksum)
    fail_integrity(ack + ": checksum " + hex16(acked.checksum) + " differs from the state's " +
                   hex16(st.position().checksum) + " at TXID " + hex16(acked.txid));
  st.trim_undo(acked.txid);
  return true;
}

}  // namespace ltx
