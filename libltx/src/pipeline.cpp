// pipeline.cpp - the acknowledged-position protocol (see ltx/pipeline.h).
#include "ltx/pipeline.h"

#include <vector>

#include "ltx/bytes.h"
#include "ltx/error.h"
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

int upload_stream(Reader& src, Store& store, const Location& loc, const UploadOptions& o) {
  Replica rep(store, loc);
  ChainGuard guard(rep, o.level);
  BufReader in(src, o.read_buf);
  Spool spool(o.spool_mem, o.tmpdir);
  std::vector<uint8_t> page;
  int n = 0;
  for (;; n++) {
    spool.clear();
    TeeReader tee(in, spool);
    Decoder d(tee);
    std::string ctx = "stdin: file " + std::to_string(n + 1);
    if (!with_context(ctx, [&] { return d.read_header(); })) {
      if (n == 0 && !o.allow_empty) fail_integrity("stdin: empty LTX stream");
      break;
    }
    const Header h = d.header();
    ctx = "stdin: " + format_filename(h.min_txid, h.max_txid);
    const Trailer t = with_context(ctx, [&] {
      page.resize(h.page_size);
      uint32_t pgno;
      while (d.next_page(&pgno, page.data())) {
      }
      return d.finish();
    });
    if (o.level == kSnapshotLevel && !h.snapshot())
      fail_integrity(ctx + ": level 9 takes snapshots only (MinTXID 1)");
    std::string key = rep.key(o.level, h.min_txid, h.max_txid);
    bool stored = false;
    if (guard.check(h, t) == ChainGuard::Action::Upload) {
      Metadata meta{{"litestream-timestamp", format_timestamp(h.timestamp)}};
      if (spool.fd() >= 0) {
        store.put_file(key, spool.fd(), spool.size(), meta);  // no part in memory
      } else {
        auto body = spool.reader();
        store.put(key, *body, meta);
      }
      guard.uploaded(h, t, spool.size());
      stored = true;
    }
    if (!o.ack.empty() && o.level == 0) write_position_file(o.ack, ack_position(h, t));
    if (o.on_file) o.on_file(stored, key, h, t, spool.size());
  }
  return n;
}

}  // namespace ltx
