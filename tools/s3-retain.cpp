// s3-retain - delete what a replica's retention policy no longer needs:
// snapshots outside the time window and the GFS picks, files before the
// window's base snapshot, and (optionally) compacted-over lower levels.
#include <sys/time.h>

#include "cli.h"
#include "ltx/bytes.h"
#include "ltx/compact.h"
#include "ltx/ltx.h"
#include "ltx/replica.h"
#include "s3common.h"

namespace {

struct Options {
  std::string url, retention, compacted, now;
  int hourly = 0, daily = 0, weekly = 0, monthly = 0;
  bool dry_run = false;
  s3cli::Flags s3;
};

int64_t span(const std::string& flag, const std::string& v) { return cli::duration_ms(flag, v, 0, INT64_MAX); }

int run(const Options& o) {
  ltx::Location loc = ltx::parse_url(o.url);
  ltx::RetainOptions ro;
  if (!o.retention.empty()) ro.retention_ms = span("--retention", o.retention);
  if (!o.compacted.empty()) ro.compacted_retention_ms = span("--compacted-retention", o.compacted);
  ro.hourly = o.hourly, ro.daily = o.daily, ro.weekly = o.weekly, ro.monthly = o.monthly;
  if (ro.retention_ms < 0 && !o.hourly && !o.daily && !o.weekly && !o.monthly)
    ltx::fail(ltx::Kind::Usage, "give --retention DUR or a GFS count (--hourly, --daily, --weekly, --monthly)");
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  ro.now_ms = int64_t(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
  if (!o.now.empty() && !ltx::parse_timestamp(o.now, &ro.now_ms))
    ltx::fail(ltx::Kind::Usage, "--now " + o.now + ": want RFC 3339, e.g. 2024-01-02T03:04:05Z");
  ltx::S3Config cfg = s3cli::config(o.s3, loc);
  auto store = ltx::open_store(loc, cfg);
  ltx::CountingStore counted(*store);
  ltx::Replica rep(counted, loc);
  auto files = ltx::with_context(o.url, [&] { return rep.list(); });
  auto plan = ltx::with_context(o.url, [&] { return ltx::plan_retention(rep, files, ro); });
  uint64_t bytes = 0;
  std::vector<std::string> keys;
  ltx::FdWriter out(1);
  for (auto& f : plan.remove) {
    keys.push_back(f.key);
    bytes += f.size;
    if (o.dry_run) {
      std::string line = f.name() + "\t" + std::to_string(f.size) + "\n";
      out.write(line.data(), line.size());
    }
  }
  out.flush();
  if (!o.dry_run && !keys.empty()) ltx::with_context(o.url, [&] { counted.remove(keys); });
  if (o.s3.verbose) {
    if (!plan.have_base) cli::error("no level-9 snapshot: nothing to do");
    else
      cli::error(std::string(o.dry_run ? "would delete " : "deleted ") + std::to_string(keys.size()) + " of " +
                 std::to_string(files.size()) + " objects (" + std::to_string(bytes) + " bytes); " +
                 std::to_string(plan.snapshots.size()) + " snapshots kept; point-in-time window from " +
                 plan.base.name() + "; requests: " + counted.summary());
  }
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Delete replica files that retention no longer needs (time window and GFS).", "s3-retain"};
  Options o;
  app.add_option("url", o.url, "s3://BUCKET/PREFIX or file:///DIR")->required();
  app.add_option("--retention", o.retention, "point-in-time window: keep snapshots newer than DUR, the newest older one, and every file after it");
  app.add_option("--hourly", o.hourly, "keep the newest snapshot of each of the last N hours")->check(CLI::Range(0, 1000000));
  app.add_option("--daily", o.daily, "... of the last N days (UTC)")->check(CLI::Range(0, 1000000));
  app.add_option("--weekly", o.weekly, "... of the last N weeks (Monday to Sunday)")->check(CLI::Range(0, 1000000));
  app.add_option("--monthly", o.monthly, "... of the last N months")->check(CLI::Range(0, 1000000));
  app.add_option("--compacted-retention", o.compacted,
                 "also delete lower-level files a compaction older than DUR covers (coarser restores before then)");
  app.add_option("--now", o.now, "the current time, RFC 3339 (default: the clock)");
  app.add_flag("-n,--dry-run", o.dry_run, "print what would be deleted (LEVEL/MIN-MAX.ltx and size a line), delete nothing");
  s3cli::add_flags(app, o.s3);
  return cli::run(app, argc, argv, [&] { return run(o); });
}
