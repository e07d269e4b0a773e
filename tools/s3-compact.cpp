// s3-compact - compact a replica's level L-1 files into level L by time
// window (levels 1-8), or make a snapshot at level 9 by merging the newest
// snapshot with the files after it. Never reads the live database.
#include <sys/time.h>

#include <cstdlib>

#include "cli.h"
#include "ltx/compact.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, interval, now, tmpdir;
  int level = 0;
  s3cli::Flags s3;
};

int64_t wall_ms() {
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  return int64_t(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

int run(const Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  ltx::CompactOptions co;
  co.level = o.level;
  co.interval_ms = ltx::default_interval_ms(o.level);
  if (!o.interval.empty()) {
    co.interval_ms = cli::duration_ms("--interval", o.interval, o.level == ltx::kSnapshotLevel ? 0 : 1, INT64_MAX);
  } else if (co.interval_ms == 0) {
    ltx::fail(ltx::Kind::Usage, "--level " + std::to_string(o.level) + " has no default interval: give --interval");
  }
  co.now_ms = wall_ms();
  if (!o.now.empty() && !ltx::parse_timestamp(o.now, &co.now_ms))
    ltx::fail(ltx::Kind::Usage, "--now " + o.now + ": want RFC 3339, e.g. 2024-01-02T03:04:05Z");
  co.spool_dir = cli::tmpdir(o.tmpdir);
  if (o.s3.verbose) co.log = [](const std::string& m) { cli::error(m); };
  ltx::S3Config cfg = s3cli::config(o.s3, loc);
  auto store = ltx::open_store(loc, cfg);
  ltx::CountingStore counted(*store);
  ltx::Replica rep(counted, loc);
  auto res = ltx::with_context(o.url, [&] { return ltx::compact(rep, co); });
  if (o.s3.verbose)
    cli::error("level " + std::to_string(o.level) + ": " + std::to_string(res.windows) + " outputs (" +
               std::to_string(res.uploaded) + " stored, " + std::to_string(res.present) + " already there), " +
               std::to_string(res.inputs) + " files merged, " + std::to_string(res.bytes_in) + " bytes in, " +
               std::to_string(res.bytes_out) + " bytes out; requests: " + counted.summary());
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Compact a replica by time window (levels 1-8) or snapshot it by merging (level 9).", "s3-compact"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR")->required();
  app.add_option("-l,--level", o.level, "level to write: 1-8 compact level L-1, 9 makes a snapshot")
      ->required()->check(CLI::Range(1, 9));
  app.add_option("--interval", o.interval, "window length (defaults: 1: 30s, 2: 5m, 3: 1h, 9: 24h; 9 also takes 0 = latest)");
  app.add_option("--now", o.now, "the current time, RFC 3339 (default: the clock)");
  app.add_option("--tmpdir", o.tmpdir, "directory for merge spools (default: $TMPDIR or /tmp)");
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] {
    ltx::install_cleanup_handlers();
    return run(o);
  });
}
