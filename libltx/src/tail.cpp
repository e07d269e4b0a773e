// tail.cpp - follow a live WAL-mode database (see ltx/tail.h, wal-tail(1)).
//
// Why frames cannot be lost while run() is inside its loop (SQLite 3.40
// wal.c, walformat.html): a frame is destroyed only when the WAL restarts
// (walRestartLog / RESTART / TRUNCATE checkpoints), and a restart needs
// (a) every frame backfilled and (b) exclusive locks on read-mark slots
// 1..4. We always hold a read transaction:
//  - on a slot >= 1 with mark M: (b) fails, so no restart at all;
//  - on slot 0 (taken only when nBackfill == mxFrame == M): backfilling
//    needs an exclusive lock on slot 0, so no frame after M is ever
//    backfilled, so (a) can only hold while mxFrame == M, i.e. a restart can
//    only discard frames <= M, which we copied before releasing the previous
//    transaction (the next one is begun before each copy pass).
// Hence a restart observed while the loop runs never hides frames; any other
// gap (wal-tail was not running) is closed by a resync.
#include "ltx/tail.h"
#include "ltx/state.h"

#include <fcntl.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "ltx/bytes.h"
#include "ltx/checksum.h"
#include "ltx/error.h"

namespace ltx::tail {

using wal::kFrameHeaderSize;
using wal::kWalHeaderSize;

bool parse_position(const std::string& s, uint32_t* salt1, uint32_t* salt2, uint64_t* offset) {
  unsigned a, b;
  unsigned long long off;
  char c;
  if (s.size() < 19 || s[8] != ':' || s[17] != ':') return false;
  if (std::sscanf(s.c_str(), "%8x:%8x:%llu%c", &a, &b, &off, &c) != 3) return false;
  for (size_t i = 18; i < s.size(); i++)
    if (s[i] < '0' || s[i] > '9') return false;
  *salt1 = a;
  *salt2 = b;
  *offset = off;
  return true;
}

std::string format_position(uint32_t salt1, uint32_t salt2, uint64_t offset) {
  return hex08(salt1) + ":" + hex08(salt2) + ":" + std::to_string(offset);
}

bool nothing_after(const std::string& db, uint32_t salt1, uint32_t salt2, uint64_t offset) {
  if ((salt1 == 0 && salt2 == 0) || offset < kWalHeaderSize) return false;
  int fd = ::open((db + "-wal").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint8_t h[kWalHeaderSize], f[kFrameHeaderSize];
  size_t fn = 0;
  wal::WalHeader w;
  try {
    struct Closer { int fd; ~Closer() { ::close(fd); } } closer{fd};
    if (pread_full(fd, h, sizeof h, 0) != sizeof h) return false;
    w = wal::WalHeader::parse(h);
    fn = pread_full(fd, f, sizeof f, offset);
  } catch (const Error&) {
    return false;
  }
  if (w.salt1 != salt1 || w.salt2 != salt2 || (offset - kWalHeaderSize) % (kFrameHeaderSize + w.page_size) != 0)
    return false;
  return fn < sizeof f || get32(f + 8) != salt1 || get32(f + 12) != salt2;
}

namespace {

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// The wal-index header (walformat.html 2.1), native byte order except salts.
struct Shm {
  uint32_t mx_frame = 0, n_page = 0, page_size = 0, n_backfill = 0;
  uint32_t salt1 = 0, salt2 = 0;
};

class Db {
 public:
  Db(const std::string& path, int busy_ms) {
    int rc = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr);
    if (rc != SQLITE_OK) {
      std::string m = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
      sqlite3_close(db_);
      fail_runtime("open: " + m);
    }
    sqlite3_busy_timeout(db_, busy_ms);
    sqlite3_db_config(db_, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    sqlite3_wal_autocheckpoint(db_, 0);
  }
  ~Db() {
    sqlite3_finalize(probe_);
    sqlite3_close(db_);
  }
  sqlite3* get() { return db_; }
  void exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string m = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      if ((rc & 0xff) == SQLITE_BUSY)
        fail_runtime(std::string(sql) + ": database is locked (exclusive locking mode?)");
      fail_runtime(std::string(sql) + ": " + m);
    }
  }
  std::string text(const char* sql) {
    sqlite3_stmt* st = nullptr;
    int prc = sqlite3_prepare_v2(db_, sql, -1, &st, nullptr);
    if (prc != SQLITE_OK) {
      if ((prc & 0xff) == SQLITE_BUSY) fail_runtime(std::string(sql) + ": database is locked (exclusive locking mode?)");
      fail_runtime(sql + std::string(": ") + sqlite3_errmsg(db_));
    }
    int rc = sqlite3_step(st);
    std::string v;
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0)) v = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      if ((rc & 0xff) == SQLITE_BUSY) fail_runtime(std::string(sql) + ": database is locked (exclusive locking mode?)");
      fail_runtime(std::string(sql) + ": " + sqlite3_errstr(rc));
    }
    return v;
  }
  // BEGIN a read transaction and make it take its snapshot now.
  void begin_read() {
    exec("BEGIN");
    if (!probe_ && sqlite3_prepare_v2(db_, "SELECT 1 FROM sqlite_master LIMIT 1", -1, &probe_, nullptr) != SQLITE_OK)
      fail_runtime(std::string("prepare: ") + sqlite3_errmsg(db_));
    int rc = sqlite3_step(probe_);
    sqlite3_reset(probe_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      if ((rc & 0xff) == SQLITE_BUSY) fail_runtime("begin read: database is locked (exclusive locking mode?)");
      fail_runtime(std::string("begin read: ") + sqlite3_errstr(rc));
    }
  }
  void end_read() { exec("COMMIT"); }
 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* probe_ = nullptr;
};

class Tailer {
 public:
  Tailer(const Options& o, Writer& out) : o_(o), out_(out) {}
  ~Tailer() {
    // Connections first: closing any descriptor of the -shm or the database
    // drops every POSIX lock this process holds on it, theirs included.
    for (auto& r : r_) r.reset();
    ck_.reset();
    for (int fd : {lockfd_, shmfd_, dbfd_})
      if (fd >= 0) ::close(fd);
  }
  void run();

 private:
  void log(const std::string& m) {
    if (o_.log) o_.log(m);
  }
  void check_file();
  Shm read_shm();
  wal::WalHeader read_wal_header(int fd);
  int open_wal();
  void advance();
  void copy();
  void resync();
  bool try_resume();
  // Verify frames 1..n of the generation in fd; returns the running checksum.
  void scan(int fd, const wal::WalHeader& h, uint32_t n, uint32_t* c1, uint32_t* c2,
            std::unordered_map<uint32_t, uint32_t>* latest);
  void checkpoint(bool verbose = true);
  void force_restart();
  bool lock_writers(int64_t budget_us);
  void unlock_writers();
  void sync_fd(int fd, const std::string& name);
  bool begin_on(int next);

  const Options& o_;
  Writer& out_;
  std::unique_ptr<wal::StreamWriter> sw_;
  std::unique_ptr<Db> r_[2], ck_;
  int cur_ = -1;
  int dbfd_ = -1, shmfd_ = -1, lockfd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  uint32_t ps_ = 0;
  std::string wal_path_, shm_path_;
  wal::Position pos_;
  bool pos_emitted_ = false;
  bool need_header_ = true;  // pos_ salts known, seed/ckpt_seq not yet (no frames yet)
  std::vector<uint8_t> buf_;
  uint64_t emitted_ = 0;
  bool slot0_ = false;  // our read transaction is on read-mark slot 0
  uint32_t old_salt1_ = 0, old_salt2_ = 0;  // the generation before the last restart
  bool frame_pending();
  bool checkpointer_waiting();
  void gap_repin();
  bool gap_ = false, lost_ = false;
  bool unacked();
  int64_t last_advance_us_ = 0, last_force_us_ = 0;
  struct timespec ack_mtime_ {};
  ltx::Position ack_;
  bool have_ack_ = false, ack_overflow_ = false;
};

// True while frames emitted in the current generation are not covered by the
// acknowledgement file (re-read when its mtime changes).
bool Tailer::unacked() {
  if (o_.ack_path.empty() || pos_.frames == 0) return false;
  struct stat st {};
  if (::stat(o_.ack_path.c_str(), &st) == 0 &&
      (st.st_mtim.tv_sec != ack_mtime_.tv_sec || st.st_mtim.tv_nsec != ack_mtime_.tv_nsec)) {
    ack_mtime_ = st.st_mtim;
    try {
      have_ack_ = ltx::read_position_file(o_.ack_path, &ack_);
    } catch (const Error&) {
      have_ack_ = false;  // being replaced: the next change re-reads it
    }
  }
  uint64_t end = wal::frame_offset(pos_.frames + 1, ps_);
  uint32_t acked = 0;
  if (have_ack_ && ack_.wal_salt1 == pos_.salt1 && ack_.wal_salt2 == pos_.salt2 &&
      ack_.wal_offset > kWalHeaderSize)
    acked = uint32_t((ack_.wal_offset - kWalHeaderSize) / (kFrameHeaderSize + ps_));
  if (have_ack_ && ack_.wal_salt1 == pos_.salt1 && ack_.wal_salt2 == pos_.salt2 && ack_.wal_offset >= end)
    return false;
  if (pos_.frames - acked > o_.ack_max_frames) {
    if (!ack_overflow_) log("more than " + std::to_string(o_.ack_max_frames) + " frames unacknowledged: no longer holding them");
    ack_overflow_ = true;
    return false;
  }
  ack_overflow_ = false;
  return true;
}

// True when the frame after pos_ is already in the WAL file, valid, but not
// yet published in the wal-index: a commit is between its write() (which
// woke us) and the wal-index update (after the WAL fsync). No event will
// follow that update, so the caller re-checks shortly.
bool Tailer::frame_pending() {
  int fd = open_wal();
  if (fd < 0) return false;
  struct Closer { int fd; ~Closer() { ::close(fd); } } closer{fd};
  uint32_t c1 = pos_.ck1, c2 = pos_.ck2, salt1 = pos_.salt1, salt2 = pos_.salt2;
  bool be = pos_.big_endian;
  if (need_header_) {
    uint8_t h[kWalHeaderSize];
    if (pread_full(fd, h, sizeof h, 0) != sizeof h) return false;
    try {
      wal::WalHeader w = wal::WalHeader::parse(h);
      // An empty WAL's first writer picks new salts that reach the wal-index
      // only when it commits; a header of the generation we left is stale.
      if (w.page_size != ps_ || (w.salt1 == old_salt1_ && w.salt2 == old_salt2_)) return false;
      salt1 = w.salt1;
      salt2 = w.salt2;
      c1 = w.ck1;
      c2 = w.ck2;
      be = w.big_endian();
    } catch (const Error&) {
      return false;
    }
  }
  const size_t fs = kFrameHeaderSize + ps_;
  std::vector<uint8_t> f(fs);
  if (pread_full(fd, f.data(), fs, wal::frame_offset(pos_.frames + 1, ps_)) != fs) return false;
  if (get32(f.data() + 8) != salt1 || get32(f.data() + 12) != salt2) return false;
  wal::checksum(be, f.data(), 8, &c1, &c2);
  wal::checksum(be, f.data() + kFrameHeaderSize, ps_, &c1, &c2);
  return c1 == get32(f.data() + 16) && c2 == get32(f.data() + 20);
}

void Tailer::check_file() {
  dbfd_ = ::open(o_.db.c_str(), O_RDONLY | O_CLOEXEC);
  if (dbfd_ < 0) {
    // No such file, no access: retrying will not make the file appear.
    int e = errno;
    if (e == ENOENT || e == ENOTDIR || e == EACCES || e == ELOOP) fail_permanent(o_.db + ": " + std::strerror(e));
    fail_errno(o_.db);
  }
  struct stat st;
  if (fstat(dbfd_, &st) != 0) fail_errno(o_.db);
  if (S_ISDIR(st.st_mode)) fail_permanent(o_.db + ": is a directory");
  if (!S_ISREG(st.st_mode)) fail(Kind::Integrity, o_.db + ": not a SQLite database");
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  uint8_t h[100];
  if (pread_full(dbfd_, h, sizeof h, 0) != sizeof h || std::memcmp(h, "SQLite format 3", 16) != 0)
    fail(Kind::Integrity, o_.db + ": not a SQLite database");
  ps_ = get16(h + 16) == 1 ? 65536 : get16(h + 16);
  if (ps_ < 512 || ps_ > 65536 || (ps_ & (ps_ - 1))) fail(Kind::Integrity, o_.db + ": invalid page size");
  if (h[18] != 2 || h[19] != 2) fail_permanent(o_.db + ": not in WAL mode (PRAGMA journal_mode=WAL)");
}

Shm Tailer::read_shm() {
  if (shmfd_ < 0) {
    shmfd_ = ::open(shm_path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (shmfd_ < 0) fail_errno(shm_path_);
  }
  uint8_t b[136];
  for (int i = 0; i < 1000; i++) {
    if (pread_full(shmfd_, b, sizeof b, 0) != sizeof b) fail_runtime(shm_path_ + ": short wal-index");
    if (std::memcmp(b, b + 48, 48) != 0 || b[12] != 1) {
      usleep(i < 10 ? 0 : 100);
      continue;
    }
    Shm s;
    uint16_t sz;
    std::memcpy(&sz, b + 14, 2);
    s.page_size = sz == 1 ? 65536 : sz;
    std::memcpy(&s.mx_frame, b + 16, 4);
    std::memcpy(&s.n_page, b + 20, 4);
    s.salt1 = get32(b + 32);
    s.salt2 = get32(b + 36);
    std::memcpy(&s.n_backfill, b + 96, 4);
    if (s.page_size != ps_ && s.page_size != 0)
      fail_integrity(o_.db + ": page size changed from " + std::to_string(ps_) + " to " + std::to_string(s.page_size));
    return s;
  }
  fail_runtime(shm_path_ + ": wal-index header never settled");
}

int Tailer::open_wal() {
  int fd = ::open(wal_path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno != ENOENT) fail_errno(wal_path_);
  return fd;
}

wal::WalHeader Tailer::read_wal_header(int fd) {
  uint8_t h[kWalHeaderSize];
  if (fd < 0 || pread_full(fd, h, sizeof h, 0) != sizeof h) fail_integrity(wal_path_ + ": truncated WAL header");
  wal::WalHeader w = with_context(wal_path_, [&] { return wal::WalHeader::parse(h); });
  if (w.page_size != ps_) fail_integrity(o_.db + ": page size changed from " + std::to_string(ps_) + " to " + std::to_string(w.page_size));
  return w;
}

void Tailer::scan(int fd, const wal::WalHeader& h, uint32_t n, uint32_t* c1, uint32_t* c2,
                  std::unordered_map<uint32_t, uint32_t>* latest) {
  const size_t fs = kFrameHeaderSize + ps_;
  uint32_t a = h.ck1, b = h.ck2;
  for (uint32_t i = 1; i <= n; i++) {
    uint64_t off = wal::frame_offset(i, ps_);
    if (pread_full(fd, buf_.data(), fs, off) != fs) fail_integrity(wal_path_ + ": frame " + std::to_string(i) + ": truncated");
    const uint8_t* f = buf_.data();
    if (get32(f + 8) != h.salt1 || get32(f + 12) != h.salt2)
      fail_integrity(wal_path_ + ": frame " + std::to_string(i) + " at offset " + std::to_string(off) + ": salt mismatch");
    wal::checksum(h.big_endian(), f, 8, &a, &b);
    wal::checksum(h.big_endian(), f + kFrameHeaderSize, ps_, &a, &b);
    if (a != get32(f + 16) || b != get32(f + 20))
      fail_integrity(wal_path_ + ": frame " + std::to_string(i) + " at offset " + std::to_string(off) + ": checksum mismatch");
    if (latest) (*latest)[get32(f)] = i;
  }
  *c1 = a;
  *c2 = b;
}

// Copy every committed frame after pos_ to the stream. A read transaction is
// held by the caller for the whole call.
void Tailer::copy() {
  Shm s = read_shm();
  if (s.salt1 != pos_.salt1 || s.salt2 != pos_.salt2) {
    // The WAL restarted. We held a read transaction since pos_ was last
    // brought up to date, so the old generation ended at pos_ (see top).
    log("WAL restarted: salts " + hex08(s.salt1) + ":" + hex08(s.salt2));
    if (gap_ && s.salt1 != pos_.salt1 + 1) {
      gap_ = false;
      lost_ = true;  // more than one restart while we held no lock
      return;
    }
    old_salt1_ = pos_.salt1;
    old_salt2_ = pos_.salt2;
    pos_ = wal::Position{};
    pos_.salt1 = s.salt1;
    pos_.salt2 = s.salt2;
    need_header_ = true;
    pos_emitted_ = false;
  }
  if (s.mx_frame == pos_.frames) return;
  if (s.mx_frame < pos_.frames) fail_integrity(wal_path_ + ": WAL shrank under the same salts");
  int fd = open_wal();
  if (fd < 0) fail_runtime(wal_path_ + ": WAL file vanished");
  struct Closer { int fd; ~Closer() { ::close(fd); } } closer{fd};
  if (need_header_) {
    wal::WalHeader h = read_wal_header(fd);
    if (h.salt1 != pos_.salt1 || h.salt2 != pos_.salt2) fail_runtime(wal_path_ + ": WAL header does not match the wal-index");
    pos_.ckpt_seq = h.ckpt_seq;
    pos_.big_endian = h.big_endian();
    pos_.ck1 = h.ck1;
    pos_.ck2 = h.ck2;
    need_header_ = false;
  }
  if (!pos_emitted_) {
    sw_->position(pos_);
    pos_emitted_ = true;
  }
  const size_t fs = kFrameHeaderSize + ps_;
  const uint32_t chunk = uint32_t(std::max<size_t>(1, (256u << 10) / fs));
  int64_t ts = now_ms();
  while (pos_.frames < s.mx_frame) {
    uint32_t first = pos_.frames + 1;
    uint32_t n = std::min(chunk, s.mx_frame - pos_.frames);
    if (buf_.size() < n * fs) buf_.resize(n * fs);
    uint64_t off = wal::frame_offset(first, ps_);
    if (pread_full(fd, buf_.data(), n * fs, off) != n * fs)
      fail_integrity(wal_path_ + ": frame " + std::to_string(first) + ": truncated below the wal-index end");
    for (uint32_t k = 0; k < n; k++) {
      const uint8_t* f = buf_.data() + k * fs;
      uint32_t no = first + k;
      uint64_t at = off + k * fs;
      if (get32(f + 8) != pos_.salt1 || get32(f + 12) != pos_.salt2)
        fail_integrity(wal_path_ + ": frame " + std::to_string(no) + " at offset " + std::to_string(at) + ": salt mismatch");
      uint32_t a = pos_.ck1, b = pos_.ck2;
      wal::checksum(pos_.big_endian, f, 8, &a, &b);
      wal::checksum(pos_.big_endian, f + kFrameHeaderSize, ps_, &a, &b);
      if (a != get32(f + 16) || b != get32(f + 20))
        fail_integrity(wal_path_ + ": frame " + std::to_string(no) + " at offset " + std::to_string(at) + ": checksum mismatch");
      sw_->frame(no, ts, f);
      pos_.frames = no;
      pos_.ck1 = a;
      pos_.ck2 = b;
      emitted_++;
    }
  }
  sw_->flush();
}

// True when another process holds the WAL write and checkpoint locks: a
// FULL/RESTART/TRUNCATE checkpoint that may be waiting for our read lock.
bool Tailer::checkpointer_waiting() {
  if (shmfd_ < 0) return false;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 120;  // WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK; +1 is WAL_CKPT_LOCK
  fl.l_len = 2;
  if (fcntl(shmfd_, F_GETLK, &fl) != 0) return false;
  return fl.l_type == F_WRLCK && fl.l_start == 120 && fl.l_len == 2;
}

// Step aside for a waiting checkpointer: our two connections share read
// slot 1 when both are current, and a FULL/RESTART/TRUNCATE checkpoint that
// saw an older mark there waits for that slot without looking again. Only
// while it holds the write lock and we have copied every frame: nothing can
// be appended meanwhile, so a restart discards only frames already written
// out. We re-pin as soon as it lets go (1 ms polls, at most 2 s); copy()
// then demands that at most one restart happened (salt1 advances by one per
// restart), else it resyncs.
void Tailer::gap_repin() {
  Shm s = read_shm();
  if (s.mx_frame != pos_.frames || s.salt1 != pos_.salt1 || s.salt2 != pos_.salt2) return;
  log("stepping aside for a waiting checkpoint");
  r_[cur_]->end_read();
  int64_t t0 = mono_ms();
  do {
    usleep(1000);
  } while (checkpointer_waiting() && mono_ms() - t0 < 2000);
  gap_ = true;
  r_[cur_]->begin_read();
  copy();
  gap_ = false;
  slot0_ = false;
}

// Begin a read transaction on r_[next]; true when it landed on slot 0.
// SQLite puts a reader on slot 0 exactly when mxFrame == nBackfill as it
// begins; both are monotonic within a generation, so equal brackets prove it.
bool Tailer::begin_on(int next) {
  Shm a = read_shm();
  r_[next]->begin_read();
  Shm b = read_shm();
  return a.salt1 == b.salt1 && a.salt2 == b.salt2 && a.mx_frame == b.mx_frame &&
         a.n_backfill == b.n_backfill && a.mx_frame == a.n_backfill;
}

// Begin the next read transaction, copy, then release the previous one.
void Tailer::advance() {
  int next = cur_ < 0 ? 0 : 1 - cur_;
  slot0_ = begin_on(next);
  try {
    copy();
  } catch (...) {
    r_[next]->end_read();
    throw;
  }
  if (slot0_ && cur_ >= 0 && unacked()) {
    // On slot 0 we would let the WAL restart over frames the destination
    // does not have yet: stay on the older read transaction.
    r_[next]->end_read();
    slot0_ = false;
    return;
  }
  if (cur_ >= 0) r_[cur_]->end_read();
  cur_ = next;
}

void Tailer::checkpoint(bool verbose) {
  int nlog = 0, nckpt = 0;
  int rc = sqlite3_wal_checkpoint_v2(ck_->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
    fail_runtime(std::string("checkpoint: ") + sqlite3_errmsg(ck_->get()));
  if (verbose) log("checkpoint: " + std::to_string(nckpt) + " of " + std::to_string(nlog) + " frames");
}

// Hold off writers as SQLite's own WAL write lock does: an open file
// description lock (F_OFD_SETLK) on the write-lock byte of the wal-index
// (walformat.html, byte 120). Other processes' writers and checkpoints
// (POSIX locks) find it taken and wait in their busy handlers; our own
// connections never write. Probed directly, one system call a try, rather
// than with BEGIN IMMEDIATE: the write lock of a writer that never pauses is
// free only for microseconds between its transactions, and a BEGIN IMMEDIATE
// attempt (a read transaction first) is longer than that. Spins for 200 us,
// then tries every 50-100 us until budget_us.
bool Tailer::lock_writers(int64_t budget_us) {
  if (lockfd_ < 0) {
    lockfd_ = ::open(shm_path_.c_str(), O_RDWR | O_CLOEXEC);
    if (lockfd_ < 0) fail_errno(shm_path_);
  }
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 120;  // WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK
  fl.l_len = 1;
  const int64_t t0 = mono_us();
  for (;;) {
    if (fcntl(lockfd_, F_OFD_SETLK, &fl) == 0) return true;
    if (errno != EAGAIN && errno != EACCES && errno != EINTR) fail_errno(shm_path_ + ": lock");
    int64_t t = mono_us() - t0;
    if (t >= budget_us) return false;
    if (t >= 200) {
      struct timespec ts {0, 50000};
      nanosleep(&ts, nullptr);
    }
  }
}

void Tailer::unlock_writers() {
  struct flock fl {};
  fl.l_type = F_UNLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 120;
  fl.l_len = 1;
  if (fcntl(lockfd_, F_OFD_SETLK, &fl) != 0) fail_errno(shm_path_ + ": unlock");
}

// fdatasync, so that a checkpoint's own sync later finds little to write.
void Tailer::sync_fd(int fd, const std::string& name) {
  if (fd >= 0 && ::fdatasync(fd) != 0) fail_errno("fdatasync " + name);
}

// A writer that never pauses leaves the WAL never fully backfilled when we
// begin a read: we never land on slot 0, the WAL never restarts and grows
// without bound, and the application's autocheckpoint then runs (and syncs)
// after every commit. Make the pause: hold off writers for a moment (only if
// the write lock is free within a few milliseconds), copy the frames
// committed since the last copy, let go of our read lock, checkpoint
// everything, and begin again on slot 0. The next writer restarts the WAL;
// slot 0 keeps any checkpoint of the new generation away from the database
// file until we have copied it, as when we land there by ourselves.
//
// A writer that finds the lock taken sleeps a whole millisecond in SQLite's
// busy handler (then two more), so everything that can be done before is
// done before: copy and backfill up to our own mark (the main loop has
// backfilled in quarter steps already), sync the database file and the WAL,
// copy again. Under the lock only the frames of the last moment remain to
// copy, backfill and sync: about half a millisecond. Each of those syncs
// takes up to a few milliseconds, so frames committed meanwhile are copied
// between them (our read transaction still holds them), not all at the end.
void Tailer::force_restart() {
  advance();
  if (slot0_) return;
  checkpoint(false);
  copy();
  sync_fd(dbfd_, o_.db);
  copy();
  {
    int fd = open_wal();
    struct Closer { int fd; ~Closer() { if (fd >= 0) ::close(fd); } } closer{fd};
    sync_fd(fd, wal_path_);
  }
  advance();
  if (slot0_) return;
  const int64_t w0 = mono_us();
  if (!lock_writers(2000)) {
    log("restart: the write lock was not free for 2 ms; trying again later");
    return;
  }
  const int64_t h0 = mono_us();
  struct Unlock {
    Tailer* t;
    ~Unlock() { t->unlock_writers(); }
  } unlock{this};
  // Give up rather than hold writers while copying a backlog (the output
  // may be slow to drain).
  if (read_shm().mx_frame - pos_.frames > 256) {
    log("restart: " + std::to_string(read_shm().mx_frame - pos_.frames) + " frames behind; trying again later");
    return;
  }
  advance();
  if (slot0_) return;
  // Our own read mark pins the last frames: release it, backfill them
  // (nothing can be appended while writers are held), begin on slot 0.
  const int other = 1 - cur_;
  r_[cur_]->end_read();
  cur_ = -1;
  // The application's autocheckpoint may hold the checkpoint lock (a
  // PASSIVE checkpoint does not wait): retry for a few milliseconds.
  int nlog = 0, nckpt = 0, rc;
  const int64_t t0 = mono_us();
  while ((rc = sqlite3_wal_checkpoint_v2(r_[other]->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt)) ==
             SQLITE_BUSY &&
         mono_us() - t0 < 5000)
    usleep(100);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
    fail_runtime(std::string("checkpoint: ") + sqlite3_errmsg(r_[other]->get()));
  slot0_ = begin_on(other);
  cur_ = other;
  log("restart: " + std::to_string(nckpt) + " of " + std::to_string(nlog) + " frames backfilled" +
      (slot0_ ? "; the next writer restarts the WAL" : " (another reader holds older frames)") +
      "; waited " + std::to_string(h0 - w0) + " us for the write lock, held it " + std::to_string(mono_us() - h0) + " us");
}

// One consistent full-page transaction of the database. The snapshot is
// taken while briefly holding the write lock so its WAL end (mxFrame) is
// known exactly; pages come from the newest frame <= mxFrame, else the file.
void Tailer::resync() {
  // Continuity is being re-established: hold no read lock while waiting for
  // the write lock (a waiting RESTART checkpoint would wait for us in turn).
  if (cur_ >= 0) r_[cur_]->end_read();
  cur_ = -1;
  int next = 0;
  Shm s;
  ck_->exec("BEGIN IMMEDIATE");
  try {
    r_[next]->begin_read();
    s = read_shm();
  } catch (...) {
    ck_->exec("ROLLBACK");
    throw;
  }
  ck_->exec("ROLLBACK");
  cur_ = next;
  uint32_t npages = uint32_t(std::stoul(r_[next]->text("PRAGMA page_count")));
  uint32_t ps = uint32_t(std::stoul(r_[next]->text("PRAGMA page_size")));
  if (ps != ps_) fail_integrity(o_.db + ": page size changed from " + std::to_string(ps_) + " to " + std::to_string(ps));
  std::unordered_map<uint32_t, uint32_t> latest;
  wal::Position p;
  p.salt1 = s.salt1;
  p.salt2 = s.salt2;
  int fd = -1;
  const size_t fs = kFrameHeaderSize + ps_;
  if (buf_.size() < fs) buf_.resize(fs);
  if (s.mx_frame > 0) {
    fd = open_wal();
    wal::WalHeader h = read_wal_header(fd);
    if (h.salt1 != s.salt1 || h.salt2 != s.salt2) fail_runtime(wal_path_ + ": WAL header does not match the wal-index");
    scan(fd, h, s.mx_frame, &p.ck1, &p.ck2, &latest);
    p.frames = s.mx_frame;
    p.ckpt_seq = h.ckpt_seq;
    p.big_endian = h.big_endian();
  }
  struct Closer { int fd; ~Closer() { if (fd >= 0) ::close(fd); } } closer{fd};
  log("resync: " + std::to_string(npages) + " pages, " + std::to_string(latest.size()) + " from the WAL");
  sw_->resync_begin(npages, now_ms());
  std::vector<uint8_t> page(ps_);
  const uint32_t lock = lock_pgno(ps_);
  for (uint32_t pg = 1; pg <= npages; pg++) {
    if (pg == lock) continue;
    auto it = latest.find(pg);
    if (it != latest.end()) {
      if (pread_full(fd, buf_.data(), fs, wal::frame_offset(it->second, ps_)) != fs)
        fail_integrity(wal_path_ + ": truncated frame");
      std::memcpy(page.data(), buf_.data() + kFrameHeaderSize, ps_);
    } else if (pread_full(dbfd_, page.data(), ps_, uint64_t(pg - 1) * ps_) != ps_) {
      fail_integrity(o_.db + ": page " + std::to_string(pg) + " beyond the end of the file");
    }
    sw_->resync_page(pg, page.data());
  }
  sw_->resync_end();
  pos_ = p;
  need_header_ = p.frames == 0;
  pos_emitted_ = false;
  // Always close a resync with a position, so the consumer knows at once
  // where the WAL continues. With no frames yet the checksum seed is not
  // known: a second position with the seed precedes the first frame.
  sw_->position(pos_);
  pos_emitted_ = !need_header_;
  sw_->flush();
}

// Continue at the --from position when this WAL generation still holds it.
bool Tailer::try_resume() {
  const uint64_t fs = kFrameHeaderSize + ps_;
  if (o_.from_offset < kWalHeaderSize || (o_.from_offset - kWalHeaderSize) % fs != 0) {
    log("resume: offset " + std::to_string(o_.from_offset) + " is not a frame boundary");
    return false;
  }
  uint32_t n = uint32_t((o_.from_offset - kWalHeaderSize) / fs);
  if (o_.from_salt1 == 0 && o_.from_salt2 == 0) {
    // Taken when no WAL existed: any number of generations may have come
    // and been checkpointed since, and an empty WAL looks the same.
    log("resume: position predates the WAL");
    return false;
  }
  Shm s = read_shm();
  if (s.salt1 != o_.from_salt1 || s.salt2 != o_.from_salt2 || s.mx_frame < n) {
    log("resume: the WAL no longer holds the position");
    return false;
  }
  wal::Position p;
  p.salt1 = s.salt1;
  p.salt2 = s.salt2;
  if (s.mx_frame > 0) {
    int fd = open_wal();
    struct Closer { int fd; ~Closer() { if (fd >= 0) ::close(fd); } } closer{fd};
    wal::WalHeader h = read_wal_header(fd);
    if (h.salt1 != s.salt1 || h.salt2 != s.salt2) return false;
    buf_.resize(fs);
    scan(fd, h, n, &p.ck1, &p.ck2, nullptr);
    if (n > 0 && get32(buf_.data() + 4) == 0) {
      log("resume: frame " + std::to_string(n) + " is not a commit frame");
      return false;
    }
    p.frames = n;
    p.ckpt_seq = h.ckpt_seq;
    p.big_endian = h.big_endian();
    pos_ = p;
    need_header_ = false;
    sw_->position(pos_);
    pos_emitted_ = true;
  } else {
    pos_ = p;
    need_header_ = true;
  }
  log("resume at frame " + std::to_string(n));
  return true;
}

void Tailer::run() {
  check_file();
  wal_path_ = o_.db + "-wal";
  shm_path_ = o_.db + "-shm";
  for (auto& r : r_) r.reset(new Db(o_.db, o_.busy_timeout_ms));
  ck_.reset(new Db(o_.db, o_.busy_timeout_ms));
  std::string mode = ck_->text("PRAGMA journal_mode");
  if (mode != "wal") fail_permanent(o_.db + ": not in WAL mode (journal_mode is " + mode + ")");
  with_context(o_.db, [&] { r_[0]->begin_read(); });  // refuses exclusive locking mode
  cur_ = 0;
  if (::access(shm_path_.c_str(), F_OK) != 0)
    fail_runtime(o_.db + ": no wal-index (exclusive locking mode?)");
  sw_.reset(new wal::StreamWriter(out_, ps_));
  buf_.resize(kFrameHeaderSize + ps_);
  if (o_.snapshot) {
    resync();
    r_[cur_]->end_read();
    return;
  }
  if (!(o_.have_from && try_resume())) resync();
  advance();

  int ino = -1;
  std::string dir = ".", base = wal_path_;
  size_t slash = wal_path_.rfind('/');
  if (slash != std::string::npos) {
    dir = slash == 0 ? "/" : wal_path_.substr(0, slash);
    base = wal_path_.substr(slash + 1);
  }
  const uint32_t mask = IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_CLOSE_WRITE;
  int wd = -1;
  if (o_.poll_ms <= 0) {
    ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino >= 0 && (wd = inotify_add_watch(ino, dir.c_str(), mask)) < 0) {
      ::close(ino);
      ino = -1;
    }
    if (ino < 0) log("inotify unavailable; polling");
  }
  struct Closer { int fd; ~Closer() { if (fd >= 0) ::close(fd); } } closer{ino};
  int poll_ms = ino >= 0 ? 0 : (o_.poll_ms > 0 ? o_.poll_ms : 100);
  // Every write() to a watched directory's files costs the writer an
  // inotify event (fsnotify: ~11 % of a full-speed writer's CPU, measured).
  // Under a stream of commits we copy once per coalesce_us anyway: drop the
  // watch while each copy finds kBusyFrames frames or more, and wake on that
  // period instead; watch again once copies have found nothing for 5 ms
  // (not after one empty copy: a forced restart leaves the writer asleep in
  // its busy handler for a millisecond), and look once more right away (a
  // commit may have slipped in before the watch).
  const uint64_t kBusyFrames = 8;
  const int64_t quiet_us = std::max<int64_t>(5000, 2 * int64_t(o_.coalesce_us));
  bool watching = ino >= 0, recheck = false;
  int64_t busy_us = 0;  // last copy that found frames
  int64_t last_change = mono_ms(), pending_since = last_change;
  int pending_ms = 0;
  bool stale_pending = false;
  alignas(inotify_event) char evbuf[4096];
  while (!(o_.stop && *o_.stop)) {
    // On a slot >= 1 we would hold up a RESTART/TRUNCATE checkpoint of the
    // application: re-pin often so it can proceed (we land on slot 0 once
    // everything is backfilled). Back off once idle and still not on slot 0
    // (another reader lags behind: the checkpoint would wait for it anyway).
    int timeout = -1;
    if (!slot0_) timeout = mono_ms() - last_change <= o_.idle_ms + 100 ? o_.refresh_ms : 1000;
    if (pending_ms > 0) timeout = timeout < 0 ? pending_ms : std::min(timeout, pending_ms);
    if (poll_ms > 0) timeout = timeout < 0 ? poll_ms : std::min(timeout, poll_ms);
    if (recheck) timeout = 0;
    recheck = false;
    bool changed = false;
    if (ino >= 0 && !watching) {
      changed = true;  // paced by the coalescing sleep below
    } else if (ino >= 0) {
      pollfd pfd{ino, POLLIN, 0};
      int rc = ::poll(&pfd, 1, timeout);
      if (rc < 0 && errno != EINTR) fail_errno("poll");
      if (rc > 0) {
        ssize_t k;
        while ((k = ::read(ino, evbuf, sizeof evbuf)) > 0) {
          for (char* p = evbuf; p < evbuf + k;) {
            auto* ev = reinterpret_cast<inotify_event*>(p);
            if (ev->len && (base == ev->name || base.compare(0, base.size() - 4, ev->name) == 0)) changed = true;
            p += sizeof(inotify_event) + ev->len;
          }
        }
      }
    } else {
      struct timespec ts{timeout / 1000, long(timeout % 1000) * 1000000};
      nanosleep(&ts, nullptr);
      changed = true;
    }
    if (o_.stop && *o_.stop) break;
    struct stat st;
    if (::stat(o_.db.c_str(), &st) != 0 || st.st_ino != ino_ || st.st_dev != dev_)
      fail_runtime(o_.db + ": database file was replaced or removed");
    // Coalesce: under a stream of commits, copy at most once per
    // coalesce_us, so the application's writer is not slowed by a copy (and
    // two read-lock changes) after every single commit.
    if (o_.coalesce_us > 0 && changed) {
      int64_t since = mono_us() - last_advance_us_;
      if (since < o_.coalesce_us) usleep(useconds_t(o_.coalesce_us - since));
    }
    uint64_t before = emitted_;
    advance();
    last_advance_us_ = mono_us();
    if (emitted_ != before) busy_us = last_advance_us_;
    if (ino >= 0 && o_.coalesce_us > 0) {
      if (watching && emitted_ - before >= kBusyFrames) {
        if (inotify_rm_watch(ino, wd) == 0) watching = false;
      } else if (!watching && last_advance_us_ - busy_us >= quiet_us) {
        wd = inotify_add_watch(ino, dir.c_str(), mask);
        if (wd < 0) {
          log("inotify unavailable; polling");
          ::close(ino);
          ino = closer.fd = -1;
          poll_ms = o_.poll_ms > 0 ? o_.poll_ms : 100;
        }
        watching = recheck = true;
      }
    }
    if (!slot0_ && checkpointer_waiting()) gap_repin();
    if (lost_) {
      log("continuity lost across a read-lock gap: resync");
      lost_ = false;
      resync();
    }
    int64_t now = mono_ms();
    if (emitted_ != before) last_change = now;
    // A commit written but not yet published: look again in 1, 2, 4 .. 64 ms,
    // for at most 2 s (a rolled-back transaction can leave valid frames).
    if (emitted_ != before) stale_pending = false;
    if (!frame_pending()) {
      pending_ms = 0;
      stale_pending = false;
    } else if (!stale_pending) {
      if (pending_ms == 0) pending_since = now;
      if (now - pending_since < 2000) {
        pending_ms = pending_ms == 0 ? 1 : std::min(pending_ms * 2, 64);
      } else {
        pending_ms = 0;
        stale_pending = true;
      }
    }
    (void)changed;
    Shm s = read_shm();
    uint32_t unbackfilled = s.mx_frame - s.n_backfill;
    if (unbackfilled > 0 &&
        ((o_.checkpoint_pages && unbackfilled >= o_.checkpoint_pages) || now - last_change >= o_.idle_ms)) {
      checkpoint();
      advance();  // re-pin past the checkpoint (slot 0 when all is backfilled)
      last_change = now;
      s = read_shm();
    } else if (o_.checkpoint_pages >= 4 && !slot0_ && unbackfilled >= o_.checkpoint_pages / 4) {
      // Under load, backfill up to our mark in quarter steps, outside any
      // lock: a forced restart then finds little left to do.
      checkpoint(false);
      s = read_shm();
    }
    // The WAL is past 3/4 of the threshold and we hold it (not on slot 0):
    // checkpoints may keep it backfilled, but only a pause lets it restart.
    // Below the threshold, so that the application's own autocheckpoint
    // (SQLite's default is 1000 pages, like ours) seldom starts: past it it
    // runs, and syncs, after every commit while we hold the WAL. Not lower:
    // each restart costs the writers a millisecond. At most one attempt per
    // millisecond.
    if (o_.checkpoint_pages && !slot0_ && s.mx_frame >= o_.checkpoint_pages / 4 * 3 &&
        mono_us() - last_force_us_ >= 1000 && !unacked()) {
      last_force_us_ = mono_us();
      force_restart();
    }
  }
  advance();  // stopping: write out everything committed so far
  sw_->flush();
}

}  // namespace

void run(const Options& o, Writer& out) {
  Tailer t(o, out);
  t.run();
}

}  // namespace ltx::tail
