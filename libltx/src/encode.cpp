#include "ltx/encode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "ltx/bytes.h"
#include "ltx/error.h"

namespace ltx {

static int64_t mono_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

SnapshotResult encode_db_snapshot(int fd, const std::string& name, Writer& w, uint64_t txid,
                                  int64_t timestamp, PageState* state,
                                  const std::string& spool_dir) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail_errno("stat " + name);
  uint64_t size = uint64_t(st.st_size);
  uint32_t ps = 4096, npages = 0;
  if (size > 0) {
    uint8_t h[100];
    if (pread_full(fd, h, 100, 0) != 100 || std::memcmp(h, "SQLite format 3", 16) != 0)
      fail_integrity(name + ": not a SQLite database");
    ps = get16(h + 16);
    if (ps == 1) ps = 65536;
    if (!valid_page_size(ps)) fail_integrity(name + ": invalid page size " + std::to_string(ps));
    if (size % ps != 0) fail_integrity(name + ": file size is not a multiple of the page size");
    // The in-header size is valid only when its version-valid-for number
    // matches the change counter; otherwise use the file size, as SQLite does.
    uint32_t hdr_pages = get32(h + 28);
    npages = (hdr_pages != 0 && get32(h + 92) == get32(h + 24)) ? hdr_pages : uint32_t(size / ps);
    if (uint64_t(npages) * ps > size)
      fail_integrity(name + ": header says " + std::to_string(npages) + " pages, file is shorter");
  }
  if (state && state->initialized() && state->position().page_size != ps &&
      state->position().page_size != 0)
    fail_integrity("page size " + std::to_string(ps) + " differs from state page size " +
                   std::to_string(state->position().page_size));
  Header hdr;
  hdr.page_size = ps;
  hdr.commit = npages;
  hdr.min_txid = 1;
  hdr.max_txid = txid;
  hdr.timestamp = timestamp;
  Encoder enc(w, hdr, spool_dir);
  const uint32_t lock = lock_pgno(ps);
  const size_t chunk = std::max<size_t>(1, (256u << 10) / ps);
  std::vector<uint8_t> buf(chunk * ps);
  Changes changes(state ? state->dir() : spool_dir);
  uint64_t ck = kChecksumFlag;
  for (uint64_t first = 1; first <= npages; first += chunk) {
    size_t k = size_t(std::min<uint64_t>(chunk, npages - first + 1));
    if (pread_full(fd, buf.data(), k * ps, (first - 1) * ps) != k * ps)
      fail_integrity(name + ": read page " + std::to_string(first) + ": unexpected EOF");
    for (size_t i = 0; i < k; i++) {
      uint32_t pgno = uint32_t(first + i);
      if (pgno == lock) continue;
      const uint8_t* p = buf.data() + i * ps;
      uint64_t pc = page_checksum(pgno, p, ps);
      ck = fold(ck, pc);
      enc.page(pgno, p);
      if (state && state->get(pgno) != pc) changes.add(pgno, pc);
    }
  }
  SnapshotResult r;
  r.header = hdr;
  r.trailer = enc.finish(ck);
  w.flush();
  if (state) {
    for (uint64_t p = uint64_t(npages) + 1; p <= state->position().commit; p++)
      if (p != lock) changes.add(uint32_t(p), 0);
    Position pos;
    pos.txid = txid;
    pos.checksum = ck;
    pos.page_size = ps;
    pos.commit = npages;
    state->commit(pos, changes);
  }
  return r;
}

// ---------------------------------------------------------------- TxnEncoder

TxnEncoder::TxnEncoder(Writer& out, PageState* state, const EncodeOptions& opt,
                       const std::string& tmpdir)
    : out_(out), state_(state), opt_(opt), tmpdir_(tmpdir) {
  spool_fd_ = ::open(tmpdir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (spool_fd_ < 0) fail_errno("create spool file in " + tmpdir);
  ltx_fd_ = ::open(tmpdir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (ltx_fd_ < 0) fail_errno("create LTX spool in " + tmpdir);
  if (state_ && state_->initialized()) {
    next_txid_ = state_->position().txid + 1;
    page_size_ = state_->position().page_size;
  } else {
    next_txid_ = opt_.first_txid ? opt_.first_txid : 1;
  }
  stateless_.checksum = 0;
}

TxnEncoder::~TxnEncoder() {
  if (spool_fd_ >= 0) ::close(spool_fd_);
  if (ltx_fd_ >= 0) ::close(ltx_fd_);
}

int TxnEncoder::run(wal::EventReader& r) {
  for (;;) {
    wal::Event e = r.next();
    if (e.page_size != 0) {
      if (page_size_ == 0) page_size_ = e.page_size;
      if (e.page_size != page_size_)
        fail_integrity("page size changed from " + std::to_string(page_size_) + " to " +
                       std::to_string(e.page_size));
    }
    switch (e.type) {
      case wal::Event::End:
        if (resync_pending_) emit_resync();
        drop_pending();  // an uncommitted tail is never emitted
        flush_batch();
        return files_;
      case wal::Event::Frame:
        on_frame(e);
        break;
      case wal::Event::ResyncBegin:
        if (resync_pending_) emit_resync();
        drop_pending();
        flush_batch();
        in_resync_ = true;
        resync_pages_.reset(new Changes(tmpdir_));
        resync_commit_ = e.commit;
        if (e.timestamp) ts_ = e.timestamp;
        break;
      case wal::Event::ResyncPage:
        if (!in_resync_) fail_integrity("resync page outside a resync");
        on_resync_page(e);
        break;
      case wal::Event::ResyncEnd:
        if (!in_resync_) fail_integrity("resync end outside a resync");
        in_resync_ = false;
        // Sent when the WAL position that follows a resync is known, so the
        // file records where frames continue (or at the end of input).
        resync_pending_ = true;
        break;
      case wal::Event::Position:
        cursor_salt1_ = e.salt1;
        cursor_salt2_ = e.salt2;
        cursor_offset_ = e.wal_offset;
        if (resync_pending_) emit_resync();
        break;
    }
  }
}

// A fresh state joins an existing replica (e.g. replication restarted on a
// restored database): the first resync must be exactly the database the
// replica holds at the acknowledged position; its page checksums become the
// state and nothing is sent.
// Returns false (nothing done) when the database differs and opt_.rebuild
// says to send it instead.
bool TxnEncoder::adopt(const std::function<void(const PageFn&)>& each, uint32_t commit) {
  const uint32_t ps = page_size_;
  std::vector<uint8_t> page(ps);
  Changes changes(state_->dir());
  uint64_t ck = kChecksumFlag;
  each([&](uint32_t pgno, uint32_t slot) {
    spool_read(slot, page.data());
    uint64_t pc = page_checksum(pgno, page.data(), ps);
    ck = fold(ck, pc);
    changes.add(pgno, pc);
  });
  const bool same_ps = !opt_.adopt.page_size || opt_.adopt.page_size == ps;
  if (ck != opt_.adopt.checksum && same_ps && opt_.rebuild) return false;
  if (ck != opt_.adopt.checksum || !same_ps)
    fail_integrity("the database (checksum " + hex16(ck) + ") is not the replica's TXID " +
                   hex16(opt_.adopt.txid) + " (checksum " + hex16(opt_.adopt.checksum) +
                   "): restore it first, or replicate to another prefix");
  Position pos;
  pos.txid = opt_.adopt.txid;
  pos.checksum = ck;
  pos.page_size = ps;
  pos.commit = commit;
  pos.wal_salt1 = cursor_salt1_;
  pos.wal_salt2 = cursor_salt2_;
  pos.wal_offset = cursor_offset_;
  state_->commit(pos, changes);
  next_txid_ = pos.txid + 1;
  clear_batch();
  return true;
}

void TxnEncoder::emit_resync() {
  resync_pending_ = false;
  emit(resync_commit_, true);
}

uint32_t TxnEncoder::alloc_slot() {
  if (free_.empty()) return slots_++;
  uint32_t s = free_.back();
  free_.pop_back();
  return s;
}

void TxnEncoder::spool_write(uint32_t slot, const uint8_t* page) {
  const uint32_t ps = page_size_;
  if (mem_slots_ == 0) mem_slots_ = std::max<uint32_t>(1, (256u << 10) / ps);
  if (slot < mem_slots_) {
    const size_t need = size_t(slot + 1) * ps;  // grown by doubling: a small batch touches little
    if (mem_.size() < need) mem_.resize(std::min(size_t(mem_slots_) * ps, std::max(need, mem_.size() * 2)));
    std::memcpy(mem_.data() + size_t(slot) * ps, page, ps);
    return;
  }
  pwrite_all(spool_fd_, page, ps, uint64_t(slot - mem_slots_) * ps);
}

void TxnEncoder::spool_read(uint32_t slot, uint8_t* page) {
  const uint32_t ps = page_size_;
  if (slot < mem_slots_) {
    std::memcpy(page, mem_.data() + size_t(slot) * ps, ps);
    return;
  }
  if (pread_full(spool_fd_, page, ps, uint64_t(slot - mem_slots_) * ps) != ps) fail_runtime("spool file: short read");
}

// Forget the frames of the transaction not yet committed.
void TxnEncoder::drop_pending() {
  for (size_t i = committed_; i < entries_.size(); i++) free_.push_back(entries_[i].slot);
  entries_.resize(committed_);
  pending_.clear();
}

// Forget the batch (or the resync) just written or found empty.
void TxnEncoder::clear_batch() {
  resync_pages_.reset();
  entries_.clear();
  where_.clear();
  pending_.clear();
  free_.clear();
  committed_ = 0;
  commit_ = 0;
  slots_ = 0;
}

void TxnEncoder::on_frame(const wal::Event& e) {
  if (in_resync_) fail_integrity("WAL frame inside a resync");
  if (resync_pending_) emit_resync();
  if (entries_.empty()) {
    wal_first_ = e.wal_offset;
    salt1_ = e.salt1;
    salt2_ = e.salt2;
  } else if (e.salt1 != salt1_ || e.salt2 != salt2_) {
    // A new WAL generation: what is committed so far goes out first.
    drop_pending();
    flush_batch();
    wal_first_ = e.wal_offset;
    salt1_ = e.salt1;
    salt2_ = e.salt2;
  }
  // A page written again within its transaction is overwritten in place; a
  // page of an earlier transaction of the batch gets a new slot, which
  // replaces the old one when this transaction commits (until then the
  // batch may still go out without it).
  auto it = pending_.find(e.pgno);
  if (it != pending_.end()) {
    spool_write(entries_[it->second].slot, e.data);
  } else {
    uint32_t slot = alloc_slot();
    spool_write(slot, e.data);
    pending_.emplace(e.pgno, uint32_t(entries_.size()));
    entries_.push_back({e.pgno, slot});
  }
  wal_end_ = e.wal_offset + wal::kFrameHeaderSize + page_size_;
  if (e.timestamp) ts_ = e.timestamp;
  if (e.commit != 0) {
    const size_t n = entries_.size();
    for (size_t i = committed_; i < n; i++) {
      const Entry en = entries_[i];
      auto c = where_.find(en.pgno);
      if (c != where_.end()) {
        free_.push_back(entries_[c->second].slot);
        entries_[c->second].slot = en.slot;
      } else {
        where_.emplace(en.pgno, uint32_t(committed_));
        entries_[committed_++] = en;
      }
    }
    entries_.resize(committed_);
    pending_.clear();
    commit_ = e.commit;
    if (opt_.per_txn) {
      bool more = false;
      batch_txns_++;
      if (opt_.input_ready && committed_ < opt_.max_batch_pages) {
        // Wait for company only under load: the last file held several
        // transactions and went out less than min_interval_ms ago. A batch
        // of several transactions goes out once that interval has passed,
        // even with more input waiting (a backlog would otherwise keep the
        // file open, and its first commit waiting, until it drained).
        int64_t since = mono_ms() - last_emit_ms_;
        bool loaded = last_batch_txns_ > 1 && since < opt_.min_interval_ms;
        bool due = batch_txns_ > 1 && since >= opt_.min_interval_ms;
        more = !due && opt_.input_ready(loaded ? int(opt_.min_interval_ms - since) : 0);
      }
      if (!more) flush_batch();
    }
  }
}

void TxnEncoder::on_resync_page(const wal::Event& e) {
  // With page state only pages that differ from what was emitted go out.
  if (state_ && state_->initialized() &&
      state_->get(e.pgno) == page_checksum(e.pgno, e.data, page_size_))
    return;
  spool_write(slots_, e.data);
  resync_pages_->add(e.pgno, slots_++);
}

void TxnEncoder::flush_batch() {
  if (committed_ == 0) {
    clear_batch();
    return;
  }
  emit(commit_, false);
}

// Writes entries_[0..committed_) (one per page, the last frame of each) as
// one LTX file, then updates the state. Nothing uncommitted is left then.
void TxnEncoder::emit(uint32_t commit, bool resync) {
  // A batch: in place, sort by page, keep the pages within the commit
  // size. A resync is in page order already (the stream reader checks).
  size_t npages = 0;
  if (!resync) {
    if (committed_ != entries_.size()) fail_runtime("encoder: uncommitted frames at a file boundary");
    std::sort(entries_.begin(), entries_.end(), [](const Entry& a, const Entry& b) { return a.pgno < b.pgno; });
    for (size_t i = 0; i < committed_; i++)
      if (entries_[i].pgno <= commit) entries_[npages++] = entries_[i];
  }
  const PageRange pages{entries_.data(), entries_.data() + npages};
  auto each = [&](const PageFn& fn) {
    if (resync)
      resync_pages_->for_each([&](uint32_t pgno, uint64_t slot) { fn(pgno, uint32_t(slot)); });
    else
      for (const Entry& en : pages) fn(en.pgno, en.slot);
  };
  const bool no_pages = resync ? resync_pages_->empty() : pages.empty();
  const bool have_state = state_ && state_->initialized();
  const uint32_t ps = page_size_;
  const uint32_t lock = lock_pgno(ps);
  if (resync && have_state && no_pages && commit == state_->position().commit) {
    // The destination already has exactly this database: nothing to send.
    clear_batch();
    return;
  }
  // A rebuild: the replica's database is not known page by page, so every
  // page goes out (the resync of an empty state has them all).
  bool rebuild = false;
  if (resync && !have_state && state_ && opt_.adopt.txid != 0) {
    if (adopt(each, commit)) return;
    rebuild = true;
    next_txid_ = opt_.adopt.txid + 1;
  }
  const Position prev = rebuild ? opt_.adopt : have_state ? state_->position() : stateless_;
  Header h;
  h.page_size = ps;
  h.commit = commit;
  h.min_txid = h.max_txid = next_txid_;
  h.timestamp = opt_.timestamp ? opt_.timestamp : (ts_ ? ts_ : now_ms());
  if (!resync) {
    h.wal_offset = int64_t(wal_first_);
    h.wal_size = int64_t(wal_end_ - wal_first_);
    h.wal_salt1 = salt1_;
    h.wal_salt2 = salt2_;
  } else if (cursor_offset_ != 0) {
    // A resync covers the WAL up to the position that followed it.
    h.wal_offset = int64_t(cursor_offset_);
    h.wal_salt1 = cursor_salt1_;
    h.wal_salt2 = cursor_salt2_;
  }
  bool checksummed = have_state || rebuild || (h.snapshot() && state_);
  if (h.snapshot()) {
    // TXID 1 must hold every page: only a resync can provide that.
    if (!resync)
      fail(Kind::Usage,
           "TXID 1 must be a snapshot: give --txid N (N >= 2) to encode WAL frames without "
           "state, or start the state with ltx-encode --db or a wal-tail resync");
    checksummed = true;
  }
  if (!checksummed) h.flags = kFlagNoChecksum;
  if (checksummed && !h.snapshot()) h.pre_apply = prev.checksum;
  if (h.snapshot()) h.pre_apply = 0;

  Changes changes(state_ ? state_->dir() : tmpdir_);
  std::vector<uint8_t> page(ps), zero(ps, 0);
  const uint32_t old_n = h.snapshot() || rebuild ? 0 : prev.commit;
  DbChecksum ck(h.snapshot() || rebuild ? kChecksumFlag : prev.checksum, old_n, ps);
  uint64_t next_fill = uint64_t(old_n) + 1;
  // The state holds every page's checksum: the fold swaps them, no page read.
  auto set = [&](uint32_t pgno, uint64_t pc) {
    ck.replace(ck.had(pgno) && have_state ? state_->get(pgno) : 0, pc);
    if (state_) changes.add(pgno, pc);
  };
  // SQLite leaves a page it adds to the database unwritten only when it is
  // a free-list leaf (its "don't write" optimisation: the page reads as
  // zeros), and every leaf is named on a free-list trunk page that the same
  // transaction writes, at most page_size/4 of them a trunk. So a
  // transaction of n pages grows the database by at most n * page_size/4
  // pages it does not carry, and a resync carries every page. A commit size
  // beyond that (a hostile 0xfffffffe would make the state 32 GB of
  // zero-page checksums) is refused before the state changes.
  const uint64_t max_unwritten = resync ? 0 : uint64_t(npages) * (ps / 4);
  uint64_t unwritten = 0;
  auto grown_upto = [&](uint64_t last) {
    for (; next_fill <= last; next_fill++) {
      if (next_fill == lock) continue;
      if (++unwritten > max_unwritten)
        fail_integrity(std::string(resync ? "resync" : "transaction") + " grows the database from " +
                       std::to_string(old_n) + " to " + std::to_string(commit) + " pages without page " +
                       std::to_string(next_fill) + ", more than its pages can name as free");
      set(uint32_t(next_fill), page_checksum(uint32_t(next_fill), zero.data(), ps));
    }
  };
  // The file is built in a spool, the state advances (with its undo record),
  // and only then does the file go to stdout: downstream never holds a TXID
  // the state does not know, and a failure leaves no partial file behind.
  // One spool for every file, rewritten from its start (no file created per
  // LTX file): only its first bytes_written() bytes are this file.
  const int lfd = ltx_fd_;
  if (::lseek(lfd, 0, SEEK_SET) != 0) fail_errno("LTX spool: seek");
  FdWriter lout(lfd);
  Encoder enc(lout, h, tmpdir_);
  each([&](uint32_t pgno, uint32_t slot) {
    spool_read(slot, page.data());
    if (pgno == lock) fail_integrity("lock page " + std::to_string(pgno) + " in a transaction");
    if (checksummed) {
      if (pgno > old_n) {
        grown_upto(pgno - 1);
        next_fill = uint64_t(pgno) + 1;
      }
      set(pgno, page_checksum(pgno, page.data(), ps));
    }
    enc.page(pgno, page.data());
  });
  if (checksummed) {
    grown_upto(commit);
    for (uint64_t p = uint64_t(commit) + 1; p <= old_n; p++)
      if (p != lock) set(uint32_t(p), 0);
  }
  const uint64_t sum = commit == 0 ? kChecksumFlag : ck.value();
  enc.finish(checksummed ? sum : 0);
  lout.flush();
  Position pos;
  pos.txid = next_txid_;
  pos.checksum = checksummed ? sum : 0;
  pos.page_size = ps;
  pos.commit = commit;
  pos.wal_salt1 = h.wal_salt1;
  pos.wal_salt2 = h.wal_salt2;
  pos.wal_offset = uint64_t(h.wal_offset + h.wal_size);
  if (state_) state_->commit(pos, changes);
  else stateless_ = pos;
  std::vector<uint8_t> buf(64 * 1024);
  const uint64_t size = enc.bytes_written();
  for (uint64_t at = 0; at < size;) {
    size_t n = pread_full(lfd, buf.data(), size_t(std::min<uint64_t>(buf.size(), size - at)), at);
    if (n == 0) fail_runtime("LTX spool: short read");
    out_.write(buf.data(), n);
    at += n;
  }
  out_.flush();
  // A large file (a resync) does not keep its disk space.
  if (size > (64u << 20) && ::ftruncate(lfd, 0) != 0) fail_errno("LTX spool: truncate");
  files_++;
  last_emit_ms_ = mono_ms();
  last_batch_txns_ = batch_txns_;
  batch_txns_ = 0;
  if (state_ && !opt_.ack_path.empty() && state_->undo_bytes() > (4u << 20)) {
    Position acked;
    if (read_position_file(opt_.ack_path, &acked)) state_->trim_undo(acked.txid);
  }
  next_txid_++;
  clear_batch();
  wal_first_ = wal_end_;
}

}  // namespace ltx
