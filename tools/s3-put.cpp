// s3-put - store an LTX stream from stdin as replica files (Litestream v0.5
// layout; at most one level-0 object per sync interval, the files of an
// interval merged into one), or stdin as one plain object (--raw).
// Each LTX file is read and fully verified before its upload; the chain is
// checked against the remote before anything is written.
#include <unistd.h>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/follow.h"
#include "ltx/ltx.h"
#include "ltx/pipeline.h"
#include "ltx/replica.h"
#include "ltx/state.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, ack;
  bool sync_ack = false;
  int level = 0;
  bool raw = false;
  std::string sync_interval = "1s";
  s3cli::Flags s3;
};

int put_raw(const Options& o, const ltx::Location& loc, ltx::Store& store) {
  if (loc.path.empty()) ltx::fail(ltx::Kind::Usage, o.url + ": --raw needs a key (s3://BUCKET/KEY or file:///PATH)");
  ltx::FdReader in(0);
  store.put(loc.path, in);
  return cli::kOk;
}

// Brings the acknowledgement up to the remote's latest level-0 file: an
// upload that completed just before a crash was never acknowledged.
int sync_ack(const Options& o, const ltx::Location& loc, ltx::Store& store) {
  uint64_t txid = 0;
  if (ltx::sync_ack(store, loc, o.ack, &txid) && o.s3.verbose)
    cli::error(o.ack + ": acknowledged " + ltx::hex16(txid) + " from the remote");
  return cli::kOk;
}

int put_stream(const Options& o, const ltx::Location& loc, ltx::Store& store) {
  ltx::FdReader in(0);
  ltx::UploadOptions u;
  u.level = o.level;
  u.ack = o.ack;
  u.tmpdir = cli::tmpdir();
  u.sync_interval_ms = cli::duration_ms("--sync-interval", o.sync_interval, 0, 3600000);
  if (o.s3.verbose)
    u.on_file = [](const ltx::UploadedObject& x) {
      std::string files = x.files > 1 ? ", " + std::to_string(x.files) + " files merged" : "";
      cli::error(x.key + (x.stored ? ": stored (" + std::to_string(x.bytes) + " bytes" + files + ")" : ": already stored, skipped"));
    };
  ltx::upload_stream(in, store, loc, u);
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Store an LTX stream from stdin as replica files, at most one object per sync interval.", "s3-put"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR (with --raw: the object)")->required();
  app.add_option("-l,--level", o.level, "replica level 0-9 (default 0; 9 = snapshots)")->check(CLI::Range(0, 9));
  app.add_flag("--raw", o.raw, "store stdin as one plain object at URL");
  app.add_option("--sync-interval", o.sync_interval, "level 0: at most one object per DUR; files arriving sooner are merged (default 1s; 0: one object per file)");
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
