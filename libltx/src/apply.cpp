#include "ltx/apply.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ltx/bytes.h"
#include "ltx/error.h"

namespace ltx {

namespace {

void copy_fd(int from, int to, uint64_t size) {
  uint64_t done = 0;
  while (done < size) {
    ssize_t n = ::copy_file_range(from, nullptr, to, nullptr, size_t(size - done), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == ENOSYS || errno == EINVAL) break;
      fail_errno("copy database");
    }
    if (n == 0) break;
    done += uint64_t(n);
  }
  std::vector<uint8_t> buf(1 << 20);
  while (done < size) {
    size_t k = pread_full(from, buf.data(), std::min<uint64_t>(buf.size(), size - done), done);
    if (k == 0) fail_runtime("copy database: file shrank while copying");
    pwrite_all(to, buf.data(), k, done);
    done += k;
  }
}

// SQLite's test (pager.c, hasHotJournal): present, not empty, first byte not 0.
bool journal_looks_hot(const std::string& j) {
  int fd = ::open(j.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    fail_errno("open " + j);
  }
  uint8_t b = 0;
  size_t n = 0;
  try {
    n = pread_full(fd, &b, 1, 0);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return n == 1 && b != 0;
}

}  // namespace

void settle_journal(const std::string& db_path, int busy_ms) {
  const std::string j = db_path + "-journal";
  if (!journal_looks_hot(j)) return;
  struct stat st {};
  if (::stat(db_path.c_str(), &st) != 0 && errno != ENOENT) fail_errno("stat " + db_path);
  if (st.st_size == 0)
    fail_runtime(j + ": hot journal of an earlier " + db_path +
                 " that is gone; SQLite would roll it into the new database (move it away with its database, or remove it)");
  sqlite3* h = nullptr;
  int rc = sqlite3_open_v2(db_path.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(h, busy_ms);
    rc = sqlite3_exec(h, "SELECT count(*) FROM sqlite_master", nullptr, nullptr, nullptr);  // rolls back
  }
  std::string m = h ? sqlite3_errmsg(h) : sqlite3_errstr(rc);
  sqlite3_close(h);
  if (rc != SQLITE_OK) fail_runtime(j + ": rolling back the hot journal through SQLite: " + m);
  if (journal_looks_hot(j))
    fail_runtime(j + ": a transaction is open on " + db_path + " (try again when it has ended)");
}

Applier::Applier(const std::string& db_path) : path_(db_path) {
  struct stat st {};
  int src = ::open(db_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0 && errno != ENOENT) fail_errno("open " + db_path);
  remove_stale_temps(db_path);
  // A new database gets 0666 less the umask, as any new file; a replaced one
  // keeps its mode.
  int mode = 0666;
  bool keep_mode = src >= 0 && ::fstat(src, &st) == 0;
  if (keep_mode) mode = int(st.st_mode & 07777);
  tmp_ = std::make_unique<AtomicFile>(db_path, mode);
  if (keep_mode && ::fchmod(tmp_->fd(), mode_t(mode)) != 0) fail_errno("chmod " + tmp_->temp_path());
  if (src >= 0) {
    try {
      copy_fd(src, tmp_->fd(), uint64_t(st.st_size));
    } catch (...) {
      ::close(src);
      throw;
    }
    ::close(src);
    if (st.st_size > 0) {
      // Page size from the SQLite header; it must agree with the LTX files.
      uint8_t h[100];
      if (pread_full(tmp_->fd(), h, 100, 0) == 100 && std::memcmp(h, "SQLite format 3", 16) == 0) {
        uint32_t ps = get16(h + 16);
        res_.page_size = ps == 1 ? 65536 : ps;
      }
    }
  }
  if (src < 0 || st.st_size == 0) {
    ck_known_ = true;
    res_.checksum = kChecksumFlag;
  } else if (res_.page_size == 0) {
    fail_integrity(db_path + ": not a SQLite database");
  } else {
    if (uint64_t(st.st_size) % res_.page_size != 0)
      fail_integrity(db_path + ": size is not a multiple of the page size");
    npages_ = uint64_t(st.st_size) / res_.page_size;
  }
}

Applier::~Applier() { end_trial(); }

uint64_t Applier::current_checksum() {
  if (!ck_known_) {
    res_.checksum = npages_ ? db_checksum_fd(tmp_->fd(), res_.page_size, npages_) : kChecksumFlag;
    ck_known_ = true;
  }
  return res_.checksum;
}

int Applier::apply_stream(Reader& r, const std::string& name) {
  int n = 0;
  for (;;) {
    Decoder d(r);
    std::string ctx = name;
    bool more = with_context(ctx, [&] { return d.read_header(); });
    if (!more) break;
    ctx = name + ": " + format_filename(d.header().min_txid, d.header().max_txid);
    with_context(ctx, [&] { apply_one(d); });
    n++;
  }
  return n;
}

void Applier::apply_file(Reader& r) {
  Decoder d(r);
  if (!d.read_header()) fail_integrity("no LTX data");
  apply_one(d);
}

void Applier::apply_one(Decoder& d) {
  const Header& h = d.header();
  if (res_.page_size != 0 && h.page_size != res_.page_size)
    fail_integrity("page size " + std::to_string(h.page_size) + " does not match database page size " +
                   std::to_string(res_.page_size));
  if (res_.files > 0 && !h.snapshot() && h.min_txid != res_.txid + 1)
    fail_integrity("TXID gap: expected " + hex16(res_.txid + 1) + ", got " + hex16(h.min_txid));
  res_.page_size = h.page_size;
  const uint32_t ps = h.page_size;
  const uint32_t lock = lock_pgno(ps);
  const int fd = tmp_->fd();
  // Bounded before a page is written: the size the file claims, and the
  // growth against the room the temp copy has (it would end as a sparse
  // file, or full disk, of whatever Commit says).
  check_max_size(h, max_size_);
  const uint64_t have = npages_ * ps;  // the copy's size: pages are rewritten in place
  if (h.db_bytes() > have)
    check_room(free_bytes(fd), h.db_bytes() - have,
               "commit " + std::to_string(h.commit) + " grows the database to " + std::to_string(h.db_bytes()) + " bytes");
  if (h.snapshot()) {
    // A snapshot replaces everything: the fold restarts from its pages.
    res_.checksum = kChecksumFlag;
    ck_known_ = !h.no_checksum();
    if (!ck_known_) res_.checksum = 0;
  } else if (!h.no_checksum()) {
    uint64_t cur = current_checksum();
    if (cur != h.pre_apply)
      fail_integrity("pre-apply checksum mismatch: database " + hex16(cur) + ", file " +
                     hex16(h.pre_apply));
  } else {
    ck_known_ = false;
  }
  const bool track = ck_known_;
  std::vector<uint8_t> page(ps), old(ps);
  const uint64_t old_n = h.snapshot() ? 0 : npages_;
  DbChecksum ck(res_.checksum, old_n, ps);
  uint32_t pgno;
  while (d.next_page(&pgno, page.data())) {
    uint64_t off = uint64_t(pgno - 1) * ps;
    if (trial_ && pgno <= npages_) save_page(pgno);
    if (track) {
      if (ck.had(pgno) && pread_full(fd, old.data(), ps, off) != ps)
        fail_integrity("database shorter than its page count");
      ck.write(pgno, old.data(), page.data());
    }
    pwrite_all(fd, page.data(), ps, off);
  }
  const Trailer& t = d.finish();
  // Shrink: fold out pages past Commit; grow: account for unwritten pages.
  if (track) {
    for (uint64_t p = uint64_t(h.commit) + 1; p <= old_n; p++) {
      if (p == lock) continue;
      if (pread_full(fd, old.data(), ps, (p - 1) * ps) != ps) fail_integrity("database shorter than its page count");
      ck.drop(uint32_t(p), old.data());
    }
    ck.end_at(h.commit);
  }
  if (trial_)
    for (uint64_t p = uint64_t(h.commit) + 1; p <= npages_; p++) save_page(uint32_t(p));
  if (::ftruncate(fd, off_t(uint64_t(h.commit) * ps)) != 0) fail_errno("truncate");
  npages_ = h.commit;
  uint64_t sum = ck.value();
  if (h.commit == 0) {
    sum = kChecksumFlag;
    ck_known_ = true;
  } else if (track) {
    ck_known_ = true;
  }
  res_.checksum = ck_known_ ? sum : 0;
  if (!h.no_checksum()) {
    uint64_t cur = current_checksum();
    if (cur != t.post_apply)
      fail_integrity("post-apply checksum mismatch: database " + hex16(cur) + ", file " +
                     hex16(t.post_apply));
  }
  res_.txid = h.max_txid;
  res_.commit = h.commit;
  res_.files++;
}

void Applier::begin_trial(const std::string& tmpdir) {
  end_trial();
  auto t = std::make_unique<Trial>();
  t->fd = ::open(tmpdir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (t->fd < 0) fail_errno("create temp file in " + tmpdir);
  t->res = res_;
  t->npages = npages_;
  t->ck_known = ck_known_;
  trial_ = std::move(t);
}

void Applier::save_page(uint32_t pgno) {
  const uint32_t ps = res_.page_size;
  std::vector<uint8_t> page(ps);
  if (pread_full(tmp_->fd(), page.data(), ps, uint64_t(pgno - 1) * ps) != ps)
    fail_integrity("database shorter than its page count");
  pwrite_all(trial_->fd, page.data(), ps, uint64_t(trial_->pgnos.size()) * ps);
  trial_->pgnos.push_back(pgno);
}

void Applier::rollback() {
  if (!trial_) return;
  const Trial& t = *trial_;
  const uint32_t ps = res_.page_size;
  const int fd = tmp_->fd();
  if (::ftruncate(fd, off_t(t.npages * (t.res.page_size ? t.res.page_size : ps))) != 0) fail_errno("truncate");
  std::vector<uint8_t> page(ps);
  for (size_t i = 0; i < t.pgnos.size(); i++) {
    if (pread_full(t.fd, page.data(), ps, uint64_t(i) * ps) != ps) fail_runtime("trial spool: short read");
    pwrite_all(fd, page.data(), ps, uint64_t(t.pgnos[i] - 1) * ps);
  }
  res_ = t.res;
  npages_ = t.npages;
  ck_known_ = t.ck_known;
  end_trial();
}

void Applier::end_trial() {
  if (trial_ && trial_->fd >= 0) ::close(trial_->fd);
  trial_.reset();
}

ApplyResult Applier::commit() {
  tmp_->commit();
  return res_;
}

}  // namespace ltx
