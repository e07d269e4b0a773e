#include "ltx/live.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>

#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/error.h"

namespace ltx {

namespace {

constexpr uint64_t kStateMagic = 0x57534c4956453031ull;  // "WSLIVE01"
constexpr uint32_t kStateFixed = 40;
const uint8_t kJournalMagic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
constexpr uint32_t kSectorSize = 512;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

// A state file: fixed fields, logical page 1, CRC. False if absent or invalid.
bool load_state(const std::string& path, LivePosition* p, std::vector<uint8_t>* page1) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) {
    if (errno == ENOENT) return false;
    fail_errno("open " + path);
  }
  uint8_t h[kStateFixed];
  if (pread_full(f.fd, h, kStateFixed, 0) != kStateFixed || get64(h) != kStateMagic) return false;
  LivePosition q;
  q.txid = get64(h + 8);
  q.checksum = get64(h + 16);
  q.page_size = get32(h + 24);
  q.commit = get32(h + 28);
  q.counter = get32(h + 32);
  if (!valid_page_size(q.page_size)) return false;
  std::vector<uint8_t> pg(q.page_size);
  uint8_t t[8];
  if (pread_full(f.fd, pg.data(), pg.size(), kStateFixed) != pg.size() ||
      pread_full(f.fd, t, 8, kStateFixed + q.page_size) != 8)
    return false;
  uint64_t crc = crc64_update(crc64(h, kStateFixed), pg.data(), pg.size());
  if (crc != get64(t)) return false;
  *p = q;
  if (page1) *page1 = std::move(pg);
  return true;
}

void save_state(const std::string& path, const LivePosition& p, const std::vector<uint8_t>& page1) {
  std::vector<uint8_t> b(kStateFixed + p.page_size + 8, 0);
  put64(b.data(), kStateMagic);
  put64(b.data() + 8, p.txid);
  put64(b.data() + 16, p.checksum);
  put32(b.data() + 24, p.page_size);
  put32(b.data() + 28, p.commit);
  put32(b.data() + 32, p.counter);
  if (page1.size() == p.page_size) std::memcpy(b.data() + kStateFixed, page1.data(), p.page_size);
  put64(b.data() + kStateFixed + p.page_size, crc64(b.data(), kStateFixed + p.page_size));
  AtomicFile f(path);
  write_all(f.fd(), b.data(), b.size());
  f.commit();
}

// SQLite's rollback journal record checksum (pager_cksum).
uint32_t journal_cksum(uint32_t init, const uint8_t* data, uint32_t ps) {
  uint32_t ck = init;
  for (int i = int(ps) - 200; i > 0; i -= 200) ck += data[i];
  return ck;
}

}  // namespace

bool read_live_position(const std::string& db_path, LivePosition* p) {
  return load_state(db_path + "-ltx/state", p, nullptr);
}

LiveReplica::LiveReplica(const std::string& db_path, int busy_ms)
    : path_(db_path), dir_(db_path + "-ltx"), journal_(db_path + "-journal") {
  if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("mkdir " + dir_);
  have_state_ = load_state(dir_ + "/state", &pos_, &page1_);
  if (!have_state_) {
    // A database in WAL mode would make every opener use a WAL; refuse it
    // rather than change it under someone's feet.
    Fd f;
    f.fd = ::open(db_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f.fd >= 0) {
      uint8_t h[100];
      size_t n = pread_full(f.fd, h, 100, 0);
      if (n > 0 && (n < 100 || std::memcmp(h, "SQLite format 3", 16) != 0))
        fail_integrity(db_path + ": not a SQLite database");
      if (n == 100 && (h[18] == 2 || h[19] == 2))
        fail_runtime(db_path + ": database is in WAL mode; a live replica must start empty or from ltx-apply --live");
    }
  }
  int rc = sqlite3_open_v2(db_path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    fail_runtime("open " + db_path + ": " + m);
  }
  busy_ms_ = busy_ms;
  sqlite3_busy_timeout(db_, busy_ms);
  try {
    recover();
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

LiveReplica::~LiveReplica() {
  if (db_) sqlite3_close(db_);
}

void LiveReplica::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = err ? err : sqlite3_errmsg(db_);
    sqlite3_free(err);
    fail_runtime(path_ + ": " + sql + ": " + m);
  }
}

void LiveReplica::read_page(uint32_t pgno, uint8_t* buf) {
  const uint32_t ps = pos_.page_size;
  int rc = file_->pMethods->xRead(file_, buf, int(ps), sqlite3_int64(pgno - 1) * ps);
  if (rc != SQLITE_OK) fail_runtime(path_ + ": read page " + std::to_string(pgno) + ": " + sqlite3_errstr(rc));
}

uint64_t LiveReplica::file_size() {
  sqlite3_int64 sz = 0;
  int rc = file_->pMethods->xFileSize(file_, &sz);
  if (rc != SQLITE_OK) fail_runtime(path_ + ": file size: " + sqlite3_errstr(rc));
  return uint64_t(sz);
}

uint64_t LiveReplica::full_checksum(uint64_t npages) {
  const uint32_t ps = pos_.page_size, lock = lock_pgno(ps);
  std::vector<uint8_t> buf(ps);
  uint64_t ck = kChecksumFlag;
  for (uint64_t p = 1; p <= npages; p++) {
    if (p == lock) continue;
    if (p == 1 && page1_.size() == ps) {
      ck = fold(ck, page_checksum(1, page1_.data(), ps));
      continue;
    }
    read_page(uint32_t(p), buf.data());
    ck = fold(ck, page_checksum(uint32_t(p), buf.data(), ps));
  }
  return ck;
}

// Under the EXCLUSIVE lock (which rolls back a hot journal first): drop a
// stale journal, then keep `next` if the replica carries its change counter.
void LiveReplica::recover() {
  // A read through SQLite rolls back a hot journal (it never creates a
  // database: BEGIN EXCLUSIVE would write page 1 of an empty file).
  exec("SELECT count(*) FROM sqlite_master");
  if (sqlite3_file_control(db_, "main", SQLITE_FCNTL_FILE_POINTER, &file_) != SQLITE_OK || !file_ ||
      !file_->pMethods)
    fail_runtime(path_ + ": no file handle");
  lock();
  try {
    if (exists(journal_) && ::unlink(journal_.c_str()) != 0) fail_errno("unlink " + journal_);
    // Leftovers of a killed run: spool files and temp state files.
    if (DIR* dp = ::opendir(dir_.c_str())) {
      while (struct dirent* e = ::readdir(dp)) {
        std::string n = e->d_name;
        if (n.rfind("spool.", 0) == 0 || n.find(".tmp-") != std::string::npos) ::unlink((dir_ + "/" + n).c_str());
      }
      ::closedir(dp);
    }
    uint64_t size = file_size();
    uint32_t counter = 0;
    if (size >= 100) {
      uint8_t h[100];
      int rc = file_->pMethods->xRead(file_, h, 100, 0);
      if (rc != SQLITE_OK) fail_runtime(path_ + ": read header: " + sqlite3_errstr(rc));
      counter = get32(h + 24);
      if (h[18] == 2 || h[19] == 2) fail_runtime(path_ + ": database is in WAL mode");
      if (!have_state_) {
        uint32_t ps = get16(h + 16);
        pos_.page_size = ps == 1 ? 65536 : ps;
        if (!valid_page_size(pos_.page_size)) fail_integrity(path_ + ": bad page size");
        pos_.commit = uint32_t(size / pos_.page_size);
        pos_.counter = counter;
      }
    }
    const std::string next = dir_ + "/next";
    LivePosition np;
    std::vector<uint8_t> np1;
    if (load_state(next, &np, &np1) && np.counter == counter &&
        (size == 0 ? np.commit == 0 : true) && (!have_state_ || np.counter != pos_.counter)) {
      if (::rename(next.c_str(), (dir_ + "/state").c_str()) != 0) fail_errno("rename " + next);
      fsync_dir_of(next);
      pos_ = np;
      page1_ = std::move(np1);
      have_state_ = true;
    } else if (::unlink(next.c_str()) != 0 && errno != ENOENT) {
      fail_errno("unlink " + next);
    }
    if (have_state_ && pos_.counter != counter)
      fail_integrity(path_ + ": replica was changed outside ltx-apply --live (change counter " +
                     std::to_string(counter) + ", recorded " + std::to_string(pos_.counter) + ")");
    if (have_state_ && size != uint64_t(pos_.commit) * pos_.page_size)
      fail_integrity(path_ + ": replica size does not match its recorded position");
  } catch (...) {
    unlock();
    throw;
  }
  unlock();
}

// SQLite's locking protocol on its own file handle, as a writer does it:
// SHARED, RESERVED, then EXCLUSIVE (holding PENDING while readers drain).
void LiveReplica::lock() {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(busy_ms_);
  int want[3] = {SQLITE_LOCK_SHARED, SQLITE_LOCK_RESERVED, SQLITE_LOCK_EXCLUSIVE};
  for (int i = 0; i < 3;) {
    int rc = file_->pMethods->xLock(file_, want[i]);
    if (rc == SQLITE_OK) {
      i++;
      continue;
    }
    if ((rc & 0xff) != SQLITE_BUSY) {
      unlock();
      fail_runtime(path_ + ": lock: " + sqlite3_errstr(rc));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      unlock();
      fail_runtime(path_ + ": database is locked (readers held it for " + std::to_string(busy_ms_) + " ms)");
    }
    ::usleep(1000);
  }
}

void LiveReplica::unlock() {
  if (file_) file_->pMethods->xUnlock(file_, SQLITE_LOCK_NONE);
}

int LiveReplica::apply_stream(Reader& r, const std::string& name,
                              const std::function<void(const LiveEvent&)>& on_file) {
  int n = 0;
  for (;;) {
    Decoder d(r);
    bool more = with_context(name, [&] { return d.read_header(); });
    if (!more) break;
    std::string ctx = name + ": " + format_filename(d.header().min_txid, d.header().max_txid);
    with_context(ctx, [&] { apply_one(d, on_file); });
    n++;
  }
  return n;
}

namespace {

// An unlinked spool of (pgno, page) records, read back in order.
class Spool {
 public:
  Spool(const std::string& dir, uint32_t ps) : ps_(ps) {
    std::string t = dir + "/spool.XXXXXX";
    fd_ = ::mkstemp(&t[0]);
    if (fd_ < 0) fail_errno("create spool in " + dir);
    ::unlink(t.c_str());
  }
  ~Spool() { ::close(fd_); }
  void add(uint32_t pgno, const uint8_t* page) {
    uint8_t h[4];
    put32(h, pgno);
    pwrite_all(fd_, h, 4, n_ * (4 + uint64_t(ps_)));
    pwrite_all(fd_, page, ps_, n_ * (4 + uint64_t(ps_)) + 4);
    n_++;
  }
  uint64_t size() const { return n_; }
  uint32_t get(uint64_t i, uint8_t* page) const {
    uint8_t h[4];
    if (pread_full(fd_, h, 4, i * (4 + uint64_t(ps_))) != 4 ||
        pread_full(fd_, page, ps_, i * (4 + uint64_t(ps_)) + 4) != ps_)
      fail_runtime("spool: short read");
    return get32(h);
  }

 private:
  int fd_ = -1;
  uint32_t ps_;
  uint64_t n_ = 0;
};

// The replica's physical page 1: rollback-journal mode, new change counter,
// valid in-header size.
void patch_page1(uint8_t* p, uint32_t counter, uint32_t commit) {
  p[18] = 1;
  p[19] = 1;
  put32(p + 24, counter);
  put32(p + 28, commit);
  put32(p + 92, counter);
}

}  // namespace

void LiveReplica::apply_one(Decoder& d, const std::function<void(const LiveEvent&)>& on_file) {
  const Header h = d.header();
  const uint32_t ps = h.page_size;
  LiveEvent ev;
  ev.header = h;
  // 1. Decode and verify the whole file into the spool; nothing touches the
  //    replica before it passed.
  const bool skip = pos_.txid != 0 && h.max_txid <= pos_.txid;
  if (!skip) {
    if (pos_.page_size != 0 && pos_.commit != 0 && ps != pos_.page_size)
      fail_integrity("page size " + std::to_string(ps) + " does not match replica page size " +
                     std::to_string(pos_.page_size));
    if (!h.snapshot() && pos_.txid != 0 && h.min_txid != pos_.txid + 1)
      fail_integrity("TXID gap: replica is at " + hex16(pos_.txid) + ", file starts at " + hex16(h.min_txid));
    check_max_size(h, max_size_);
  }
  Spool spool(dir_, ps);
  std::vector<uint8_t> page(ps), old(ps), p1;
  uint32_t pgno;
  while (d.next_page(&pgno, page.data()))
    if (!skip) spool.add(pgno, page.data());
  const Trailer t = d.finish();
  if (skip) {
    if (on_file) on_file(ev);
    return;
  }
  // 2. Lock out readers with SQLite's own locks.
  auto t0 = std::chrono::steady_clock::now();
  lock();
  bool journal_written = false, touched = false;
  try {
    const uint64_t size = file_size();
    const uint32_t cur_ps = pos_.page_size ? pos_.page_size : ps;
    if (size % cur_ps != 0) fail_integrity("replica size is not a multiple of the page size");
    const uint64_t old_n = size / cur_ps;
    if (old_n != 0 && cur_ps != ps) fail_integrity("page size does not match the replica");
    if (h.db_bytes() > old_n * ps)  // by path: a second descriptor would drop SQLite's locks
      check_room(free_bytes(path_), h.db_bytes() - old_n * ps,
                 "commit " + std::to_string(h.commit) + " grows the replica to " + std::to_string(h.db_bytes()) + " bytes");
    pos_.page_size = ps;
    const uint32_t lock = lock_pgno(ps);
    uint32_t counter = 0;
    if (old_n >= 1) {
      read_page(1, old.data());
      counter = get32(old.data() + 24);
      if (have_state_ && counter != pos_.counter)
        fail_integrity("replica was changed outside ltx-apply --live");
      if (page1_.size() != ps) page1_ = old;  // no sidecar yet: physical is logical
    } else {
      page1_.clear();
    }
    // Pre-apply checksum.
    uint64_t ck = pos_.checksum;
    bool track = true;
    if (h.snapshot()) {
      ck = kChecksumFlag;
      track = !h.no_checksum();
    } else if (!h.no_checksum()) {
      if (ck == 0) ck = old_n ? full_checksum(old_n) : kChecksumFlag;
      if (ck != h.pre_apply)
        fail_integrity("pre-apply checksum mismatch: replica " + hex16(ck) + ", file " + hex16(h.pre_apply));
    } else {
      track = false;
    }
    // 3. Journal the original of every page that changes, fold the checksum.
    Fd j;
    j.fd = ::open(journal_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (j.fd < 0) fail_errno("create " + journal_);
    journal_written = true;
    std::random_device rd;
    const uint32_t nonce = rd();
    uint32_t nrec = 0;
    std::vector<uint8_t> rec(4 + ps + 4);
    uint64_t joff = kSectorSize;
    auto journal = [&](uint32_t pg, const uint8_t* data) {
      put32(rec.data(), pg);
      std::memcpy(rec.data() + 4, data, ps);
      put32(rec.data() + 4 + ps, journal_cksum(nonce, data, ps));
      pwrite_all(j.fd, rec.data(), rec.size(), joff);
      joff += rec.size();
      nrec++;
    };
    DbChecksum sum(ck, h.snapshot() ? 0 : old_n, ps);  // a snapshot's fold keeps no old page
    if (old_n >= 1) {
      read_page(1, old.data());
      journal(1, old.data());
    }
    std::vector<uint8_t> new_page1 = page1_;  // logical page 1 after the file
    for (uint64_t i = 0; i < spool.size(); i++) {
      uint32_t pg = spool.get(i, page.data());
      if (pg <= old_n && pg != 1) {
        read_page(pg, old.data());
        journal(pg, old.data());
      }
      if (track) sum.write(pg, pg == 1 ? page1_.data() : old.data(), page.data());
      if (pg == 1) new_page1.assign(page.begin(), page.end());
    }
    for (uint64_t p = uint64_t(h.commit) + 1; p <= old_n; p++) {
      if (p == lock) continue;
      if (p != 1) {
        read_page(uint32_t(p), old.data());
        journal(uint32_t(p), old.data());
      }
      if (track && sum.had(p)) sum.drop(uint32_t(p), p == 1 ? page1_.data() : old.data());
    }
    if (track) sum.end_at(h.commit);
    ck = sum.value();
    if (h.commit == 0) {
      ck = kChecksumFlag;
      track = true;
      new_page1.clear();
    } else if (new_page1.size() != ps) {
      fail_integrity("file does not hold page 1 and the replica has none");
    }
    if (!h.no_checksum() && ck != t.post_apply)
      fail_integrity("post-apply checksum mismatch: replica would be " + hex16(ck) + ", file " +
                     hex16(t.post_apply));
    uint8_t jh[kSectorSize] = {};
    std::memcpy(jh, kJournalMagic, 8);
    put32(jh + 8, nrec);
    put32(jh + 12, nonce);
    put32(jh + 16, uint32_t(old_n));
    put32(jh + 20, kSectorSize);
    put32(jh + 24, ps);
    pwrite_all(j.fd, jh, kSectorSize, 0);
    if (::fsync(j.fd) != 0) fail_errno("fsync " + journal_);
    fsync_dir_of(journal_);
    // 4. New pages and size, through SQLite's own handle.
    const uint32_t new_counter = h.commit ? counter + 1 : 0;
    auto xwrite = [&](uint32_t pg, const uint8_t* data) {
      int rc = file_->pMethods->xWrite(file_, data, int(ps), sqlite3_int64(pg - 1) * ps);
      if (rc != SQLITE_OK) fail_runtime(path_ + ": write page " + std::to_string(pg) + ": " + sqlite3_errstr(rc));
    };
    touched = true;
    int rc = file_->pMethods->xTruncate(file_, sqlite3_int64(uint64_t(h.commit) * ps));
    if (rc != SQLITE_OK) fail_runtime(path_ + ": truncate: " + sqlite3_errstr(rc));
    for (uint64_t i = 0; i < spool.size(); i++) {
      uint32_t pg = spool.get(i, page.data());
      if (pg != 1) xwrite(pg, page.data());
    }
    if (h.commit) {
      p1 = new_page1;
      patch_page1(p1.data(), new_counter, h.commit);
      xwrite(1, p1.data());
    }
    rc = file_->pMethods->xSync(file_, SQLITE_SYNC_NORMAL);
    if (rc != SQLITE_OK) fail_runtime(path_ + ": fsync: " + sqlite3_errstr(rc));
    // 5. Record the position as pending, then commit by deleting the journal.
    LivePosition np;
    np.txid = h.max_txid;
    np.checksum = track ? ck : 0;
    np.page_size = ps;
    np.commit = h.commit;
    np.counter = new_counter;
    save_state(dir_ + "/next", np, new_page1);
    if (::unlink(journal_.c_str()) != 0) fail_errno("unlink " + journal_);
    journal_written = false;
    fsync_dir_of(journal_);
    if (::rename((dir_ + "/next").c_str(), (dir_ + "/state").c_str()) != 0) fail_errno("rename state");
    pos_ = np;
    page1_ = std::move(new_page1);
    have_state_ = true;
  } catch (...) {
    // The journal (if any) is hot once our lock is gone: end the transaction
    // and let SQLite roll it back before anyone reads.
    if (journal_written && !touched) ::unlink(journal_.c_str());
    unlock();
    if (journal_written && touched) {
      ::unlink((dir_ + "/next").c_str());
      sqlite3_exec(db_, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);
    }
    throw;
  }
  unlock();
  ev.applied = true;
  ev.lock_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (on_file) on_file(ev);
}

}  // namespace ltx
