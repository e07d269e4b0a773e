// pipeline.cpp - the acknowledged-position protocol (see ltx/pipeline.h).
#include "ltx/pipeline.h"

#include <chrono>
#include <memory>
#include <vector>

#include "ltx/bytes.h"
#include "ltx/error.h"
#include "ltx/merge.h"
#include "ltx/replica.h"

namespace ltx {

Position ack_position(const Header& h, const Trailer& t) {
  Position p;
  p.txid = h.max_txid;
  p.checksum = t.post_apply;
  p.page_size = h.page_size;
  p.commit = h.commit;
  p.wal_salt1 = h.wal_salt1;
  p.wal_salt2 = h.wal_salt2;
  p.wal_offset = uint64_t(h.wal_offset + h.wal_size);
  return p;
}

bool sync_ack(Store& store, const Location& loc, const std::string& ack, uint64_t* txid) {
  Replica rep(store, loc);
  auto files = rep.list(0);
  if (files.empty()) return false;
  const ReplicaFile* last = &files.front();
  for (const auto& f : files)
    if (f.max_txid > last->max_txid) last = &f;
  Position acked;
  if (read_position_file(ack, &acked) && acked.txid >= last->max_txid) return false;
  write_position_file(ack, ack_position(rep.header(*last), rep.trailer(*last)));
  if (txid) *txid = last->max_txid;
  return true;
}

namespace {

int64_t mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// At most this many files are merged at once (each open input costs a
// decoder and a page buffer); more within one interval are merged in steps.
constexpr size_t kMaxMergeInputs = 32;

// upload_stream's state: the files of the current interval not yet stored
// lie one after another in acc_ and are merged into one object at its end.
class Uploader {
 public:
  Uploader(Store& store, const Location& loc, const UploadOptions& o)
      : store_(store), rep_(store, loc), guard_(rep_, o.level), o_(o), cur_(spool()), acc_(spool()), out_(spool()) {
    if (o.level == 0) guard_.assume_latest(o.remote_latest.txid, o.remote_latest.checksum);
  }

  int run(Reader& src) {
    BufReader in(src, o_.read_buf);
    std::vector<uint8_t> page;
    int n = 0;
    for (;;) {
      if (!pend_.empty()) {
        int64_t left = next_put_ - mono_ms();
        if (left <= 0) {
          flush();
          continue;
        }
        if (!in.wait(int(std::min<int64_t>(left, 1 << 30)))) continue;
      }
      File f;
      bool got;
      try {
        got = read_file(in, n, page, &f);
      } catch (...) {
        try {
          flush();  // the files before a bad one are stored
        } catch (...) {
        }
        throw;
      }
      if (!got) break;
      n++;
      add(f);
    }
    flush();
    if (n == 0 && !o_.allow_empty) fail_integrity("stdin: empty LTX stream");
    return n;
  }

 private:
  struct File {
    Header h;
    Trailer t;
    uint64_t off = 0, len = 0;  // where in acc_
    uint64_t input_bytes = 0;   // stream bytes
    int files = 1;
  };

  std::unique_ptr<Spool> spool() const { return std::make_unique<Spool>(o_.spool_mem, o_.tmpdir); }

  // Reads and verifies the next LTX file of the stream into cur_.
  bool read_file(BufReader& in, int n, std::vector<uint8_t>& page, File* f) {
    cur_->clear();
    TeeReader tee(in, *cur_);
    Decoder d(tee);
    std::string ctx = "stdin: file " + std::to_string(n + 1);
    if (!with_context(ctx, [&] { return d.read_header(); })) return false;
    f->h = d.header();
    ctx = "stdin: " + format_filename(f->h.min_txid, f->h.max_txid);
    f->t = with_context(ctx, [&] {
      page.resize(f->h.page_size);
      uint32_t pgno;
      while (d.next_page(&pgno, page.data())) {
      }
      return d.finish();
    });
    if (o_.level == kSnapshotLevel && !f->h.snapshot())
      fail_integrity(ctx + ": level 9 takes snapshots only (MinTXID 1)");
    f->len = f->input_bytes = cur_->size();
    return true;
  }

  // Takes the file in cur_: skipped, stored now, or pending.
  void add(File f) {
    if (!pend_.empty()) {
      const File& p = pend_.back();
      bool chained = f.h.min_txid == p.h.max_txid + 1 && !f.h.snapshot() && f.h.page_size == p.h.page_size &&
                     (f.h.no_checksum() || p.h.no_checksum() || f.h.pre_apply == p.t.post_apply);
      if (!chained) flush();  // the guard judges it on its own
    }
    if (pend_.empty()) {
      if (guard_.check(f.h, f.t) == ChainGuard::Action::Skip) {
        acknowledge(f.h, f.t);
        if (o_.on_file) o_.on_file(object(f, false));
        return;
      }
      std::swap(acc_, cur_);  // acc_ was empty
      f.off = 0;
    } else {
      f.off = acc_->size();
      auto r = cur_->reader();
      std::vector<uint8_t> buf(64 * 1024);
      for (size_t k; (k = r->read(buf.data(), buf.size())) > 0;) acc_->write(buf.data(), k);
    }
    pend_.push_back(f);
    if (o_.level != 0 || o_.sync_interval_ms <= 0 || mono_ms() >= next_put_) flush();
    else if (pend_.size() >= kMaxMergeInputs) collapse();
  }

  // Merges the pending files into one, which then fills acc_.
  void collapse() {
    if (pend_.size() < 2) return;
    out_->clear();
    std::vector<std::unique_ptr<Reader>> readers;
    std::vector<MergeInput> inputs;
    for (const File& f : pend_) {
      readers.push_back(acc_->reader(f.off, f.len));
      inputs.push_back({readers.back().get(), "stdin: " + format_filename(f.h.min_txid, f.h.max_txid)});
    }
    MergeOptions mo;
    mo.spool_dir = o_.tmpdir;
    mo.keep_wal = true;  // the acknowledgement is the WAL cursor past the last file
    MergeResult r = merge(inputs, *out_, mo);
    readers.clear();
    File m;
    m.h = r.header;
    m.t = r.trailer;
    m.len = out_->size();
    m.files = 0;
    for (const File& f : pend_) {
      m.input_bytes += f.input_bytes;
      m.files += f.files;
    }
    std::swap(acc_, out_);
    out_->clear();
    pend_.assign(1, m);
  }

  // Stores the pending files as one object and acknowledges it.
  void flush() {
    if (pend_.empty()) return;
    collapse();
    const File f = pend_.front();
    bool stored = false;
    next_put_ = mono_ms() + o_.sync_interval_ms;
    if (guard_.check(f.h, f.t) == ChainGuard::Action::Upload) {
      std::string key = rep_.key(o_.level, f.h.min_txid, f.h.max_txid);
      Metadata meta{{"litestream-timestamp", format_timestamp(f.h.timestamp)}};
      if (acc_->fd() >= 0) {
        store_.put_file(key, acc_->fd(), f.len, meta);  // no part in memory
      } else {
        auto body = acc_->reader();
        store_.put(key, *body, meta);
      }
      guard_.uploaded(f.h, f.t, f.len);
      stored = true;
    }
    pend_.clear();
    acc_->clear();
    acknowledge(f.h, f.t);
    if (o_.on_file) o_.on_file(object(f, stored));
  }

  void acknowledge(const Header& h, const Trailer& t) {
    if (!o_.ack.empty() && o_.level == 0) write_position_file(o_.ack, ack_position(h, t));
  }

  UploadedObject object(const File& f, bool stored) const {
    UploadedObject u;
    u.stored = stored;
    u.key = rep_.key(o_.level, f.h.min_txid, f.h.max_txid);
    u.header = f.h;
    u.trailer = f.t;
    u.bytes = f.len;
    u.input_bytes = f.input_bytes;
    u.files = f.files;
    return u;
  }

  Store& store_;
  Replica rep_;
  ChainGuard guard_;
  const UploadOptions& o_;
  std::unique_ptr<Spool> cur_, acc_, out_;
  std::vector<File> pend_;
  int64_t next_put_ = 0;
};

}  // namespace

int upload_stream(Reader& src, Store& store, const Location& loc, const UploadOptions& o) {
  Uploader u(store, loc, o);
  return u.run(src);
}

}  // namespace ltx
