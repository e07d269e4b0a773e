// s3-put - store an LTX stream from stdin as replica files (one object per
// LTX file, Litestream v0.5 layout), or stdin as one plain object (--raw).
// Each LTX file is read and fully verified before its upload; the chain is
// checked against the remote before anything is written.
#include <unistd.h>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "ltx/state.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, ack;
  bool sync_ack = false;
  int level = 0;
  bool raw = false;
  s3cli::Flags s3;
};

int put_raw(const Options& o, const ltx::Location& loc, ltx::Store& store) {
  if (loc.path.empty()) ltx::fail(ltx::Kind::Usage, o.url + ": --raw needs a key (s3://BUCKET/KEY or file:///PATH)");
  ltx::FdReader in(0);
  store.put(loc.path, in);
  return cli::kOk;
}

// The acknowledgement: the position the destination durably holds, in the
// position format of ltx-encode's state (txid, checksum, WAL cursor).
ltx::Position ack_of(const ltx::Header& h, const ltx::Trailer& t) {
  ltx::Position p;
  p.txid = h.max_txid;
  p.checksum = t.post_apply;
  p.page_size = h.page_size;
  p.commit = h.commit;
  p.wal_salt1 = h.wal_salt1;
  p.wal_salt2 = h.wal_salt2;
  p.wal_offset = uint64_t(h.wal_offset + h.wal_size);
  return p;
}

// Brings the acknowledgement up to the remote's latest level-0 file: an
// upload that completed just before a crash was never acknowledged.
int sync_ack(const Options& o, const ltx::Location& loc, ltx::Store& store) {
  ltx::Replica rep(store, loc);
  auto files = rep.list(0);
  ltx::Position acked;
  bool have = ltx::read_position_file(o.ack, &acked);
  if (files.empty()) return cli::kOk;
  const ltx::ReplicaFile* last = &files.front();
  for (const auto& f : files)
    if (f.max_txid > last->max_txid) last = &f;
  if (have && acked.txid >= last->max_txid) return cli::kOk;
  ltx::write_position_file(o.ack, ack_of(rep.header(*last), rep.trailer(*last)));
  if (o.s3.verbose)
    cli::error(o.ack + ": acknowledged " + ltx::hex16(last->max_txid) + " from the remote");
  return cli::kOk;
}

int put_stream(const Options& o, const ltx::Location& loc, ltx::Store& store) {
  ltx::Replica rep(store, loc);
  ltx::ChainGuard guard(rep, o.level);
  ltx::FdReader fin(0);
  ltx::BufReader in(fin);
  const char* tmp = std::getenv("TMPDIR");
  ltx::Spool spool(4u << 20, tmp && *tmp ? tmp : "/tmp");
  std::vector<uint8_t> page;
  for (int n = 0;; n++) {
    spool.clear();
    ltx::TeeReader tee(in, spool);
    ltx::Decoder d(tee);
    std::string ctx = "stdin: file " + std::to_string(n + 1);
    if (!ltx::with_context(ctx, [&] { return d.read_header(); })) {
      if (n == 0) ltx::fail_integrity("stdin: empty LTX stream");
      break;
    }
    const ltx::Header h = d.header();
    ctx = "stdin: " + ltx::format_filename(h.min_txid, h.max_txid);
    const ltx::Trailer t = ltx::with_context(ctx, [&] {
      page.resize(h.page_size);
      uint32_t pgno;
      while (d.next_page(&pgno, page.data())) {
      }
      return d.finish();
    });
    if (o.level == ltx::kSnapshotLevel && !h.snapshot())
      ltx::fail_integrity(ctx + ": level 9 takes snapshots only (MinTXID 1)");
    std::string key = rep.key(o.level, h.min_txid, h.max_txid);
    if (guard.check(h, t) == ltx::ChainGuard::Action::Skip) {
      if (o.s3.verbose) cli::error(key + ": already stored, skipped");
    } else {
      auto body = spool.reader();
      store.put(key, *body, {{"litestream-timestamp", ltx::format_timestamp(h.timestamp)}});
      guard.uploaded(h, t, spool.size());
      if (o.s3.verbose) cli::error(key + ": stored (" + std::to_string(spool.size()) + " bytes)");
    }
    if (!o.ack.empty() && o.level == 0) ltx::write_position_file(o.ack, ack_of(h, t));
  }
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Store an LTX stream from stdin as replica files, one object per LTX file.", "s3-put"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR (with --raw: the object)")->required();
  app.add_option("-l,--level", o.level, "replica level 0-9 (default 0; 9 = snapshots)")->check(CLI::Range(0, 9));
  app.add_flag("--raw", o.raw, "store stdin as one plain object at URL");
  app.add_option("--ack", o.ack, "after each stored file, record its position in this file (read by ltx-encode --ack and wal-tail --ack)");
  app.add_flag("--sync-ack", o.sync_ack, "bring the --ack file up to the remote's latest file and exit")->needs("--ack");
  app.add_option("--part-size", o.s3.part_size, "multipart upload above SIZE, in SIZE parts (default 8M; >= 5M)");
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] {
    ltx::install_cleanup_handlers();
    ltx::Location loc = ltx::parse_url(o.url);
    if (!o.sync_ack && ltx::is_tty(0))
      ltx::fail(ltx::Kind::Usage, "refusing to read from a terminal (redirect stdin)");
    ltx::S3Config cfg = s3cli::config(o.s3, loc);
    auto store = ltx::open_store(loc, cfg);
    if (o.sync_ack) return sync_ack(o, loc, *store);
    return o.raw ? put_raw(o, loc, *store) : put_stream(o, loc, *store);
  });
}
